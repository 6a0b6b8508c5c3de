//! In-process tests of the recording proxy against the simulator: the drain timeout at
//! shutdown, a silent upstream, several serving threads on one port, and a port in use. The
//! end-to-end tests of `trace record` (the real binary) are in the root tests/record.rs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trace_record::{Listening, RecordConfig, Summary, run};
use trace_sim::{SimConfig, SimHandle};

fn sim(ttft_ms: u64, itl_ms: u64, faults: &str) -> SimHandle {
    let mut cfg = SimConfig::fixed(
        Duration::from_millis(ttft_ms),
        Duration::from_millis(itl_ms),
    );
    cfg.model = "m".into();
    if !faults.is_empty() {
        cfg.faults = faults.parse().unwrap();
    }
    trace_sim::spawn(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
}

/// Starts a recording in the background; returns its address, stop token and join handle.
async fn start(
    cfg: RecordConfig,
) -> (
    Listening,
    CancellationToken,
    tokio::task::JoinHandle<Summary>,
) {
    let stop = CancellationToken::new();
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
    let mut cfg = RecordConfig::new(upstream, out);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
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
    let client = http();
    let mut resp = client
        .post(format!("http://{}/v1/completions", l.addr))
        .body(body(20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.chunk().await.unwrap().is_some());
    // The stream stalls halfway; stopping must still end the run within the drain timeout.
    stop.cancel();
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
    let mut resp = http()
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
            let resp = http()
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
    let taken = trace_sys::listen_shared(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RecordConfig::new("http://127.0.0.1:9", dir.path().join("x.parquet"));
    cfg.listen = taken.local_addr().unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        run(cfg, CancellationToken::new(), |_| {}),
    )
    .await
    .expect("refused at once, not served")
    .unwrap_err();
    assert!(e.to_string().contains("cannot listen on 127.0.0.1:"), "{e}");
}

/// A plain client, built as the tool builds its own (reqwest has no TLS provider of its own).
fn http() -> reqwest::Client {
    trace_client::Transport::default()
        .builder()
        .unwrap()
        .build()
        .unwrap()
}
