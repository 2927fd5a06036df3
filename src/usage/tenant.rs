//! Whose usage a request is: the `accounting.tenant_header` value; without
//! it, a short stable hash of the client's API key (never the key itself);
//! else `unknown`.
//!
//! [`Tenants`] remembers the answers, so the request path neither hashes a
//! key nor allocates a tenant name for a client it has seen: a lookup in a
//! sharded map (no process-wide lock), bounded in size.

use std::sync::Arc;

use dashmap::DashMap;
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Distinct header values and keys remembered, each; past it the cache
/// starts over (a client sending a new key per request only costs a hash).
const CACHE_LIMIT: usize = 4096;

/// Tenants by header value and by API key, computed once each.
pub struct Tenants {
    by_header: DashMap<Box<str>, Arc<str>>,
    by_key: DashMap<Box<str>, Arc<str>>,
    unknown: Arc<str>,
}

impl Default for Tenants {
    fn default() -> Self {
        Self {
            by_header: DashMap::new(),
            by_key: DashMap::new(),
            unknown: "unknown".into(),
        }
    }
}

impl Tenants {
    /// The tenant of a request: as [`tenant_of`], remembered.
    pub fn of(&self, headers: &HeaderMap, tenant_header: &http::HeaderName) -> Arc<str> {
        if let Some(value) = header_tenant(headers, tenant_header) {
            return remembered(&self.by_header, value, || tenant_from_header(value));
        }
        match api_key(headers) {
            Some(key) => remembered(&self.by_key, key, || hashed("key-", key)),
            None => self.unknown.clone(),
        }
    }
}

fn remembered(
    cache: &DashMap<Box<str>, Arc<str>>,
    raw: &str,
    compute: impl FnOnce() -> String,
) -> Arc<str> {
    if let Some(tenant) = cache.get(raw) {
        return tenant.clone();
    }
    let tenant: Arc<str> = compute().into();
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(raw.into(), tenant.clone());
    tenant
}

fn header_tenant<'h>(headers: &'h HeaderMap, tenant_header: &http::HeaderName) -> Option<&'h str> {
    let value = headers.get(tenant_header)?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

fn tenant_from_header(value: &str) -> String {
    if value.len() <= MAX_TENANT_LEN {
        value.to_owned()
    } else {
        hashed("tenant-", value)
    }
}

fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Longest tenant value taken from a header; longer ones are hashed too.
const MAX_TENANT_LEN: usize = 64;

/// The tenant of a request, computed afresh.
pub fn tenant_of(headers: &HeaderMap, tenant_header: &http::HeaderName) -> String {
    if let Some(value) = header_tenant(headers, tenant_header) {
        return tenant_from_header(value);
    }
    match api_key(headers) {
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
    fn the_cache_answers_as_tenant_of_does() {
        let tenants = Tenants::default();
        for pairs in [
            &[("x-weir-tenant", "team-a")][..],
            &[("authorization", "Bearer sk-secret-1")],
            &[("api-key", "azure-key")],
            &[],
        ] {
            let h = headers(pairs);
            for _ in 0..2 {
                assert_eq!(&*tenants.of(&h, &TENANT), tenant_of(&h, &TENANT));
            }
        }
        let long = "t".repeat(MAX_TENANT_LEN + 1);
        let mut h = HeaderMap::new();
        h.insert("x-weir-tenant", long.parse().unwrap());
        assert!(tenants.of(&h, &TENANT).starts_with("tenant-"));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let tenants = Tenants::default();
        for i in 0..(CACHE_LIMIT * 2 + 3) {
            let mut h = HeaderMap::new();
            h.insert("authorization", format!("Bearer k{i}").parse().unwrap());
            tenants.of(&h, &TENANT);
        }
        assert!(tenants.by_key.len() <= CACHE_LIMIT);
    }

    #[test]
    fn nothing_is_unknown() {
        assert_eq!(tenant_of(&HeaderMap::new(), &TENANT), "unknown");
    }
}
