//! The real `trace` binary against a real serving engine: llama.cpp's `llama-server` (CPU,
//! built by `scripts/engine/llamacpp.sh` from the pinned source, a tiny random-weight model with
//! Qwen2's real vocabulary). What the simulator cannot show: prompt lengths in a real BPE
//! tokenizer's tokens, llama.cpp's per-event token counts (`timings_per_token`), its queue
//! gauges, requests deferred beyond its slots, and the recording proxy in front of it.
//!
//! `.ci/run` builds the engine and sets `TRACE_LLAMA_SERVER` and `TRACE_LLAMA_MODEL`; with
//! `TRACE_REQUIRE_ENGINES=1` (CI) a missing engine fails, elsewhere these tests are skipped with
//! a note. No latency is asserted: only counts a server reports.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trace_format::{TraceRecord, read_all};

use crate::util::*;

/// Slots of the test server; replays go above it to make llama.cpp defer requests.
const SLOTS: usize = 2;

/// The engine's binary and model, or None (and a note) when they are not configured.
fn engine() -> Option<(PathBuf, PathBuf)> {
    let bin = std::env::var_os("TRACE_LLAMA_SERVER").map(PathBuf::from);
    let model = std::env::var_os("TRACE_LLAMA_MODEL").map(PathBuf::from);
    match (bin, model) {
        (Some(b), Some(m)) if b.exists() && m.exists() => Some((b, m)),
        _ => {
            assert!(
                std::env::var_os("TRACE_REQUIRE_ENGINES").is_none(),
                "TRACE_REQUIRE_ENGINES is set but TRACE_LLAMA_SERVER / TRACE_LLAMA_MODEL are \
                 not: run `eval \"$(scripts/engine/llamacpp.sh)\"` first"
            );
            eprintln!("skipped: no llama-server (eval \"$(scripts/engine/llamacpp.sh)\" to run)");
            None
        }
    }
}

/// A running llama-server, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts llama-server with `SLOTS` slots and waits for its `/health`.
fn start(bin: &Path, model: &Path) -> Server {
    let port = free_port();
    let mut child = Command::new(bin)
        .args([
            "-m",
            model.to_str().unwrap(),
            "--parallel",
            &SLOTS.to_string(),
        ])
        .args(["-c", "8192", "--metrics", "--host", "127.0.0.1", "-t", "1"])
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("llama-server starts");
    // Keep the log flowing (a full pipe would block the server) and keep its tail for errors.
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(err).lines() {});
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("{url}/health")])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "llama-server exited while starting"
        );
        assert!(
            Instant::now() < deadline,
            "llama-server not healthy in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Server { child, url }
}

