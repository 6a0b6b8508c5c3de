//! trace-sim: an OpenAI-compatible engine simulator, the embedded default target of `trace
//! replay` and the fault injector of the tests.
//!
//! - [`engine`]: a pure, deterministic continuous-batching state machine (waiting FIFO, admission
//!   by max running sequences and KV blocks, chunked or prefill-first steps, preemption by
//!   recompute, a linear step-time model), runnable in virtual time ([`engine::simulate`]).
//! - [`profile`]: named engine models fitted to published runs; [`calibrate`]: the fitting
//!   workload and the saturation test; [`fit`]: an engine model fitted to a real capture,
//!   stored as a profile file (`trace sim --fit`, `--profile FILE.json`).
//! - [`fault`]: faults on demand; the server (axum, one scheduler task per engine) in [`serve`]
//!   and [`spawn`] (its own OS thread and current-thread runtime);
//! - [`truth`]: the ground-truth file, written by the server and read by [`read_truth`].
//!
//! It depends only on trace-stats and trace-sys: the HTTP surface is its contract with the
//! client side, which uses the simulator as a dev-dependency (the command line starts it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub mod calibrate;
pub mod engine;
pub mod fault;
pub mod fit;
pub mod prefix_cache;
pub mod profile;
mod server;
pub mod truth;

