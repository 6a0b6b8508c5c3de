//! The committed real-engine captures (traces/engine/, `transformers serve` on a GPU, with and
//! without continuous batching) read by the real binary: the report finds stable and saturated
//! stages, and the diff pairs the two runs request by request and answers the A/B question.

use std::process::Output;

use crate::util::*;

const NOCB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/traces/engine/transformers-nocb.parquet"
);
const CB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/traces/engine/transformers-cb.parquet"
);

fn trace_ok(args: &[&str]) -> Output {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "trace {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&trace_ok(args).stdout).unwrap()
}

fn verdicts(report: &serde_json::Value) -> Vec<(String, String)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["saturation"]["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn both_captures_are_complete_sweeps() {
    for path in [NOCB, CB] {
        let r = json(&["report", path, "--format", "json"]);
        let stages: Vec<&str> = r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert_eq!(stages, ["rate=0.5", "rate=1", "rate=2", "rate=4"], "{path}");
        for s in r["stages"].as_array().unwrap() {
            assert_eq!(s["completed"], 30, "{path} {}", s["stage"]);
            assert_eq!(s["failed"], 0, "{path} {}", s["stage"]);
            // 32 output tokens each, counted from the server's usage: the prompt echo that
            // this engine streams first is not counted as output.
            assert_eq!(s["total_output_tokens"], 30 * 32, "{path} {}", s["stage"]);
        }
    }
}

#[test]
fn without_continuous_batching_the_engine_saturates_between_half_and_one_request_per_second() {
    let r = json(&["report", NOCB, "--format", "json"]);
    let v = verdicts(&r);
    assert_eq!(v[0], ("rate=0.5".into(), "stable".into()), "{v:?}");
    assert!(v[1..].iter().all(|(_, v)| v == "saturated"), "{v:?}");
    let sat = &r["saturation"];
    assert_eq!(sat["saturated_stage"], "rate=1");
    assert_eq!(sat["best_stable_stage"], "rate=0.5");
    // One request at a time, ~1.4 s each: capacity near 0.7 req/s, below the 1 req/s offered.
    let mu = sat["capacity_estimate"].as_f64().unwrap();
    assert!(mu > 0.5 && mu < 1.0, "{mu}");
    // The queue shows in TTFT: median TTFT at 4 req/s is seconds, at 0.5 req/s well under.
    let p50 = |i: usize| r["stages"][i]["metrics"]["ttft"]["p50"].as_f64().unwrap();
    assert!(p50(3) > 10.0 * p50(0), "{} vs {}", p50(3), p50(0));
}

#[test]
fn continuous_batching_stays_stable_over_the_same_sweep() {
    let r = json(&["report", CB, "--format", "json"]);
    let v = verdicts(&r);
    assert!(v.iter().all(|(_, v)| v == "stable"), "{v:?}");
    assert!(r["saturation"]["saturated_stage"].is_null());
    // At 2 and 4 req/s the window shows a growing backlog: stable only because the arithmetic of
    // the stage's end says no queue was left (it drained within one median E2E).
    for s in r["stages"].as_array().unwrap() {
        let sat = &s["saturation"];
        let (d, m) = (
            sat["drain_s"].as_f64().unwrap(),
            sat["median_e2e_s"].as_f64().unwrap(),
        );
        if sat["reason"].as_str().unwrap().contains("backlog grows") {
            assert!(d <= m, "{}: drained {d} s, median E2E {m} s", s["stage"]);
        }
    }
}

