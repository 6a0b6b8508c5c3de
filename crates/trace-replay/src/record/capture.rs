//! What the recording proxy learns from one exchange: the request body's model, prompt and
//! output cap ([`RequestInfo`]), and the response's chunks, tokens, usage and errors
//! ([`Capture`]), parsed from a copy of the forwarded bytes with trace-client's SSE parser and
//! event classifier (the same code `trace replay` uses, so recorded and replayed rows count
//! tokens alike).

use serde_json::Value;
use trace_client::sse::{SseBody, SseParser};
use trace_client::{EventKind, Prompt, TokenCounter, classify, prompt_hash};
use trace_format::TraceRecord;

/// Error bodies and non-streaming JSON bodies are kept up to this size for parsing.
const MAX_KEPT_BODY: usize = 16 << 20;
/// Error messages are cut to this many characters.
const MAX_ERROR_MSG: usize = 500;

/// The route kinds that become rows; everything else is forwarded without a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST .../chat/completions`
    Chat,
    /// `POST .../completions`
    Completions,
}

impl Route {
    /// The route of a request, if it is a generation route that is recorded.
    pub fn of(method: &hyper::Method, path: &str) -> Option<Self> {
        if method != hyper::Method::POST {
            return None;
        }
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(Self::Chat)
        } else if path.ends_with("/completions") {
            Some(Self::Completions)
        } else {
            None
        }
    }

    /// The `endpoint` column value (the same strings trace-client writes).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => trace_client::Endpoint::Chat.as_str(),
            Self::Completions => trace_client::Endpoint::Completions.as_str(),
        }
    }
}

/// What the request body says, parsed best-effort: a body that is not JSON leaves all `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestInfo {
    /// `model`.
    pub model: Option<String>,
    /// The prompt as trace-client would send it: the completions `prompt`, or the chat
    /// messages' text contents joined with `\n` (a single user message is its content).
    pub prompt: Option<Prompt>,
    /// `max_tokens`, else `max_completion_tokens`.
    pub max_tokens: Option<i32>,
}

impl RequestInfo {
    /// Parses a request body of a route.
    pub fn parse(route: Route, body: &[u8]) -> Self {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let max_tokens = ["max_tokens", "max_completion_tokens"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_i64))
            .and_then(|n| i32::try_from(n).ok());
        let prompt = match route {
            Route::Completions => match v.get("prompt") {
                Some(Value::String(s)) => Some(Prompt::Text(s.clone())),
                Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
                    Some(Prompt::TokenIds(
                        items
                            .iter()
                            .filter_map(|i| i.as_u64().and_then(|n| u32::try_from(n).ok()))
                            .collect(),
                    ))
                }
                Some(Value::Array(items)) => Some(Prompt::Text(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )),
                _ => None,
            },
            Route::Chat => v.get("messages").and_then(Value::as_array).map(|msgs| {
                let texts: Vec<String> = msgs
                    .iter()
                    .filter_map(|m| match m.get("content") {
                        Some(Value::String(s)) => Some(s.clone()),
                        // Content parts: keep the text parts.
                        Some(Value::Array(parts)) => Some(
                            parts
                                .iter()
                                .filter_map(|p| p.get("text").and_then(Value::as_str))
                                .collect::<Vec<_>>()
                                .join("\n"),
                        ),
                        _ => None,
                    })
                    .collect();
                Prompt::Text(texts.join("\n"))
            }),
        };
        Self {
            model: v.get("model").and_then(Value::as_str).map(str::to_string),
            prompt,
            max_tokens,
        }
    }

    /// Fills the request-side columns of a row. The prompt text is stored only with
    /// `store_prompt` (token-id prompts as a JSON array, as trace-client stores them).
    pub fn fill(&self, route: Route, rec: &mut TraceRecord, store_prompt: bool) {
        rec.endpoint = Some(route.as_str().to_string());
        rec.model = self.model.clone();
        rec.max_tokens = self.max_tokens;
        if let Some(p) = &self.prompt {
            rec.prompt_hash = Some(prompt_hash(p));
            if store_prompt {
                rec.prompt = Some(match p {
                    Prompt::Text(s) => s.clone(),
                    Prompt::TokenIds(ids) => serde_json::to_string(ids).unwrap_or_default(),
                });
            }
        }
    }

    /// Prompt length when the server reports no usage: the whitespace word count (what the
    /// simulator counts) or the number of token ids. An estimate for real tokenizers.
    fn estimated_prompt_tokens(&self) -> Option<i32> {
        let n = match self.prompt.as_ref()? {
            Prompt::Text(s) => s.split_whitespace().count(),
            Prompt::TokenIds(ids) => ids.len(),
        };
        i32::try_from(n).ok()
    }
}

