//! `trace suite run` end to end (issue 19): a suite of three scenarios against the simulator
//! into one directory and `trace report DIR`; an engine-config sweep that starts `trace sim`
//! with a different TTFT at each grid point; resume after a campaign is killed; bad suites and
//! an engine that never becomes healthy.

use std::path::Path;
use std::time::{Duration, Instant};

use trace_format::{TraceReader, meta};

use crate::util::*;

fn sim() -> trace_sim::SimHandle {
    let mut cfg = trace_sim::SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1));
    cfg.model = "m".into();
    trace_sim::spawn(cfg, ([127, 0, 0, 1], 0).into()).unwrap()
}

const THREE: &str = r#"
name = "three"
common = ["--model", "m", "--input-len", "16", "--output-len", "4"]
[[scenario]]
name = "poisson"
args = ["random", "--rate", "40", "-n", "8"]
[[scenario]]
name = "conc"
args = ["random", "--max-concurrency", "1,4", "-n", "6"]
[[scenario]]
name = "sweep"
args = ["random", "--rate", "20,inf", "-n", "5"]
"#;

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

fn record(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("suite.json")).unwrap()).unwrap()
}

#[test]
fn a_suite_of_three_scenarios_runs_into_one_directory_and_reports_as_one_table() {
    let d = tempfile::tempdir().unwrap();
    let suite = write(d.path(), "s.toml", THREE);
    let out = d.path().join("campaign");
    let s = sim();
    run_ok_in(
        &[
            "suite",
            "run",
            &suite,
            "--url",
            &s.url(),
            "-o",
            out.to_str().unwrap(),
        ],
        d.path(),
    );
    for (name, rows) in [("poisson", 8), ("conc", 12), ("sweep", 10)] {
        let r = TraceReader::open(out.join(format!("{name}.parquet"))).unwrap();
        assert_eq!(r.num_rows(), rows, "{name}");
        let c: serde_json::Value =
            serde_json::from_str(r.meta().get(meta::CAMPAIGN).unwrap()).unwrap();
        assert_eq!(
            (c["suite"].as_str(), c["scenario"].as_str()),
            (Some("three"), Some(name))
        );
        assert_eq!(r.meta().get(meta::LABEL), Some(name));
    }
    let rec = record(&out);
    assert_eq!(rec["runs"].as_array().unwrap().len(), 3);
    assert!(
        rec["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "done")
    );
    assert!(rec["ended"].is_string() && rec["tool_version"].is_string());
    // One row per scenario x stage.
    let o = run_ok_in(&["report", out.to_str().unwrap()], d.path());
    let table = stdout(&o);
    for row in [
        "| poisson | 1 | rate=40 |",
        "| conc | 1 | conc=1 |",
        "| conc | 1 | conc=4 |",
        "| sweep | 1 | rate=20 |",
        "| sweep | 1 | rate=inf |",
    ] {
        assert!(table.contains(row), "{row} in\n{table}");
    }
    let o = run_ok_in(
        &["report", out.to_str().unwrap(), "--format", "json"],
        d.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["runs"][1]["report"]["stages"].as_array().unwrap().len(),
        2
    );

    // Run again into the same directory: refused without --resume.
    let again = run_in(
        &[
            "suite",
            "run",
            &suite,
            "--url",
            &s.url(),
            "-o",
            out.to_str().unwrap(),
        ],
        d.path(),
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--resume"), "{}", stderr(&again));
}

#[test]
fn an_engine_sweep_starts_the_engine_at_each_grid_point() {
    let d = tempfile::tempdir().unwrap();
    let suite = write(
        d.path(),
        "s.toml",
        r#"
common = ["--model", "m", "--input-len", "8", "--output-len", "3"]
[[scenario]]
name = "light"
args = ["random", "--rate", "20", "-n", "6"]
"#,
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let cmd = format!(
        "{} sim --port {port} --ttft {{ttft}} --itl 1ms --model m",
        env!("CARGO_BIN_EXE_trace")
    );
    let out = d.path().join("sweep");
    let o = run_ok_in(
        &[
            "suite",
            "run",
            &suite,
            "--url",
            &url,
            "-o",
            out.to_str().unwrap(),
            "--engine-cmd",
            &cmd,
            "--grid",
            "ttft=5ms,60ms",
            "--engine-grace",
            "5s",
        ],
        d.path(),
    );
    assert!(stderr(&o).contains("stopped the engine"), "{}", stderr(&o));
    let ttft_p50 = |point: &str| {
        let f = out.join(point).join("light.parquet");
        let r = TraceReader::open(&f).unwrap();
        let c: serde_json::Value =
            serde_json::from_str(r.meta().get(meta::CAMPAIGN).unwrap()).unwrap();
        assert_eq!(c["params"]["ttft"].as_str(), point.strip_prefix("ttft="));
        assert!(out.join(point).join("engine.log").exists());
        let o = run_ok_in(
            &["report", f.to_str().unwrap(), "--format", "json"],
            d.path(),
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["stages"][0]["metrics"]["ttft"]["p50"].as_f64().unwrap()
    };
    let (fast, slow) = (ttft_p50("ttft=5ms"), ttft_p50("ttft=60ms"));
    assert!(
        slow > fast + 30.0,
        "the second point's engine is slower: {fast} vs {slow}"
    );
    // The engine is gone: its port is free again.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());

    // The campaign's grid points compared by diff, scenario by scenario, named by their points:
    // the slower point's TTFT is worse, as the plain medians above say.
    let o = run_ok_in(
        &["diff", out.to_str().unwrap(), "--format", "json"],
        d.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "trace.campaign-diff/1");
    let sc = &v["scenarios"][0];
    assert_eq!(sc["scenario"], "light");
    let text = serde_json::to_string(&sc["diff"]).unwrap();
    assert!(
        text.contains("ttft=5ms") && text.contains("ttft=60ms"),
        "{text}"
    );
    let o = run_in(
        &["diff", out.to_str().unwrap(), "--fail-on", "ttft.p50>+20%"],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("## light"), "{}", stdout(&o));
    assert!(stderr(&o).contains("light: "), "{}", stderr(&o));

    // An engine that never becomes healthy: the point is reported, the campaign goes on.
    let out2 = d.path().join("broken");
    let o = run_in(
        &[
            "suite",
            "run",
            &suite,
            "--url",
            &url,
            "-o",
            out2.to_str().unwrap(),
            "--engine-cmd",
            "sleep {t}",
            "--grid",
            "t=30",
            "--engine-timeout",
            "1s",
            "--engine-grace",
            "0s",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rec = record(&out2);
    assert!(
        rec["failed_points"][0]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );
    let table = stdout(&run_ok_in(&["report", out2.to_str().unwrap()], d.path()));
    assert!(
        table.contains("failed: ") && table.contains("did not answer"),
        "{table}"
    );
    // An engine that dies mid-run: that run fails with its file closed valid, the point's
    // remaining scenario is not run, the next point is measured, and the report says so.
    let two = write(
        d.path(),
        "two.toml",
        r#"
common = ["--model", "m", "--input-len", "8", "--output-len", "3"]
[[scenario]]
name = "first"
args = ["random", "--rate", "10", "-n", "40"]
[[scenario]]
name = "second"
args = ["random", "--rate", "20", "-n", "4"]
"#,
    );
    let out3 = d.path().join("dies");
    let cmd = format!(
        "timeout -s KILL {{life}} {} sim --port {port} --ttft 5ms --itl 1ms --model m",
        env!("CARGO_BIN_EXE_trace")
    );
    let o = run_in(
        &[
            "suite",
            "run",
            &two,
            "--url",
            &url,
            "-o",
            out3.to_str().unwrap(),
            "--engine-cmd",
            &cmd,
            "--grid",
            "life=2,600",
            "--engine-grace",
            "5s",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rec = record(&out3);
    let runs = rec["runs"].as_array().unwrap();
    let status: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["scenario"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        status,
        [
            ("first", "failed"),
            ("second", "failed"),
            ("first", "done"),
            ("second", "done")
        ]
    );
    assert!(runs[0]["error"].as_str().unwrap().contains("engine exited"));
    assert!(runs[1]["error"].as_str().unwrap().starts_with("not run"));
    // The dead point's file is a valid trace: its requests after the death are failed rows.
    let r = TraceReader::open(out3.join("life=2").join("first.parquet")).unwrap();
    assert_eq!(r.num_rows(), 40);
    let table = stdout(&run_ok_in(&["report", out3.to_str().unwrap()], d.path()));
    assert!(table.contains("engine exited"), "{table}");

    // A grid axis the command does not use.
    let bad = run_in(
        &[
            "suite",
            "run",
            &suite,
            "--url",
            &url,
            "-o",
            out2.to_str().unwrap(),
            "--engine-cmd",
            "sleep 1",
            "--grid",
            "t=30",
        ],
        d.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("no {t} placeholder"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn a_killed_campaign_resumes_where_it_stopped() {
    let d = tempfile::tempdir().unwrap();
    let suite = write(
        d.path(),
        "s.toml",
        r#"
common = ["--model", "m", "--input-len", "8", "--output-len", "3"]
[[scenario]]
name = "first"
args = ["random", "--rate", "50", "-n", "5"]
[[scenario]]
name = "long"
args = ["random", "--rate", "0.5", "-n", "60"]
[[scenario]]
name = "last"
args = ["random", "--rate", "50", "-n", "5"]
"#,
    );
    let s = sim();
    let out = d.path().join("c");
    let mut child = trace()
        .args([
            "suite",
            "run",
            &suite,
            "--url",
            &s.url(),
            "-o",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed while the long scenario runs.
    let t = Instant::now();
    while !out.join("long.parquet.partial").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the campaign never reached 'long'"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("last.parquet").exists());
    // The long scenario shortened, so the resumed campaign finishes quickly.
    let suite2 = write(
        d.path(),
        "s.toml",
        &std::fs::read_to_string(&suite)
            .unwrap()
            .replace("0.5", "50"),
    );
    let o = run_ok_in(
        &[
            "suite",
            "run",
            &suite2,
            "--url",
            &s.url(),
            "-o",
            out.to_str().unwrap(),
            "--resume",
        ],
        d.path(),
    );
    assert!(
        stderr(&o).contains("first.parquet already finished, skipped"),
        "{}",
        stderr(&o)
    );
    for name in ["first", "long", "last"] {
        assert!(
            TraceReader::open(out.join(format!("{name}.parquet"))).is_ok(),
            "{name}"
        );
    }
    // The killed attempt's data is kept, not dropped: recovered when it had flushed rows, its
    // directory moved aside when it had none yet.
    assert!(
        stderr(&o).contains("long.interrupted-1.parquet"),
        "{}",
        stderr(&o)
    );
    let kept = out.join("long.interrupted-1.parquet");
    assert!(
        TraceReader::open(&kept).is_ok() || out.join("long.interrupted-1.parquet.partial").is_dir(),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("long.parquet.partial").exists());
    let rec = record(&out);
    assert!(
        rec["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "done")
    );
    assert_eq!(rec["runs"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_suites_are_named_before_anything_runs() {
    let d = tempfile::tempdir().unwrap();
    let bad = write(
        d.path(),
        "bad.toml",
        "[[scenario]]\nname = \"x\"\nargs = [\"random\", \"--rate\", \"1\"]\nrepeat = 3\n",
    );
    let o = run_in(&["suite", "run", &bad, "-o", "out"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad.toml") && stderr(&o).contains("repeat"),
        "{}",
        stderr(&o)
    );
    let missing = write(
        d.path(),
        "missing.toml",
        "[[scenario]]\nname = \"x\"\nargs = [\"sharegpt=nope.json\", \"--rate\", \"1\", \"-n\", \"2\"]\n",
    );
    let o = run_in(&["suite", "run", &missing, "-o", "m"], d.path());
    // A missing dataset is named with its scenario before anything runs.
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("scenario 'x'") && stderr(&o).contains("nope.json"),
        "{}",
        stderr(&o)
    );
    assert!(!d.path().join("m").exists());
}

#[test]
fn repeats_are_summarised_with_their_mean_interval_and_spread() {
    let d = tempfile::tempdir().unwrap();
    let suite = write(
        d.path(),
        "s.toml",
        "common = [\"--model\", \"m\", \"--input-len\", \"8\", \"--output-len\", \"3\"]\n\
         [[scenario]]\nname = \"r\"\nargs = [\"random\", \"--rate\", \"40\", \"-n\", \"10\"]\n",
    );
    let s = sim();
    let out = d.path().join("rep");
    run_ok_in(
        &[
            "suite",
            "run",
            &suite,
            "--url",
            &s.url(),
            "-o",
            out.to_str().unwrap(),
            "--repeat",
            "3",
        ],
        d.path(),
    );
    // Each run's own report, and their plain mean.
    let mut tput = Vec::new();
    for k in 1..=3 {
        let f = out.join(format!("r-r{k}.parquet"));
        let o = run_ok_in(
            &["report", f.to_str().unwrap(), "--format", "json"],
            d.path(),
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        tput.push(v["stages"][0]["request_throughput"].as_f64().unwrap());
    }
    let mean = tput.iter().sum::<f64>() / 3.0;
    let o = run_ok_in(
        &["report", out.to_str().unwrap(), "--format", "json"],
        d.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["repeats"].as_array().unwrap();
    let req = rows.iter().find(|r| r["metric"] == "req/s").unwrap();
    assert_eq!(req["summary"]["n"], 3);
    assert!(
        (req["summary"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{req} vs {mean}"
    );
    let (lo, hi) = (
        req["summary"]["low"].as_f64().unwrap(),
        req["summary"]["high"].as_f64().unwrap(),
    );
    assert!(lo <= mean && mean <= hi);
    let text = stdout(&run_ok_in(&["report", out.to_str().unwrap()], d.path()));
    assert!(
        text.contains("## Repeats") && text.contains("| r | rate=40 | req/s | 3 |"),
        "{text}"
    );
}
