//! What weir reads from a buffered request body: the model (a fallback label
//! when the answer names none) and whether it asks for a stream; and the one
//! change it may make: `stream_options.include_usage`, so that a streamed
//! chat answer reports its tokens.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

#[derive(Deserialize)]
struct View<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// What a JSON request body says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: Option<String>,
    pub stream: bool,
    /// A stream without `stream_options.include_usage: true`.
    pub lacks_usage: bool,
}

pub fn inspect(body: &[u8]) -> Option<RequestFacts> {
    let view: View = serde_json::from_slice(body).ok()?;
    let stream = view.stream == Some(true);
    Some(RequestFacts {
        model: view.model.map(Cow::into_owned),
        stream,
        lacks_usage: stream && view.stream_options.and_then(|o| o.include_usage) != Some(true),
    })
}

/// The body with `stream_options.include_usage: true` added, other fields
/// and their order kept; `None` if it is not a JSON object.
pub fn with_include_usage(body: &[u8]) -> Option<Bytes> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    let options = object
        .entry("stream_options")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !options.is_object() {
        *options = serde_json::Value::Object(Default::default());
    }
    options
        .as_object_mut()?
        .insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_without_usage_is_noticed() {
        let facts = inspect(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#).unwrap();
        assert_eq!(
            facts,
            RequestFacts {
                model: Some("gpt-4o".into()),
                stream: true,
                lacks_usage: true
            }
        );
        let asked = inspect(br#"{"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
        assert!(!asked.lacks_usage);
        assert!(!inspect(br#"{"model":"m"}"#).unwrap().stream);
        assert!(inspect(b"not json").is_none());
    }

    #[test]
    fn injection_keeps_every_other_field_in_order() {
        let out =
            with_include_usage(br#"{"model":"m","stream":true,"stream_options":{"x":1},"n":2}"#)
                .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"m","stream":true,"stream_options":{"x":1,"include_usage":true},"n":2}"#
        );
        assert!(with_include_usage(b"[1]").is_none());
    }
}
