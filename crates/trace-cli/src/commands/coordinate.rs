//! `trace coordinate`: the start barrier of a run sent from several hosts. Shards
//! (`trace replay --shard k/n --coordinator URL`) read its clock (`GET /time`, for their
//! offsets) and register (`POST /register`, answered when all n have): once the last one has,
//! every shard is told one start time a little in the future (`--lead`), on this clock. A shard
//! that never registers fails the barrier for everybody after `--timeout`, the answer naming
//! it; nobody hangs. The coordinator exits once every shard has its answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Arguments of `trace coordinate`.
#[derive(Debug, Args)]
pub struct CoordinateArgs {
    /// Address to listen on (port 0: any free one; the URL is printed).
    #[arg(long, default_value = "0.0.0.0:9777")]
    pub listen: SocketAddr,
    /// Shards to wait for.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: u32,
    /// How long to wait for every shard to register.
    #[arg(long, default_value = "5m", value_parser = crate::parse::duration)]
    pub timeout: Duration,
    /// How far after the last registration the common start is: time for every shard to hear.
    #[arg(long, default_value = "2s", value_parser = crate::parse::duration)]
    pub lead: Duration,
}

struct Barrier {
    n: u32,
    lead: Duration,
    registered: Mutex<BTreeMap<u32, String>>,
    start: Mutex<Option<i64>>,
    released: Notify,
    answered: Mutex<u32>,
    done: Notify,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

async fn time() -> Json<Value> {
    Json(json!({ "t_ns": now_ns() }))
}

async fn register(
    State(b): State<Arc<Barrier>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let index = body
        .get("index")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let count = body.get("count").and_then(Value::as_u64).unwrap_or(0);
    let host = body
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    if count != u64::from(b.n) || index >= u64::from(b.n) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!(
                "this coordinator waits for {} shards; shard {index}/{count} is not one of them",
                b.n
            )})),
        );
    }
    let all = {
        let mut r = b.registered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(other) = r.get(&(index as u32))
            && *other != host
        {
            return (
                StatusCode::CONFLICT,
                Json(json!({ "error": format!(
                    "shard {index}/{} registered twice (hosts {other} and {host})", b.n
                )})),
            );
        }
        r.insert(index as u32, host.clone());
        eprintln!("coordinate: shard {index}/{} registered from {host}", b.n);
        r.len() as u32 == b.n
    };
    if all {
        let mut s = b.start.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_none() {
            *s = Some(now_ns() + b.lead.as_nanos() as i64);
        }
        b.released.notify_waiters();
    }
    loop {
        let released = b.released.notified();
        if let Some(start) = *b.start.lock().unwrap_or_else(|e| e.into_inner()) {
            let mut a = b.answered.lock().unwrap_or_else(|e| e.into_inner());
            *a += 1;
            if *a >= b.n {
                b.done.notify_waiters();
            }
            return (
                StatusCode::OK,
                Json(json!({ "start_unix_ns": start, "shards": b.n })),
            );
        }
        released.await;
        if b.start.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            // Woken by the timeout.
            let missing = missing(&b);
            return (
                StatusCode::GATEWAY_TIMEOUT,
                Json(json!({ "error": format!(
                    "shard(s) {missing} never registered: nobody starts"
                )})),
            );
        }
    }
}

fn missing(b: &Barrier) -> String {
    let r = b.registered.lock().unwrap_or_else(|e| e.into_inner());
    (0..b.n)
        .filter(|k| !r.contains_key(k))
        .map(|k| format!("{k}/{}", b.n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Serves the barrier on `listener` for `n` shards until every one has its answer (true) or
/// `timeout` passes (false, after telling the waiting ones who is missing).
pub async fn serve(
    listener: tokio::net::TcpListener,
    n: u32,
    timeout: Duration,
    lead: Duration,
) -> bool {
    let b = Arc::new(Barrier {
        n,
        lead,
        registered: Mutex::default(),
        start: Mutex::default(),
        released: Notify::new(),
        answered: Mutex::new(0),
        done: Notify::new(),
    });
    let app = Router::new()
        .route("/time", get(time))
        .route("/register", post(register))
        .with_state(b.clone());
    let done = b.done.notified();
    tokio::pin!(done);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let ok = tokio::select! {
        () = &mut done => true,
        () = tokio::time::sleep(timeout) => false,
    };
    if !ok {
        // Wake every waiting shard with the failure.
        b.released.notify_waiters();
        tokio::time::sleep(Duration::from_millis(300)).await;
        eprintln!(
            "trace coordinate: shard(s) {} never registered within {}",
            missing(&b),
            humantime::format_duration(timeout)
        );
    }
    // Let the last answers leave before the server stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.abort();
    ok
}

/// Runs `trace coordinate`.
pub fn run(args: CoordinateArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "trace coordinate: waiting for {} shard(s) on http://{addr} (timeout {})",
            args.shards,
            humantime::format_duration(args.timeout)
        );
        if serve(listener, args.shards, args.timeout, args.lead).await {
            eprintln!("trace coordinate: all {} shards released", args.shards);
            Ok(ExitCode::SUCCESS)
        } else {
            Ok(ExitCode::from(1))
        }
    })
}
