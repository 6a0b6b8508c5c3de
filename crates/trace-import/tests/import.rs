//! Imports of every fixture format read back through `TraceReader`, bad-input errors with
//! file:line:column, `--skip-bad` counts, window/limit/filter, and export.
//! See: issue 6.

mod fixtures;

use std::path::{Path, PathBuf};

use trace_format::{TraceMeta, TraceRecord, meta, read_all};
use trace_import::{
    Error, Filter, Format, ImportConfig, SOURCE_FAILED, Window, export_mooncake, import,
};

const MS: i64 = 1_000_000;

#[test]
#[ignore = "rewrites traces/import/; run after changing the generator"]
fn regen_import_fixtures() {
    std::fs::create_dir_all(fixtures::dir()).unwrap();
    for (name, content) in fixtures::all() {
        std::fs::write(fixtures::dir().join(name), content).unwrap();
    }
}

#[test]
fn fixtures_are_current() {
    for (name, content) in fixtures::all() {
        let on_disk = std::fs::read_to_string(fixtures::dir().join(name)).unwrap_or_else(|e| {
            panic!(
                "{name}: {e}; run `cargo test -p trace-import -- --ignored regen_import_fixtures`"
            )
        });
        assert_eq!(
            on_disk, content,
            "{name} drifted from the generator; regenerate it"
        );
    }
}

fn fixture(name: &str) -> PathBuf {
    fixtures::dir().join(name)
}

fn run(cfg: &ImportConfig) -> (trace_import::ImportSummary, TraceMeta, Vec<TraceRecord>) {
    let summary = import(cfg).unwrap_or_else(|e| panic!("{e}"));
    let (meta, recs) = read_all(&cfg.output).unwrap();
    (summary, meta, recs)
}

fn cfg(format: Format, input: impl AsRef<Path>, dir: &tempfile::TempDir) -> ImportConfig {
    ImportConfig::new(format, input.as_ref(), dir.path().join("out.parquet"))
}

fn source(meta: &TraceMeta) -> serde_json::Value {
    serde_json::from_str(meta.get(meta::SOURCE).unwrap()).unwrap()
}

fn expected_offsets_ns() -> Vec<i64> {
    fixtures::OFFSETS_MS.iter().map(|ms| ms * MS).collect()
}

#[test]
fn azure_2023_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (s, m, recs) = run(&cfg(Format::Azure, fixture("azure_2023.csv"), &dir));
    assert_eq!(s.rows_written, 12);
    assert_eq!(s.kind, "workload");
    assert_eq!(m.get(meta::KIND), Some("workload"));
    assert_eq!(
        recs.iter().map(|r| r.scheduled_ns).collect::<Vec<_>>(),
        expected_offsets_ns()
    );
    for (i, r) in recs.iter().enumerate() {
        let (p, o) = fixtures::lens(i);
        assert_eq!(r.prompt_tokens, Some(p as i32));
        assert_eq!(r.max_tokens, Some(o as i32));
        assert_eq!(r.request_id, format!("azure-{}", i + 2));
    }
    let src = source(&m);
    assert_eq!(src["format"], "azure");
    assert_eq!(src["time_unit"], "datetime");
    // The wall-clock anchor is the first row's timestamp, read as UTC.
    let first = trace_import::parse_datetime_ns("2023-11-16 18:17:03.9799600").unwrap();
    assert_eq!(m.run_start_unix_ns(), Some(first));
}

#[test]
fn azure_2024_zone_and_missing_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, recs) = run(&cfg(Format::Azure, fixture("azure_2024.csv"), &dir));
    let mut want = expected_offsets_ns();
    want[3] = 1_000_000_000 - 9_930_000; // the whole-second row
    assert_eq!(
        recs.iter().map(|r| r.scheduled_ns).collect::<Vec<_>>(),
        want
    );
}

