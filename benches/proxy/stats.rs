//! Percentiles, medians and number formatting for the report.

/// Nearest-rank percentile of a sorted slice (`q` in 0..=1); 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest rank: ceil(q * n), 1-based. n is far below 2^52, so f64 is exact.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
