//! `trace diff`: later runs against the first, with bootstrap CIs, verdicts, a headline and
//! `--fail-on` regression gates (trace-analyze).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use trace_analyze::diff::{self, DiffOptions, FailOn};
use trace_analyze::html;
use trace_analyze::report::Slo;

use super::report::{Format, print, write_file};

/// Arguments of `trace diff`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 no --fail-on condition held, 1 one held, 2 error.\n\nExamples:\n  trace diff lmdeploy.parquet vllm.parquet\n  trace diff base.parquet new.parquet --fail-on 'ttft.p99>+10%,throughput<-5%'\n  trace diff a.parquet b.parquet c.parquet --format markdown --html diff.html"
)]
pub struct DiffArgs {
    /// The baseline run (A), then one or more runs compared against it.
    #[arg(required = true, num_args = 2.., value_name = "RUN")]
    pub files: Vec<PathBuf>,
    /// Percentiles to compare (the median is always included).
    #[arg(long, value_parser = crate::parse::percentiles, default_value = "50,90,99")]
    pub percentiles: std::vec::Vec<f64>,
    /// Goodput objectives, compared too (ttft, tpot, e2e).
    #[arg(long, value_parser = crate::parse::slo, value_name = "ttft=200ms,tpot=50ms")]
    pub slo: Option<Slo>,
    /// Exit 1 when a condition holds in any stage: METRIC[.STAT](>|<)[+|-]N[%|ms|s], comma-separated.
    #[arg(long, value_name = "CONDITIONS")]
    pub fail_on: Option<String>,
    /// Bootstrap resamples per metric and stage (100 to 100000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub resamples: u32,
    /// Smallest relative change called better or worse; a sure but smaller change is
    /// `negligible`. The false discovery rate across the diff's tests is held at 5%.
    #[arg(long, default_value = "5%", value_parser = crate::parse::relative, value_name = "PCT")]
    pub min_effect: f64,
    /// Seed of the bootstrap (same inputs and seed, same intervals).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write a self-contained HTML page with A/B charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Runs `trace diff`.
pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let opts = DiffOptions {
        percentiles: args.percentiles.clone(),
        resamples: args.resamples as usize,
        min_effect: args.min_effect,
        seed: args.seed,
        slo: args.slo.unwrap_or_default(),
        fail_on: args.fail_on.as_deref().map(FailOn::parse).transpose()?,
        ..DiffOptions::default()
    };
    if let Some(html) = &args.html {
        let inputs: Vec<&std::path::Path> = args.files.iter().map(|f| f.as_path()).collect();
        super::not_an_input(html, &inputs)?;
    }
    let a = diff::analyze(&args.files, &opts).context("comparing runs")?;
    let text = match args.format {
        Format::Text => a.diff.to_text(),
        Format::Markdown => a.diff.to_markdown(),
        Format::Csv => a.diff.to_csv(),
        Format::Json => serde_json::to_string_pretty(&a.diff)? + "\n",
    };
    if let Some(path) = &args.html {
        write_file(path, &html::diff_html(&a.diff, &a.runs, &a.reports))?;
    }
    print(&text, args.format == Format::Json)?;
    let hits = a.failed_conditions(&opts);
    if !hits.is_empty() {
        for h in &hits {
            eprintln!("trace: fail-on: {h}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
