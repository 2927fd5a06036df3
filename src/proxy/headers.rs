//! Header hygiene between client and upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub use crate::wire::HOP_BY_HOP;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_WEIR_UPSTREAM: HeaderName = HeaderName::from_static("x-weir-upstream");
pub const X_WEIR_ATTEMPTS: HeaderName = HeaderName::from_static("x-weir-attempts");
pub const X_WEIR_REJECT: HeaderName = HeaderName::from_static("x-weir-reject");
pub const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes hop-by-hop headers, including any named in `connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// An upstream answer framed by `transfer-encoding` has no length to pass
/// on: a `content-length` beside it (or two that differ) would tell the
/// client a length the body does not have and desynchronise its next
/// request. hyper then frames the body itself.
pub fn drop_contradicting_length(headers: &mut HeaderMap) {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return;
    };
    let disagree = lengths.any(|other| other != first);
    if disagree || headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// The client's `x-request-id` when it is a sane token, else a new UUID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(X_REQUEST_ID) {
        let bytes = id.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return id.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).expect("a hyphenated UUID is a valid header value")
}

/// Appends the peer to `x-forwarded-for`, as Envoy and nginx do.
pub fn append_forwarded_for(headers: &mut HeaderMap, peer: std::net::IpAddr) {
    let mut buf = itoa_ip(peer);
    let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => {
            buf.insert_str(0, ", ");
            buf.insert_str(0, existing);
            buf
        }
        _ => buf,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

fn itoa_ip(ip: std::net::IpAddr) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(48);
    let _ = write!(s, "{ip}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_headers_named_in_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("authorization"));
    }

    #[test]
    fn keeps_a_sane_request_id_and_replaces_a_bad_one() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = request_id(&h);
        assert_eq!(generated.len(), 36);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1");
        append_forwarded_for(&mut h, "::1".parse().unwrap());
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.1, ::1");
    }
}
