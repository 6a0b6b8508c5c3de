//! `trace report`: one run's per-stage latency table, goodput and saturation (trace-analyze).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use trace_analyze::report::{ReportOptions, Slo};
use trace_analyze::{LoadOptions, html, load_run, report, vllm};

/// Output formats of `report` and `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned tables for a terminal.
    Text,
    /// GitHub-flavoured markdown tables.
    Markdown,
    /// The documented JSON document (docs/report-json.md).
    Json,
    /// Long-format CSV, one number per row.
    Csv,
}

/// Arguments of `trace report`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  trace report run.parquet\n  trace report run.parquet --percentiles 50,90,99,99.9 --slo ttft=200ms,tpot=50ms --format json\n  trace report run.parquet --export vllm-json vllm.jsonl --html report.html\n  trace report run.parquet.partial   # an interrupted run\n  trace report shards/               # the shards of a sharded run, merged\n  trace report campaign/             # a campaign: one row per point, scenario and stage"
)]
pub struct ReportArgs {
    /// The run: a trace file, an interrupted run's `.parquet.partial` directory, the shard files of a
    /// sharded run (or a directory of them), or a campaign directory (`trace suite run`).
    #[arg(required = true, num_args = 1.., value_name = "RUN")]
    pub files: Vec<PathBuf>,
    /// Percentiles to report (the median is always included).
    #[arg(long, value_parser = crate::parse::percentiles, default_value = "50,90,99")]
    pub percentiles: std::vec::Vec<f64>,
    /// Goodput objectives: requests meeting all of them count (ttft, tpot, e2e).
    #[arg(long, value_parser = crate::parse::slo, value_name = "ttft=200ms,tpot=50ms")]
    pub slo: Option<Slo>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write another tool's format: `vllm-json FILE` writes vLLM --save-result objects,
    /// one per stage per line.
    #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"])]
    pub export: Option<Vec<String>>,
    /// Also write a self-contained HTML page with charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// `trace report DIR` on a campaign (`trace suite run`): one row per run and stage, in the
/// order the campaign ran, like the benchmark scripts' markdown tables; failed runs and
/// unhealthy grid points listed after.
fn suite_report(args: &ReportArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let rec = super::suite::read_record(dir)
        .with_context(|| format!("reading {}", dir.join("suite.json").display()))?;
    let opts = ReportOptions {
        percentiles: args.percentiles.clone(),
        slo: args.slo.unwrap_or_default(),
    };
    let mut rows = Vec::new();
    let mut json_runs = Vec::new();
    let mut for_html = Vec::new();
    // Per (point, scenario, stage): each repeat's figures, for the across-run summary.
    type Key = (String, String, String);
    let mut repeats: std::collections::BTreeMap<Key, Vec<[f64; 4]>> = Default::default();
    for run in &rec.runs {
        let point = run
            .point
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let file = dir.join(&run.file);
        let rep = (run.status == "done")
            .then(|| load_run(&file, LoadOptions::default()).ok())
            .flatten()
            .map(|mut d| report::build(&mut d, &opts));
        match &rep {
            Some(r) => {
                for st in &r.stages {
                    let m = &st.metrics;
                    repeats
                        .entry((point.clone(), run.scenario.clone(), st.stage.clone()))
                        .or_default()
                        .push([
                            st.request_throughput,
                            st.output_throughput,
                            m.ttft.pct(50.0).unwrap_or(f64::NAN),
                            m.tpot.pct(50.0).unwrap_or(f64::NAN),
                        ]);
                    rows.push(format!(
                        "| {point} | {} | {} | {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} |",
                        run.scenario,
                        run.repeat,
                        st.stage,
                        st.completed,
                        st.failed,
                        st.request_throughput,
                        st.output_throughput,
                        num(m.ttft.pct(50.0)),
                        num(m.ttft.pct(99.0)),
                        num(m.tpot.pct(50.0)),
                        st.saturation.verdict.as_str()
                    ));
                }
            }
            None => rows.push(format!(
                "| {point} | {} | {} | - | - | - | - | - | - | - | - | failed: {} |",
                run.scenario,
                run.repeat,
                run.error.as_deref().unwrap_or("unreadable")
            )),
        }
        if let Some(r) = &rep {
            let label = if point.is_empty() {
                run.scenario.clone()
            } else {
                format!("{} {point}", run.scenario)
            };
            for_html.push((label, format!("{point} r{}", run.repeat), r.clone()));
        }
        json_runs.push(serde_json::json!({
            "scenario": run.scenario, "repeat": run.repeat, "point": run.point,
            "file": run.file, "status": run.status, "error": run.error, "report": rep,
        }));
    }
    // Repeated runs: each metric's mean, 95% t-interval and CV; runs whose CV passes the bound
    // disagree, and the campaign's figure for that metric is not to be trusted alone.
    let names = ["req/s", "out tok/s", "TTFT p50 ms", "TPOT p50 ms"];
    let mut across = Vec::new();
    for ((point, scenario, stage), runs) in repeats.iter().filter(|(_, v)| v.len() > 1) {
        for (i, name) in names.iter().enumerate() {
            let vals: Vec<f64> = runs.iter().map(|r| r[i]).collect();
            if let Some(m) = trace_stats::mean_ci(&vals) {
                across.push((point, scenario, stage, *name, m));
            }
        }
    }
    let text = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "schema": "trace.suite-report/1",
                "repeats": across.iter().map(|(p, s, st, name, m)| serde_json::json!({
                    "point": p, "scenario": s, "stage": st, "metric": name, "summary": m,
                    "disagree": m.cv.is_some_and(|c| c > REPEAT_CV_BOUND),
                })).collect::<Vec<_>>(),
                "suite": rec.suite, "name": rec.name, "engine_cmd": rec.engine_cmd,
                "started": rec.started, "ended": rec.ended, "runs": json_runs,
                "failed_points": rec.failed_points,
            }))? + "\n"
        }
        _ => {
            let mut o = format!(
                "# campaign {} ({}, {} run(s))\n\n| point | scenario | repeat | stage | completed | \
                 failed | req/s | out tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | verdict |\n\
                 |---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
                rec.name.as_deref().unwrap_or("suite"),
                rec.suite,
                rec.runs.len()
            );
            for r in rows {
                o.push_str(&r);
                o.push('\n');
            }
            if !across.is_empty() {
                o.push_str(
                    "\n## Repeats\n\n| point | scenario | stage | metric | runs | mean | 95% CI | CV | |\n\
                     |---|---|---|---|---:|---:|---|---:|---|\n",
                );
                for (p, s, st, name, m) in &across {
                    let ci = match (m.low, m.high) {
                        (Some(l), Some(h)) => format!("[{l:.2}, {h:.2}]"),
                        _ => "-".into(),
                    };
                    let cv = m.cv.map_or("-".into(), |c| format!("{:.1}%", 100.0 * c));
                    let flag = if m.cv.is_some_and(|c| c > REPEAT_CV_BOUND) {
                        "runs disagree"
                    } else {
                        ""
                    };
                    o.push_str(&format!(
                        "| {p} | {s} | {st} | {name} | {} | {:.2} | {ci} | {cv} | {flag} |\n",
                        m.n, m.mean
                    ));
                }
            }
            for f in &rec.failed_points {
                o.push_str(&format!("\ngrid point {:?} failed: {}\n", f.point, f.error));
            }
            o
        }
    };
    if let Some(path) = &args.html {
        let title = rec.name.clone().unwrap_or_else(|| rec.suite.clone());
        write_file(path, &trace_analyze::html::campaign_html(&title, &for_html))?;
    }
    print(&text, matches!(args.format, Format::Json))?;
    Ok(ExitCode::SUCCESS)
}