#[test]
fn azure_window_by_offset_and_datetime() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Format::Azure, fixture("azure_2023.csv"), &dir);
    c.window = Some("1s..5s".parse::<Window>().unwrap());
    let (s, _, recs) = run(&c);
    // Rows at 1000..4200 ms; offsets from the window start.
    assert_eq!(
        recs.iter().map(|r| r.scheduled_ns / MS).collect::<Vec<_>>(),
        vec![0, 500, 1750, 2000, 2000, 3200]
    );
    assert_eq!(s.rows_excluded, 6);

    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Format::Azure, fixture("azure_2023.csv"), &dir);
    c.window = Some(
        "2023-11-16 18:17:04.9799600..2023-11-16 18:17:08.1799600"
            .parse()
            .unwrap(),
    );
    let (_, m, recs) = run(&c);
    // 1000 <= offset < 4200 ms: the end is exclusive.
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0].scheduled_ns, 0);
    let start = trace_import::parse_datetime_ns("2023-11-16 18:17:04.9799600").unwrap();
    assert_eq!(m.run_start_unix_ns(), Some(start));
}

#[test]
fn burstgpt_failures_models_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let (s, m, recs) = run(&cfg(Format::BurstGpt, fixture("burstgpt.csv"), &dir));
    assert_eq!(recs.len(), 12);
    assert_eq!(s.source_failures, 2);
    let failed: Vec<_> = recs
        .iter()
        .filter(|r| r.error_kind.as_deref() == Some(SOURCE_FAILED))
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|r| r.max_tokens.is_none()));
    assert_eq!(recs[0].model.as_deref(), Some("GPT-4"));
    assert_eq!(recs[0].scheduled_ns, 0);
    assert_eq!(recs[3].scheduled_ns, 3_000_000_000);
    assert_eq!(source(&m)["time_unit"], "s");

    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Format::BurstGpt, fixture("burstgpt.csv"), &dir);
    c.filters = vec![
        "model=gpt-4".parse::<Filter>().unwrap(),
        "log_type=api".parse().unwrap(),
    ];
    let (_, _, recs) = run(&c);
    // GPT-4 rows are i % 3 == 0, API log rows are odd i: i = 3, 9.
    assert_eq!(
        recs.iter()
            .map(|r| r.request_id.as_str())
            .collect::<Vec<_>>(),
        ["burstgpt-5", "burstgpt-11"]
    );
    // Offsets stay measured from the trace's first row, not the first kept one.
    assert_eq!(recs[0].scheduled_ns, 3_000_000_000);
}

#[test]
fn mooncake_hash_ids_block_size_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_, m, recs) = run(&cfg(Format::Mooncake, fixture("mooncake.jsonl"), &dir));
    assert_eq!(
        recs.iter().map(|r| r.scheduled_ns).collect::<Vec<_>>(),
        expected_offsets_ns()
    );
    let (p0, _) = fixtures::lens(0);
    assert_eq!(recs[0].hash_ids.len() as i64, (p0 + 511) / 512);
    assert_eq!(&recs[1].hash_ids[..2], &[0, 1], "shared prefix blocks kept");
    assert_eq!(source(&m)["block_size"], 512);
    assert_eq!(source(&m)["time_unit"], "ms");

    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Format::Mooncake, fixture("mooncake.jsonl"), &dir);
    c.block_size = Some(256);
    c.limit = Some(5);
    let (s, m, recs) = run(&c);
    assert_eq!(recs.len(), 5);
    assert_eq!(s.rows_written, 5);
    assert_eq!(source(&m)["block_size"], 256);
}

#[test]
fn bailian_sessions_and_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (_, m, recs) = run(&cfg(Format::Bailian, fixture("bailian.jsonl"), &dir));
    assert_eq!(recs.len(), 12);
    assert_eq!(
        recs.iter().map(|r| r.scheduled_ns).collect::<Vec<_>>(),
        expected_offsets_ns()
    );
    assert_eq!(recs[0].request_id, "100");
    assert_eq!(recs[0].parent_id, None);
    assert_eq!(recs[3].parent_id.as_deref(), Some("100"));
    assert_eq!(recs[6].parent_id.as_deref(), Some("103"));
    assert_eq!(source(&m)["block_size"], 16);
}

