//! Column names, the Arrow schema and the schema version.

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// The format version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Column names. Nothing outside this crate spells them.
pub mod col {
    /// Stable request id, kept from the source workload so runs pair up.
    pub const REQUEST_ID: &str = "request_id";
    /// Sweep stage label (`rate=5`); one stage when no sweep.
    pub const STAGE: &str = "stage";
    /// The stage's requested rate in req/s; null when replaying recorded timing.
    pub const TARGET_RATE: &str = "target_rate";
    /// Intended send time, ns since run start.
    pub const SCHEDULED_NS: &str = "scheduled_ns";
    /// When the request was handed to the socket, ns since run start.
    pub const SENT_NS: &str = "sent_ns";
    /// When the response headers arrived, ns since run start.
    pub const HEADERS_NS: &str = "headers_ns";
    /// First response body byte, ns since run start.
    pub const FIRST_BYTE_NS: &str = "first_byte_ns";
    /// Arrival of each stream event, ns since run start, taken when its bytes were read.
    pub const CHUNK_NS: &str = "chunk_ns";
    /// Output tokens carried by each event (0 for role-only and usage-only events).
    pub const CHUNK_TOKENS: &str = "chunk_tokens";
    /// Stream end (`[DONE]`, close, or error), ns since run start.
    pub const END_NS: &str = "end_ns";
    /// Prompt tokens.
    pub const PROMPT_TOKENS: &str = "prompt_tokens";
    /// Output tokens.
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    /// Requested output cap (the workload's output length).
    pub const MAX_TOKENS: &str = "max_tokens";
    /// Where output_tokens came from: `usage`, `tokenizer`, `chunks` or `workload`.
    pub const TOKEN_SOURCE: &str = "token_source";
    /// HTTP status.
    pub const STATUS: &str = "status";
    /// Short stable error code; null on success.
    pub const ERROR_KIND: &str = "error_kind";
    /// Human-readable error detail.
    pub const ERROR_MSG: &str = "error_msg";
    /// `chat` or `completions` (or another route).
    pub const ENDPOINT: &str = "endpoint";
    /// Model name as sent.
    pub const MODEL: &str = "model";
    /// Finish reason reported by the server.
    pub const FINISH_REASON: &str = "finish_reason";
    /// Hash of the prompt, to pair requests across runs.
    pub const PROMPT_HASH: &str = "prompt_hash";
    /// Prompt block hashes (Mooncake-style `hash_ids`), to reproduce prefix sharing.
    pub const HASH_IDS: &str = "hash_ids";
    /// The previous turn's request_id in a multi-turn session.
    pub const PARENT_ID: &str = "parent_id";
    /// Prompt text (or request body), stored only when asked.
    pub const PROMPT: &str = "prompt";
    /// Output text, stored only when asked.
    pub const OUTPUT_TEXT: &str = "output_text";
    /// The prompt length the workload asked for, tokens (what the client built), to compare
    /// with the server's count in `prompt_tokens`.
    pub const EXPECTED_PROMPT_TOKENS: &str = "expected_prompt_tokens";
    /// `output_tokens` minus the sum of `chunk_tokens` when the server's total and the
    /// per-event counts disagree after reconciliation (null when they agree).
    pub const EVENT_TOKENS_GAP: &str = "event_tokens_gap";
    /// Reasoning tokens of each event (a part of its `chunk_tokens`; the rest are answer
    /// tokens); null when the response had no reasoning channel.
    pub const CHUNK_REASONING: &str = "chunk_reasoning";
    /// Reasoning tokens of the response: the server's `reasoning_tokens` where it reports them,
    /// else the sum of `chunk_reasoning`; null when there was no reasoning.
    pub const REASONING_TOKENS: &str = "reasoning_tokens";
    /// Prompt tokens the server served from its prefix cache (`cached_tokens`, Anthropic's
    /// `cache_read_input_tokens`); null when it does not say.
    pub const CACHED_TOKENS: &str = "cached_tokens";
    /// The session (conversation, agent run) this request is a turn of.
    pub const SESSION_ID: &str = "session_id";
    /// The turn's index in its session, from 0.
    pub const TURN: &str = "turn";
    /// Client-side delay after the parent turn ended before this one is sent (user think time,
    /// tool execution), ns.
    pub const THINK_NS: &str = "think_ns";

