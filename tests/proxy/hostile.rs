//! What a hostile client or a lying upstream sends: paths that climb out of
//! their route, framing with two meanings, answers that are not HTTP,
//! usage counts no answer could have. Over raw sockets, since HTTP clients
//! normalise paths and fix framing before weir could see them.

use std::sync::{Arc, Mutex};

use http::Response;

use crate::support::raw::{self, RawUpstream};
use crate::support::upstream::full;
use crate::support::Scratch;
use crate::support::*;

/// An upstream that answers 200 and remembers every path (and query) it got.
async fn recording() -> (MockUpstream, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = MockUpstream::start(move |request| {
        let target = request.uri().path_and_query().unwrap().to_string();
        log.lock().unwrap().push(target);
        async { Response::builder().body(full("ok")).unwrap() }
    })
    .await;
    (upstream, seen)
}

const ESCAPES: &[&str] = &[
    "/v1/../../admin",
    "/v1/%2e%2e/%2e%2e/admin",
    "/v1/%2E%2e/.%2e/admin",
    "/v1/..%2f..%2fadmin",
    "/v1/..%2F..%2Fadmin",
    "/v1/..%5c..%5cadmin",
    "/v1/chat%2fcompletions",
    "/v1/../internal/x",
    "/v1/%2e%2e/internal/x",
    "/v1/x/../../internal/x",
];

#[tokio::test]
async fn a_path_cannot_leave_its_route_or_the_base_path() {
    let (tenant_a, a_paths) = recording().await;
    let (internal, internal_paths) = recording().await;
    let weir = TestWeir::start(&policy(&format!(
        "  tenant-a:\n    route: /v1\n    url: {}/tenant-a/v1\n    headers:\n      authorization: Bearer sk-tenant-a\n  internal:\n    route: /internal\n    url: {}/internal\n",
        tenant_a.url(),
        internal.url()
    )))
    .await;

    for path in ESCAPES {
        let answer = raw::exchange(weir.proxy, &raw::get_closing(path)).await;
        assert_eq!(raw::status(&answer), 400, "{path}: {answer}");
        assert_eq!(
            raw::header(&answer, "x-weir-reject"),
            Some("bad_request_path"),
            "{path}"
        );
        assert!(answer.contains(r#""code":"bad_request_path""#), "{answer}");
        // The same over HTTP/2 (h2c): the client sends the path as written.
        let response = h2c_client()
            .request(get(&format!("http://{}{path}", weir.proxy)))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "h2c {path}");
    }
    assert!(
        a_paths.lock().unwrap().is_empty(),
        "{:?}",
        a_paths.lock().unwrap()
    );
    assert!(internal_paths.lock().unwrap().is_empty());
    assert_eq!(
        weir.metric(r#"weir_rejected_total{reason="bad_request_path",upstream="none"}"#)
            .await,
        2.0 * ESCAPES.len() as f64
    );

    // What stays inside the route is forwarded, normalised, below the base path.
    for (path, forwarded) in [
        ("/v1/./chat//completions", "/tenant-a/v1/chat/completions"),
        ("/v1/x/../models?limit=2", "/tenant-a/v1/models?limit=2"),
        ("/v1/%2e/models", "/tenant-a/v1/models"),
        ("//internal//a/b/../c", "/internal/a/c"),
    ] {
        let answer = raw::exchange(weir.proxy, &raw::get_closing(path)).await;
        assert_eq!(raw::status(&answer), 200, "{path}: {answer}");
        let seen = [
            a_paths.lock().unwrap().clone(),
            internal_paths.lock().unwrap().clone(),
        ]
        .concat();
        assert_eq!(seen.last().map(String::as_str), Some(forwarded), "{path}");
    }
    weir.shutdown().await;
}

#[tokio::test]
async fn two_host_headers_are_refused() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n",
        upstream.url()
    )))
    .await;
    let answer = raw::exchange(
        weir.proxy,
        b"GET /v1/models HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\n\r\n",
    )
    .await;
    assert_eq!(raw::status(&answer), 400, "{answer}");
    assert_eq!(
        raw::header(&answer, "x-weir-reject"),
        Some("bad_request_body")
    );
    assert_eq!(upstream.hits(), 0);
    weir.shutdown().await;
}

#[tokio::test]
async fn an_answer_with_two_lengths_reaches_the_client_with_one() {
    // content-length says 5, the chunked body holds 2 bytes.
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    )
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    retry:\n      attempts: 1\n",
        upstream.url()
    )))
    .await;
    let answer = raw::exchange(weir.proxy, &raw::get_closing("/v1/models")).await;
    assert_eq!(raw::status(&answer), 200, "{answer}");
    let length = raw::header(&answer, "content-length");
    assert!(length.is_none() || length == Some("2"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body == "hi" || body.contains("\r\nhi\r\n"), "{answer}");
    weir.shutdown().await;
}

