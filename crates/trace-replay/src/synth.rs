//! Synthetic workloads (`trace synth`): arrivals from the same generators `trace replay` uses
//! ([`crate::schedule::arrivals`] of an [`Arrival`]: Poisson, gamma, constant, daily cycle) and
//! prompt/output lengths ([`LengthDist`], given or fitted from a trace with [`fit_lognormal`]),
//! seeded with ChaCha8 so a seed names one workload on every machine.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Pareto};
use serde_json::json;
use trace_format::{
    ScheduleMeta, TraceMeta, TraceReader, TraceRecord, TraceWriter, WriterOptions, meta,
};

use crate::Error;
use crate::schedule::{Arrival, arrivals};

type Result<T, E = Error> = std::result::Result<T, E>;

/// The `stage` label of synthetic workloads, as trace-import labels imported ones (replay sets
/// its own).
pub const WORKLOAD_STAGE: &str = trace_import::WORKLOAD_STAGE;

/// Sampled lengths are clamped to 1..=this many tokens, so heavy Pareto tails stay sendable.
pub const MAX_LEN: i32 = 1 << 20;

/// A length distribution in tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LengthDist {
    /// Always this length.
    Fixed(u32),
    /// exp(Normal(mu, sigma)).
    LogNormal {
        /// Mean of ln(length).
        mu: f64,
        /// Standard deviation of ln(length).
        sigma: f64,
    },
    /// Pareto with minimum `scale` and tail index `shape`.
    Pareto {
        /// Minimum length.
        scale: f64,
        /// Tail index (smaller: heavier tail).
        shape: f64,
    },
}

impl LengthDist {
    /// Draws one length, clamped to 1..=[`MAX_LEN`].
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i32 {
        let x = match *self {
            LengthDist::Fixed(n) => return i32::try_from(n).unwrap_or(MAX_LEN).clamp(1, MAX_LEN),
            LengthDist::LogNormal { mu, sigma } => {
                LogNormal::new(mu, sigma).map_or(1.0, |d| d.sample(rng))
            }
            LengthDist::Pareto { scale, shape } => {
                Pareto::new(scale, shape).map_or(1.0, |d| d.sample(rng))
            }
        };
        if x.is_finite() {
            (x.round() as i64).clamp(1, i64::from(MAX_LEN)) as i32
        } else {
            MAX_LEN
        }
    }

    /// The spec string this parses from (`lognormal:6.9,0.9`).
    pub fn spec(&self) -> String {
        match *self {
            LengthDist::Fixed(n) => format!("fixed:{n}"),
            LengthDist::LogNormal { mu, sigma } => format!("lognormal:{mu:.4},{sigma:.4}"),
            LengthDist::Pareto { scale, shape } => format!("pareto:{scale},{shape}"),
        }
    }
}

impl FromStr for LengthDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid length distribution '{s}': {why}");
        let (kind, args) = s
            .split_once(':')
            .ok_or_else(|| bad("expected lognormal:MU,SIGMA, pareto:SCALE,SHAPE or fixed:N"))?;
        let nums: Vec<f64> = args
            .split(',')
            .map(|x| {
                x.trim()
                    .parse::<f64>()
                    .map_err(|_| bad(&format!("'{x}' is not a number")))
            })
            .collect::<Result<_, _>>()?;
        if nums.iter().any(|x| !x.is_finite()) {
            return Err(bad("parameters must be finite"));
        }
        match (kind.trim().to_ascii_lowercase().as_str(), nums.as_slice()) {
            ("fixed", [n]) if *n >= 1.0 && n.fract() == 0.0 && *n <= f64::from(MAX_LEN) => {
                Ok(LengthDist::Fixed(*n as u32))
            }
            ("fixed", _) => Err(bad("fixed takes one whole number >= 1")),
            ("lognormal", [mu, sigma]) if *sigma >= 0.0 => Ok(LengthDist::LogNormal {
                mu: *mu,
                sigma: *sigma,
            }),
            ("lognormal", _) => Err(bad("lognormal takes MU,SIGMA with SIGMA >= 0")),
            ("pareto", [scale, shape]) if *scale > 0.0 && *shape > 0.0 => Ok(LengthDist::Pareto {
                scale: *scale,
                shape: *shape,
            }),
            ("pareto", _) => Err(bad("pareto takes SCALE,SHAPE, both > 0")),
            (other, _) => Err(bad(&format!("unknown distribution '{other}'"))),
        }
    }
}

