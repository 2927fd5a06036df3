//! Latency distributions, medians and number formatting for the report.

use hdrhistogram::Histogram;

/// A latency distribution in nanoseconds (`hdrhistogram`, three significant
/// digits, 1 ns to 10 min): constant memory however long the run, merged
/// across client tasks, percentiles exact to 0.1 %.
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latencies {
    pub fn record(&mut self, nanos: u64) {
        self.0.saturating_record(nanos.max(1));
    }

    pub fn merge(&mut self, other: &Self) {
        self.0
            .add(&other.0)
            .expect("histograms with the same bounds");
    }

    pub fn len(&self) -> usize {
        usize::try_from(self.0.len()).unwrap_or(usize::MAX)
    }

    /// The `q` quantile (0..=1) in milliseconds; 0 when empty.
    pub fn ms_at(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        ms(self.0.value_at_quantile(q))
    }
}

/// Median of a set of run results (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Nanoseconds to milliseconds.
#[allow(clippy::cast_precision_loss)]
pub fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// `12345.6` -> `12,346`.
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "—".to_owned();
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = x.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A value with a fixed number of decimals, or a dash when unknown.
pub fn fixed(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "—".to_owned()
    }
}

/// A signed difference in milliseconds, e.g. `+0.123`.
pub fn signed_ms(x: f64) -> String {
    if x.is_finite() {
        format!("{x:+.3}")
    } else {
        "—".to_owned()
    }
}
