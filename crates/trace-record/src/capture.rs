//! What the recording proxy learns from one exchange: the route ([`Route`]), the request body's
//! model, prompt and output cap ([`RequestInfo`]), and the response's chunks, tokens, usage and
//! errors ([`Capture`]). The response accounting itself is trace-client's
//! [`StreamState`], the one `trace replay` uses, fed a copy of the forwarded bytes, so recorded
//! and replayed rows count tokens alike; this file owns only what a proxy adds: the estimate of
//! the prompt length, error-status bodies, and the bounds on what is kept.

use serde_json::Value;
use trace_client::{Prompt, StreamState, classify, prompt_hash};
use trace_format::{ErrorKind, TraceRecord};

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
    /// TGI `POST /generate_stream`
    Tgi,
    /// Triton `POST /v2/models/{model}/generate_stream`
    Triton,
    /// SGLang `POST /generate`
    Sglang,
    /// OpenAI Responses `POST .../responses`
    Responses,
    /// Anthropic Messages `POST .../messages`
    Messages,
    /// The route given to `trace record --custom-path`, read at its `--text-field`.
    Custom,
}

impl Route {
    /// The route of a request, if it is a generation route that is recorded.
    pub fn of(method: &hyper::Method, path: &str, custom: Option<&str>) -> Option<Self> {
        if method != hyper::Method::POST {
            return None;
        }
        let path = path.trim_end_matches('/');
        if custom.is_some_and(|c| c.trim_end_matches('/') == path) {
            Some(Self::Custom)
        } else if path.ends_with("/chat/completions") {
            Some(Self::Chat)
        } else if path.ends_with("/completions") {
            Some(Self::Completions)
        } else if path.ends_with("/v1/responses") {
            Some(Self::Responses)
        } else if path.ends_with("/v1/messages") {
            Some(Self::Messages)
        } else if path.starts_with("/v2/models/") && path.ends_with("/generate_stream") {
            Some(Self::Triton)
        } else if path == "/generate_stream" {
            Some(Self::Tgi)
        } else if path == "/generate" {
            Some(Self::Sglang)
        } else {
            None
        }
    }

    /// The protocol, as trace-client names and reads it.
    pub fn endpoint(self) -> trace_client::Endpoint {
        use trace_client::Endpoint as E;
        match self {
            Self::Chat => E::Chat,
            Self::Completions => E::Completions,
            Self::Tgi => E::Tgi,
            Self::Triton => E::Triton,
            Self::Sglang => E::Sglang,
            Self::Responses => E::Responses,
            Self::Messages => E::Messages,
            Self::Custom => E::Custom,
        }
    }

    /// The `endpoint` column value (the same strings trace-client writes).
    pub fn as_str(self) -> &'static str {
        self.endpoint().as_str()
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

/// The text of chat-style messages: each one's content (its text parts, for a list of parts),
/// joined with `\n`; a single user message is its content.
fn chat_text(msgs: &[Value]) -> Prompt {
    let texts: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m.get("content") {
            Some(Value::String(s)) => Some(s.clone()),
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
}

impl RequestInfo {
    /// Parses a request body of a route.
    pub fn parse(route: Route, body: &[u8]) -> Self {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let native_max = ["parameters", "sampling_params"]
            .iter()
            .find_map(|k| v.get(*k)?.get("max_new_tokens")?.as_i64());
        let max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_i64))
            .or(native_max)
            .and_then(|n| i32::try_from(n).ok());
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(|s| Prompt::Text(s.into()))
        };
        let prompt = match route {
            Route::Responses => match v.get("input") {
                Some(Value::String(s)) => Some(Prompt::Text(s.clone())),
                Some(Value::Array(items)) => Some(chat_text(items)),
                _ => None,
            },
            // A template's body: where the prompt sits is the template's business.
            Route::Custom => None,
            Route::Tgi => text("inputs"),
            Route::Triton => text("text_input"),
            Route::Sglang => text("text").or_else(|| {
                v.get("input_ids").and_then(Value::as_array).map(|ids| {
                    Prompt::TokenIds(
                        ids.iter()
                            .filter_map(|i| i.as_u64().and_then(|n| u32::try_from(n).ok()))
                            .collect(),
                    )
                })
            }),
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
            Route::Chat | Route::Messages => v
                .get("messages")
                .and_then(Value::as_array)
                .map(|m| chat_text(m)),
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
                rec.prompt = Some(p.stored());
            }
        }
    }

    /// Prompt length when the server reports no usage: the whitespace word count (what the
    /// simulator counts) or the number of token ids. An estimate for real tokenizers.
    fn estimated_prompt_tokens(&self) -> Option<i32> {
        let n = match self.prompt.as_ref()? {
            Prompt::Text(s) => s.split_whitespace().count(),
            Prompt::Chat(m) => m.iter().map(|m| m.content.split_whitespace().count()).sum(),
            Prompt::TokenIds(ids) => ids.len(),
        };
        i32::try_from(n).ok()
    }
}

