//! `trace suite run`: a campaign in one command. A suite file (TOML) names scenarios, each a
//! `trace replay` command line (workload, lengths, rates or concurrencies, counts); the suite
//! runs them into `DIR/<scenario>.parquet` and keeps `DIR/suite.json` (what ran, versions,
//! start and end of each), so `--resume` skips what finished. With `--engine-cmd` and `--grid`
//! it sweeps an engine's settings: for each grid point it starts the engine (its log kept),
//! waits for it to be healthy, runs the suite into `DIR/<k=v,...>/`, and stops it (SIGINT, a
//! grace period, SIGTERM, SIGKILL). Each run file records its scenario, repeat and grid point in
//! `trace.campaign`.
//!
//! Scenarios are replay command lines, parsed by the replay verb's own parser, so a suite takes
//! every replay flag and a bad one is named with its scenario before anything runs.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use super::replay::ReplayArgs;

/// Arguments of `trace suite`.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// The suite action.
    #[command(subcommand)]
    pub cmd: SuiteCmd,
}

/// What `trace suite` does.
#[derive(Debug, Subcommand)]
pub enum SuiteCmd {
    /// Run a suite's scenarios (at every grid point of an engine sweep) into one directory.
    Run(RunArgs),
}

/// Arguments of `trace suite run`.
#[derive(Debug, Args)]
#[command(after_help = "\
A suite file:

  name = \"lmdeploy-benchmark\"
  common = [\"--endpoint\", \"completions\", \"--ignore-eos\"]   # added to every scenario
  [[scenario]]
  name = \"random-1024-1024\"
  args = [\"random\", \"--input-len\", \"1024\", \"--output-len\", \"1024\", \"-n\", \"2000\", \"--rate\", \"inf\"]

Examples:
  trace suite run suites/lmdeploy-benchmark.toml --url http://127.0.0.1:23333 -o campaign/
  trace suite run suites/evalscope-perf.toml -o sweep/ --url http://127.0.0.1:8000 \\
      --engine-cmd 'lmdeploy serve api_server M --max-batch-size {mbs} --cache-max-entry-count {cache}' \\
      --grid mbs=128,256 --grid cache=0.5,0.8
  trace report campaign/")]
pub struct RunArgs {
    /// The suite file (TOML).
    pub suite: PathBuf,
    /// The campaign directory: one trace per scenario, suite.json, engine logs.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The engine to benchmark; without it, each scenario starts the embedded simulator.
    #[arg(long)]
    pub url: Option<String>,
    /// Skip scenarios that finished in an earlier run into the same directory.
    #[arg(long)]
    pub resume: bool,
    /// Run every scenario N times (files `<scenario>-r<k>.parquet`).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// An engine command to start at each grid point; `{key}` takes the point's value.
    #[arg(long, value_name = "CMD", requires = "url")]
    pub engine_cmd: Option<String>,
    /// One grid axis: KEY=V1,V2,... (repeatable); needs --engine-cmd using every {KEY}.
    #[arg(long, value_name = "KEY=V1,V2", value_parser = grid_axis)]
    pub grid: Vec<(String, Vec<String>)>,
    /// How long a started engine may take to answer /health or /v1/models.
    #[arg(long, default_value = "10m", value_parser = crate::parse::duration)]
    pub engine_timeout: Duration,
    /// After SIGINT, how long the engine may take to exit before SIGTERM.
    #[arg(long, default_value = "30s", value_parser = crate::parse::duration_or_zero)]
    pub engine_grace: Duration,
}

fn grid_axis(s: &str) -> Result<(String, Vec<String>), String> {
    let (k, vs) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid grid axis '{s}': expected KEY=V1,V2,..."))?;
    let vals: Vec<String> = vs.split(',').map(|v| v.trim().to_string()).collect();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "invalid grid axis '{s}': KEY must be letters, digits or _"
        ));
    }
    if vals.iter().any(String::is_empty) {
        return Err(format!("invalid grid axis '{s}': an empty value"));
    }
    Ok((k.to_string(), vals))
}

