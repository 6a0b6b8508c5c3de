//! The request function: builds an OpenAI chat or completions request, sends it, reads the
//! response body one read at a time with a timestamp per read, and fills one [`TraceRecord`].
//!
//! reqwest rather than raw hyper: reqwest's `Response::chunk()` hands over each hyper body frame
//! as it is decoded from a socket read, with no buffering in between, so stamping the clock when
//! `chunk()` returns is as close to the read as hyper's own frame would be (sub-microsecond
//! apart); reqwest adds the connection pool, connect errors with causes and URL handling. It is
//! built with no proxy, no retries and an unbounded idle pool so thousands of concurrent streams
//! each keep their own HTTP/1.1 connection.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout_at};
use trace_format::TraceRecord;

use crate::classify::{EventKind, TokenCounter, classify};
use crate::sse::{SseBody, SseEvent, SseParser};
use crate::tokenizer::HfTokenizer;
use crate::{Error, error_chain};

/// Largest error body kept from a failed HTTP response.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How long to wait for the end of the body after `[DONE]`.
const DONE_GRACE: Duration = Duration::from_millis(100);

/// Which OpenAI-compatible route to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completions,
}

impl Endpoint {
    /// The value of the trace's `endpoint` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Chat => "chat/completions",
            Self::Completions => "completions",
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server root (`http://host:8000`) or its `/v1` prefix.
    pub base_url: String,
    /// Route.
    pub endpoint: Endpoint,
    /// Model name sent in each request.
    pub model: String,
    /// Bearer token.
    pub api_key: Option<String>,
    /// Deadline of one request, from send to the end of the body.
    pub timeout: Duration,
    /// Longest gap allowed between two reads of a response; `None`: only `timeout` applies.
    pub idle_timeout: Option<Duration>,
    /// Send `ignore_eos: true` (vLLM, SGLang). Off by default: some servers answer 422 to it.
    pub ignore_eos: bool,
    /// Ask for usage on every chunk (`stream_options.continuous_usage_stats`), which gives
    /// exact per-event token counts on vLLM and SGLang. Some servers refuse the field.
    pub continuous_usage: bool,
    /// Keep the output text in `output_text`.
    pub store_output: bool,
    /// Keep the prompt text in `prompt`.
    pub store_prompt: bool,
    /// JSON object merged into each request body (its keys win).
    pub extra_body: Option<Value>,
    /// Hugging Face tokenizer.json used to count output tokens when the server sends no usage.
    pub tokenizer: Option<PathBuf>,
}

impl ClientConfig {
    /// Defaults for a base URL and model: chat route, 10 min timeout, continuous usage on.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            endpoint: Endpoint::Chat,
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(600),
            idle_timeout: None,
            ignore_eos: false,
            continuous_usage: true,
            store_output: false,
            store_prompt: false,
            extra_body: None,
            tokenizer: None,
        }
    }
}

/// A request's prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text (the chat user message, or the completions prompt).
    Text(String),
    /// Token ids: sent as-is to completions; decoded with the tokenizer for chat.
    TokenIds(Vec<u32>),
}

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// Sent as `X-Request-Id` and kept in the row.
    pub request_id: String,
    /// Prompt.
    pub prompt: Prompt,
    /// Known prompt length, used when the server reports no usage.
    pub prompt_tokens: Option<i32>,
    /// `max_tokens`.
    pub max_tokens: Option<i32>,
}

/// ns from `run_start` to `t` (0 if `t` is earlier).
pub fn offset_ns(run_start: Instant, t: Instant) -> i64 {
    i64::try_from(t.saturating_duration_since(run_start).as_nanos()).unwrap_or(i64::MAX)
}

/// xxh3 of the prompt: its UTF-8 bytes, or its token ids as little-endian u32s.
pub fn prompt_hash(p: &Prompt) -> u64 {
    match p {
        Prompt::Text(s) => xxhash_rust::xxh3::xxh3_64(s.as_bytes()),
        Prompt::TokenIds(ids) => {
            let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
            xxhash_rust::xxh3::xxh3_64(&bytes)
        }
    }
}

