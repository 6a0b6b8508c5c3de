//! `trace synth`: a synthetic workload (Poisson, gamma or daily-cycle arrivals; lengths given
//! or fitted from a trace). Calls `trace_replay::synth`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use trace_replay::synth::{LengthDist, SessionSynth, SynthConfig, ThinkDist};
use trace_replay::{Arrival, DailyProfile};

/// The arrival process of `trace synth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalArg {
    /// Exponential gaps (the default; gamma when --burstiness is given).
    Poisson,
    /// Gamma gaps with shape --burstiness (vLLM's meaning: < 1 burstier, > 1 smoother).
    Gamma,
    /// Non-homogeneous Poisson following a daily profile (sinusoid or --hourly-profile).
    Daily,
}

/// Arguments of `trace synth`.
#[derive(Debug, Args)]
#[command(after_help = "\
Length specs: lognormal:MU,SIGMA (of ln tokens), pareto:SCALE,SHAPE, fixed:N. Without a spec or \
--fit: lognormal:6.9,0.9 prompts (median ~1000) and lognormal:5.0,0.9 outputs (median ~150).

Examples:
  trace synth --rate 5 --duration 10m -o poisson.parquet
  trace synth --burstiness 0.5 --rate 5 -n 2000 --fit azure.parquet -o bursty.parquet
  trace synth --arrival daily --rate 2 --duration 24h --amplitude 0.6 --peak 14h -o day.parquet
  trace synth --rate 10 -n 500 --input-dist pareto:200,1.5 --output-dist fixed:128 -o p.parquet
  trace synth --rate 2 -n 200 --turns 5 --think-time exp:3s --prefix-len 1000 --prefix-groups 4 \\
      --input-dist fixed:100 --output-dist fixed:200 -o chat-sessions.parquet")]
pub struct SynthArgs {
    /// Output workload file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace an existing trace at the output path (without it, an existing file is refused).
    #[arg(long)]
    pub force: bool,
    /// Mean arrival rate, req/s.
    #[arg(long, value_parser = crate::parse::positive_f64)]
    pub rate: f64,
    /// Arrival process.
    #[arg(long, value_enum)]
    pub arrival: Option<ArrivalArg>,
    /// Gamma shape (1 = Poisson); implies --arrival gamma.
    #[arg(long, value_parser = crate::parse::positive_f64)]
    pub burstiness: Option<f64>,
    /// Span of arrivals to generate.
    #[arg(long, value_parser = crate::parse::duration)]
    pub duration: Option<Duration>,
    /// Number of requests.
    #[arg(short = 'n', long = "requests", value_name = "N", value_parser = crate::parse::positive_u64)]
    pub count: Option<u64>,
    /// Fit lognormal prompt and output lengths from this trace (an imported one).
    #[arg(long, value_name = "TRACE")]
    pub fit: Option<PathBuf>,
    /// Prompt-length distribution (overrides --fit).
    #[arg(long, value_name = "SPEC")]
    pub input_dist: Option<LengthDist>,
    /// Output-length distribution (overrides --fit).
    #[arg(long, value_name = "SPEC")]
    pub output_dist: Option<LengthDist>,
    /// Daily cycle: relative swing of the rate, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    pub amplitude: f64,
    /// Daily cycle: period.
    #[arg(long, default_value = "24h", value_parser = crate::parse::duration)]
    pub period: Duration,
    /// Daily cycle: when the peak falls, as an offset from the start.
    #[arg(long, default_value = "14h", value_parser = crate::parse::duration_or_zero)]
    pub peak: Duration,
    /// Daily cycle: 24 comma-separated relative weights, one per hour (replaces the sinusoid).
    #[arg(long, value_name = "W0,...,W23", value_parser = hourly_profile)]
    pub hourly_profile: Option<Vec<f64>>,
    /// RNG seed (ChaCha8): one seed, one workload, on every machine.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Model name written into every row.
    #[arg(long)]
    pub model: Option<String>,
    /// Sessions: turns per session, a number or a distribution (`lognormal:1.5,0.5`). With any
    /// session flag, arrivals and -n count sessions, and --input-dist is each turn's new input.
    #[arg(long, value_name = "N|SPEC", value_parser = turns, help_heading = "Sessions")]
    pub turns: Option<LengthDist>,
    /// Client-side delay before each later turn: a duration (`2s`) or an exponential with that
    /// mean (`exp:2s`).
    #[arg(long, value_name = "SPEC", value_parser = think_time, help_heading = "Sessions")]
    pub think_time: Option<ThinkDist>,
    /// Tokens of a system prompt shared by every session of a group (rounded up to 16-token
    /// blocks).
    #[arg(long, value_name = "L", help_heading = "Sessions")]
    pub prefix_len: Option<u32>,
    /// Distinct shared prefixes: session k uses prefix k mod G.
    #[arg(long, value_name = "G", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Sessions")]
    pub prefix_groups: u32,
}

