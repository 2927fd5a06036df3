//! Why weir answered instead of the upstream: the contract's `reason`s, the
//! status each answers with, and which side of weir failed.
//!
//! This sits on the ground floor: the proxy answers with these, the metrics
//! count them (`weir_rejected_total{reason}`), and nothing here depends on
//! either.

use http::StatusCode;

/// The `reason` of the contract's error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    BadRequestBody,
    BadRequestPath,
    UpstreamProtocol,
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
    pub const ALL: [Reject; 11] = [
        Self::NoRoute,
        Self::CircuitOpen,
        Self::Overloaded,
        Self::QueueTimeout,
        Self::RateLimited,
        Self::UpstreamConnect,
        Self::UpstreamTimeout,
        Self::BodyTooLarge,
        Self::BadRequestBody,
        Self::BadRequestPath,
        Self::UpstreamProtocol,
    ];

    /// The `code` of the error body, the `x-weir-reject` header and the
    /// `reason` label.
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
            Self::BadRequestBody => "bad_request_body",
            Self::BadRequestPath => "bad_request_path",
            Self::UpstreamProtocol => "upstream_protocol",
        }
    }

    /// The `type` of the error body: `weir_<reason>`.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::NoRoute => "weir_no_route",
            Self::CircuitOpen => "weir_circuit_open",
            Self::Overloaded => "weir_overloaded",
            Self::QueueTimeout => "weir_queue_timeout",
            Self::RateLimited => "weir_rate_limited",
            Self::UpstreamConnect => "weir_upstream_connect",
            Self::UpstreamTimeout => "weir_upstream_timeout",
            Self::BodyTooLarge => "weir_body_too_large",
            Self::BadRequestBody => "weir_bad_request_body",
            Self::BadRequestPath => "weir_bad_request_path",
            Self::UpstreamProtocol => "weir_upstream_protocol",
        }
    }

    /// The status the reason answers with by default (a stalled body is
    /// `bad_request_body` with 408: the error sets its own status then).
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::CircuitOpen | Self::Overloaded | Self::QueueTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamConnect | Self::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequestBody | Self::BadRequestPath => StatusCode::BAD_REQUEST,
        }
    }

    pub fn side(self) -> Side {
        match self {
            Self::UpstreamConnect | Self::UpstreamTimeout | Self::UpstreamProtocol => {
                Side::Upstream
            }
            Self::BodyTooLarge | Self::NoRoute | Self::BadRequestBody | Self::BadRequestPath => {
                Side::Client
            }
            Self::CircuitOpen | Self::Overloaded | Self::QueueTimeout | Self::RateLimited => {
                Side::Weir
            }
        }
    }

    /// Whether another attempt could succeed where this one failed: only an
    /// upstream's failure is worth retrying (when the policy lists it).
    pub fn retryable(self) -> bool {
        self.side() == Side::Upstream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_name_and_weir_type() {
        let mut names: Vec<&str> = Reject::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Reject::ALL.len());
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in declaration order");
            assert_eq!(r.error_type(), format!("weir_{}", r.as_str()));
        }
    }

    #[test]
    fn only_upstream_failures_are_retryable() {
        assert!(Reject::UpstreamConnect.retryable());
        assert!(Reject::UpstreamTimeout.retryable());
        assert!(!Reject::CircuitOpen.retryable());
        assert!(!Reject::BadRequestBody.retryable());
        assert_eq!(Reject::BadRequestBody.side(), Side::Client);
    }
}
