//! trace-cli: the `trace` command line. clap parsing, rendering (the progress line, the replay
//! summary table), signals, and starting the embedded simulator when a verb is given no server;
//! every verb calls a library crate's entry point (trace-replay, trace-record, trace-analyze,
//! trace-import, trace-sim, trace-selfcheck).
//!
//! Exit codes (grep-style): 0 success, 1 a `diff --fail-on` condition held (or a selfcheck bound
//! was exceeded), 2 an error, 130 / 143 a replay or recording that Ctrl-C / SIGTERM stopped
//! (after draining: the file is complete for what was sent).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod commands;
mod embedded;
pub mod parse;
mod progress;
mod signal;
mod store;
mod table;

/// Record, replay and compare LLM-serving traces.
#[derive(Debug, Parser)]
#[command(
    name = "trace",
    version,
    about = "Record, replay and compare LLM-serving traces: TTFT, TPOT, ITL and E2E percentiles, \
             throughput, the saturation point, and A/B diffs with confidence intervals.",
    arg_required_else_help = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The verb to run.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Every verb of the `trace` binary.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Capture real traffic through a recording OpenAI-compatible proxy.
    Record(commands::record::RecordArgs),
    /// Re-issue a workload (random, ShareGPT, a prompt dataset or a trace) at chosen rates or
    /// concurrencies and record every chunk.
    Replay(Box<commands::replay::ReplayArgs>),
    /// Compare runs: percentiles, throughput and saturation with confidence intervals.
    #[cfg(feature = "analyze")]
    Diff(commands::diff::DiffArgs),
    /// Analyse one run: the per-stage latency table and the saturation point.
    #[cfg(feature = "analyze")]
    Report(commands::report::ReportArgs),
    /// Convert public traces and peers' result files into the trace format.
    Import(commands::import::ImportArgs),
    /// Write a synthetic workload (Poisson, gamma or daily-cycle arrivals).
    Synth(commands::synth::SynthArgs),
    /// Serve the OpenAI-compatible engine simulator.
    Sim(commands::sim::SimArgs),
    /// Show a trace file's schema version, metadata, stages and counts.
    Inspect(commands::inspect::InspectArgs),
    /// Measure this machine's client timing error against the simulator's ground truth.
    Selfcheck(commands::selfcheck::SelfcheckArgs),
    /// Merge an interrupted run's flushed data into a normal trace file.
    Recover(commands::recover::RecoverArgs),
    /// Run a campaign: a suite's scenarios, repeats and engine-config sweeps into one directory.
    Suite(commands::suite::SuiteArgs),
    /// Join the shard files of a run sent from several hosts (`replay --shard k/n`) into one.
    Merge(commands::merge::MergeArgs),
    /// The start barrier of a run sent from several hosts: shards register and start together.
    Coordinate(commands::coordinate::CoordinateArgs),
}

/// Runs a parsed command line and returns the process exit code. Object-storage URLs are
/// resolved here, around the verbs: inputs downloaded first, outputs written through a local
/// staging copy and uploaded as they are flushed ([`store`]).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use store::{fetch_all, fetch_in_place, finish, stage_output};
    match cli.cmd {
        Cmd::Record(mut a) => {
            let up = stage_output(Some(&mut a.output), a.force)?;
            finish(up, commands::record::run(a))
        }
        Cmd::Replay(mut a) => {
            let _input = store::fetch_workload(&mut a.workload)?;
            let up = stage_output(a.output.as_mut(), a.force)?;
            finish(up, commands::replay::run(*a))
        }
        #[cfg(feature = "analyze")]
        Cmd::Diff(mut a) => {
            let _inputs = fetch_all(&mut a.files)?;
            commands::diff::run(a)
        }
        #[cfg(feature = "analyze")]
        Cmd::Report(mut a) => {
            let _inputs = fetch_all(&mut a.files)?;
            commands::report::run(a)
        }
        Cmd::Import(mut a) => {
            let _input = fetch_in_place(&mut a.input)?;
            let up = stage_output(Some(&mut a.output), a.force)?;
            finish(up, commands::import::run(a))
        }
        Cmd::Synth(mut a) => {
            let _fit = match a.fit.as_mut() {
                Some(f) => fetch_in_place(f)?,
                None => None,
            };
            let up = stage_output(Some(&mut a.output), a.force)?;
            finish(up, commands::synth::run(a))
        }
        Cmd::Sim(a) => commands::sim::run(a),
        Cmd::Inspect(mut a) => {
            let _input = fetch_in_place(&mut a.file)?;
            commands::inspect::run(a)
        }
        Cmd::Selfcheck(a) => commands::selfcheck::run(a),
        Cmd::Recover(mut a) => match a.dir.to_str().filter(|d| store::is_remote(d)) {
            Some(url) if a.output.is_none() => {
                let url = url.to_string();
                store::recover_remote(&url, |local| {
                    a.dir = local.to_path_buf();
                    let out = commands::recover::default_output(local)?;
                    commands::recover::run(a)?;
                    Ok(out)
                })?;
                Ok(ExitCode::SUCCESS)
            }
            _ => {
                let _input = fetch_in_place(&mut a.dir)?;
                let up = stage_output(a.output.as_mut(), false)?;
                finish(up, commands::recover::run(a))
            }
        },
        Cmd::Suite(a) => commands::suite::run(a),
        Cmd::Merge(mut a) => {
            let _inputs = fetch_all(&mut a.shards)?;
            let up = stage_output(Some(&mut a.output), a.force)?;
            finish(up, commands::merge::run(a))
        }
        Cmd::Coordinate(a) => commands::coordinate::run(a),
    }
}

