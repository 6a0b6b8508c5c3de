//! Sessions end to end (issue 18), through the real binary against the simulator: a session's
//! turns are never sent before their parent ended plus the think time (checked against the
//! simulator's own arrival log), live history puts the streamed reply in the next prompt, a
//! long shared prefix comes back cached with a shorter TTFT, a Mooncake-style multi-turn file
//! goes import → replay → report with hit rates, and bad session links are named.

use std::collections::HashMap;
use std::path::Path;

use trace_format::{TraceRecord, read_all};

use crate::util::*;

fn sim(truth: Option<&Path>) -> trace_sim::SimHandle {
    let mut cfg = trace_sim::SimConfig::from_profile(trace_sim::DEFAULT_PROFILE).unwrap();
    cfg.model = "m".into();
    cfg.truth = truth.map(Path::to_path_buf);
    trace_sim::spawn(cfg, ([127, 0, 0, 1], 0).into()).unwrap()
}

fn ok(args: &[&str]) -> std::process::Output {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
}

fn by_id(rows: &[TraceRecord]) -> HashMap<&str, &TraceRecord> {
    rows.iter().map(|r| (r.request_id.as_str(), r)).collect()
}

fn report_json(path: &Path) -> serde_json::Value {
    let o = ok(&["report", path.to_str().unwrap(), "--format", "json"]);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn turns_wait_for_their_parent_and_think_time_as_the_server_saw_it() {
    let d = tempfile::tempdir().unwrap();
    let (w, out, truth) = (
        d.path().join("w.parquet"),
        d.path().join("r.parquet"),
        d.path().join("truth.jsonl"),
    );
    ok(&[
        "synth",
        "--rate",
        "4",
        "-n",
        "12",
        "--turns",
        "3",
        "--think-time",
        "exp:200ms",
        "--input-dist",
        "fixed:40",
        "--output-dist",
        "fixed:8",
        "--seed",
        "3",
        "-o",
        w.to_str().unwrap(),
    ]);
    let s = sim(Some(&truth));
    ok(&[
        "replay",
        w.to_str().unwrap(),
        "--url",
        &s.url(),
        "--model",
        "m",
        "-o",
        out.to_str().unwrap(),
    ]);
    drop(s);
    let (meta, rows) = read_all(&out).unwrap();
    assert_eq!(rows.len(), 36);
    assert!(rows.iter().all(|r| r.error_kind.is_none()), "{rows:?}");
    let start = meta
        .get(trace_format::meta::RUN_START_UNIX_NS)
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let truth = trace_sim::read_truth(&truth).unwrap();
    let ids = by_id(&rows);
    let mut children = 0;
    for r in &rows {
        assert!(r.session_id.is_some() && r.turn.is_some());
        let Some(p) = r.parent_id.as_deref() else {
            assert_eq!(r.turn, Some(0));
            continue;
        };
        children += 1;
        let parent = ids[p];
        let think = r.think_ns.unwrap();
        assert!(think >= 0);
        // The schedule says closed-loop: due when the parent ended plus the think time.
        assert_eq!(r.scheduled_ns, parent.end_ns.unwrap() + think, "{r:?}");
        assert!(r.sent_ns.unwrap() >= r.scheduled_ns);
        // And the server saw it so: this turn arrived after the parent's last token left it,
        // plus the think time (one clock, this host's).
        let (tp, tc) = (&truth[p], &truth[r.request_id.as_str()]);
        let parent_last = *tp.event_unix_ns.last().unwrap();
        assert!(
            tc.arrival_unix_ns >= parent_last + think,
            "{}: arrived {} < parent's last event {} + think {think}",
            r.request_id,
            tc.arrival_unix_ns - start,
            parent_last - start
        );
        assert_eq!(r.turn, parent.turn.map(|t| t + 1));
    }
    assert_eq!(children, 24);
    let rep = report_json(&out);
    let ss = &rep["stages"][0]["sessions"];
    assert_eq!(ss["sessions"], 12);
    assert_eq!(ss["completed"], 12);
    assert_eq!(ss["first_turn"]["turns"], 12);
    assert_eq!(ss["later_turns"]["turns"], 24);
}

#[test]
fn live_history_sends_the_streamed_reply_and_the_prefix_is_cached() {
    let d = tempfile::tempdir().unwrap();
    let (w, out) = (d.path().join("w.parquet"), d.path().join("live.parquet"));
    // One group per session: every first turn is cold, every later turn resends a long history.
    ok(&[
        "synth",
        "--rate",
        "2",
        "-n",
        "6",
        "--turns",
        "2",
        "--think-time",
        "50ms",
        "--prefix-len",
        "1500",
        "--prefix-groups",
        "6",
        "--input-dist",
        "fixed:20",
        "--output-dist",
        "fixed:8",
        "-o",
        w.to_str().unwrap(),
    ]);
    let s = sim(None);
    ok(&[
        "replay",
        w.to_str().unwrap(),
        "--url",
        &s.url(),
        "--model",
        "m",
        "--endpoint",
        "completions",
        "--history",
        "live",
        "--store",
        "prompts,outputs",
        "-o",
        out.to_str().unwrap(),
    ]);
    let (_, rows) = read_all(&out).unwrap();
    let ids = by_id(&rows);
    let mut ttft = (Vec::new(), Vec::new());
    for r in &rows {
        let t = r.metrics().ttft_ns.unwrap();
        let Some(p) = r.parent_id.as_deref() else {
            ttft.0.push(t);
            continue;
        };
        ttft.1.push(t);
        let parent = ids[p];
        let (said, reply) = (
            r.prompt.as_deref().unwrap(),
            parent.output_text.as_deref().unwrap(),
        );
        assert!(!reply.trim().is_empty());
        // The history: the parent's prompt, then the reply the engine streamed, then new input.
        assert!(
            said.starts_with(parent.prompt.as_deref().unwrap()),
            "{said}"
        );
        assert!(said.contains(reply.trim()), "{said} lacks {reply}");
        // The server counts the history and serves the parent's prompt from its cache.
        let (pp, po) = (parent.prompt_tokens.unwrap(), parent.output_tokens.unwrap());
        assert!(r.prompt_tokens.unwrap() >= pp + po, "{r:?}");
        assert!(
            r.cached_tokens.unwrap() >= pp - 16,
            "{r:?} after {parent:?}"
        );
    }
    ttft.0.sort_unstable();
    ttft.1.sort_unstable();
    assert!(
        ttft.1[ttft.1.len() / 2] < ttft.0[ttft.0.len() / 2],
        "later turns prefill less: {ttft:?}"
    );
    let rep = report_json(&out);
    let ss = &rep["stages"][0]["sessions"];
    let (first, later) = (
        ss["first_turn"]["cache_hit_rate"].as_f64().unwrap(),
        ss["later_turns"]["cache_hit_rate"].as_f64().unwrap(),
    );
    assert!(first < 0.1 && later > 0.9, "{first} {later}");
    assert!(rep["stages"][0]["server_cache_hit_rate"].as_f64().is_some());
}

#[test]
fn a_mooncake_multi_turn_file_goes_from_import_to_a_report_with_hit_rates() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("conv.jsonl");
    // Two sessions of three turns; each turn's hash_ids extend the previous turn's (512-token
    // blocks), as in Mooncake's conversation trace. `delay` is the think time in ms.
    let mut lines: Vec<(u64, String)> = Vec::new();
    for (s, t0) in [("a", 0), ("b", 300)] {
        let mut blocks: Vec<u64> = Vec::new();
        for turn in 0..3u64 {
            let base = if s == "a" { 100 } else { 200 };
            blocks.extend([base + 2 * turn, base + 2 * turn + 1]);
            let t = t0 + 400 * turn;
            lines.push((
                t,
                format!(
                    "{{\"timestamp\": {t}, \"input_length\": {}, \"output_length\": 4, \
                     \"hash_ids\": {blocks:?}, \"session_id\": \"{s}\", \"delay\": {}}}\n",
                    blocks.len() * 512,
                    if turn == 0 { 0 } else { 100 }
                ),
            ));
        }
    }
    // Sorted by time, as the format is.
    lines.sort();
    let text: String = lines.into_iter().map(|(_, l)| l).collect();
    std::fs::write(&src, text).unwrap();
    let (w, out) = (d.path().join("w.parquet"), d.path().join("r.parquet"));
    ok(&[
        "import",
        "mooncake",
        src.to_str().unwrap(),
        "-o",
        w.to_str().unwrap(),
    ]);
    let s = sim(None);
    ok(&[
        "replay",
        w.to_str().unwrap(),
        "--url",
        &s.url(),
        "--model",
        "m",
        "--endpoint",
        "completions",
        "-o",
        out.to_str().unwrap(),
    ]);
    let (_, rows) = read_all(&out).unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows.iter().filter(|r| r.turn != Some(0)) {
        assert_eq!(r.think_ns, Some(100_000_000), "{r:?}");
        // The previous turn's blocks are cached: all but the two new ones.
        assert!(
            r.cached_tokens.unwrap() >= r.prompt_tokens.unwrap() - 1024 - 16,
            "{r:?}"
        );
    }
    let rep = report_json(&out);
    let st = &rep["stages"][0];
    assert_eq!(st["sessions"]["sessions"], 2);
    assert!(
        st["sessions"]["later_turns"]["cache_hit_rate"]
            .as_f64()
            .unwrap()
            > 0.4
    );
    assert!(st["cache_hit_rate"].as_f64().unwrap() > 0.3);
    // The text report says it too.
    let text = stdout(&ok(&["report", out.to_str().unwrap()]));
    assert!(text.contains("Sessions (completed/failed):") && text.contains("later turns"));
}

