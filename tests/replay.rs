//! End-to-end tests of `trace replay` through the real binary, against the embedded simulator
//! (issue 7): the file it writes, rate sweeps, Ctrl-C, bad flags and bad workload files.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trace_format::{TraceReader, meta};

use crate::util::*;

/// Short prompts and outputs so each request takes well under a second on the simulator.
const SMALL: [&str; 4] = ["--input-len", "16", "--output-len", "6"];

#[test]
fn replay_writes_a_readable_trace_with_every_request_and_chunk() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.parquet");
    let o = out.to_str().unwrap();
    let res = run_ok_in(
        &[
            "replay", "--rate", "50", "-n", "40", "-o", o, "--label", "e2e",
        ]
        .iter()
        .copied()
        .chain(SMALL)
        .collect::<Vec<_>>(),
        d.path(),
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("rate=50"), "summary table: {stdout}");
    let r = TraceReader::open(&out).unwrap();
    assert_eq!(r.num_rows(), 40);
    assert_eq!(r.meta().get(meta::LABEL), Some("e2e"));
    assert_eq!(r.meta().get(meta::SEED), Some("0"));
    assert_eq!(r.meta().get(meta::HTTP_CLIENT), Some("lean"));
    assert!(r.meta().get(meta::SCHEDULE).unwrap().contains("poisson"));
    assert!(r.meta().get(meta::WORKLOAD).unwrap().contains("random"));
    let stages = r.meta().stages();
    assert_eq!(stages.len(), 1);
    assert_eq!(stages[0].stage, "rate=50");
    let recs: Vec<_> = r.records().collect::<Result<_, _>>().unwrap();
    let mut ids: Vec<&str> = recs.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 40, "request ids are unique");
    for rec in &recs {
        assert_eq!(rec.error_kind, None, "{rec:?}");
        assert_eq!(rec.stage, "rate=50");
        assert_eq!(rec.target_rate, Some(50.0));
        assert_eq!(rec.max_tokens, Some(6));
        let sent = rec.sent_ns.unwrap();
        assert!(sent >= rec.scheduled_ns);
        assert_eq!(rec.chunk_ns.len(), rec.chunk_tokens.len());
        assert!(
            rec.chunk_ns.len() >= 6,
            "at least one event per token: {rec:?}"
        );
        assert_eq!(
            rec.chunk_tokens.iter().sum::<i32>(),
            rec.output_tokens.unwrap()
        );
        assert!(rec.chunk_ns.windows(2).all(|w| w[0] <= w[1]));
        assert!(rec.chunk_ns[0] >= sent && rec.end_ns.unwrap() >= *rec.chunk_ns.last().unwrap());
    }
}

#[test]
fn hyper_and_the_lean_client_record_the_same_streams() {
    let d = tempfile::tempdir().unwrap();
    let rows = |name: &str, extra: &[&str]| {
        let out = d.path().join(name);
        let mut args = vec![
            "replay", "--rate", "40", "-n", "30", "--seed", "5", "--force",
        ];
        args.extend(SMALL);
        args.extend(extra);
        args.extend(["-o", out.to_str().unwrap()]);
        run_ok_in(&args, d.path());
        let r = TraceReader::open(&out).unwrap();
        let client = r.meta().get(meta::HTTP_CLIENT).map(str::to_string);
        let mut recs: Vec<_> = r.records().collect::<Result<_, _>>().unwrap();
        recs.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        (client, recs)
    };
    let (lean_client, lean) = rows("lean.parquet", &[]);
    let (hyper_client, hyper) = rows("hyper.parquet", &["--hyper"]);
    assert_eq!(lean_client.as_deref(), Some("lean"));
    assert_eq!(hyper_client.as_deref(), Some("hyper"));
    assert_eq!(lean.len(), 30);
    assert_eq!(lean.len(), hyper.len());
    for (a, b) in lean.iter().zip(&hyper) {
        assert_eq!(a.request_id, b.request_id);
        assert!(
            a.error_kind.is_none() && b.error_kind.is_none(),
            "{a:?} {b:?}"
        );
        assert_eq!(a.output_tokens, b.output_tokens);
        assert_eq!(a.prompt_tokens, b.prompt_tokens);
        assert_eq!(a.chunk_tokens, b.chunk_tokens, "{}", a.request_id);
        assert_eq!(a.finish_reason, b.finish_reason);
        assert_eq!(a.status, b.status);
    }
}

#[test]
fn rate_sweep_writes_one_stage_per_rate_and_replays_as_a_workload() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sweep.parquet");
    let o = out.to_str().unwrap();
    let args: Vec<&str> = ["replay", "--rate", "20,40", "-n", "10", "-o", o]
        .iter()
        .copied()
        .chain(SMALL)
        .collect();
    run_ok_in(&args, d.path());
    let r = TraceReader::open(&out).unwrap();
    assert_eq!(r.num_rows(), 20);
    let stages = r.meta().stages();
    let labels: Vec<&str> = stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(labels, ["rate=20", "rate=40"]);
    assert!(stages[1].start_ns >= stages[0].end_ns.unwrap());
    assert_eq!(stages.iter().map(|s| s.requests).sum::<u64>(), 20);

    // The run file is itself a workload: its ids come back, at a retargeted rate.
    let again = d.path().join("again.parquet");
    let args = ["replay", o, "--rate", "100", "-o", again.to_str().unwrap()];
    run_ok_in(&args, d.path());
    let (_, a) = trace_format::read_all(&out).unwrap();
    let (_, b) = trace_format::read_all(&again).unwrap();
    let mut ia: Vec<String> = a.into_iter().map(|r| r.request_id).collect();
    let mut ib: Vec<String> = b.into_iter().map(|r| r.request_id).collect();
    ia.sort();
    ib.sort();
    assert_eq!(ia, ib);

    // Without --rate the recorded timing is replayed (here ten times faster).
    let rec = d.path().join("recorded.parquet");
    let args = [
        "replay",
        o,
        "--time-scale",
        "0.1",
        "-o",
        rec.to_str().unwrap(),
    ];
    run_ok_in(&args, d.path());
    let (m, c) = trace_format::read_all(&rec).unwrap();
    assert_eq!(c.len(), 20);
    assert!(
        c.iter()
            .all(|r| r.stage == "recorded" && r.target_rate.is_none())
    );
    assert_eq!(m.stages()[0].target_rate, None);
}

