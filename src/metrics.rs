//! Every collector weir exports, registered in one place.
//!
//! The `prometheus` crate hashes label values and takes a lock in
//! `with_label_values`, so per-upstream handles are resolved once, when a
//! policy is loaded ([`UpstreamMetrics`]). Labels whose values vary per
//! request (status code, result) go through [`CounterTable`], which resolves
//! each combination the first time it is seen and keeps the handle.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::reject::Reject;

/// 1 ms to 10 min: fast embedding calls and long generations alike.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
    120.0, 300.0, 600.0,
];

/// 10 µs to 100 ms: the time spent in weir itself.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,
];

/// How a request ended, the `outcome` label of `weir_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered and the answer reached the client whole.
    Ok,
    /// Connect error, timeout, a 5xx, or a stream broken by the upstream.
    UpstreamError,
    /// weir refused the request itself (no route, breaker, limits...).
    Rejected,
    /// The client went away first.
    Cancelled,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Self::Ok,
        Self::UpstreamError,
        Self::Rejected,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::UpstreamError => "upstream_error",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The result of one upstream attempt, the `result` label of
/// `weir_upstream_attempts_total`: `ok` for a 1xx-3xx answer, `connect`,
/// `timeout`, or the status code of a 4xx/5xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Status(u16),
    Connect,
    Timeout,
}

impl AttemptResult {
    fn slot(self) -> usize {
        match self {
            Self::Status(s) if s < 400 => 0,
            Self::Connect => 1,
            Self::Timeout => 2,
            Self::Status(s) => 3 + usize::from(s.clamp(400, 599) - 400),
        }
    }

    fn label(slot: usize) -> String {
        match slot {
            0 => "ok".to_owned(),
            1 => "connect".to_owned(),
            2 => "timeout".to_owned(),
            n => (n - 3 + 400).to_string(),
        }
    }

    const SLOTS: usize = 3 + 200;
}

/// Counters of one family for one upstream, one per value of the varying
/// labels, each resolved on first use.
pub struct CounterTable {
    family: IntCounterVec,
    upstream: String,
    slots: Box<[OnceLock<IntCounter>]>,
}

impl CounterTable {
    fn new(family: &IntCounterVec, upstream: &str, size: usize) -> Self {
        Self {
            family: family.clone(),
            upstream: upstream.to_owned(),
            slots: (0..size).map(|_| OnceLock::new()).collect(),
        }
    }

    fn get(&self, slot: usize, labels: impl FnOnce() -> Vec<String>) -> &IntCounter {
        self.slots[slot].get_or_init(|| {
            let mut values = vec![self.upstream.clone()];
            values.extend(labels());
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            self.family.with_label_values(&refs)
        })
    }
}

