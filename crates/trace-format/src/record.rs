//! [`TraceRecord`], the in-memory row, and its conversion to and from Arrow record batches.

use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int16Type, Int32Type, Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::Field;

use crate::schema::{col, schema};
use crate::{Error, ErrorKind, Result};

/// One request: what was scheduled, what was sent, and every chunk that came back.
///
/// Times are ns offsets from the run start on a monotonic clock (the wall-clock anchor is the
/// `trace.run_start_unix_ns` metadata key). A workload row has only the request-side fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceRecord {
    /// Stable request id.
    pub request_id: String,
    /// Sweep stage label.
    pub stage: String,
    /// The stage's requested rate (req/s).
    pub target_rate: Option<f64>,
    /// Intended send time.
    pub scheduled_ns: i64,
    /// Handed to the socket.
    pub sent_ns: Option<i64>,
    /// Response headers received.
    pub headers_ns: Option<i64>,
    /// First body byte received.
    pub first_byte_ns: Option<i64>,
    /// Arrival time of each stream event.
    pub chunk_ns: Vec<i64>,
    /// Output tokens per event, same length as `chunk_ns`.
    pub chunk_tokens: Vec<i32>,
    /// Stream end.
    pub end_ns: Option<i64>,
    /// Prompt tokens.
    pub prompt_tokens: Option<i32>,
    /// Output tokens.
    pub output_tokens: Option<i32>,
    /// Requested output cap.
    pub max_tokens: Option<i32>,
    /// Where output_tokens came from.
    pub token_source: Option<String>,
    /// HTTP status.
    pub status: Option<i16>,
    /// Short stable error code.
    pub error_kind: Option<ErrorKind>,
    /// Error detail.
    pub error_msg: Option<String>,
    /// Route kind (`chat`, `completions`).
    pub endpoint: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Finish reason.
    pub finish_reason: Option<String>,
    /// Prompt hash.
    pub prompt_hash: Option<u64>,
    /// Prompt block hashes.
    pub hash_ids: Vec<u64>,
    /// Previous turn's request_id.
    pub parent_id: Option<String>,
    /// Prompt text or request body.
    pub prompt: Option<String>,
    /// Output text.
    pub output_text: Option<String>,
    /// The prompt length the workload asked for.
    pub expected_prompt_tokens: Option<i32>,
    /// `output_tokens` minus the sum of `chunk_tokens`, when they disagree.
    pub event_tokens_gap: Option<i32>,
    /// Reasoning tokens per event; empty (null in the file) when there was no reasoning.
    pub chunk_reasoning: Vec<i32>,
    /// Reasoning tokens of the response.
    pub reasoning_tokens: Option<i32>,
    /// Prompt tokens served from the server's prefix cache.
    pub cached_tokens: Option<i32>,
    /// Session id.
    pub session_id: Option<String>,
    /// Turn index in the session.
    pub turn: Option<i32>,
    /// Think time before this turn, ns.
    pub think_ns: Option<i64>,
}

impl TraceRecord {
    /// Moves every time of the row by `d_ns` (rebasing it on another clock's origin: an
    /// import's first row, a merged shard's start). Durations between them are unchanged.
    pub fn shift_times(&mut self, d_ns: i64) {
        let shift = |t: &mut i64| *t = t.saturating_add(d_ns);
        shift(&mut self.scheduled_ns);
        self.sent_ns.as_mut().map(shift);
        self.headers_ns.as_mut().map(shift);
        self.first_byte_ns.as_mut().map(shift);
        self.end_ns.as_mut().map(shift);
        self.chunk_ns.iter_mut().for_each(shift);
    }
}

struct Builders {
    request_id: StringBuilder,
    stage: StringBuilder,
    target_rate: Float64Builder,
    scheduled_ns: Int64Builder,
    sent_ns: Int64Builder,
    headers_ns: Int64Builder,
    first_byte_ns: Int64Builder,
    chunk_ns: ListBuilder<Int64Builder>,
    chunk_tokens: ListBuilder<Int32Builder>,
    end_ns: Int64Builder,
    prompt_tokens: Int32Builder,
    output_tokens: Int32Builder,
    max_tokens: Int32Builder,
    token_source: StringBuilder,
    status: Int16Builder,
    error_kind: StringBuilder,
    error_msg: StringBuilder,
    endpoint: StringBuilder,
    model: StringBuilder,
    finish_reason: StringBuilder,
    prompt_hash: UInt64Builder,
    hash_ids: ListBuilder<UInt64Builder>,
    parent_id: StringBuilder,
    prompt: StringBuilder,
    output_text: StringBuilder,
    expected_prompt_tokens: Int32Builder,
    event_tokens_gap: Int32Builder,
    chunk_reasoning: ListBuilder<Int32Builder>,
    reasoning_tokens: Int32Builder,
    cached_tokens: Int32Builder,
    session_id: StringBuilder,
    turn: Int32Builder,
    think_ns: Int64Builder,
}

