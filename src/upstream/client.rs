//! The pooled client of one upstream: keep-alive connections over TCP (with
//! TCP_NODELAY) or rustls, HTTP/1.1 or HTTP/2, counted as they open.
//!
//! Each upstream has a pool of its own, so a slow upstream cannot hold the
//! connections another one needs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::IntCounter;

use super::RequestBody;
use crate::config::{Scheme, UpstreamPolicy};
use crate::tls::TlsError;

pub type UpstreamClient = Client<Connector, RequestBody>;

/// hyper-rustls over hyper-util's TCP connector, counting each connection.
#[derive(Clone)]
pub struct Connector {
    inner: HttpsConnector<HttpConnector>,
    opened: IntCounter,
}

impl tower_service::Service<Uri> for Connector {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Response;
    type Error = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let opened = self.opened.clone();
        // Connections open rarely (they are pooled): boxing here is cheap.
        Box::pin(async move {
            let connection = connecting.await?;
            opened.inc();
            Ok(connection)
        })
    }
}

pub fn build(policy: &UpstreamPolicy, opened: IntCounter) -> Result<UpstreamClient, TlsError> {
    let pool = &policy.pool;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(pool.connect_timeout));
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));

    let tls = crate::tls::upstream_client_config(&policy.ca_certs)?;
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    let https = if pool.http2 {
        https.enable_http2().wrap_connector(http)
    } else {
        https.wrap_connector(http)
    };

    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // Without a pool timer, hyper-util ignores the idle timeout (hyper#3640).
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(pool.max_idle)
        .pool_idle_timeout(pool.idle_timeout)
        .set_host(true);
    if pool.http2 && policy.url.scheme == Scheme::Http {
        // Prior knowledge (h2c); on https, ALPN picks h2.
        builder.http2_only(true);
    }
    if pool.http2 {
        builder
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .http2_keep_alive_while_idle(true);
    }
    Ok(builder.build(Connector {
        inner: https,
        opened,
    }))
}