#[test]
fn sharegpt_first_human_turn_and_reply_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = cfg(Format::ShareGpt, fixture("sharegpt.json"), &dir);
    first.sharegpt_first_turn = true;
    let (s, _, recs) = run(&first);
    assert_eq!(recs.len(), 3);
    assert_eq!(s.rows_excluded, 1, "the conversation without a reply");
    assert_eq!(
        recs[0].prompt.as_deref(),
        Some("Explain continuous batching in one paragraph.")
    );
    assert_eq!(recs[0].prompt_tokens, Some(6));
    assert_eq!(
        recs[1].prompt.as_deref(),
        Some("Name three inference engines.")
    );
    assert_eq!(recs[1].max_tokens, Some(3));
    // The id as given, as `trace replay sharegpt=FILE` sends it.
    assert_eq!(recs[2].request_id, "42");
    assert!(
        recs.iter()
            .all(|r| r.scheduled_ns == 0 && r.prompt_hash.is_some())
    );

    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Format::ShareGpt, fixture("sharegpt.json"), &dir);
    c.limit = Some(1);
    assert_eq!(run(&c).2.len(), 1);
}

#[test]
fn sharegpt_conversations_become_sessions_of_their_turns() {
    let dir = tempfile::tempdir().unwrap();
    let (s, m, recs) = run(&cfg(Format::ShareGpt, fixture("sharegpt.json"), &dir));
    assert_eq!(s.rows_excluded, 1, "the conversation without a reply");
    let ids: Vec<&str> = recs.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["conv-a", "conv-a-t1", "conv-b", "42"]);
    let (a0, a1) = (&recs[0], &recs[1]);
    assert_eq!(
        (a0.session_id.as_deref(), a0.turn),
        (Some("conv-a"), Some(0))
    );
    assert_eq!(
        (a1.session_id.as_deref(), a1.turn),
        (Some("conv-a"), Some(1))
    );
    assert_eq!(a1.parent_id.as_deref(), Some("conv-a"));
    assert_eq!(a1.prompt.as_deref(), Some("And paged attention?"));
    // The whole conversation so far: 6 + 22 words, then the new 3.
    let reply = a0.output_text.as_deref().unwrap();
    assert!(reply.starts_with("Continuous batching adds"), "{reply}");
    assert_eq!(a1.prompt_tokens, Some(6 + 22 + 3));
    assert_eq!(a1.output_text, None, "the last turn's reply is not needed");
    assert_eq!(recs[2].session_id.as_deref(), Some("conv-b"));
    // No timing in ShareGPT, and the source says so (replay then takes arrivals from --rate).
    assert!(source(&m)["time_unit"].is_null());
}

#[test]
fn copilot_agent_sessions_become_chains_with_tool_and_user_think_times() {
    let dir = tempfile::tempdir().unwrap();
    let (s, m, recs) = run(&cfg(
        Format::CopilotAgent,
        fixture("copilot_agent.jsonl"),
        &dir,
    ));
    assert_eq!(s.rows_written, 5);
    assert_eq!(s.source_failures, 1, "the cancelled call");
    let by = |id: &str| recs.iter().find(|r| r.request_id == id).unwrap();
    // Times from the earliest call of the file (sess-b's, on the second line).
    assert_eq!(by("m-b1").scheduled_ns, 0);
    assert_eq!(by("m-a1").scheduled_ns, 5000 * MS);
    let a2 = by("m-a2");
    assert_eq!(a2.session_id.as_deref(), Some("sess-a"));
    assert_eq!((a2.turn, a2.parent_id.as_deref()), (Some(1), Some("m-a1")));
    assert_eq!(
        a2.think_ns,
        Some(2500 * MS),
        "tools ran 2.5 s after the call ended"
    );
    assert_eq!(
        (a2.prompt_tokens, a2.max_tokens, a2.cached_tokens),
        (Some(4900), Some(80), Some(4096))
    );
    let a3 = by("m-a3");
    assert_eq!(a3.think_ns, Some(30_000 * MS), "the user's pause");
    assert_eq!(a3.error_kind.as_deref(), Some(SOURCE_FAILED));
    assert!(a3.error_msg.as_deref().unwrap().contains("UserCancel"));
    assert_eq!(by("m-b2").think_ns, Some(200 * MS));
    assert_eq!(by("m-b1").parent_id, None);
    assert_eq!(source(&m)["time_unit"], "datetime");

    // A bad timestamp names the file, the line and the field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        r#"{"session_id":"x","turns":[{"llm_calls":[{"timestamp":"yesterday","tokens":{}}]}]}"#,
    )
    .unwrap();
    let msg = err_of(&cfg(Format::CopilotAgent, &bad, &dir));
    assert!(
        msg.contains("bad.jsonl:1") && msg.contains("timestamp"),
        "{msg}"
    );
}