fn turns(s: &str) -> Result<LengthDist, String> {
    match s.parse::<u32>() {
        Ok(0) => Err(format!("invalid turns '{s}': must be >= 1")),
        Ok(n) => Ok(LengthDist::Fixed(n)),
        Err(_) => s.parse(),
    }
}

fn think_time(s: &str) -> Result<ThinkDist, String> {
    match s.strip_prefix("exp:") {
        Some(mean) => crate::parse::duration(mean).map(ThinkDist::Exponential),
        None => crate::parse::duration_or_zero(s.strip_prefix("fixed:").unwrap_or(s))
            .map(ThinkDist::Fixed),
    }
}

fn hourly_profile(s: &str) -> Result<Vec<f64>, String> {
    let w: Vec<f64> = s
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("invalid hourly profile '{s}': expected 24 non-negative numbers"))?;
    if w.len() != 24 || w.iter().sum::<f64>() <= 0.0 {
        return Err(format!(
            "invalid hourly profile '{s}': expected 24 numbers, not all 0 (got {})",
            w.len()
        ));
    }
    Ok(w)
}

/// Runs `trace synth`.
pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    let kind = args.arrival.unwrap_or(if args.burstiness.is_some() {
        ArrivalArg::Gamma
    } else {
        ArrivalArg::Poisson
    });
    let arrival = match kind {
        ArrivalArg::Poisson => {
            anyhow::ensure!(
                args.burstiness.is_none(),
                "--burstiness needs --arrival gamma"
            );
            Arrival::Poisson
        }
        ArrivalArg::Gamma => Arrival::Gamma {
            burstiness: args.burstiness.unwrap_or(1.0),
        },
        ArrivalArg::Daily => Arrival::Daily {
            profile: match args.hourly_profile {
                Some(weights) => DailyProfile::Hourly { weights },
                None => DailyProfile::Sinusoid {
                    amplitude: args.amplitude,
                    period_s: args.period.as_secs_f64(),
                    peak_s: args.peak.as_secs_f64(),
                },
            },
        },
    };
    anyhow::ensure!(
        args.duration.is_some() || args.count.is_some(),
        "give --duration or -n (or both)"
    );
    if let Some(fit) = &args.fit {
        super::not_an_input(&args.output, &[fit])?;
    }
    let cfg = SynthConfig {
        output: args.output,
        force: args.force,
        arrival,
        rate: args.rate,
        duration: args.duration,
        count: args.count,
        input: args.input_dist,
        output_len: args.output_dist,
        fit: args.fit,
        seed: args.seed,
        model: args.model,
        sessions: (args.turns.is_some() || args.think_time.is_some() || args.prefix_len.is_some())
            .then(|| SessionSynth {
                turns: args.turns.unwrap_or(LengthDist::Fixed(1)),
                think: args.think_time.unwrap_or(ThinkDist::Fixed(Duration::ZERO)),
                prefix_len: args.prefix_len.unwrap_or(0),
                prefix_groups: args.prefix_groups,
            }),
    };
    let s = trace_replay::synth::synth(&cfg)
        .with_context(|| format!("writing {}", cfg.output.display()))?;
    let span_s = s.last_ns as f64 / 1e9;
    let achieved = if span_s > 0.0 {
        s.rows as f64 / span_s
    } else {
        0.0
    };
    match s.sessions {
        Some(n) => println!(
            "wrote {n} sessions ({} turns) over {span_s:.1} s ({:.2} sessions/s achieved, {} \
             requested) to {}",
            s.rows,
            if span_s > 0.0 { n as f64 / span_s } else { 0.0 },
            cfg.rate,
            cfg.output.display()
        ),
        None => println!(
            "wrote {} requests over {span_s:.1} s ({achieved:.2} req/s achieved, {} requested) \
             to {}",
            s.rows,
            cfg.rate,
            cfg.output.display()
        ),
    }
    if let Some(f) = s.fit {
        println!(
            "  fitted lognormal prompt: mu={:.4} sigma={:.4} (median {:.0} tokens, n={})",
            f.prompt.mu,
            f.prompt.sigma,
            f.prompt.median(),
            f.prompt.n
        );
        println!(
            "  fitted lognormal output: mu={:.4} sigma={:.4} (median {:.0} tokens, n={})",
            f.output.mu,
            f.output.sigma,
            f.output.median(),
            f.output.n
        );
    }
    println!(
        "  prompt lengths: {}; output lengths: {}; seed {}",
        s.input.spec(),
        s.output.spec(),
        cfg.seed
    );
    Ok(ExitCode::SUCCESS)
}