/// `trace replay` against `url` into `out`, asserting success; returns the rows.
fn replay(url: &str, out: &Path, extra: &[&str]) -> (trace_format::TraceMeta, Vec<TraceRecord>) {
    let d = out.parent().unwrap();
    let mut args = vec![
        "replay",
        "--url",
        url,
        "--ignore-eos",
        "--metrics-interval",
        "200ms",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_ok_in(&args, d);
    read_all(out).unwrap()
}

fn assert_exact_counts(recs: &[TraceRecord], input: i32, output: i32) {
    assert!(!recs.is_empty());
    for r in recs {
        assert_eq!(r.error_kind, None, "{r:?}");
        assert_eq!(r.token_source.as_deref(), Some("usage"), "{r:?}");
        assert_eq!(r.prompt_tokens, Some(input), "the server's count: {r:?}");
        assert_eq!(r.expected_prompt_tokens, Some(input));
        assert_eq!(r.output_tokens, Some(output));
        let events: i32 = r.chunk_tokens.iter().sum();
        assert_eq!(events, output, "per-event counts reconcile: {r:?}");
        assert_eq!(r.event_tokens_gap, None);
    }
}

#[test]
fn exact_prompt_and_output_counts_on_both_routes() {
    let Some((bin, model)) = engine() else { return };
    let s = start(&bin, &model);
    let d = tempfile::tempdir().unwrap();
    for endpoint in ["completions", "chat"] {
        let out = d.path().join(format!("{endpoint}.parquet"));
        let (meta, recs) = replay(
            &s.url,
            &out,
            &[
                "--endpoint",
                endpoint,
                "--input-len",
                "96",
                "--output-len",
                "24",
                "-n",
                "6",
                "--rate",
                "inf",
            ],
        );
        assert_exact_counts(&recs, 96, 24);
        let client = meta.client().unwrap();
        assert_eq!(client.prompt_lengths.as_deref(), Some("tokenize-endpoint"));
        assert_eq!(client.event_tokens.as_deref(), Some("timings"));
        if endpoint == "chat" {
            // Qwen2's template adds its turn markers (and a default system prompt).
            assert!(client.chat_template_tokens.unwrap() > 0, "{client:?}");
        }
    }
}

#[test]
fn requests_beyond_the_slots_are_deferred_and_the_gauges_recorded() {
    let Some((bin, model)) = engine() else { return };
    let s = start(&bin, &model);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("deferred.parquet");
    let (meta, recs) = replay(
        &s.url,
        &out,
        &[
            "--endpoint",
            "completions",
            "--input-len",
            "32",
            "--output-len",
            "400",
            "-n",
            "12",
            "--rate",
            "inf",
            "--max-concurrency",
            "8",
        ],
    );
    assert_exact_counts(&recs, 32, 400);
    assert_eq!(
        meta.get(trace_format::meta::SERVER_ENGINE),
        Some("llamacpp")
    );
    let samples = meta.server_samples();
    assert!(!samples.is_empty());
    let deferred = samples.iter().filter_map(|s| s.waiting).fold(0.0, f64::max);
    let running = samples.iter().filter_map(|s| s.running).fold(0.0, f64::max);
    assert!(
        deferred > 0.0,
        "8 in flight over {SLOTS} slots: {samples:?}"
    );
    assert!(running <= SLOTS as f64, "{samples:?}");
    // `trace report` shows the wait for a slot as queue wait.
    let o = run(&["report", out.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let qw = &v["stages"][0]["metrics"]["queue_wait"];
    assert_eq!(qw["count"], 12, "{qw}");
}

#[test]
fn the_recording_proxy_in_front_of_llama_server() {
    let Some((bin, model)) = engine() else { return };
    let s = start(&bin, &model);
    let d = tempfile::tempdir().unwrap();
    let cap = d.path().join("captured.parquet");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut rec = trace()
        .args(["record", "--upstream", &s.url, "--listen", &listen])
        // Six requests and the one that measures the chat template's tokens.
        .args(["--max-requests", "7", "-o", cap.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(rec.stderr.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.contains("recording on"), "{ready}");
    let out = d.path().join("through-proxy.parquet");
    let (_, direct) = replay(
        &format!("http://{listen}"),
        &out,
        &[
            "--endpoint",
            "chat",
            "--input-len",
            "48",
            "--output-len",
            "12",
            "-n",
            "6",
            "--rate",
            "inf",
            "--model",
            "m",
            "--no-metrics",
        ],
    );
    assert_exact_counts(&direct, 48, 12);
    let status = rec.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let (_, captured) = read_all(&cap).unwrap();
    let captured: Vec<_> = captured
        .into_iter()
        .filter(|r| r.request_id != "trace-prompt-probe")
        .collect();
    assert_eq!(captured.len(), 6);
    for r in &captured {
        assert_eq!(r.error_kind, None, "{r:?}");
        assert_eq!(r.prompt_tokens, Some(48), "{r:?}");
        assert_eq!(r.output_tokens, Some(12));
        assert_eq!(r.chunk_tokens.iter().sum::<i32>(), 12, "{r:?}");
    }
}