#[test]
fn vllm_detailed_rebuilds_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (s, m, recs) = run(&cfg(Format::VllmJson, fixture("vllm_detailed.json"), &dir));
    assert_eq!(s.kind, "run");
    assert_eq!(m.get(meta::KIND), Some("run"));
    assert_eq!(recs.len(), 4);
    let r = &recs[0];
    assert_eq!(r.stage, "rate=5");
    assert_eq!(r.target_rate, Some(5.0));
    assert_eq!(r.sent_ns, Some(0));
    assert_eq!(r.chunk_ns, vec![100 * MS, 120 * MS, 150 * MS]);
    assert_eq!(r.chunk_tokens, vec![1, 1, 1]);
    assert_eq!(r.end_ns, Some(160 * MS));
    assert_eq!(r.model.as_deref(), Some("meta-llama/Llama-3.1-8B-Instruct"));
    assert_eq!(recs[1].sent_ns, Some(200 * MS));
    assert_eq!(recs[2].error_kind.as_deref(), Some(SOURCE_FAILED));
    assert!(recs[2].chunk_ns.is_empty());
    assert_eq!(recs[3].scheduled_ns, 700 * MS);
    let src = source(&m);
    assert_eq!(src["summaries"][0]["completed"], 3);
    assert!(src["summaries"][0].get("ttfts").is_none());
}

#[test]
fn vllm_old_summary_only() {
    let dir = tempfile::tempdir().unwrap();
    let (s, m, recs) = run(&cfg(
        Format::VllmJson,
        fixture("vllm_old_summary.json"),
        &dir,
    ));
    assert_eq!(s.rows_written, 0);
    assert!(recs.is_empty());
    let sum = &source(&m)["summaries"][0];
    assert_eq!(sum["stage"], "rate=inf");
    assert!(
        sum.get("request_goodput").is_some(),
        "old 'request_goodput:' key renamed"
    );
    assert_eq!(sum["mean_ttft_ms"], 820.0);
}

#[test]
fn sglang_two_runs_two_stages() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, recs) = run(&cfg(Format::SglangJsonl, fixture("sglang.jsonl"), &dir));
    assert_eq!(recs.len(), 6);
    assert_eq!(recs[0].stage, "rate=2");
    assert_eq!(recs[3].stage, "rate=8");
    // The second run starts after the first one's duration (2 s).
    assert!(recs[3].sent_ns.unwrap() >= 2_000_000_000);
    assert_eq!(recs[3].chunk_ns[0] - recs[3].sent_ns.unwrap(), 300 * MS);
}

#[test]
fn aiperf_records_sorted_by_send_and_failures_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (s, m, recs) = run(&cfg(Format::Aiperf, fixture("aiperf.jsonl"), &dir));
    assert_eq!(s.rows_written, 3);
    let by_id = |id: &str| recs.iter().find(|r| r.request_id == id).unwrap();
    assert_eq!(by_id("req-0").sent_ns, Some(0));
    assert_eq!(
        by_id("req-0").chunk_ns,
        vec![50 * MS, 55 * MS, 60 * MS, 65 * MS]
    );
    assert_eq!(by_id("req-1").scheduled_ns, 200 * MS);
    assert_eq!(by_id("req-2").error_kind.as_deref(), Some("cancelled"));
    assert_eq!(by_id("req-2").prompt_tokens, Some(550));
    assert_eq!(m.run_start_unix_ns(), Some(1_759_813_207_000_000_000));
}

