//! What a request is: the route ([`Endpoint`]), the client's settings ([`ClientConfig`]), one
//! request ([`RequestSpec`], [`Prompt`]), its pairing hash ([`prompt_hash`]) and its JSON body.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::tokenizer::HfTokenizer;
use crate::url::ServerUrl;

/// Which route (and protocol) to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completions,
    /// TGI's native `POST /generate_stream`: one `token` per event, `details` on the last, no
    /// `[DONE]`.
    Tgi,
    /// Triton's `POST /v2/models/{model}/generate_stream` (TensorRT-LLM's ensemble), the body
    /// from [`ClientConfig::query_template`]: `text_output` deltas, no `[DONE]`, no token
    /// counts (a tokenizer counts the output), the stream ends when the server closes it.
    Triton,
    /// SGLang's native `POST /generate`: cumulative `text` and `meta_info` counts, `[DONE]`.
    Sglang,
    /// Any JSON-over-SSE server: [`ClientConfig::custom_path`], the body from the query
    /// template, the text delta at [`ClientConfig::text_field`]; ends at `[DONE]` or the close.
    Custom,
    /// OpenAI Responses `POST /v1/responses`: typed events (`response.output_text.delta`,
    /// `response.reasoning_text.delta`), usage on `response.completed`.
    Responses,
    /// Anthropic Messages `POST /v1/messages`: `content_block_delta` (text or thinking),
    /// usage on `message_start` and `message_delta`, `message_stop`.
    Messages,
}

impl Endpoint {
    /// The value of the trace's `endpoint` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
            Self::Tgi => "tgi",
            Self::Triton => "triton",
            Self::Sglang => "sglang",
            Self::Custom => "custom",
            Self::Responses => "responses",
            Self::Messages => "messages",
        }
    }

    /// The route's URL on `base`: Triton's names the model, a custom one is `custom_path`.
    pub(crate) fn url(self, base: &ServerUrl, model: &str, custom_path: Option<&str>) -> String {
        match self {
            Self::Chat => base.api("chat/completions"),
            Self::Completions => base.api("completions"),
            Self::Tgi => base.route("generate_stream"),
            Self::Triton => base.route(&format!("v2/models/{model}/generate_stream")),
            Self::Sglang => base.route("generate"),
            Self::Custom => base.route(custom_path.unwrap_or("")),
            Self::Responses => base.api("responses"),
            Self::Messages => base.api("messages"),
        }
    }

    /// The stream may end by the server closing it, with no `[DONE]` and no finish reason.
    pub fn ends_by_close(self) -> bool {
        matches!(self, Self::Triton | Self::Custom)
    }

    /// An OpenAI route (`/v1/...`), where the chat template and usage options apply.
    pub fn is_openai(self) -> bool {
        matches!(self, Self::Chat | Self::Completions)
    }
}

/// A request body template (`--query-template`): JSON in which `%p` is replaced by the prompt,
/// JSON-escaped (so it belongs inside quotes), and `%m` by the request's max tokens (`null`
/// when it has none). Triton's default is [`QueryTemplate::TRITON_DEFAULT`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTemplate(String);

impl QueryTemplate {
    /// What `--endpoint triton` sends without `--query-template`.
    pub const TRITON_DEFAULT: &'static str =
        r#"{"text_input": "%p", "max_tokens": %m, "stream": true}"#;