/// A suite file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    /// The suite's name.
    #[serde(default)]
    pub name: Option<String>,
    /// What it measures.
    #[serde(default)]
    pub description: Option<String>,
    /// Replay flags added to every scenario.
    #[serde(default)]
    pub common: Vec<String>,
    /// The scenarios, in order.
    #[serde(rename = "scenario", default)]
    pub scenarios: Vec<Scenario>,
}

/// One scenario: a replay command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name: the trace file's name.
    pub name: String,
    /// What it stands for.
    #[serde(default)]
    pub description: Option<String>,
    /// `trace replay` arguments (the workload first), without --url and -o.
    pub args: Vec<String>,
}

/// Flags the suite sets itself.
const RESERVED: [&str; 6] = [
    "-o",
    "--output",
    "--url",
    "--force",
    "--campaign",
    "--label",
];

/// `suite.json`: what a campaign ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SuiteRecord {
    /// The suite file.
    pub suite: String,
    /// Its name.
    pub name: Option<String>,
    /// `trace`'s version.
    pub tool_version: String,
    /// The engine command, if any.
    pub engine_cmd: Option<String>,
    /// The target URL (credentials redacted), if given.
    pub url: Option<String>,
    /// When the campaign (this invocation) started, RFC 3339.
    pub started: String,
    /// When it ended; None while running.
    pub ended: Option<String>,
    /// Every run, in order.
    pub runs: Vec<RunRecord>,
    /// Grid points whose engine never became healthy, with why.
    #[serde(default)]
    pub failed_points: Vec<PointFailure>,
}

impl SuiteRecord {
    /// Records a run, replacing an earlier attempt at the same scenario, repeat and point.
    fn put(&mut self, run: RunRecord) {
        self.runs.retain(|x| {
            !(x.scenario == run.scenario && x.repeat == run.repeat && x.point == run.point)
        });
        self.runs.push(run);
    }
}

/// One scenario run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Scenario name.
    pub scenario: String,
    /// Repeat, 1-based.
    pub repeat: u32,
    /// The grid point (empty without a sweep).
    pub point: BTreeMap<String, String>,
    /// The trace file, relative to the campaign directory.
    pub file: String,
    /// `done`, or `failed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Start and end, RFC 3339.
    pub started: String,
    /// End.
    pub ended: String,
}

/// A grid point that could not be measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointFailure {
    /// The point.
    pub point: BTreeMap<String, String>,
    /// Why.
    pub error: String,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Reads and checks a suite: unknown keys, duplicate or unsafe names, and every scenario's
/// arguments through the replay parser, each error naming the file and the scenario.
pub fn load_suite(path: &Path) -> anyhow::Result<SuiteFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let suite: SuiteFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        !suite.scenarios.is_empty(),
        "{}: no [[scenario]]",
        path.display()
    );
    let mut seen = std::collections::HashSet::new();
    for s in &suite.scenarios {
        let bad = |why: String| anyhow::anyhow!("{}: scenario '{}': {why}", path.display(), s.name);
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad("a name is letters, digits, '-', '_' or '.'".into()));
        }
        if !seen.insert(s.name.clone()) {
            return Err(bad("the name is used twice".into()));
        }
        if let Some(r) = s
            .args
            .iter()
            .chain(&suite.common)
            .find(|a| RESERVED.contains(&a.split('=').next().unwrap_or(a)))
        {
            return Err(bad(format!("{r} is set by the suite, not the scenario")));
        }
        let args = replay_args(&suite, s, None, Path::new("check.parquet"), "{}", None)
            .map_err(|e| bad(format!("{e}")))?;
        let cfg = args.to_config("http://127.0.0.1:1".into(), "check.parquet".into())?;
        if let Some(input) = cfg.workload.input_path()
            && !input.exists()
        {
            return Err(bad(format!(
                "its workload {} does not exist",
                input.display()
            )));
        }
    }
    Ok(suite)
}

