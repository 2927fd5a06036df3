//! Why: a provider states what it billed in a `usage` object next to the
//! `model` of its answer, and weir charges exactly those numbers, never an
//! estimate. This reads those two fields from a whole JSON answer (chat,
//! legacy completions, embeddings, the Responses API) and from the data of
//! one SSE event, and skips everything else unparsed: an embeddings answer
//! can be megabytes of floats that weir has no use for.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::usage::Usage;

/// `model` and `usage` of a whole JSON answer; `(model, None)` when it
/// reports no usage; `(None, None)` for non-JSON.
pub fn parse_json(body: &[u8]) -> (Option<String>, Option<Usage>) {
    match Fields::parse(body) {
        Some(fields) => (fields.model.map(Cow::into_owned), fields.usage),
        None => (None, None),
    }
}

/// Usage from an already-parsed `usage` object in either the
/// chat/completions/embeddings shape (`prompt_tokens`, `completion_tokens`,
/// details) or the Responses shape (`input_tokens`, `output_tokens`,
/// details). None if neither shape.
pub fn usage_of(value: &Value) -> Option<Usage> {
    let usage = value.as_object()?;
    let count = |key: &str| usage.get(key).map(tokens);
    let [prompt, completion, prompt_details, completion_details] =
        if count("prompt_tokens").is_some() || count("completion_tokens").is_some() {
            [
                "prompt_tokens",
                "completion_tokens",
                "prompt_tokens_details",
                "completion_tokens_details",
            ]
        } else if count("input_tokens").is_some() || count("output_tokens").is_some() {
            [
                "input_tokens",
                "output_tokens",
                "input_tokens_details",
                "output_tokens_details",
            ]
        } else {
            return None;
        };
    // A count that is there but is not believable makes the whole report
    // missing: half of a lying answer is not a count either.
    let prompt = count(prompt).unwrap_or(Some(0))?;
    let completion = count(completion).unwrap_or(Some(0))?;
    let detail = |details: &str, key: &str, within: u64| {
        usage
            .get(details)
            .and_then(|d| d.get(key))
            .and_then(tokens)
            .unwrap_or(0)
            .min(within)
    };
    Some(Usage {
        prompt,
        completion,
        cached: detail(prompt_details, "cached_tokens", prompt),
        reasoning: detail(completion_details, "reasoning_tokens", completion),
    })
}

/// The most tokens one answer may report; a larger count is not believed.
pub const MAX_TOKENS_PER_ANSWER: u64 = 10_000_000;

/// A token count: a non-negative integer up to [`MAX_TOKENS_PER_ANSWER`]
/// (`12.0` is accepted as 12); `None` for anything else (`null` included).
fn tokens(value: &Value) -> Option<u64> {
    let n = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f <= MAX_TOKENS_PER_ANSWER as f64)
            .map(|f| f as u64)
    })?;
    (n <= MAX_TOKENS_PER_ANSWER).then_some(n)
}

/// What weir reads from a JSON answer or from the data of one SSE event.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    /// The top-level `model`, else the Responses API's `response.model`.
    pub(crate) model: Option<Cow<'a, str>>,
    /// The top-level `usage`, else `response.usage`, if it has a known shape.
    pub(crate) usage: Option<Usage>,
    /// A chat chunk whose `choices` is an empty array and whose `usage` is an
    /// object: the event `stream_options.include_usage` adds to a stream.
    pub(crate) usage_only: bool,
}

impl<'a> Fields<'a> {
    /// None when `json` is not JSON. Fields of an unexpected type (a `model`
    /// that is not a string, ...) are treated as absent.
    pub(crate) fn parse(json: &'a [u8]) -> Option<Self> {
        match serde_json::from_slice::<Message<'a>>(json) {
            Ok(message) => Some(message.into_fields()),
            // Valid JSON of another shape: the slow, lenient path.
            Err(e) if e.is_data() => serde_json::from_slice::<Value>(json)
                .ok()
                .map(|v| Self::of_value(&v)),
            Err(_) => None,
        }
    }

    fn of_value(value: &Value) -> Self {
        let top_usage = value.get("usage").filter(|u| !u.is_null());
        let model = value
            .get("model")
            .and_then(Value::as_str)
            .or_else(|| value.pointer("/response/model").and_then(Value::as_str));
        let usage = top_usage.or_else(|| value.pointer("/response/usage"));
        let no_choices = value
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty);
        Self {
            model: model
                .filter(|m| !m.is_empty())
                .map(|m| Cow::Owned(m.to_owned())),
            usage: usage.and_then(usage_of),
            usage_only: no_choices && top_usage.is_some_and(Value::is_object),
        }
    }
}

/// The top-level fields weir reads; serde skips all others unparsed.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    model: Option<Name<'a>>,
    usage: Option<Value>,
    /// Only the length matters: a `Vec` of a zero-sized type never allocates.
    choices: Option<Vec<IgnoredAny>>,
    /// The Responses API's streamed events wrap the response object.
    #[serde(borrow)]
    response: Option<Response<'a>>,
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(borrow)]
    model: Option<Name<'a>>,
    usage: Option<Value>,
}

