//! End-to-end `trace selfcheck` on the real binary at a small load: the table, the JSON fields,
//! event counts, the exit status of impossible bounds, and bad flags.

use std::process::Output;

use serde_json::Value;

use crate::util::*;

fn selfcheck(args: &[&str]) -> Output {
    trace().arg("selfcheck").args(args).output().unwrap()
}

/// ~1 s of sending at 20 streams, 20 tokens of 10 ms each.
const SMALL: &[&str] = &["--concurrency", "20", "--tokens", "20", "--duration", "1s"];

fn with(extra: &[&str]) -> Vec<String> {
    SMALL.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn run(extra: &[&str]) -> Output {
    let a = with(extra);
    selfcheck(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn table_is_printed() {
    let o = run(&[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "arrival (per event)",
        "TTFT",
        "ITL (per event)",
        "send lag",
        "events/s",
    ] {
        assert!(out.contains(want), "missing {want}: {out}");
    }
}

#[test]
fn json_fields_and_counts() {
    let o = run(&["--format", "json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = v["requests"].as_u64().unwrap();
    assert!(n >= 1);
    assert_eq!(v["ok"].as_u64(), Some(n));
    assert_eq!(v["failed"].as_u64(), Some(0));
    assert_eq!(v["unmatched"].as_u64(), Some(0));
    assert_eq!(v["event_count_mismatches"].as_u64(), Some(0));
    assert_eq!(v["token_events"].as_u64(), Some(n * 20));
    assert_eq!(v["token_events_expected"].as_u64(), Some(n * 20));
    assert_eq!(v["within"], Value::Bool(true));
    assert!(v["peak_concurrency"].as_i64().unwrap() >= 1);
    assert!(v["rate_requested"].as_f64().unwrap() > 0.0);
    assert!(v["event_rate_per_s"].as_f64().unwrap() > 0.0);
    for key in ["arrival_error", "ttft_error", "itl_error", "send_lag"] {
        let d = &v[key];
        for f in [
            "median_us",
            "p1_us",
            "p99_us",
            "spread_us",
            "p99_abs_us",
            "max_abs_us",
        ] {
            let x = d[f].as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite(), "{key}.{f} = {x}");
        }
        for f in ["spread_us", "p99_abs_us", "max_abs_us"] {
            assert!(d[f].as_f64().unwrap() >= 0.0, "{key}.{f}");
        }
        assert!(d["n"].as_u64().unwrap() >= 1, "{key}");
    }
    assert_eq!(v["arrival_error"]["n"].as_u64(), Some(n * 20));
    assert_eq!(v["itl_error"]["n"].as_u64(), Some(n * 19));
    assert_eq!(v["ttft_error"]["n"].as_u64(), Some(n));
    // Causality: a token event reaches the client after the server wrote it.
    assert!(v["arrival_error"]["median_us"].as_f64().unwrap() >= 0.0);
}

#[test]
fn impossible_bound_exits_1() {
    let o = run(&["--max-ttft-error", "1ns"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL"));
}

#[test]
fn bad_flags_exit_2() {
    // Which values are refused: trace-cli's in-process parse tests. Here, the exit status.
    for bad in [&["--concurrency", "0"][..], &["--bogus"]] {
        let o = selfcheck(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
}

#[test]
fn sweep_reports_the_largest_level_within() {
    let o = run(&[
        "--sweep",
        "--max-itl-error",
        "1h",
        "--max-ttft-error",
        "1h",
        "--format",
        "json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["best_concurrency"].as_u64(), Some(20));
    assert!(v["best_event_rate_per_s"].as_f64().unwrap() > 0.0);
    let levels = v["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 1);
    assert_eq!(levels[0]["within"], Value::Bool(true));
}

/// The simulator as its own process on several workers (one port, SO_REUSEPORT), the client as
/// another, and selfcheck joining the two files afterwards: every request matched with its
/// truth line, the counts exact.
#[test]
fn a_run_against_a_multi_worker_simulator_joins_with_its_truth() {
    let d = tempfile::tempdir().unwrap();
    let truth = d.path().join("truth.jsonl");
    let sim = spawn(
        &[
            "sim",
            "--port",
            "0",
            "--workers",
            "2",
            "--ttft",
            "5ms",
            "--itl",
            "2ms",
            "--truth",
            truth.to_str().unwrap(),
        ],
        "serving model",
    );
    let url = format!("http://{}", sim.addr);
    run_ok_in(
        &[
            "replay",
            "--url",
            &url,
            "--rate",
            "200",
            "-n",
            "60",
            "--input-len",
            "8",
            "--output-len",
            "5",
            "-o",
            "run.parquet",
        ],
        d.path(),
    );
    // The truth writer flushes each batch it drains; give it a moment after the last stream.
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(sim);
    let o = run_ok_in(
        &[
            "selfcheck",
            "--run",
            "run.parquet",
            "--truth",
            truth.to_str().unwrap(),
            "--tokens",
            "5",
            "--format",
            "json",
        ],
        d.path(),
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &v;
    assert_eq!(r["requests"], 60, "{r}");
    assert_eq!(r["ok"], 60, "{r}");
    assert_eq!(r["unmatched"], 0, "{r}");
    assert_eq!(r["event_count_mismatches"], 0, "{r}");
    assert_eq!(r["token_events"], 300, "{r}");
    assert!(r["peak_concurrency"].as_i64().unwrap() >= 1, "{r}");
    // The replay chose the rate; selfcheck's own defaults describe nothing here.
    assert!(r["rate_requested"].is_null(), "{r}");
    assert!(r["concurrency_target"].is_null(), "{r}");
    // An engine model is one scheduler: it cannot be split over workers.
    let bad = run_in(
        &[
            "sim",
            "--port",
            "0",
            "--workers",
            "2",
            "--profile",
            "vllm-0.4.1-3090-llama3-8b",
        ],
        d.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("fixed time model"),
        "{}",
        stderr(&bad)
    );
}
