//! File-level metadata: the Parquet key-value keys ([`meta`]) and [`TraceMeta`], with typed
//! values for the structured keys: [`StageInfo`], [`ServerSample`], [`ScheduleMeta`] (with the
//! one [`Arrival`] process type) and [`ClientMeta`]. Whoever writes a key writes its type, so a
//! key has one JSON shape.

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
    /// Requests sent twice because their connection closed before any response byte (a
    /// kept-alive connection the server was closing); absent when none.
    pub const RESENDS: &str = "trace.client_resends";
    /// The HTTP version the server answered in (`HTTP/1.1`, `HTTP/2`).
    pub const HTTP_VERSION: &str = "trace.http_version";
    /// Which HTTP client sent the requests: `lean` (the replay's own HTTP/1.1 client, for plain
    /// `http://` targets) or `hyper` (HTTPS, HTTP/2, `--hyper`).
    pub const HTTP_CLIENT: &str = "trace.http_client";
    /// Tokens per `hash_ids` block (Mooncake 512, Bailian 16, `trace synth` 16); absent: 512.
    pub const HASH_BLOCK_TOKENS: &str = "trace.hash_block_tokens";
    /// GPU telemetry sampled during the run (JSON list of [`GpuSample`]: memory used,
    /// utilisation, power, SM clock per GPU), from NVML or a DCGM exporter (`--gpu-metrics`).
    pub const GPU_SAMPLES: &str = "trace.gpu_samples";
    /// Where [`GPU_SAMPLES`] came from: `nvml` (this host's driver) or a DCGM exporter's URL.
    pub const GPU_SOURCE: &str = "trace.gpu_source";
    /// This file's share of a run sent from several hosts (JSON: index, count, schedule_id,
    /// host), set by `trace replay --shard k/n`; `trace merge` joins the shards.
    pub const SHARD: &str = "trace.shard";
    /// Shards merged into this file (JSON list: file, host, index, run start, offset applied).
    pub const SHARDS: &str = "trace.shards";
    /// The campaign a run belongs to (JSON: suite, scenario, repeat, engine command and its
    /// grid parameters), written by `trace suite run`.
    pub const CAMPAIGN: &str = "trace.campaign";
    /// How a replay ran sessions (JSON: history, on_turn_error, max_sessions, think_scale,
    /// sessions, skipped rows); absent when the workload had none.
    pub const SESSIONS: &str = "trace.sessions";
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Cumulative prompt tokens looked up in the prefix cache (`vllm:prefix_cache_queries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_queries: Option<f64>,
    /// Cumulative prompt tokens found there (`vllm:prefix_cache_hits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_hits: Option<f64>,
}

/// One scrape of the GPUs' telemetry (a DCGM exporter's `/metrics`), stored under
/// [`meta::GPU_SAMPLES`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// When the scrape answered, ns since run start.
    pub t_ns: i64,
    /// One reading per GPU.
    pub gpus: Vec<GpuReading>,
}

/// One GPU's readings in a [`GpuSample`]; a field the exporter does not expose is None.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuReading {
    /// The GPU's index (`gpu` label), else its UUID.
    pub gpu: String,
    /// Framebuffer memory used, MiB (`DCGM_FI_DEV_FB_USED`).
    pub mem_used_mib: Option<f64>,
    /// Utilisation, percent (`DCGM_FI_DEV_GPU_UTIL`).
    pub util_pct: Option<f64>,
    /// Power draw, W (`DCGM_FI_DEV_POWER_USAGE`).
    pub power_w: Option<f64>,
    /// SM clock, MHz (`DCGM_FI_DEV_SM_CLOCK`).
    pub sm_clock_mhz: Option<f64>,
}

/// An arrival process: how a synthetic schedule spaces its requests. The one definition used by
/// `trace replay --arrival` and `trace synth`, and stored in [`ScheduleMeta`]; trace-replay's
/// schedule module generates the offsets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrival {
    /// Exponential gaps at the rate (the default).
    Poisson,
    /// Gamma gaps with shape `burstiness` K and mean `1/rate`: K = 1 is Poisson, K < 1 burstier,
    /// K > 1 smoother; the gaps' CV is `1/sqrt(K)` (vLLM's `--burstiness`).
    Gamma {
        /// Shape K.
        burstiness: f64,
    },
    /// Evenly spaced: the k-th request at `k / rate`.
    Constant,
    /// A non-homogeneous Poisson process whose rate follows a daily profile (mean: the rate).
    Daily {
        /// How the rate varies.
        profile: DailyProfile,
    },
}