/// The streaming client. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: Arc<str>,
    auth: Option<HeaderValue>,
    cfg: Arc<ClientConfig>,
    tokenizer: Option<Arc<HfTokenizer>>,
}

fn api_root(base_url: &str) -> Result<String, Error> {
    let b = base_url.trim().trim_end_matches('/');
    if !(b.starts_with("http://") || b.starts_with("https://")) {
        return Err(Error::Url {
            url: base_url.into(),
            msg: "must start with http://".into(),
        });
    }
    Ok(if b.ends_with("/v1") {
        b.to_string()
    } else {
        format!("{b}/v1")
    })
}

fn http_client(timeout: Option<Duration>) -> Result<reqwest::Client, Error> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .retry(reqwest::retry::never())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().map_err(|e| Error::Build(error_chain(&e)))
}

fn bearer(key: &str) -> Result<HeaderValue, Error> {
    let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| Error::Build("api key holds characters not allowed in a header".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Asks `GET {base}/v1/models` for the served model ids.
pub async fn list_models(
    base_url: &str,
    api_key: Option<&str>,
    timeout: Duration,
) -> Result<Vec<String>, Error> {
    let url = format!("{}/models", api_root(base_url)?);
    let http = http_client(Some(timeout))?;
    let mut req = http.get(&url);
    if let Some(k) = api_key {
        req = req.header(AUTHORIZATION, bearer(k)?);
    }
    let resp = req.send().await.map_err(|e| Error::Http {
        url: url.clone(),
        msg: error_chain(&e),
    })?;
    if !resp.status().is_success() {
        return Err(Error::Status {
            url,
            status: resp.status().as_u16(),
        });
    }
    let v: Value = resp.json().await.map_err(|e| Error::Body {
        url: url.clone(),
        msg: error_chain(&e),
    })?;
    let ids: Vec<String> = v
        .get("data")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(Error::Body {
            url,
            msg: "no models listed in 'data'".into(),
        });
    }
    Ok(ids)
}

/// How a request ended, before the row is finalised.
struct Outcome {
    end: Instant,
    error: Option<(&'static str, String)>,
}

impl Outcome {
    fn fail(kind: &'static str, msg: impl Into<String>) -> Self {
        Self {
            end: Instant::now(),
            error: Some((kind, msg.into())),
        }
    }
}

impl Client {
    /// Builds the client (connection pool, URL, tokenizer).
    pub fn new(cfg: ClientConfig) -> Result<Self, Error> {
        let url = format!("{}/{}", api_root(&cfg.base_url)?, cfg.endpoint.path());
        let auth = cfg.api_key.as_deref().map(bearer).transpose()?;
        let tokenizer = match &cfg.tokenizer {
            Some(p) => Some(Arc::new(HfTokenizer::load(p)?)),
            None => None,
        };
        if let Some(e) = &cfg.extra_body
            && !e.is_object()
        {
            return Err(Error::Build("extra_body must be a JSON object".into()));
        }
        Ok(Self {
            http: http_client(None)?,
            url: url.into(),
            auth,
            cfg: Arc::new(cfg),
            tokenizer,
        })
    }

    /// The full request URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The loaded tokenizer, if configured.
    pub fn tokenizer(&self) -> Option<&HfTokenizer> {
        self.tokenizer.as_deref()
    }

    /// Sends one request and fills `rec` (see the crate docs for `error_kind`). Never panics
    /// and always sets `end_ns`; request-side fields it does not own (`request_id`, `stage`,
    /// `scheduled_ns`, ...) are left as the caller set them.
    pub async fn send(&self, spec: &RequestSpec, run_start: Instant, rec: &mut TraceRecord) {
        self.send_cancellable(spec, run_start, rec, std::future::pending())
            .await;
    }

    /// [`Client::send`], stopped when `cancel` completes: the row then has error_kind
    /// `cancelled` and keeps every chunk received before.
    pub async fn send_cancellable(
        &self,
        spec: &RequestSpec,
        run_start: Instant,
        rec: &mut TraceRecord,
        cancel: impl Future<Output = ()>,
    ) {
        let cfg = &*self.cfg;
        rec.endpoint = Some(cfg.endpoint.as_str().to_string());
        rec.model = Some(cfg.model.clone());
        rec.max_tokens = spec.max_tokens;
        rec.prompt_tokens = spec.prompt_tokens;
        rec.prompt_hash = Some(prompt_hash(&spec.prompt));
        if cfg.store_prompt {
            rec.prompt = Some(match &spec.prompt {
                Prompt::Text(s) => s.clone(),
                Prompt::TokenIds(ids) => serde_json::to_string(ids).unwrap_or_default(),
            });
        }
        let mut st = StreamState::new(cfg.store_output || self.tokenizer.is_some());
        let outcome = match self.body(spec) {
            Err(msg) => Outcome::fail("invalid_request", msg),
            Ok(body) => {
                let driven = tokio::select! {
                    o = self.drive(body, spec, run_start, rec, &mut st) => Some(o),
                    () = cancel => None,
                };
                driven.unwrap_or_else(|| Outcome::fail("cancelled", "cancelled by the caller"))
            }
        };
        st.finish_into(
            rec,
            offset_ns(run_start, outcome.end),
            outcome.error,
            self.tokenizer.as_deref(),
            cfg.store_output,
        );
    }

    fn body(&self, spec: &RequestSpec) -> Result<Vec<u8>, String> {
        let cfg = &*self.cfg;
        let mut b = json!({ "model": cfg.model, "stream": true });
        let prompt_text = |ids: &[u32]| -> Result<String, String> {
            match &self.tokenizer {
                Some(t) => t
                    .decode(ids)
                    .map_err(|e| format!("cannot decode prompt token ids: {e}")),
                None => Err("a chat prompt given as token ids needs a tokenizer".into()),
            }
        };
        match (cfg.endpoint, &spec.prompt) {
            (Endpoint::Chat, p) => {
                let text = match p {
                    Prompt::Text(s) => s.clone(),
                    Prompt::TokenIds(ids) => prompt_text(ids)?,
                };
                b["messages"] = json!([{ "role": "user", "content": text }]);
            }
            (Endpoint::Completions, Prompt::Text(s)) => b["prompt"] = json!(s),
            (Endpoint::Completions, Prompt::TokenIds(ids)) => b["prompt"] = json!(ids),
        }
        if let Some(m) = spec.max_tokens {
            b["max_tokens"] = json!(m);
        }
        b["stream_options"] = if cfg.continuous_usage {
            json!({ "include_usage": true, "continuous_usage_stats": true })
        } else {
            json!({ "include_usage": true })
        };
        if cfg.ignore_eos {
            b["ignore_eos"] = json!(true);
        }
        if let (Some(Value::Object(extra)), Value::Object(obj)) = (&cfg.extra_body, &mut b) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        serde_json::to_vec(&b).map_err(|e| format!("cannot encode request body: {e}"))
    }

    async fn drive(
        &self,
        body: Vec<u8>,
        spec: &RequestSpec,
        run_start: Instant,
        rec: &mut TraceRecord,
        st: &mut StreamState,
    ) -> Outcome {
        let cfg = &*self.cfg;
        let mut req = self
            .http
            .post(&*self.url)
            .header(CONTENT_TYPE, "application/json")
            .header("x-request-id", spec.request_id.as_str())
            .body(body);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let sent = Instant::now();
        let deadline = sent + cfg.timeout;
        rec.sent_ns = Some(offset_ns(run_start, sent));
        let mut resp = match timeout_at(deadline, req.send()).await {
            Err(_) => {
                return Outcome::fail(
                    "timeout",
                    format!("no response headers within {:?}", cfg.timeout),
                );
            }
            Ok(Err(e)) if e.is_timeout() => return Outcome::fail("timeout", error_chain(&e)),
            Ok(Err(e)) => return Outcome::fail("connect", error_chain(&e)),
            Ok(Ok(r)) => r,
        };
        let headers_at = Instant::now();
        rec.headers_ns = Some(offset_ns(run_start, headers_at));
        let status = resp.status();
        rec.status = i16::try_from(status.as_u16()).ok();
        let is_json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let mut last_read = headers_at;
        let mut buf: Vec<u8> = Vec::new();
        let keep_body = !status.is_success() || is_json;
        let mut n_reads: u64 = 0;
        loop {
            let mut read_deadline = match cfg.idle_timeout {
                Some(idle) => deadline.min(last_read + idle),
                None => deadline,
            };
            if st.acc.done {
                // After [DONE] only the body's end is left to read (so the connection goes back
                // to the pool); a server that keeps the body open must not turn a complete
                // response into a timeout.
                read_deadline = read_deadline.min(last_read + DONE_GRACE);
            }
            let next = timeout_at(read_deadline, resp.chunk()).await;
            // One clock read per read(), before any parsing.
            let now = Instant::now();
            let t_ns = offset_ns(run_start, now);
            match next {
                Err(_) if st.acc.done => break,
                Err(_) => {
                    let what = if now >= deadline {
                        format!("request timeout {:?} passed", cfg.timeout)
                    } else {
                        format!(
                            "stalled: no bytes for {:?}",
                            cfg.idle_timeout.unwrap_or_default()
                        )
                    };
                    return Outcome {
                        end: now,
                        error: Some(("timeout", format!("{what} after {} events", st.chunks()))),
                    };
                }
                Ok(Err(e)) => {
                    let kind = if status.is_success() {
                        "stream"
                    } else {
                        http_kind(status)
                    };
                    let msg = if status.is_success() {
                        format!(
                            "connection error mid-stream after {} events: {}",
                            st.chunks(),
                            error_chain(&e)
                        )
                    } else {
                        http_error_msg(status, &buf, cfg)
                    };
                    return Outcome {
                        end: now,
                        error: Some((kind, msg)),
                    };
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(bytes))) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    n_reads += 1;
                    if n_reads == 1 {
                        rec.first_byte_ns = Some(t_ns);
                    }
                    last_read = now;
                    if keep_body {
                        if buf.len() < MAX_ERROR_BODY || is_json && status.is_success() {
                            buf.extend_from_slice(&bytes);
                        }
                    } else {
                        st.feed(&bytes, t_ns);
                        if st.acc.error.is_some() {
                            // An error event ends the request: stop reading so end_ns is its time.
                            return Outcome {
                                end: now,
                                error: None,
                            };
                        }
                    }
                }
            }
        }
        let end = Instant::now();
        if !status.is_success() {
            return Outcome {
                end,
                error: Some((http_kind(status), http_error_msg(status, &buf, cfg))),
            };
        }
        if is_json {
            st.feed_json(&buf, offset_ns(run_start, last_read));
        }
        Outcome { end, error: None }
    }
}

