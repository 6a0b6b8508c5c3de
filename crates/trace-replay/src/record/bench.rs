//! In-process tests of the recording proxy that need its run clock: the drain timeout at
//! shutdown, and the overhead benchmark (ignored; figures go to docs/benchmarks.md):
//!
//! `cargo test -p trace-replay --release --lib record::bench::record_overhead -- --ignored --nocapture`
//!
//! The benchmark drives the simulator with the real replay client twice, directly and through
//! the proxy, each against its own simulator with ground-truth logging, and joins both runs (and
//! the proxy's own capture) with the truth the way `trace selfcheck` does. Per-chunk transit
//! (client read minus server write) and TTFT error then compare the two paths without pairing
//! requests across runs. With three or more CPUs the simulator and the client get one each and
//! the proxy the rest, as they would be separate processes; with two, the proxy and the client
//! share one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// A recording into `out` on a free loopback port, in front of `upstream`.
fn loopback_config(out: &std::path::Path, upstream: &str) -> RecordConfig {
    let mut cfg = RecordConfig::new(out);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.upstream = Some(upstream.to_string());
    cfg
}

fn body(max_tokens: u32) -> String {
    format!(r#"{{"model":"m","prompt":"a b c","max_tokens":{max_tokens},"stream":true}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_cuts_a_stalled_stream_into_a_cancelled_row() {
    let s = sim(50, 10, "stall=1");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("stall.parquet");
    let mut cfg = loopback_config(&out, &s.url());
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
    let mut cfg = loopback_config(&out, &s.url());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_serving_threads_share_the_port_and_record_every_request() {
    let s = sim(5, 1, "");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("threads.parquet");
    let mut cfg = loopback_config(&out, &s.url());
    cfg.threads = 3;
    cfg.max_requests = Some(40);
    let (l, _stop, h) = start(cfg).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let url = format!("http://{}/v1/completions", l.addr);
        set.spawn(async move {
            // A client per request: a connection each, spread over the listeners by the kernel.
            let resp = reqwest::Client::new()
                .post(url)
                .header("x-request-id", format!("t-{i}"))
                .body(body(5))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap()
        });
    }
    while let Some(r) = set.join_next().await {
        assert!(String::from_utf8_lossy(&r.unwrap()).contains("[DONE]"));
    }
    let summary = tokio::time::timeout(Duration::from_secs(10), h)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((summary.rows, summary.errors), (40, 0));
    let (_, recs) = trace_format::read_all(&out).unwrap();
    let mut ids: Vec<_> = recs.iter().map(|r| r.request_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    assert!(recs.iter().all(|r| r.output_tokens == Some(5)), "{recs:?}");
}

#[tokio::test]
async fn a_port_in_use_is_refused_not_shared() {
    // Another recording on the port: with SO_REUSEPORT both would bind and split the traffic.
    let taken = trace_sim::listen_shared(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let mut cfg = RecordConfig::new(tempfile::tempdir().unwrap().path().join("x.parquet"));
    cfg.listen = taken.local_addr().unwrap();
    cfg.upstream = Some("http://127.0.0.1:9".into());
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        run(cfg, RecordStop::default(), |_| {}),
    )
    .await
    .expect("refused at once, not served")
    .unwrap_err();
    assert!(e.to_string().contains("cannot listen on 127.0.0.1:"), "{e}");
}

/// Which CPUs each party of the overhead benchmark runs on (empty: unpinned).
struct Cpus {
    sim: Vec<usize>,
    proxy: Vec<usize>,
    client: Vec<usize>,
}

impl Cpus {
    fn pick() -> Self {
        let c = crate::selfcheck::allowed_cpus();
        match c.len() {
            0 | 1 => Self {
                sim: vec![],
                proxy: vec![],
                client: vec![],
            },
            2 => Self {
                sim: vec![c[0]],
                proxy: vec![c[1]],
                client: vec![c[1]],
            },
            // Four or more: the proxy gets every CPU but the first and the last.
            n => Self {
                sim: vec![c[0]],
                proxy: c[1..n - 1].to_vec(),
                client: vec![c[n - 1]],
            },
        }
    }
}

/// Runs `f` on a new thread pinned to `cpus` (threads it spawns inherit the pinning).
fn on_cpus<T: Send + 'static>(
    cpus: &[usize],
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let cpus = cpus.to_vec();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if !cpus.is_empty() {
                crate::selfcheck::pin_current(&cpus);
            }
            f()
        })
        .unwrap()
}