#[tokio::test]
async fn an_answer_that_is_not_http_is_upstream_protocol() {
    let upstream = RawUpstream::start(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    retry:\n      attempts: 1\n",
        upstream.url()
    )))
    .await;
    let response = send(post(&weir.url("/v1/chat/completions"), "{}")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-weir-reject"], "upstream_protocol");
    assert_eq!(
        weir.metric(r#"weir_rejected_total{reason="upstream_protocol",upstream="llm"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn unbelievable_usage_is_counted_as_missing_not_added() {
    let upstream = MockUpstream::start(|request| async move {
        let huge = if request.uri().path().contains("max") {
            "18446744073709551615"
        } else {
            "9223372036854775808"
        };
        let body = format!(
            r#"{{"model":"m","choices":[],"usage":{{"prompt_tokens":{huge},"completion_tokens":{huge}}}}}"#
        );
        Response::builder()
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap()
    })
    .await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    kind: openai\n",
        upstream.url()
    )))
    .await;
    for path in [
        "/max/v1/chat/completions",
        "/half/v1/chat/completions",
        "/half/v1/chat/completions",
    ] {
        let response = send(post(&weir.url(path), r#"{"model":"m"}"#)).await;
        assert_eq!(response.status(), 200);
        body_bytes(response).await;
    }
    assert_eq!(
        weir.metric_eventually(r#"weir_usage_missing_total{upstream="llm"}"#, 3.0)
            .await,
        3.0
    );
    let scrape = weir.scrape().await;
    let counted: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("weir_tokens_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        counted, 0.0,
        "no token counted from a lying answer:\n{scrape}"
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn headers_over_max_request_headers_are_431() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nlimits:\n  max_request_headers: 16KiB\nupstreams:\n  llm:\n    route: /\n    url: {}\n",
        upstream.url()
    ))
    .await;
    let big = "a".repeat(20 * 1024);
    let request = format!(
        "GET /v1/models HTTP/1.1\r\nhost: weir\r\nx-big: {big}\r\nconnection: close\r\n\r\n"
    );
    let answer = raw::exchange(weir.proxy, request.as_bytes()).await;
    assert_eq!(raw::status(&answer), 431, "{answer}");
    let small = "a".repeat(8 * 1024);
    let request = format!(
        "GET /v1/models HTTP/1.1\r\nhost: weir\r\nx-big: {small}\r\nconnection: close\r\n\r\n"
    );
    assert_eq!(
        raw::status(&raw::exchange(weir.proxy, request.as_bytes()).await),
        200
    );
    assert_eq!(upstream.hits(), 1);
    weir.shutdown().await;
}

#[tokio::test]
async fn a_length_and_a_transfer_coding_together_are_refused() {
    let upstream = MockUpstream::fixed("ok").await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n",
        upstream.url()
    )))
    .await;
    let smuggle = b"POST /v1/chat/completions HTTP/1.1\r\nhost: weir\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/models HTTP/1.1\r\nhost: weir\r\n\r\n";
    let answer = raw::exchange(weir.proxy, smuggle).await;
    assert_eq!(raw::status(&answer), 400, "{answer}");
    assert_eq!(
        raw::header(&answer, "x-weir-reject"),
        Some("bad_request_body")
    );
    assert_eq!(upstream.hits(), 0, "neither request reached the upstream");

    // On a keep-alive connection, after a clean request: still refused.
    let clean_then_smuggle = b"GET /v1/models HTTP/1.1\r\nhost: weir\r\n\r\nPOST /v1/x HTTP/1.1\r\nhost: weir\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(weir.proxy).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, &clean_then_smuggle[..39])
        .await
        .unwrap();
    // Read the whole first answer before sending the second head, so it is
    // a new head on an idle connection, not a pipelined one.
    let mut first = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&first).ends_with("\r\n\r\nok") {
        let n = tokio::time::timeout(
            PATIENCE,
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
        )
        .await
        .expect("the first answer arrives")
        .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&buf[..n]);
    }
    assert!(first.starts_with(b"HTTP/1.1 200"));
    tokio::io::AsyncWriteExt::write_all(&mut stream, &clean_then_smuggle[39..])
        .await
        .unwrap();
    let second = raw::read_to_close(&mut stream).await;
    assert_eq!(raw::status(&second), 400, "the second is refused: {second}");
    assert_eq!(upstream.hits(), 1);
    weir.shutdown().await;
}

#[tokio::test]
async fn no_secret_appears_in_admin_endpoints_error_bodies_or_usage_events() {
    const UPSTREAM_KEY: &str = "sk-org-upstream-7f3a9c2e11";
    const CLIENT_KEY: &str = "sk-client-personal-55d0e8";
    let ok = MockUpstream::json(
        r#"{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
    )
    .await;
    let dir = Scratch::new("secrets");
    let log = dir.0.join("usage.jsonl");
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nusage_log: {}\nupstreams:\n  ok:\n    route: /ok\n    url: {}\n    kind: openai\n    headers:\n      authorization: \"Bearer ${{ORG_KEY}}\"\n  down:\n    route: /down\n    url: http://127.0.0.1:1\n    kind: openai\n    retry:\n      attempts: 1\n    headers:\n      api-key: \"${{ORG_KEY}}\"\n",
        log.display(),
        ok.url()
    );
    let env = |name: &str| (name == "ORG_KEY").then(|| UPSTREAM_KEY.to_owned());
    let policy = weir::config::parse(&yaml, "secrets.yaml", &env).unwrap();
    let weir = TestWeir::start_policy(policy).await;
    let mut seen = String::new();
    for path in [
        "/ok/v1/chat/completions",
        "/down/v1/chat/completions",
        "/nowhere",
    ] {
        let request = http::Request::post(weir.url(path))
            .header("authorization", format!("Bearer {CLIENT_KEY}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"{\"model\":\"m\"}",
            )))
            .unwrap();
        let response = client().request(request).await.unwrap();
        seen.push_str(&format!("{:?}", response.headers()));
        seen.push_str(&body_string(response).await);
    }
    for endpoint in ["/config", "/upstreams", "/metrics"] {
        seen.push_str(&weir.admin_get(endpoint).await.1);
    }
    weir.shutdown().await;
    seen.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
    assert!(
        seen.contains(r#""upstream":"ok""#),
        "the usage log was written: {seen}"
    );
    for secret in [UPSTREAM_KEY, CLIENT_KEY, "7f3a9c2e11", "55d0e8"] {
        assert!(!seen.contains(secret), "{secret} leaked:\n{seen}");
    }
}