/// AIPerf 0.13's shape: the scheduler's `credit_issued_ns`, the server's usage beside AIPerf's
/// own tokenizer count, and every time metric with its unit.
#[test]
fn aiperf_keeps_scheduler_time_server_counts_latency_and_units() {
    let dir = tempfile::tempdir().unwrap();
    let gaps: Vec<String> = (0..15).map(|_| "10.0".to_string()).collect();
    let line = |id: &str, credit: i64, ttft: &str, unit: &str| {
        format!(
            r#"{{"metadata":{{"x_request_id":"{id}","credit_issued_ns":{credit},"request_start_ns":{},"request_ack_ns":{},"request_end_ns":{},"benchmark_phase":"profiling","was_cancelled":false}},"metrics":{{"output_sequence_length":{{"value":33,"unit":"tokens"}},"input_sequence_length":{{"value":128,"unit":"tokens"}},"usage_prompt_tokens":{{"value":67,"unit":"tokens"}},"usage_completion_tokens":{{"value":16,"unit":"tokens"}},"time_to_first_token":{{"value":{ttft},"unit":"{unit}"}},"request_latency":{{"value":204.5,"unit":"ms"}},"inter_chunk_latency":{{"value":[{}],"unit":"ms"}}}}}}"#,
            credit + 1_200_000,
            credit + 4_000_000,
            // Logged after processing: later than start + latency.
            credit + 1_200_000 + 260_000_000,
            gaps.join(",")
        )
    };
    let t0 = 1_796_134_448_733_821_462i64;
    let text = [
        line("a", t0, "54.5", "ms"),
        line("b", t0 + 100_000_000, "0.0545", "s"),
    ]
    .join("\n");
    let input = write(&dir, "aiperf13.jsonl", &text);
    let (s, _, recs) = run(&cfg(Format::Aiperf, &input, &dir));
    assert_eq!(s.rows_written, 2);
    for r in &recs {
        assert_eq!(r.token_source.as_deref(), Some("usage"), "{r:?}");
        assert_eq!(r.output_tokens, Some(16));
        assert_eq!(r.prompt_tokens, Some(67));
        assert_eq!(r.max_tokens, Some(33));
        assert_eq!(r.chunk_tokens.iter().sum::<i32>(), 16);
        assert_eq!(r.event_tokens_gap, None);
        // Send lag: the scheduler's credit to the actual start.
        assert_eq!(r.sent_ns.unwrap() - r.scheduled_ns, 1_200_000);
        // E2E is AIPerf's request latency, not the logged end.
        assert_eq!(r.end_ns.unwrap() - r.sent_ns.unwrap(), 204_500_000);
        // 54.5 ms, whether given in ms or in s.
        assert_eq!(r.chunk_ns[0] - r.sent_ns.unwrap(), 54_500_000);
    }
    // Without usage, the count is AIPerf's tokenizer's, and labelled so.
    let no_usage = line("c", t0, "50", "ms").replace(
        r#""usage_completion_tokens":{"value":16,"unit":"tokens"},"#,
        "",
    );
    let dir2 = tempfile::tempdir().unwrap();
    let input = write(&dir2, "aiperf-nousage.jsonl", &no_usage);
    let (_, _, recs) = run(&cfg(Format::Aiperf, &input, &dir2));
    assert_eq!(recs[0].token_source.as_deref(), Some("tokenizer"));
    assert_eq!(recs[0].output_tokens, Some(33));
    assert_eq!(recs[0].event_tokens_gap, Some(33 - 16));
    // An unknown unit is a bad line, named.
    let dir3 = tempfile::tempdir().unwrap();
    let input = write(
        &dir3,
        "aiperf-unit.jsonl",
        &line("d", t0, "5", "fortnights"),
    );
    let msg = err_of(&cfg(Format::Aiperf, &input, &dir3));
    assert!(
        msg.contains("aiperf-unit.jsonl:1") && msg.contains("'fortnights'"),
        "{msg}"
    );
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn err_of(c: &ImportConfig) -> String {
    let e = import(c).expect_err("must fail");
    assert!(
        !trace_format::partial_dir(&c.output).exists(),
        "partial output left behind"
    );
    assert!(!c.output.exists());
    e.to_string()
}

#[test]
fn bad_rows_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,10,2\n2023-11-16 18:17:04.1,11,x\n2023-11-16 18:17:0,1,1\n2023-11-16 18:17:05.0,12\n2023-11-16 18:17:06.0,13,4\n";
    let input = write(&dir, "bad.csv", text);
    let c = cfg(Format::Azure, &input, &dir);
    let msg = err_of(&c);
    assert!(msg.contains("bad.csv:3:3 ('GeneratedTokens')"), "{msg}");
    assert!(msg.contains("'x' is not a token count"), "{msg}");

    let mut c = cfg(Format::Azure, &input, &dir);
    c.skip_bad = true;
    let (s, _, recs) = run(&c);
    assert_eq!(s.rows_bad, 3);
    assert_eq!(recs.len(), 2);
    assert!(
        s.bad_examples[1].contains("bad.csv:4:1 ('TIMESTAMP'): bad timestamp"),
        "{:?}",
        s.bad_examples
    );
    assert!(
        s.bad_examples[2].contains("bad.csv:5:3") && s.bad_examples[2].contains("truncated"),
        "{:?}",
        s.bad_examples
    );
}