/// How a [`Arrival::Daily`] rate varies over time; the profile's mean is 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case")]
pub enum DailyProfile {
    /// `1 + amplitude * cos(2 pi (t - peak) / period)`.
    Sinusoid {
        /// Relative swing, 0 to 1.
        amplitude: f64,
        /// Cycle length in seconds (86400 for a day).
        period_s: f64,
        /// Offset of the peak from the start, in seconds.
        peak_s: f64,
    },
    /// Relative weights per hour (24 values for a day), normalised to mean 1.
    Hourly {
        /// One weight per hour.
        weights: Vec<f64>,
    },
}

impl Arrival {
    /// Checks the parameters; the message names the bad value.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Arrival::Poisson | Arrival::Constant => Ok(()),
            Arrival::Gamma { burstiness } => {
                if burstiness.is_finite() && *burstiness > 0.0 {
                    Ok(())
                } else {
                    Err(format!(
                        "invalid burstiness '{burstiness}': must be a finite number > 0"
                    ))
                }
            }
            Arrival::Daily { profile } => profile.check(),
        }
    }

    /// Short name: `poisson`, `gamma`, `constant`, `daily`.
    pub fn name(&self) -> &'static str {
        match self {
            Arrival::Poisson => "poisson",
            Arrival::Gamma { .. } => "gamma",
            Arrival::Constant => "constant",
            Arrival::Daily { .. } => "daily",
        }
    }
}

impl DailyProfile {
    /// The rate multiplier at `t_s` seconds from the start (mean 1 over a period).
    pub fn factor(&self, t_s: f64) -> f64 {
        match self {
            DailyProfile::Sinusoid {
                amplitude,
                period_s,
                peak_s,
            } => 1.0 + amplitude * (std::f64::consts::TAU * (t_s - peak_s) / period_s).cos(),
            DailyProfile::Hourly { weights } => {
                let mean = weights.iter().sum::<f64>() / weights.len() as f64;
                let hour =
                    ((t_s / 3600.0).floor() as i64).rem_euclid(weights.len() as i64) as usize;
                weights[hour] / mean
            }
        }
    }

    /// The largest multiplier.
    pub fn max_factor(&self) -> f64 {
        match self {
            DailyProfile::Sinusoid { amplitude, .. } => 1.0 + amplitude,
            DailyProfile::Hourly { weights } => {
                let mean = weights.iter().sum::<f64>() / weights.len() as f64;
                weights.iter().copied().fold(0.0, f64::max) / mean
            }
        }
    }

    /// Checks the parameters; the message names the bad value.
    pub fn check(&self) -> Result<(), String> {
        match self {
            DailyProfile::Sinusoid {
                amplitude,
                period_s,
                peak_s,
            } => {
                if !(0.0..=1.0).contains(amplitude) {
                    return Err(format!(
                        "invalid amplitude '{amplitude}': must be in [0, 1]"
                    ));
                }
                if !(period_s.is_finite() && *period_s > 0.0) {
                    return Err(format!("invalid period '{period_s}' s: must be > 0"));
                }
                if !peak_s.is_finite() {
                    return Err(format!("invalid peak '{peak_s}' s: must be finite"));
                }
                Ok(())
            }
            DailyProfile::Hourly { weights } => {
                if weights.is_empty()
                    || weights.iter().any(|x| !x.is_finite() || *x < 0.0)
                    || weights.iter().sum::<f64>() <= 0.0
                {
                    return Err(
                        "invalid hourly profile: give non-negative weights, at least one > 0"
                            .into(),
                    );
                }
                Ok(())
            }
        }
    }
}

/// How a run's or a workload's requests were scheduled, stored under [`meta::SCHEDULE`]:
/// enough, with the seed, to reproduce the schedule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleMeta {
    /// The synthetic arrival process; None: a trace's recorded timeline (or a capture).
    pub arrival: Option<Arrival>,
    /// One stage per rate, req/s (`inf`: all at once); empty for a recorded timeline.
    #[serde(with = "rates_json")]
    pub rates: Vec<f64>,
    /// A recorded timeline's time multiplier.
    pub time_scale: Option<f64>,
    /// Requests per stage, when every stage has the same count.
    pub requests_per_stage: Option<u64>,
    /// Each stage's length in seconds (`--stage-duration`).
    pub stage_duration_s: Option<f64>,
    /// Warmup requests before the first stage.
    pub warmup: u64,
    /// The concurrency cap.
    pub max_concurrency: Option<usize>,
    /// A concurrency sweep's caps, one closed-loop stage each (`conc=C`); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub concurrencies: Vec<usize>,
    /// Seed of the schedule.
    pub seed: Option<u64>,
    /// Random schedules rescaled so their realised mean rate is the target exactly.
    pub rescaled_to_exact_rate: bool,
    /// How send deadlines were met (`thread`, `tokio`).
    pub timer: Option<String>,
    /// A synthetic workload's span of arrivals, seconds.
    pub duration_s: Option<f64>,
    /// A synthetic workload's request count.
    pub count: Option<u64>,
}

