//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/upstreams`,
//! `/config`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::proxy::{Body, Shared};
use crate::server::conns::{Conns, Held, Timeouts, Watched};

/// What the admin endpoints read.
pub struct AdminState {
    pub shared: Arc<Shared>,
    /// Cleared when draining starts.
    pub ready: AtomicBool,
}

/// Admin connections at once: scrapes and probes, never many; past it the
/// longest idle closes first.
const ADMIN_MAX_CONNECTIONS: usize = 256;

pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let conns = Conns::new(&state.shared.metrics, "admin");
    let mut builders = crate::server::Builders::default();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let Some(tracked) = conns.admit(ADMIN_MAX_CONNECTIONS) else {
                    continue;
                };
                let limits = state.shared.snapshot.load().policy.limits.clone();
                let builder = builders.for_limits(&limits);
                let timeouts = Timeouts::from(&limits);
                let service = {
                    let (state, conn) = (state.clone(), tracked.state.clone());
                    service_fn(move |request: Request<Incoming>| {
                        let held = conn.request_started(request.version() == http::Version::HTTP_2);
                        let answered = answer(state.clone(), request);
                        async move {
                            let response = answered.await?;
                            Ok::<_, Infallible>(response.map(|body| Held::new(body, held)))
                        }
                    })
                };
                connections.spawn(async move {
                    let stream = Watched::new(stream, tracked.state.clone(), false);
                    let serving = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = tracked.serve(timeouts, serving).await;
                });
            }
        }
    }
    connections.shutdown().await;
}

async fn answer(
    state: Arc<AdminState>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"));
    }
    Ok(match request.uri().path() {
        "/metrics" => {
            let mut response =
                Response::new(Body::full(Bytes::from(state.shared.metrics.encode())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
        }
        "/upstreams" => json(&upstreams(&state)),
        "/config" => {
            json(&serde_json::to_value(&*state.shared.snapshot.load().policy).unwrap_or_default())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics /healthz /readyz /upstreams /config\n",
        ),
    })
}

fn upstreams(state: &AdminState) -> serde_json::Value {
    let snapshot = state.shared.snapshot.load();
    let mut out = serde_json::Map::new();
    for upstream in snapshot.router.upstreams() {
        let m = &upstream.metrics;
        let breaker = match m.circuit_state.get() {
            1 => "open",
            2 => "half_open",
            _ => "closed",
        };
        out.insert(
            upstream.name.to_string(),
            serde_json::json!({
                "route": upstream.policy.route,
                "url": upstream.policy.url.to_string(),
                "breaker": breaker,
                "in_flight": m.in_flight.get(),
                "queued": m.queue_depth.get(),
                "config_hash": upstream.hash,
            }),
        );
    }
    serde_json::Value::Object(out)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Body::full(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