/// Repeated runs whose coefficient of variation passes this disagree.
const REPEAT_CV_BOUND: f64 = 0.10;

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.1}"))
}

pub(crate) fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes `text` to stdout; on a terminal, unless it is JSON (which escapes its own), with
/// control characters from the trace's strings (stage labels, models) escaped, so a crafted
/// file cannot drive the terminal.
pub(crate) fn print(text: &str, json: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let mut out = std::io::stdout().lock();
    let text = if out.is_terminal() && !json {
        trace_format::printable_text(text)
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Runs `trace report`.
pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    if let [dir] = &args.files[..]
        && dir.is_dir()
        && dir.join("suite.json").is_file()
    {
        return suite_report(&args, dir);
    }
    let export = match args.export.as_deref() {
        None => None,
        Some([fmt, file]) if fmt == "vllm-json" => Some(PathBuf::from(file)),
        Some([fmt, _]) => {
            anyhow::bail!("invalid --export format '{fmt}': the only one is vllm-json")
        }
        Some(_) => {
            anyhow::bail!("--export takes a format and a file: --export vllm-json out.jsonl")
        }
    };
    let inputs: Vec<&Path> = args.files.iter().map(PathBuf::as_path).collect();
    for out in export.iter().chain(&args.html) {
        super::not_an_input(out, &inputs)?;
    }
    let local = super::runs::resolve(&args.files)?;
    let mut data = load_run(&local.path, LoadOptions::default())
        .with_context(|| format!("reading trace {}", local.path.display()))?;
    data.alias = local.alias.clone();
    let opts = ReportOptions {
        percentiles: args.percentiles,
        slo: args.slo.unwrap_or_default(),
    };
    let mut rep = report::build(&mut data, &opts);
    rep.file = match &args.files[..] {
        [one] => crate::store::shown(one),
        _ => crate::store::shown(&local.path),
    };
    let text = match args.format {
        Format::Text => rep.to_text(),
        Format::Markdown => rep.to_markdown(),
        Format::Csv => rep.to_csv(),
        Format::Json => serde_json::to_string_pretty(&rep)? + "\n",
    };
    if let Some(path) = export {
        write_file(&path, &vllm::export(&data, &rep))?;
    }
    if let Some(path) = &args.html {
        write_file(path, &html::report_html(&rep, &data))?;
    }
    print(&text, args.format == Format::Json)?;
    if args.format != Format::Text {
        for w in &rep.warnings {
            eprintln!("trace: warning: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
