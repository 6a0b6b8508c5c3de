//! `trace selfcheck`: parses [`SelfcheckArgs`] into a [`trace_selfcheck::SelfcheckConfig`], runs
//! one check (or a sweep of concurrencies), prints the client's own timing error as a table or
//! JSON, and maps the bounds to the exit status. `--proxy` runs the recording proxy's overhead
//! benchmark instead ([`trace_selfcheck::proxy`]).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::Serialize;
use trace_selfcheck::{self as selfcheck, ErrorDist, SelfcheckConfig, SelfcheckReport};

const EXAMPLES: &str = "\
Examples:
  trace selfcheck
      ~10 s at 1000 concurrent streams (50 ms TTFT, 10 ms ITL, 100 tokens)
  trace selfcheck --concurrency 500 --rate 50 --tokens 1000 --max-ttft-error 2ms --max-itl-error 1.5ms
  trace selfcheck --sweep --concurrency 4000 --duration 5s --format json
  trace selfcheck --proxy
      what `trace record` adds: the same client directly and through the proxy (~1 min)

The simulator (fixed TTFT/ITL, ground truth on) runs on one CPU, the real replay client on the
others; each request's stream is joined with the server's truth by request id on one clock.
Errors: arrival = client arrival - server write, per token event; TTFT = client TTFT (first token
- send) - server TTFT (first token write - request arrival at the server); ITL = client gap -
server gap, per event pair; send lag = send - schedule. Bounds apply to P99 of |error|, and a
failed or unmatched request fails the check. --sweep runs 100, 250, 500, 1000, 2000, ... up to
--concurrency and stops at the first level outside the bounds (1 ms each when none is given).
Exit status: 0 within bounds (or no bounds given), 1 outside the bounds (sweep: no level within
them), 2 error.";

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// A table on stdout.
    Text,
    /// One JSON object on stdout.
    Json,
}

/// Arguments of `trace selfcheck`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SelfcheckArgs {
    /// Target concurrent streams; sets the rate unless --rate is given (the largest level of --sweep).
    #[arg(long, default_value = "1000", value_parser = crate::parse::positive_usize)]
    pub concurrency: usize,
    /// Request rate, req/s (Poisson); default: concurrency / (ttft + tokens * itl).
    #[arg(long, value_parser = crate::parse::positive_f64)]
    pub rate: Option<f64>,
    /// Simulated time to first token.
    #[arg(long, default_value = "50ms", value_parser = crate::parse::duration_or_zero)]
    pub ttft: Duration,
    /// Simulated time between tokens.
    #[arg(long, default_value = "10ms", value_parser = crate::parse::duration_or_zero)]
    pub itl: Duration,
    /// Output tokens per request.
    #[arg(long, default_value = "100", value_parser = crate::parse::positive_u64)]
    pub tokens: u64,
    /// Sending window (requests = rate * duration); the run lasts about this plus one request.
    #[arg(long, default_value = "10s", value_parser = crate::parse::duration, conflicts_with = "requests")]
    pub duration: Duration,
    /// Number of requests instead of --duration.
    #[arg(short = 'n', long = "requests", value_parser = crate::parse::positive_u64)]
    pub requests: Option<u64>,
    /// Fail (exit 1) when P99 |TTFT error| exceeds this.
    #[arg(long, value_parser = crate::parse::duration)]
    pub max_ttft_error: Option<Duration>,
    /// Fail (exit 1) when P99 |ITL error| exceeds this.
    #[arg(long, value_parser = crate::parse::duration)]
    pub max_itl_error: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
    /// Repeat at increasing concurrency and report the largest within the bounds.
    #[arg(long)]
    pub sweep: bool,
    /// Seed of the Poisson schedule.
    #[arg(long, default_value = "0")]
    pub seed: u64,
    /// Do not pin the simulator and the client to separate CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Measure the recording proxy's added latency instead (three fixed loads, ~1 min).
    #[arg(long, conflicts_with = "sweep")]
    pub proxy: bool,
    /// With --proxy: keep the runs and truth files in this folder.
    #[arg(long, value_name = "DIR", requires = "proxy")]
    pub keep: Option<std::path::PathBuf>,
    /// Measure a run made elsewhere instead: join this replay file with the simulator's
    /// `--truth` file (e.g. `trace sim --workers 8 --truth T` and `trace replay` as separate
    /// processes on separate cores); --ttft, --itl and --tokens label the report.
    #[arg(long, value_name = "RUN", requires = "truth", conflicts_with_all = ["sweep", "proxy"])]
    pub run: Option<std::path::PathBuf>,
    /// With --run: the simulator's truth file.
    #[arg(long, value_name = "FILE", requires = "run")]
    pub truth: Option<std::path::PathBuf>,
}