/// The replay arguments of a scenario run.
fn replay_args(
    suite: &SuiteFile,
    s: &Scenario,
    url: Option<&str>,
    out: &Path,
    campaign: &str,
    progress: Option<&str>,
) -> anyhow::Result<ReplayArgs> {
    let mut argv: Vec<String> = vec!["trace".into(), "replay".into()];
    argv.extend(s.args.iter().cloned());
    argv.extend(suite.common.iter().cloned());
    if let Some(u) = url {
        argv.extend(["--url".into(), u.to_string()]);
    }
    argv.extend([
        "-o".into(),
        out.display().to_string(),
        "--force".into(),
        "--label".into(),
        s.name.clone(),
        "--campaign".into(),
        campaign.to_string(),
    ]);
    if let Some(p) = progress {
        argv.extend(["--progress-prefix".into(), p.to_string()]);
    }
    let cli = crate::Cli::try_parse_from(&argv).map_err(|e| {
        // clap's message, first line: the flag and why.
        anyhow::anyhow!("{}", e.to_string().lines().next().unwrap_or_default())
    })?;
    match cli.cmd {
        crate::Cmd::Replay(a) => {
            anyhow::ensure!(
                a.processes == 1,
                "--processes is not supported in a suite scenario: each scenario runs inside \
                 the suite's process"
            );
            // Flags clap accepts but the replay refuses (a bad combination) fail here too.
            a.to_config(
                url.unwrap_or("http://127.0.0.1:1").to_string(),
                out.to_path_buf(),
            )?;
            Ok(*a)
        }
        _ => unreachable!("argv starts with replay"),
    }
}

/// The grid's points: every combination, the first axis slowest.
fn points(grid: &[(String, Vec<String>)]) -> Vec<BTreeMap<String, String>> {
    grid.iter().fold(vec![BTreeMap::new()], |acc, (k, vs)| {
        acc.iter()
            .flat_map(|p| {
                vs.iter().map(move |v| {
                    let mut q = p.clone();
                    q.insert(k.clone(), v.clone());
                    q
                })
            })
            .collect()
    })
}

/// A point's directory name: `k1=v1,k2=v2`, made safe for a file name.
fn point_dir(p: &BTreeMap<String, String>) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "=,._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `{key}` placeholders of an engine command (keys of letters, digits and `_`).
fn placeholders(cmd: &str) -> Vec<String> {
    cmd.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(k, _)| k))
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_string)
        .collect()
}

fn fill(cmd: &str, p: &BTreeMap<String, String>) -> String {
    p.iter().fold(cmd.to_string(), |c, (k, v)| {
        c.replace(&format!("{{{k}}}"), v)
    })
}