    /// Checks the template: it holds `%p`, and it is a JSON object once filled.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.contains("%p") {
            return Err("the template has no %p where the prompt goes".into());
        }
        let t = Self(s.to_string());
        let probe = t.render("a \"quoted\" prompt", Some(1));
        match serde_json::from_str::<Value>(&probe) {
            Ok(Value::Object(_)) => Ok(t),
            Ok(_) => Err("the template is not a JSON object once filled".into()),
            Err(e) => Err(format!(
                "the template is not JSON once filled (%p inside quotes, %m a number): {e}"
            )),
        }
    }

    /// The body for `prompt` and `max_tokens`.
    pub fn render(&self, prompt: &str, max_tokens: Option<i32>) -> String {
        let quoted = serde_json::to_string(prompt).unwrap_or_default();
        let escaped = &quoted[1..quoted.len().saturating_sub(1).max(1)];
        let m = max_tokens.map_or_else(|| "null".to_string(), |m| m.to_string());
        self.0.replace("%p", escaped).replace("%m", &m)
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server root (`http://host:8000`) or its `/v1` prefix.
    pub base_url: String,
    /// Route.
    pub endpoint: Endpoint,
    /// Model name sent in each request; None: the caller asks the server ([`crate::list_models`])
    /// before building a [`crate::Client`].
    pub model: Option<String>,
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
    /// Ask llama.cpp for `timings_per_token`: its cumulative `timings.predicted_n` on every
    /// chunk gives exact per-event token counts (it ignores `continuous_usage_stats`). Only for
    /// llama.cpp: other servers may refuse the field.
    pub timings_per_token: bool,
    /// TLS, extra headers, HTTP version.
    pub transport: crate::Transport,
    /// The body template of the triton and custom routes.
    pub query_template: Option<QueryTemplate>,
    /// The custom route's path (`/x`).
    pub custom_path: Option<String>,
    /// Where the custom route's events hold their text delta, dotted (`a.b.c`; a number
    /// indexes an array).
    pub text_field: Option<String>,
}

impl ClientConfig {
    /// Defaults for a base URL and model: chat route, 10 min timeout, continuous usage on.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            endpoint: Endpoint::Chat,
            model: Some(model.into()),
            api_key: None,
            timeout: Duration::from_secs(600),
            idle_timeout: None,
            ignore_eos: false,
            continuous_usage: true,
            store_output: false,
            store_prompt: false,
            extra_body: None,
            tokenizer: None,
            timings_per_token: false,
            transport: crate::Transport::default(),
            query_template: None,
            custom_path: None,
            text_field: None,
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
    /// A conversation (a session's history and its new turn): sent as the message list on the
    /// routes that take one (chat, Responses, Messages), else as its texts joined by blank lines.
    Chat(Vec<Message>),
}

/// Who said a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user (or a tool result handed back by an agent).
    User,
    /// The model's reply.
    Assistant,
}

impl Role {
    /// The role's name in the OpenAI and Anthropic message formats.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a [`Prompt::Chat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Prompt {
    /// The prompt as the `prompt` column stores it: text, a conversation flattened, token ids
    /// as a JSON array.
    pub fn stored(&self) -> String {
        match self {
            Prompt::Text(s) => s.clone(),
            Prompt::TokenIds(ids) => serde_json::to_string(ids).unwrap_or_default(),
            Prompt::Chat(m) => Prompt::flatten(m),
        }
    }

    /// A conversation as one text: the messages' contents joined by blank lines (the prompt of
    /// routes without a message list).
    pub fn flatten(messages: &[Message]) -> String {
        let mut s = String::with_capacity(messages.iter().map(|m| m.content.len() + 2).sum());
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                s.push_str("\n\n");
            }
            s.push_str(&m.content);
        }
        s
    }

    /// The messages of a chat body: a conversation's own, else one user message.
    fn messages_json(&self, text: &dyn Fn() -> Result<String, String>) -> Result<Value, String> {
        Ok(match self {
            Prompt::Chat(m) => Value::Array(
                m.iter()
                    .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
                    .collect(),
            ),
            _ => json!([{ "role": "user", "content": text()? }]),
        })
    }
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
    /// Keep the streamed text in the row's `output_text` even when the client does not store
    /// outputs: a live session's next turn resends it (the caller clears it before writing).
    pub keep_output: bool,
}

/// xxh3 of the prompt: its UTF-8 bytes, or its token ids as little-endian u32s.
pub fn prompt_hash(p: &Prompt) -> u64 {
    match p {
        Prompt::Text(s) => xxhash_rust::xxh3::xxh3_64(s.as_bytes()),
        Prompt::TokenIds(ids) => {
            let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
            xxhash_rust::xxh3::xxh3_64(&bytes)
        }
        Prompt::Chat(m) => xxhash_rust::xxh3::xxh3_64(Prompt::flatten(m).as_bytes()),
    }
}

