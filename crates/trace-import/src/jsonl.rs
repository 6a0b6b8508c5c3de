//! The JSON-lines traces: Mooncake, Alibaba Bailian/Qwen, AIPerf's per-request export, and
//! GitHub Copilot's coding-agent sessions. Read line by line through one reused buffer.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use trace_format::{ErrorKind, TraceRecord};

use crate::WORKLOAD_STAGE;
use crate::config::Format;
use crate::error::{Error, Result};
use crate::sink::{Flow, Row, Sink};

/// A serde_json error as `message` plus the column in the line.
pub(crate) fn json_problem(e: &serde_json::Error) -> (String, u64) {
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let msg = if e.is_eof() {
        format!("truncated line: {msg}")
    } else {
        msg
    };
    (msg, e.column() as u64)
}

/// Calls `f` with each non-blank line (without its line ending) and its 1-based number.
pub(crate) fn each_line(
    sink: &mut Sink,
    mut f: impl FnMut(&mut Sink, &[u8], u64) -> Result<Flow>,
) -> Result<()> {
    let path = sink.path().to_path_buf();
    lines(&path, |l, line| f(sink, l, line))
}

/// Calls `f` with each non-blank line of `path` (without its line ending) and its 1-based
/// number, until it says stop; one reused buffer.
pub(crate) fn lines(path: &Path, mut f: impl FnMut(&[u8], u64) -> Result<Flow>) -> Result<()> {
    let mut rdr = crate::input::open_lines(path)?;
    let mut buf = Vec::with_capacity(4096);
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = rdr
            .read_until(b'\n', &mut buf)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        let mut l = &buf[..];
        while let [rest @ .., b'\n' | b'\r'] = l {
            l = rest;
        }
        if l.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if f(l, line)? == Flow::Stop {
            return Ok(());
        }
    }
}

/// Parses one JSON line, or reports it as a bad row at its line and column. A line must be a
/// JSON object: serde would also fill a struct from an array (`[0, 10, 5]`), by position.
fn parse_line<T: DeserializeOwned>(sink: &Sink, l: &[u8], line: u64) -> Result<T> {
    if l.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::BadRow {
            at: sink.at(line, Some(1), None),
            problem: "expected a JSON object ({...}) on every line".into(),
        });
    }
    serde_json::from_slice(l).map_err(|e| {
        let (problem, col) = json_problem(&e);
        Error::BadRow {
            at: sink.at(line, Some(col), None),
            problem,
        }
    })
}

fn non_negative_ns(sink: &Sink, line: u64, field: &str, v: f64, ns_per_unit: f64) -> Result<i64> {
    if v.is_finite() && v >= 0.0 && v * ns_per_unit < 9.0e18 {
        Ok((v * ns_per_unit).round() as i64)
    } else {
        Err(Error::BadRow {
            at: sink.at(line, None, Some(field)),
            problem: format!("'{v}' is not a valid non-negative time"),
        })
    }
}

/// A token count as stored (int32): a larger one is a bad row, never silently clamped.
fn count(sink: &Sink, line: u64, field: &str, v: u64) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::BadRow {
        at: sink.at(line, None, Some(field)),
        problem: format!("{v} tokens is more than any model takes (at most 2^31-1)"),
    })
}

#[derive(Deserialize)]
struct MooncakeLine {
    timestamp: f64,
    input_length: u64,
    output_length: u64,
    #[serde(default)]
    hash_ids: Vec<u64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    request_id: Option<serde_json::Value>,
    /// The session (multi-turn extension of the format, as AIPerf reads it).
    #[serde(default)]
    session_id: Option<serde_json::Value>,
    /// Delay before this turn after the previous turn of its session ended, ms.
    #[serde(default)]
    delay: Option<f64>,
}

/// A JSON id (string or number) as text; None for null or absent.
fn id_text(v: Option<serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        v => Some(v.to_string()),
    }
}