#[derive(Debug)]
enum Mode {
    /// `text/event-stream` with a 2xx status: parsed incrementally.
    Sse(Box<SseParser>),
    /// A 2xx JSON body: parsed once at the end.
    Json(Vec<u8>),
    /// An error status: the body's head is kept for the message.
    Error(Vec<u8>),
}

/// Response accounting for one exchange: fed a copy of every forwarded read.
#[derive(Debug)]
pub struct Capture {
    mode: Mode,
    status: u16,
    keep_text: bool,
    counter: TokenCounter,
    chunk_ns: Vec<i64>,
    chunk_tokens: Vec<i32>,
    text: String,
    finish_reason: Option<String>,
    model: Option<String>,
    done_t_ns: Option<i64>,
    last_t_ns: Option<i64>,
    error: Option<String>,
    unparseable: u32,
}

impl Capture {
    /// A capture for a response with this status and `Content-Type`.
    pub fn new(status: u16, content_type: Option<&str>, keep_text: bool) -> Self {
        let ct = content_type.unwrap_or("");
        let mode = if !(200..300).contains(&status) {
            Mode::Error(Vec::new())
        } else if ct.contains("event-stream") {
            Mode::Sse(Box::default())
        } else {
            Mode::Json(Vec::new())
        };
        Self {
            mode,
            status,
            keep_text,
            counter: TokenCounter::new(),
            chunk_ns: Vec::new(),
            chunk_tokens: Vec::new(),
            text: String::new(),
            finish_reason: None,
            model: None,
            done_t_ns: None,
            last_t_ns: None,
            error: None,
            unparseable: 0,
        }
    }

