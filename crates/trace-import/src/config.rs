//! What an import is asked to do: [`Format`], [`Window`], [`Filter`], [`ImportConfig`], and
//! what it did: [`ImportSummary`]. No clap here; the cli maps its arguments onto these.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::timestamp::parse_datetime_ns;

/// An input format `trace import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Azure LLM inference trace 2023/2024 CSV: `TIMESTAMP,ContextTokens,GeneratedTokens`.
    Azure,
    /// BurstGPT CSV: `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`.
    BurstGpt,
    /// Mooncake JSONL: `timestamp` (ms), `input_length`, `output_length`, `hash_ids` (512-token blocks).
    Mooncake,
    /// Alibaba Bailian/Qwen JSONL: `chat_id`, `parent_chat_id`, `timestamp` (s), 16-token blocks.
    Bailian,
    /// ShareGPT conversation JSON (an array of `{id, conversations: [{from, value}]}`).
    ShareGpt,
    /// vLLM `--save-result` JSON (one object, or JSONL with `--append-result`).
    VllmJson,
    /// SGLang `bench_serving` JSONL results.
    SglangJsonl,
    /// AIPerf `profile_export.jsonl` per-request records.
    Aiperf,
    /// GitHub Copilot coding-agent sessions (AzurePublicDataset 2026): one JSON session per line,
    /// `turns[].llm_calls[]` with ISO `timestamp`, `duration_ms` and `tokens`.
    CopilotAgent,
}

impl Format {
    /// Every format, in help order.
    pub const ALL: [Format; 9] = [
        Format::Azure,
        Format::BurstGpt,
        Format::Mooncake,
        Format::Bailian,
        Format::ShareGpt,
        Format::VllmJson,
        Format::SglangJsonl,
        Format::Aiperf,
        Format::CopilotAgent,
    ];

    /// The name used on the command line and in the `source` metadata.
    pub fn name(self) -> &'static str {
        match self {
            Format::Azure => "azure",
            Format::BurstGpt => "burstgpt",
            Format::Mooncake => "mooncake",
            Format::Bailian => "bailian",
            Format::ShareGpt => "sharegpt",
            Format::VllmJson => "vllm-json",
            Format::SglangJsonl => "sglang-jsonl",
            Format::Aiperf => "aiperf",
            Format::CopilotAgent => "copilot-agent",
        }
    }

    /// The prompt block size of `hash_ids` in tokens, where the format has them.
    pub fn default_block_size(self) -> Option<u32> {
        match self {
            Format::Mooncake => Some(512),
            Format::Bailian => Some(16),
            _ => None,
        }
    }

    /// Whether rows carry absolute wall-clock times (so a datetime `--window` applies).
    pub fn has_absolute_time(self) -> bool {
        matches!(self, Format::Azure | Format::Aiperf | Format::CopilotAgent)
    }

    /// Whether the format's rows come in time order (arrival logs); AIPerf writes records as
    /// they finish, and results files are ordered by the importer.
    pub fn sorted_by_time(self) -> bool {
        matches!(
            self,
            Format::Azure | Format::BurstGpt | Format::Mooncake | Format::Bailian
        )
    }

    /// Whether rows carry arrival times at all (ShareGPT does not).
    pub fn has_time(self) -> bool {
        !matches!(self, Format::ShareGpt)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown import format '{s}': expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A time bound of a window: an offset from the trace's first row, or a wall-clock datetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// ns after the first row's timestamp.
    Offset(i64),
    /// UNIX ns (datetimes are read as UTC when they carry no zone).
    Absolute(i64),
}

/// `--window START..END`: keep rows with START <= t < END. Either side may be open.
///
/// Kept rows' `scheduled_ns` are offsets from START (from the first row when START is open), so
/// a windowed workload starts near 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Inclusive start.
    pub start: Option<Bound>,
    /// Exclusive end.
    pub end: Option<Bound>,
}

impl Window {
    /// Whether either bound is a datetime.
    pub fn is_absolute(&self) -> bool {
        matches!(self.start, Some(Bound::Absolute(_)))
            || matches!(self.end, Some(Bound::Absolute(_)))
    }
}