fn item(dt: arrow_schema::DataType) -> Arc<Field> {
    Arc::new(Field::new("item", dt, false))
}

impl Builders {
    fn new(cap: usize) -> Self {
        use arrow_schema::DataType::*;
        let s = || StringBuilder::with_capacity(cap, cap * 8);
        Self {
            request_id: s(),
            stage: s(),
            target_rate: Float64Builder::with_capacity(cap),
            scheduled_ns: Int64Builder::with_capacity(cap),
            sent_ns: Int64Builder::with_capacity(cap),
            headers_ns: Int64Builder::with_capacity(cap),
            first_byte_ns: Int64Builder::with_capacity(cap),
            chunk_ns: ListBuilder::new(Int64Builder::new()).with_field(item(Int64)),
            chunk_tokens: ListBuilder::new(Int32Builder::new()).with_field(item(Int32)),
            end_ns: Int64Builder::with_capacity(cap),
            prompt_tokens: Int32Builder::with_capacity(cap),
            output_tokens: Int32Builder::with_capacity(cap),
            max_tokens: Int32Builder::with_capacity(cap),
            token_source: s(),
            status: Int16Builder::with_capacity(cap),
            error_kind: s(),
            error_msg: s(),
            endpoint: s(),
            model: s(),
            finish_reason: s(),
            prompt_hash: UInt64Builder::with_capacity(cap),
            hash_ids: ListBuilder::new(UInt64Builder::new()).with_field(item(UInt64)),
            parent_id: s(),
            prompt: s(),
            output_text: s(),
            expected_prompt_tokens: Int32Builder::with_capacity(cap),
            event_tokens_gap: Int32Builder::with_capacity(cap),
            chunk_reasoning: ListBuilder::new(Int32Builder::new()).with_field(item(Int32)),
            reasoning_tokens: Int32Builder::with_capacity(cap),
            cached_tokens: Int32Builder::with_capacity(cap),
            session_id: s(),
            turn: Int32Builder::with_capacity(cap),
            think_ns: Int64Builder::with_capacity(cap),
        }
    }

    fn push(&mut self, r: &TraceRecord) {
        self.request_id.append_value(&r.request_id);
        self.stage.append_value(&r.stage);
        self.target_rate.append_option(r.target_rate);
        self.scheduled_ns.append_value(r.scheduled_ns);
        self.sent_ns.append_option(r.sent_ns);
        self.headers_ns.append_option(r.headers_ns);
        self.first_byte_ns.append_option(r.first_byte_ns);
        self.chunk_ns.values().append_slice(&r.chunk_ns);
        self.chunk_ns.append(true);
        self.chunk_tokens.values().append_slice(&r.chunk_tokens);
        self.chunk_tokens.append(true);
        self.end_ns.append_option(r.end_ns);
        self.prompt_tokens.append_option(r.prompt_tokens);
        self.output_tokens.append_option(r.output_tokens);
        self.max_tokens.append_option(r.max_tokens);
        self.token_source.append_option(r.token_source.as_deref());
        self.status.append_option(r.status);
        self.error_kind
            .append_option(r.error_kind.as_ref().map(ErrorKind::as_str));
        self.error_msg.append_option(r.error_msg.as_deref());
        self.endpoint.append_option(r.endpoint.as_deref());
        self.model.append_option(r.model.as_deref());
        self.finish_reason.append_option(r.finish_reason.as_deref());
        self.prompt_hash.append_option(r.prompt_hash);
        self.hash_ids.values().append_slice(&r.hash_ids);
        self.hash_ids.append(true);
        self.parent_id.append_option(r.parent_id.as_deref());
        self.prompt.append_option(r.prompt.as_deref());
        self.output_text.append_option(r.output_text.as_deref());
        self.expected_prompt_tokens
            .append_option(r.expected_prompt_tokens);
        self.event_tokens_gap.append_option(r.event_tokens_gap);
        self.chunk_reasoning
            .values()
            .append_slice(&r.chunk_reasoning);
        self.chunk_reasoning.append(!r.chunk_reasoning.is_empty());
        self.reasoning_tokens.append_option(r.reasoning_tokens);
        self.cached_tokens.append_option(r.cached_tokens);
        self.session_id.append_option(r.session_id.as_deref());
        self.turn.append_option(r.turn);
        self.think_ns.append_option(r.think_ns);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.request_id.finish()),
            Arc::new(self.stage.finish()),
            Arc::new(self.target_rate.finish()),
            Arc::new(self.scheduled_ns.finish()),
            Arc::new(self.sent_ns.finish()),
            Arc::new(self.headers_ns.finish()),
            Arc::new(self.first_byte_ns.finish()),
            Arc::new(self.chunk_ns.finish()),
            Arc::new(self.chunk_tokens.finish()),
            Arc::new(self.end_ns.finish()),
            Arc::new(self.prompt_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.max_tokens.finish()),
            Arc::new(self.token_source.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error_kind.finish()),
            Arc::new(self.error_msg.finish()),
            Arc::new(self.endpoint.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.finish_reason.finish()),
            Arc::new(self.prompt_hash.finish()),
            Arc::new(self.hash_ids.finish()),
            Arc::new(self.parent_id.finish()),
            Arc::new(self.prompt.finish()),
            Arc::new(self.output_text.finish()),
            Arc::new(self.expected_prompt_tokens.finish()),
            Arc::new(self.event_tokens_gap.finish()),
            Arc::new(self.chunk_reasoning.finish()),
            Arc::new(self.reasoning_tokens.finish()),
            Arc::new(self.cached_tokens.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.turn.finish()),
            Arc::new(self.think_ns.finish()),
        ];
        RecordBatch::try_new(schema(), cols).map_err(|source| Error::Arrow {
            context: "building a trace record batch".into(),
            source,
        })
    }
}