fn http_kind(status: reqwest::StatusCode) -> &'static str {
    if status.is_client_error() {
        "http_4xx"
    } else {
        "http_5xx"
    }
}

/// The server's message from an error body, and for a refused field (422, 400 "extra
/// inputs"), which field and why we sent it.
fn http_error_msg(status: reqwest::StatusCode, body: &[u8], cfg: &ClientConfig) -> String {
    let head = format!("HTTP {status}");
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let mut msg = match &parsed {
        Some(v) => server_message(v).unwrap_or_else(|| truncate(text, 500)),
        None => truncate(text, 500),
    };
    if msg.is_empty() {
        msg = "(empty body)".into();
    }
    let lower = msg.to_lowercase();
    let refused = lower.contains("unexpected field")
        || lower.contains("extra inputs")
        || lower.contains("extra_forbidden")
        || lower.contains("unrecognized")
        || lower.contains("unknown field");
    if refused {
        let mut sent = Vec::new();
        if cfg.ignore_eos && lower.contains("ignore_eos") {
            sent.push("ignore_eos (sent because ignore_eos is on: turn it off for this server)");
        }
        if lower.contains("continuous_usage_stats") || lower.contains("stream_options") {
            sent.push(
                "stream_options (continuous_usage_stats is on: turn continuous usage off for this server)",
            );
        }
        if cfg.extra_body.is_some() && sent.is_empty() {
            sent.push("a field from extra_body");
        }
        let why = if sent.is_empty() {
            String::new()
        } else {
            format!("; refused: {}", sent.join(", "))
        };
        return format!("{head}: server refused a request field: {msg}{why}");
    }
    format!("{head}: {msg}")
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn server_message(v: &Value) -> Option<String> {
    if let Some(d) = v.get("detail") {
        return Some(match d {
            Value::String(s) => s.clone(),
            // FastAPI/pydantic: [{"loc": ["body", "ignore_eos"], "msg": "...", "type": "..."}]
            Value::Array(items) => items
                .iter()
                .map(|it| {
                    let loc = it
                        .get("loc")
                        .and_then(Value::as_array)
                        .map(|l| {
                            l.iter()
                                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    let m = it.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                    format!("field '{loc}': {m}")
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        });
    }
    match v.get("error") {
        Some(Value::String(s)) => return Some(s.clone()),
        Some(e @ Value::Object(_)) => {
            if let Some(m) = e.get("message").and_then(Value::as_str) {
                return Some(m.to_string());
            }
        }
        _ => {}
    }
    v.get("message").and_then(Value::as_str).map(str::to_string)
}

/// Per-request response state: the SSE parser, token accounting and what the row will hold.
/// Public because it is the one response accounting of the toolkit: [`Client::send`] drives it,
/// and so does `trace record`'s proxy, so that recorded and replayed rows count tokens, chunks
/// and errors alike; benchmarks and tests drive it without a network.
///
/// Use: [`StreamState::feed`] each read of an event stream, or [`StreamState::feed_json`] a
/// whole non-streaming body, then [`StreamState::finish_into`] once.
#[derive(Debug)]
pub struct StreamState {
    parser: SseParser,
    acc: Acc,
}

#[derive(Debug, Default)]
struct Acc {
    counter: TokenCounter,
    chunk_ns: Vec<i64>,
    chunk_tokens: Vec<i32>,
    keep_text: bool,
    text: String,
    finish_reason: Option<String>,
    model: Option<String>,
    done: bool,
    done_t_ns: Option<i64>,
    error: Option<String>,
    unparseable: u32,
    first_unparseable: Option<String>,
    keepalives: u64,
}

impl StreamState {
    /// A fresh state; `keep_text` accumulates output text (for `store_output` or a tokenizer).
    pub fn new(keep_text: bool) -> Self {
        Self {
            parser: SseParser::new(),
            acc: Acc {
                keep_text,
                ..Default::default()
            },
        }
    }

    /// Feeds one read that arrived at `t_ns`.
    pub fn feed(&mut self, bytes: &[u8], t_ns: i64) {
        let Self { parser, acc } = self;
        parser.feed(bytes, t_ns, |ev| acc.on_event(ev));
    }

    /// Number of events that became chunks.
    pub fn chunks(&self) -> usize {
        self.acc.chunk_ns.len()
    }

    /// Sum of the chunks' tokens.
    pub fn tokens(&self) -> i64 {
        self.acc.counter.total
    }

    /// `:` keep-alive comments seen.
    pub fn keepalives(&self) -> u64 {
        self.acc.keepalives
    }

    /// `[DONE]` seen, or a whole JSON body fed.
    pub fn done(&self) -> bool {
        self.acc.done
    }

    /// A whole non-streaming JSON response, read by `t_ns`: one chunk with all its tokens.
    pub fn feed_json(&mut self, body: &[u8], t_ns: i64) {
        let acc = &mut self.acc;
        let c = classify(body);
        match c.kind {
            Some(EventKind::Unparseable) | None => {
                acc.unparseable += 1;
                acc.first_unparseable = Some(truncate(&String::from_utf8_lossy(body), 200));
                // The body was read whole: it is a `parse` error, not a truncated stream.
                acc.done = true;
            }
            Some(EventKind::Error) => acc.error = c.error.clone(),
            Some(_) => {
                let n = match c.usage.and_then(|u| u.completion_tokens) {
                    Some(n) => n,
                    None => i64::from(c.kind == Some(EventKind::Content)),
                };
                acc.counter.last_usage = c.usage;
                acc.counter.total = n;
                acc.chunk_ns.push(t_ns);
                acc.chunk_tokens.push(i32::try_from(n).unwrap_or(i32::MAX));
                if acc.keep_text
                    && let Some(t) = &c.text
                {
                    acc.text.push_str(t);
                }
                acc.finish_reason = c.finish_reason.map(|f| f.into_owned());
                acc.model = c.model.map(|m| m.into_owned());
                // A complete JSON body is a complete response.
                acc.done = true;
            }
        }
    }

    /// Fills the response columns of `rec`: `end_ns`, `error_kind` / `error_msg`,
    /// `output_tokens`, `token_source`, `chunk_ns` / `chunk_tokens`, `finish_reason`, and
    /// `prompt_tokens` and `model` where the response reports them (else left as the caller set
    /// them). `end_ns` is when the exchange ended; `failure` is a transport outcome
    /// (`error_kind`, message) that wins over what the body says. Without a failure a stream
    /// with `[DONE]` ends at that event. Output tokens come from the usage, else from
    /// `tokenizer` over the kept text, else from the chunks; `store_output` keeps the text.
    pub fn finish_into(
        mut self,
        rec: &mut TraceRecord,
        end_ns: i64,
        failure: Option<(&'static str, String)>,
        tokenizer: Option<&HfTokenizer>,
        store_output: bool,
    ) {
        let partial = self.parser.finish();
        let acc = self.acc;
        // A complete stream ends at its [DONE] event, not at the (later) close of the body.
        rec.end_ns = Some(match (acc.done_t_ns, &failure) {
            (Some(t), None) => t,
            _ => end_ns,
        });
        let (kind, msg) = match failure {
            Some((k, m)) => (Some(k), Some(m)),
            None => {
                if let Some(e) = &acc.error {
                    (
                        Some("stream"),
                        Some(format!("error event after HTTP 200: {e}")),
                    )
                } else if !acc.done && acc.finish_reason.is_none() {
                    let why = if partial {
                        "in the middle of an event"
                    } else {
                        "between events"
                    };
                    (
                        Some("stream"),
                        Some(format!(
                            "stream ended {why} without [DONE] or a finish_reason (truncated) after {} events",
                            acc.chunk_ns.len()
                        )),
                    )
                } else if acc.unparseable > 0 {
                    (
                        Some("parse"),
                        Some(format!(
                            "{} event(s) not valid JSON, first: {}",
                            acc.unparseable,
                            acc.first_unparseable.as_deref().unwrap_or("")
                        )),
                    )
                } else {
                    (None, None)
                }
            }
        };
        rec.error_kind = kind.map(str::to_string);
        rec.error_msg = msg;
        let usage = acc.counter.last_usage;
        if let Some(p) = usage.and_then(|u| u.prompt_tokens) {
            rec.prompt_tokens = i32::try_from(p).ok();
        }
        let from_usage = usage.and_then(|u| u.completion_tokens);
        let (n, source) = match (from_usage, tokenizer) {
            (Some(n), _) => (Some(n), "usage"),
            (None, Some(t)) => match t.count(&acc.text) {
                Ok(n) => (i64::try_from(n).ok(), "tokenizer"),
                Err(_) => (Some(acc.counter.total), "chunks"),
            },
            (None, None) => (Some(acc.counter.total), "chunks"),
        };
        rec.output_tokens = n.and_then(|n| i32::try_from(n).ok());
        rec.token_source = Some(source.to_string());
        rec.chunk_ns = acc.chunk_ns;
        rec.chunk_tokens = acc.chunk_tokens;
        if let Some(u) = from_usage {
            drop_leading_excess(&mut rec.chunk_tokens, u);
        }
        rec.finish_reason = acc.finish_reason;
        if let Some(m) = acc.model {
            rec.model = Some(m);
        }
        if store_output {
            rec.output_text = Some(acc.text);
        }
    }
}

/// Reconciles per-event token counts with the server's usage when the events claim more tokens
/// than were generated. The excess is taken to lead the stream and zeroed there, so TTFT stops
/// at the first generated token: an engine that echoes the prompt sends it first
/// (`transformers serve`'s chat route streams the templated prompt as two content events before
/// generating; see docs/engines.md). Under continuous usage the per-event counts already come
/// from the server and agree with its total, so nothing changes; fewer event tokens than usage
/// (multi-token events without per-event usage) is left alone.
fn drop_leading_excess(tokens: &mut [i32], usage_tokens: i64) {
    let claimed: i64 = tokens.iter().map(|&t| i64::from(t)).sum();
    let mut excess = claimed - usage_tokens;
    for t in tokens.iter_mut() {
        if excess <= 0 {
            break;
        }
        let cut = i64::from(*t).min(excess);
        *t -= cut as i32;
        excess -= cut;
    }
}

impl Acc {
    fn on_event(&mut self, ev: SseEvent<'_>) {
        if self.done || self.error.is_some() {
            return;
        }
        match ev.body {
            SseBody::Comment => self.keepalives += 1,
            SseBody::Unknown { field, value } => {
                // llama.cpp: `error: {"error": {...}}`; other unknown fields carry nothing we use.
                if field == b"error" {
                    let c = classify(value);
                    self.error = Some(
                        c.error
                            .unwrap_or_else(|| String::from_utf8_lossy(value).into_owned()),
                    );
                }
            }
            SseBody::Data { data, event } => {
                let c = classify(data);
                let kind = c.kind.unwrap_or(EventKind::Empty);
                if event == Some(b"error") && kind != EventKind::Done {
                    self.error = Some(
                        c.error
                            .clone()
                            .unwrap_or_else(|| String::from_utf8_lossy(data).into_owned()),
                    );
                    return;
                }
                match kind {
                    EventKind::Done => {
                        self.done = true;
                        self.done_t_ns = Some(ev.t_ns);
                    }
                    EventKind::Error => {
                        self.error = Some(c.error.unwrap_or_else(|| "error".into()));
                    }
                    EventKind::Unparseable => {
                        self.unparseable += 1;
                        if self.first_unparseable.is_none() {
                            self.first_unparseable =
                                Some(truncate(&String::from_utf8_lossy(data), 200));
                        }
                        self.chunk_ns.push(ev.t_ns);
                        self.chunk_tokens.push(0);
                    }
                    _ => {
                        let n = self.counter.tokens(&c);
                        self.chunk_ns.push(ev.t_ns);
                        self.chunk_tokens.push(n);
                        if self.keep_text
                            && let Some(t) = &c.text
                        {
                            self.text.push_str(t);
                        }
                        if let Some(f) = c.finish_reason {
                            self.finish_reason = Some(f.into_owned());
                        }
                        if self.model.is_none()
                            && let Some(m) = c.model
                        {
                            self.model = Some(m.into_owned());
                        }
                    }
                }
            }
        }
    }
}