/// Imports a Mooncake trace (timestamps in ms; `session_id` and `delay` where the file has
/// them, so multi-turn sessions replay closed-loop).
pub(crate) fn import_mooncake(sink: &mut Sink) -> Result<()> {
    each_line(sink, |sink, l, line| {
        let row = parse_line::<MooncakeLine>(sink, l, line).and_then(|m| {
            let t = non_negative_ns(sink, line, "timestamp", m.timestamp, 1e6)?;
            let prompt = count(sink, line, "input_length", m.input_length)?;
            let out = count(sink, line, "output_length", m.output_length)?;
            let request_id = id_text(m.request_id)
                .unwrap_or_else(|| format!("{}-{line}", Format::Mooncake.name()));
            let think_ns = m
                .delay
                .map(|d| non_negative_ns(sink, line, "delay", d, 1e6))
                .transpose()?;
            Ok(Row {
                time_ns: Some(t),
                rec: TraceRecord {
                    request_id,
                    stage: WORKLOAD_STAGE.into(),
                    prompt_tokens: Some(prompt),
                    max_tokens: Some(out),
                    hash_ids: m.hash_ids,
                    model: m.model,
                    session_id: id_text(m.session_id),
                    think_ns,
                    ..TraceRecord::default()
                },
                log_type: None,
            })
        });
        match row {
            Ok(row) => sink.push(line, row),
            Err(e) => sink.bad(e).map(|()| Flow::Continue),
        }
    })
}

#[derive(Deserialize)]
struct BailianLine {
    chat_id: i64,
    #[serde(default)]
    parent_chat_id: Option<i64>,
    timestamp: f64,
    input_length: u64,
    output_length: u64,
    #[serde(default)]
    hash_ids: Vec<u64>,
    #[serde(default)]
    turn: Option<i64>,
}

/// Imports an Alibaba Bailian/Qwen trace (timestamps in s; `chat_id` and `parent_chat_id`
/// become `request_id` and `parent_id`, `turn` is kept, so sessions stay linked and replay
/// closed-loop; the trace has send times only, so a turn's think time is its recorded gap).
pub(crate) fn import_bailian(sink: &mut Sink) -> Result<()> {
    each_line(sink, |sink, l, line| {
        let row = parse_line::<BailianLine>(sink, l, line).and_then(|m| {
            let t = non_negative_ns(sink, line, "timestamp", m.timestamp, 1e9)?;
            let prompt = count(sink, line, "input_length", m.input_length)?;
            let out = count(sink, line, "output_length", m.output_length)?;
            Ok(Row {
                time_ns: Some(t),
                rec: TraceRecord {
                    request_id: m.chat_id.to_string(),
                    parent_id: m.parent_chat_id.filter(|&p| p >= 0).map(|p| p.to_string()),
                    turn: m.turn.and_then(|t| i32::try_from(t).ok()),
                    stage: WORKLOAD_STAGE.into(),
                    prompt_tokens: Some(prompt),
                    max_tokens: Some(out),
                    hash_ids: m.hash_ids,
                    ..TraceRecord::default()
                },
                log_type: None,
            })
        });
        match row {
            Ok(row) => sink.push(line, row),
            Err(e) => sink.bad(e).map(|()| Flow::Continue),
        }
    })
}

#[derive(Deserialize)]
struct AiperfLine {
    metadata: AiperfMeta,
    #[serde(default)]
    metrics: Option<HashMap<String, AiperfMetric>>,
    #[serde(default)]
    error: Option<AiperfError>,
}

#[derive(Deserialize)]
struct AiperfMeta {
    #[serde(default)]
    x_request_id: Option<String>,
    #[serde(default)]
    session_num: Option<u64>,
    request_start_ns: i64,
    /// When AIPerf's scheduler issued the request (its intended send time).
    #[serde(default)]
    credit_issued_ns: Option<i64>,
    #[serde(default)]
    request_ack_ns: Option<i64>,
    #[serde(default)]
    request_end_ns: Option<i64>,
    #[serde(default)]
    benchmark_phase: Option<String>,
    #[serde(default)]
    was_cancelled: Option<bool>,
}