#[test]
fn without_output_a_new_file_appears_under_runs() {
    let d = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["replay", "--rate", "inf", "-n", "3", "--warmup", "2"]
        .iter()
        .copied()
        .chain(SMALL)
        .collect();
    let res = run_ok_in(&args, d.path());
    let files: Vec<_> = std::fs::read_dir(d.path().join("runs")).unwrap().collect();
    assert_eq!(files.len(), 1);
    let name = files[0]
        .as_ref()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    assert!(
        name.starts_with("sim-") && name.ends_with(".parquet"),
        "{name}"
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains(&name));
    // Warmup requests are rows of their own stage, with their own ids.
    let (m, recs) = trace_format::read_all(files[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(recs.len(), 5);
    let warm: Vec<&str> = recs
        .iter()
        .filter(|r| r.stage == "warmup")
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(warm.len(), 2);
    assert!(warm.iter().all(|id| id.starts_with("warmup-")));
    let labels: Vec<String> = m.stages().into_iter().map(|s| s.stage).collect();
    assert_eq!(labels, ["warmup", "rate=inf"]);
    assert!(
        !String::from_utf8_lossy(&res.stdout).contains("warmup"),
        "summary leaves warmup out"
    );
}

#[test]
fn ctrl_c_and_sigterm_stop_sending_and_leave_a_valid_file() {
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("int.parquet");
        let child = trace()
            .args(["replay", "--rate", "20", "-n", "1000", "-o"])
            .arg(&out)
            .args(SMALL)
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let st = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let t0 = Instant::now();
        let out_res = child.wait_with_output().unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "drained in bounded time"
        );
        assert_eq!(
            out_res.status.code(),
            Some(code),
            "{signal}: {}",
            String::from_utf8_lossy(&out_res.stderr)
        );
        let r = TraceReader::open(&out).unwrap();
        let n = r.num_rows();
        assert!(n > 0 && n < 1000, "{signal}: {n} rows");
        assert_eq!(r.meta().stages()[0].requests, n);
    }
}

fn fails_with(args: &[&str], needle: &str) {
    let d = tempfile::tempdir().unwrap();
    let out = trace().args(args).current_dir(d.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "trace {args:?}: {err}");
    assert!(
        err.contains(needle),
        "trace {args:?}: expected '{needle}' in: {err}"
    );
    assert!(out.stdout.is_empty());
}

/// Which values are refused is tested in-process (trace-cli's `Cli::try_parse_from` tests);
/// here, that the binary exits 2 with the message on stderr and nothing on stdout, for a flag
/// clap refuses and for a setting checked after parsing.
#[test]
fn bad_flags_exit_2_naming_the_value() {
    fails_with(&["replay", "--rate", "0"], "'0'");
    fails_with(&["replay", "nonsense", "--rate", "5"], "'nonsense'");
}

#[test]
fn bad_workload_files_exit_2_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.json");
    std::fs::write(&bad, "[{\"conversations\": 3}]").unwrap();
    let arg = format!("sharegpt={}", bad.display());
    fails_with(&["replay", &arg, "--rate", "5"], "bad.json");
    fails_with(&["replay", &arg, "--rate", "5"], "entry 0");
    let missing = d.path().join("missing.parquet");
    fails_with(&["replay", missing.to_str().unwrap()], "missing.parquet");
}

/// A server that fails every request: the run still writes every row, says so on stderr, calls
/// the stage failing (never stable), and `--max-failure-rate` turns it into exit 1.
#[test]
fn a_run_where_every_request_failed_says_so_and_can_fail_the_job() {
    let mut cfg = trace_sim::SimConfig::from_profile("fixed").unwrap();
    cfg.model = "m".into();
    cfg.faults = "http500=1.0".parse().unwrap();
    let sim = trace_sim::spawn(cfg, ([127, 0, 0, 1], 0).into()).unwrap();
    let url = sim.url();
    let d = tempfile::tempdir().unwrap();
    let base = [
        "replay", "--url", &url, "--rate", "50", "-n", "20", "--model", "m",
    ];
    let o = run_in(&[&base[..], &["-o", "a.parquet"]].concat(), d.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("ERROR: 20 of 20 requests failed; the first: http_5xx"),
        "{err}"
    );
    assert!(
        err.contains("stage rate=50: failing: 20 of 20 requests failed"),
        "{err}"
    );
    assert_eq!(
        TraceReader::open(d.path().join("a.parquet"))
            .unwrap()
            .num_rows(),
        20
    );
    let o = run_in(
        &[&base[..], &["-o", "b.parquet", "--max-failure-rate", "0.5"]].concat(),
        d.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("above --max-failure-rate 50.0%"),
        "{}",
        stderr(&o)
    );
    sim.shutdown().unwrap();
}

