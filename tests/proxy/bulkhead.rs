//! The bulkhead: at most `max_in_flight` at the upstream, a bounded queue
//! with a timeout, shedding beyond; gauges that never drift; and a hanging
//! upstream that cannot slow another one.

use crate::support::*;

/// weir with a bulkhead of one place and one queue slot in front of a gated
/// upstream, its place taken by a request the upstream holds.
struct Held {
    upstream: MockUpstream,
    release: tokio::sync::watch::Sender<bool>,
    weir: TestWeir,
    client: TestClient,
    holding: tokio::task::JoinHandle<
        Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    >,
}

async fn one_place_taken(queue_timeout: &str) -> Held {
    let (upstream, release) = MockUpstream::gated().await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    retry:\n      attempts: 1\n    concurrency:\n      max_in_flight: 1\n      max_queue: 1\n      queue_timeout: {queue_timeout}\n",
        upstream.url()
    )))
    .await;
    let client = client();
    let holding = tokio::spawn(client.request(get(&weir.url("/a"))));
    eventually("the first request reaches the upstream", || {
        upstream.hits() == 1
    })
    .await;
    Held {
        upstream,
        release,
        weir,
        client,
        holding,
    }
}

#[tokio::test]
async fn sheds_at_once_when_the_queue_is_full() {
    let Held {
        upstream,
        release,
        weir,
        client,
        holding,
    } = one_place_taken("60s").await;
    let queued = tokio::spawn(client.request(get(&weir.url("/b"))));
    assert_eq!(
        weir.metric_eventually(r#"weir_queue_depth{upstream="llm"}"#, 1.0)
            .await,
        1.0
    );

    // Shed without waiting: answered while the queued request still waits
    // (its queue timeout is a minute away) and the first still holds.
    let shed = send(get(&weir.url("/c"))).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["x-weir-reject"], "overloaded");
    assert!(!queued.is_finished() && !holding.is_finished());
    assert_eq!(
        weir.metric(r#"weir_queue_depth{upstream="llm"}"#).await,
        1.0
    );

    release.send(true).unwrap();
    assert_eq!(holding.await.unwrap().unwrap().status(), 200);
    assert_eq!(queued.await.unwrap().unwrap().status(), 200);
    assert_eq!(upstream.hits(), 2, "the shed request never reached it");
    assert_eq!(
        weir.metric(r#"weir_rejected_total{reason="overloaded",upstream="llm"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn times_out_in_the_queue() {
    let Held {
        upstream,
        release,
        weir,
        client,
        holding,
    } = one_place_taken("300ms").await;
    let timed_out = tokio::time::timeout(PATIENCE, client.request(get(&weir.url("/b"))))
        .await
        .expect("the queue timeout answers")
        .unwrap();
    assert_eq!(timed_out.status(), 503);
    assert_eq!(timed_out.headers()["x-weir-reject"], "queue_timeout");
    assert_eq!(
        weir.metric(r#"weir_queue_depth{upstream="llm"}"#).await,
        0.0
    );

    release.send(true).unwrap();
    assert_eq!(holding.await.unwrap().unwrap().status(), 200);
    assert_eq!(upstream.hits(), 1);
    assert_eq!(
        weir.metric(r#"weir_rejected_total{reason="queue_timeout",upstream="llm"}"#)
            .await,
        1.0
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn gauges_return_to_zero_after_many_cancelled_clients() {
    let (upstream, _release) = MockUpstream::gated().await;
    let weir = TestWeir::start(&policy(&format!(
        "  llm:\n    route: /\n    url: {}\n    concurrency:\n      max_in_flight: 5\n      max_queue: 100\n      queue_timeout: 60s\n",
        upstream.url()
    )))
    .await;
    let clients: Vec<_> = (0..60)
        .map(|_| {
            let url = weir.url("/x");
            tokio::spawn(async move { client().request(get(&url)).await })
        })
        .collect();
    let seen = gauges_eventually(&weir, (5.0, 55.0)).await;
    assert_eq!(seen, (5.0, 55.0), "5 at the upstream, 55 queued");
    for c in &clients {
        c.abort();
    }
    let seen = gauges_eventually(&weir, (0.0, 0.0)).await;
    assert_eq!(seen, (0.0, 0.0), "every place and queue slot is freed");
    let (_, upstreams) = weir.admin_get("/upstreams").await;
    let json: serde_json::Value = serde_json::from_str(&upstreams).unwrap();
    assert_eq!(json["llm"]["in_flight"], 0);
    assert_eq!(json["llm"]["queued"], 0);
    weir.shutdown().await;
}

#[tokio::test]
async fn a_hanging_upstream_does_not_slow_another() {
    let (hanging, _release) = MockUpstream::gated().await;
    let healthy = MockUpstream::fixed("fine").await;
    let weir = TestWeir::start(&policy(&format!(
        "  hang:\n    route: /hang\n    url: {}\n    concurrency:\n      max_in_flight: 4\n      max_queue: 4\n      queue_timeout: 30s\n  fine:\n    route: /fine\n    url: {}\n",
        hanging.url(),
        healthy.url()
    )))
    .await;
    let stuck: Vec<_> = (0..20)
        .map(|_| tokio::spawn(client().request(get(&weir.url("/hang/x")))))
        .collect();
    eventually("the hanging upstream is at its limit", || {
        hanging.hits() == 4
    })
    .await;

    let client = client();
    // Every request to the healthy upstream is answered while the other's
    // places and queue are full (one shared limit would hold them all).
    for _ in 0..50 {
        let response = tokio::time::timeout(PATIENCE, client.request(get(&weir.url("/fine/x"))))
            .await
            .expect("the healthy upstream answers")
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(body_string(response).await, "fine");
    }
    assert_eq!(hanging.hits(), 4, "the hanging one still holds its places");
    for s in stuck {
        s.abort();
    }
    weir.shutdown().await;
}

/// `(weir_in_flight, weir_queue_depth)` of upstream `llm`, from one scrape,
/// polled (bounded) until they equal `want`; the last pair seen.
async fn gauges_eventually(weir: &TestWeir, want: (f64, f64)) -> (f64, f64) {
    settles(&want, || async {
        let text = weir.scrape().await;
        (
            metric_value(&text, r#"weir_in_flight{upstream="llm"}"#),
            metric_value(&text, r#"weir_queue_depth{upstream="llm"}"#),
        )
    })
    .await
}