#[derive(Debug)]
enum Mode {
    /// `text/event-stream` with a 2xx status: fed to the stream state read by read.
    Sse,
    /// A 2xx body of another type: kept, and fed whole at the end as arriving at its last read.
    Json {
        body: Vec<u8>,
        last_t_ns: Option<i64>,
    },
    /// An error status: the body's head is kept for the message.
    Error { status: u16, body: Vec<u8> },
}

/// Response accounting for one exchange: fed a copy of every forwarded read. 2xx bodies go
/// through trace-client's [`StreamState`], the accounting `trace replay` uses, so a recorded row
/// and its replay count tokens, chunks and errors alike; only error statuses are read here.
#[derive(Debug)]
pub struct Capture {
    mode: Mode,
    state: StreamState,
}

impl Capture {
    /// A capture for a response with this status and `Content-Type`; `keep_text` keeps the
    /// output text (for `store_outputs`).
    pub fn new(
        route: Route,
        text_field: Option<&str>,
        status: u16,
        content_type: Option<&str>,
        keep_text: bool,
    ) -> Self {
        let ct = content_type.unwrap_or("");
        let mode = if !(200..300).contains(&status) {
            Mode::Error {
                status,
                body: Vec::new(),
            }
        } else if ct.contains("event-stream") {
            Mode::Sse
        } else {
            Mode::Json {
                body: Vec::new(),
                last_t_ns: None,
            }
        };
        Self {
            mode,
            state: StreamState::for_route(keep_text, route.endpoint(), text_field),
        }
    }

    /// Feeds one upstream read that arrived at `t_ns`.
    pub fn feed(&mut self, bytes: &[u8], t_ns: i64) {
        match &mut self.mode {
            Mode::Sse => self.state.feed(bytes, t_ns),
            Mode::Json { body, last_t_ns } => {
                *last_t_ns = Some(t_ns);
                keep(body, bytes);
            }
            Mode::Error { body, .. } => keep(body, bytes),
        }
    }

    /// Fills the response columns. `failure` is a transport-level outcome (error_kind, message)
    /// that overrides what the body says; `end_ns` is when the exchange ended.
    pub fn finish_into(
        self,
        rec: &mut TraceRecord,
        info: &RequestInfo,
        failure: Option<(ErrorKind, String)>,
        end_ns: i64,
        store_output: bool,
    ) {
        let Self { mode, mut state } = self;
        let failure = match mode {
            Mode::Sse => failure,
            // Parsed even after a failure, as far as it was read: a client that hung up after a
            // whole body still leaves its tokens in the row.
            Mode::Json { body, last_t_ns } => {
                state.feed_json(&body, last_t_ns.unwrap_or(end_ns));
                failure
            }
            Mode::Error { status, body } => failure.or_else(|| Some(http_error(status, &body))),
        };
        // The server's usage replaces this estimate when it reports one.
        rec.prompt_tokens = info.estimated_prompt_tokens();
        state.finish_into(rec, end_ns, failure, None, store_output);
        if let Some(m) = &mut rec.error_msg {
            *m = cut(m);
        }
    }
}

