//! Calibration in virtual time: a ShareGPT-like Poisson workload, per-rate P50 TTFT/TPOT, and the
//! saturation test of DESIGN.md (OLS slope of TTFT over arrival time, 95% CI).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::engine::{Arrival, EngineParams, simulate};
use crate::profile::{LMDEPLOY_3090, VLLM_3090};

/// The seed benchmark's published numbers: `(profile, rate req/s, P50 TTFT ms, P50 TPOT ms)`.
pub const PUBLISHED: &[(&str, f64, f64, f64)] = &[
    (VLLM_3090, 1.0, 68.75, 24.68),
    (VLLM_3090, 2.0, 68.18, 29.64),
    (VLLM_3090, 5.0, 119.85, 82.95),
    (VLLM_3090, 8.0, 24919.84, 104.71),
    (LMDEPLOY_3090, 1.0, 69.06, 22.40),
    (LMDEPLOY_3090, 2.0, 67.81, 26.59),
    (LMDEPLOY_3090, 5.0, 97.06, 32.18),
    (LMDEPLOY_3090, 8.0, 217.03, 74.94),
];

/// Requests per rate in the calibration runs (the seed benchmark sends 1000 per rate; the P50
/// TTFT of a saturated stage grows with the stage's length).
pub const CALIBRATION_REQUESTS: usize = 1000;

/// Mean prompt and output lengths of the ShareGPT-like workload, tokens.
pub const MEAN_PROMPT_TOKENS: f64 = 214.0;
/// See [`MEAN_PROMPT_TOKENS`].
pub const MEAN_OUTPUT_TOKENS: f64 = 200.0;

/// `n` Poisson arrivals at `rate` req/s with lognormal prompt (mean 214, sigma 0.9) and output
/// (mean 200, sigma 0.7) lengths, clamped to [4, 2048] and [4, 1024]. Deterministic per seed.
pub fn sharegpt_like(n: usize, rate: f64, seed: u64) -> Vec<Arrival> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let lognormal = |rng: &mut ChaCha8Rng, mean: f64, sigma: f64| {
        let z: f64 = StandardNormal.sample(rng);
        (mean.ln() - sigma * sigma / 2.0 + sigma * z).exp()
    };
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    };
    let mut t = 0.0f64;
    (0..n)
        .map(|_| {
            let u: f64 = rng.random();
            t += -(1.0 - u).ln() / rate;
            let p = lognormal(&mut rng, MEAN_PROMPT_TOKENS, 0.9);
            let o = lognormal(&mut rng, MEAN_OUTPUT_TOKENS, 0.7);
            Arrival {
                at_ns: (t * 1e9) as u64,
                prompt_tokens: p.round().clamp(4.0, 2048.0) as u32,
                output_tokens: o.round().clamp(4.0, 1024.0) as u32,
            }
        })
        .collect()
}

pub use trace_stats::{Slope, ols};

/// One calibration stage's result.
#[derive(Debug, Clone, PartialEq)]
pub struct StageResult {
    /// Offered rate, req/s.
    pub rate: f64,
    /// Requests in the stage.
    pub requests: usize,
    /// Median TTFT, ms.
    pub p50_ttft_ms: f64,
    /// Median per-request TPOT, ms.
    pub p50_tpot_ms: f64,
    /// Slope of TTFT (s) over arrival time (s), after dropping the first 10% of arrivals.
    pub ttft_slope: Option<Slope>,
    /// Largest waiting-queue length seen.
    pub max_waiting: usize,
    /// Preemptions in the stage.
    pub preemptions: u64,
    /// The DESIGN.md rule: TTFT slope significantly > 0 (95% CI above 0) and the projected rise
    /// over the stage exceeds the median TTFT (TTFT at least doubles: a practical threshold, as a
    /// stable stage near capacity shows small but significant drifts).
    pub saturated: bool,
}

fn median(v: &mut [f64]) -> f64 {
    trace_stats::percentile(v, 50.0).unwrap_or(f64::NAN)
}

/// Runs one stage of `requests` at `rate` through `params` in virtual time.
pub fn run_stage(params: &EngineParams, rate: f64, requests: usize, seed: u64) -> StageResult {
    let arrivals = sharegpt_like(requests, rate, seed);
    let run = simulate(params, &arrivals);
    let mut ttft: Vec<f64> = run
        .requests
        .iter()
        .filter_map(|r| r.ttft_ns())
        .map(|t| t as f64 / 1e6)
        .collect();
    let mut tpot: Vec<f64> = run
        .requests
        .iter()
        .filter_map(|r| r.tpot_ns())
        .map(|t| t / 1e6)
        .collect();
    let skip = requests / 10;
    let (x, y): (Vec<f64>, Vec<f64>) = run
        .requests
        .iter()
        .skip(skip)
        .filter_map(|r| Some((r.arrival_ns as f64 / 1e9, r.ttft_ns()? as f64 / 1e9)))
        .unzip();
    let ttft_slope = ols(&x, &y);
    let p50_ttft_ms = median(&mut ttft);
    let span_s = x.last().copied().unwrap_or(0.0) - x.first().copied().unwrap_or(0.0);
    let saturated =
        ttft_slope.is_some_and(|s| s.significant_up() && s.slope * span_s * 1e3 > p50_ttft_ms);
    StageResult {
        rate,
        requests,
        p50_ttft_ms,
        p50_tpot_ms: median(&mut tpot),
        ttft_slope,
        max_waiting: run.queue.iter().map(|q| q.1).max().unwrap_or(0),
        preemptions: run.preemptions,
        saturated,
    }
}
