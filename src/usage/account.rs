//! Charging reported tokens to `weir_tokens_total{upstream,model,tenant,type}`
//! with bounded label values, and the response tap that reads usage as the
//! body streams past.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::{DashMap, DashSet};

use bytes::{Bytes, BytesMut};
use prometheus::{IntCounter, IntCounterVec};

use super::decode::{Coding, Decoder};
use super::json::parse_json;
use super::log::UsageLog;
use super::sse::SseUsage;
use super::tenant::Tenants;
use super::Usage;
use crate::config::UpstreamKind;

/// A non-streamed answer is kept for parsing up to this size; a larger one
/// counts as missing usage.
pub const JSON_LIMIT: usize = 4 * 1024 * 1024;

/// The label value past the cardinality cap.
pub const OTHER: &str = "other";

/// Label values admitted first-come up to a cap; later ones become `other`.
/// Sharded: admitting a value seen before takes no process-wide lock.
pub struct LabelCap {
    max: AtomicUsize,
    admitted: AtomicUsize,
    seen: DashSet<Box<str>>,
}

impl LabelCap {
    pub fn new(max: usize) -> Self {
        Self {
            max: AtomicUsize::new(max),
            admitted: AtomicUsize::new(0),
            seen: DashSet::new(),
        }
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    pub fn admit<'a>(&self, value: &'a str) -> &'a str {
        if self.seen.contains(value) {
            return value;
        }
        let max = self.max.load(Ordering::Relaxed);
        let room = self
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !room {
            return OTHER;
        }
        if !self.seen.insert(value.into()) {
            // Admitted by another request meanwhile: give the room back.
            self.admitted.fetch_sub(1, Ordering::AcqRel);
        }
        value
    }
}

/// `[prompt, completion, cached, reasoning]` counters of one series. A
/// type's counter is created when it is first reported, so a provider that
/// never reports cached or reasoning tokens adds no zero series for them.
type Counters = [OnceLock<IntCounter>; 4];

/// The `type` label values of `weir_tokens_total`.
const TOKEN_TYPES: [&str; 4] = ["prompt", "completion", "cached", "reasoning"];

/// Counts tokens and writes usage events.
pub struct Accountant {
    pub log: Option<UsageLog>,
    /// Whose requests they are, remembered per header value or key.
    pub tenants: Tenants,
    tokens: IntCounterVec,
    models: LabelCap,
    tenant_labels: LabelCap,
    /// Series by (upstream, model, tenant) as the request named them, once
    /// admitted under the caps: after the first answer of a series, a
    /// lookup in a sharded map and nothing allocated.
    series: DashMap<String, Arc<Counters>>,
}