fn parse_bound(s: &str) -> Result<Option<Bound>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        let ns = i64::try_from(d.as_nanos()).map_err(|_| format!("offset '{s}' is too large"))?;
        return Ok(Some(Bound::Offset(ns)));
    }
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Some(Bound::Offset((secs * 1e9).round() as i64)));
    }
    match parse_datetime_ns(s) {
        Ok(ns) => Ok(Some(Bound::Absolute(ns))),
        Err(e) => Err(format!(
            "'{s}' is neither an offset (10m, 90s, 1h30m, 600) nor a datetime (2023-11-16 18:20:00): {e}"
        )),
    }
}

impl FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("invalid window '{s}': expected START..END (e.g. 10m..20m)"))?;
        let w = Window {
            start: parse_bound(a).map_err(|e| format!("invalid window '{s}': {e}"))?,
            end: parse_bound(b).map_err(|e| format!("invalid window '{s}': {e}"))?,
        };
        if let (Some(Bound::Offset(x)), Some(Bound::Offset(y)))
        | (Some(Bound::Absolute(x)), Some(Bound::Absolute(y))) = (w.start, w.end)
            && y <= x
        {
            return Err(format!(
                "invalid window '{s}': the end must be after the start"
            ));
        }
        if matches!(
            (w.start, w.end),
            (Some(Bound::Offset(_)), Some(Bound::Absolute(_)))
                | (Some(Bound::Absolute(_)), Some(Bound::Offset(_)))
        ) {
            return Err(format!(
                "invalid window '{s}': use two offsets or two datetimes"
            ));
        }
        Ok(w)
    }
}

/// What a [`Filter`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKey {
    /// The model column.
    Model,
    /// BurstGPT's `Log Type` (`api` / `conversation`, or the full `API log`).
    LogType,
}

/// `--filter KEY=VALUE`: keep rows whose KEY equals VALUE (case-insensitive). Repeated filters
/// with the same key are alternatives; different keys must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The compared field.
    pub key: FilterKey,
    /// The wanted value.
    pub value: String,
}

impl FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("invalid filter '{s}': expected KEY=VALUE (model=GPT-4)"))?;
        let key = match k.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "model" => FilterKey::Model,
            "log_type" | "logtype" => FilterKey::LogType,
            other => {
                return Err(format!(
                    "invalid filter '{s}': unknown key '{other}' (model, log_type)"
                ));
            }
        };
        if v.trim().is_empty() {
            return Err(format!("invalid filter '{s}': empty value"));
        }
        Ok(Filter {
            key,
            value: v.trim().to_string(),
        })
    }
}

/// Normalises a BurstGPT log type so `api`, `API`, and `API log` compare equal.
pub(crate) fn norm_log_type(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    s.strip_suffix(" log").map(str::to_string).unwrap_or(s)
}

/// A validated import request.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// The input's format.
    pub format: Format,
    /// The input file.
    pub input: PathBuf,
    /// The trace to write.
    pub output: PathBuf,
    /// Replace an existing trace at `output` (`--force`); off, an existing file is refused.
    pub force: bool,
    /// Keep only rows inside this window.
    pub window: Option<Window>,
    /// Stop after writing this many rows.
    pub limit: Option<u64>,
    /// Keep only rows matching these.
    pub filters: Vec<Filter>,
    /// Count and skip malformed rows instead of failing.
    pub skip_bad: bool,
    /// Block size of `hash_ids` in tokens (Mooncake 512, Bailian 16 by default).
    pub block_size: Option<u32>,
    /// ShareGPT: only each conversation's first turn, as vLLM's benchmark sends it (off: every
    /// turn, each conversation a session).
    pub sharegpt_first_turn: bool,
}

impl ImportConfig {
    /// A config with no window, limit or filter.
    pub fn new(format: Format, input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        Self {
            format,
            input: input.into(),
            output: output.into(),
            force: false,
            window: None,
            limit: None,
            filters: Vec::new(),
            skip_bad: false,
            block_size: None,
            sharegpt_first_turn: false,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportSummary {
    /// Data rows (or records) read from the input.
    pub rows_read: u64,
    /// Rows written to the trace.
    pub rows_written: u64,
    /// Malformed rows skipped under `--skip-bad`.
    pub rows_bad: u64,
    /// Rows left out by the window, the filters or the format's own rules (ShareGPT
    /// conversations without a reply).
    pub rows_excluded: u64,
    /// The first few skipped rows' errors, for the user to look at.
    pub bad_examples: Vec<String>,
    /// `workload` or `run`.
    pub kind: String,
    /// Source rows that are failures in the source (BurstGPT `Response tokens` 0, result errors).
    pub source_failures: u64,
}
