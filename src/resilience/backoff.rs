//! How long to wait before the next attempt.
//!
//! Why jitter, and why all of it? When an upstream stumbles, every client that
//! saw the error retries. With plain exponential backoff they all retry at the
//! same moments, and the recovering upstream meets synchronised waves. Full
//! jitter (AWS Architecture Blog, "Exponential Backoff and Jitter") draws each
//! wait uniformly from zero up to the exponential ceiling: the waves flatten
//! into a trickle, and of the variants measured it does the least total work
//! for the quickest completion. Envoy's retry back-off is the same algorithm.
//!
//! Why listen to the upstream? A rate-limited LLM API knows when capacity
//! returns and says so (`Retry-After`, Azure's `retry-after-ms`, OpenAI's
//! `x-ratelimit-reset-*`); a retry before that moment is refused again and may
//! itself count against the limit. [`demanded_wait`] reads those headers. The
//! caller caps the wait at `backoff.max` and hands the response to the client
//! when the demand is longer (`retry.respect_retry_after` in CONTRACT.md).

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, RETRY_AFTER};

const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");

/// Exponential backoff with full jitter: the wait before retry `n` (0 for the
/// first retry) is uniform in `[0, min(max, base × 2ⁿ))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The exclusive upper bound of the wait before retry `retry`:
    /// `min(max, base × 2^retry)`, saturating instead of overflowing.
    pub fn ceiling(&self, retry: u32) -> Duration {
        if self.base.is_zero() {
            return Duration::ZERO;
        }
        2u32.checked_pow(retry)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |grown| grown.min(self.max))
    }

    /// Full jitter: uniform in `[0, min(max, base × 2^retry))`. `retry` is 0
    /// for the first retry; `unit` is a random number in `[0, 1)` supplied by
    /// the caller (e.g. `fastrand::f64()`), so tests can switch jitter off.
    /// A `unit` outside `[0, 1)` is clamped; NaN counts as 0.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        // `f64` rounding may land on the ceiling itself, which is excluded.
        let largest = ceiling.saturating_sub(Duration::from_nanos(1));
        Duration::try_from_secs_f64(ceiling.as_secs_f64() * unit)
            .unwrap_or(largest)
            .min(largest)
    }
}

/// The wait an upstream demands, if any, in this order: `retry-after-ms`
/// (Azure OpenAI and the OpenAI SDKs; milliseconds, possibly fractional), then
/// `Retry-After` (delta-seconds, possibly fractional, or an HTTP-date relative
/// to `now`; a date in the past is zero), then OpenAI's
/// `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (Go durations).
///
/// When both reset headers are present, the one whose
/// `x-ratelimit-remaining-*` is `"0"` is the limit that was hit; if that does
/// not decide (neither or both are `"0"`), the longer wait is the safe one. A
/// malformed header is skipped and the next source is tried.
pub fn demanded_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(millis) = text(headers, &RETRY_AFTER_MS).and_then(parse_decimal) {
        return Some(Duration::try_from_secs_f64(millis / 1000.0).unwrap_or(Duration::MAX));
    }
    if let Some(wait) = text(headers, &RETRY_AFTER).and_then(|value| retry_after(value, now)) {
        return Some(wait);
    }
    let requests = text(headers, &RESET_REQUESTS).and_then(parse_go_duration);
    let tokens = text(headers, &RESET_TOKENS).and_then(parse_go_duration);
    match (requests, tokens) {
        (Some(requests), Some(tokens)) => {
            let spent = |name| text(headers, name) == Some("0");
            match (spent(&REMAINING_REQUESTS), spent(&REMAINING_TOKENS)) {
                (true, false) => Some(requests),
                (false, true) => Some(tokens),
                _ => Some(requests.max(tokens)),
            }
        }
        (one, other) => one.or(other),
    }
}

/// Go's `time.ParseDuration` syntax: a sequence of decimal numbers, each
/// with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`,
/// `h`), e.g. `"1s"`, `"6m0s"`, `"20ms"`, `"1h2m3.5s"`, `"0.5s"`; a lone
/// `"0"` is zero. `None` if malformed, empty, negative or beyond `u64`
/// nanoseconds. Fractions are truncated to the nanosecond, as Go does.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (whole, after) = rest.split_at(digits(rest));
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(digits(after)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole = if whole.is_empty() {
            0
        } else {
            whole.parse::<u128>().ok()?
        };
        // Eighteen digits are finer than a nanosecond of an hour; Go drops the rest too.
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_nanos = match fraction.parse::<u128>() {
            Ok(value) => value * scale / 10u128.pow(fraction.len() as u32),
            Err(_) => 0,
        };
        nanos = whole
            .checked_mul(scale)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(nanos))?;
        rest = after;
    }
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// `Retry-After`: delta-seconds (fractional accepted) or an HTTP-date.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Some(seconds) = parse_decimal(value) {
        return Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A non-negative decimal: digits with an optional fraction, nothing else
/// (no sign, exponent, `inf` or `NaN`).
fn parse_decimal(text: &str) -> Option<f64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    text.parse().ok()
}

fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    const MS: Duration = Duration::from_millis(1);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn full_jitter_spans_zero_to_the_exponential_ceiling() {
        let backoff = Backoff::new(100 * MS, Duration::from_secs(10));
        assert_eq!(backoff.delay(0, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(0, 0.5), 50 * MS);
        assert_eq!(backoff.delay(3, 0.5), 400 * MS);
        assert!(backoff.delay(0, 0.999_999_999_999) < 100 * MS);
        assert!(backoff.delay(0, 1.0) < 100 * MS, "unit is clamped below 1");
        assert_eq!(backoff.delay(2, f64::NAN), Duration::ZERO);
        assert_eq!(backoff.delay(2, -3.0), Duration::ZERO);
    }

    #[test]
    fn the_ceiling_is_capped_at_max() {
        let backoff = Backoff::new(200 * MS, Duration::from_secs(10));
        assert_eq!(backoff.ceiling(5), 6400 * MS);
        assert_eq!(backoff.ceiling(6), Duration::from_secs(10));
        assert_eq!(backoff.delay(10, 0.5), Duration::from_secs(5));
    }

    #[test]
    fn huge_retry_numbers_do_not_overflow() {
        let backoff = Backoff::new(200 * MS, Duration::from_secs(10));
        assert_eq!(backoff.ceiling(1000), Duration::from_secs(10));
        assert_eq!(backoff.delay(u32::MAX, 0.5), Duration::from_secs(5));
        let unbounded = Backoff::new(Duration::MAX, Duration::MAX);
        assert!(unbounded.delay(1000, 0.999_999) < Duration::MAX);
        assert_eq!(
            Backoff::new(Duration::ZERO, MS).delay(1000, 0.7),
            Duration::ZERO
        );
    }

    #[test]
    fn retry_after_in_seconds() {
        let wait = |v| demanded_wait(&headers(&[("retry-after", v)]), now());
        assert_eq!(wait("120"), Some(Duration::from_secs(120)));
        assert_eq!(wait("1.5"), Some(1500 * MS));
        assert_eq!(wait(" 0 "), Some(Duration::ZERO));
        assert_eq!(wait("-1"), None);
        assert_eq!(wait("soon"), None);
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let later = httpdate::fmt_http_date(now() + Duration::from_secs(30));
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(30));
        let wait = |v: &str| demanded_wait(&headers(&[("retry-after", v)]), now());
        assert_eq!(wait(&later), Some(Duration::from_secs(30)));
        assert_eq!(wait(&past), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_ms_comes_first() {
        let both = headers(&[("retry-after-ms", "250"), ("retry-after", "2")]);
        assert_eq!(demanded_wait(&both, now()), Some(250 * MS));
        let fractional = headers(&[("retry-after-ms", "0.5")]);
        assert_eq!(
            demanded_wait(&fractional, now()),
            Some(Duration::from_micros(500))
        );
        let garbage = headers(&[("retry-after-ms", "x"), ("retry-after", "2")]);
        assert_eq!(demanded_wait(&garbage, now()), Some(Duration::from_secs(2)));
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("20ms"), Some(20 * MS));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(3_723_500 * MS));
        assert_eq!(parse_go_duration("0.5s"), Some(500 * MS));
        assert_eq!(parse_go_duration(".5s"), Some(500 * MS));
        assert_eq!(parse_go_duration("1.5µs"), Some(Duration::from_nanos(1500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for garbage in [
            "",
            "1",
            "s",
            "1x",
            "1.s5",
            "-1s",
            "1s ms",
            ".s",
            "tomorrow",
            "99999999999h",
        ] {
            assert_eq!(parse_go_duration(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn one_reset_header_is_the_wait() {
        let tokens = headers(&[("x-ratelimit-reset-tokens", "6m0s")]);
        assert_eq!(
            demanded_wait(&tokens, now()),
            Some(Duration::from_secs(360))
        );
        let garbage = headers(&[("x-ratelimit-reset-requests", "later")]);
        assert_eq!(demanded_wait(&garbage, now()), None);
        assert_eq!(demanded_wait(&HeaderMap::new(), now()), None);
    }

    #[test]
    fn the_spent_limit_decides_between_reset_headers() {
        let mut map = headers(&[
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "1500"),
        ]);
        assert_eq!(demanded_wait(&map, now()), Some(Duration::from_secs(1)));
        map.insert("x-ratelimit-remaining-requests", "3".parse().unwrap());
        map.insert("x-ratelimit-remaining-tokens", "0".parse().unwrap());
        assert_eq!(demanded_wait(&map, now()), Some(Duration::from_secs(360)));
        map.remove("x-ratelimit-remaining-tokens");
        assert_eq!(
            demanded_wait(&map, now()),
            Some(Duration::from_secs(360)),
            "longer"
        );
        map.insert("retry-after", "7".parse().unwrap());
        assert_eq!(demanded_wait(&map, now()), Some(Duration::from_secs(7)));
    }

    proptest! {
        #[test]
        fn delay_stays_below_the_ceiling(
            base in 0u64..10_000_000_000,
            max in 0u64..100_000_000_000,
            retry in 0u32..2000,
            unit in 0.0f64..1.0,
        ) {
            let backoff = Backoff::new(Duration::from_nanos(base), Duration::from_nanos(max));
            let grown = if retry >= 64 { u128::MAX } else { u128::from(base) << retry };
            let ceiling = if base == 0 { 0 } else { grown.min(u128::from(max)) };
            let delay = backoff.delay(retry, unit).as_nanos();
            if ceiling == 0 {
                prop_assert_eq!(delay, 0);
            } else {
                prop_assert!(delay < ceiling, "{} >= {}", delay, ceiling);
            }
        }
    }
}
