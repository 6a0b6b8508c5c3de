//! `trace sim --fit CAPTURE`: fits trace-sim's engine model to stages of a real engine's capture
//! (`trace_sim::fit`), writes the profile file, and with `--validate STAGE` predicts that
//! held-out stage in virtual time (`trace_sim::engine::simulate`, the capture's arrivals and
//! lengths) and compares the prediction with what the engine did, through the analyzer: the
//! saturation verdict must match, and TTFT P50, TPOT P50 and throughput must fall within
//! [`BOUNDS`] (exit 1 otherwise).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use trace_format::{ErrorKind, TraceMeta, TraceRecord};
use trace_sim::engine::{Arrival, simulate};
use trace_sim::fit::{FitRequest, FittedProfile, fit};

use super::sim::SimArgs;

/// The held-out stage's relative error bounds: (TTFT P50, TPOT P50, request throughput).
#[cfg_attr(not(feature = "analyze"), allow(dead_code))]
pub(crate) const BOUNDS: (f64, f64, f64) = (0.5, 0.25, 0.15);

/// Runs `trace sim --fit`.
pub(super) fn run(args: &SimArgs, capture: &Path) -> anyhow::Result<ExitCode> {
    let out = args
        .output
        .as_deref()
        .context("--fit needs -o PROFILE.json")?;
    super::not_an_input(out, &[capture])?;
    let (meta, recs) = trace_format::read_all(capture)
        .with_context(|| format!("reading capture {}", capture.display()))?;
    let labels: Vec<String> = stage_labels(&meta, &recs);
    for s in args.stages.iter().chain(&args.validate) {
        anyhow::ensure!(
            labels.contains(s),
            "no stage '{s}' in {} (its stages: {})",
            capture.display(),
            labels.join(", ")
        );
    }
    let fit_on: Vec<String> = if args.stages.is_empty() {
        labels
            .iter()
            .filter(|l| Some(*l) != args.validate.as_ref())
            .cloned()
            .collect()
    } else {
        args.stages.clone()
    };
    let reqs: Vec<FitRequest> = recs
        .iter()
        .filter(|r| fit_on.contains(&r.stage))
        .filter_map(fit_request)
        .collect();
    let bounds = stage_bounds(&recs, &fit_on);
    let max_running = meta
        .server_samples()
        .iter()
        .filter(|s| bounds.iter().any(|(a, b)| (*a..=*b).contains(&s.t_ns)))
        .filter_map(|s| s.running)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
        .map(|r| r.round() as u32);
    let model = meta
        .client()
        .map(|c| c.model)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "fitted".into());
    let name = meta
        .get(trace_format::meta::LABEL)
        .map_or_else(|| "fitted".to_string(), |l| format!("{l}-fitted"));
    let source = format!("{} stages {}", capture.display(), fit_on.join(","));
    let profile = fit(&reqs, max_running, &name, &model, &source)?;
    std::fs::write(out, serde_json::to_string_pretty(&profile)? + "\n")
        .with_context(|| format!("writing profile {}", out.display()))?;
    let c = profile.params.coeffs;
    eprintln!(
        "wrote {}: {} slots; step = {:.2} ms + {:.1} us/prefill token + {:.3} ms/decoding seq + {:.1} ns/context token (TPOT RMSE {:.2} ms over {} requests, prefill from {})",
        out.display(),
        profile.params.max_num_seqs,
        c.a_ns / 1e6,
        c.b_ns_per_prefill_token / 1e3,
        c.c_ns_per_decode_seq / 1e6,
        c.d_ns_per_kv_token,
        profile.fit.tpot_rmse_ms,
        profile.fit.decode_requests,
        profile.fit.prefill_requests
    );
    match &args.validate {
        None => Ok(ExitCode::SUCCESS),
        Some(stage) => validate(&profile, &meta, &recs, stage),
    }
}

