//! File-level metadata: the Parquet key-value keys ([`meta`]) and [`TraceMeta`], with typed
//! accessors for the structured values (stages, server samples).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SCHEMA_VERSION;

/// Parquet key-value metadata keys. Values are strings; structured ones are JSON.
pub mod meta {
    /// Format version (an integer). Its presence is what makes a Parquet file a trace.
    pub const SCHEMA_VERSION: &str = "trace.schema_version";
    /// Version of the tool that wrote the file.
    pub const TOOL_VERSION: &str = "trace.tool_version";
    /// Git commit of the tool, when known at build time.
    pub const GIT_SHA: &str = "trace.git_sha";
    /// `run` (responses recorded) or `workload` (request side only).
    pub const KIND: &str = "trace.kind";
    /// Wall-clock anchor: UNIX ns at run start; every `_ns` column is an offset from it.
    pub const RUN_START_UNIX_NS: &str = "trace.run_start_unix_ns";
    /// Target base URL.
    pub const URL: &str = "trace.url";
    /// Engine label (`--label vllm`).
    pub const LABEL: &str = "trace.label";
    /// Workload spec (JSON).
    pub const WORKLOAD: &str = "trace.workload";
    /// Schedule spec (JSON): arrival process, rates, stages.
    pub const SCHEDULE: &str = "trace.schedule";
    /// RNG seed of the schedule and workload.
    pub const SEED: &str = "trace.seed";
    /// Where an imported trace came from (JSON: format, file, unit, block size).
    pub const SOURCE: &str = "trace.source";
    /// Per-stage bounds (JSON array of [`crate::meta_keys::StageInfo`]).
    pub const STAGES: &str = "trace.stages";
    /// Server queue samples scraped from `/metrics` (JSON array of `ServerSample`).
    pub const SERVER_SAMPLES: &str = "trace.server_samples";
    /// Which engine's metric names the samples were read from (`vllm`, `sglang`, ...).
    pub const SERVER_ENGINE: &str = "trace.server_engine";
    /// Client settings (JSON: endpoint, model, timeout, tokenizer...).
    pub const CLIENT: &str = "trace.client";
    /// Free-form notes (warnings raised while recording).
    pub const NOTES: &str = "trace.notes";
}

/// One sweep stage's bounds, stored under [`meta::STAGES`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageInfo {
    /// Stage label, as in the `stage` column.
    pub stage: String,
    /// Requested rate (req/s); None for recorded timing.
    pub target_rate: Option<f64>,
    /// First scheduled send, ns since run start.
    pub start_ns: i64,
    /// When the stage's last request finished (or was abandoned), ns since run start.
    pub end_ns: Option<i64>,
    /// Requests scheduled in the stage.
    pub requests: u64,
}

/// One scrape of the server's queue gauges, stored under [`meta::SERVER_SAMPLES`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSample {
    /// When the scrape answered, ns since run start.
    pub t_ns: i64,
    /// Requests waiting in the server's queue.
    pub waiting: Option<f64>,
    /// Requests in the running batch.
    pub running: Option<f64>,
    /// KV-cache usage, 0 to 1.
    pub kv_usage: Option<f64>,
    /// Cumulative preemptions.
    pub preemptions: Option<f64>,
}

/// The key-value metadata of one trace file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceMeta {
    map: BTreeMap<String, String>,
}

impl TraceMeta {
    /// Metadata for a new file: schema and tool version filled in, kind `run`.
    pub fn new() -> Self {
        let mut m = Self::default();
        m.set(meta::SCHEMA_VERSION, SCHEMA_VERSION.to_string());
        m.set(meta::TOOL_VERSION, env!("CARGO_PKG_VERSION"));
        if let Some(sha) = option_env!("TRACE_GIT_SHA") {
            m.set(meta::GIT_SHA, sha);
        }
        m.set(meta::KIND, "run");
        m
    }

    /// Wraps a raw key-value map read from a file.
    pub fn from_map(map: BTreeMap<String, String>) -> Self {
        Self { map }
    }

    /// Sets a key.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.map.insert(key.into(), value.into());
    }

    /// Reads a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// All keys and values, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The raw map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.map
    }

    /// The schema version, if the key is present and an integer.
    pub fn schema_version(&self) -> Option<u32> {
        self.get(meta::SCHEMA_VERSION)?.trim().parse().ok()
    }

    /// The wall-clock anchor in UNIX ns.
    pub fn run_start_unix_ns(&self) -> Option<i64> {
        self.get(meta::RUN_START_UNIX_NS)?.trim().parse().ok()
    }

    /// Stores the stage bounds.
    pub fn set_stages(&mut self, stages: &[StageInfo]) {
        self.set(meta::STAGES, to_json(stages));
    }

    /// The stage bounds; empty when absent or unreadable.
    pub fn stages(&self) -> Vec<StageInfo> {
        self.json(meta::STAGES).unwrap_or_default()
    }

    /// Stores server queue samples.
    pub fn set_server_samples(&mut self, samples: &[ServerSample]) {
        self.set(meta::SERVER_SAMPLES, to_json(samples));
    }

    /// Server queue samples; empty when none were recorded.
    pub fn server_samples(&self) -> Vec<ServerSample> {
        self.json(meta::SERVER_SAMPLES).unwrap_or_default()
    }

    /// Parses a JSON-valued key.
    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.get(key)?).ok()
    }
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    // Serialising plain structs of numbers and strings cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}