pub use engine::EngineParams;
pub use fault::{Fault, FaultSpec};
pub use profile::{DEFAULT_PROFILE, profile_names};
pub use server::{SimHandle, serve, serve_workers, spawn};
pub use truth::{TruthRecord, read_truth};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A TLS certificate or key that cannot be served.
    #[error("TLS: {0}")]
    Tls(#[from] trace_sys::tls::TlsFileError),
    /// No profile has this name.
    #[error("unknown simulator profile '{name}' (known: {known}, or 'fixed')")]
    UnknownProfile {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A fault specification did not parse.
    #[error("invalid fault spec '{spec}': {reason}")]
    InvalidFault {
        /// The text given.
        spec: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A profile file could not be read or is not a fitted profile.
    #[error("profile file {}: {reason}", path.display())]
    ProfileFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An output-length distribution did not parse.
    #[error("invalid output distribution '{spec}': {reason}")]
    InvalidOutputDist {
        /// The text given.
        spec: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid simulator setting {name}: {reason}")]
    InvalidSetting {
        /// The setting.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The tokenizer file could not be loaded.
    #[error("cannot load tokenizer {path}: {reason}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The tokenizers crate's message.
        reason: String,
    },
    /// The ground-truth file could not be created, written or read.
    #[error("ground truth file {}", path.display())]
    Truth {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A ground-truth line is not a [`TruthRecord`].
    #[error("ground truth file {}, line {line}", path.display())]
    TruthLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The runtime or server failed.
    #[error("simulator server failed")]
    Server(#[source] std::io::Error),
    /// The simulator thread panicked.
    #[error("simulator thread panicked")]
    Panicked,
}

/// How long each request takes.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeModel {
    /// The continuous-batching engine model.
    Engine(EngineParams),
    /// Constant TTFT and inter-token time per request: no batching, no limit on running
    /// requests (for `trace selfcheck` and protocol tests).
    Fixed {
        /// Time to first token.
        ttft: Duration,
        /// Time between tokens.
        itl: Duration,
    },
}

/// An output-length distribution, used when a request does not set `ignore_eos` (the sampled
/// length plays the part of the EOS token, capped by `max_tokens`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputDist {
    /// Lognormal with this mean and log-space sigma: `lognormal:MEAN:SIGMA`.
    LogNormal {
        /// Mean length, tokens.
        mean: f64,
        /// Log-space standard deviation.
        sigma: f64,
    },
    /// Uniform integers in `[lo, hi]`: `uniform:LO:HI`.
    Uniform {
        /// Smallest length.
        lo: u32,
        /// Largest length.
        hi: u32,
    },
    /// Exponential with this mean: `exp:MEAN`.
    Exponential {
        /// Mean length, tokens.
        mean: f64,
    },
}

impl FromStr for OutputDist {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidOutputDist {
            spec: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize| -> Result<f64, Error> {
            let v: f64 = parts
                .get(i)
                .ok_or_else(|| bad("missing parameter"))?
                .parse()
                .map_err(|_| bad("not a number"))?;
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(bad("parameters must be > 0"))
            }
        };
        match parts[0] {
            "lognormal" if parts.len() == 3 => Ok(Self::LogNormal {
                mean: num(1)?,
                sigma: num(2)?,
            }),
            "uniform" if parts.len() == 3 => {
                let (lo, hi) = (num(1)? as u32, num(2)? as u32);
                if lo > hi {
                    return Err(bad("lo must be <= hi"));
                }
                Ok(Self::Uniform { lo, hi })
            }
            "exp" if parts.len() == 2 => Ok(Self::Exponential { mean: num(1)? }),
            _ => Err(bad(
                "expected lognormal:MEAN:SIGMA, uniform:LO:HI or exp:MEAN",
            )),
        }
    }
}

impl OutputDist {
    /// A length from the distribution for uniform draws `u1, u2` in (0, 1).
    pub(crate) fn sample(&self, u1: f64, u2: f64) -> u32 {
        let v = match *self {
            Self::LogNormal { mean, sigma } => {
                // Box-Muller: deterministic from the request's two draws.
                let z =
                    (-2.0 * u1.max(1e-300).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (mean.ln() - sigma * sigma / 2.0 + sigma * z).exp()
            }
            Self::Uniform { lo, hi } => f64::from(lo) + (u1 * f64::from(hi - lo + 1)).floor(),
            Self::Exponential { mean } => -mean * (1.0 - u1).ln(),
        };
        v.round().clamp(1.0, f64::from(u32::MAX)) as u32
    }
}

/// Everything the simulator needs to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Profile name, reported in logs (`fixed` for the fixed model).
    pub profile: String,
    /// Model name served by /v1/models and echoed when a request names none.
    pub model: String,
    /// The time model.
    pub time: TimeModel,
    /// Faults injected into a fraction of requests.
    pub faults: FaultSpec,
    /// Where to write ground-truth JSON lines, if anywhere.
    pub truth: Option<PathBuf>,
    /// Seed for faults and output lengths.
    pub seed: u64,
    /// Output-length distribution for requests without `ignore_eos`; None: always `max_tokens`.
    pub output_dist: Option<OutputDist>,
    /// Output length when a request sets neither `max_tokens` nor `max_completion_tokens`.
    pub default_max_tokens: u32,
    /// The first this-many output tokens of each response are reasoning (a thinking phase
    /// before the answer), where the route has a reasoning channel (chat, responses,
    /// messages); at least one answer token always follows. 0: no reasoning.
    pub reasoning_tokens: u32,
    /// Prefix-cache capacity in tokens (see [`prefix_cache`]); None turns caching off. The
    /// default is the engine's KV capacity (vLLM caches in free KV blocks), 2^20 tokens for the
    /// fixed model (which reports cached tokens but keeps its fixed timing).
    pub prefix_cache_tokens: Option<u64>,
    /// Hugging Face tokenizer.json that counts prompt tokens; None counts whitespace words.
    pub tokenizer: Option<PathBuf>,
    /// Serve HTTPS with these files; None: plain HTTP.
    pub tls: Option<SimTls>,
}

/// The simulator's HTTPS settings (PEM files).
#[derive(Debug, Clone, PartialEq)]
pub struct SimTls {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl SimConfig {
    /// The named profile (see [`profile_names`]), or a profile file written by `trace sim
    /// --fit` (a path ending in `.json`); `fixed` gives 50 ms TTFT and 10 ms ITL.
    pub fn from_profile(name: &str) -> Result<Self, Error> {
        if name.ends_with(".json") {
            let path = std::path::Path::new(name);
            let text = std::fs::read_to_string(path).map_err(|source| Error::ProfileFile {
                path: path.to_path_buf(),
                reason: source.to_string(),
            })?;
            let p: fit::FittedProfile =
                serde_json::from_str(&text).map_err(|e| Error::ProfileFile {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            return Ok(Self::with_time(
                &p.name,
                &p.model,
                TimeModel::Engine(p.params),
            ));
        }
        if name == profile::FIXED {
            return Ok(Self::fixed(
                Duration::from_millis(50),
                Duration::from_millis(10),
            ));
        }
        let p = profile::profile(name).ok_or_else(|| Error::UnknownProfile {
            name: name.to_string(),
            known: profile_names().join(", "),
        })?;
        Ok(Self::with_time(
            p.name,
            p.model,
            TimeModel::Engine(p.params),
        ))
    }

    /// The fixed time model: constant TTFT and inter-token time, unlimited running requests.
    pub fn fixed(ttft: Duration, itl: Duration) -> Self {
        Self::with_time(
            profile::FIXED,
            profile::LLAMA3_8B,
            TimeModel::Fixed { ttft, itl },
        )
    }

    fn with_time(profile: &str, model: &str, time: TimeModel) -> Self {
        let cache_tokens = match &time {
            TimeModel::Engine(p) => p.kv_blocks * u64::from(p.block_size),
            TimeModel::Fixed { .. } => 1 << 20,
        };
        Self {
            profile: profile.to_string(),
            model: model.to_string(),
            time,
            faults: FaultSpec::default(),
            truth: None,
            seed: 0,
            output_dist: None,
            default_max_tokens: 256,
            reasoning_tokens: 0,
            prefix_cache_tokens: Some(cache_tokens),
            tokenizer: None,
            tls: None,
        }
    }

    /// Checks limits that would stall the engine (zero seqs, blocks, block size or budget).
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(t) = &self.tls {
            trace_sys::tls::acceptor(&t.cert, &t.key, t.client_ca.as_deref(), true)?;
        }
        if let TimeModel::Engine(p) = &self.time {
            let checks: [(&'static str, bool); 4] = [
                ("max_num_seqs", p.max_num_seqs == 0),
                ("kv_blocks", p.kv_blocks <= p.watermark_blocks + 1),
                ("block_size", p.block_size == 0),
                ("max_batched_tokens", p.max_batched_tokens == 0),
            ];
            for (name, bad) in checks {
                if bad {
                    return Err(Error::InvalidSetting {
                        name,
                        reason: "must be > 0 (kv_blocks > watermark + 1)".into(),
                    });
                }
            }
        }
        if self.default_max_tokens == 0 {
            return Err(Error::InvalidSetting {
                name: "default_max_tokens",
                reason: "must be > 0".into(),
            });
        }
        Ok(())
    }
}

impl Default for SimConfig {
    /// The [`DEFAULT_PROFILE`].
    fn default() -> Self {
        Self::from_profile(DEFAULT_PROFILE)
            .unwrap_or_else(|_| Self::fixed(Duration::from_millis(50), Duration::from_millis(10)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_dists_parse_and_sample() {
        assert_eq!(
            "exp:200".parse::<OutputDist>().unwrap(),
            OutputDist::Exponential { mean: 200.0 }
        );
        let u: OutputDist = "uniform:10:20".parse().unwrap();
        for i in 1..100 {
            let v = u.sample(f64::from(i) / 100.0, 0.5);
            assert!((10..=20).contains(&v), "{v}");
        }
        let l: OutputDist = "lognormal:200:0.7".parse().unwrap();
        let mean = (1..1000)
            .map(|i| f64::from(l.sample(f64::from(i) / 1000.0, 0.3)))
            .sum::<f64>()
            / 999.0;
        assert!(mean > 50.0 && mean < 800.0, "{mean}");
        for bad in [
            "",
            "exp",
            "exp:-1",
            "uniform:5:1",
            "lognormal:1",
            "normal:1:2",
        ] {
            assert!(bad.parse::<OutputDist>().is_err(), "{bad}");
        }
    }

    #[test]
    fn profiles_and_validation() {
        for name in profile_names() {
            let c = SimConfig::from_profile(name).unwrap();
            assert_eq!(c.model, profile::LLAMA3_8B);
            c.validate().unwrap();
        }
        assert_eq!(SimConfig::default().profile, DEFAULT_PROFILE);
        assert!(matches!(
            SimConfig::from_profile("fixed").unwrap().time,
            TimeModel::Fixed { .. }
        ));
        let e = SimConfig::from_profile("nope").unwrap_err().to_string();
        assert!(e.contains("'nope'") && e.contains(DEFAULT_PROFILE), "{e}");
    }
}