/// Credentials in `--url` reach neither stderr nor the file, on success or failure paths.
#[test]
fn credentials_in_the_url_are_never_printed_or_stored() {
    const PASS: &str = "sk-REPLAY-URL-7373";
    let d = tempfile::tempdir().unwrap();
    let url = format!("http://u:{PASS}@127.0.0.1:1");
    let o = run_in(
        &["replay", "--url", &url, "--rate", "1", "-n", "1"],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains(PASS), "{}", stderr(&o));
    let o = run_in(
        &[
            "replay",
            "--url",
            &url,
            "--model",
            "m",
            "--rate",
            "1",
            "-n",
            "1",
            "-o",
            "x.parquet",
        ],
        d.path(),
    );
    assert!(!stderr(&o).contains(PASS), "{}", stderr(&o));
    let raw = std::fs::read(d.path().join("x.parquet")).unwrap();
    assert!(!raw.windows(PASS.len()).any(|w| w == PASS.as_bytes()));
}

/// The writer dies mid-run (its `.partial` directory is removed, as a full disk or a cleanup
/// job would): replay stops sending at once, drains, and exits 2 with the writer's error, not
/// one line per dropped record.
#[test]
fn when_the_writer_dies_the_run_stops_with_one_error() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("w.parquet");
    let partial = trace_format::partial_dir(&out);
    let child = trace()
        .args(["replay", "--rate", "50", "-n", "2000", "-o"])
        .arg(&out)
        .args(SMALL)
        .current_dir(d.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !partial.join("part-00001.parquet").exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no part written");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_dir_all(&partial).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    // 2000 requests at 50 req/s take 40 s; the run stops within a few flush intervals.
    assert!(t0.elapsed() < Duration::from_secs(25), "{:?}", t0.elapsed());
    assert!(err.lines().count() < 10, "{err}");
    assert!(err.contains("w.parquet.partial"), "{err}");
}

