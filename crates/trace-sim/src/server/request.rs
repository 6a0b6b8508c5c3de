//! One generation request: the body's fields, its prompt's token count, the faults that answer
//! before a response, and the [`Job`] the response stream is built from.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::response::{SseStream, non_streaming};
use super::scheduler::start;
use super::{AppState, error_response};
use crate::fault::{FAULT_HEADER, Fault, unit};
use crate::truth::TruthRecord;

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
    #[serde(default)]
    continuous_usage_stats: bool,
}

/// The fields of every route's body: OpenAI's, TGI's (`inputs`, `parameters`), Triton's
/// TensorRT-LLM ensemble (`text_input`, `max_tokens`), SGLang's (`text`/`input_ids`,
/// `sampling_params`).
#[derive(Debug, Deserialize)]
struct GenRequest {
    model: Option<String>,
    messages: Option<Vec<Value>>,
    prompt: Option<Value>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    ignore_eos: bool,
    inputs: Option<String>,
    /// Responses: a string or a list of messages.
    input: Option<Value>,
    max_output_tokens: Option<u32>,
    text_input: Option<String>,
    text: Option<String>,
    input_ids: Option<Vec<Value>>,
    #[serde(alias = "sampling_params")]
    parameters: Option<NativeParams>,
}

/// TGI's `parameters` and SGLang's `sampling_params`.
#[derive(Debug, Deserialize)]
struct NativeParams {
    max_new_tokens: Option<u32>,
    #[serde(default)]
    ignore_eos: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    Chat,
    Completions,
    /// TGI `/generate_stream`: `token` events, `details` on the last, no `[DONE]`.
    Tgi,
    /// Triton `/v2/models/{model}/generate_stream`: `text_output` deltas, ends by closing.
    Triton,
    /// SGLang `/generate`: cumulative `text`, `meta_info` counts, `[DONE]`.
    Sglang,
    /// OpenAI Responses `/v1/responses`: typed events, usage on `response.completed`.
    Responses,
    /// Anthropic Messages `/v1/messages`: typed events, `message_stop`.
    Messages,
}

impl Api {
    /// Native routes always stream (Triton's and TGI's are streaming routes; SGLang's
    /// benchmark asks for it).
    pub(super) fn native(self) -> bool {
        !matches!(self, Self::Chat | Self::Completions)
    }

    /// The route streams reasoning apart from the answer.
    pub(super) fn has_reasoning(self) -> bool {
        matches!(self, Self::Chat | Self::Responses | Self::Messages)
    }
}

pub(super) async fn responses(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, Api::Responses, headers, body).await
}

pub(super) async fn messages(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, Api::Messages, headers, body).await
}

pub(super) async fn tgi(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, Api::Tgi, headers, body).await
}

pub(super) async fn sglang(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, Api::Sglang, headers, body).await
}

pub(super) async fn triton(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(model): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if model != s.model {
        // Triton's answer for a model it does not serve.
        return error_response(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            &format!("Request for unknown model: '{model}' is not found"),
        );
    }
    handle(s, Api::Triton, headers, body).await
}

pub(super) async fn chat(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, Api::Chat, headers, body).await
}

pub(super) async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(s, Api::Completions, headers, body).await
}

/// The tokens of one text, as keys: the tokenizer's ids when one is loaded (special tokens and
/// the chat template are not added: the engine's template overhead is a constant per request),
/// else whitespace-separated words, hashed (the `w<k>` prompts replay builds are one token per
/// word). The keys name the tokens for the prefix cache; their number is the count.
fn text_keys(tok: Option<&tokenizers::Tokenizer>, s: &str, out: &mut Vec<u64>) {
    match tok.map(|t| t.encode(s, false)) {
        Some(Ok(enc)) => out.extend(enc.get_ids().iter().map(|&i| u64::from(i))),
        _ => out.extend(
            s.split_ascii_whitespace()
                .map(|w| xxhash_rust::xxh3::xxh3_64(w.as_bytes())),
        ),
    }
}

/// Tokens of one text (see [`text_keys`]).
fn text_tokens(tok: Option<&tokenizers::Tokenizer>, s: &str) -> u32 {
    let mut keys = Vec::new();
    text_keys(tok, s, &mut keys);
    keys.len() as u32
}