#[derive(Deserialize)]
struct AiperfMetric {
    value: serde_json::Value,
    #[serde(default)]
    unit: Option<String>,
}

impl AiperfMetric {
    /// Nanoseconds per one of this metric's units, for a time metric.
    fn ns_per_unit(&self) -> std::result::Result<f64, String> {
        match self.unit.as_deref() {
            Some("ns") => Ok(1.0),
            Some("us") => Ok(1e3),
            Some("ms") | None => Ok(1e6),
            Some("s" | "sec") => Ok(1e9),
            Some(u) => Err(format!("unknown time unit '{u}'")),
        }
    }
}

impl AiperfMeta {
    /// The scheduler's intended send time, else the actual start.
    fn scheduled_ns(&self) -> i64 {
        self.credit_issued_ns.unwrap_or(self.request_start_ns)
    }
}

#[derive(Deserialize)]
struct AiperfError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The short error code for a source's HTTP-ish status.
pub(crate) fn error_kind_for(code: Option<i64>, cancelled: bool) -> ErrorKind {
    match code {
        _ if cancelled => ErrorKind::Cancelled,
        Some(499) => ErrorKind::Cancelled,
        Some(c) if (400..500).contains(&c) => ErrorKind::Http4xx,
        Some(c) if (500..600).contains(&c) => ErrorKind::Http5xx,
        _ => ErrorKind::SourceFailed,
    }
}

