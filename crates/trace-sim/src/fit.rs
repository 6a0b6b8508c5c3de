//! A simulator fitted from a capture: [`fit`] estimates the engine model's parameters (slots,
//! step costs of prefill and decode as functions of the batch and the context) from a real
//! engine's requests, so that `trace sim --profile profile.json` serves like that engine did.
//!
//! The model is the simulator's own ([`crate::engine`]): a step costs
//! `a + b*prefill_tokens + c*decoding_seqs + d*kv_tokens_attended`, with chunked steps (every
//! running sequence decodes, prompts fill the rest of the token budget, as llama.cpp, vLLM V1
//! and TurboMind batch) and at most `slots` sequences running. From a capture:
//! - `slots`: the most requests the server reported running (`/metrics`), else the most
//!   requests decoding at once (between their first token and their end: a request the engine
//!   accepted but queued has no token yet);
//! - `a`, `c`, `d`: least squares of each request's TPOT on the batch it decoded in (the
//!   time-averaged number of requests decoding over its decode interval) and the context those
//!   requests attended, coefficients kept non-negative;
//! - `b`: the median, over requests that did not queue (fewer than `slots` others streaming when
//!   sent), of what their TTFT exceeds one decode step by, per prompt token.
//!
//! Fitting is in this crate so the engine model and its estimator change together; the caller
//! reads the capture (trace-sim knows no trace files) and hands [`FitRequest`]s over.

use serde::{Deserialize, Serialize};

use crate::engine::{EngineParams, SchedulePolicy, StepCoeffs};

/// One completed request of a capture, times in ns on one clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitRequest {
    /// When it was sent.
    pub sent_ns: i64,
    /// Its first output token.
    pub first_token_ns: i64,
    /// Its end.
    pub end_ns: i64,
    /// Prompt tokens (the server's count).
    pub prompt_tokens: u32,
    /// Output tokens.
    pub output_tokens: u32,
}

/// A fitted engine model, as stored in a profile file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedProfile {
    /// The profile's name (`trace sim --profile` reports it).
    pub name: String,
    /// The model the simulator serves.
    pub model: String,
    /// The engine model.
    pub params: EngineParams,
    /// What it was fitted from and how well.
    pub fit: FitSummary,
}

/// How a fit went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitSummary {
    /// Requests used for the decode fit.
    pub decode_requests: usize,
    /// Requests used for the prefill fit (sent without queueing).
    pub prefill_requests: usize,
    /// Root-mean-square error of the decode fit, ms of TPOT.
    pub tpot_rmse_ms: f64,
    /// Where the data came from (a file and its stages), for the reader.
    pub source: String,
}

/// Why a capture cannot be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot fit the engine model: {0}")]
pub struct FitError(pub String);

/// Time points sampled across each request's decode interval.
const SAMPLES: usize = 16;

/// Requests in their decode phase at `t`, and the context tokens they attend.
fn decoding_at(reqs: &[FitRequest], t: i64) -> (f64, f64) {
    let (mut n, mut kv) = (0.0, 0.0);
    for r in reqs {
        if r.first_token_ns <= t && t < r.end_ns {
            let done = (t - r.first_token_ns) as f64 / (r.end_ns - r.first_token_ns).max(1) as f64;
            n += 1.0;
            kv += f64::from(r.prompt_tokens) + done * f64::from(r.output_tokens);
        }
    }
    (n, kv)
}

/// Requests streaming (sent and not ended) at `t`, other than `skip`.
fn streaming_at(reqs: &[FitRequest], t: i64, skip: usize) -> usize {
    reqs.iter()
        .enumerate()
        .filter(|(i, r)| *i != skip && r.sent_ns <= t && t < r.end_ns)
        .count()
}

/// Fits the engine model to completed requests. `max_running`: the most requests the server
/// reported running, when it was scraped.
pub fn fit(
    reqs: &[FitRequest],
    max_running: Option<u32>,
    name: &str,
    model: &str,
    source: &str,
) -> Result<FittedProfile, FitError> {
    let reqs: Vec<FitRequest> = reqs
        .iter()
        .copied()
        .filter(|r| r.end_ns > r.first_token_ns && r.first_token_ns >= r.sent_ns)
        .collect();
    let slots = match max_running.filter(|&m| m > 0) {
        Some(m) => m as usize,
        None => reqs
            .iter()
            .map(|r| decoding_at(&reqs, r.first_token_ns).0 as usize)
            .max()
            .unwrap_or(1)
            .max(1),
    };
    // Decode: TPOT = a + c * batch + d * context, over each request's decode interval.
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut batch_of = Vec::with_capacity(reqs.len());
    for r in &reqs {
        if r.output_tokens < 2 {
            batch_of.push(None);
            continue;
        }
        let (mut n, mut kv) = (0.0, 0.0);
        for k in 0..SAMPLES {
            let t = r.first_token_ns
                + (r.end_ns - r.first_token_ns) * (2 * k as i64 + 1) / (2 * SAMPLES as i64);
            let (bn, bkv) = decoding_at(&reqs, t);
            n += bn;
            kv += bkv;
        }
        let (n, kv) = (n / SAMPLES as f64, kv / SAMPLES as f64);
        let tpot = (r.end_ns - r.first_token_ns) as f64 / f64::from(r.output_tokens - 1);
        x.push(vec![1.0, n, kv]);
        y.push(tpot);
        batch_of.push(Some((n, kv)));
    }
    if y.len() < 10 {
        return Err(FitError(format!(
            "{} completed requests with two or more output tokens; at least 10 are needed",
            y.len()
        )));
    }
    let (a, c, d) = nonnegative_fit(&x, &y);
    let rmse = (x
        .iter()
        .zip(&y)
        .map(|(r, t)| (t - (a + c * r[1] + d * r[2])).powi(2))
        .sum::<f64>()
        / y.len() as f64)
        .sqrt();
    // Prefill: what the TTFT of a request admitted at once exceeds one decode step by.
    let mut per_token = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        if streaming_at(&reqs, r.sent_ns, i) >= slots || r.prompt_tokens == 0 {
            continue;
        }
        let (n, kv) = decoding_at(&reqs, r.sent_ns);
        let step = a + c * (n + 1.0) + d * (kv + f64::from(r.prompt_tokens));
        let ttft = (r.first_token_ns - r.sent_ns) as f64;
        per_token.push(((ttft - step) / f64::from(r.prompt_tokens)).max(0.0));
    }
    let b = trace_stats::percentile(&mut per_token, 50.0).unwrap_or(0.0);
    let params = EngineParams {
        max_num_seqs: slots,
        // A fitted engine is limited by its slots, not its cache: a cache large enough for
        // every slot at the longest context seen.
        kv_blocks: (slots as u64 * 1024).max(1 << 16),
        block_size: 16,
        max_batched_tokens: 2048,
        watermark_blocks: 0,
        policy: SchedulePolicy::Chunked,
        coeffs: StepCoeffs {
            a_ns: a,
            b_ns_per_prefill_token: b,
            c_ns_per_decode_seq: c,
            d_ns_per_kv_token: d,
        },
    };
    let _ = batch_of;
    Ok(FittedProfile {
        name: name.to_string(),
        model: model.to_string(),
        params,
        fit: FitSummary {
            decode_requests: y.len(),
            prefill_requests: per_token.len(),
            tpot_rmse_ms: rmse / 1e6,
            source: source.to_string(),
        },
    })
}

