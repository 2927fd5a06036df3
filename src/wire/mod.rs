//! HTTP vocabulary shared by every layer: the hop-by-hop headers that are
//! never forwarded (the policy refuses them in `headers`, the proxy strips
//! them both ways), and request paths as weir reads them ([`path`]).

/// Connection-scoped headers (RFC 9110 §7.6.1), never forwarded.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub mod path;
