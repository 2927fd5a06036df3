//! TLS on both sides: an https upstream signed by a private CA is trusted
//! only through its `ca`, and `tls` serves HTTPS (h1 and h2 by ALPN) on the
//! listener, with client certificates required when `client_ca` is set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::upstream::full;
use crate::support::*;

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate issued by a [`Ca`], with its key.
struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn issue(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued { cert, key }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    fn localhost(&self) -> Issued {
        self.issue(
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

impl Issued {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }

    /// Writes `NAME.crt` and `NAME.key`; returns their paths.
    fn write(&self, dir: &Scratch, name: &str) -> (PathBuf, PathBuf) {
        (
            dir.write(&format!("{name}.crt"), &self.cert.pem()),
            dir.write(&format!("{name}.key"), &self.key.serialize_pem()),
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side of a mock https upstream.
fn upstream_tls(server: &Issued) -> rustls::ServerConfig {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(server.chain(), server.private_key())
        .unwrap()
}

/// A client trusting only `ca`, presenting `identity` if given, offering `alpn`.
fn client_tls(ca: &Ca, identity: Option<&Issued>, alpn: &[&[u8]]) -> TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain(), id.private_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &TlsConnector,
    weir: &TestWeir,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(weir.proxy).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("TLS handshake ends in time")
}

/// One HTTP/1.1 request over an established TLS stream.
async fn h1_over(
    stream: TlsStream<TcpStream>,
    path: &str,
) -> Result<Response<Incoming>, hyper::Error> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("weir answers in time")
}

/// An upstream answering with the `x-forwarded-proto` it saw.
async fn proto_echo() -> MockUpstream {
    MockUpstream::start(|request| async move {
        let proto = request
            .headers()
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| "none".to_owned());
        Response::new(full(format!("proto={proto}")))
    })
    .await
}

/// The policy YAML for a TLS listener in front of one plain upstream.
fn tls_policy(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    upstream: &MockUpstream,
) -> String {
    let client_ca = client_ca
        .map(|ca| format!("  client_ca: {}\n", ca.display()))
        .unwrap_or_default();
    format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n{client_ca}\
         shutdown:\n  drain_timeout: 5s\nupstreams:\n  echo:\n    route: /echo\n    url: {}\n",
        cert.display(),
        key.display(),
        upstream.url()
    )
}

#[tokio::test]
async fn https_upstream_with_a_private_ca_is_trusted_through_ca() {
    let dir = Scratch::new("upstream-ca");
    let ca = Ca::new("weir test upstream CA");
    let ca_path = dir.write("ca.pem", &ca.cert.pem());
    let upstream = MockUpstream::start_tls(
        |_| async move { Response::new(full("hello over tls")) },
        upstream_tls(&ca.localhost()),
    )
    .await;
    let port = upstream.addr.port();
    let weir = TestWeir::start(&policy(&format!(
        "  private:\n    route: /private\n    url: https://localhost:{port}\n    ca: {}\n\
         \x20 untrusted:\n    route: /untrusted\n    url: https://localhost:{port}\n",
        ca_path.display()
    )))
    .await;

    let response = send(get(&weir.url("/private/v1/models"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-weir-upstream"], "private");
    assert_eq!(body_string(response).await, "hello over tls");
    assert_eq!(upstream.hits(), 1);

    // The same server through an upstream without `ca`: the webpki roots do
    // not know the private CA, so the handshake fails and no request lands.
    let response = send(get(&weir.url("/untrusted/v1/models"))).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-weir-reject"], "upstream_connect");
    assert_eq!(response.headers()["x-weir-upstream"], "untrusted");
    let json = body_json(response).await;
    assert_eq!(json["error"]["code"], "upstream_connect");
    let message = json["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(
        message.contains("certificate"),
        "the message says why: {message}"
    );
    assert_eq!(
        upstream.hits(),
        1,
        "no request reached the upstream untrusted"
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn tls_listener_serves_https() {
    let dir = Scratch::new("listener");
    let ca = Ca::new("weir test listener CA");
    let (cert, key) = ca.localhost().write(&dir, "server");
    let upstream = proto_echo().await;
    let weir = TestWeir::start(&tls_policy(&cert, &key, None, &upstream)).await;

    let stream = tls_connect(&client_tls(&ca, None, &[b"http/1.1"]), &weir)
        .await
        .expect("TLS handshake with weir");
    let response = h1_over(stream, "/echo/v1/models")
        .await
        .expect("request over TLS");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-weir-upstream"], "echo");
    assert_eq!(body_string(response).await, "proto=https");
    assert_eq!(upstream.hits(), 1);

    // Plain HTTP on the TLS port gets nowhere near the upstream.
    let plain = tokio::time::timeout(
        PATIENCE,
        client().request(get(&weir.url("/echo/v1/models"))),
    )
    .await;
    assert!(
        !matches!(plain, Ok(Ok(ref r)) if r.status() == 200),
        "plain HTTP must not be served on a TLS listener"
    );
    assert_eq!(upstream.hits(), 1);
    weir.shutdown().await;
}

#[tokio::test]
async fn mtls_listener_rejects_a_client_without_a_certificate() {
    let dir = Scratch::new("mtls");
    let server_ca = Ca::new("weir test server CA");
    let client_ca = Ca::new("weir test client CA");
    let (cert, key) = server_ca.localhost().write(&dir, "server");
    let client_ca_path = dir.write("clients-ca.pem", &client_ca.cert.pem());
    let upstream = proto_echo().await;
    let weir = TestWeir::start(&tls_policy(&cert, &key, Some(&client_ca_path), &upstream)).await;

    // No client certificate: with TLS 1.3 the client may finish its side of
    // the handshake, but the server's alert ends the connection before any
    // answer. Either way there is no 200.
    let anonymous = client_tls(&server_ca, None, &[b"http/1.1"]);
    if let Ok(stream) = tls_connect(&anonymous, &weir).await {
        let result = h1_over(stream, "/echo/v1/models").await;
        assert!(
            !matches!(result, Ok(ref r) if r.status() == 200),
            "a client without a certificate was served: {result:?}"
        );
    }

    // A certificate from some other CA is refused as well.
    let stranger = server_ca.issue("stranger", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let other = client_tls(&server_ca, Some(&stranger), &[b"http/1.1"]);
    if let Ok(stream) = tls_connect(&other, &weir).await {
        let result = h1_over(stream, "/echo/v1/models").await;
        assert!(
            !matches!(result, Ok(ref r) if r.status() == 200),
            "a client certificate from an unknown CA was accepted: {result:?}"
        );
    }
    assert_eq!(upstream.hits(), 0);

    // A certificate signed by `client_ca` is let in.
    let identity = client_ca.issue("app", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let stream = tls_connect(
        &client_tls(&server_ca, Some(&identity), &[b"http/1.1"]),
        &weir,
    )
    .await
    .expect("mTLS handshake with weir");
    let response = h1_over(stream, "/echo/v1/models")
        .await
        .expect("request over mTLS");
    assert_eq!(response.status(), 200);
    assert_eq!(body_string(response).await, "proto=https");
    assert_eq!(upstream.hits(), 1);
    weir.shutdown().await;
}

#[tokio::test]
async fn h2_over_tls_via_alpn() {
    let dir = Scratch::new("h2");
    let ca = Ca::new("weir test h2 CA");
    let (cert, key) = ca.localhost().write(&dir, "server");
    let upstream = proto_echo().await;
    let weir = TestWeir::start(&tls_policy(&cert, &key, None, &upstream)).await;

    let stream = tls_connect(&client_tls(&ca, None, &[b"h2", b"http/1.1"]), &weir)
        .await
        .expect("TLS handshake with weir");
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "weir picks h2"
    );
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);

    for _ in 0..2 {
        let request = Request::get(format!(
            "https://localhost:{}/echo/v1/models",
            weir.proxy.port()
        ))
        .body(Full::<Bytes>::default())
        .unwrap();
        let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
            .await
            .expect("weir answers in time")
            .expect("request over h2");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "proto=https");
    }
    assert_eq!(upstream.hits(), 2);
    weir.shutdown().await;
}