    /// Columns added to schema_version 1 after its first files were written: a reader accepts
    /// a file without them and reads them as null.
    pub const ADDED: [&str; 8] = [
        EXPECTED_PROMPT_TOKENS,
        EVENT_TOKENS_GAP,
        CHUNK_REASONING,
        REASONING_TOKENS,
        CACHED_TOKENS,
        SESSION_ID,
        TURN,
        THINK_NS,
    ];

    /// Every column, in schema order.
    pub const ALL: [&str; 33] = [
        REQUEST_ID,
        STAGE,
        TARGET_RATE,
        SCHEDULED_NS,
        SENT_NS,
        HEADERS_NS,
        FIRST_BYTE_NS,
        CHUNK_NS,
        CHUNK_TOKENS,
        END_NS,
        PROMPT_TOKENS,
        OUTPUT_TOKENS,
        MAX_TOKENS,
        TOKEN_SOURCE,
        STATUS,
        ERROR_KIND,
        ERROR_MSG,
        ENDPOINT,
        MODEL,
        FINISH_REASON,
        PROMPT_HASH,
        HASH_IDS,
        PARENT_ID,
        PROMPT,
        OUTPUT_TEXT,
        EXPECTED_PROMPT_TOKENS,
        EVENT_TOKENS_GAP,
        CHUNK_REASONING,
        REASONING_TOKENS,
        CACHED_TOKENS,
        SESSION_ID,
        TURN,
        THINK_NS,
    ];
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use DataType::*;
    let list_item = |t: DataType| DataType::List(Arc::new(Field::new("item", t, false)));
    Arc::new(Schema::new(vec![
        Field::new(col::REQUEST_ID, Utf8, false),
        // Plain Utf8 in Arrow; Parquet dictionary-encodes it on disk, and readers (polars
        // included) need no categorical support.
        Field::new(col::STAGE, Utf8, false),
        Field::new(col::TARGET_RATE, Float64, true),
        Field::new(col::SCHEDULED_NS, Int64, false),
        Field::new(col::SENT_NS, Int64, true),
        Field::new(col::HEADERS_NS, Int64, true),
        Field::new(col::FIRST_BYTE_NS, Int64, true),
        Field::new(col::CHUNK_NS, list_item(Int64), false),
        Field::new(col::CHUNK_TOKENS, list_item(Int32), false),
        Field::new(col::END_NS, Int64, true),
        Field::new(col::PROMPT_TOKENS, Int32, true),
        Field::new(col::OUTPUT_TOKENS, Int32, true),
        Field::new(col::MAX_TOKENS, Int32, true),
        Field::new(col::TOKEN_SOURCE, Utf8, true),
        Field::new(col::STATUS, Int16, true),
        Field::new(col::ERROR_KIND, Utf8, true),
        Field::new(col::ERROR_MSG, Utf8, true),
        Field::new(col::ENDPOINT, Utf8, true),
        Field::new(col::MODEL, Utf8, true),
        Field::new(col::FINISH_REASON, Utf8, true),
        Field::new(col::PROMPT_HASH, UInt64, true),
        Field::new(col::HASH_IDS, list_item(UInt64), false),
        Field::new(col::PARENT_ID, Utf8, true),
        Field::new(col::PROMPT, Utf8, true),
        Field::new(col::OUTPUT_TEXT, Utf8, true),
        Field::new(col::EXPECTED_PROMPT_TOKENS, Int32, true),
        Field::new(col::EVENT_TOKENS_GAP, Int32, true),
        Field::new(col::CHUNK_REASONING, list_item(Int32), true),
        Field::new(col::REASONING_TOKENS, Int32, true),
        Field::new(col::CACHED_TOKENS, Int32, true),
        Field::new(col::SESSION_ID, Utf8, true),
        Field::new(col::TURN, Int32, true),
        Field::new(col::THINK_NS, Int64, true),
    ]))
});

/// The Arrow schema of a trace, schema_version 1.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}