/// A fixed-time simulator logging its ground truth to `truth`, on `cpus`.
fn truth_sim(
    cpus: &[usize],
    truth: std::path::PathBuf,
    ttft: Duration,
    itl: Duration,
) -> SimHandle {
    on_cpus(cpus, "bench-sim-start", move || {
        let mut cfg = SimConfig::fixed(ttft, itl);
        cfg.truth = Some(truth);
        trace_sim::spawn(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
    })
    .join()
    .unwrap()
}

/// One load the overhead benchmark offers.
#[derive(Debug, Clone, Copy)]
struct Load {
    name: &'static str,
    requests: u64,
    /// Poisson rate, or `inf` for all at once.
    rate: f64,
    max_concurrency: Option<usize>,
    tokens: u32,
}

/// One stream; 500 streams started at once (a burst of new connections); 500 streams in steady
/// state (Poisson 50/s of 10 s streams). All at 20 ms between tokens.
const LOADS: [Load; 3] = [
    Load {
        name: "1 stream",
        requests: 20,
        rate: f64::INFINITY,
        max_concurrency: Some(1),
        tokens: 64,
    },
    Load {
        name: "500 at once",
        requests: 500,
        rate: f64::INFINITY,
        max_concurrency: None,
        tokens: 64,
    },
    Load {
        name: "500 steady",
        requests: 1000,
        rate: 50.0,
        max_concurrency: None,
        tokens: 500,
    },
];

/// Replays `load` against `url` with the real client, on `cpus`, into `out`.
fn replay(cpus: &[usize], url: String, load: &Load, out: std::path::PathBuf) {
    let workers = cpus.len().max(1);
    let load = *load;
    on_cpus(cpus, "bench-client", move || {
        let cfg = crate::ReplayConfig {
            url: Some(url),
            workload: crate::workload::WorkloadSpec::Random(crate::workload::RandomSpec {
                input_len: 16,
                output_len: load.tokens,
                range_ratio: 1.0,
            }),
            rates: vec![load.rate],
            requests: Some(load.requests),
            max_concurrency: load.max_concurrency,
            output: Some(out),
            model: Some(SimConfig::default().model),
            ignore_eos: true,
            scrape_metrics: false,
            ..crate::ReplayConfig::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(crate::run(
            cfg,
            Arc::new(crate::dispatch::Counters::default()),
            crate::dispatch::Stop::default(),
        ))
        .unwrap()
    })
    .join()
    .unwrap();
}

/// Reads a trace file and joins it with a truth file.
fn joined(
    run: &std::path::Path,
    truth: &std::path::Path,
) -> (crate::selfcheck::Joined, Vec<TraceRecord>, i64) {
    let text = std::fs::read_to_string(truth).unwrap();
    let truth = crate::selfcheck::parse_truth(&text, truth).unwrap();
    let (meta, recs) = trace_format::read_all(run).unwrap();
    let start = meta.run_start_unix_ns().unwrap();
    (crate::selfcheck::join(start, &recs, &truth), recs, start)
}

/// p50 / p99 of values in ns, as µs.
fn p50_p99_us(v: &[f64]) -> (f64, f64) {
    let mut v: Vec<f64> = v.iter().map(|x| x / 1e3).collect();
    let p = |v: &mut [f64], q| crate::summary::percentile(v, q).unwrap_or(f64::NAN);
    (p(&mut v, 50.0), p(&mut v, 99.0))
}

/// Token-event arrival times of a row, absolute (UNIX ns), by request id.
fn token_events(recs: &[TraceRecord], start: i64) -> HashMap<&str, Vec<i64>> {
    recs.iter()
        .map(|r| {
            let ev = r
                .chunk_ns
                .iter()
                .zip(&r.chunk_tokens)
                .filter(|(_, k)| **k > 0)
                .map(|(t, _)| start + t)
                .collect();
            (r.request_id.as_str(), ev)
        })
        .collect()
}

#[test]
#[ignore = "benchmark: run in release with --nocapture, figures go to docs/benchmarks.md"]
fn record_overhead() {
    let cpus = Cpus::pick();
    let (ttft, itl) = (Duration::from_millis(20), Duration::from_millis(20));
    let proxy_threads: usize = std::env::var("TRACE_BENCH_PROXY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cpus.proxy.len().max(1));
    println!(
        "cpus: sim {:?}, proxy {:?} ({proxy_threads} serving threads), client {:?}",
        cpus.sim, cpus.proxy, cpus.client
    );
    println!(
        "| load | token events | transit direct p50 / p99 (µs) | transit proxied p50 / p99 (µs) | added p50 / p99 (µs) | proxy to client, paired p50 / p99 (µs) | recorded time error p50 / p99 (µs) | TTFT added p50 / p99 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut guard = Some(tempfile::tempdir().unwrap());
    let dir = guard.as_ref().unwrap().path().to_path_buf();
    // TRACE_BENCH_KEEP=1 keeps the runs and truth files for a closer look.
    if std::env::var_os("TRACE_BENCH_KEEP").is_some() {
        let _ = guard.take().map(tempfile::TempDir::keep);
        println!("files kept in {}", dir.display());
    }
    for load in &LOADS {
        let p = |name: &str| dir.join(format!("{}-{name}", load.name.replace(' ', "-")));
        // Direct: the client against its own simulator.
        let sim_a = truth_sim(&cpus.sim, p("truth-direct.jsonl"), ttft, itl);
        replay(&cpus.client, sim_a.url(), load, p("direct.parquet"));
        sim_a.shutdown().unwrap();

        // Proxied: the same client through the proxy to a second simulator.
        let sim_b = truth_sim(&cpus.sim, p("truth-proxied.jsonl"), ttft, itl);
        let mut cfg = loopback_config(&p("capture.parquet"), &sim_b.url());
        cfg.threads = proxy_threads;
        let stop = RecordStop::default();
        let (ltx, lrx) = std::sync::mpsc::channel();
        let s2 = stop.clone();
        let proxy = on_cpus(&cpus.proxy, "bench-proxy", move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(run(cfg, s2, move |l| {
                    let _ = ltx.send(l.clone());
                }))
                .unwrap()
        });
        let l = lrx.recv().unwrap();
        replay(
            &cpus.client,
            format!("http://{}", l.addr),
            load,
            p("proxied.parquet"),
        );
        stop.stop();
        proxy.join().unwrap();
        sim_b.shutdown().unwrap();

        let (jd, _, _) = joined(&p("direct.parquet"), &p("truth-direct.jsonl"));
        let (jp, prox, ps) = joined(&p("proxied.parquet"), &p("truth-proxied.jsonl"));
        let (jc, capt, cs) = joined(&p("capture.parquet"), &p("truth-proxied.jsonl"));
        assert_eq!((jd.failed, jp.failed, jc.failed), (0, 0, 0));
        // Paired per event: when the client read it minus when the proxy read it upstream.
        let at_proxy = token_events(&capt, cs);
        let mut fwd = Vec::new();
        for (id, ev) in token_events(&prox, ps) {
            for (c, p) in ev.iter().zip(&at_proxy[id]) {
                fwd.push((c - p) as f64);
            }
        }
        let (d50, d99) = p50_p99_us(&jd.arrival_err_ns);
        let (p50, p99) = p50_p99_us(&jp.arrival_err_ns);
        let (f50, f99) = p50_p99_us(&fwd);
        let (r50, r99) = p50_p99_us(&jc.arrival_err_ns);
        let (td50, td99) = p50_p99_us(&jd.ttft_err_ns);
        let (tp50, tp99) = p50_p99_us(&jp.ttft_err_ns);
        println!(
            "| {} | {} | {d50:.0} / {d99:.0} | {p50:.0} / {p99:.0} | {:.0} / {:.0} | {f50:.0} / {f99:.0} | {r50:.0} / {r99:.0} | {:.2} / {:.2} |",
            load.name,
            jp.arrival_err_ns.len(),
            p50 - d50,
            p99 - d99,
            (tp50 - td50) / 1e3,
            (tp99 - td99) / 1e3,
        );
    }
    drop(guard);
}