/// A batch read from a trace file, with the canonical schema: columns in schema order, field
/// metadata as this build writes it, and columns the file predates ([`col::ADDED`]) as nulls.
pub fn conform(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = schema();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        match batch.column_by_name(f.name()) {
            Some(c) => cols.push(c.clone()),
            None => cols.push(arrow_array::new_null_array(f.data_type(), batch.num_rows())),
        }
    }
    RecordBatch::try_new(schema, cols).map_err(|source| Error::Arrow {
        context: "conforming a batch to the trace schema".into(),
        source,
    })
}

/// Encodes records as one Arrow batch with the trace schema.
pub fn records_to_batch(records: &[TraceRecord]) -> Result<RecordBatch> {
    let mut b = Builders::new(records.len());
    for r in records {
        b.push(r);
    }
    b.finish()
}

/// Decodes a batch that has the trace schema (as [`crate::TraceReader`] yields) into records.
pub fn batch_to_records(batch: &RecordBatch) -> Result<Vec<TraceRecord>> {
    let bad = |column: &str, problem: &str| Error::Arrow {
        context: format!("decoding column '{column}'"),
        source: arrow_schema::ArrowError::SchemaError(problem.to_string()),
    };
    let get = |name: &str| -> Result<&ArrayRef> {
        batch
            .column_by_name(name)
            .ok_or_else(|| bad(name, "missing"))
    };
    let utf8 = |name: &str| -> Result<Vec<Option<String>>> {
        let a = get(name)?;
        let a = a
            .as_string_opt::<i32>()
            .ok_or_else(|| bad(name, "not utf8"))?;
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
            .collect())
    };
    let n = batch.num_rows();
    macro_rules! prim {
        ($name:expr, $t:ty) => {{
            let a = get($name)?;
            let a = a
                .as_primitive_opt::<$t>()
                .ok_or_else(|| bad($name, "has the wrong type"))?;
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i)))
                .collect::<Vec<_>>()
        }};
    }
    macro_rules! list {
        ($name:expr, $t:ty) => {{
            let a = get($name)?;
            let a = a
                .as_list_opt::<i32>()
                .ok_or_else(|| bad($name, "not a list"))?;
            let mut out = Vec::with_capacity(a.len());
            for i in 0..a.len() {
                if a.is_null(i) {
                    out.push(Vec::new());
                    continue;
                }
                let v = a.value(i);
                let v = v
                    .as_primitive_opt::<$t>()
                    .ok_or_else(|| bad($name, "has the wrong item type"))?;
                out.push(v.values().to_vec());
            }
            out
        }};
    }
    // Columns added after a file was written read as nulls.
    macro_rules! added_prim {
        ($name:expr, $t:ty) => {{
            if batch.column_by_name($name).is_some() {
                prim!($name, $t)
            } else {
                vec![None; n]
            }
        }};
    }
    let request_id = utf8(col::REQUEST_ID)?;
    let stage = utf8(col::STAGE)?;
    let target_rate = prim!(col::TARGET_RATE, Float64Type);
    let scheduled_ns = prim!(col::SCHEDULED_NS, Int64Type);
    let sent_ns = prim!(col::SENT_NS, Int64Type);
    let headers_ns = prim!(col::HEADERS_NS, Int64Type);
    let first_byte_ns = prim!(col::FIRST_BYTE_NS, Int64Type);
    let mut chunk_ns = list!(col::CHUNK_NS, Int64Type);
    let mut chunk_tokens = list!(col::CHUNK_TOKENS, Int32Type);
    let end_ns = prim!(col::END_NS, Int64Type);
    let prompt_tokens = prim!(col::PROMPT_TOKENS, Int32Type);
    let output_tokens = prim!(col::OUTPUT_TOKENS, Int32Type);
    let max_tokens = prim!(col::MAX_TOKENS, Int32Type);
    let mut token_source = utf8(col::TOKEN_SOURCE)?;
    let status = prim!(col::STATUS, Int16Type);
    let mut error_kind = utf8(col::ERROR_KIND)?;
    let mut error_msg = utf8(col::ERROR_MSG)?;
    let mut endpoint = utf8(col::ENDPOINT)?;
    let mut model = utf8(col::MODEL)?;
    let mut finish_reason = utf8(col::FINISH_REASON)?;
    let prompt_hash = prim!(col::PROMPT_HASH, UInt64Type);
    let mut hash_ids = list!(col::HASH_IDS, UInt64Type);
    let mut parent_id = utf8(col::PARENT_ID)?;
    let mut prompt = utf8(col::PROMPT)?;
    let mut output_text = utf8(col::OUTPUT_TEXT)?;
    let expected_prompt_tokens = added_prim!(col::EXPECTED_PROMPT_TOKENS, Int32Type);
    let event_tokens_gap = added_prim!(col::EVENT_TOKENS_GAP, Int32Type);
    let mut chunk_reasoning = if batch.column_by_name(col::CHUNK_REASONING).is_some() {
        list!(col::CHUNK_REASONING, Int32Type)
    } else {
        vec![Vec::new(); n]
    };
    let reasoning_tokens = added_prim!(col::REASONING_TOKENS, Int32Type);
    let cached_tokens = added_prim!(col::CACHED_TOKENS, Int32Type);
    let mut session_id = if batch.column_by_name(col::SESSION_ID).is_some() {
        utf8(col::SESSION_ID)?
    } else {
        vec![None; n]
    };
    let turn = added_prim!(col::TURN, Int32Type);
    let think_ns = added_prim!(col::THINK_NS, Int64Type);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(TraceRecord {
            request_id: request_id[i].clone().unwrap_or_default(),
            stage: stage[i].clone().unwrap_or_default(),
            target_rate: target_rate[i],
            scheduled_ns: scheduled_ns[i].unwrap_or_default(),
            sent_ns: sent_ns[i],
            headers_ns: headers_ns[i],
            first_byte_ns: first_byte_ns[i],
            chunk_ns: std::mem::take(&mut chunk_ns[i]),
            chunk_tokens: std::mem::take(&mut chunk_tokens[i]),
            end_ns: end_ns[i],
            prompt_tokens: prompt_tokens[i],
            output_tokens: output_tokens[i],
            max_tokens: max_tokens[i],
            token_source: token_source[i].take(),
            status: status[i],
            error_kind: error_kind[i].take().map(|k| ErrorKind::parse(&k)),
            error_msg: error_msg[i].take(),
            endpoint: endpoint[i].take(),
            model: model[i].take(),
            finish_reason: finish_reason[i].take(),
            prompt_hash: prompt_hash[i],
            hash_ids: std::mem::take(&mut hash_ids[i]),
            parent_id: parent_id[i].take(),
            prompt: prompt[i].take(),
            output_text: output_text[i].take(),
            expected_prompt_tokens: expected_prompt_tokens[i],
            event_tokens_gap: event_tokens_gap[i],
            chunk_reasoning: std::mem::take(&mut chunk_reasoning[i]),
            reasoning_tokens: reasoning_tokens[i],
            cached_tokens: cached_tokens[i],
            session_id: session_id[i].take(),
            turn: turn[i],
            think_ns: think_ns[i],
        });
    }
    Ok(out)
}
