//! Response accounting: [`StreamState`] turns the reads of one response (SSE events, or a whole
//! JSON body) into the row's response columns: per-event arrival times and token counts, usage,
//! finish reason, and the error kind when the response is an error. Also the server's message
//! from an error body.

use serde_json::Value;
use trace_format::{ErrorKind, TraceRecord};

use crate::classify::{EventKind, TokenCounter, Usage, classify};
use crate::request::{ClientConfig, Endpoint};
use crate::sse::{SseBody, SseEvent, SseParser};
use crate::tokenizer::HfTokenizer;

/// The server's message from an error body, and for a refused field (422, 400 "extra
/// inputs"), which field and why we sent it.
pub(crate) fn http_error_msg(status: u16, body: &[u8], cfg: &ClientConfig) -> String {
    let head = match reqwest::StatusCode::from_u16(status) {
        Ok(s) => format!("HTTP {s}"),
        Err(_) => format!("HTTP {status}"),
    };
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

pub(crate) fn truncate(s: &str, n: usize) -> String {
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
    /// Reasoning tokens of each event (kept in step with `chunk_tokens`).
    chunk_reasoning: Vec<i32>,
    /// Some event carried reasoning.
    any_reasoning: bool,
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
    /// The protocol's shape of events (OpenAI-style unless a native route says otherwise).
    native: Native,
    /// A clean close ends the stream (Triton, custom routes): no `[DONE]` is owed.
    ends_by_close: bool,
}

/// Events that the shared classifier does not read: SGLang's cumulative `/generate` stream,
/// and a custom route's text at a configured path.
#[derive(Debug, Default)]
enum Native {
    #[default]
    None,
    /// SGLang: `text` is everything so far (its length seen is kept), `meta_info` counts.
    Sglang { seen: usize },
    /// The text delta at this path of each event.
    Field(String),
    /// OpenAI Responses: typed events.
    Responses,
    /// Anthropic Messages: typed events.
    Messages,
}

impl StreamState {
    /// A fresh state for the OpenAI routes; `keep_text` accumulates output text (for
    /// `store_output` or a tokenizer).
    pub fn new(keep_text: bool) -> Self {
        Self {
            parser: SseParser::new(),
            acc: Acc {
                keep_text,
                ..Default::default()
            },
        }
    }

    /// A fresh state for `endpoint`'s protocol; `text_field` is the custom route's dotted
    /// path to the text delta.
    pub fn for_route(keep_text: bool, endpoint: Endpoint, text_field: Option<&str>) -> Self {
        let mut s = Self::new(keep_text);
        s.acc.ends_by_close = endpoint.ends_by_close();
        s.acc.native = match endpoint {
            Endpoint::Sglang => Native::Sglang { seen: 0 },
            Endpoint::Responses => Native::Responses,
            Endpoint::Messages => Native::Messages,
            Endpoint::Custom => Native::Field(text_field.unwrap_or("text").to_string()),
            _ => Native::None,
        };
        s
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

    /// How the per-event counts were obtained: `usage`, `timings` or `events` (None before any
    /// content event).
    pub fn event_token_source(&self) -> Option<&'static str> {
        self.acc.counter.source
    }

    /// `:` keep-alive comments seen.
    pub fn keepalives(&self) -> u64 {
        self.acc.keepalives
    }

    /// An error event was seen: the request is over.
    pub fn has_error(&self) -> bool {
        self.acc.error.is_some()
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
                acc.push_reasoning(c.reasoning, i32::try_from(n).unwrap_or(i32::MAX));
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
        failure: Option<(ErrorKind, String)>,
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
                        Some(ErrorKind::Stream),
                        Some(format!("error event after HTTP 200: {e}")),
                    )
                } else if !acc.done && acc.finish_reason.is_none() && !acc.ends_by_close {
                    let why = if partial {
                        "in the middle of an event"
                    } else {
                        "between events"
                    };
                    (
                        Some(ErrorKind::Stream),
                        Some(format!(
                            "stream ended {why} without [DONE] or a finish_reason (truncated) after {} events",
                            acc.chunk_ns.len()
                        )),
                    )
                } else if acc.unparseable > 0 {
                    (
                        Some(ErrorKind::Parse),
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
        rec.error_kind = kind;
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
        rec.cached_tokens = usage
            .and_then(|u| u.cached_tokens)
            .and_then(|n| i32::try_from(n).ok());
        if let Some(u) = from_usage {
            drop_leading_excess(&mut rec.chunk_tokens, u);
            // Fewer per-event tokens than the server generated: events merged without a
            // per-event count (llama.cpp holds a token that ends mid UTF-8 sequence back into
            // the next event). The row is flagged; the events cannot say which one was merged.
            let events: i64 = rec.chunk_tokens.iter().map(|&t| i64::from(t)).sum();
            rec.event_tokens_gap = (events != u)
                .then(|| i32::try_from(u - events).ok())
                .flatten();
        }
        if acc.any_reasoning {
            // Never more reasoning than tokens (the leading excess may have been zeroed).
            rec.chunk_reasoning = acc
                .chunk_reasoning
                .iter()
                .zip(&rec.chunk_tokens)
                .map(|(&r, &t)| r.min(t))
                .collect();
        }
        rec.reasoning_tokens = usage
            .and_then(|u| u.reasoning_tokens)
            .and_then(|n| i32::try_from(n).ok())
            .or_else(|| {
                acc.any_reasoning
                    .then(|| rec.chunk_reasoning.iter().sum::<i32>())
            });
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
            SseBody::Data { data, .. } if !matches!(self.native, Native::None) => {
                self.on_native(data, ev.t_ns);
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
                        self.chunk_reasoning.push(0);
                    }
                    _ => {
                        let n = self.counter.tokens(&c);
                        self.chunk_ns.push(ev.t_ns);
                        self.chunk_tokens.push(n);
                        self.push_reasoning(c.reasoning, n);
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

impl Acc {
    /// The reasoning share of the event just pushed: all its `n` tokens, or none.
    fn push_reasoning(&mut self, reasoning: bool, n: i32) {
        self.any_reasoning |= reasoning;
        self.chunk_reasoning.push(if reasoning { n } else { 0 });
    }

    /// A Responses or Messages event: its text delta, whether it is reasoning, and whether it
    /// carries a token; usage, finish and end are taken in passing. None: the request is over
    /// (an error event).
    fn typed(&mut self, v: &Value, t_ns: i64) -> Option<(String, bool, bool)> {
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let int = |v: Option<&Value>| v.and_then(Value::as_i64);
        let mut usage = self.counter.last_usage.unwrap_or_default();
        let out = match ty {
            // Responses.
            "response.output_text.delta" | "response.refusal.delta" => {
                (s(v.get("delta")), false, true)
            }
            "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => {
                (s(v.get("delta")), true, true)
            }
            "response.function_call_arguments.delta" => (String::new(), false, true),
            "response.completed" | "response.incomplete" => {
                let r = v.get("response");
                let u = r.and_then(|r| r.get("usage"));
                usage.prompt_tokens = int(u.and_then(|u| u.get("input_tokens")));
                usage.completion_tokens = int(u.and_then(|u| u.get("output_tokens")));
                usage.reasoning_tokens = int(u
                    .and_then(|u| u.get("output_tokens_details"))
                    .and_then(|d| d.get("reasoning_tokens")));
                usage.cached_tokens = int(u
                    .and_then(|u| u.get("input_tokens_details"))
                    .and_then(|d| d.get("cached_tokens")));
                self.counter.last_usage = Some(usage);
                let why = r
                    .and_then(|r| r.get("incomplete_details"))
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str);
                self.finish_reason = Some(match (ty, why) {
                    ("response.completed", _) => "stop".into(),
                    (_, Some("max_output_tokens")) => "length".into(),
                    (_, Some(w)) => w.to_string(),
                    _ => "incomplete".into(),
                });
                self.done = true;
                self.done_t_ns = Some(t_ns);
                (String::new(), false, false)
            }
            "response.failed" => {
                let e = v.get("response").and_then(|r| r.get("error"));
                self.error = Some(
                    e.and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .map_or_else(|| "response.failed".into(), str::to_string),
                );
                return None;
            }
            // Messages.
            "message_start" => {
                let u = v.get("message").and_then(|m| m.get("usage"));
                let input = int(u.and_then(|u| u.get("input_tokens")));
                let read = int(u.and_then(|u| u.get("cache_read_input_tokens")));
                let made = int(u.and_then(|u| u.get("cache_creation_input_tokens")));
                // Anthropic's input_tokens leaves out the cached and cache-writing ones.
                usage.prompt_tokens = input.map(|i| i + read.unwrap_or(0) + made.unwrap_or(0));
                usage.cached_tokens = read;
                self.counter.last_usage = Some(usage);
                (String::new(), false, false)
            }
            "content_block_delta" => {
                let d = v.get("delta");
                match d.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("thinking_delta") => (s(d.and_then(|d| d.get("thinking"))), true, true),
                    Some("text_delta") => (s(d.and_then(|d| d.get("text"))), false, true),
                    // Tool input and signatures: output, not text.
                    Some("input_json_delta") => (String::new(), false, true),
                    _ => (String::new(), false, false),
                }
            }
            "message_delta" => {
                if let Some(n) = int(v.get("usage").and_then(|u| u.get("output_tokens"))) {
                    usage.completion_tokens = Some(n);
                    self.counter.last_usage = Some(usage);
                }
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.finish_reason = Some(match r {
                        "max_tokens" => "length".into(),
                        "end_turn" | "stop_sequence" => "stop".into(),
                        other => other.to_string(),
                    });
                }
                (String::new(), false, false)
            }
            "message_stop" => {
                self.done = true;
                self.done_t_ns = Some(t_ns);
                (String::new(), false, false)
            }
            "error" => {
                self.error = Some(
                    v.get("error")
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .map_or_else(|| v.to_string(), str::to_string),
                );
                return None;
            }
            _ => (String::new(), false, false),
        };
        Some(out)
    }

    /// One event of a native protocol the classifier does not read (see [`Native`]).
    fn on_native(&mut self, data: &[u8], t_ns: i64) {
        if data.trim_ascii() == b"[DONE]" {
            self.done = true;
            self.done_t_ns = Some(t_ns);
            return;
        }
        let v: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(_) => {
                self.unparseable += 1;
                if self.first_unparseable.is_none() {
                    self.first_unparseable = Some(truncate(&String::from_utf8_lossy(data), 200));
                }
                self.chunk_ns.push(t_ns);
                self.chunk_tokens.push(0);
                self.chunk_reasoning.push(0);
                return;
            }
        };
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            self.error = Some(server_message(&v).unwrap_or_else(|| e.to_string()));
            return;
        }
        let mut reasoning = false;
        let (delta, n) = match &mut self.native {
            Native::Responses | Native::Messages => {
                let Some(t) = self.typed(&v, t_ns) else {
                    return;
                };
                reasoning = t.1;
                (t.0, i64::from(t.2))
            }
            Native::None => return,
            Native::Sglang { seen } => {
                let text = v.get("text").and_then(Value::as_str).unwrap_or("");
                // Cumulative: the delta is what is new since the last event.
                let delta = text.get(*seen..).unwrap_or(text).to_string();
                *seen = text.len();
                let meta = v.get("meta_info");
                let count = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_i64);
                let completion = count("completion_tokens");
                let n = match completion {
                    Some(c) => (c - self.counter.total).max(0),
                    None => i64::from(!delta.is_empty()),
                };
                if completion.is_some() || count("prompt_tokens").is_some() {
                    self.counter.last_usage = Some(Usage {
                        prompt_tokens: count("prompt_tokens"),
                        completion_tokens: completion,
                        reasoning_tokens: None,
                        cached_tokens: count("cached_tokens"),
                    });
                }
                if let Some(f) = meta
                    .and_then(|m| m.get("finish_reason"))
                    .and_then(|f| f.get("type").or(Some(f)))
                    .and_then(Value::as_str)
                {
                    self.finish_reason = Some(f.to_string());
                }
                (delta, n)
            }
            Native::Field(path) => {
                let delta = trace_format::json_at(&v, path)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if let Some(u) = v
                    .get("usage")
                    .and_then(|u| serde_json::from_value(u.clone()).ok())
                {
                    self.counter.last_usage = Some(u);
                }
                let n = i64::from(!delta.is_empty());
                (delta, n)
            }
        };
        self.counter.total += n;
        self.counter.source = Some("events");
        self.chunk_ns.push(t_ns);
        self.chunk_tokens.push(i32::try_from(n).unwrap_or(i32::MAX));
        self.push_reasoning(reasoning, i32::try_from(n).unwrap_or(i32::MAX));
        if self.keep_text {
            self.text.push_str(&delta);
        }
    }
}