/// `POST /tokenize` (llama.cpp's and vLLM's field names: `content` or `prompt`): the text's
/// tokens as [`text_tokens`] counts them, so a client can calibrate exact prompt lengths.
pub(super) async fn tokenize(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                &format!("invalid request body: {e}"),
            );
        }
    };
    let Some(text) = ["content", "prompt"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
    else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            "'content' (or 'prompt') is required",
        );
    };
    let n = text_tokens(s.tokenizer.as_ref(), text);
    let body = serde_json::json!({ "tokens": (0..n).collect::<Vec<u32>>(), "count": n });
    super::json_response(StatusCode::OK, body.to_string())
}

/// The prompt's tokens as keys (see [`text_keys`]; token ids are their own keys), in order:
/// their number is the prompt length, and they name its blocks for the prefix cache.
fn prompt_keys(
    api: Api,
    req: &GenRequest,
    tok: Option<&tokenizers::Tokenizer>,
) -> Result<Vec<u64>, String> {
    let mut k = Vec::new();
    let id = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
    let contents = |k: &mut Vec<u64>, c: &Value| match c {
        Value::String(t) => text_keys(tok, t, k),
        Value::Array(parts) => {
            for t in parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
            {
                text_keys(tok, t, k);
            }
        }
        _ => {}
    };
    match api {
        Api::Responses => match req.input.as_ref().ok_or("'input' is required")? {
            Value::String(t) => text_keys(tok, t, &mut k),
            Value::Array(items) => {
                for c in items.iter().filter_map(|m| m.get("content")) {
                    contents(&mut k, c);
                }
            }
            _ => return Err("'input' must be a string or a list of messages".into()),
        },
        Api::Chat | Api::Messages => {
            let msgs = req.messages.as_ref().ok_or("'messages' is required")?;
            for c in msgs.iter().filter_map(|m| m.get("content")) {
                contents(&mut k, c);
            }
        }
        Api::Tgi => text_keys(
            tok,
            req.inputs.as_deref().ok_or("'inputs' is required")?,
            &mut k,
        ),
        Api::Triton => text_keys(
            tok,
            req.text_input
                .as_deref()
                .ok_or("'text_input' is required")?,
            &mut k,
        ),
        Api::Sglang => match (&req.text, &req.input_ids) {
            (Some(t), _) => text_keys(tok, t, &mut k),
            (None, Some(ids)) => k.extend(ids.iter().map(id)),
            (None, None) => return Err("'text' or 'input_ids' is required".into()),
        },
        Api::Completions => match req.prompt.as_ref().ok_or("'prompt' is required")? {
            Value::String(t) => text_keys(tok, t, &mut k),
            Value::Array(items) => {
                for i in items {
                    match i {
                        Value::String(t) => text_keys(tok, t, &mut k),
                        Value::Number(_) => k.push(id(i)),
                        Value::Array(ids) => k.extend(ids.iter().map(id)),
                        _ => {}
                    }
                }
            }
            _ => return Err("'prompt' must be a string, an array of strings or token ids".into()),
        },
    }
    Ok(k)
}

/// Per-request facts the response stream needs.
pub(super) struct Job {
    pub(super) api: Api,
    pub(super) id: String,
    pub(super) model: String,
    pub(super) created: i64,
    pub(super) prompt_tokens: u32,
    pub(super) output_tokens: u32,
    pub(super) finish_reason: &'static str,
    pub(super) include_usage: bool,
    pub(super) continuous_usage: bool,
    pub(super) fault: Option<Fault>,
    pub(super) request_id: String,
    pub(super) arrival_unix_ns: i64,
    /// The first this-many output tokens are reasoning.
    pub(super) reasoning: u32,
    /// Prompt tokens served from the prefix cache; None when caching is off.
    pub(super) cached_tokens: Option<u32>,
}