/// Imports an AIPerf `profile_export.jsonl`. Two passes: AIPerf writes records as they are
/// processed, not in send order, so the earliest `request_start_ns` is found first.
pub(crate) fn import_aiperf(sink: &mut Sink) -> Result<()> {
    let mut min_start: Option<i64> = None;
    // First pass: only the earliest start; bad lines are reported by the second pass.
    each_line(sink, |sink, l, line| {
        if let Ok(m) = parse_line::<AiperfLine>(sink, l, line) {
            let t = m.metadata.scheduled_ns().min(m.metadata.request_start_ns);
            min_start = Some(min_start.map_or(t, |s| s.min(t)));
        }
        Ok(Flow::Continue)
    })?;
    if let Some(s) = min_start {
        sink.set_origin(s);
    }
    each_line(sink, |sink, l, line| {
        let m = match parse_line::<AiperfLine>(sink, l, line) {
            Ok(m) => m,
            Err(e) => return sink.bad(e).map(|()| Flow::Continue),
        };
        if m.metadata
            .benchmark_phase
            .as_deref()
            .is_some_and(|p| p != "profiling")
        {
            sink.exclude();
            return Ok(Flow::Continue);
        }
        let metrics = m.metrics.unwrap_or_default();
        let num = |k: &str| metrics.get(k).and_then(|v| v.value.as_f64());
        // A time metric in ns, by its own unit; an unknown unit makes the line bad.
        let time_ns = |k: &str| -> std::result::Result<Option<f64>, String> {
            match metrics.get(k) {
                None => Ok(None),
                Some(v) => {
                    let per = v.ns_per_unit().map_err(|e| format!("metric '{k}': {e}"))?;
                    Ok(v.value.as_f64().map(|x| x * per))
                }
            }
        };
        let (ttft, latency, per_gap) = match (
            time_ns("time_to_first_token"),
            time_ns("request_latency"),
            metrics
                .get("inter_chunk_latency")
                .map_or(Ok(1e6), AiperfMetric::ns_per_unit),
        ) {
            (Ok(t), Ok(l), Ok(g)) => (t, l, g),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let err = Error::BadRow {
                    at: sink.at(line, None, None),
                    problem: e,
                };
                return sink.bad(err).map(|()| Flow::Continue);
            }
        };
        let start = m.metadata.request_start_ns;
        let scheduled = m.metadata.scheduled_ns();
        let mut rec = TraceRecord {
            request_id: m
                .metadata
                .x_request_id
                .or(m.metadata.session_num.map(|n| n.to_string()))
                .unwrap_or_else(|| format!("{}-{line}", Format::Aiperf.name())),
            stage: WORKLOAD_STAGE.into(),
            sent_ns: Some(start),
            headers_ns: m.metadata.request_ack_ns,
            // AIPerf's own latency, not the wall-clock end it logged after processing.
            end_ns: latency
                .map(|l| start + l.round() as i64)
                .or(m.metadata.request_end_ns),
            // The server's counts (usage) when AIPerf kept them; else AIPerf's client-side
            // tokenizer's, labelled as such.
            prompt_tokens: num("usage_prompt_tokens")
                .or(num("input_sequence_length"))
                .or(num("error_isl"))
                .map(|v| v as i32),
            ..TraceRecord::default()
        };
        let (out, source) = match (
            num("usage_completion_tokens"),
            num("output_sequence_length").or(num("output_token_count")),
        ) {
            (Some(u), _) => (Some(u), Some("usage")),
            (None, Some(t)) => (Some(t), Some("tokenizer")),
            (None, None) => (None, None),
        };
        rec.output_tokens = out.map(|v| v as i32);
        rec.token_source = source.map(Into::into);
        rec.max_tokens = num("output_sequence_length")
            .or(num("output_token_count"))
            .or(out)
            .map(|v| v as i32);
        if let Some(err) = m.error {
            let cancelled = m.metadata.was_cancelled.unwrap_or(false);
            rec.status = err.code.and_then(|c| i16::try_from(c).ok());
            rec.error_kind = Some(error_kind_for(err.code, cancelled));
            rec.error_msg = Some(
                [
                    err.kind.unwrap_or_default(),
                    err.message.unwrap_or_default(),
                ]
                .join(": ")
                .trim_matches([':', ' '])
                .to_string(),
            );
        } else if let Some(ttft) = ttft {
            rec.status = Some(200);
            let mut t = start + ttft.round() as i64;
            rec.first_byte_ns = Some(t);
            rec.chunk_ns.push(t);
            if let Some(gaps) = metrics
                .get("inter_chunk_latency")
                .and_then(|v| v.value.as_array())
            {
                for g in gaps.iter().filter_map(serde_json::Value::as_f64) {
                    t += (g * per_gap).round() as i64;
                    rec.chunk_ns.push(t);
                }
            }
            // AIPerf does not say how many tokens each chunk carried: one each, and the
            // difference from the output count is the row's unreconciled gap.
            rec.chunk_tokens = vec![1; rec.chunk_ns.len()];
            let gap = rec
                .output_tokens
                .map_or(0, |o| o - rec.chunk_ns.len() as i32);
            rec.event_tokens_gap = (gap != 0).then_some(gap);
            // The chunks cannot outlast the request.
            if let (Some(&last), Some(e)) = (rec.chunk_ns.last(), rec.end_ns)
                && last > e
            {
                rec.end_ns = Some(last);
            }
        }
        sink.push(
            line,
            Row {
                time_ns: Some(scheduled),
                rec,
                log_type: None,
            },
        )
    })
}

#[derive(Deserialize)]
struct AgentSession {
    session_id: serde_json::Value,
    #[serde(default)]
    turns: Vec<AgentTurn>,
}

#[derive(Deserialize)]
struct AgentTurn {
    #[serde(default)]
    llm_calls: Vec<AgentCall>,
}

#[derive(Deserialize)]
struct AgentCall {
    #[serde(default)]
    message_id: Option<String>,
    timestamp: String,
    #[serde(default)]
    duration_ms: Option<f64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    tokens: AgentTokens,
}

#[derive(Deserialize, Default)]
struct AgentTokens {
    #[serde(default)]
    prompt: Option<u64>,
    #[serde(default)]
    completion: Option<u64>,
    #[serde(default)]
    cached: Option<u64>,
}

/// One LLM call of an agent session, parsed.
struct AgentRow {
    t: i64,
    end: i64,
    rec: TraceRecord,
}