/// The capture's stages in sweep order (metadata order, else first appearance), warmup left out.
fn stage_labels(meta: &TraceMeta, recs: &[TraceRecord]) -> Vec<String> {
    let mut out: Vec<String> = meta.stages().into_iter().map(|s| s.stage).collect();
    for r in recs {
        if !out.contains(&r.stage) {
            out.push(r.stage.clone());
        }
    }
    out.retain(|s| s != "warmup");
    out
}

/// First send to last end of each named stage, ns.
fn stage_bounds(recs: &[TraceRecord], stages: &[String]) -> Vec<(i64, i64)> {
    stages
        .iter()
        .filter_map(|s| {
            let rows = recs.iter().filter(|r| &r.stage == s);
            let a = rows.clone().map(|r| r.scheduled_ns).min()?;
            let b = rows.filter_map(|r| r.end_ns).max()?;
            Some((a, b))
        })
        .collect()
}

/// A completed row as the fit reads it.
fn fit_request(r: &TraceRecord) -> Option<FitRequest> {
    let m = r.metrics();
    if !m.completed {
        return None;
    }
    let first = trace_format::derive::first_token_ns(&r.chunk_ns, &r.chunk_tokens)?;
    Some(FitRequest {
        sent_ns: r.sent_ns?,
        first_token_ns: first,
        end_ns: r.end_ns?,
        prompt_tokens: u32::try_from(r.prompt_tokens.or(r.expected_prompt_tokens)?).ok()?,
        output_tokens: u32::try_from(m.output_tokens).ok()?,
    })
}

/// The held-out stage as the fitted model serves it: the capture's arrivals, prompt lengths and
/// output caps, in virtual time; requests past the capture's client timeout fail as they did.
#[cfg_attr(not(feature = "analyze"), allow(dead_code))]
fn predict(profile: &FittedProfile, meta: &TraceMeta, rows: &[&TraceRecord]) -> Vec<TraceRecord> {
    let start = rows.iter().map(|r| r.scheduled_ns).min().unwrap_or(0);
    let timeout_ns = meta
        .client()
        .map(|c| (c.timeout_s * 1e9) as i64)
        .filter(|&t| t > 0)
        .unwrap_or(i64::MAX);
    let mut order: Vec<&&TraceRecord> = rows.iter().collect();
    order.sort_by_key(|r| r.scheduled_ns);
    let arrivals: Vec<Arrival> = order
        .iter()
        .map(|r| Arrival {
            at_ns: (r.scheduled_ns - start).max(0) as u64,
            prompt_tokens: r
                .prompt_tokens
                .or(r.expected_prompt_tokens)
                .unwrap_or(1)
                .max(1) as u32,
            output_tokens: r.max_tokens.or(r.output_tokens).unwrap_or(1).max(1) as u32,
        })
        .collect();
    let run = simulate(&profile.params, &arrivals);
    order
        .iter()
        .zip(run.requests)
        .map(|(r, t)| {
            let sent = start + t.arrival_ns as i64;
            let mut rec = TraceRecord {
                request_id: r.request_id.clone(),
                stage: r.stage.clone(),
                target_rate: r.target_rate,
                scheduled_ns: r.scheduled_ns,
                sent_ns: Some(sent),
                prompt_tokens: r.prompt_tokens,
                max_tokens: r.max_tokens,
                status: Some(200),
                ..TraceRecord::default()
            };
            let deadline = sent.saturating_add(timeout_ns);
            for &ns in &t.token_ns {
                let at = start + ns as i64;
                if at > deadline {
                    break;
                }
                rec.chunk_ns.push(at);
                rec.chunk_tokens.push(1);
            }
            if rec.chunk_ns.len() < t.token_ns.len() {
                rec.error_kind = Some(ErrorKind::Timeout);
                rec.end_ns = Some(deadline);
            } else {
                rec.end_ns = rec.chunk_ns.last().copied();
                rec.output_tokens = Some(rec.chunk_ns.len() as i32);
            }
            rec
        })
        .collect()
}

