//! Charging reported tokens to `weir_tokens_total{upstream,model,tenant,type}`
//! with bounded label values, and the response tap that reads usage as the
//! body streams past.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use prometheus::{IntCounter, IntCounterVec};

use super::json::parse_json;
use super::log::UsageLog;
use super::sse::SseUsage;
use super::Usage;
use crate::config::UpstreamKind;

/// A non-streamed answer is kept for parsing up to this size; a larger one
/// counts as missing usage.
pub const JSON_LIMIT: usize = 4 * 1024 * 1024;

/// The label value past the cardinality cap.
pub const OTHER: &str = "other";

/// Label values admitted first-come up to a cap; later ones become `other`.
pub struct LabelCap {
    max: AtomicUsize,
    seen: HashSet<Box<str>>,
}

impl LabelCap {
    pub fn new(max: usize) -> Self {
        Self {
            max: AtomicUsize::new(max),
            seen: HashSet::new(),
        }
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn admit<'a>(&mut self, value: &'a str) -> &'a str {
        if self.seen.contains(value) {
            return value;
        }
        if self.seen.len() < self.max.load(Ordering::Relaxed) {
            self.seen.insert(value.into());
            return value;
        }
        OTHER
    }
}

/// `[prompt, completion, cached, reasoning]` counters by upstream, model and
/// tenant. Nested so that a lookup borrows the labels: nothing is allocated
/// once a series exists.
/// A type's series is created when it is first reported, so a provider that
/// never reports cached or reasoning tokens adds no zero series for them.
type Series = HashMap<Arc<str>, HashMap<Box<str>, HashMap<Box<str>, [Option<IntCounter>; 4]>>>;

struct Labels {
    models: LabelCap,
    tenants: LabelCap,
    series: Series,
}

/// The `type` label values of `weir_tokens_total`.
const TOKEN_TYPES: [&str; 4] = ["prompt", "completion", "cached", "reasoning"];

/// Counts tokens and writes usage events.
pub struct Accountant {
    pub log: Option<UsageLog>,
    tokens: IntCounterVec,
    /// One short lock per finished request with usage.
    labels: Mutex<Labels>,
}

impl Accountant {
    pub fn new(
        tokens: IntCounterVec,
        log: Option<UsageLog>,
        max_models: usize,
        max_tenants: usize,
    ) -> Self {
        Self {
            log,
            tokens,
            labels: Mutex::new(Labels {
                models: LabelCap::new(max_models),
                tenants: LabelCap::new(max_tenants),
                series: HashMap::new(),
            }),
        }
    }

    /// New label caps (a reload); label values already admitted stay.
    pub fn set_caps(&self, max_models: usize, max_tenants: usize) {
        let labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        labels.models.set_max(max_models);
        labels.tenants.set_max(max_tenants);
    }

    /// Adds one answer's tokens to `weir_tokens_total`.
    pub fn count(&self, upstream: &Arc<str>, model: &str, tenant: &str, usage: &Usage) {
        let mut labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        let Labels {
            models,
            tenants,
            series,
        } = &mut *labels;
        let model = models.admit(model);
        let tenant = tenants.admit(tenant);
        if !series.contains_key(upstream) {
            series.insert(upstream.clone(), HashMap::new());
        }
        let by_model = series.get_mut(upstream).expect("inserted above");
        if !by_model.contains_key(model) {
            by_model.insert(model.into(), HashMap::new());
        }
        let by_tenant = by_model.get_mut(model).expect("inserted above");
        if !by_tenant.contains_key(tenant) {
            by_tenant.insert(tenant.into(), Default::default());
        }
        let counters = by_tenant.get_mut(tenant).expect("inserted above");
        let reported = [
            usage.prompt,
            usage.completion,
            usage.cached,
            usage.reasoning,
        ];
        for ((slot, kind), n) in counters.iter_mut().zip(TOKEN_TYPES).zip(reported) {
            if n > 0 {
                slot.get_or_insert_with(|| {
                    self.tokens
                        .with_label_values(&[upstream, model, tenant, kind])
                })
                .inc_by(n);
            }
        }
    }
}

/// Reads usage from a response body as it passes.
pub enum Tap {
    Off,
    /// The frames of a JSON answer, kept by reference (no copy).
    Json {
        held: Vec<Bytes>,
        len: usize,
        overflow: bool,
    },
    Sse(Box<SseUsage>),
}

impl Tap {
    /// A tap fitting the answer: JSON or SSE from an upstream whose kind
    /// reports usage, with a 2xx status.
    pub fn for_response(
        kind: UpstreamKind,
        status: u16,
        headers: &http::HeaderMap,
        strip: bool,
    ) -> Tap {
        if !matches!(kind, UpstreamKind::Openai | UpstreamKind::Embeddings)
            || !(200..300).contains(&status)
        {
            return Tap::Off;
        }
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("text/event-stream") {
            Tap::Sse(Box::new(SseUsage::new(strip)))
        } else if content_type.contains("json") {
            Tap::Json {
                held: Vec::new(),
                len: 0,
                overflow: false,
            }
        } else {
            Tap::Off
        }
    }

    /// Observes a chunk; returns the bytes to forward.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        match self {
            Tap::Off => chunk,
            Tap::Json {
                held,
                len,
                overflow,
            } => {
                if !*overflow {
                    *len += chunk.len();
                    if *len > JSON_LIMIT {
                        *overflow = true;
                        *held = Vec::new();
                    } else {
                        held.push(chunk.clone());
                    }
                }
                chunk
            }
            Tap::Sse(sse) => sse.feed(&chunk).unwrap_or(chunk),
        }
    }

    /// At the end of the body: bytes still held back, to forward last.
    pub fn finish(&mut self) -> Option<Bytes> {
        match self {
            Tap::Sse(sse) => sse.finish().filter(|b| !b.is_empty()),
            _ => None,
        }
    }

    /// `(model, usage)` the body reported; `None` when not tapped.
    pub fn result(&self) -> Option<(Option<String>, Option<Usage>)> {
        match self {
            Tap::Off => None,
            Tap::Json { overflow: true, .. } => Some((None, None)),
            Tap::Json { held, len, .. } => Some(match held.as_slice() {
                [one] => parse_json(one),
                frames => {
                    let mut all = BytesMut::with_capacity(*len);
                    for frame in frames {
                        all.extend_from_slice(frame);
                    }
                    parse_json(&all)
                }
            }),
            Tap::Sse(sse) => Some((sse.model().map(str::to_owned), sse.usage().cloned())),
        }
    }

    pub fn is_sse(&self) -> bool {
        matches!(self, Tap::Sse(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_past_the_cap_become_other() {
        let mut cap = LabelCap::new(2);
        assert_eq!(cap.admit("a"), "a");
        assert_eq!(cap.admit("b"), "b");
        assert_eq!(cap.admit("c"), OTHER);
        assert_eq!(cap.admit("a"), "a");
    }
}
