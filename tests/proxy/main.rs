//! Integration tests: weir in-process, real sockets, real upstreams.
//! One behaviour per module.

mod support;

mod bodies;
mod check;
mod disconnect;
mod drain;
mod headers;
mod pooling;
mod routing;
mod streaming;
mod timeouts;
mod tls;