/// Parses one session line into its calls as rows, in time order: each call after the one
/// before (its parent), its think time the gap from that call's end (tool execution, or the
/// user's pause before a new turn).
fn agent_rows(sink: &Sink, l: &[u8], line: u64) -> Result<Vec<AgentRow>> {
    let s: AgentSession = parse_line(sink, l, line)?;
    let sid = id_text(Some(s.session_id)).ok_or_else(|| Error::BadRow {
        at: sink.at(line, None, Some("session_id")),
        problem: "is null".into(),
    })?;
    let mut rows = Vec::new();
    for call in s.turns.into_iter().flat_map(|t| t.llm_calls) {
        let t = crate::timestamp::parse_datetime_ns(&call.timestamp).map_err(|problem| {
            Error::BadRow {
                at: sink.at(line, None, Some("timestamp")),
                problem,
            }
        })?;
        let dur = non_negative_ns(
            sink,
            line,
            "duration_ms",
            call.duration_ms.unwrap_or(0.0),
            1e6,
        )?;
        let tok = call.tokens;
        let prompt = count(sink, line, "tokens.prompt", tok.prompt.unwrap_or(0))?;
        let completion = count(sink, line, "tokens.completion", tok.completion.unwrap_or(0))?;
        let cached = tok
            .cached
            .map(|c| count(sink, line, "tokens.cached", c))
            .transpose()?;
        let failed = call
            .result
            .as_deref()
            .filter(|r| !r.eq_ignore_ascii_case("success"));
        rows.push(AgentRow {
            t,
            end: t.saturating_add(dur),
            rec: TraceRecord {
                request_id: call.message_id.unwrap_or_default(),
                stage: WORKLOAD_STAGE.into(),
                prompt_tokens: Some(prompt),
                max_tokens: Some(completion),
                cached_tokens: cached,
                model: call.model,
                session_id: Some(sid.clone()),
                error_kind: failed.map(|_| ErrorKind::SourceFailed),
                error_msg: failed.map(|r| format!("source result: {r}")),
                ..TraceRecord::default()
            },
        });
    }
    rows.sort_by_key(|r| r.t);
    for k in 0..rows.len() {
        if rows[k].rec.request_id.is_empty() {
            rows[k].rec.request_id = format!("{sid}-{k}");
        }
        rows[k].rec.turn = i32::try_from(k).ok();
        if k > 0 {
            let (prev_id, prev_end) = (rows[k - 1].rec.request_id.clone(), rows[k - 1].end);
            rows[k].rec.parent_id = Some(prev_id);
            rows[k].rec.think_ns = Some((rows[k].t - prev_end).max(0));
        }
    }
    Ok(rows)
}

/// Imports GitHub Copilot coding-agent sessions: every LLM call a row, each session a chain of
/// turns (a call follows the one before it, after its think time: the tools it ran, or the
/// user's pause), prompt and completion tokens as recorded, the source's cache hits in
/// `cached_tokens`, calls that did not succeed (`result` other than `Success`) marked
/// `source_failed`. Sessions need not be in time order: the earliest call is found first.
pub(crate) fn import_copilot_agent(sink: &mut Sink) -> Result<()> {
    let mut first: Option<i64> = None;
    // First pass: only the earliest call; bad lines are reported by the second pass.
    each_line(sink, |sink, l, line| {
        if let Some(r) = agent_rows(sink, l, line)
            .ok()
            .and_then(|v| v.into_iter().next())
        {
            first = Some(first.map_or(r.t, |f| f.min(r.t)));
        }
        Ok(Flow::Continue)
    })?;
    if let Some(f) = first {
        sink.set_origin(f);
    }
    each_line(sink, |sink, l, line| {
        let rows = match agent_rows(sink, l, line) {
            Ok(r) => r,
            Err(e) => return sink.bad(e).map(|()| Flow::Continue),
        };
        for r in rows {
            let row = Row {
                time_ns: Some(r.t),
                rec: r.rec,
                log_type: None,
            };
            if sink.push(line, row)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    })
}