/// Under a hard open-file limit of 1024, 1500 requests all due at once: replay keeps its
/// in-flight requests under the limit (with a warning) so the writer can always open its files,
/// and every request is a row.
#[test]
fn a_low_open_file_limit_caps_in_flight_requests_and_loses_no_row() {
    let mut cfg = trace_sim::SimConfig::from_profile("fixed").unwrap();
    cfg.model = "m".into();
    let sim = trace_sim::spawn(cfg, ([127, 0, 0, 1], 0).into()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_trace");
    // 1024 files less 128 kept for the rest: all for the lean client, whose connections are
    // back in its pool before a slot frees; half for hyper's, which takes them back later.
    for (flag, cap) in [("", 896), ("--hyper", 448)] {
        let script = format!(
            "ulimit -n 1024 && exec '{bin}' replay --url {} --model m --rate inf -n 1500 \
             --max-concurrency 1500 --input-len 8 --output-len 2 --no-metrics {flag} \
             -o fd.parquet --force",
            sim.url()
        );
        let o = Command::new("sh")
            .args(["-c", &script])
            .current_dir(d.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(
            err.contains(&format!(
                "open-file limit (1024) allowed at most {cap} requests in flight"
            )),
            "{err}"
        );
        // ...and says what gets past it.
        assert!(
            err.contains("(--processes N, each with files of its own)"),
            "{err}"
        );
        let r = TraceReader::open(d.path().join("fd.parquet")).unwrap();
        assert_eq!(r.num_rows(), 1500);
        let recs: Vec<_> = r.records().collect::<Result<_, _>>().unwrap();
        assert!(
            recs.iter().all(|r| r.error_kind.is_none()),
            "{flag}: {:?}",
            recs.iter().find(|r| r.error_kind.is_some())
        );
    }
    sim.shutdown().unwrap();
}

/// The simulator answers as vLLM does: 404 for a model it does not serve, 400 for a request past
/// its context; both are rows with their status, never an aborted run.
#[test]
fn the_simulator_refuses_unknown_models_and_overlong_requests_as_engines_do() {
    let sim = trace_sim::spawn(
        trace_sim::SimConfig::from_profile("fixed").unwrap(),
        ([127, 0, 0, 1], 0).into(),
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let url = sim.url();
    let statuses = |extra: &[&str], out: &str| {
        let mut args = vec![
            "replay", "--url", &url, "--rate", "50", "-n", "3", "-o", out,
        ];
        args.extend_from_slice(extra);
        let o = run_in(&args, d.path());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let (_, recs) = trace_format::read_all(d.path().join(out)).unwrap();
        recs.iter().map(|r| r.status).collect::<Vec<_>>()
    };
    assert_eq!(
        statuses(
            &[
                "--model",
                "no-such-model",
                "--input-len",
                "8",
                "--output-len",
                "2"
            ],
            "a.parquet"
        ),
        vec![Some(404); 3]
    );
    assert_eq!(
        statuses(&["--input-len", "8000", "--output-len", "500"], "b.parquet"),
        vec![Some(400); 3]
    );
    sim.shutdown().unwrap();
}

#[test]
fn a_concurrency_sweep_runs_one_closed_loop_stage_per_cap() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("conc.parquet");
    let o = out.to_str().unwrap();
    let args: Vec<&str> = ["replay", "--max-concurrency", "1,4", "-n", "12", "-o", o]
        .into_iter()
        .chain(SMALL)
        .collect();
    let res = run_ok_in(&args, d.path());
    let table = String::from_utf8_lossy(&res.stdout);
    assert!(
        table.contains("conc=1") && table.contains("conc=4"),
        "{table}"
    );
    let r = TraceReader::open(&out).unwrap();
    let sched = r.meta().schedule().unwrap();
    assert_eq!(sched.concurrencies, [1, 4]);
    let recs: Vec<_> = r.records().collect::<Result<_, _>>().unwrap();
    // At most C in flight at any send: count the requests of the stage still running then.
    let most_in_flight = |stage: &str| {
        let rows: Vec<_> = recs.iter().filter(|x| x.stage == stage).collect();
        assert_eq!(rows.len(), 12);
        rows.iter()
            .map(|a| {
                let t = a.sent_ns.unwrap();
                rows.iter()
                    .filter(|b| b.sent_ns.unwrap() <= t && b.end_ns.unwrap() > t)
                    .count()
            })
            .max()
            .unwrap()
    };
    assert_eq!(most_in_flight("conc=1"), 1);
    let four = most_in_flight("conc=4");
    assert!(four > 1 && four <= 4, "{four}");
    // Closed loop: no open-loop verdict, and the wait for a slot is not called lag.
    let rep = String::from_utf8(run_ok_in(&["report", o], d.path()).stdout).unwrap();
    assert!(rep.contains("closed-loop stages (conc=1, conc=4)"), "{rep}");
    assert!(!rep.contains("send lag P99"), "{rep}");

    let bad = run_in(
        &[
            "replay",
            "--max-concurrency",
            "1,4",
            "--rate",
            "2",
            "-o",
            o,
            "--force",
        ],
        d.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--rate inf"), "{}", stderr(&bad));
}

#[test]
fn prompt_datasets_send_their_records_at_each_concurrency() {
    let d = tempfile::tempdir().unwrap();
    // open_qa.jsonl's layout and LongAlpaca's, as published.
    let qa = d.path().join("open_qa.jsonl");
    let lines: String = (0..6)
        .map(|i| format!("{{\"question\": \"what is item {i} of the list\", \"answer\": \"a\"}}\n"))
        .collect();
    std::fs::write(&qa, lines).unwrap();
    let la = d.path().join("LongAlpaca-12k.json");
    std::fs::write(
        &la,
        r#"[{"instruction": "Summarise the paper.", "input": "word word word word word word word word", "output": "x"},
            {"instruction": "Say hi.", "input": "", "output": "hi"}]"#,
    )
    .unwrap();
    let out = d.path().join("qa.parquet");
    let o = out.to_str().unwrap();
    let workload = format!("jsonl={}", qa.display());
    let args: Vec<&str> = [
        "replay",
        &workload,
        "--max-concurrency",
        "1,4",
        "-n",
        "6",
        "--output-len",
        "4",
        "--store",
        "prompts",
        "-o",
        o,
    ]
    .into_iter()
    .collect();
    run_ok_in(&args, d.path());
    let recs: Vec<_> = TraceReader::open(&out)
        .unwrap()
        .records()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(recs.len(), 12);
    let first = recs
        .iter()
        .find(|r| r.request_id == "jsonl-0" && r.stage == "conc=1")
        .unwrap();
    assert_eq!(first.prompt.as_deref(), Some("what is item 0 of the list"));
    assert_eq!(first.prompt_tokens, Some(7), "the simulator counts words");
    // Both stages send the same records: they pair in a diff.
    let ids = |stage: &str| {
        let mut v: Vec<&str> = recs
            .iter()
            .filter(|r| r.stage == stage)
            .map(|r| r.request_id.split('#').next().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids("conc=1"), ids("conc=4"));

    // A length bound leaves the long LongAlpaca record out.
    let out2 = d.path().join("la.parquet");
    let workload = format!("json={}", la.display());
    let args = [
        "replay",
        &workload,
        "--rate",
        "inf",
        "-n",
        "2",
        "--max-prompt-length",
        "5",
        "--store",
        "prompts",
        "-o",
        out2.to_str().unwrap(),
    ];
    run_ok_in(&args, d.path());
    let recs: Vec<_> = TraceReader::open(&out2)
        .unwrap()
        .records()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        recs.iter().all(|r| r.prompt.as_deref() == Some("Say hi.")),
        "{recs:?}"
    );

    // A record without the field: exit 2 naming the file, the line and the field.
    std::fs::write(&qa, "{\"question\": \"q\"}\n{\"q\": \"x\"}\n").unwrap();
    let workload = format!("jsonl={}", qa.display());
    let bad = run_in(
        &[
            "replay",
            &workload,
            "--rate",
            "1",
            "--prompt-field",
            "question",
            "-o",
            o,
            "--force",
        ],
        d.path(),
    );
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let e = stderr(&bad);
    assert!(
        e.contains("open_qa.jsonl") && e.contains("line 2") && e.contains("'question'"),
        "{e}"
    );
    let bad = run_in(
        &["replay", "random", "--rate", "1", "--prompt-field", "x"],
        d.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
}

/// A DCGM exporter stand-in on 127.0.0.1: each scrape reports more memory used on GPU 0 (1000
/// MiB, then +100 per scrape), 50% then 90% utilisation alternating, and a second GPU.
fn fake_dcgm() -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", l.local_addr().unwrap());
    l.set_nonblocking(true).unwrap();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    std::thread::spawn(move || {
        let mut k = 0u32;
        let until = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let body = format!(
                "DCGM_FI_DEV_FB_USED{{gpu=\"0\",UUID=\"GPU-a\"}} {}\n\
                 DCGM_FI_DEV_GPU_UTIL{{gpu=\"0\",UUID=\"GPU-a\"}} {}\n\
                 DCGM_FI_DEV_POWER_USAGE{{gpu=\"0\"}} 300\n\
                 DCGM_FI_DEV_FB_USED{{gpu=\"1\",UUID=\"GPU-b\"}} 10\n",
                1000 + 100 * k,
                if k.is_multiple_of(2) { 50 } else { 90 }
            );
            k += 1;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, done)
}

#[test]
fn gpu_telemetry_is_sampled_into_the_run_and_reported_per_stage() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("gpu.parquet");
    let o = out.to_str().unwrap();
    let (url, done) = fake_dcgm();
    let args: Vec<&str> = [
        "replay",
        "--rate",
        "20",
        "-n",
        "30",
        "--gpu-metrics",
        &url,
        "--metrics-interval",
        "100ms",
        "-o",
        o,
    ]
    .into_iter()
    .chain(SMALL)
    .collect();
    run_ok_in(&args, d.path());
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let r = TraceReader::open(&out).unwrap();
    let samples = r.meta().gpu_samples();
    assert!(samples.len() >= 5, "{}", samples.len());
    assert_eq!(samples[0].gpus.len(), 2);
    // The report's figures against plain arithmetic on the same samples.
    let st = &r.meta().stages()[0];
    let inside: Vec<_> = samples
        .iter()
        .filter(|s| s.t_ns >= st.start_ns && s.t_ns <= st.end_ns.unwrap())
        .collect();
    let peak = inside
        .iter()
        .map(|s| s.gpus[0].mem_used_mib.unwrap())
        .fold(0.0, f64::max);
    let rep = run_ok_in(&["report", o, "--format", "json"], d.path());
    let v: serde_json::Value = serde_json::from_slice(&rep.stdout).unwrap();
    let g = &v["stages"][0]["gpu"];
    assert_eq!(g["gpus"], 2);
    assert_eq!(g["peak_mem_mib"].as_f64().unwrap(), peak);
    assert_eq!(g["peak_mem_total_mib"].as_f64().unwrap(), peak + 10.0);
    let util = g["mean_util_pct"].as_f64().unwrap();
    assert!((50.0..=90.0).contains(&util), "{util}");
    let text = stdout(&run_ok_in(&["report", o], d.path()));
    assert!(text.contains("GPU peak memory"), "{text}");

    // Without an exporter there: a warning, not an error.
    let out2 = d.path().join("nogpu.parquet");
    let args: Vec<&str> = [
        "replay",
        "--rate",
        "20",
        "-n",
        "3",
        "--gpu-metrics",
        "http://127.0.0.1:1/metrics",
        "-o",
        out2.to_str().unwrap(),
    ]
    .into_iter()
    .chain(SMALL)
    .collect();
    let o = run_ok_in(&args, d.path());
    assert!(stderr(&o).contains("no GPU telemetry"), "{}", stderr(&o));

    // NVML on this host: samples where there is a driver, else a notice; the run goes on.
    let out3 = d.path().join("nvml.parquet");
    let args: Vec<&str> = [
        "replay",
        "--rate",
        "20",
        "-n",
        "3",
        "--gpu-metrics",
        "nvml",
        "-o",
        out3.to_str().unwrap(),
    ]
    .into_iter()
    .chain(SMALL)
    .collect();
    let o = run_ok_in(&args, d.path());
    let r = TraceReader::open(&out3).unwrap();
    if r.meta().gpu_samples().is_empty() {
        assert!(
            stderr(&o).contains("no GPU telemetry: NVML"),
            "{}",
            stderr(&o)
        );
    } else {
        assert_eq!(r.meta().get(meta::GPU_SOURCE), Some("nvml"));
    }
    let bad = run_in(&["replay", "--gpu-metrics", "gpu0"], d.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("invalid --gpu-metrics 'gpu0'"));
}

#[test]
fn shards_of_one_schedule_merge_into_the_single_host_run() {
    let d = tempfile::tempdir().unwrap();
    let args = |out: &str, shard: Option<&str>, seed: &str| {
        let mut v: Vec<String> = [
            "replay", "--rate", "50", "-n", "12", "--seed", seed, "-o", out,
        ]
        .into_iter()
        .chain(SMALL)
        .map(String::from)
        .collect();
        if let Some(s) = shard {
            v.extend(["--shard".into(), s.into()]);
        }
        v
    };
    let go = |v: Vec<String>| {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        run_ok_in(&a, d.path());
    };
    go(args("whole.parquet", None, "3"));
    for k in 0..3 {
        go(args(&format!("s{k}.parquet"), Some(&format!("{k}/3")), "3"));
    }
    // Each shard's offsets from its stage start are the single host's, id for id.
    let offsets = |f: &str| stage_offsets(&d.path().join(f));
    let mut whole = offsets("whole.parquet");
    let mut union: Vec<(String, i64)> = (0..3)
        .flat_map(|k| offsets(&format!("s{k}.parquet")))
        .collect();
    whole.sort();
    union.sort();
    assert_eq!(union, whole);
    let o = run_ok_in(
        &[
            "merge",
            "s0.parquet",
            "s2.parquet",
            "s1.parquet",
            "-o",
            "merged.parquet",
        ],
        d.path(),
    );
    assert!(
        stdout(&o).contains("merged 3 shards (12 rows)"),
        "{}",
        stdout(&o)
    );
    let r = TraceReader::open(d.path().join("merged.parquet")).unwrap();
    assert_eq!(r.num_rows(), 12);
    let shards: serde_json::Value =
        serde_json::from_str(r.meta().get(meta::SHARDS).unwrap()).unwrap();
    assert_eq!(shards.as_array().unwrap().len(), 3);
    assert!(r.meta().get(meta::SHARD).is_none());
    assert_eq!(r.meta().stages()[0].requests, 12);
    // Each shard's own figures, read back against its file's rows: its share, its target and
    // a send lag inside the span of its rows' lags.
    let mut urls = Vec::new();
    for sh in shards.as_array().unwrap() {
        let f = TraceReader::open(d.path().join(format!("s{}.parquet", sh["index"]))).unwrap();
        let lags_us: Vec<f64> = f
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r.sent_ns.unwrap() - r.scheduled_ns) as f64 / 1e3
            })
            .collect();
        assert_eq!(sh["requests"], lags_us.len(), "{sh}");
        assert_eq!(sh["failed"], 0, "{sh}");
        let lo = lags_us.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = lags_us.iter().copied().fold(0.0, f64::max);
        let (p50, p99) = (
            sh["send_lag_p50_us"].as_f64().unwrap(),
            sh["send_lag_p99_us"].as_f64().unwrap(),
        );
        // HDR histograms keep 3 significant digits (and clamp at 1 ns).
        assert!(
            lo * 0.999 - 0.001 <= p50 && p50 <= p99 && p99 <= hi * 1.001 + 0.001,
            "{sh}"
        );
        assert_eq!(sh["url"].as_str(), f.meta().get(meta::URL), "{sh}");
        urls.push(sh["url"].as_str().unwrap().to_string());
    }
    // Each shard ran its own embedded simulator: the merged run names every target.
    urls.sort();
    urls.dedup();
    assert_eq!(r.meta().get(meta::URL), Some(urls.join(", ").as_str()));
    // inspect shows them a line each.
    let shown = stdout(&run_ok_in(&["inspect", "merged.parquet"], d.path()));
    assert!(shown.contains("shards          3"), "{shown}");
    assert_eq!(
        shown.matches(" 4 requests 0 failed, send lag P50 ").count(),
        3,
        "{shown}"
    );
    // What each host's kernel said about its clock rides along (adjtimex, on Linux).
    if cfg!(target_os = "linux") {
        for sh in shards.as_array().unwrap() {
            assert!(sh["kernel_clock"]["max_error_us"].is_i64(), "{sh}");
        }
    }
    let rep = stdout(&run_ok_in(&["report", "merged.parquet"], d.path()));
    assert!(rep.contains("without a start barrier"), "{rep}");
    // report reads the shards as one run: given as files, or as their directory.
    let json = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["report"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--format", "json"]);
        serde_json::from_slice(&run_ok_in(&a, d.path()).stdout).unwrap()
    };
    let merged = json(&["merged.parquet"]);
    let files = json(&["s0.parquet", "s1.parquet", "s2.parquet"]);
    assert_eq!(files["stages"][0]["completed"], 12);
    assert_eq!(files["stages"], merged["stages"]);
    std::fs::create_dir(d.path().join("shards")).unwrap();
    for k in 0..3 {
        std::fs::copy(
            d.path().join(format!("s{k}.parquet")),
            d.path().join(format!("shards/s{k}.parquet")),
        )
        .unwrap();
    }
    assert_eq!(json(&["shards"])["stages"], merged["stages"]);
    // ...and diff compares such a directory with a single-host run.
    let o = run_ok_in(&["diff", "whole.parquet", "shards"], d.path());
    assert!(stdout(&o).contains("shards"), "{}", stdout(&o));
    let bad = run_in(&["report", "s0.parquet", "whole.parquet"], d.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("whole.parquet: several files make one run only as the shards"),
        "{}",
        stderr(&bad)
    );

    // Refusals, naming the files.
    let bad = run_in(
        &["merge", "s0.parquet", "s1.parquet", "-o", "m2.parquet"],
        d.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("2/3 missing"), "{}", stderr(&bad));
    go(args("other.parquet", Some("2/3"), "4"));
    let bad = run_in(
        &[
            "merge",
            "s0.parquet",
            "s1.parquet",
            "other.parquet",
            "-o",
            "m3.parquet",
        ],
        d.path(),
    );
    assert!(
        stderr(&bad).contains("different schedules"),
        "{}",
        stderr(&bad)
    );
    let bad = run_in(&["merge", "whole.parquet", "-o", "m4.parquet"], d.path());
    assert!(stderr(&bad).contains("not a shard"), "{}", stderr(&bad));
}