/// A lognormal fit: the mean and standard deviation of ln(length) over `n` positive values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LognormalFit {
    /// Mean of ln(x).
    pub mu: f64,
    /// Standard deviation of ln(x) (maximum likelihood, divides by n).
    pub sigma: f64,
    /// Values fitted.
    pub n: u64,
}

impl LognormalFit {
    /// The fitted distribution.
    pub fn dist(&self) -> LengthDist {
        LengthDist::LogNormal {
            mu: self.mu,
            sigma: self.sigma,
        }
    }

    /// The fitted distribution's median, exp(mu).
    pub fn median(&self) -> f64 {
        self.mu.exp()
    }
}

#[derive(Default)]
struct Moments {
    n: u64,
    sum: f64,
    sum_sq: f64,
}

impl Moments {
    fn add(&mut self, x: Option<i32>) {
        if let Some(x) = x.filter(|&x| x > 0) {
            let l = f64::from(x).ln();
            self.n += 1;
            self.sum += l;
            self.sum_sq += l * l;
        }
    }

    fn fit(&self) -> Option<LognormalFit> {
        (self.n > 0).then(|| {
            let n = self.n as f64;
            let mu = self.sum / n;
            LognormalFit {
                mu,
                sigma: (self.sum_sq / n - mu * mu).max(0.0).sqrt(),
                n: self.n,
            }
        })
    }
}

/// Lognormal fits of a trace's prompt lengths and output lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitSummary {
    /// Fit of `prompt_tokens`.
    pub prompt: LognormalFit,
    /// Fit of `max_tokens` (a workload's output length), else `output_tokens`.
    pub output: LognormalFit,
}

/// Fits lognormal distributions to a trace's prompt and output lengths, streaming its rows.
/// Rows failed in the source and non-positive lengths are left out.
pub fn fit_lognormal(path: &Path) -> Result<FitSummary> {
    let reader = TraceReader::open(path)?;
    let (mut p, mut o) = (Moments::default(), Moments::default());
    for rec in reader.records() {
        let rec = rec?;
        if rec.error_kind.is_some() {
            continue;
        }
        p.add(rec.prompt_tokens);
        o.add(rec.max_tokens.or(rec.output_tokens));
    }
    let none = |what: &str| Error::Workload {
        path: path.to_path_buf(),
        problem: format!("no positive {what} to fit a length distribution to"),
    };
    Ok(FitSummary {
        prompt: p.fit().ok_or_else(|| none("prompt_tokens"))?,
        output: o.fit().ok_or_else(|| none("max_tokens or output_tokens"))?,
    })
}

/// A validated `trace synth` request.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// The workload file to write.
    pub output: PathBuf,
    /// Replace an existing trace at `output` (`--force`); off, an existing file is refused.
    pub force: bool,
    /// Arrival process.
    pub arrival: Arrival,
    /// Mean rate, req/s.
    pub rate: f64,
    /// Stop after this span of arrivals.
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    pub count: Option<u64>,
    /// Prompt lengths; overrides the fit.
    pub input: Option<LengthDist>,
    /// Output lengths; overrides the fit.
    pub output_len: Option<LengthDist>,
    /// Fit missing length distributions from this trace.
    pub fit: Option<PathBuf>,
    /// RNG seed.
    pub seed: u64,
    /// Model name for every row.
    pub model: Option<String>,
    /// Sessions instead of single requests: arrivals (and `count`) are then sessions.
    pub sessions: Option<SessionSynth>,
}

/// Tokens per `hash_ids` block of synthetic session prefixes.
pub const SYNTH_BLOCK_TOKENS: u32 = 16;

/// A think-time distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThinkDist {
    /// Always this long.
    Fixed(Duration),
    /// Exponential with this mean (a user's pauses, a tool's run times).
    Exponential(Duration),
}

impl ThinkDist {
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> i64 {
        let ns = match *self {
            ThinkDist::Fixed(d) => d.as_nanos() as f64,
            ThinkDist::Exponential(d) => {
                let u: f64 = rng.random();
                -(1.0 - u).ln() * d.as_nanos() as f64
            }
        };
        ns.round().clamp(0.0, i64::MAX as f64) as i64
    }

    /// The spec string (`exp:2s`, `fixed:500ms`).
    pub fn spec(&self) -> String {
        match self {
            ThinkDist::Fixed(d) => format!("fixed:{d:?}"),
            ThinkDist::Exponential(d) => format!("exp:{d:?}"),
        }
    }
}

