//! weir's own rejections and upstream failures, in the OpenAI error shape.
//!
//! `{"error":{"message":"...","type":"weir_<reason>","code":"<reason>"}}`
//! with `x-weir-reject: <reason>`, so the official SDKs show them cleanly.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::body::Body;

/// Why weir answered instead of the upstream; the `reason` of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Reject {
    NoRoute,
    CircuitOpen,
    Overloaded,
    QueueTimeout,
    RateLimited,
    UpstreamConnect,
    UpstreamTimeout,
    BodyTooLarge,
}

/// Which side a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// weir's own policy refused the request.
    Weir,
    /// The upstream could not be reached or did not answer in time.
    Upstream,
    /// The client sent something weir cannot forward.
    Client,
}

impl Reject {
    pub const ALL: [Reject; 8] = [
        Self::NoRoute,
        Self::CircuitOpen,
        Self::Overloaded,
        Self::QueueTimeout,
        Self::RateLimited,
        Self::UpstreamConnect,
        Self::UpstreamTimeout,
        Self::BodyTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::CircuitOpen => "circuit_open",
            Self::Overloaded => "overloaded",
            Self::QueueTimeout => "queue_timeout",
            Self::RateLimited => "rate_limited",
            Self::UpstreamConnect => "upstream_connect",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::BodyTooLarge => "body_too_large",
        }
    }

    fn error_type(self) -> &'static str {
        match self {
            Self::NoRoute => "weir_no_route",
            Self::CircuitOpen => "weir_circuit_open",
            Self::Overloaded => "weir_overloaded",
            Self::QueueTimeout => "weir_queue_timeout",
            Self::RateLimited => "weir_rate_limited",
            Self::UpstreamConnect => "weir_upstream_connect",
            Self::UpstreamTimeout => "weir_upstream_timeout",
            Self::BodyTooLarge => "weir_body_too_large",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::CircuitOpen | Self::Overloaded | Self::QueueTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamConnect => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    pub fn side(self) -> Side {
        match self {
            Self::UpstreamConnect | Self::UpstreamTimeout => Side::Upstream,
            Self::BodyTooLarge | Self::NoRoute => Side::Client,
            _ => Side::Weir,
        }
    }
}

/// A failure on the request path, ready to become a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    pub reason: Reject,
    pub message: String,
    /// Sent as `retry-after` (whole seconds, rounded up) when set.
    pub retry_after: Option<Duration>,
}

impl ProxyError {
    pub fn new(reason: Reject, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The error response; the caller adds the per-request headers.
    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.reason.error_type(),
                "code": self.reason.as_str(),
            }
        });
        let mut response = Response::new(Body::full(Bytes::from(body.to_string())));
        *response.status_mut() = self.reason.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            super::headers::X_WEIR_REJECT,
            HeaderValue::from_static(self.reason.as_str()),
        );
        if let Some(wait) = self.retry_after {
            let secs = wait
                .as_secs()
                .saturating_add(u64::from(wait.subsec_nanos() > 0));
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_openai_shape() {
        let response = ProxyError::new(Reject::NoRoute, "no route for /x").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["x-weir-reject"], "no_route");
        let body = response.into_body().full_bytes().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "no_route");
        assert_eq!(json["error"]["type"], "weir_no_route");
        assert_eq!(json["error"]["message"], "no route for /x");
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let mut e = ProxyError::new(Reject::CircuitOpen, "open");
        e.retry_after = Some(Duration::from_millis(1200));
        assert_eq!(e.into_response().headers()["retry-after"], "2");
    }
}