/// JSON has no infinity: rates are numbers, `inf` the string `"inf"`.
mod rates_json {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Rate {
        Num(f64),
        Text(String),
    }

    pub(super) fn serialize<S: Serializer>(rates: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<Rate> = rates
            .iter()
            .map(|&r| {
                if r.is_infinite() {
                    Rate::Text("inf".into())
                } else {
                    Rate::Num(r)
                }
            })
            .collect();
        v.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Rate>::deserialize(d)?
            .into_iter()
            .map(|r| match r {
                Rate::Num(n) => Ok(n),
                Rate::Text(t) if t.eq_ignore_ascii_case("inf") => Ok(f64::INFINITY),
                Rate::Text(t) => Err(D::Error::custom(format!("invalid rate '{t}'"))),
            })
            .collect()
    }
}

/// The client's settings, stored under [`meta::CLIENT`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientMeta {
    /// The route (`chat`, `completions`).
    pub endpoint: String,
    /// The model sent.
    pub model: String,
    /// The per-request timeout, seconds.
    pub timeout_s: f64,
    /// `ignore_eos` was sent.
    pub ignore_eos: bool,
    /// Usage was asked for on every chunk.
    pub continuous_usage: bool,
    /// The tokenizer.json used, if any.
    pub tokenizer: Option<String>,
    /// How prompt lengths were made exact: `tokenizer` (a local tokenizer.json),
    /// `tokenize-endpoint` (calibrated through the server's `/tokenize`), `token-ids`, or
    /// `words` (whitespace words, exact only on word-level vocabularies like the simulator's).
    pub prompt_lengths: Option<String>,
    /// Tokens the server's chat template adds to each prompt, when measured; the content was
    /// shortened by this much so that the server prefills the workload's length.
    pub chat_template_tokens: Option<u32>,
    /// How per-event token counts were obtained: `usage` (continuous usage), `timings`
    /// (llama.cpp's `timings_per_token`), `events` (one per content event).
    pub event_tokens: Option<String>,
    /// Names of the extra headers sent (`--header`); their values are never stored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// The server's certificate was not verified (`--insecure`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_insecure: bool,
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

    /// GPU telemetry samples; empty when none were recorded.
    pub fn gpu_samples(&self) -> Vec<GpuSample> {
        self.json(meta::GPU_SAMPLES).unwrap_or_default()
    }

    /// Stores the schedule.
    pub fn set_schedule(&mut self, schedule: &ScheduleMeta) {
        self.set(meta::SCHEDULE, to_json(schedule));
    }

    /// The schedule, when present and readable.
    pub fn schedule(&self) -> Option<ScheduleMeta> {
        self.json(meta::SCHEDULE)
    }

    /// Stores the client settings.
    pub fn set_client(&mut self, client: &ClientMeta) {
        self.set(meta::CLIENT, to_json(client));
    }

    /// The client settings, when present and readable.
    pub fn client(&self) -> Option<ClientMeta> {
        self.json(meta::CLIENT)
    }

    /// Parses a JSON-valued key.
    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        serde_json::from_str(self.get(key)?).ok()
    }
}

/// The JSON text of a metadata value.
pub fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    // Serialising plain structs of numbers and strings cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_round_trips_with_infinite_rates_and_every_arrival() {
        for arrival in [
            None,
            Some(Arrival::Poisson),
            Some(Arrival::Gamma { burstiness: 0.5 }),
            Some(Arrival::Constant),
            Some(Arrival::Daily {
                profile: DailyProfile::Hourly {
                    weights: vec![1.0, 2.0],
                },
            }),
        ] {
            let s = ScheduleMeta {
                arrival,
                rates: vec![1.0, f64::INFINITY],
                seed: Some(7),
                ..ScheduleMeta::default()
            };
            let mut m = TraceMeta::new();
            m.set_schedule(&s);
            assert!(m.get(meta::SCHEDULE).unwrap().contains("\"inf\""));
            assert_eq!(m.schedule(), Some(s));
        }
    }

    #[test]
    fn arrival_checks_name_the_value() {
        let e = Arrival::Gamma { burstiness: 0.0 }.check().unwrap_err();
        assert!(e.contains("'0'"), "{e}");
        let amp = DailyProfile::Sinusoid {
            amplitude: 1.5,
            period_s: 86400.0,
            peak_s: 0.0,
        };
        assert!(amp.check().unwrap_err().contains("1.5"));
        assert!(
            DailyProfile::Hourly {
                weights: vec![0.0; 24]
            }
            .check()
            .is_err()
        );
    }
}