/// `max_tokens` of a Messages request whose workload sets none (the API requires one).
const MESSAGES_DEFAULT_MAX_TOKENS: i32 = 4096;

/// The JSON body of a streaming request; an error message when it cannot be built (a prompt
/// of token ids without a tokenizer, on a route that takes text).
pub(crate) fn body(
    cfg: &ClientConfig,
    model: &str,
    spec: &RequestSpec,
    tokenizer: Option<&HfTokenizer>,
) -> Result<Vec<u8>, String> {
    let text = || -> Result<String, String> {
        match (&spec.prompt, tokenizer) {
            (Prompt::Text(s), _) => Ok(s.clone()),
            (Prompt::Chat(m), _) => Ok(Prompt::flatten(m)),
            (Prompt::TokenIds(ids), Some(t)) => t
                .decode(ids)
                .map_err(|e| format!("cannot decode prompt token ids: {e}")),
            (Prompt::TokenIds(_), None) => Err(format!(
                "a prompt given as token ids needs a tokenizer on the {} route",
                cfg.endpoint.as_str()
            )),
        }
    };
    let mut b = match cfg.endpoint {
        Endpoint::Chat | Endpoint::Completions => openai_body(cfg, model, spec, &text)?,
        Endpoint::Responses => json!({
            "model": model,
            "input": match &spec.prompt {
                Prompt::Chat(_) => spec.prompt.messages_json(&text)?,
                _ => json!(text()?),
            },
            "max_output_tokens": spec.max_tokens,
            "stream": true,
        }),
        Endpoint::Messages => json!({
            "model": model,
            "messages": spec.prompt.messages_json(&text)?,
            // Required by the Messages API.
            "max_tokens": spec.max_tokens.unwrap_or(MESSAGES_DEFAULT_MAX_TOKENS),
            "stream": true,
        }),
        Endpoint::Tgi => json!({
            "inputs": text()?,
            "parameters": { "max_new_tokens": spec.max_tokens, "details": true },
            "stream": true,
        }),
        Endpoint::Sglang => {
            let mut b = json!({
                "sampling_params": {
                    "max_new_tokens": spec.max_tokens, "ignore_eos": cfg.ignore_eos,
                    "temperature": 0.0,
                },
                "stream": true,
            });
            match &spec.prompt {
                Prompt::TokenIds(ids) => b["input_ids"] = json!(ids),
                Prompt::Text(_) | Prompt::Chat(_) => b["text"] = json!(text()?),
            }
            b
        }
        Endpoint::Triton | Endpoint::Custom => {
            let default;
            let t = match &cfg.query_template {
                Some(t) => t,
                None if cfg.endpoint == Endpoint::Triton => {
                    default = QueryTemplate(QueryTemplate::TRITON_DEFAULT.into());
                    &default
                }
                None => return Err("the custom route needs a query template".into()),
            };
            serde_json::from_str(&t.render(&text()?, spec.max_tokens))
                .map_err(|e| format!("the query template did not give JSON: {e}"))?
        }
    };
    if let (Some(Value::Object(extra)), Value::Object(obj)) = (&cfg.extra_body, &mut b) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&b).map_err(|e| format!("cannot encode request body: {e}"))
}

/// The body of the OpenAI chat and completions routes (without `extra_body`).
fn openai_body(
    cfg: &ClientConfig,
    model: &str,
    spec: &RequestSpec,
    text: &dyn Fn() -> Result<String, String>,
) -> Result<Value, String> {
    let mut b = json!({ "model": model, "stream": true });
    match (cfg.endpoint, &spec.prompt) {
        (Endpoint::Completions, Prompt::TokenIds(ids)) => b["prompt"] = json!(ids),
        (Endpoint::Completions, _) => b["prompt"] = json!(text()?),
        _ => b["messages"] = spec.prompt.messages_json(text)?,
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
    if cfg.timings_per_token {
        b["timings_per_token"] = json!(true);
    }
    Ok(b)
}
