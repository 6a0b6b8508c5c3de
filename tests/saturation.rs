//! The saturation verdict on stages an engine with few slots served (the simulator's engine in
//! virtual time, like llama.cpp's `--parallel 2`): queued requests start in waves as slots free
//! up, and past the client's timeout they fail. A stage well under capacity must be stable; one
//! at several times capacity must be saturated, even though its few completions make a short,
//! saw-toothed latency series (issue 15).

use trace_analyze::report::{ReportOptions, build};
use trace_analyze::saturation::Verdict;
use trace_analyze::{LoadOptions, load_run};
use trace_format::{ErrorKind, StageInfo, TraceMeta, TraceRecord, TraceWriter, WriterOptions};
use trace_sim::engine::{Arrival, EngineParams, SchedulePolicy, StepCoeffs, simulate};

const TIMEOUT_NS: i64 = 20_000_000_000;

fn slots_engine() -> EngineParams {
    EngineParams {
        max_num_seqs: 2,
        kv_blocks: 1 << 16,
        block_size: 16,
        max_batched_tokens: 2048,
        watermark_blocks: 0,
        policy: SchedulePolicy::Chunked,
        coeffs: StepCoeffs {
            a_ns: 10e6,
            b_ns_per_prefill_token: 50e3,
            c_ns_per_decode_seq: 1e6,
            d_ns_per_kv_token: 0.0,
        },
    }
}

/// One stage of `n` Poisson-like arrivals at `rate` (deterministic gaps), served by the engine,
/// starting at `t0_ns`; requests past the client's timeout fail.
fn stage(label: &str, rate: f64, n: u64, t0_ns: i64) -> Vec<TraceRecord> {
    let mut t = 0.0f64;
    let arrivals: Vec<Arrival> = (0..n)
        .map(|i| {
            let a = Arrival {
                at_ns: (t * 1e9) as u64,
                prompt_tokens: 64,
                output_tokens: 64,
            };
            // Exponential gaps from a fixed sequence of uniforms.
            let u = ((i * 7919 + 13) % 1000) as f64 / 1000.0 + 0.0005;
            t += -(1.0 - u).ln() / rate;
            a
        })
        .collect();
    let run = simulate(&slots_engine(), &arrivals);
    run.requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let sent = t0_ns + r.arrival_ns as i64;
            let deadline = sent + TIMEOUT_NS;
            let chunk_ns: Vec<i64> = r
                .token_ns
                .iter()
                .map(|&ns| t0_ns + ns as i64)
                .take_while(|&t| t <= deadline)
                .collect();
            let done = chunk_ns.len() == r.token_ns.len();
            TraceRecord {
                request_id: format!("{label}-{i}"),
                stage: label.into(),
                target_rate: Some(rate),
                scheduled_ns: sent,
                sent_ns: Some(sent),
                chunk_tokens: vec![1; chunk_ns.len()],
                end_ns: Some(if done {
                    *chunk_ns.last().unwrap()
                } else {
                    deadline
                }),
                chunk_ns,
                output_tokens: done.then_some(64),
                prompt_tokens: Some(64),
                max_tokens: Some(64),
                error_kind: (!done).then_some(ErrorKind::Timeout),
                ..TraceRecord::default()
            }
        })
        .collect()
}

#[test]
fn an_engine_with_two_slots_is_stable_under_capacity_and_saturated_far_over_it() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("slots.parquet");
    let low = stage("rate=1", 1.0, 90, 0);
    let start_high = low.iter().filter_map(|r| r.end_ns).max().unwrap() + 1_000_000_000;
    let high = stage("rate=6", 6.0, 360, start_high);
    let mut m = TraceMeta::new();
    m.set_stages(&[
        StageInfo {
            stage: "rate=1".into(),
            target_rate: Some(1.0),
            start_ns: 0,
            end_ns: None,
            requests: 90,
        },
        StageInfo {
            stage: "rate=6".into(),
            target_rate: Some(6.0),
            start_ns: start_high,
            end_ns: None,
            requests: 360,
        },
    ]);
    let mut w = TraceWriter::create(&path, m, WriterOptions::default()).unwrap();
    for r in low.into_iter().chain(high) {
        w.write_owned(r).unwrap();
    }
    w.close().unwrap();
    let mut run = load_run(&path, LoadOptions::default()).unwrap();
    let report = build(&mut run, &ReportOptions::default());
    let v: Vec<(String, Verdict)> = report
        .stages
        .iter()
        .map(|s| (s.stage.clone(), s.saturation.verdict))
        .collect();
    assert_eq!(
        v,
        [
            ("rate=1".to_string(), Verdict::Stable),
            ("rate=6".to_string(), Verdict::Saturated)
        ],
        "{:#?}",
        report
            .stages
            .iter()
            .map(|s| &s.saturation)
            .collect::<Vec<_>>()
    );
    // The verdict agrees with plain arithmetic on the same rows: far fewer completed than came.
    let high = &report.stages[1];
    assert!(
        high.completed * 2 < high.requests,
        "{} of {}",
        high.completed,
        high.requests
    );
    assert_eq!(report.saturation.saturated_stage.as_deref(), Some("rate=6"));
}
