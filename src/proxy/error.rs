//! weir's own rejections and upstream failures, in the OpenAI error shape.
//!
//! `{"error":{"message":"...","type":"weir_<reason>","code":"<reason>"}}`
//! with `x-weir-reject: <reason>`, so the official SDKs show them cleanly.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::body::Body;
pub use crate::reject::{Reject, Side};

/// A failure on the request path, ready to become a response: it knows its
/// contract `reason`, its status, which side failed and whether another
/// attempt may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", reason.as_str())]
pub struct ProxyError {
    pub reason: Reject,
    /// The reason's status, unless the error says otherwise (a stalled
    /// request body is `bad_request_body` with 408).
    pub status: StatusCode,
    pub message: String,
    /// Sent as `retry-after` (whole seconds, rounded up) when set.
    pub retry_after: Option<Duration>,
}

impl ProxyError {
    pub fn new(reason: Reject, message: impl Into<String>) -> Self {
        Self {
            reason,
            status: reason.status(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn side(&self) -> Side {
        self.reason.side()
    }

    pub fn retryable(&self) -> bool {
        self.reason.retryable()
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
        *response.status_mut() = self.status;
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
        let e = ProxyError::new(Reject::CircuitOpen, "open")
            .with_retry_after(Duration::from_millis(1200));
        assert_eq!(e.into_response().headers()["retry-after"], "2");
    }

    #[test]
    fn a_stalled_body_is_bad_request_body_with_408() {
        let e = ProxyError::new(Reject::BadRequestBody, "stalled")
            .with_status(StatusCode::REQUEST_TIMEOUT);
        assert_eq!(e.to_string(), "bad_request_body: stalled");
        assert!(!e.retryable());
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()["x-weir-reject"], "bad_request_body");
    }
}
