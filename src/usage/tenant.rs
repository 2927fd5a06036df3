//! Whose usage a request is: the `accounting.tenant_header` value; without
//! it, a short stable hash of the client's API key (never the key itself);
//! else `unknown`.

use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Longest tenant value taken from a header; longer ones are hashed too.
const MAX_TENANT_LEN: usize = 64;

pub fn tenant_of(headers: &HeaderMap, tenant_header: &http::HeaderName) -> String {
    if let Some(value) = headers.get(tenant_header).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if !value.is_empty() && value.len() <= MAX_TENANT_LEN {
            return value.to_owned();
        }
        if !value.is_empty() {
            return hashed("tenant-", value);
        }
    }
    let key = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match key {
        Some(key) => hashed("key-", key),
        None => "unknown".to_owned(),
    }
}

/// `prefix` + the first 12 hex digits of SHA-256: stable across restarts
/// and replicas, and no way back to the key.
fn hashed(prefix: &str, secret: &str) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(prefix.len() + 12);
    out.push_str(prefix);
    for b in &digest[..6] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const TENANT: http::HeaderName = http::HeaderName::from_static("x-weir-tenant");

    #[test]
    fn the_tenant_header_wins() {
        let h = headers(&[
            ("x-weir-tenant", "team-a"),
            ("authorization", "Bearer sk-1"),
        ]);
        assert_eq!(tenant_of(&h, &TENANT), "team-a");
    }

    #[test]
    fn a_bearer_key_is_hashed_never_shown() {
        let a = tenant_of(
            &headers(&[("authorization", "Bearer sk-secret-1")]),
            &TENANT,
        );
        let b = tenant_of(
            &headers(&[("authorization", "Bearer sk-secret-2")]),
            &TENANT,
        );
        assert!(a.starts_with("key-") && a.len() == 16, "{a}");
        assert!(!a.contains("secret"));
        assert_ne!(a, b);
        assert_eq!(
            a,
            tenant_of(
                &headers(&[("authorization", "Bearer sk-secret-1")]),
                &TENANT
            )
        );
    }

    #[test]
    fn nothing_is_unknown() {
        assert_eq!(tenant_of(&HeaderMap::new(), &TENANT), "unknown");
    }
}