#[test]
fn bad_session_links_are_named_or_skipped_with_a_count() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("b.jsonl");
    std::fs::write(
        &src,
        "{\"chat_id\": 1, \"parent_chat_id\": -1, \"timestamp\": 0.0, \"input_length\": 20, \"output_length\": 2}\n\
         {\"chat_id\": 2, \"parent_chat_id\": 1, \"timestamp\": 1.0, \"input_length\": 30, \"output_length\": 2}\n\
         {\"chat_id\": 3, \"parent_chat_id\": 99, \"timestamp\": 2.0, \"input_length\": 30, \"output_length\": 2}\n",
    )
    .unwrap();
    let w = d.path().join("w.parquet");
    ok(&[
        "import",
        "bailian",
        src.to_str().unwrap(),
        "-o",
        w.to_str().unwrap(),
    ]);
    let s = sim(None);
    let out = d.path().join("r.parquet");
    let o = run(&[
        "replay",
        w.to_str().unwrap(),
        "--url",
        &s.url(),
        "--model",
        "m",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("request_id '3'") && e.contains("parent_id '99'"),
        "{e}"
    );
    assert!(e.contains("w.parquet"), "{e}");
    assert!(!out.exists());
    let o = ok(&[
        "replay",
        w.to_str().unwrap(),
        "--url",
        &s.url(),
        "--model",
        "m",
        "--skip-bad",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("1 row(s) of the workload were left out"),
        "{}",
        stderr(&o)
    );
    let (_, rows) = read_all(&out).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().filter(|r| r.parent_id.is_some()).count(), 1);
}