/// Waits until the engine answers `/health` or `/v1/models` with a success, it exits, or the
/// timeout passes.
fn wait_healthy(
    url: &str,
    child: &mut std::process::Child,
    timeout: Duration,
) -> anyhow::Result<()> {
    let base = trace_client::ServerUrl::parse(url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = trace_client::Transport::default()
        .builder()?
        .timeout(Duration::from_secs(2))
        .build()?;
    let routes = [base.route("health"), base.api("models")];
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("the engine exited ({status}) before it was healthy");
        }
        let ok = rt.block_on(async {
            for r in &routes {
                if let Ok(resp) = http.get(r.as_str()).send().await
                    && resp.status().is_success()
                {
                    return true;
                }
            }
            false
        });
        if ok {
            return Ok(());
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "the engine did not answer {} or {} within {}",
                routes[0],
                routes[1],
                humantime::format_duration(timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Before a scenario is run again, the data of an earlier attempt that was killed (its
/// `.partial` directory) is kept, never dropped: recovered into `<name>.interrupted-<n>.parquet`
/// beside it, or, when it cannot be, the directory moved aside.
fn keep_interrupted(file: &Path) {
    let partial = PathBuf::from(format!("{}.partial", file.display()));
    if !partial.exists() {
        return;
    }
    let stem = file.with_extension("");
    let aside = (1..)
        .map(|n| PathBuf::from(format!("{}.interrupted-{n}.parquet", stem.display())))
        .find(|p| !p.exists() && !PathBuf::from(format!("{}.partial", p.display())).exists())
        .unwrap_or_else(|| stem.with_extension("interrupted.parquet"));
    match trace_format::recover(&partial, &aside) {
        Ok(r) => eprintln!(
            "suite: an earlier attempt was interrupted; its {} rows are kept in {}",
            r.rows,
            aside.display()
        ),
        Err(e) => {
            let moved = PathBuf::from(format!("{}.partial", aside.display()));
            match std::fs::rename(&partial, &moved) {
                Ok(()) => eprintln!(
                    "suite: an earlier attempt was interrupted ({e}); its data moved to {}",
                    moved.display()
                ),
                Err(m) => eprintln!(
                    "suite: an earlier attempt's data in {} could not be kept aside ({e}; {m})",
                    partial.display()
                ),
            }
        }
    }
}

/// A finished trace (not a `.partial`): a run that completed.
fn finished(path: &Path) -> bool {
    trace_format::TraceReader::open(path).is_ok_and(|r| !r.is_interrupted())
}

/// Runs `trace suite`.
pub fn run(args: SuiteArgs) -> anyhow::Result<ExitCode> {
    match args.cmd {
        SuiteCmd::Run(a) => run_suite(a),
    }
}

fn run_suite(a: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !crate::store::is_remote(&a.output.to_string_lossy()),
        "{}: a campaign directory is local (it is resumed in place); copy it to object \
         storage after, or give each run's -o in the suite",
        a.output.display()
    );
    let suite = load_suite(&a.suite)?;
    if let Some(cmd) = &a.engine_cmd {
        for (k, _) in &a.grid {
            anyhow::ensure!(
                cmd.contains(&format!("{{{k}}}")),
                "--grid {k}: the engine command has no {{{k}}} placeholder"
            );
        }
        for ph in placeholders(cmd) {
            anyhow::ensure!(
                a.grid.iter().any(|(k, _)| *k == ph),
                "--engine-cmd: placeholder {{{ph}}} has no --grid {ph}=..."
            );
        }
    } else {
        anyhow::ensure!(a.grid.is_empty(), "--grid needs --engine-cmd");
    }
    std::fs::create_dir_all(&a.output)
        .with_context(|| format!("cannot create {}", a.output.display()))?;
    let record_path = a.output.join("suite.json");
    let earlier: Option<SuiteRecord> = std::fs::read(&record_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    anyhow::ensure!(
        a.resume || earlier.is_none(),
        "{} holds a campaign already (suite.json): --resume to finish it, or another -o",
        a.output.display()
    );
    let mut rec = SuiteRecord {
        suite: a.suite.display().to_string(),
        name: suite.name.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        engine_cmd: a.engine_cmd.clone(),
        url: a.url.as_deref().map(trace_client::redact),
        started: now(),
        ended: None,
        runs: earlier.map(|e| e.runs).unwrap_or_default(),
        failed_points: Vec::new(),
    };
    let save = |rec: &SuiteRecord| -> anyhow::Result<()> {
        let tmp = record_path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(rec)?)?;
        std::fs::rename(&tmp, &record_path)?;
        Ok(())
    };
    save(&rec)?;
    let pts = points(&a.grid);
    let total = pts.len() * suite.scenarios.len() * a.repeat as usize;
    let started = Instant::now();
    let mut k = 0usize;
    let mut failures = 0usize;
    for p in &pts {
        let dir = if a.grid.is_empty() {
            a.output.clone()
        } else {
            a.output.join(point_dir(p))
        };
        std::fs::create_dir_all(&dir)?;
        let todo: Vec<(&Scenario, u32, PathBuf)> = suite
            .scenarios
            .iter()
            .flat_map(|s| (1..=a.repeat).map(move |r| (s, r)))
            .map(|(s, r)| {
                let file = if a.repeat > 1 {
                    format!("{}-r{r}.parquet", s.name)
                } else {
                    format!("{}.parquet", s.name)
                };
                (s, r, dir.join(file))
            })
            .collect();
        let pending: Vec<_> = todo
            .into_iter()
            .filter(|(s, r, f)| {
                let done = a.resume
                    && finished(f)
                    && rec.runs.iter().any(|x| {
                        x.scenario == s.name
                            && x.repeat == *r
                            && x.point == *p
                            && x.status == "done"
                    });
                if done {
                    k += 1;
                    eprintln!("suite: {} already finished, skipped", f.display());
                }
                !done
            })
            .collect();
        if pending.is_empty() {
            continue;
        }
        let mut engine = match &a.engine_cmd {
            None => None,
            Some(cmd) => {
                let line = fill(cmd, p);
                let log = dir.join("engine.log");
                let out = File::create(&log)
                    .with_context(|| format!("cannot create {}", log.display()))?;
                let mut c = Command::new("sh");
                c.args(["-c", &line])
                    .stdin(Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out);
                let mut child = trace_sys::process::own_group(&mut c)
                    .spawn()
                    .with_context(|| format!("cannot start the engine: {line}"))?;
                eprintln!(
                    "suite: started the engine for {} (log {})",
                    point_dir(p),
                    log.display()
                );
                let url = a.url.as_deref().unwrap_or_default();
                if let Err(e) = wait_healthy(url, &mut child, a.engine_timeout) {
                    trace_sys::process::stop_group(&mut child, a.engine_grace);
                    let why = format!("{e:#} (engine log: {})", log.display());
                    eprintln!(
                        "suite: grid point {}: {why}; going on to the next",
                        point_dir(p)
                    );
                    rec.failed_points.push(PointFailure {
                        point: p.clone(),
                        error: why,
                    });
                    save(&rec)?;
                    failures += pending.len();
                    k += pending.len();
                    continue;
                }
                Some(child)
            }
        };
        // Set when the engine dies mid-run: the rest of this point's scenarios are not run.
        let mut engine_died: Option<String> = None;
        for (s, r, file) in pending {
            if let Some(why) = &engine_died {
                k += 1;
                failures += 1;
                let at = now();
                rec.put(RunRecord {
                    scenario: s.name.clone(),
                    repeat: r,
                    point: p.clone(),
                    file: String::new(),
                    status: "failed".into(),
                    error: Some(format!("not run: {why}")),
                    started: at.clone(),
                    ended: at,
                });
                save(&rec)?;
                continue;
            }
            k += 1;
            let eta = if k > 1 {
                let per = started.elapsed().as_secs_f64() / (k - 1) as f64;
                format!(", about {:.0} s left", per * (total - k + 1) as f64)
            } else {
                String::new()
            };
            eprintln!("suite: scenario {k} of {total}: {}{eta}", file.display());
            let point_label = if p.is_empty() {
                String::new()
            } else {
                format!(" {}", point_dir(p))
            };
            let progress = format!("[{k}/{total} {}{point_label}{eta}]", s.name);
            keep_interrupted(&file);
            let campaign = serde_json::json!({
                "suite": suite.name, "suite_file": rec.suite, "scenario": s.name, "repeat": r,
                "engine_cmd": a.engine_cmd.as_deref().map(|c| fill(c, p)), "params": p,
            })
            .to_string();
            let begun = now();
            let outcome = replay_args(
                &suite,
                s,
                a.url.as_deref(),
                &file,
                &campaign,
                Some(&progress),
            )
            .and_then(super::replay::run);
            let mut error = match outcome {
                Ok(_) if finished(&file) => None,
                Ok(_) => Some("the run did not finish its file".to_string()),
                Err(e) => Some(format!("{e:#}")),
            };
            // An engine that died mid-run fails the run (its file closes valid, the requests
            // after the death are failed rows in it) and the rest of the point.
            if let Some(child) = engine.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let why = format!("the engine exited ({status}) during {}", s.name);
                eprintln!("suite: {why}; going on to the next grid point");
                error.get_or_insert_with(|| {
                    format!("{why}: the rows up to then are in the file, the rest failed")
                });
                rec.failed_points.push(PointFailure {
                    point: p.clone(),
                    error: format!("{why} (engine log: {})", dir.join("engine.log").display()),
                });
                engine_died = Some(why);
            }
            if let Some(e) = &error {
                failures += 1;
                eprintln!("suite: {} failed: {e}", s.name);
            }
            rec.put(RunRecord {
                scenario: s.name.clone(),
                repeat: r,
                point: p.clone(),
                file: file
                    .strip_prefix(&a.output)
                    .unwrap_or(&file)
                    .display()
                    .to_string(),
                status: if error.is_none() { "done" } else { "failed" }.into(),
                error,
                started: begun,
                ended: now(),
            });
            save(&rec)?;
        }
        if let Some(mut child) = engine {
            let how = trace_sys::process::stop_group(&mut child, a.engine_grace);
            eprintln!("suite: stopped the engine for {} ({how:?})", point_dir(p));
        }
    }
    rec.ended = Some(now());
    save(&rec)?;
    eprintln!(
        "suite: {} run(s) in {}, {failures} failed; read more: trace report {}",
        total,
        a.output.display(),
        a.output.display()
    );
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Parses a suite file from a path: used by `trace report DIR` to name the scenarios in order.
pub fn read_record(dir: &Path) -> Option<SuiteRecord> {
    let b = std::fs::read(dir.join("suite.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_expand_and_fill() {
        let g = vec![
            (
                "mbs".to_string(),
                vec!["128".to_string(), "256".to_string()],
            ),
            (
                "cache".to_string(),
                vec!["0.5".to_string(), "0.8".to_string()],
            ),
        ];
        let p = points(&g);
        assert_eq!(p.len(), 4);
        assert_eq!(point_dir(&p[1]), "cache=0.8,mbs=128");
        assert_eq!(fill("x --b {mbs} --c {cache}", &p[3]), "x --b 256 --c 0.8");
        assert_eq!(placeholders("a {mbs} {x y} {} b{cache}"), ["mbs", "cache"]);
        assert!(grid_axis("k").is_err());
        assert!(grid_axis("k=1,,2").is_err());
        assert_eq!(points(&[]).len(), 1);
    }

    #[test]
    fn the_shipped_suites_are_valid_but_for_their_datasets() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites");
        for name in ["lmdeploy-benchmark.toml", "evalscope-perf.toml"] {
            // The datasets are the user's to download: the only complaint is their absence.
            let e = format!("{:#}", load_suite(&dir.join(name)).unwrap_err());
            assert!(e.contains("does not exist"), "{name}: {e}");
        }
    }

    #[test]
    fn suites_are_checked_before_anything_runs() {
        let d = tempfile::tempdir().unwrap();
        let check = |body: &str| {
            let p = d.path().join("s.toml");
            std::fs::write(&p, body).unwrap();
            load_suite(&p).map(|_| ()).map_err(|e| format!("{e:#}"))
        };
        let ok =
            "[[scenario]]\nname = \"a\"\nargs = [\"random\", \"--rate\", \"1\", \"-n\", \"3\"]\n";
        assert!(check(ok).is_ok());
        let e =
            check("nme = \"x\"\n[[scenario]]\nname = \"a\"\nargs = [\"random\"]\n").unwrap_err();
        assert!(e.contains("s.toml") && e.contains("nme"), "{e}");
        let e = check("[[scenario]]\nname = \"a\"\nargs = [\"random\", \"--rate\", \"x\"]\n")
            .unwrap_err();
        assert!(e.contains("scenario 'a'") && e.contains("--rate"), "{e}");
        let e = check("[[scenario]]\nname = \"a\"\nargs = [\"random\", \"--rate\", \"1\", \"-o\", \"x.parquet\"]\n")
            .unwrap_err();
        assert!(e.contains("-o is set by the suite"), "{e}");
        let e = check(&format!("{ok}{ok}")).unwrap_err();
        assert!(e.contains("used twice"), "{e}");
        let e = check("[[scenario]]\nname = \"a\"\nargs = [\"random\", \"--rate\", \"1\", \"--processes\", \"2\"]\n")
            .unwrap_err();
        assert!(e.contains("--processes is not supported"), "{e}");
    }

    #[test]
    fn each_run_carries_its_place_in_the_campaign_to_the_progress_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.toml");
        std::fs::write(
            &p,
            "[[scenario]]\nname = \"a\"\nargs = [\"random\", \"--rate\", \"1\", \"-n\", \"3\"]\n",
        )
        .unwrap();
        let suite = load_suite(&p).unwrap();
        let a = replay_args(
            &suite,
            &suite.scenarios[0],
            None,
            Path::new("x.parquet"),
            "{}",
            Some("[2/6 a mbs=128, about 40 s left]"),
        )
        .unwrap();
        assert_eq!(
            a.progress_prefix.as_deref(),
            Some("[2/6 a mbs=128, about 40 s left]")
        );
        assert_eq!(a.label.as_deref(), Some("a"));
    }
}