/// Least squares of `y` on `[1, batch, context]` with every coefficient non-negative (a
/// step cost is never negative). With three coefficients, exact non-negative least squares is
/// cheapest by enumeration: the optimum is the unconstrained fit on its own support, so fit
/// every subset of the columns and keep the feasible one with the smallest squared error.
fn nonnegative_fit(x: &[Vec<f64>], y: &[f64]) -> (f64, f64, f64) {
    let mut best: Option<(f64, [f64; 3])> = None;
    for mask in 1u8..8 {
        let cols: Vec<usize> = (0..3).filter(|c| mask & (1 << c) != 0).collect();
        let xs: Vec<Vec<f64>> = x
            .iter()
            .map(|r| cols.iter().map(|&c| r[c]).collect())
            .collect();
        let Some(b) = trace_stats::linear_fit(&xs, y) else {
            continue;
        };
        if b.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
            continue;
        }
        let mut coef = [0.0; 3];
        for (&c, v) in cols.iter().zip(&b) {
            coef[c] = *v;
        }
        let sse: f64 = x
            .iter()
            .zip(y)
            .map(|(r, t)| (t - (coef[0] * r[0] + coef[1] * r[1] + coef[2] * r[2])).powi(2))
            .sum();
        if best.is_none_or(|(e, _)| sse < e) {
            best = Some((sse, coef));
        }
    }
    match best {
        Some((_, c)) => (c[0], c[1], c[2]),
        None => {
            let mut v = y.to_vec();
            (
                trace_stats::percentile(&mut v, 50.0).unwrap_or(0.0),
                0.0,
                0.0,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Arrival, simulate};

    /// A capture made by the engine model itself must fit back to roughly its parameters.
    #[test]
    fn a_simulated_capture_fits_back_to_its_engine() {
        let truth = EngineParams {
            max_num_seqs: 8,
            kv_blocks: 1 << 16,
            block_size: 16,
            max_batched_tokens: 2048,
            watermark_blocks: 0,
            policy: SchedulePolicy::Chunked,
            coeffs: StepCoeffs {
                a_ns: 5e6,
                b_ns_per_prefill_token: 20e3,
                c_ns_per_decode_seq: 1e6,
                d_ns_per_kv_token: 0.0,
            },
        };
        // 200 requests at ~6 req/s, 128 prompt and 64 output tokens.
        let arrivals: Vec<Arrival> = (0..200u64)
            .map(|i| Arrival {
                at_ns: i * 170_000_000 + (i * 7919 % 50) * 1_000_000,
                prompt_tokens: 128,
                output_tokens: 64,
            })
            .collect();
        let run = simulate(&truth, &arrivals);
        let reqs: Vec<FitRequest> = run
            .requests
            .iter()
            .zip(&arrivals)
            .map(|(r, a)| FitRequest {
                sent_ns: r.arrival_ns as i64,
                first_token_ns: r.token_ns[0] as i64,
                end_ns: *r.token_ns.last().unwrap() as i64,
                prompt_tokens: a.prompt_tokens,
                output_tokens: a.output_tokens,
            })
            .collect();
        let f = fit(&reqs, Some(8), "t", "m", "simulated").unwrap();
        assert_eq!(f.params.max_num_seqs, 8);
        let c = f.params.coeffs;
        // The step at the batch these requests ran in is recovered within 15%.
        let step = |c: &StepCoeffs, n: f64| c.a_ns + c.c_ns_per_decode_seq * n;
        for n in [2.0, 6.0] {
            let (got, want) = (step(&c, n), step(&truth.coeffs, n));
            assert!(
                (got - want).abs() < 0.15 * want,
                "batch {n}: {got} vs {want}: {c:?}"
            );
        }
        assert!(f.fit.tpot_rmse_ms < 2.0, "{:?}", f.fit);
        let json = serde_json::to_string(&f).unwrap();
        let back: FittedProfile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn too_few_requests_is_an_error_naming_the_count() {
        let e = fit(&[], None, "t", "m", "x").unwrap_err().to_string();
        assert!(e.contains("0 completed"), "{e}");
    }
}