async fn handle(s: Arc<AppState>, api: Api, headers: HeaderMap, body: Bytes) -> Response {
    let arrival_unix_ns = s.clock.now_unix_ns();
    let n = s.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| format!("sim-{n}"), str::to_string);
    let forced = match headers
        .get(FAULT_HEADER)
        .map(|v| v.to_str().map(str::parse::<Fault>))
    {
        None => None,
        Some(Ok(Ok(f))) => Some(f),
        Some(Ok(Err(e))) => {
            return error_response(StatusCode::BAD_REQUEST, "BadRequestError", &e.to_string());
        }
        Some(Err(_)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "x-sim-fault is not ASCII",
            );
        }
    };
    let fault = forced.or_else(|| s.faults.pick(s.seed, n));
    let req: GenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                &format!("invalid request body: {e}"),
            );
        }
    };
    let keys = match prompt_keys(api, &req, s.tokenizer.as_ref()) {
        Ok(k) => k,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "BadRequestError", &e),
    };
    let prompt_tokens = (keys.len() as u32).max(1);
    // As vLLM answers: a model it does not serve is 404, a request past the context is 400.
    if let Some(m) = req.model.as_deref().filter(|m| *m != s.model) {
        return error_response(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            &format!("The model `{m}` does not exist."),
        );
    }
    let native = req.parameters.as_ref();
    let asked = req
        .max_completion_tokens
        .or(req.max_tokens)
        .or(req.max_output_tokens)
        .or(native.and_then(|p| p.max_new_tokens))
        .unwrap_or(s.default_max_tokens)
        .max(1);
    let ignore_eos = req.ignore_eos || native.is_some_and(|p| p.ignore_eos);
    if u64::from(prompt_tokens) + u64::from(asked) > u64::from(super::MAX_MODEL_LEN) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BadRequestError",
            &format!(
                "This model's maximum context length is {} tokens. However, you requested {} \
                 tokens ({prompt_tokens} in the messages, {asked} in the completion).",
                super::MAX_MODEL_LEN,
                u64::from(prompt_tokens) + u64::from(asked)
            ),
        );
    }
    let truth_error = |status: StatusCode| {
        if let Some(t) = &s.truth {
            let _ = t.send(TruthRecord {
                request_id: request_id.clone(),
                arrival_unix_ns,
                event_unix_ns: vec![s.clock.now_unix_ns()],
                event_tokens: vec![0],
                status: status.as_u16(),
                fault: fault.map(|f| f.to_string()),
            });
        }
    };
    match fault {
        Some(Fault::Http500) => {
            truth_error(StatusCode::INTERNAL_SERVER_ERROR);
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "simulated internal server error",
            );
        }
        Some(Fault::Http429) => {
            truth_error(StatusCode::TOO_MANY_REQUESTS);
            return error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimitError",
                "simulated rate limit: too many requests",
            );
        }
        _ => {}
    }
    let max_tokens = asked;
    let output_tokens = match (&s.output_dist, ignore_eos) {
        (Some(d), false) => d
            .sample(unit(s.seed ^ 0x0D15, n), unit(s.seed ^ 0x0D16, n))
            .min(max_tokens),
        _ => max_tokens,
    };
    let opts = req.stream_options.as_ref();
    // Only a request that will run touches the cache.
    let cached_tokens = s.prefix.as_ref().map(|c| {
        c.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lookup(&keys)
    });
    drop(keys);
    let job = Job {
        api,
        id: match api {
            Api::Chat => format!("chatcmpl-{n:016x}"),
            Api::Responses => format!("resp_{n:016x}"),
            Api::Messages => format!("msg_{n:016x}"),
            _ => format!("cmpl-{n:016x}"),
        },
        model: serde_json::to_string(req.model.as_deref().unwrap_or(&s.model)).unwrap_or_default(),
        created: arrival_unix_ns / 1_000_000_000,
        prompt_tokens,
        output_tokens,
        finish_reason: match (output_tokens >= max_tokens, api) {
            (true, _) => "length",
            (false, Api::Tgi) => "eos_token",
            (false, _) => "stop",
        },
        include_usage: opts.is_some_and(|o| o.include_usage || o.continuous_usage_stats),
        continuous_usage: opts.is_some_and(|o| o.continuous_usage_stats),
        fault,
        request_id: request_id.clone(),
        arrival_unix_ns,
        cached_tokens,
        reasoning: if api.has_reasoning() {
            s.reasoning_tokens.min(output_tokens.saturating_sub(1))
        } else {
            0
        },
    };
    s.gauges
        .prompt_tokens
        .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
    let source = match start(
        &s,
        n,
        prompt_tokens,
        output_tokens,
        cached_tokens.unwrap_or(0),
    ) {
        Some(src) => src,
        None => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
                "simulator is shutting down",
            );
        }
    };
    let rid = HeaderValue::from_str(&request_id).ok();
    let mut resp = if req.stream || api.native() {
        let stream = SseStream::new(s.clone(), job, source);
        let body = Body::from_stream(futures_util::stream::unfold(stream, |mut st| async move {
            st.next_chunk().await.map(|c| (c, st))
        }));
        let mut r = Response::new(body);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        non_streaming(s.clone(), job, source).await
    };
    if let Some(rid) = rid {
        resp.headers_mut().insert("x-request-id", rid);
    }
    resp
}
