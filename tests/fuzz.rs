//! Property-based fuzzing (proptest, stable Rust) of everything that reads bytes from outside:
//! the SSE parser and stream state (under every route's protocol), the event classifier, the
//! Prometheus parser, every importer, and the trace readers (trace-format's and the analyzer's
//! polars scan). Each target must return (an event, a row, an error) and never panic or hang;
//! the SSE target also checks that any split of the input into reads gives the same result. `TRACE_FUZZ_CASES` sets the cases per target (CI: the default, 64; the
//! long run in docs/benchmarks.md used 20,000).

use proptest::prelude::*;
use proptest::test_runner::Config;
use trace_client::StreamState;
use trace_import::{Format, ImportConfig};

use crate::util::repo;

fn cases() -> u32 {
    std::env::var("TRACE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Pieces a hostile or broken stream is made of: SSE field names, JSON of every engine's
/// shape, line endings, and raw bytes.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: error\n".to_vec()),
        Just(b": keep-alive\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(br#"{"choices":[{"delta":{"content":"x"}}]}"#.to_vec()),
        Just(br#"{"choices":[{"text":"a","finish_reason":"length"}],"usage":{"completion_tokens":3}}"#.to_vec()),
        Just(br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#.to_vec()),
        Just(br#"{"token":{"text":"t"},"details":null}"#.to_vec()),
        Just(br#"{"error":{"message":"boom"}}"#.to_vec()),
        Just(br#"{"timings":{"predicted_n":4}}"#.to_vec()),
        Just(br#"{"choices":[{"delta":{"reasoning_content":"r"}}],"usage":{"prompt_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":1}}}"#.to_vec()),
        Just(br#"{"text":"ab","meta_info":{"completion_tokens":2,"finish_reason":{"type":"length"}}}"#.to_vec()),
        Just(br#"{"text_output":"x","model_name":"m"}"#.to_vec()),
        Just(br#"{"type":"response.output_text.delta","delta":"d"}"#.to_vec()),
        Just(br#"{"type":"response.completed","response":{"usage":{"input_tokens":1,"output_tokens":2}}}"#.to_vec()),
        Just(br#"{"type":"content_block_delta","delta":{"type":"thinking_delta","thinking":"t"}}"#.to_vec()),
        Just(br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}"#.to_vec()),
        Just(br#"{"type":"message_stop"}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..24),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn stream_outcome(endpoint: trace_client::Endpoint, reads: &[&[u8]]) -> String {
    let mut s = StreamState::for_route(true, endpoint, Some("out.0.t"));
    for (i, r) in reads.iter().enumerate() {
        s.feed(r, i as i64);
    }
    // Times differ with the split; what was parsed must not.
    format!(
        "{:?}",
        (
            s.chunks(),
            s.tokens(),
            s.keepalives(),
            s.done(),
            s.has_error()
        )
    )
}

/// A fixture with a few bytes flipped, inserted or cut.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len().max(1);
    proptest::collection::vec((0..len, any::<u8>(), 0u8..3), 1..12).prop_map(move |edits| {
        let mut d = base.clone();
        for (at, byte, op) in edits {
            let at = at.min(d.len());
            match op {
                0 if at < d.len() => d[at] = byte,
                1 => d.insert(at, byte),
                _ if at < d.len() => {
                    d.remove(at);
                }
                _ => {}
            }
        }
        d
    })
}

proptest! {
    #![proptest_config(Config::with_cases(cases()))]

    #[test]
    fn sse_streams_parse_alike_however_they_are_split(
        data in sse_bytes(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        route in 0usize..8,
    ) {
        use trace_client::Endpoint as E;
        let endpoint = [
            E::Chat, E::Completions, E::Tgi, E::Triton, E::Sglang, E::Custom, E::Responses,
            E::Messages,
        ][route];
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut reads = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            reads.push(&data[prev..c]);
            prev = c;
        }
        prop_assert_eq!(stream_outcome(endpoint, &reads), stream_outcome(endpoint, &[&data]));
    }

    #[test]
    fn the_classifier_takes_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = trace_client::classify(&data);
    }

    #[test]
    fn the_classifier_takes_any_mutant_of_a_real_event(
        data in mutated(br#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"a\"b"},"finish_reason":null}],"usage":{"prompt_tokens":5,"completion_tokens":2},"timings":{"predicted_n":2}}"#.to_vec())
    ) {
        let _ = trace_client::classify(&data);
    }

    #[test]
    fn the_prometheus_parser_takes_any_text(text in "(vllm:num_requests_(running|waiting)(\\{[a-z=\",]{0,20}\\})? [-+0-9.eEInfNa]{0,12}\n|# [A-Z]{4} .{0,20}\n|.{0,30}\n){0,30}") {
        let _ = trace_client::parse_prometheus(&text);
    }

    #[test]
    fn importers_take_any_mutant_of_their_fixtures(
        k in 0usize..9,
        seed in any::<u64>(),
    ) {
        let (format, name) = [
            (Format::Mooncake, "mooncake.jsonl"),
            (Format::Bailian, "bailian.jsonl"),
            (Format::Aiperf, "aiperf.jsonl"),
            (Format::CopilotAgent, "copilot_agent.jsonl"),
            (Format::Azure, "azure_2023.csv"),
            (Format::BurstGpt, "burstgpt.csv"),
            (Format::ShareGpt, "sharegpt.json"),
            (Format::VllmJson, "vllm_detailed.json"),
            (Format::SglangJsonl, "sglang.jsonl"),
        ][k];
        let base = std::fs::read(repo().join("traces/import").join(name)).unwrap();
        let data = mutate_with(&base, seed);
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join(name);
        std::fs::write(&input, &data).unwrap();
        let mut cfg = ImportConfig::new(format, &input, d.path().join("out.parquet"));
        cfg.skip_bad = seed % 2 == 0;
        if trace_import::import(&cfg).is_ok() {
            // Whatever was accepted is a readable trace.
            prop_assert!(trace_format::read_all(d.path().join("out.parquet")).is_ok());
        } else {
            prop_assert!(!d.path().join("out.parquet").exists());
        }
    }

    #[test]
    fn the_reader_takes_any_mutant_of_a_trace(seed in any::<u64>()) {
        let base = std::fs::read(repo().join("traces/sample.parquet")).unwrap();
        let data = mutate_with(&base, seed);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.parquet");
        std::fs::write(&p, &data).unwrap();
        if let Ok(r) = trace_format::TraceReader::open(&p) {
            for rec in r.records() {
                if rec.is_err() {
                    break;
                }
            }
        }
        // And as `trace report` reads it (polars).
        let _ = trace_analyze::load_run(&p, trace_analyze::LoadOptions::default());
    }
}

/// Deterministic edits from a seed (a few flips, inserts and cuts), for large fixtures where
/// proptest's own shrinking of a byte vector would be slow.
fn mutate_with(base: &[u8], seed: u64) -> Vec<u8> {
    let mut d = base.to_vec();
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..(1 + next() % 8) {
        let at = (next() as usize) % d.len().max(1);
        let byte = next() as u8;
        match next() % 3 {
            0 if at < d.len() => d[at] = byte,
            1 => d.insert(at.min(d.len()), byte),
            _ if at < d.len() => {
                d.remove(at);
            }
            _ => {}
        }
    }
    d
}
