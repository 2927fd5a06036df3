//! A fast, minimal OpenAI-compatible mock upstream (HTTP/1.1 and h2c).
//!
//! Shared by the `mock_llm` example binary and by tests/benches via `#[path]`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Behaviour of the mock upstream.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Delay before response headers are sent.
    pub latency: Duration,
    /// Delay before each content event of a stream.
    pub chunk_delay: Duration,
    /// Number of content chunks (= completion tokens).
    pub chunks: usize,
    /// Model reported when the request names none.
    pub model: String,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            chunks: 8,
            model: "mock-gpt".to_owned(),
        }
    }
}

/// Serves until the returned JoinHandle is aborted. Counts nothing; stays minimal and fast.
///
/// Accept errors (e.g. file-descriptor exhaustion) are retried after a short back-off,
/// so in practice this never returns.
pub async fn serve(listener: TcpListener, config: MockConfig) -> std::io::Result<()> {
    let config = Arc::new(config);
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (config, builder) = (config.clone(), builder.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, config.clone()));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Response body: either a single buffer or SSE events fed through a channel.
enum MockBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(buf) => Poll::Ready(buf.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Stream(rx) => rx.poll_recv(cx).map(|ev| ev.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, MockBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(buf) => SizeHint::with_exact(buf.as_ref().map_or(0, |b| b.len() as u64)),
            MockBody::Stream(_) => SizeHint::default(),
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    config: Arc<MockConfig>,
) -> Result<Response<MockBody>, Infallible> {
    let request_id = req.headers().get("x-request-id").cloned();
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_owned();

    let mut resp = if method == Method::GET && path.ends_with("/models") {
        let models = json!({"object": "list", "data": [
            {"id": config.model, "object": "model", "created": 0, "owned_by": "mock"}
        ]});
        json_response(StatusCode::OK, &models)
    } else if method == Method::POST
        && (path.ends_with("/completions") || path.ends_with("/embeddings"))
    {
        match req.into_body().collect().await.map(|c| c.to_bytes()) {
            Err(_) => error(
                StatusCode::BAD_REQUEST,
                "failed to read body",
                "bad_request",
            ),
            Ok(raw) => match serde_json::from_slice::<Value>(&raw) {
                Err(e) => error(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid JSON: {e}"),
                    "invalid_json",
                ),
                Ok(body) => {
                    let model = body
                        .get("model")
                        .and_then(Value::as_str)
                        .unwrap_or(&config.model);
                    if path.ends_with("/chat/completions") {
                        completion(&body, model, &config, true)
                    } else if path.ends_with("/completions") {
                        completion(&body, model, &config, false)
                    } else {
                        embeddings(&body, model)
                    }
                }
            },
        }
    } else {
        let msg = format!("Unknown request URL: {method} {path}");
        error(StatusCode::NOT_FOUND, &msg, "not_found")
    };

    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    if let Some(id) = request_id {
        resp.headers_mut().insert("x-request-id", id);
    }
    Ok(resp)
}

fn json_response(status: StatusCode, value: &Value) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::Full(Some(Bytes::from(value.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error(status: StatusCode, message: &str, code: &str) -> Response<MockBody> {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "code": code}});
    json_response(status, &body)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Deterministic token count: whitespace-separated words in strings (and text parts).
fn count_words(value: &Value) -> usize {
    match value {
        Value::String(s) => s.split_whitespace().count(),
        Value::Array(items) => items.iter().map(count_words).sum(),
        Value::Object(part) => part.get("text").map_or(0, count_words),
        _ => 0,
    }
}

/// Chat (`chat == true`) or legacy text completion, streaming or not.
fn completion(body: &Value, model: &str, config: &MockConfig, chat: bool) -> Response<MockBody> {
    let prompt = if chat {
        body.get("messages")
            .and_then(Value::as_array)
            .map_or(0, |msgs| {
                msgs.iter()
                    .filter_map(|m| m.get("content"))
                    .map(count_words)
                    .sum()
            })
    } else {
        body.get("prompt").map_or(0, count_words)
    };
    let (prompt, completion) = (prompt.max(1), config.chunks);
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion});
    let (id, object) = if chat {
        ("chatcmpl-mock", "chat.completion")
    } else {
        ("cmpl-mock", "text_completion")
    };
    let created = unix_now();

    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        let text: String = (0..completion).map(|i| format!("tok{i} ")).collect();
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text},
                   "logprobs": null, "finish_reason": "stop"})
        } else {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"})
        };
        let resp = json!({"id": id, "object": object, "created": created, "model": model,
                          "choices": [choice], "usage": usage});
        return json_response(StatusCode::OK, &resp);
    }

    let object = if chat {
        "chat.completion.chunk"
    } else {
        object
    };
    let event = |choices: Value| -> Bytes {
        let chunk = json!({"id": id, "object": object, "created": created, "model": model,
                           "choices": choices});
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let choice = |piece: Option<String>, finish: Option<&str>| {
        let piece = piece.unwrap_or_default();
        if chat {
            let delta = match finish {
                Some(_) => json!({}),
                None => json!({"content": piece}),
            };
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
        } else {
            json!([{"index": 0, "text": piece, "logprobs": null, "finish_reason": finish}])
        }
    };

    // (delay_before, event) pairs; only content events are delayed.
    let mut events = Vec::with_capacity(completion + 4);
    if chat {
        let role = json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                           "logprobs": null, "finish_reason": null}]);
        events.push((false, event(role)));
    }
    events.extend((0..completion).map(|i| (true, event(choice(Some(format!("tok{i} ")), None)))));
    events.push((false, event(choice(None, Some("stop")))));
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if include_usage {
        let chunk = json!({"id": id, "object": object, "created": created, "model": model,
                           "choices": [], "usage": usage});
        events.push((false, Bytes::from(format!("data: {chunk}\n\n"))));
    }
    events.push((false, Bytes::from_static(b"data: [DONE]\n\n")));

    let (tx, rx) = mpsc::channel(16);
    let delay = config.chunk_delay;
    tokio::spawn(async move {
        for (delayed, ev) in events {
            if delayed && !delay.is_zero() {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            if tx.send(ev).await.is_err() {
                return; // client went away
            }
        }
    });

    let mut resp = Response::new(MockBody::Stream(rx));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn embeddings(body: &Value, model: &str) -> Response<MockBody> {
    let inputs: Vec<&Value> = match body.get("input") {
        Some(Value::Array(items)) if !items.is_empty() => items.iter().collect(),
        Some(v @ Value::String(_)) => vec![v],
        _ => {
            let msg = "'input' must be a string or a non-empty array";
            return error(StatusCode::BAD_REQUEST, msg, "invalid_input");
        }
    };
    let prompt = inputs
        .iter()
        .map(|v| match v {
            Value::Array(tokens) => tokens.len(),
            other => count_words(other),
        })
        .sum::<usize>()
        .max(1);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let seed = v.to_string().len() + i;
            let vector: Vec<f64> = (0..8)
                .map(|j| ((seed + j) % 16) as f64 / 16.0 - 0.5)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    let resp = json!({"object": "list", "data": data, "model": model,
                      "usage": {"prompt_tokens": prompt, "total_tokens": prompt}});
    json_response(StatusCode::OK, &resp)
}
