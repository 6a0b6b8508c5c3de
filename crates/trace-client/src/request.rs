//! What a request is: the route ([`Endpoint`]), the client's settings ([`ClientConfig`]), one
//! request ([`RequestSpec`], [`Prompt`]), its pairing hash ([`prompt_hash`]) and its JSON body.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::tokenizer::HfTokenizer;

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

    pub(crate) fn path(self) -> &'static str {
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

/// The JSON body of a streaming request; an error message when it cannot be built (a chat
/// prompt of token ids without a tokenizer).
pub(crate) fn body(
    cfg: &ClientConfig,
    model: &str,
    spec: &RequestSpec,
    tokenizer: Option<&HfTokenizer>,
) -> Result<Vec<u8>, String> {
    let mut b = json!({ "model": model, "stream": true });
    let prompt_text = |ids: &[u32]| -> Result<String, String> {
        match tokenizer {
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
    if cfg.timings_per_token {
        b["timings_per_token"] = json!(true);
    }
    if let (Some(Value::Object(extra)), Value::Object(obj)) = (&cfg.extra_body, &mut b) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&b).map_err(|e| format!("cannot encode request body: {e}"))
}