fn keep(buf: &mut Vec<u8>, bytes: &[u8]) {
    let room = MAX_KEPT_BODY.saturating_sub(buf.len());
    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// `http_4xx` / `http_5xx` with the message of an error body (its raw text if it has none).
fn http_error(status: u16, body: &[u8]) -> (ErrorKind, String) {
    let kind = ErrorKind::of_status(status);
    let msg = classify(body)
        .error
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    (kind, format!("HTTP {status}: {msg}"))
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
        assert_eq!(
            Route::of(&post, "/v1/chat/completions", None),
            Some(Route::Chat)
        );
        assert_eq!(
            Route::of(&post, "/v1/completions/", None),
            Some(Route::Completions)
        );
        assert_eq!(
            Route::of(&hyper::Method::GET, "/v1/completions", None),
            None
        );
        assert_eq!(Route::of(&post, "/v1/embeddings", None), None);
        assert_eq!(
            Route::of(&post, "/x/gen/", Some("/x/gen")),
            Some(Route::Custom)
        );
        assert_eq!(Route::of(&post, "/generate_stream", None), Some(Route::Tgi));
        assert_eq!(Route::of(&post, "/generate", None), Some(Route::Sglang));
        assert_eq!(
            Route::of(&post, "/v2/models/ensemble/generate_stream", None),
            Some(Route::Triton)
        );
        let info = RequestInfo::parse(
            Route::Tgi,
            br#"{"inputs":"a b","parameters":{"max_new_tokens":9}}"#,
        );
        assert_eq!(info.prompt, Some(Prompt::Text("a b".into())));
        assert_eq!(info.max_tokens, Some(9));
        let info = RequestInfo::parse(
            Route::Sglang,
            br#"{"input_ids":[1,2,3],"sampling_params":{"max_new_tokens":4}}"#,
        );
        assert_eq!(info.prompt, Some(Prompt::TokenIds(vec![1, 2, 3])));
        assert_eq!(info.max_tokens, Some(4));
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
        let mut c = Capture::new(Route::Chat, None, 200, Some("text/event-stream"), true);
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

    /// transformers serve echoes the templated prompt as two content events before generating
    /// (docs/engines.md); the usage shows it. As in trace-client's
    /// `prompt_echo_before_generation_is_not_a_token`, the echo gets 0 tokens, so TTFT stops at
    /// the first generated token.
    #[test]
    fn prompt_echo_is_not_a_token() {
        let content = |s: &str| {
            format!(
                "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{s}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
            )
        };
        const N: i32 = 3;
        let mut events = vec![
            (
                10,
                "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n"
                    .to_string(),
            ),
            (11, content("<|im_start|> user w1 w2 w3")),
            (12, content(" <|im_start|> assistant")),
        ];
        for i in 0..N {
            events.push((1_000 + 10 * i64::from(i), content(&format!(" w{i}"))));
        }
        // Usage on the finish event and no [DONE], as transformers serve sends it.
        events.push((
            1_100,
            format!(
                "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"length\"}}],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":{N},\"total_tokens\":{}}}}}\n\n",
                9 + N
            ),
        ));
        let mut c = Capture::new(Route::Chat, None, 200, Some("text/event-stream"), false);
        for (t, ev) in &events {
            c.feed(ev.as_bytes(), *t);
        }
        let mut rec = TraceRecord::default();
        c.finish_into(&mut rec, &RequestInfo::default(), None, 1_200, false);
        assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
        assert_eq!(rec.chunk_tokens, vec![0, 0, 0, 1, 1, 1, 0]);
        assert_eq!(rec.output_tokens, Some(N));
        assert_eq!(rec.prompt_tokens, Some(9));
        let first_token = rec
            .chunk_tokens
            .iter()
            .position(|&n| n > 0)
            .map(|i| rec.chunk_ns[i]);
        assert_eq!(
            first_token,
            Some(1_000),
            "TTFT at the first generated token"
        );
        assert_eq!(rec.end_ns, Some(1_200), "no [DONE]: the exchange's end");
    }

    #[test]
    fn json_body_is_one_chunk_at_its_last_read() {
        let body = br#"{"id":"c","object":"chat.completion","model":"served","choices":[{"index":0,"message":{"role":"assistant","content":"w1 w2"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let mut c = Capture::new(Route::Chat, None, 200, Some("application/json"), true);
        let (x, y) = body.split_at(40);
        c.feed(x, 10);
        c.feed(y, 20);
        let mut rec = TraceRecord::default();
        c.finish_into(&mut rec, &RequestInfo::default(), None, 30, true);
        assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
        assert_eq!((rec.chunk_ns, rec.chunk_tokens), (vec![20], vec![2]));
        assert_eq!((rec.prompt_tokens, rec.output_tokens), (Some(3), Some(2)));
        assert_eq!(rec.output_text.as_deref(), Some("w1 w2"));
        assert_eq!(rec.model.as_deref(), Some("served"));
        assert_eq!(rec.end_ns, Some(30));

        let mut c = Capture::new(Route::Chat, None, 200, Some("application/json"), false);
        c.feed(b"{cut", 10);
        let mut rec = TraceRecord::default();
        let info = RequestInfo::parse(Route::Completions, br#"{"prompt":"a b c"}"#);
        c.finish_into(&mut rec, &info, None, 30, false);
        assert_eq!(
            rec.error_kind.as_deref(),
            Some("parse"),
            "{:?}",
            rec.error_msg
        );
        assert_eq!(rec.prompt_tokens, Some(3), "estimated without usage");
    }

    #[test]
    fn error_status_and_truncated_stream() {
        let mut c = Capture::new(Route::Chat, None, 500, Some("application/json"), false);
        c.feed(br#"{"error":{"message":"boom"}}"#, 5);
        let mut rec = TraceRecord::default();
        c.finish_into(&mut rec, &RequestInfo::default(), None, 9, false);
        assert_eq!(rec.error_kind.as_deref(), Some("http_5xx"));
        assert!(rec.error_msg.as_deref().unwrap_or("").contains("boom"));

        let mut c = Capture::new(Route::Chat, None, 200, Some("text/event-stream"), false);
        c.feed(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
            5,
        );
        let mut rec = TraceRecord::default();
        c.finish_into(&mut rec, &RequestInfo::default(), None, 9, false);
        assert_eq!(rec.error_kind.as_deref(), Some("stream"));
        assert_eq!(rec.end_ns, Some(9));

        let c = Capture::new(Route::Chat, None, 200, Some("text/event-stream"), false);
        let mut rec = TraceRecord::default();
        c.finish_into(
            &mut rec,
            &RequestInfo::default(),
            Some((ErrorKind::Cancelled, "client disconnected".into())),
            9,
            false,
        );
        assert_eq!(rec.error_kind.as_deref(), Some("cancelled"));
    }
}