/// A string borrowed from the input unless it holds escapes.
#[derive(Deserialize)]
#[serde(transparent)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> Message<'a> {
    fn into_fields(self) -> Fields<'a> {
        let usage_only = matches!(&self.choices, Some(c) if c.is_empty())
            && matches!(self.usage, Some(Value::Object(_)));
        let (model, usage) = match self.response {
            Some(r) => (self.model.or(r.model), self.usage.or(r.usage)),
            None => (self.model, self.usage),
        };
        Fields {
            model: model.map(|Name(m)| m).filter(|m| !m.is_empty()),
            usage: usage.as_ref().and_then(usage_of),
            usage_only,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> Option<Usage> {
        Some(Usage {
            prompt,
            completion,
            cached,
            reasoning,
        })
    }

    #[test]
    fn chat_with_cached_and_reasoning_details() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,
            "model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant",
            "content":"Hi \"usage\": 3"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,
            "prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":128,"audio_tokens":0}}}"#;
        let (model, got) = parse_json(body);
        assert_eq!(model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(got, usage(2006, 300, 1920, 128));
    }

    #[test]
    fn legacy_completion() {
        let body = br#"{"id":"cmpl-1","object":"text_completion","model":"gpt-3.5-turbo-instruct",
            "choices":[{"text":"x","index":0,"logprobs":null,"finish_reason":"length"}],
            "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        let (model, got) = parse_json(body);
        assert_eq!(model.as_deref(), Some("gpt-3.5-turbo-instruct"));
        assert_eq!(got, usage(5, 7, 0, 0));
    }

    #[test]
    fn embeddings_report_prompt_tokens_only() {
        let body = br#"{"object":"list","data":[{"object":"embedding","index":0,
            "embedding":[0.0023,-0.0093,1e-5]}],"model":"text-embedding-3-small",
            "usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        let (model, got) = parse_json(body);
        assert_eq!(model.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(got, usage(8, 0, 0, 0));
    }

    #[test]
    fn responses_api() {
        let body = br#"{"id":"resp_1","object":"response","status":"completed",
            "model":"o4-mini-2025-04-16","output":[{"type":"message","content":[
            {"type":"output_text","text":"Hi"}]}],"usage":{"input_tokens":36,
            "input_tokens_details":{"cached_tokens":12},"output_tokens":87,
            "output_tokens_details":{"reasoning_tokens":64},"total_tokens":123}}"#;
        let (model, got) = parse_json(body);
        assert_eq!(model.as_deref(), Some("o4-mini-2025-04-16"));
        assert_eq!(got, usage(36, 87, 12, 64));
    }

    #[test]
    fn no_usage_reported() {
        let with_model = br#"{"model":"m","choices":[{"index":0}]}"#;
        assert_eq!(parse_json(with_model), (Some("m".to_owned()), None));
        let null = br#"{"model":"m","usage":null}"#;
        assert_eq!(parse_json(null), (Some("m".to_owned()), None));
        let unknown_shape = br#"{"model":"m","usage":{"total_tokens":9}}"#;
        assert_eq!(parse_json(unknown_shape), (Some("m".to_owned()), None));
        let error = br#"{"error":{"message":"nope","type":"invalid_request_error"}}"#;
        assert_eq!(parse_json(error), (None, None));
    }

    #[test]
    fn not_json() {
        for body in [
            &b""[..],
            b"<html>502</html>",
            b"{\"model\":\"m\",",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_json(body), (None, None));
        }
    }

    #[test]
    fn odd_types_are_treated_as_absent() {
        let body = br#"{"model":7,"choices":"none","usage":{"prompt_tokens":3.0,
            "prompt_tokens_details":null}}"#;
        assert_eq!(parse_json(body), (None, usage(3, 0, 0, 0)));
        let escaped = br#"{"model":"a\u00e9b","usage":{"input_tokens":1}}"#;
        assert_eq!(
            parse_json(escaped),
            (Some("a\u{e9}b".into()), usage(1, 0, 0, 0))
        );
        assert_eq!(parse_json(b"[1,2]"), (None, None));
        assert_eq!(usage_of(&Value::Null), None);
    }

    #[test]
    fn unbelievable_counts_make_the_usage_missing() {
        for usage in [
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":1}"#,
            r#"{"prompt_tokens":9223372036854775808,"completion_tokens":9223372036854775808}"#,
            r#"{"prompt_tokens":10000001,"completion_tokens":1}"#,
            r#"{"prompt_tokens":3,"completion_tokens":-1}"#,
            r#"{"prompt_tokens":3,"completion_tokens":1.5}"#,
            r#"{"prompt_tokens":"3","completion_tokens":1}"#,
            r#"{"prompt_tokens":1e300,"completion_tokens":1}"#,
            r#"{"input_tokens":-5,"output_tokens":2}"#,
        ] {
            let body = format!(r#"{{"model":"m","usage":{usage}}}"#);
            assert_eq!(
                parse_json(body.as_bytes()),
                (Some("m".into()), None),
                "{usage}"
            );
        }
        // The most believed, and details never more than their total.
        let body = br#"{"usage":{"prompt_tokens":10000000,"completion_tokens":2,
            "prompt_tokens_details":{"cached_tokens":99999999},
            "completion_tokens_details":{"reasoning_tokens":5}}}"#;
        assert_eq!(parse_json(body), (None, usage(10_000_000, 2, 0, 2)));
        let body = br#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":9}}}"#;
        assert_eq!(parse_json(body), (None, usage(5, 0, 5, 0)));
    }

    #[test]
    fn usage_only_chunk_is_recognised() {
        let only = br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        assert!(Fields::parse(only).is_some_and(|f| f.usage_only));
        for other in [
            &br#"{"choices":[],"usage":null}"#[..],
            br#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#,
            br#"{"type":"response.completed","response":{"usage":{"input_tokens":1}}}"#,
        ] {
            assert!(Fields::parse(other).is_some_and(|f| !f.usage_only));
        }
    }
}