/// How `trace synth` makes sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionSynth {
    /// Turns per session (a distribution; `fixed:N` for N).
    pub turns: LengthDist,
    /// Client-side delay before each later turn.
    pub think: ThinkDist,
    /// Tokens of the shared system prompt at the start of every session (0: none).
    pub prefix_len: u32,
    /// Distinct shared prefixes; session k uses prefix k mod G.
    pub prefix_groups: u32,
}

/// One synthetic session's rows, turn by turn: the first carries the group prefix and its own
/// input as `hash_ids` blocks; each later one is its parent's prompt plus the parent's reply
/// plus new input, scheduled (as a workload, not a measurement) at the parent's time plus the
/// think time.
fn session_rows(
    s: &SessionSynth,
    k: u64,
    t0: i64,
    input: &LengthDist,
    output: &LengthDist,
    rng: &mut ChaCha8Rng,
    model: &Option<String>,
) -> Vec<TraceRecord> {
    let turns = s.turns.sample(rng).max(1) as usize;
    let group = k % u64::from(s.prefix_groups.max(1));
    let bs = SYNTH_BLOCK_TOKENS;
    let mut rows: Vec<TraceRecord> = Vec::with_capacity(turns);
    for j in 0..turns {
        let new_input = input.sample(rng);
        let max_tokens = output.sample(rng);
        let id = format!("s{k}-t{j}");
        let mut rec = TraceRecord {
            request_id: id,
            stage: WORKLOAD_STAGE.into(),
            session_id: Some(format!("s{k}")),
            turn: Some(j as i32),
            max_tokens: Some(max_tokens),
            model: model.clone(),
            ..TraceRecord::default()
        };
        match rows.last() {
            None => {
                let prefix_blocks = s.prefix_len.div_ceil(bs);
                let own_blocks = (new_input as u32).div_ceil(bs);
                // Group blocks are numbered below 2^32, a session's own blocks above: no
                // accidental sharing.
                rec.hash_ids = (0..prefix_blocks)
                    .map(|b| (group << 20) | u64::from(b))
                    .chain((0..own_blocks).map(|b| (1 << 32) | (k << 16) | u64::from(b)))
                    .collect();
                rec.prompt_tokens = Some((s.prefix_len as i32).saturating_add(new_input));
                rec.scheduled_ns = t0;
            }
            Some(p) => {
                let think = s.think.sample(rng);
                rec.prompt_tokens = Some(
                    p.prompt_tokens
                        .unwrap_or(0)
                        .saturating_add(p.max_tokens.unwrap_or(0))
                        .saturating_add(new_input),
                );
                rec.parent_id = Some(p.request_id.clone());
                rec.think_ns = Some(think);
                rec.scheduled_ns = p.scheduled_ns.saturating_add(think);
            }
        }
        rows.push(rec);
    }
    rows
}

/// What [`synth`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    /// Requests written.
    pub rows: u64,
    /// Sessions written, when making sessions.
    pub sessions: Option<u64>,
    /// Last arrival offset, ns.
    pub last_ns: i64,
    /// Prompt-length distribution used.
    pub input: LengthDist,
    /// Output-length distribution used.
    pub output: LengthDist,
    /// The fit, when `--fit` was given.
    pub fit: Option<FitSummary>,
}

/// Default prompt lengths without a fit: lognormal with median ~1000 tokens (Azure conv-like).
const DEFAULT_INPUT: LengthDist = LengthDist::LogNormal {
    mu: 6.9,
    sigma: 0.9,
};
/// Default output lengths without a fit: lognormal with median ~150 tokens.
const DEFAULT_OUTPUT: LengthDist = LengthDist::LogNormal {
    mu: 5.0,
    sigma: 0.9,
};

