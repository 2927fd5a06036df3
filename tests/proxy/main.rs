//! Integration tests: weir in-process, real sockets, real upstreams.
//! One behaviour per module.

mod support;

mod accounting;
mod bodies;
mod breaker;
mod bulkhead;
mod check;
mod compressed;
mod connections;
mod dashboards;
mod disconnect;
mod drain;
mod fallback;
mod headers;
mod hostile;
mod pooling;
mod rate_limit;
mod reload;
mod retry;
mod routing;
mod streaming;
mod timeouts;
mod tls;