/// The binary's entry point: parses argv, runs, prints `trace: {err:#}` on error and exits 2.
pub fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with exit 0, usage errors to stderr with 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("trace: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TRACE_LOG")
        // The certificate verifier logs each failure at ERROR; the request's own error (a row,
        // or the probe's message) already says it, once.
        .unwrap_or_else(|_| EnvFilter::new("warn,rustls_platform_verifier=off"));
    use std::io::IsTerminal;
    // Colour codes only for a terminal: a log file or CI output gets plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Cmd};

    /// The parse error of a command line, as clap prints it.
    fn refused(args: &[&str]) -> String {
        match Cli::try_parse_from(args) {
            Ok(c) => panic!("{args:?} parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_value() {
        for (args, needle) in [
            (&["trace", "replay", "--rate", "0"][..], "'0'"),
            (&["trace", "replay", "--rate", "5,abc"], "'abc'"),
            (&["trace", "replay", "--rate", "5", "-n", "0"], "'0'"),
            (
                &["trace", "replay", "--rate", "5", "--range-ratio", "1.5"],
                "'1.5'",
            ),
            (
                &["trace", "replay", "--rate", "5", "--burstiness", "-1"],
                "'-1'",
            ),
            (
                &["trace", "replay", "--rate", "5", "--endpoint", "grpc"],
                "'grpc'",
            ),
            (&["trace", "selfcheck", "--concurrency", "0"], "'0'"),
            (&["trace", "selfcheck", "--ttft", "fast"], "'fast'"),
            (&["trace", "selfcheck", "--format", "xml"], "'xml'"),
            (&["trace", "selfcheck", "--tokens", "-1"], "-1"),
            (&["trace", "selfcheck", "--rate", "0"], "'0'"),
            (&["trace", "selfcheck", "--bogus"], "--bogus"),
            (
                &["trace", "selfcheck", "--duration", "1s", "-n", "5"],
                "--duration",
            ),
            (
                &["trace", "record", "-o", "a", "--max-requests", "0"],
                "'0'",
            ),
            (
                &["trace", "record", "-o", "a", "--store", "secrets"],
                "'secrets'",
            ),
            (
                &["trace", "replay", "--rate", "1", "--timeout", "0s"],
                "'0s'",
            ),
            (
                &["trace", "record", "-o", "a", "--idle-timeout", "0s"],
                "'0s'",
            ),
            (
                &["trace", "record", "-o", "a", "--duration", "40y"],
                "a year",
            ),
            (&["trace", "diff", "a", "b", "--resamples", "4e9"], "'4e9'"),
            (
                &["trace", "diff", "a", "b", "--min-effect", "150%"],
                "'150%'",
            ),
        ] {
            let e = refused(args);
            assert!(e.contains(needle), "{args:?}: expected '{needle}' in: {e}");
        }
    }

    #[test]
    fn settings_checked_after_parsing_name_the_value() {
        let cfg = |args: &[&str]| {
            let Cmd::Replay(a) = Cli::try_parse_from(args).unwrap().cmd else {
                panic!("not replay")
            };
            a.to_config("http://127.0.0.1:1".into(), "x.parquet".into())
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(cfg(&["trace", "replay", "nonsense", "--rate", "5"]).contains("'nonsense'"));
        assert!(cfg(&["trace", "replay"]).contains("--rate"));
        let e = cfg(&[
            "trace",
            "replay",
            "--rate",
            "5",
            "--arrival",
            "constant",
            "--burstiness",
            "2",
        ]);
        assert!(e.contains("--burstiness"), "{e}");
        let e = cfg(&["trace", "replay", "--rate", "0.00001", "-n", "1000"]);
        assert!(e.contains("1157 days"), "{e}");
    }
}
