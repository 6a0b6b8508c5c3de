//! One definition of the per-request metrics (trace-format's `derive`), three users: the
//! analyzer (`trace report`), the replay's live summary and selfcheck's join. On rows whose
//! `output_tokens` is null (a server that sent no usage) they must agree.

use std::collections::HashMap;

use trace_analyze::{LoadOptions, load_run};
use trace_format::{TraceMeta, TraceRecord, TraceWriter, WriterOptions, meta};
use trace_replay::summary::ReqStat;
use trace_sim::TruthRecord;

const MS: i64 = 1_000_000;

/// Rows without usage: a role-only first event, multi-token events, one single-token output.
fn rows() -> Vec<TraceRecord> {
    let events: [&[(i64, i32)]; 4] = [
        &[(12, 0), (15, 1), (25, 1), (35, 1)],
        &[(20, 2), (30, 3), (40, 1)],
        &[(8, 0), (9, 0), (50, 4)],
        &[(30, 1)],
    ];
    events
        .iter()
        .enumerate()
        .map(|(i, ev)| TraceRecord {
            request_id: format!("r{i}"),
            stage: "rate=1".into(),
            target_rate: Some(1.0),
            scheduled_ns: 0,
            sent_ns: Some(2 * MS),
            chunk_ns: ev.iter().map(|e| e.0 * MS).collect(),
            chunk_tokens: ev.iter().map(|e| e.1).collect(),
            end_ns: Some(60 * MS),
            output_tokens: None,
            status: Some(200),
            ..TraceRecord::default()
        })
        .collect()
}

#[test]
fn analyzer_live_summary_and_selfcheck_agree_on_rows_without_usage() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("noUsage.parquet");
    let mut m = TraceMeta::new();
    m.set(meta::RUN_START_UNIX_NS, "0");
    let mut w = TraceWriter::create(&path, m, WriterOptions::default()).unwrap();
    for r in rows() {
        w.write(&r).unwrap();
    }
    w.close().unwrap();

    let run = load_run(&path, LoadOptions::default()).unwrap();
    let analyzer = &run.stages[0].rows;
    // A truth whose server TTFT is 0 makes selfcheck's TTFT error the client's TTFT.
    let truth: HashMap<String, TruthRecord> = rows()
        .iter()
        .map(|r| {
            let t = TruthRecord {
                request_id: r.request_id.clone(),
                arrival_unix_ns: 0,
                event_unix_ns: vec![0],
                event_tokens: vec![1],
                status: 200,
                fault: None,
            };
            (r.request_id.clone(), t)
        })
        .collect();
    let joined = trace_selfcheck::join(0, &rows(), &truth);
    assert_eq!(joined.ttft_err_ns.len(), 4);
    for (i, r) in rows().iter().enumerate() {
        let live = ReqStat::from_record(r);
        let a = &analyzer[i];
        let ttft_ms = live.ttft_ns.unwrap() as f64 / 1e6;
        assert_eq!(a.ttft_ms, ttft_ms, "row {i}");
        assert_eq!(joined.ttft_err_ns[i] / 1e6, ttft_ms, "row {i}");
        assert_eq!(
            i64::from(a.output_tokens),
            i64::from(live.output_tokens.unwrap())
        );
        match live.tpot_ns {
            Some(t) => assert!((a.tpot_ms - t / 1e6).abs() < 1e-9, "row {i}"),
            None => assert!(a.tpot_ms.is_nan(), "row {i}"),
        }
    }
    // The hand arithmetic: row 1 has 6 tokens from its events, first at 20 ms.
    assert_eq!((analyzer[1].ttft_ms, analyzer[1].output_tokens), (18.0, 6));
    assert!((analyzer[1].tpot_ms - (58.0 - 18.0) / 5.0).abs() < 1e-9);
    // Row 3 has one token: no TPOT.
    assert!(analyzer[3].tpot_ms.is_nan());
}