#[test]
fn report_names_the_shard_that_fell_behind_its_schedule() {
    let d = tempfile::tempdir().unwrap();
    // Shard 1 may hold one request at a time: its later arrivals wait for the slot, late.
    for (k, extra) in [("0", &[][..]), ("1", &["--max-concurrency", "1"][..])] {
        let out = format!("s{k}.parquet");
        let shard = format!("{k}/2");
        let mut a = vec![
            "replay", "--rate", "100", "-n", "40", "--seed", "7", "--shard", &shard, "-o", &out,
        ];
        a.extend(SMALL);
        a.extend(extra);
        run_ok_in(&a, d.path());
    }
    run_ok_in(
        &["merge", "s0.parquet", "s1.parquet", "-o", "m.parquet"],
        d.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(
        &run_ok_in(&["report", "m.parquet", "--format", "json"], d.path()).stdout,
    )
    .unwrap();
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let named = warnings
        .iter()
        .find(|w| w.starts_with("shard 1 (") && w.contains("fell behind"))
        .unwrap_or_else(|| panic!("{warnings:?}"));
    // The figure it gives is the merged file's own for that shard.
    let r = TraceReader::open(d.path().join("m.parquet")).unwrap();
    let shards: serde_json::Value =
        serde_json::from_str(r.meta().get(meta::SHARDS).unwrap()).unwrap();
    let p99 = shards[1]["send_lag_p99_us"].as_f64().unwrap() / 1e3;
    assert!(
        named.contains(&format!("send lag P99 {p99:.3} ms")),
        "{named}"
    );
}

#[test]
fn a_killed_shards_partial_run_merges_with_the_others() {
    let d = tempfile::tempdir().unwrap();
    let args = |out: &str, shard: &str| -> Vec<String> {
        [
            "replay", "--rate", "10", "-n", "200", "--seed", "5", "--shard", shard, "-o", out,
        ]
        .into_iter()
        .chain(SMALL)
        .map(String::from)
        .collect()
    };
    let a = args("s0.parquet", "0/2");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    // Shard 0 runs its 100 requests (10 s at 10/s for the two shards together).
    let whole = std::thread::scope(|sc| {
        let h = sc.spawn(|| run_ok_in(&a[..], d.path()));
        // Shard 1 is killed once it has flushed a part.
        let b = args("s1.parquet", "1/2");
        let mut child = trace()
            .args(&b)
            .current_dir(d.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let partial = d.path().join("s1.parquet.partial");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            let flushed = std::fs::read_dir(&partial).is_ok_and(|rd| {
                rd.filter_map(Result::ok).any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("part-") && n.ends_with(".parquet")
                })
            });
            if flushed {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        h.join().unwrap()
    });
    drop(whole);
    assert!(!d.path().join("s1.parquet").exists());
    let killed = TraceReader::open(d.path().join("s1.parquet.partial")).unwrap();
    let have = killed.num_rows();
    assert!(have > 0 && have < 100, "{have}");
    // A directory holding a finished shard and a killed one's .partial reads as the run.
    let o = run_ok_in(&["report", "."], d.path());
    assert!(stdout(&o).contains("were interrupted"), "{}", stdout(&o));
    let o = run_ok_in(
        &[
            "merge",
            "s0.parquet",
            "s1.parquet.partial",
            "-o",
            "m.parquet",
        ],
        d.path(),
    );
    assert!(
        stdout(&o).contains(&format!("({} rows)", 100 + have)),
        "{}",
        stdout(&o)
    );
    let r = TraceReader::open(d.path().join("m.parquet")).unwrap();
    let shards: serde_json::Value =
        serde_json::from_str(r.meta().get(meta::SHARDS).unwrap()).unwrap();
    assert_eq!(shards[1]["interrupted"], true);
    assert_eq!(shards[0]["interrupted"], false);
    let rep = stdout(&run_ok_in(&["report", "m.parquet"], d.path()));
    assert!(rep.contains("shard(s) 1 ("), "{rep}");
}

#[test]
fn shards_meet_at_a_coordinators_barrier_and_start_together() {
    let d = tempfile::tempdir().unwrap();
    let mut coord = spawn(
        &[
            "coordinate",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--lead",
            "300ms",
            "--timeout",
            "60s",
        ],
        "waiting for",
    );
    let url = format!("http://{}", coord.addr);
    let shard = |k: u32| {
        trace()
            .args([
                "replay",
                "--rate",
                "50",
                "-n",
                "8",
                "--seed",
                "9",
                "--shard",
                &format!("{k}/2"),
            ])
            .args(["--coordinator", &url, "-o", &format!("c{k}.parquet")])
            .args(SMALL)
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (shard(0), shard(1));
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(
        coord.child.wait().unwrap().success(),
        "the coordinator released both"
    );
    let info = |f: &str| -> serde_json::Value {
        let r = TraceReader::open(d.path().join(f)).unwrap();
        serde_json::from_str(r.meta().get(meta::SHARD).unwrap()).unwrap()
    };
    let (i0, i1) = (info("c0.parquet"), info("c1.parquet"));
    // One released start; each host's offset measured, with its error bound (loopback: small).
    assert_eq!(i0["barrier_start_unix_ns"], i1["barrier_start_unix_ns"]);
    for i in [&i0, &i1] {
        let err = i["offset_error_ns"].as_i64().unwrap();
        assert!((0..50_000_000).contains(&err), "{i}");
    }
    // Both started at the barrier's time, on the coordinator's clock (within scheduling noise).
    let s0 = i0["run_start_coord_ns"].as_i64().unwrap();
    let s1 = i1["run_start_coord_ns"].as_i64().unwrap();
    assert!((s0 - s1).abs() < 50_000_000, "{s0} {s1}");
    let o = run_ok_in(
        &["merge", "c0.parquet", "c1.parquet", "-o", "m.parquet"],
        d.path(),
    );
    assert!(
        stdout(&o).contains("merged 2 shards (8 rows)"),
        "{}",
        stdout(&o)
    );
    let r = TraceReader::open(d.path().join("m.parquet")).unwrap();
    let shards: serde_json::Value =
        serde_json::from_str(r.meta().get(meta::SHARDS).unwrap()).unwrap();
    assert!(shards[0]["clock"].as_str().unwrap().contains("coordinator"));
    assert!(shards[0]["offset_error_ns"].is_i64());
    // Loopback bounds are far below the TTFT: no clock warning.
    let rep = stdout(&run_ok_in(&["report", "m.parquet"], d.path()));
    assert!(!rep.contains("shards"), "{rep}");

    // A shard that never comes: the barrier fails for the one that did, naming the missing one.
    let mut coord = spawn(
        &[
            "coordinate",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--timeout",
            "1s",
        ],
        "waiting for",
    );
    let url = format!("http://{}", coord.addr);
    let o = run_in(
        &[
            "replay",
            "--rate",
            "50",
            "-n",
            "4",
            "--shard",
            "0/2",
            "--coordinator",
            &url,
            "-o",
            "lone.parquet",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1/2 never registered"),
        "{}",
        stderr(&o)
    );
    assert_eq!(coord.child.wait().unwrap().code(), Some(1));

    // A coordinator that never comes up: the shard knocks until its barrier timeout, then
    // fails naming it (under Kubernetes shard 0's pod may come up after the others).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let t0 = Instant::now();
    let o = run_in(
        &[
            "replay",
            "--rate",
            "50",
            "-n",
            "4",
            "--shard",
            "1/2",
            "--coordinator",
            &url,
            "--barrier-timeout",
            "2s",
            "-o",
            "late.parquet",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("did not answer within 2s") && stderr(&o).contains(&url),
        "{}",
        stderr(&o)
    );
    assert!(t0.elapsed() >= Duration::from_secs(2));
}

#[test]
fn four_shards_with_shard_zero_coordinating_make_the_single_host_run() {
    let d = tempfile::tempdir().unwrap();
    let truth = d.path().join("truth.jsonl");
    let mut cfg = trace_sim::SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1));
    cfg.model = "m".into();
    cfg.truth = Some(truth.clone());
    let sim = trace_sim::spawn(cfg, ([127, 0, 0, 1], 0).into()).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let common = |k: u32| -> Vec<String> {
        [
            "replay",
            "--url",
            &sim.url(),
            "--model",
            "m",
            "--rate",
            "40",
            "-n",
            "24",
            "--seed",
            "5",
        ]
        .into_iter()
        .chain(SMALL)
        .map(String::from)
        .chain([
            format!("--shard={k}/4"),
            "-o".into(),
            format!("s{k}.parquet"),
        ])
        .collect()
    };
    let mut kids = Vec::new();
    let mut zero = common(0);
    zero.extend([
        "--coordinator".into(),
        "self".into(),
        "--coordinator-listen".into(),
        format!("127.0.0.1:{port}"),
    ]);
    kids.push(
        trace()
            .args(&zero)
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    for k in 1..4 {
        let mut a = common(k);
        a.extend(["--coordinator".into(), format!("http://127.0.0.1:{port}")]);
        kids.push(
            trace()
                .args(&a)
                .current_dir(d.path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for c in kids {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let whole: Vec<String> = common(0)
        .into_iter()
        .filter(|a| !a.starts_with("--shard"))
        .collect();
    let mut whole = whole;
    let n = whole.len();
    whole[n - 1] = "whole.parquet".into();
    let w: Vec<&str> = whole.iter().map(String::as_str).collect();
    run_ok_in(&w, d.path());
    run_ok_in(
        &[
            "merge",
            "s0.parquet",
            "s1.parquet",
            "s2.parquet",
            "s3.parquet",
            "-o",
            "merged.parquet",
        ],
        d.path(),
    );
    drop(sim);
    // Every request once, at the single-host schedule's times (from each stage's start).
    let offsets = |f: &str| stage_offsets(&d.path().join(f));
    let union: Vec<(String, i64)> = {
        let mut v: Vec<_> = (0..4)
            .flat_map(|k| offsets(&format!("s{k}.parquet")))
            .collect();
        v.sort();
        v
    };
    assert_eq!(union, offsets("whole.parquet"));
    // And on the merged run's one timeline: each shard's first stage began at the barrier's
    // common instant, so the merge rebased onto the coordinator's clock is the single host's.
    assert_eq!(offsets("merged.parquet"), offsets("whole.parquet"));
    let merged = TraceReader::open(d.path().join("merged.parquet")).unwrap();
    assert_eq!(merged.num_rows(), 24);
    // The server saw every request of the sharded run.
    let seen = trace_sim::read_truth(&truth).unwrap();
    for (id, _) in &union {
        assert!(seen.contains_key(id.as_str()), "{id}");
    }
}

/// `--processes 3`: one command line becomes three shard processes on this host meeting at an
/// in-process barrier, merged into the one output: every request once, at the single-process
/// schedule's offsets, each seen by the server, and the shard folder gone after the merge.
#[test]
fn processes_split_one_run_over_local_shards_and_merge_it() {
    let d = tempfile::tempdir().unwrap();
    let truth = d.path().join("truth.jsonl");
    let mut cfg = trace_sim::SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1));
    cfg.model = "m".into();
    cfg.truth = Some(truth.clone());
    let sim = trace_sim::spawn(cfg, ([127, 0, 0, 1], 0).into()).unwrap();
    let url = format!("http://{}", sim.addr());
    let args = |extra: &[&str], out: &str| -> Vec<String> {
        let mut v: Vec<String> = [
            "replay", "--url", &url, "--rate", "60", "-n", "18", "--seed", "4", "-o", out,
        ]
        .into_iter()
        .chain(SMALL)
        .map(String::from)
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let go = |v: Vec<String>| {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        run_ok_in(&a, d.path())
    };
    let o = go(args(&["--processes", "3"], "p.parquet"));
    assert!(
        stderr(&o).contains("18 rows from 3 processes"),
        "{}",
        stderr(&o)
    );
    assert!(!d.path().join("p.parquet.shards").exists());
    go(args(&[], "one.parquet"));
    drop(sim);
    let offsets = |f: &str| stage_offsets(&d.path().join(f));
    let split = offsets("p.parquet");
    assert_eq!(split, offsets("one.parquet"));
    let r = TraceReader::open(d.path().join("p.parquet")).unwrap();
    let shards: serde_json::Value =
        serde_json::from_str(r.meta().get(meta::SHARDS).unwrap()).unwrap();
    let shards = shards.as_array().unwrap();
    assert_eq!(shards.len(), 3);
    assert!(
        shards
            .iter()
            .all(|s| s["clock"] == "coordinator (start barrier)")
    );
    let seen = trace_sim::read_truth(&truth).unwrap();
    for (id, _) in &split {
        assert!(seen.contains_key(id.as_str()), "{id}");
    }
    // The embedded simulator is one process's: --processes needs a target.
    let bad = run_in(&["replay", "--processes", "2", "-n", "3"], d.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("--processes needs --url"),
        "{}",
        stderr(&bad)
    );
}

/// Each row's scheduled time from its file's first stage start, by request id, sorted: what
/// must agree between a single-host run and its shards.
fn stage_offsets(file: &std::path::Path) -> Vec<(String, i64)> {
    let r = TraceReader::open(file).unwrap();
    let start = r.meta().stages()[0].start_ns;
    let mut v: Vec<_> = r
        .records()
        .map(|x| x.unwrap())
        .map(|x| (x.request_id, x.scheduled_ns - start))
        .collect();
    v.sort();
    v
}