#[test]
fn wrong_header_is_an_input_error_even_with_skip_bad() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        &dir,
        "wrong.csv",
        "Timestamp,Model,Request tokens\n1,GPT-4,3\n",
    );
    let mut c = cfg(Format::Azure, &input, &dir);
    c.skip_bad = true;
    let msg = err_of(&c);
    assert!(
        msg.contains("wrong.csv") && msg.contains("'ContextTokens'"),
        "{msg}"
    );
    assert!(matches!(import(&c), Err(Error::BadInput { .. })));
}

#[test]
fn truncated_json_line_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let text = "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 2, \"hash_ids\": [1]}\n{\"timestamp\": 5, \"input_length\": 10, \"outp\n{\"timestamp\": 9, \"input_length\": -3, \"output_length\": 2}\n{\"timestamp\": 12, \"input_length\": 10, \"output_length\": 2}\n";
    let input = write(&dir, "bad.jsonl", text);
    let msg = err_of(&cfg(Format::Mooncake, &input, &dir));
    assert!(msg.starts_with(&format!("{}:2:", input.display())), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
    let mut c = cfg(Format::Mooncake, &input, &dir);
    c.skip_bad = true;
    let (s, _, recs) = run(&c);
    assert_eq!((s.rows_bad, recs.len()), (2, 2));
    assert!(
        s.bad_examples[1].contains("bad.jsonl:3:"),
        "{:?}",
        s.bad_examples
    );
}

#[test]
fn unsorted_rows_are_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let text = "{\"timestamp\": 100, \"input_length\": 1, \"output_length\": 1}\n{\"timestamp\": 50, \"input_length\": 1, \"output_length\": 1}\n";
    let input = write(&dir, "unsorted.jsonl", text);
    let msg = err_of(&cfg(Format::Mooncake, &input, &dir));
    assert!(
        msg.contains("unsorted.jsonl:2") && msg.contains("sorted"),
        "{msg}"
    );
}

#[test]
fn options_that_do_not_fit_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(Format::Mooncake, fixture("mooncake.jsonl"), &dir);
    c.window = Some("2023-11-16 18:00:00..2023-11-16 19:00:00".parse().unwrap());
    assert!(matches!(import(&c), Err(Error::Config(_))));
    let mut c = cfg(Format::Azure, fixture("azure_2023.csv"), &dir);
    c.filters = vec!["model=x".parse().unwrap()];
    assert!(matches!(import(&c), Err(Error::Config(_))));
    let mut c = cfg(Format::Azure, fixture("azure_2023.csv"), &dir);
    c.block_size = Some(16);
    assert!(matches!(import(&c), Err(Error::Config(_))));
    let c = cfg(Format::Azure, dir.path().join("missing.csv"), &dir);
    assert!(err_of(&c).contains("missing.csv"));
    assert!("10m".parse::<Window>().is_err());
    assert!("20m..10m".parse::<Window>().is_err());
    assert!("10m..2023-11-16 18:00:00".parse::<Window>().is_err());
    assert!("..10m".parse::<Window>().is_ok());
    assert!("colour=red".parse::<Filter>().is_err());
}

#[test]
fn export_mooncake_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, first) = run(&cfg(Format::Mooncake, fixture("mooncake.jsonl"), &dir));
    let jsonl = dir.path().join("back.jsonl");
    let e = export_mooncake(&dir.path().join("out.parquet"), &jsonl).unwrap();
    assert_eq!(e.rows, 12);
    let mut c = ImportConfig::new(Format::Mooncake, &jsonl, dir.path().join("again.parquet"));
    c.skip_bad = false;
    let (_, _, again) = run(&c);
    let key = |r: &TraceRecord| {
        (
            r.scheduled_ns,
            r.prompt_tokens,
            r.max_tokens,
            r.hash_ids.clone(),
        )
    };
    assert_eq!(
        first.iter().map(key).collect::<Vec<_>>(),
        again.iter().map(key).collect::<Vec<_>>()
    );
    // Ids survive the round trip.
    assert_eq!(first[3].request_id, again[3].request_id);
}

