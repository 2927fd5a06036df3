//! Policy values that are real types rather than strings checked later:
//! durations, upstream URLs, header names and values, retry conditions.

use std::fmt;

use http::{HeaderName, HeaderValue};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// Durations are strings with a unit: `250ms`, `2s`, `5m`, `1h 30m`.
pub mod duration {
    use super::*;
    use std::time::Duration;

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!(
                "duration {text:?} has no unit (write e.g. \"{text}s\" or \"{text}ms\")"
            ));
        }
        humantime::parse_duration(text).map_err(|e| format!("bad duration {text:?}: {e}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, like \"250ms\" or \"2s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit (write e.g. \"{v}s\" or \"{v}ms\")"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!("duration {v} has no unit")))
            }
        }
        d.deserialize_any(V)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

/// Sizes: a whole number of bytes, or one with a unit: `B`, `KB`/`MB`/`GB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB` (powers of 1024): `32MiB`, `64KiB`.
pub mod byte_size {
    use super::*;

    pub fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        let unit = unit.trim();
        let scale: u64 =
            match unit {
                "" | "B" => 1,
                "KB" => 1000,
                "MB" => 1000 * 1000,
                "GB" => 1000 * 1000 * 1000,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                _ => return Err(
                    "a size is a whole number with an optional unit: B, KB, MB, GB, KiB, MiB, GiB"
                        .to_owned(),
                ),
            };
        let number: u64 = number
            .parse()
            .map_err(|_| "a size starts with a whole number, e.g. \"32MiB\"".to_owned())?;
        number
            .checked_mul(scale)
            .ok_or_else(|| "the size is too large".to_owned())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size, like \"32MiB\" or 65536")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*n)
    }
}

/// A header name from the policy, lower-cased and checked.
pub mod header_name {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
        let s = String::deserialize(d)?;
        HeaderName::from_bytes(s.as_bytes())
            .map_err(|_| de::Error::custom(format!("{s:?} is not a valid header name")))
    }

    pub fn serialize<S: Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(h.as_str())
    }
}

/// `headers`: set on every upstream request, replacing the client's value.
/// Serialized with every value redacted: they hold secrets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderList(pub Vec<(HeaderName, HeaderValue)>);

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of header names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderList, A::Error> {
                let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        de::Error::custom(format!("{name:?} is not a valid header name"))
                    })?;
                    if crate::wire::HOP_BY_HOP.contains(&header.as_str())
                        || header == http::header::HOST
                    {
                        return Err(de::Error::custom(format!(
                            "header {name:?} is managed by weir and cannot be set"
                        )));
                    }
                    let mut value = HeaderValue::from_str(&value).map_err(|_| {
                        de::Error::custom(format!(
                            "value of header {name:?} has characters not allowed in a header"
                        ))
                    })?;
                    value.set_sensitive(true);
                    if out.iter().any(|(n, _)| n == header) {
                        return Err(de::Error::custom(format!("header {name:?} is set twice")));
                    }
                    out.push((header, value));
                }
                Ok(HeaderList(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for HeaderList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, _) in &self.0 {
            map.serialize_entry(name.as_str(), "<redacted>")?;
        }
        map.end()
    }
}

/// A failure that `retry.on` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    Connect,
    Timeout,
    Status(u16),
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RetryOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`connect`, `timeout` or an HTTP status code")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RetryOn, E> {
                match u16::try_from(v) {
                    Ok(code @ 100..=599) => Ok(RetryOn::Status(code)),
                    _ => Err(E::custom(format!("{v} is not an HTTP status code"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RetryOn, E> {
                self.visit_u64(u64::try_from(v).unwrap_or(0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RetryOn, E> {
                match v {
                    "connect" => Ok(RetryOn::Connect),
                    "timeout" => Ok(RetryOn::Timeout),
                    other => match other.parse::<u64>() {
                        Ok(n) => self.visit_u64(n),
                        Err(_) => Err(E::custom(format!(
                            "{other:?} is not `connect`, `timeout` or an HTTP status code"
                        ))),
                    },
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RetryOn::Connect => s.serialize_str("connect"),
            RetryOn::Timeout => s.serialize_str("timeout"),
            RetryOn::Status(code) => s.serialize_u16(*code),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

/// `scheme://host[:port][/base-path]`, checked once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    pub authority: http::uri::Authority,
    /// Without a trailing slash; empty for none.
    pub base_path: String,
}

impl UpstreamUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => {
                return Err(format!(
                    "{text:?}: scheme {other:?} is not supported (use http or https)"
                ))
            }
            None => {
                return Err(format!(
                    "{text:?} has no scheme (write http://... or https://...)"
                ))
            }
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{text:?} has no host"))?;
        if authority.host().is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        if authority.as_str().contains('@') {
            return Err(format!(
                "{text:?}: credentials in the URL are not supported (use `headers`)"
            ));
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(format!(
                "{text:?}: a query or fragment is not allowed in `url`"
            ));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            base_path,
        })
    }

    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority, self.base_path)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UpstreamUrl::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("5m"), Ok(Duration::from_secs(300)));
        assert!(duration::parse("30").unwrap_err().contains("no unit"));
        assert!(duration::parse("fast").is_err());
    }

    #[test]
    fn upstream_url_keeps_base_path_without_trailing_slash() {
        let url = UpstreamUrl::parse("https://example.com:8443/v1/").unwrap();
        assert_eq!(url.scheme, Scheme::Https);
        assert_eq!(url.port(), 8443);
        assert_eq!(url.base_path, "/v1");
        assert_eq!(url.to_string(), "https://example.com:8443/v1");
        assert_eq!(UpstreamUrl::parse("http://h").unwrap().base_path, "");
    }

    #[test]
    fn upstream_url_rejects_what_cannot_be_proxied() {
        for bad in [
            "ftp://h",
            "h:80",
            "http://h/x?y=1",
            "http://u:p@h",
            "/relative",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
