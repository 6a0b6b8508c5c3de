//! `trace diff`: later runs against the first, with bootstrap CIs, verdicts, a headline and
//! `--fail-on` regression gates (trace-analyze).

use std::path::{Path, PathBuf};
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
    after_help = "Exit status: 0 no --fail-on condition held, 1 one held, 2 error.\n\nExamples:\n  trace diff lmdeploy.parquet vllm.parquet\n  trace diff base.parquet new.parquet --fail-on 'ttft.p99>+10%,throughput<-5%'\n  trace diff a.parquet b.parquet c.parquet --format markdown --html diff.html\n  trace diff campaign/   # every grid point against the first, per scenario"
)]
pub struct DiffArgs {
    /// The baseline run (A), then one or more runs compared against it. A run is a trace
    /// file, an interrupted run's `.partial`, or a directory of one sharded run's shard files.
    /// One campaign directory (`trace suite run --grid`) compares its grid points, scenario by
    /// scenario, against the first point.
    #[arg(required = true, num_args = 1.., value_name = "RUN")]
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
        let inputs: Vec<&Path> = args.files.iter().map(|f| f.as_path()).collect();
        super::not_an_input(html, &inputs)?;
    }
    if let [dir] = &args.files[..]
        && dir.join("suite.json").is_file()
    {
        return campaign(&args, dir, &opts);
    }
    anyhow::ensure!(
        args.files.len() >= 2,
        "{}: diff needs two runs or more (or one campaign directory)",
        args.files[0].display()
    );
    let locals = args
        .files
        .iter()
        .map(|f| super::runs::resolve(std::slice::from_ref(f)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let named: Vec<(&Path, Option<String>)> = locals
        .iter()
        .map(|l| (l.path.as_path(), l.alias.clone()))
        .collect();
    let a = diff::analyze_named(&named, &opts).context("comparing runs")?;
    let text = render(&a.diff, args.format)?;
    if let Some(path) = &args.html {
        write_file(path, &html::diff_html(&a.diff, &a.runs, &a.reports))?;
    }
    print(&text, args.format == Format::Json)?;
    gate(&a.failed_conditions(&opts))
}

fn render(d: &diff::Diff, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Text => d.to_text(),
        Format::Markdown => d.to_markdown(),
        Format::Csv => d.to_csv(),
        Format::Json => serde_json::to_string_pretty(d)? + "\n",
    })
}

/// `trace diff DIR` on a campaign with a grid: per scenario (and repeat), each grid point's run
/// against the first point's, named by their points. Scenarios measured at fewer than two
/// points are listed as such.
fn campaign(args: &DiffArgs, dir: &Path, opts: &DiffOptions) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.html.is_none(),
        "--html compares runs, not a campaign: give two points' files"
    );
    let rec = super::suite::read_record(dir)
        .with_context(|| format!("reading {}", dir.join("suite.json").display()))?;
    // (scenario, repeat) -> each point's run file and its name, in campaign order.
    type Group = ((String, u32), Vec<(PathBuf, String)>);
    let mut groups: Vec<Group> = Vec::new();
    for r in rec.runs.iter().filter(|r| r.status == "done") {
        let key = (r.scenario.clone(), r.repeat);
        let point = r
            .point
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let entry = (dir.join(&r.file), point);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(entry),
            None => groups.push((key, vec![entry])),
        }
    }
    anyhow::ensure!(
        groups.iter().any(|(_, v)| v.len() >= 2),
        "{}: no scenario was measured at two grid points or more: nothing to compare",
        dir.display()
    );
    let mut out = String::new();
    let mut json = Vec::new();
    let mut hits = Vec::new();
    for ((scenario, repeat), runs) in &groups {
        let heading = if rec.runs.iter().any(|r| r.repeat > 1) {
            format!("{scenario} (repeat {repeat})")
        } else {
            scenario.clone()
        };
        if runs.len() < 2 {
            out.push_str(&format!(
                "## {heading}\n\nmeasured at one grid point only: nothing to compare\n\n"
            ));
            continue;
        }
        let named: Vec<(&Path, Option<String>)> = runs
            .iter()
            .map(|(p, point)| (p.as_path(), Some(point.clone())))
            .collect();
        let a = diff::analyze_named(&named, opts)
            .with_context(|| format!("comparing the grid points of scenario {heading}"))?;
        hits.extend(
            a.failed_conditions(opts)
                .into_iter()
                .map(|h| format!("{heading}: {h}")),
        );
        match args.format {
            Format::Json => json.push(serde_json::json!({
                "scenario": scenario, "repeat": repeat, "diff": a.diff,
            })),
            f => {
                out.push_str(&format!("## {heading}\n\n"));
                out.push_str(&render(&a.diff, f)?);
                out.push('\n');
            }
        }
    }
    if args.format == Format::Json {
        out = serde_json::to_string_pretty(&serde_json::json!({
            "schema": "trace.campaign-diff/1", "campaign": dir.display().to_string(),
            "scenarios": json,
        }))? + "\n";
    }
    print(&out, args.format == Format::Json)?;
    gate(&hits)
}

/// Exit 1 when a `--fail-on` condition held.
fn gate(hits: &[String]) -> anyhow::Result<ExitCode> {
    if !hits.is_empty() {
        for h in hits {
            eprintln!("trace: fail-on: {h}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