/// What pairs two replays of one workload: id, parent, turn, prompt length, prompt hash.
type Key = (
    String,
    Option<String>,
    Option<i32>,
    Option<i32>,
    Option<u64>,
);

#[test]
fn sharegpt_conversations_replay_as_sessions_alike_from_the_file_and_its_import() {
    let d = tempfile::tempdir().unwrap();
    let sample = repo().join("traces/sharegpt_sample.json");
    let imported = d.path().join("sharegpt.parquet");
    ok(&[
        "import",
        "sharegpt",
        sample.to_str().unwrap(),
        "-o",
        imported.to_str().unwrap(),
    ]);
    let s = sim(None);
    let url = s.url();
    let replay = |workload: &str, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "replay",
            workload,
            "--url",
            &url,
            "--model",
            "m",
            "--rate",
            "20",
            "-n",
            "6",
            "--seed",
            "1",
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = ok(&args);
        assert!(stderr(&o).contains("replayed as 6 session(s)") || extra.contains(&"first"));
        read_all(out).unwrap().1
    };
    let direct = format!("sharegpt={}", sample.display());
    let (a, b) = (d.path().join("a.parquet"), d.path().join("b.parquet"));
    let key = |rows: Vec<TraceRecord>| {
        let mut v: Vec<Key> = rows
            .into_iter()
            .map(|r| {
                (
                    r.request_id,
                    r.parent_id,
                    r.turn,
                    r.prompt_tokens,
                    r.prompt_hash,
                )
            })
            .collect();
        v.sort();
        v
    };
    let (ra, rb) = (
        key(replay(&direct, &a, &[])),
        key(replay(imported.to_str().unwrap(), &b, &[])),
    );
    assert_eq!(ra, rb, "one reader, one workload");
    assert!(ra.len() > 6, "later turns were sent: {}", ra.len());
    // A later turn resends the conversation: the server counts more than the first turn's.
    let rows = read_all(&a).unwrap().1;
    let ids = by_id(&rows);
    for r in rows.iter().filter(|r| r.parent_id.is_some()) {
        let p = ids[r.parent_id.as_deref().unwrap()];
        assert!(r.prompt_tokens.unwrap() > p.prompt_tokens.unwrap() + p.output_tokens.unwrap());
    }
    let c = d.path().join("c.parquet");
    let first = replay(&direct, &c, &["--sharegpt-turns", "first"]);
    assert_eq!(first.len(), 6);
    assert!(
        first
            .iter()
            .all(|r| r.session_id.is_none() && r.parent_id.is_none())
    );
}