#[test]
fn diff_pairs_the_runs_and_answers_the_ab_question() {
    let t = String::from_utf8(trace_ok(&["diff", NOCB, CB, "--resamples", "300"]).stdout).unwrap();
    let headline = t.lines().next().unwrap();
    assert!(
        headline.starts_with(
            "transformers-cb does not saturate in the tested range (transformers-nocb saturates at rate 1)"
        ),
        "{headline}"
    );
    // The trade-off: batching many sequences makes every decode step slower.
    assert!(headline.contains("slower at P50 TPOT"), "{headline}");
    assert!(t.contains("pairing: request_id (120 requests"), "{t}");

    let d = json(&["diff", NOCB, CB, "--format", "json", "--resamples", "300"]);
    let c = &d["comparisons"][0];
    let stage4 = c["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "rate=4")
        .unwrap();
    assert_eq!(stage4["saturation_a"], "saturated");
    assert_eq!(stage4["saturation_b"], "stable");

    // --fail-on gates a CI job on the answer: TTFT P99 improved, so a regression gate passes,
    // and a TPOT gate trips (exit 1).
    let gate = |cond: &str| {
        run(&["diff", NOCB, CB, "--resamples", "200", "--fail-on", cond])
            .status
            .code()
    };
    assert_eq!(gate("ttft.p99>+10%"), Some(0));
    assert_eq!(gate("tpot.p50>+20%"), Some(1));
}

/// `trace sim --fit`: the simulator's engine model fitted on the lower stages of a real capture
/// predicts the held-out highest stage: the same saturation verdict, TTFT P50 within 50%, TPOT
/// P50 within 25% and throughput within 15% (exit 0), and serves as a profile file.
#[test]
fn a_simulator_fitted_on_the_lower_stages_predicts_the_highest() {
    let d = tempfile::tempdir().unwrap();
    let profile = d.path().join("nocb.json");
    let p = profile.to_str().unwrap();
    let o = run(&["sim", "--fit", NOCB, "--validate", "rate=4", "-o", p]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let table = stdout(&o);
    assert!(
        !table.contains("OUTSIDE") && !table.contains("DIFFERS"),
        "{table}"
    );
    assert!(table.contains("saturated   saturated"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    // Served one at a time: the fit finds one slot.
    assert_eq!(v["params"]["max_num_seqs"], 1, "{v}");
    // The profile is a simulator profile: a bad one is refused naming the file.
    std::fs::write(d.path().join("bad.json"), "{}").unwrap();
    let bad = d.path().join("bad.json");
    let o = run(&["sim", "--port", "0", "--profile", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.json"), "{}", stderr(&o));
}

/// The H200 llama.cpp capture (traces/README.md): a simulator fitted on the stages below
/// saturation predicts the first saturated one, and one fitted on all but the last predicts the
/// last, within the bounds `trace sim --fit` states.
#[test]
fn a_simulator_fitted_on_llamacpp_h200_predicts_its_saturated_stages() {
    let d = tempfile::tempdir().unwrap();
    let capture = repo().join("traces/engine/llamacpp-h200.parquet");
    let capture = capture.to_str().unwrap();
    for (stages, held_out) in [(Some("rate=1,rate=2,rate=4"), "rate=8"), (None, "rate=16")] {
        let profile = d.path().join(format!("{held_out}.json"));
        let mut args = vec![
            "sim",
            "--fit",
            capture,
            "--validate",
            held_out,
            "-o",
            profile.to_str().unwrap(),
        ];
        if let Some(s) = stages {
            args.extend(["--stages", s]);
        }
        let o = run(&args);
        let table = stdout(&o);
        assert!(o.status.success(), "{held_out}: {table}\n{}", stderr(&o));
        assert!(table.contains("saturated   saturated"), "{table}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
        // llama-server ran with --parallel 16: the fit sees (nearly) all of them busy.
        let slots = v["params"]["max_num_seqs"].as_u64().unwrap();
        assert!((12..=16).contains(&slots), "{slots} slots: {v}");
    }
}

/// The client's TPOT in the H200 llama.cpp capture against llama-server's own per-request decode
/// timings (its log, extracted by scripts/engine/llamacpp_timings.py): two clocks, two programs,
/// one answer. Also every generated token is accounted for.
#[test]
fn the_llamacpp_h200_capture_agrees_with_the_servers_own_timings() {
    let csv =
        std::fs::read_to_string(repo().join("traces/engine/h200/llamacpp-server-timings.csv"))
            .unwrap();
    let mut server_tpot = Vec::new();
    let mut server_tokens = 0i64;
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (eval_ms, eval_n): (f64, i64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
        // The one-token request is trace's chat-template probe, not a workload row.
        if eval_n > 1 {
            server_tpot.push(eval_ms / eval_n as f64);
            server_tokens += eval_n;
        }
    }
    let (meta, recs) =
        trace_format::read_all(repo().join("traces/engine/llamacpp-h200.parquet")).unwrap();
    // Its /metrics: never more running than the 16 slots it was started with, all 16 busy at
    // saturation, and a queue the client's own backlog arithmetic also saw.
    let samples = meta.server_samples();
    let max = |f: fn(&trace_format::ServerSample) -> Option<f64>| {
        samples.iter().filter_map(f).fold(0.0, f64::max)
    };
    assert_eq!(max(|s| s.running), 16.0);
    assert!(max(|s| s.waiting) > 100.0, "{}", max(|s| s.waiting));
    let mut client_tpot: Vec<f64> = recs
        .iter()
        .filter_map(|r| r.metrics().tpot_ns)
        .map(|ns| ns / 1e6)
        .collect();
    assert_eq!(
        client_tpot.len(),
        server_tpot.len(),
        "one server task per request"
    );
    let client_tokens: i64 = recs.iter().map(|r| r.metrics().output_tokens).sum();
    assert_eq!(client_tokens, server_tokens);
    for q in [10.0, 50.0, 90.0] {
        let c = trace_stats::percentile(&mut client_tpot, q).unwrap();
        let s = trace_stats::percentile(&mut server_tpot, q).unwrap();
        // The client's span starts at the first token's arrival, the server's at its sampling:
        // the two agree to a few percent (measured: within 1%).
        assert!(
            (c - s).abs() < 0.05 * s,
            "TPOT p{q}: client {c:.3} ms, server {s:.3} ms"
        );
    }
}

/// UNIX ns of nvidia-smi's `YYYY/MM/DD HH:MM:SS.mmm` (the machine's clock was UTC).
fn smi_time_ns(s: &str) -> i64 {
    let (date, time) = s.trim().split_once(' ').unwrap();
    let d: Vec<i64> = date.split('/').map(|x| x.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap();
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from 1970-01-01 of a proleptic Gregorian date.
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000 + ms.parse::<i64>().unwrap())
        * 1_000_000
}

/// The committed NVML capture (llama.cpp on an H200, `--gpu-metrics` left at auto: the target
/// on loopback, so this host's GPU through NVML) against nvidia-smi, sampled every second beside
/// it by the capture script: each stage's peak GPU memory in the report is nvidia-smi's within
/// its 1 MiB rounding, and the source is recorded.
#[test]
fn nvml_peak_memory_matches_nvidia_smi_on_the_h200_capture() {
    let capture = repo().join("traces/engine/llamacpp-nvml-h200.parquet");
    let r = trace_format::TraceReader::open(&capture).unwrap();
    assert_eq!(r.meta().get(trace_format::meta::GPU_SOURCE), Some("nvml"));
    let start = r.meta().run_start_unix_ns().unwrap();
    let smi =
        std::fs::read_to_string(repo().join("traces/engine/h200/llamacpp-nvml-nvidia-smi.csv"))
            .unwrap();
    let points: Vec<(i64, f64)> = smi
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (smi_time_ns(f[0]), f[1].trim().parse().unwrap())
        })
        .collect();
    let i = stdout(&run(&["inspect", capture.to_str().unwrap()]));
    let n = r.meta().gpu_samples().len();
    assert!(i.contains(&format!("gpu samples     {n} (nvml)")), "{i}");
    let o = run(&["report", capture.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    for (st, info) in stages.iter().zip(r.meta().stages()) {
        let (a, b) = (start + info.start_ns, start + info.end_ns.unwrap());
        let smi_peak = points
            .iter()
            .filter(|(t, _)| (a..=b).contains(t))
            .map(|(_, m)| *m)
            .fold(0.0, f64::max);
        let peak = st["gpu"]["peak_mem_mib"].as_f64().unwrap();
        assert!(smi_peak > 0.0, "no nvidia-smi reading in {}", info.stage);
        assert!(
            (peak - smi_peak).abs() <= 1.0,
            "{}: report {peak} MiB, nvidia-smi {smi_peak} MiB",
            info.stage
        );
    }
}