/// Writes a synthetic workload.
pub fn synth(cfg: &SynthConfig) -> Result<SynthSummary> {
    if cfg.duration.is_none() && cfg.count.is_none() {
        return Err(Error::Config("give --duration or -n (or both)".into()));
    }
    if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
        return Err(Error::Config(format!(
            "invalid rate '{}': must be a finite number > 0",
            cfg.rate
        )));
    }
    let arrivals = arrivals(&cfg.arrival, cfg.rate, cfg.seed)?;
    let fit = cfg.fit.as_deref().map(fit_lognormal).transpose()?;
    let input = cfg
        .input
        .or(fit.map(|f| f.prompt.dist()))
        .unwrap_or(DEFAULT_INPUT);
    let output = cfg
        .output_len
        .or(fit.map(|f| f.output.dist()))
        .unwrap_or(DEFAULT_OUTPUT);
    let mut m = TraceMeta::new();
    m.set(meta::KIND, "workload");
    m.set_schedule(&ScheduleMeta {
        arrival: Some(cfg.arrival.clone()),
        rates: vec![cfg.rate],
        seed: Some(cfg.seed),
        duration_s: cfg.duration.map(|d| d.as_secs_f64()),
        count: cfg.count,
        ..ScheduleMeta::default()
    });
    m.set(meta::SEED, cfg.seed.to_string());
    if cfg.sessions.is_some() {
        m.set(meta::HASH_BLOCK_TOKENS, SYNTH_BLOCK_TOKENS.to_string());
    }
    let fit_json = fit.map(|f| {
        json!({
            "file": cfg.fit.as_ref().map(|p| p.display().to_string()),
            "prompt": { "mu": f.prompt.mu, "sigma": f.prompt.sigma, "n": f.prompt.n },
            "output": { "mu": f.output.mu, "sigma": f.output.sigma, "n": f.output.n },
        })
    });
    m.set(
        meta::WORKLOAD,
        json!({
            "kind": "synth",
            "input": input.spec(),
            "output": output.spec(),
            "duration_s": cfg.duration.map(|d| d.as_secs_f64()),
            "count": cfg.count,
            "fit": fit_json,
            "sessions": cfg.sessions.map(|s| json!({
                "turns": s.turns.spec(),
                "think_time": s.think.spec(),
                "prefix_len": s.prefix_len,
                "prefix_groups": s.prefix_groups,
            })),
        })
        .to_string(),
    );
    let mut writer = TraceWriter::create(
        &cfg.output,
        m,
        WriterOptions {
            overwrite: cfg.force,
            ..WriterOptions::default()
        },
    )?;
    let mut len_rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // Lengths draw from their own stream, so changing the arrival process keeps the lengths.
    len_rng.set_stream(1);
    let limit_ns = cfg
        .duration
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let mut rows = 0u64;
    let mut units = 0u64;
    let mut last_ns = 0;
    let res: Result<()> = (|| {
        for t in arrivals {
            if cfg.count.is_some_and(|n| units >= n) || limit_ns.is_some_and(|l| t >= l) {
                break;
            }
            units += 1;
            if let Some(s) = &cfg.sessions {
                let k = units - 1;
                for rec in session_rows(s, k, t, &input, &output, &mut len_rng, &cfg.model) {
                    writer.write_owned(rec)?;
                    rows += 1;
                }
                last_ns = t;
                continue;
            }
            let rec = TraceRecord {
                request_id: format!("synth-{rows}"),
                stage: WORKLOAD_STAGE.into(),
                scheduled_ns: t,
                prompt_tokens: Some(input.sample(&mut len_rng)),
                max_tokens: Some(output.sample(&mut len_rng)),
                model: cfg.model.clone(),
                ..TraceRecord::default()
            };
            writer.write_owned(rec)?;
            rows += 1;
            last_ns = t;
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = writer.discard();
        return Err(e);
    }
    writer.close()?;
    Ok(SynthSummary {
        rows,
        sessions: cfg.sessions.map(|_| units),
        last_ns,
        input,
        output,
        fit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_specs() {
        assert_eq!("fixed:128".parse(), Ok(LengthDist::Fixed(128)));
        assert_eq!(
            "lognormal:6.9,0.9".parse(),
            Ok(LengthDist::LogNormal {
                mu: 6.9,
                sigma: 0.9
            })
        );
        assert_eq!(
            "pareto:100,1.5".parse(),
            Ok(LengthDist::Pareto {
                scale: 100.0,
                shape: 1.5
            })
        );
        for bad in [
            "fixed:0",
            "fixed:1.5",
            "lognormal:1",
            "pareto:0,1",
            "zipf:1.1",
            "lognormal",
            "lognormal:a,b",
        ] {
            assert!(bad.parse::<LengthDist>().is_err(), "{bad} parsed");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let d = LengthDist::Pareto {
            scale: 100.0,
            shape: 0.1,
        };
        assert!(
            (0..1000)
                .map(|_| d.sample(&mut rng))
                .all(|x| (100..=MAX_LEN).contains(&x))
        );
    }
}