#[cfg(feature = "analyze")]
fn validate(
    profile: &FittedProfile,
    meta: &TraceMeta,
    recs: &[TraceRecord],
    stage: &str,
) -> anyhow::Result<ExitCode> {
    use trace_analyze::report::{ReportOptions, build};
    use trace_analyze::{LoadOptions, load_run};
    let rows: Vec<&TraceRecord> = recs.iter().filter(|r| r.stage == stage).collect();
    let predicted = predict(profile, meta, &rows);
    let dir = scratch()?;
    let write = |name: &str, rows: Vec<TraceRecord>| -> anyhow::Result<std::path::PathBuf> {
        let p = dir.0.join(name);
        let mut m = TraceMeta::new();
        m.set(trace_format::meta::KIND, "run");
        let mut w = trace_format::TraceWriter::create(&p, m, Default::default())?;
        for r in rows {
            w.write_owned(r)?;
        }
        w.close()?;
        Ok(p)
    };
    let observed = write("observed.parquet", rows.into_iter().cloned().collect())?;
    let predicted = write("predicted.parquet", predicted)?;
    let opts = ReportOptions::default();
    let report = |p: &Path| -> anyhow::Result<trace_analyze::report::StageReport> {
        let mut run = load_run(p, LoadOptions::default())?;
        build(&mut run, &opts)
            .stages
            .into_iter()
            .next()
            .context("the held-out stage has no rows")
    };
    let (o, p) = (report(&observed)?, report(&predicted)?);
    let rel = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a != 0.0 => Some((b - a) / a),
        _ => None,
    };
    let rows = [
        (
            "TTFT P50 (ms)",
            o.metrics.ttft.median(),
            p.metrics.ttft.median(),
            BOUNDS.0,
        ),
        (
            "TPOT P50 (ms)",
            o.metrics.tpot.median(),
            p.metrics.tpot.median(),
            BOUNDS.1,
        ),
        (
            "throughput (req/s)",
            Some(o.request_throughput),
            Some(p.request_throughput),
            BOUNDS.2,
        ),
    ];
    let mut ok = o.saturation.verdict == p.saturation.verdict;
    println!(
        "held-out stage {stage}: observed vs predicted by {}",
        profile.name
    );
    println!(
        "{:<22}{:>12}{:>12}{:>10}{:>8}",
        "metric", "observed", "predicted", "error", "bound"
    );
    for (name, a, b, bound) in rows {
        let e = rel(a, b);
        let within = e.is_some_and(|e| e.abs() <= bound);
        ok &= within;
        println!(
            "{name:<22}{:>12}{:>12}{:>10}{:>7.0}%{}",
            trace_analyze::num(a, 2),
            trace_analyze::num(b, 2),
            e.map_or("-".into(), |e| format!("{:+.1}%", 100.0 * e)),
            100.0 * bound,
            if within { "" } else { "  OUTSIDE" }
        );
    }
    println!(
        "{:<22}{:>12}{:>12}{}",
        "saturation",
        o.saturation.verdict.as_str(),
        p.saturation.verdict.as_str(),
        if o.saturation.verdict == p.saturation.verdict {
            ""
        } else {
            "  DIFFERS"
        }
    );
    println!("observed:  {}", o.saturation.reason);
    println!("predicted: {}", p.saturation.reason);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(not(feature = "analyze"))]
fn validate(
    _: &FittedProfile,
    _: &TraceMeta,
    _: &[TraceRecord],
    _: &str,
) -> anyhow::Result<ExitCode> {
    anyhow::bail!("--validate needs the analyzer: build trace with its default features")
}

/// A scratch folder removed on drop.
#[cfg(feature = "analyze")]
struct Scratch(std::path::PathBuf);

#[cfg(feature = "analyze")]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(feature = "analyze")]
fn scratch() -> anyhow::Result<Scratch> {
    let p = std::env::temp_dir().join(format!(
        "trace-fit-{}-{}",
        std::process::id(),
        trace_sys::RunClock::start().start_unix_ns()
    ));
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(Scratch(p))
}
