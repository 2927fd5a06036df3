//! Micro-benchmarks of the per-request decisions on weir's hot path: route
//! lookup, the breaker / bulkhead / token bucket decisions, and recording
//! the metrics of one request. `cargo bench --bench decisions`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use weir::config::BreakerPolicy;
use weir::metrics::{AttemptResult, Metrics, Outcome};
use weir::proxy::route::Router;
use weir::resilience::breaker::{Admission, CircuitBreaker, Outcome as BreakerOutcome};
use weir::resilience::bucket::{KeyedBuckets, TokenBucket};
use weir::resilience::bulkhead::Bulkhead;
use weir::upstream::Upstream;

fn router(upstreams: usize) -> Router {
    let mut yaml = String::from("upstreams:\n");
    for i in 0..upstreams {
        yaml.push_str(&format!(
            "  u{i}:\n    route: /api/v{i}\n    url: http://127.0.0.1:{}\n",
            10000 + i
        ));
    }
    let policy =
        weir::config::parse(&yaml, "bench.yaml", &|_| None).expect("bench policy is valid");
    let metrics = Metrics::new();
    Router::new(
        policy
            .upstreams
            .values()
            .map(|p| Arc::new(Upstream::new(p.clone(), &metrics).expect("upstream builds"))),
    )
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [3, 30] {
        let router = router(n);
        let path = format!("/api/v{}/chat/completions", n - 1);
        group.bench_function(format!("longest_prefix_of_{n}_routes"), |b| {
            b.iter(|| black_box(router.route(black_box(&path)).map(|(_, rest)| rest.len())))
        });
    }
    group.finish();
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    let now = tokio::time::Instant::now();
    let mut breaker = CircuitBreaker::try_new(&BreakerPolicy::default(), now)
        .expect("default breaker policy is valid");
    group.bench_function("breaker_admit_and_record", |b| {
        b.iter(|| {
            if let (Admission::Allow(permit), _) = breaker.admit(now) {
                black_box(breaker.record(permit, BreakerOutcome::Success, now));
            }
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let bulkhead = runtime.block_on(async { Bulkhead::new(64, 256, Duration::from_secs(2)) });
    group.bench_function("bulkhead_enter_and_leave", |b| {
        b.iter(|| drop(black_box(bulkhead.try_enter())))
    });
    let mut bucket = TokenBucket::new(1e9, 1e9, now);
    group.bench_function("token_bucket_withdraw", |b| {
        b.iter(|| black_box(bucket.try_withdraw(1.0, now)))
    });
    let mut tenants = KeyedBuckets::new(1e9, 1e9, 10_000);
    let keys: Vec<String> = (0..1000).map(|i| format!("tenant-{i}")).collect();
    let mut i = 0;
    group.bench_function("tenant_bucket_withdraw_1000_tenants", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(tenants.try_withdraw(&keys[i], 1.0, now))
        })
    });
    group.finish();
}

fn record_metrics(c: &mut Criterion) {
    let metrics = Metrics::new();
    let m = metrics.upstream("bench");
    c.bench_function("metrics/record_one_request", |b| {
        b.iter(|| {
            m.in_flight.inc();
            m.attempt(AttemptResult::Status(200)).inc();
            m.first_byte.observe(0.012);
            m.overhead.observe(0.000_04);
            m.in_flight.dec();
            m.request(black_box(200), Outcome::Ok).inc();
            m.duration.observe(0.015);
        })
    });
}

/// The accounting work of one finished request: whose it is, its tokens,
/// its usage event.
fn accounting(c: &mut Criterion) {
    let mut group = c.benchmark_group("usage");
    let tenant_header = http::HeaderName::from_static("x-weir-tenant");
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer sk-bench-0123456789abcdef0123456789abcdef"),
    );
    // Computed every time (SHA-256 of the key, a new String): the old path.
    group.bench_function("tenant_of_a_bearer_key", |b| {
        b.iter(|| {
            black_box(weir::usage::tenant::tenant_of(
                black_box(&headers),
                &tenant_header,
            ))
        })
    });
    // What the proxy calls: the same answer, remembered per key.
    let tenants_cache = weir::usage::tenant::Tenants::default();
    group.bench_function("tenant_of_a_bearer_key_cached", |b| {
        b.iter(|| black_box(tenants_cache.of(black_box(&headers), &tenant_header)))
    });
    let metrics = Metrics::new();
    let accountant = accountant(&metrics);
    let upstream: Arc<str> = "bench".into();
    let usage = weir::usage::Usage {
        prompt: 12,
        completion: 34,
        ..Default::default()
    };
    let tenants: Vec<String> = (0..100).map(|i| format!("tenant-{i}")).collect();
    let mut i = 0;
    group.bench_function("count_tokens_100_tenants", |b| {
        b.iter(|| {
            i = (i + 1) % tenants.len();
            count(&accountant, &upstream, &tenants[i], &usage)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    targets = route_lookup, decisions, record_metrics, accounting
}
criterion_main!(benches);

fn accountant(metrics: &Metrics) -> weir::usage::account::Accountant {
    weir::usage::account::Accountant::new(metrics.tokens.clone(), None, 100, 1000)
}

fn count(
    accountant: &weir::usage::account::Accountant,
    upstream: &Arc<str>,
    tenant: &str,
    usage: &weir::usage::Usage,
) {
    accountant.count(upstream, "gpt-4o-mini", tenant, usage);
}
