//! The simulator's prefix cache seen end to end (issues 17 and 18): the same prompts sent twice
//! to one engine come back with `cached_tokens` and a shorter TTFT, the report's hit rate and
//! the server's `vllm:prefix_cache_*` counters agree with the rows, and `--no-prefix-cache`
//! (here `prefix_cache_tokens: None`) turns all of it off.

use trace_format::{TraceReader, read_all};

use crate::util::*;

fn replay(url: &str, out: &std::path::Path) {
    let r = run(&[
        "replay",
        "--url",
        url,
        "--model",
        "m",
        "--endpoint",
        "completions",
        "-n",
        "6",
        "--rate",
        "inf",
        "--seed",
        "5",
        "--input-len",
        "512",
        "--output-len",
        "4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
}

fn hit_rate(path: &std::path::Path) -> Option<f64> {
    let o = run(&["report", path.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["stages"][0]["cache_hit_rate"].as_f64()
}

#[test]
fn a_repeated_prompt_is_served_from_the_cache_and_prefills_less() {
    let mut cfg = trace_sim::SimConfig::from_profile(trace_sim::DEFAULT_PROFILE).unwrap();
    cfg.model = "m".into();
    let sim = trace_sim::spawn(cfg, ([127, 0, 0, 1], 0).into()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let (cold, warm) = (d.path().join("cold.parquet"), d.path().join("warm.parquet"));
    replay(&sim.url(), &cold);
    replay(&sim.url(), &warm);
    let (_, cold_rows) = read_all(&cold).unwrap();
    let (_, warm_rows) = read_all(&warm).unwrap();
    assert!(
        cold_rows.iter().all(|r| r.cached_tokens == Some(0)),
        "{cold_rows:?}"
    );
    // 32 blocks of 16 cached, less the one token every prompt recomputes.
    assert!(
        warm_rows.iter().all(|r| r.cached_tokens == Some(511)),
        "{warm_rows:?}"
    );
    assert_eq!(hit_rate(&cold), Some(0.0));
    let warm_rate = hit_rate(&warm).unwrap();
    assert!((warm_rate - 511.0 / 512.0).abs() < 1e-9, "{warm_rate}");
    let ttft = |rows: &[trace_format::TraceRecord]| {
        let mut v: Vec<i64> = rows.iter().filter_map(|r| r.metrics().ttft_ns).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    assert!(
        ttft(&warm_rows) < ttft(&cold_rows),
        "a cached prefill is shorter"
    );
    // The server's own counters, scraped into the file, saw the same hits.
    let meta = TraceReader::open(&warm).unwrap().meta().clone();
    let last = meta.server_samples().into_iter().last().unwrap();
    assert!(last.prefix_hits.unwrap() >= 6.0 * 511.0, "{last:?}");
    assert!(last.prefix_queries.unwrap() >= 12.0 * 512.0, "{last:?}");
}

#[test]
fn without_the_cache_nothing_is_reported_cached() {
    let mut cfg = trace_sim::SimConfig::fixed(
        std::time::Duration::from_millis(2),
        std::time::Duration::from_millis(1),
    );
    cfg.model = "m".into();
    cfg.prefix_cache_tokens = None;
    let sim = trace_sim::spawn(cfg, ([127, 0, 0, 1], 0).into()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("off.parquet");
    replay(&sim.url(), &out);
    replay(&sim.url(), &out.with_extension("2.parquet"));
    let (_, rows) = read_all(out.with_extension("2.parquet")).unwrap();
    assert!(rows.iter().all(|r| r.cached_tokens.is_none()), "{rows:?}");
    assert_eq!(hit_rate(&out), None);
}