thread_local! {
    /// The lookup key of [`Accountant::count`], built in place.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// `upstream`, `model`, `tenant` as one unambiguous key (each prefixed by
/// its length, so no value can pose as two).
fn series_key(into: &mut String, labels: [&str; 3]) {
    use std::fmt::Write;
    into.clear();
    for label in labels {
        let _ = write!(into, "{}:", label.len());
        into.push_str(label);
    }
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
            tenants: Tenants::default(),
            tokens,
            models: LabelCap::new(max_models),
            tenant_labels: LabelCap::new(max_tenants),
            series: DashMap::new(),
        }
    }

    /// New label caps (a reload); label values already admitted stay.
    pub fn set_caps(&self, max_models: usize, max_tenants: usize) {
        self.models.set_max(max_models);
        self.tenant_labels.set_max(max_tenants);
    }

    /// Adds one answer's tokens to `weir_tokens_total`.
    pub fn count(&self, upstream: &str, model: &str, tenant: &str, usage: &Usage) {
        let reported = [
            usage.prompt,
            usage.completion,
            usage.cached,
            usage.reasoning,
        ];
        let (counters, model, tenant) = KEY.with(|key| {
            let mut key = key.borrow_mut();
            series_key(&mut key, [upstream, model, tenant]);
            if let Some(found) = self.series.get(key.as_str()) {
                return (found.clone(), model, tenant);
            }
            // The first answer of this series, or labels past a cap: those
            // count under `other`, whose series is kept under its own key,
            // so the map stays bounded by the caps.
            let labels = (self.models.admit(model), self.tenant_labels.admit(tenant));
            if labels != (model, tenant) {
                series_key(&mut key, [upstream, labels.0, labels.1]);
            }
            let counters = self.series.entry(key.clone()).or_default().clone();
            (counters, labels.0, labels.1)
        });
        for ((slot, kind), n) in counters.iter().zip(TOKEN_TYPES).zip(reported) {
            if n > 0 {
                slot.get_or_init(|| {
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
    /// A compressed answer: the bytes pass as sent, a decoded copy is read
    /// (whole for JSON, event by event for SSE).
    Encoded {
        decoder: Box<Decoder>,
        sse: Option<Box<SseUsage>>,
        parsed: Option<(Option<String>, Option<Usage>)>,
    },
    /// An answer in a coding weir cannot read: its usage is missing.
    Undecodable,
}

/// The most a compressed SSE chunk may decode to (one chunk holds a few
/// events); more stops the counting of that answer.
const SSE_CHUNK_CAP: usize = 1024 * 1024;

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
        let sse = content_type.starts_with("text/event-stream");
        if !sse && !content_type.contains("json") {
            return Tap::Off;
        }
        let cap = if sse { SSE_CHUNK_CAP } else { JSON_LIMIT };
        match Coding::of(headers, cap) {
            Coding::Identity if sse => Tap::Sse(Box::new(SseUsage::new(strip))),
            Coding::Identity => Tap::Json {
                held: Vec::new(),
                len: 0,
                overflow: false,
            },
            // Compressed: counted from a copy, never rewritten.
            Coding::Known(decoder) => Tap::Encoded {
                decoder,
                sse: sse.then(|| Box::new(SseUsage::new(false))),
                parsed: None,
            },
            Coding::Unknown => Tap::Undecodable,
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
            Tap::Encoded { decoder, sse, .. } => {
                if decoder.feed(&chunk) {
                    if let Some(sse) = sse {
                        let decoded = Bytes::from(decoder.take());
                        let _ = sse.feed(&decoded);
                    }
                }
                chunk
            }
            Tap::Undecodable => chunk,
        }
    }

    /// At the end of the body: bytes still held back, to forward last.
    pub fn finish(&mut self) -> Option<Bytes> {
        match self {
            Tap::Sse(sse) => sse.finish().filter(|b| !b.is_empty()),
            Tap::Encoded {
                decoder,
                sse,
                parsed,
            } => {
                let whole = decoder.finish();
                *parsed = Some(match sse {
                    Some(sse) => {
                        if whole {
                            let _ = sse.feed(&Bytes::from(decoder.take()));
                        }
                        let _ = sse.finish();
                        (sse.model().map(str::to_owned), sse.usage().cloned())
                    }
                    None if whole => parse_json(&decoder.take()),
                    None => (None, None),
                });
                None
            }
            _ => None,
        }
    }

    /// `(model, usage)` the body reported; `None` when not tapped. Call
    /// after [`Tap::finish`].
    pub fn result(&self) -> Option<(Option<String>, Option<Usage>)> {
        match self {
            Tap::Off => None,
            Tap::Undecodable => Some((None, None)),
            Tap::Encoded { parsed, .. } => Some(parsed.clone().unwrap_or((None, None))),
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

    /// Whether the answer is a stream of events (for the usage log).
    pub fn is_sse(&self) -> bool {
        matches!(self, Tap::Sse(_) | Tap::Encoded { sse: Some(_), .. })
    }

    /// Whether the bytes the client gets may differ from the upstream's
    /// (the usage-only event removed), so no length can be passed on.
    pub fn rewrites(&self) -> bool {
        matches!(self, Tap::Sse(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_past_the_cap_become_other() {
        let cap = LabelCap::new(2);
        assert_eq!(cap.admit("a"), "a");
        assert_eq!(cap.admit("b"), "b");
        assert_eq!(cap.admit("c"), OTHER);
        assert_eq!(cap.admit("a"), "a");
    }

    #[test]
    fn series_keys_cannot_be_confused() {
        let (mut a, mut b) = (String::new(), String::new());
        series_key(&mut a, ["u", "m:1", "t"]);
        series_key(&mut b, ["u", "m", "1:t"]);
        assert_ne!(a, b);
    }

    #[test]
    fn tokens_past_the_caps_count_under_other_and_the_series_stay_bounded() {
        let tokens = IntCounterVec::new(
            prometheus::Opts::new("t", "t"),
            &["upstream", "model", "tenant", "type"],
        )
        .unwrap();
        let accountant = Accountant::new(tokens.clone(), None, 1, 2);
        let usage = Usage {
            prompt: 3,
            completion: 4,
            ..Default::default()
        };
        for i in 0..50 {
            accountant.count("up", &format!("m{}", i % 3), &format!("t{i}"), &usage);
        }
        let get = |m: &str, t: &str, k: &str| tokens.with_label_values(&["up", m, t, k]).get();
        assert_eq!(get("m0", "t0", "prompt"), 3);
        assert_eq!(get("m0", "t1", "completion"), 0, "m1 is past the model cap");
        assert_eq!(get("other", "t1", "completion"), 4);
        // Of i = 2..50: a third are m0 (past the tenant cap), the rest neither.
        assert_eq!(get("m0", "other", "prompt"), 3 * 16);
        assert_eq!(get("other", "other", "prompt"), 3 * 32);
        assert!(accountant.series.len() <= 4, "{}", accountant.series.len());
    }
}