/// Every importer reads a file a Windows editor saved (a UTF-8 byte-order mark first) exactly
/// as the same file without it.
#[test]
fn a_byte_order_mark_changes_nothing() {
    for (format, name) in [
        (Format::Mooncake, "mooncake.jsonl"),
        (Format::Bailian, "bailian.jsonl"),
        (Format::Aiperf, "aiperf.jsonl"),
        (Format::CopilotAgent, "copilot_agent.jsonl"),
        (Format::Azure, "azure_2023.csv"),
        (Format::BurstGpt, "burstgpt.csv"),
        (Format::ShareGpt, "sharegpt.json"),
        (Format::VllmJson, "vllm_detailed.json"),
        (Format::SglangJsonl, "sglang.jsonl"),
    ] {
        let plain = tempfile::tempdir().unwrap();
        let (_, _, want) = run(&cfg(format, fixture(name), &plain));
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend(std::fs::read(fixture(name)).unwrap());
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let (_, _, got) = run(&cfg(format, &p, &dir));
        assert_eq!(got, want, "{name}");
    }
}

/// A file with no line breaks where lines are expected (a binary, a 20 MB blob) fails at once
/// with a short message naming the line, instead of being buffered whole.
#[test]
fn a_line_past_the_cap_is_refused_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("blob.csv");
    std::fs::write(&p, vec![b'a'; 20 << 20]).unwrap();
    for format in [Format::Azure, Format::BurstGpt, Format::Mooncake] {
        let e = import(&cfg(format, &p, &dir)).expect_err("must fail");
        // The message as `trace` prints it: the error and its causes.
        let mut msg = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            msg.push_str(&format!(": {c}"));
            cause = c.source();
        }
        assert!(
            msg.contains("line 1 is longer than 16 MiB"),
            "{format}: {msg}"
        );
        assert!(msg.len() < 400, "{format}: {} bytes", msg.len());
    }
}

/// What importers used to accept silently: a Mooncake line that is an array, rows going back in
/// time after the first, a token count past int32 (clamped), per-request arrays of different
/// lengths, negative times. Each is now an error naming the line (or object) and the problem.
#[test]
fn malformed_inputs_importers_used_to_accept_are_named() {
    let cases: [(Format, &str, &str, &str); 6] = [
        (
            Format::Mooncake,
            "m.jsonl",
            "{\"timestamp\":0,\"input_length\":5,\"output_length\":2}\n[10,5,2]\n",
            "m.jsonl:2:1",
        ),
        (
            Format::Mooncake,
            "u.jsonl",
            "{\"timestamp\":0,\"input_length\":5,\"output_length\":2}\n{\"timestamp\":900,\"input_length\":5,\"output_length\":2}\n{\"timestamp\":500,\"input_length\":5,\"output_length\":2}\n",
            "before the previous row's",
        ),
        (
            Format::Mooncake,
            "big.jsonl",
            "{\"timestamp\":0,\"input_length\":3000000000,\"output_length\":2}\n",
            "more than any model takes",
        ),
        (
            Format::Azure,
            "u.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.0,10,2\n2023-11-16 18:17:09.0,10,2\n2023-11-16 18:17:05.0,10,2\n",
            "u.csv:4",
        ),
        (
            Format::VllmJson,
            "v.json",
            r#"{"request_rate": 1, "ttfts": [0.1, 0.2], "latencies": [1.0], "input_lens": [5, 5], "output_lens": [2, 2]}"#,
            "'latencies' has 1 entries for 2 'ttfts'",
        ),
        (
            Format::VllmJson,
            "n.json",
            r#"{"request_rate": 1, "ttfts": [0.1, -0.2], "input_lens": [5, 5], "output_lens": [2, 2]}"#,
            "'ttfts' entry 1 is negative",
        ),
    ];
    for (format, name, text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let input = write(&dir, name, text);
        let msg = err_of(&cfg(format, &input, &dir));
        assert!(msg.contains(want), "{name}: {msg}");
    }
}