#[test]
fn a_coding_agent_trace_replays_its_calls_as_chains_with_their_tool_times() {
    let d = tempfile::tempdir().unwrap();
    let src = repo().join("traces/import/copilot_agent.jsonl");
    let (w, out) = (d.path().join("agent.parquet"), d.path().join("r.parquet"));
    ok(&[
        "import",
        "copilot-agent",
        src.to_str().unwrap(),
        "-o",
        w.to_str().unwrap(),
    ]);
    let s = sim(None);
    // A hundredth of the recorded time: arrivals and tool/user think times alike.
    ok(&[
        "replay",
        w.to_str().unwrap(),
        "--url",
        &s.url(),
        "--model",
        "m",
        "--endpoint",
        "completions",
        "--time-scale",
        "0.01",
        "-o",
        out.to_str().unwrap(),
    ]);
    let (_, rows) = read_all(&out).unwrap();
    assert_eq!(rows.len(), 5);
    let ids = by_id(&rows);
    let a2 = ids["m-a2"];
    assert_eq!(
        a2.think_ns,
        Some(25_000_000),
        "2.5 s of tools, scaled by 0.01"
    );
    assert_eq!(a2.scheduled_ns, ids["m-a1"].end_ns.unwrap() + 25_000_000);
    // Each call resends the one before it: the simulator serves that prefix from its cache.
    assert!(
        a2.cached_tokens.unwrap() >= ids["m-a1"].prompt_tokens.unwrap() - 16,
        "{a2:?}"
    );
    let rep = report_json(&out);
    assert_eq!(rep["stages"][0]["sessions"]["sessions"], 2);
}