/// The `--sweep --format json` object.
#[derive(Debug, Serialize)]
struct SweepOut<'a> {
    max_ttft_error_ms: f64,
    max_itl_error_ms: f64,
    /// Largest concurrency within the bounds.
    best_concurrency: Option<usize>,
    /// Its event rate.
    best_event_rate_per_s: Option<f64>,
    levels: Vec<LevelOut<'a>>,
}

#[derive(Debug, Serialize)]
struct LevelOut<'a> {
    within: bool,
    #[serde(flatten)]
    report: &'a SelfcheckReport,
}

#[derive(Debug, Serialize)]
struct SingleOut<'a> {
    within: bool,
    #[serde(flatten)]
    report: &'a SelfcheckReport,
}

/// Runs `trace selfcheck --proxy`: the proxy-overhead table (or JSON).
fn run_proxy(args: &SelfcheckArgs) -> anyhow::Result<ExitCode> {
    let cfg = selfcheck::proxy::ProxyBenchConfig {
        keep: args.keep.clone(),
        ..Default::default()
    };
    let r = selfcheck::proxy::run(&cfg)?;
    let mut out = std::io::stdout().lock();
    if args.format == FormatArg::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "cpus: sim {:?}, proxy {:?} ({} serving threads), client {:?}",
        r.cpus.sim, r.cpus.proxy, r.proxy_threads, r.cpus.client
    )?;
    writeln!(
        out,
        "| load | token events | transit direct p50 / p99 (µs) | transit proxied p50 / p99 (µs) | added p50 / p99 (µs) | proxy to client, paired p50 / p99 (µs) | recorded time error p50 / p99 (µs) | TTFT added p50 / p99 (ms) |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for l in &r.loads {
        let p = |(a, b): (f64, f64)| format!("{a:.0} / {b:.0}");
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} / {:.2} |",
            l.load.name,
            l.token_events,
            p(l.transit_direct_us),
            p(l.transit_proxied_us),
            p(l.added_us),
            p(l.proxy_to_client_us),
            p(l.recorded_error_us),
            l.ttft_added_ms.0,
            l.ttft_added_ms.1
        )?;
    }
    if let Some(d) = &r.kept_in {
        writeln!(out, "files kept in {}", d.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `trace selfcheck`.
pub fn run(args: SelfcheckArgs) -> anyhow::Result<ExitCode> {
    if args.proxy {
        return run_proxy(&args);
    }
    let tokens = u32::try_from(args.tokens)
        .map_err(|_| anyhow::anyhow!("invalid --tokens '{}': too large", args.tokens))?;
    let base = SelfcheckConfig {
        ttft: args.ttft,
        itl: args.itl,
        tokens,
        concurrency: args.concurrency,
        rate: args.rate,
        requests: args.requests,
        duration: args.duration,
        seed: args.seed,
        pin: !args.no_pin,
    };
    base.validate()?;
    let mut out = std::io::stdout().lock();
    if !args.sweep {
        let r = match (&args.run, &args.truth) {
            (Some(run), Some(truth)) => {
                let j = selfcheck::join_files(run, truth).with_context(|| {
                    format!("joining {} with {}", run.display(), truth.display())
                })?;
                let peak = selfcheck::peak_in_flight(run)?;
                let mut r = selfcheck::SelfcheckReport::from_join(&base, &j, peak, None);
                // The replay that wrote the run chose its rate and concurrency, not the
                // defaults of selfcheck's own flags.
                r.concurrency_target = None;
                r.rate_requested = None;
                r
            }
            _ => selfcheck::run(&base)?,
        };
        let within = r.within(args.max_ttft_error, args.max_itl_error);
        match args.format {
            FormatArg::Json => {
                let s = serde_json::to_string_pretty(&SingleOut { within, report: &r })?;
                writeln!(out, "{s}")?;
            }
            FormatArg::Text => {
                write_table(&mut out, &r)?;
                if args.max_ttft_error.is_some() || args.max_itl_error.is_some() {
                    writeln!(
                        out,
                        "{}",
                        if within {
                            "PASS: within the bounds"
                        } else {
                            "FAIL: outside the bounds"
                        }
                    )?;
                }
            }
        }
        return Ok(if within {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }

    let max_ttft = args.max_ttft_error.unwrap_or(Duration::from_millis(1));
    let max_itl = args.max_itl_error.unwrap_or(Duration::from_millis(1));
    let mut reports = Vec::new();
    for level in selfcheck::sweep_levels(args.concurrency) {
        eprintln!("selfcheck: concurrency {level}...");
        let cfg = SelfcheckConfig {
            concurrency: level,
            // A fixed --rate would not change with the level: the sweep scales it.
            rate: args
                .rate
                .map(|r| r * level as f64 / args.concurrency as f64),
            ..base.clone()
        };
        let r = selfcheck::run(&cfg)?;
        let within = r.within(Some(max_ttft), Some(max_itl));
        if args.format == FormatArg::Text {
            writeln!(out, "== concurrency {level}")?;
            write_table(&mut out, &r)?;
            writeln!(
                out,
                "{}",
                if within {
                    "within"
                } else {
                    "OUTSIDE the bounds"
                }
            )?;
            writeln!(out)?;
        }
        reports.push((within, r));
        if !within {
            break;
        }
    }
    let best = reports.iter().rev().find(|(w, _)| *w).map(|(_, r)| r);
    match args.format {
        FormatArg::Json => {
            let s = SweepOut {
                max_ttft_error_ms: max_ttft.as_secs_f64() * 1e3,
                max_itl_error_ms: max_itl.as_secs_f64() * 1e3,
                best_concurrency: best.and_then(|r| r.concurrency_target),
                best_event_rate_per_s: best.and_then(|r| r.event_rate_per_s),
                levels: reports
                    .iter()
                    .map(|(within, report)| LevelOut {
                        within: *within,
                        report,
                    })
                    .collect(),
            };
            let s = serde_json::to_string_pretty(&s)?;
            writeln!(out, "{s}")?;
        }
        FormatArg::Text => match best {
            Some(r) => writeln!(
                out,
                "largest concurrency within TTFT {} / ITL {} (P99 |error|): {} streams, {} events/s",
                humantime::format_duration(max_ttft),
                humantime::format_duration(max_itl),
                opt(r.concurrency_target.map(|c| c as f64), 0),
                r.event_rate_per_s.map_or("-".into(), |v| format!("{v:.0}"))
            )?,
            None => writeln!(out, "no level within the bounds")?,
        },
    }
    Ok(if best.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

fn write_table(out: &mut impl Write, r: &SelfcheckReport) -> std::io::Result<()> {
    writeln!(
        out,
        "simulator: TTFT {} ms, ITL {} ms, {} tokens; {}",
        r.ttft_ms,
        r.itl_ms,
        r.tokens,
        match &r.pinning {
            Some(p) => format!(
                "sim on CPU {}, client on CPUs {:?}",
                p.sim_cpu, p.client_cpus
            ),
            None => "not pinned".into(),
        }
    )?;
    writeln!(
        out,
        "requests: {} ({} ok, {} failed, {} unmatched); rate {} req/s requested, {} achieved; peak concurrency {} (target {})",
        r.requests,
        r.ok,
        r.failed,
        r.unmatched,
        opt(r.rate_requested, 1),
        opt(r.rate_achieved, 1),
        r.peak_concurrency,
        opt(r.concurrency_target.map(|c| c as f64), 0)
    )?;
    writeln!(
        out,
        "token events: {} (expected {}; {} requests with a count differing from the server's); {} events/s",
        r.token_events,
        r.token_events_expected,
        r.event_count_mismatches,
        opt(r.event_rate_per_s, 0)
    )?;
    writeln!(
        out,
        "{:<22} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "error (µs)", "n", "median", "P1", "P99", "spread", "P99 |e|", "max |e|"
    )?;
    let rows: [(&str, &Option<ErrorDist>); 4] = [
        ("arrival (per event)", &r.arrival_error),
        ("TTFT", &r.ttft_error),
        ("ITL (per event)", &r.itl_error),
        ("send lag", &r.send_lag),
    ];
    for (name, d) in rows {
        match d {
            Some(d) => writeln!(
                out,
                "{:<22} {:>9} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                name, d.n, d.median_us, d.p1_us, d.p99_us, d.spread_us, d.p99_abs_us, d.max_abs_us
            )?,
            None => writeln!(out, "{name:<22} {:>9}", 0)?,
        }
    }
    Ok(())
}