/// The exporter: a registry of its own per weir instance, so that several
/// instances in one process (tests) do not collide.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    first_byte: HistogramVec,
    overhead: HistogramVec,
    queue_wait: HistogramVec,
    attempts: IntCounterVec,
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    usage_missing: IntCounterVec,
    rejected: IntCounterVec,
    circuit_state: IntGaugeVec,
    circuit_transitions: IntCounterVec,
    in_flight: IntGaugeVec,
    queue_depth: IntGaugeVec,
    connections_opened: IntCounterVec,
    pub tokens: IntCounterVec,
    pub usage_events_dropped: IntCounter,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: prometheus::Gauge,
    client_connections: IntGaugeVec,
    connections_closed: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric options are valid");
            registry
                .register(Box::new(c.clone()))
                .expect("each metric is registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["upstream"])
                .expect("static metric options are valid");
            registry
                .register(Box::new(g.clone()))
                .expect("each metric is registered once");
            g
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["upstream"],
            )
            .expect("static metric options are valid");
            registry
                .register(Box::new(h.clone()))
                .expect("each metric is registered once");
            h
        };
        let usage_events_dropped = IntCounter::new(
            "weir_usage_events_dropped_total",
            "Usage events dropped because the usage log queue was full.",
        )
        .expect("static metric options are valid");
        registry
            .register(Box::new(usage_events_dropped.clone()))
            .expect("each metric is registered once");
        let config_last_reload_success = prometheus::Gauge::new(
            "weir_config_last_reload_success_timestamp_seconds",
            "Unix time of the last policy load that succeeded.",
        )
        .expect("static metric options are valid");
        registry
            .register(Box::new(config_last_reload_success.clone()))
            .expect("each metric is registered once");
        let client_connections = IntGaugeVec::new(
            Opts::new(
                "weir_client_connections",
                "Client connections open now, by listener.",
            ),
            &["listener"],
        )
        .expect("static metric options are valid");
        registry
            .register(Box::new(client_connections.clone()))
            .expect("each metric is registered once");
        Self {
            client_connections,
            connections_closed: counter(
                "weir_connections_closed_total",
                "Client connections weir closed, by reason.",
                &["reason"],
            ),
            requests: counter(
                "weir_requests_total",
                "Requests by upstream, status code sent to the client, and outcome.",
                &["upstream", "code", "outcome"],
            ),
            duration: histogram(
                "weir_request_duration_seconds",
                "Whole request duration, streaming included.",
                LATENCY_BUCKETS,
            ),
            first_byte: histogram(
                "weir_upstream_first_byte_seconds",
                "Time from sending an attempt to its response headers.",
                LATENCY_BUCKETS,
            ),
            overhead: histogram(
                "weir_overhead_seconds",
                "Time spent in weir itself: total minus upstream and queue time.",
                OVERHEAD_BUCKETS,
            ),
            queue_wait: histogram(
                "weir_queue_wait_seconds",
                "Time waited in the upstream's bulkhead queue.",
                LATENCY_BUCKETS,
            ),
            attempts: counter(
                "weir_upstream_attempts_total",
                "Upstream attempts by result.",
                &["upstream", "result"],
            ),
            retries: counter(
                "weir_retries_total",
                "Retries by the failure that caused them.",
                &["upstream", "reason"],
            ),
            budget_exhausted: counter(
                "weir_retry_budget_exhausted_total",
                "Retries not made because the retry budget was spent.",
                &["upstream"],
            ),
            usage_missing: counter(
                "weir_usage_missing_total",
                "Successful completion or embedding answers that reported no token usage.",
                &["upstream"],
            ),
            rejected: counter(
                "weir_rejected_total",
                "Requests weir refused itself, by reason.",
                &["upstream", "reason"],
            ),
            circuit_state: gauge(
                "weir_circuit_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            ),
            circuit_transitions: counter(
                "weir_circuit_transitions_total",
                "Circuit breaker transitions by new state.",
                &["upstream", "to"],
            ),
            in_flight: gauge("weir_in_flight", "Requests at the upstream now."),
            queue_depth: gauge(
                "weir_queue_depth",
                "Requests waiting in the upstream's queue now.",
            ),
            connections_opened: counter(
                "weir_upstream_connections_opened_total",
                "Connections opened to the upstream.",
                &["upstream"],
            ),
            tokens: counter(
                "weir_tokens_total",
                "LLM tokens by upstream, model, tenant and type.",
                &["upstream", "model", "tenant", "type"],
            ),
            config_reloads: counter(
                "weir_config_reloads_total",
                "Policy reloads by result.",
                &["result"],
            ),
            usage_events_dropped,
            config_last_reload_success,
            registry,
        }
    }

    /// Handles for one upstream, resolved now so the request path never looks
    /// a label up.
    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        let one = [name];
        let circuit_state = self.circuit_state.with_label_values(&one);
        circuit_state.set(0);
        UpstreamMetrics {
            requests: CounterTable::new(&self.requests, name, Outcome::ALL.len() * STATUS_SLOTS),
            attempts: CounterTable::new(&self.attempts, name, AttemptResult::SLOTS),
            retries: CounterTable::new(&self.retries, name, AttemptResult::SLOTS),
            rejected: CounterTable::new(&self.rejected, name, Reject::ALL.len()),
            circuit_transitions: CounterTable::new(&self.circuit_transitions, name, 3),
            duration: self.duration.with_label_values(&one),
            first_byte: self.first_byte.with_label_values(&one),
            overhead: self.overhead.with_label_values(&one),
            queue_wait: self.queue_wait.with_label_values(&one),
            in_flight: self.in_flight.with_label_values(&one),
            queue_depth: self.queue_depth.with_label_values(&one),
            connections_opened: self.connections_opened.with_label_values(&one),
            retry_budget_exhausted: self.budget_exhausted.with_label_values(&one),
            usage_missing: self.usage_missing.with_label_values(&one),
            circuit_state,
        }
    }

    /// The two counters of requests that match no route (`upstream="none"`).
    pub fn unrouted(&self) -> Unrouted {
        let refused = |reason: Reject| Refused {
            requests: self.requests.with_label_values(&[
                "none",
                reason.status().as_str(),
                Outcome::Rejected.as_str(),
            ]),
            rejected: self.rejected.with_label_values(&["none", reason.as_str()]),
        };
        Unrouted {
            no_route: refused(Reject::NoRoute),
            bad_path: refused(Reject::BadRequestPath),
            bad_framing: refused(Reject::BadRequestBody),
        }
    }

    /// The open-connections gauge of a listener (`proxy`, `admin`).
    pub fn client_connections(&self, listener: &str) -> IntGauge {
        self.client_connections.with_label_values(&[listener])
    }

    /// The counter of connections closed for `reason`.
    pub fn connections_closed(&self, reason: &str) -> IntCounter {
        self.connections_closed.with_label_values(&[reason])
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a family error would be a bug.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

const STATUS_SLOTS: usize = 600;

/// Counters of requests no upstream was chosen for.
pub struct Unrouted {
    /// No route matches the path.
    pub no_route: Refused,
    /// The path was refused before routing (`bad_request_path`).
    pub bad_path: Refused,
    /// The request's framing was refused before routing (`bad_request_body`).
    pub bad_framing: Refused,
}

/// The two counters of one refusal: the request and its reason.
pub struct Refused {
    pub requests: IntCounter,
    pub rejected: IntCounter,
}

impl Refused {
    pub fn count(&self) {
        self.requests.inc();
        self.rejected.inc();
    }
}

/// One upstream's handles.
pub struct UpstreamMetrics {
    requests: CounterTable,
    attempts: CounterTable,
    retries: CounterTable,
    rejected: CounterTable,
    circuit_transitions: CounterTable,
    pub duration: Histogram,
    pub first_byte: Histogram,
    pub overhead: Histogram,
    pub queue_wait: Histogram,
    pub in_flight: IntGauge,
    pub queue_depth: IntGauge,
    pub connections_opened: IntCounter,
    pub retry_budget_exhausted: IntCounter,
    pub usage_missing: IntCounter,
    pub circuit_state: IntGauge,
}

impl UpstreamMetrics {
    pub fn request(&self, code: u16, outcome: Outcome) -> &IntCounter {
        let code = usize::from(code.min(599));
        let index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests.get(index * STATUS_SLOTS + code, || {
            vec![code.to_string(), outcome.as_str().to_owned()]
        })
    }

    pub fn attempt(&self, result: AttemptResult) -> &IntCounter {
        let slot = result.slot();
        self.attempts.get(slot, || vec![AttemptResult::label(slot)])
    }

    pub fn retry(&self, reason: AttemptResult) -> &IntCounter {
        let slot = reason.slot();
        self.retries.get(slot, || vec![AttemptResult::label(slot)])
    }

    pub fn rejected(&self, reason: crate::reject::Reject) -> &IntCounter {
        self.rejected
            .get(reason as usize, || vec![reason.as_str().to_owned()])
    }

    /// `to` is 0 closed, 1 open, 2 half-open, as in `weir_circuit_state`.
    pub fn circuit_transition(&self, to: usize) -> &IntCounter {
        self.circuit_transitions.get(to.min(2), || {
            vec![["closed", "open", "half_open"][to.min(2)].to_owned()]
        })
    }
}