    /// Feeds one upstream read that arrived at `t_ns`.
    pub fn feed(&mut self, bytes: &[u8], t_ns: i64) {
        self.last_t_ns = Some(t_ns);
        match &mut self.mode {
            Mode::Json(buf) | Mode::Error(buf) => {
                let room = MAX_KEPT_BODY.saturating_sub(buf.len());
                buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            Mode::Sse(parser) => {
                let mut parser = std::mem::take(parser);
                parser.feed(bytes, t_ns, |ev| match ev.body {
                    SseBody::Data { data, .. } => self.on_data(data, ev.t_ns),
                    SseBody::Unknown { field, value } if field == b"error" => {
                        self.error
                            .get_or_insert_with(|| String::from_utf8_lossy(value).into_owned());
                    }
                    _ => {}
                });
                self.mode = Mode::Sse(parser);
            }
        }
    }

    fn on_data(&mut self, data: &[u8], t_ns: i64) {
        if self.done_t_ns.is_some() {
            return;
        }
        let c = classify(data);
        match c.kind.unwrap_or(EventKind::Empty) {
            EventKind::Done => self.done_t_ns = Some(t_ns),
            EventKind::Error => {
                self.error
                    .get_or_insert_with(|| c.error.clone().unwrap_or_else(|| "error".into()));
            }
            EventKind::Unparseable => {
                self.unparseable += 1;
                self.chunk_ns.push(t_ns);
                self.chunk_tokens.push(0);
            }
            _ => {
                let n = self.counter.tokens(&c);
                self.chunk_ns.push(t_ns);
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

    /// Fills the response columns. `failure` is a transport-level outcome (error_kind, message)
    /// that overrides what the body says; `end_ns` is when the exchange ended.
    pub fn finish_into(
        mut self,
        rec: &mut TraceRecord,
        info: &RequestInfo,
        failure: Option<(&'static str, String)>,
        end_ns: i64,
        store_output: bool,
    ) {
        let mut body_error: Option<(&'static str, String)> = None;
        match std::mem::replace(&mut self.mode, Mode::Json(Vec::new())) {
            Mode::Sse(mut parser) => {
                let partial = parser.finish();
                if let Some(e) = &self.error {
                    body_error = Some(("stream", format!("error event after HTTP 200: {e}")));
                } else if self.done_t_ns.is_none() && self.finish_reason.is_none() {
                    let why = if partial {
                        "in the middle of an event"
                    } else {
                        "between events"
                    };
                    body_error = Some((
                        "stream",
                        format!(
                            "stream ended {why} without [DONE] or a finish_reason after {} events",
                            self.chunk_ns.len()
                        ),
                    ));
                } else if self.unparseable > 0 {
                    body_error = Some((
                        "parse",
                        format!("{} event(s) not valid JSON", self.unparseable),
                    ));
                }
            }
            Mode::Json(buf) => {
                let c = classify(&buf);
                match c.kind {
                    Some(EventKind::Error) => {
                        body_error = Some(("stream", c.error.unwrap_or_else(|| "error".into())));
                    }
                    Some(EventKind::Unparseable) | None => {
                        body_error = Some(("parse", "response body is not valid JSON".into()));
                    }
                    Some(kind) => {
                        let n = c
                            .usage
                            .and_then(|u| u.completion_tokens)
                            .unwrap_or(i64::from(kind == EventKind::Content));
                        self.counter.last_usage = c.usage;
                        self.counter.total = n;
                        self.chunk_ns.push(self.last_t_ns.unwrap_or(end_ns));
                        self.chunk_tokens.push(i32::try_from(n).unwrap_or(i32::MAX));
                        if self.keep_text
                            && let Some(t) = &c.text
                        {
                            self.text.push_str(t);
                        }
                        self.finish_reason = c.finish_reason.map(|f| f.into_owned());
                        self.model = c.model.map(|m| m.into_owned());
                    }
                }
            }
            Mode::Error(buf) => {
                let kind = if (400..500).contains(&self.status) {
                    "http_4xx"
                } else {
                    "http_5xx"
                };
                let c = classify(&buf);
                let msg = c
                    .error
                    .unwrap_or_else(|| String::from_utf8_lossy(&buf).trim().to_string());
                body_error = Some((kind, format!("HTTP {}: {}", self.status, cut(&msg))));
            }
        }
        let error = failure.or(body_error);
        rec.end_ns = Some(match (&error, self.done_t_ns) {
            (None, Some(t)) => t,
            _ => end_ns,
        });
        let usage = self.counter.last_usage;
        rec.prompt_tokens = usage
            .and_then(|u| u.prompt_tokens)
            .and_then(|p| i32::try_from(p).ok())
            .or_else(|| info.estimated_prompt_tokens());
        let (n, source) = match usage.and_then(|u| u.completion_tokens) {
            Some(n) => (n, "usage"),
            None => (self.counter.total, "chunks"),
        };
        rec.output_tokens = i32::try_from(n).ok();
        rec.token_source = Some(source.to_string());
        rec.chunk_ns = self.chunk_ns;
        rec.chunk_tokens = self.chunk_tokens;
        rec.finish_reason = self.finish_reason;
        if let Some(m) = self.model {
            rec.model = Some(m);
        }
        if let Some((kind, msg)) = error {
            rec.error_kind = Some(kind.to_string());
            rec.error_msg = Some(cut(&msg));
        }
        if store_output {
            rec.output_text = Some(self.text);
        }
    }
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_MSG) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = hyper::Method::POST;
        assert_eq!(Route::of(&post, "/v1/chat/completions"), Some(Route::Chat));
        assert_eq!(
            Route::of(&post, "/v1/completions/"),
            Some(Route::Completions)
        );
        assert_eq!(Route::of(&hyper::Method::GET, "/v1/completions"), None);
        assert_eq!(Route::of(&post, "/v1/embeddings"), None);
    }

    #[test]
    fn chat_prompt_hash_pairs_with_trace_client() {
        let body =
            br#"{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":7}"#;
        let info = RequestInfo::parse(Route::Chat, body);
        let mut rec = TraceRecord::default();
        info.fill(Route::Chat, &mut rec, false);
        assert_eq!(
            rec.prompt_hash,
            Some(prompt_hash(&Prompt::Text("hello there".into())))
        );
        assert_eq!(rec.max_tokens, Some(7));
        assert_eq!(rec.model.as_deref(), Some("m"));
        assert_eq!(rec.prompt, None, "prompt stored only when asked");
        info.fill(Route::Chat, &mut rec, true);
        assert_eq!(rec.prompt.as_deref(), Some("hello there"));
    }

    #[test]
    fn completions_token_ids_and_bad_json() {
        let info = RequestInfo::parse(
            Route::Completions,
            br#"{"prompt":[1,2,3],"max_completion_tokens":4}"#,
        );
        assert_eq!(info.prompt, Some(Prompt::TokenIds(vec![1, 2, 3])));
        assert_eq!(info.max_tokens, Some(4));
        assert_eq!(info.estimated_prompt_tokens(), Some(3));
        assert_eq!(
            RequestInfo::parse(Route::Chat, b"not json"),
            RequestInfo::default()
        );
    }

    #[test]
    fn sse_split_across_reads_counts_chunks_and_usage() {
        let mut c = Capture::new(200, Some("text/event-stream"), true);
        let ev = |t: &str| {
            format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}},\"finish_reason\":null}}]}}\n\n"
            )
        };
        let s = format!(
            "{}{}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":2}}}}\n\ndata: [DONE]\n\n",
            ev("a"),
            ev("b")
        );
        let (x, y) = s.as_bytes().split_at(30);
        c.feed(x, 10);
        c.feed(y, 20);
        let mut rec = TraceRecord::default();
        c.finish_into(&mut rec, &RequestInfo::default(), None, 99, true);
        assert_eq!(rec.chunk_ns.len(), rec.chunk_tokens.len());
        assert_eq!(&rec.chunk_tokens[..2], &[1, 1]);
        assert_eq!(rec.chunk_ns[0], 20, "event completed by the second read");
        assert_eq!((rec.prompt_tokens, rec.output_tokens), (Some(3), Some(2)));
        assert_eq!(rec.token_source.as_deref(), Some("usage"));
        assert_eq!(rec.end_ns, Some(20), "a complete stream ends at [DONE]");
        assert_eq!(rec.output_text.as_deref(), Some("ab"));
        assert_eq!(rec.error_kind, None);
    }

    #[test]
    fn error_status_and_truncated_stream() {
        let mut c = Capture::new(500, Some("application/json"), false);
        c.feed(br#"{"error":{"message":"boom"}}"#, 5);
        let mut rec = TraceRecord::default();
        c.finish_into(&mut rec, &RequestInfo::default(), None, 9, false);
        assert_eq!(rec.error_kind.as_deref(), Some("http_5xx"));
        assert!(rec.error_msg.as_deref().unwrap_or("").contains("boom"));

        let mut c = Capture::new(200, Some("text/event-stream"), false);
        c.feed(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
            5,
        );
        let mut rec = TraceRecord::default();
        c.finish_into(&mut rec, &RequestInfo::default(), None, 9, false);
        assert_eq!(rec.error_kind.as_deref(), Some("stream"));
        assert_eq!(rec.end_ns, Some(9));

        let c = Capture::new(200, Some("text/event-stream"), false);
        let mut rec = TraceRecord::default();
        c.finish_into(
            &mut rec,
            &RequestInfo::default(),
            Some(("cancelled", "client disconnected".into())),
            9,
            false,
        );
        assert_eq!(rec.error_kind.as_deref(), Some("cancelled"));
    }
}
