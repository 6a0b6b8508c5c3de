//! In-process tests of the recording proxy that need its run clock: the drain timeout at
//! shutdown, and the overhead benchmark (ignored; figures go to docs/benchmarks.md):
//!
//! `cargo test -p trace-replay --release --lib record::bench::record_overhead -- --ignored --nocapture`

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use trace_client::offset_ns;
use trace_format::TraceRecord;
use trace_sim::{SimConfig, SimHandle};

use super::{Listening, RecordConfig, RecordStop, run};

fn sim(ttft_ms: u64, itl_ms: u64, faults: &str) -> SimHandle {
    let mut cfg = SimConfig::fixed(
        Duration::from_millis(ttft_ms),
        Duration::from_millis(itl_ms),
    );
    if !faults.is_empty() {
        cfg.faults = faults.parse().unwrap();
    }
    trace_sim::spawn(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
}

/// Starts a recording in the background; returns its address, run start, stop and join handle.
async fn start(
    cfg: RecordConfig,
) -> (
    Listening,
    RecordStop,
    tokio::task::JoinHandle<super::Summary>,
) {
    let stop = RecordStop::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s = stop.clone();
    let h = tokio::spawn(async move {
        run(cfg, s, move |l| {
            let _ = tx.send(l.clone());
        })
        .await
        .unwrap()
    });
    (rx.await.unwrap(), stop, h)
}

fn body(max_tokens: u32) -> String {
    format!(r#"{{"model":"m","prompt":"a b c","max_tokens":{max_tokens},"stream":true}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_cuts_a_stalled_stream_into_a_cancelled_row() {
    let s = sim(50, 10, "stall=1");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("stall.parquet");
    let mut cfg = RecordConfig::new(&out);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.upstream = Some(s.url());
    cfg.drain_timeout = Duration::from_millis(200);
    let (l, stop, h) = start(cfg).await;
    let client = reqwest::Client::new();
    let mut resp = client
        .post(format!("http://{}/v1/completions", l.addr))
        .body(body(20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.chunk().await.unwrap().is_some());
    // The stream stalls halfway; stopping must still end the run within the drain timeout.
    stop.stop();
    let summary = tokio::time::timeout(Duration::from_secs(10), h)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((summary.rows, summary.errors), (1, 1));
    let (_, recs) = trace_format::read_all(&out).unwrap();
    assert_eq!(recs[0].error_kind.as_deref(), Some("cancelled"), "{recs:?}");
    assert!(!recs[0].chunk_ns.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_a_timeout_row_and_a_cut_stream() {
    let s = sim(50, 10, "stall=1");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("idle.parquet");
    let mut cfg = RecordConfig::new(&out);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.upstream = Some(s.url());
    cfg.idle_timeout = Duration::from_millis(300);
    cfg.max_requests = Some(1);
    let (l, _stop, h) = start(cfg).await;
    let mut resp = reqwest::Client::new()
        .post(format!("http://{}/v1/completions", l.addr))
        .body(body(20))
        .send()
        .await
        .unwrap();
    let mut cut = false;
    loop {
        match resp.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the client sees the stream cut, not a clean end");
    let summary = tokio::time::timeout(Duration::from_secs(10), h)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.rows, 1);
    let (_, recs) = trace_format::read_all(&out).unwrap();
    assert_eq!(recs[0].error_kind.as_deref(), Some("timeout"), "{recs:?}");
    assert_eq!(recs[0].status, Some(200));
}

/// The replay summary's percentile (linear interpolation); NaN when empty, for printing.
fn pct(v: &mut [f64], p: f64) -> f64 {
    crate::summary::percentile(v, p).unwrap_or(f64::NAN)
}

/// One client request: (request id, send offset, arrival offset of each non-[DONE] event).
type Seen = (String, i64, Vec<i64>);

async fn one(client: reqwest::Client, url: String, id: String, run_start: Instant) -> Seen {
    let sent = Instant::now();
    let mut resp = client
        .post(url)
        .header("x-request-id", id.as_str())
        .header("content-type", "application/json")
        .body(body(32))
        .send()
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut prev_nl = false;
    let mut done = false;
    while let Some(b) = resp.chunk().await.unwrap() {
        let t = offset_ns(run_start, Instant::now());
        for &c in b.iter() {
            if c == b'\n' && prev_nl {
                events.push(t);
            }
            prev_nl = c == b'\n';
        }
        if b.windows(6).any(|w| w == b"[DONE]") {
            done = true;
        }
    }
    if done {
        events.pop();
    }
    (id, offset_ns(run_start, sent), events)
}

async fn wave(url: &str, n: usize, concurrent: bool, run_start: Instant, tag: &str) -> Vec<Seen> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap();
    let url = format!("{url}/v1/completions");
    if concurrent {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (c, u, o) = (client.clone(), url.clone(), out.clone());
            let id = format!("{tag}-{i}");
            set.spawn(async move {
                let s = one(c, u, id, run_start).await;
                o.lock().unwrap().push(s);
            });
        }
        while set.join_next().await.is_some() {}
        Arc::try_unwrap(out).unwrap().into_inner().unwrap()
    } else {
        let mut v = Vec::new();
        for i in 0..n {
            v.push(one(client.clone(), url.clone(), format!("{tag}-{i}"), run_start).await);
        }
        v
    }
}

fn ttfts_ms(seen: &[Seen]) -> Vec<f64> {
    seen.iter()
        .filter_map(|(_, sent, ev)| ev.first().map(|f| (f - sent) as f64 / 1e6))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run in release with --nocapture, figures go to docs/benchmarks.md"]
async fn record_overhead() {
    let s = sim(20, 20, "");
    let d = tempfile::tempdir().unwrap();
    println!(
        "| streams | chunks | added per chunk p50 / p99 / max (µs) | TTFT direct p50 / p99 (ms) | TTFT proxied p50 / p99 (ms) |"
    );
    println!("|---|---|---|---|---|");
    for (streams, requests, concurrent) in [(1usize, 20usize, false), (500, 500, true)] {
        let out = d.path().join(format!("bench-{streams}.parquet"));
        let mut cfg = RecordConfig::new(&out);
        cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        cfg.upstream = Some(s.url());
        let (l, stop, h) = start(cfg).await;
        let direct = wave(&s.url(), requests, concurrent, l.run_start, "d").await;
        let proxied = wave(
            &format!("http://{}", l.addr),
            requests,
            concurrent,
            l.run_start,
            "p",
        )
        .await;
        stop.stop();
        h.await.unwrap();
        let (_, recs) = trace_format::read_all(&out).unwrap();
        let by_id: std::collections::HashMap<&str, &TraceRecord> =
            recs.iter().map(|r| (r.request_id.as_str(), r)).collect();
        // Paired: when the client read each event minus when the proxy read it from upstream.
        let mut added_us = Vec::new();
        for (id, _, ev) in &proxied {
            let r = by_id[id.as_str()];
            for (c, p) in ev.iter().zip(&r.chunk_ns) {
                added_us.push((c - p) as f64 / 1e3);
            }
        }
        let n = added_us.len();
        let (a50, a99) = (pct(&mut added_us, 50.0), pct(&mut added_us, 99.0));
        let amax = added_us.last().copied().unwrap_or(f64::NAN);
        let (mut td, mut tp) = (ttfts_ms(&direct), ttfts_ms(&proxied));
        println!(
            "| {streams} | {n} | {a50:.0} / {a99:.0} / {amax:.0} | {:.2} / {:.2} | {:.2} / {:.2} |",
            pct(&mut td, 50.0),
            pct(&mut td, 99.0),
            pct(&mut tp, 50.0),
            pct(&mut tp, 99.0)
        );
    }
}
