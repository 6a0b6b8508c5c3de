//! The HTTP server: OpenAI-compatible routes on axum, vLLM's SSE framing, Prometheus /metrics,
//! faults and ground truth. This file owns the server's lifetime (spawn, serve, shutdown) and
//! its shared state; the parts are cut along their seams:
//! - `scheduler`: one task drives the engine against the wall clock and hands each token to its
//!   request's channel (or the fixed time model's per-request timer);
//! - `request`: parsing a request, counting its prompt, faults before the response;
//! - `response`: the response stream (SSE events) and non-streaming bodies, with ground truth;
//! - `prometheus`: the `/metrics` text.

mod prometheus;
mod request;
mod response;
mod scheduler;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trace_sys::RunClock;

use crate::truth::{TruthLog, TruthRecord};
use crate::{Error, OutputDist, SimConfig, TimeModel};

use scheduler::{Submit, scheduler_loop};

/// Gauges shared between the scheduler and /metrics.
#[derive(Default)]
struct Gauges {
    pub(super) waiting: AtomicU64,
    pub(super) running: AtomicU64,
    pub(super) kv_usage_bits: AtomicU64,
    pub(super) preemptions: AtomicU64,
    /// Submitted but not yet taken by the scheduler (they are waiting too).
    pub(super) pending: AtomicU64,
    pub(super) prompt_tokens: AtomicU64,
    pub(super) generation_tokens: AtomicU64,
    pub(super) success: AtomicU64,
}

/// What every handler and the scheduler share.
/// The context length the simulator serves (as `/v1/models` says, and enforces).
pub(crate) const MAX_MODEL_LEN: u32 = 8192;

struct AppState {
    pub(super) model: String,
    pub(super) tokenizer: Option<tokenizers::Tokenizer>,
    pub(super) faults: crate::FaultSpec,
    pub(super) seed: u64,
    pub(super) output_dist: Option<OutputDist>,
    pub(super) default_max_tokens: u32,
    pub(super) reasoning_tokens: u32,
    /// The prefix cache, when on.
    pub(super) prefix: Option<std::sync::Mutex<crate::prefix_cache::PrefixCache>>,
    pub(super) submit: Option<mpsc::UnboundedSender<Submit>>,
    pub(super) fixed: Option<(Duration, Duration)>,
    pub(super) gauges: Gauges,
    pub(super) requests: AtomicU64,
    pub(super) truth: Option<std_mpsc::Sender<TruthRecord>>,
    pub(super) clock: RunClock,
    /// Cancelled when the server stops: open streams end abruptly.
    pub(super) shutdown: CancellationToken,
}

/// A running simulator on its own thread and runtime.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl SimHandle {
    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the base URL a client appends `/v1/...` to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving: open streams end abruptly, the truth file is flushed, the thread joined.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        self.shutdown.cancel();
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| Error::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts the simulator on its own OS thread with a current-thread tokio runtime, so that a load
/// generator in the same process keeps its timing. `addr` may use port 0.
pub fn spawn(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, Error> {
    config.validate()?;
    let listener = trace_sys::listen(addr).map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let truth = config.truth.as_deref().map(TruthLog::create).transpose()?;
    let tokenizer = load_tokenizer(&config)?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("trace-sim".into())
        .spawn(move || {
            let sender = truth.as_ref().and_then(TruthLog::sender);
            let served = run_on_this_thread(config, listener, sender, tokenizer, stop);
            close_truth(truth, served)
        })
        .map_err(Error::Server)?;
    Ok(SimHandle {
        addr: local,
        shutdown,
        thread: Some(thread),
    })
}

/// Accepted connections send each write at once (TCP_NODELAY), as engines' servers do. Without
/// it Nagle's algorithm holds a token event written while the previous one is unacknowledged
/// until the client's delayed ACK (up to 40 ms on Linux): with a TTFT under that, the first
/// token reached the client with the second, and the ground truth was off by one ITL.
fn no_delay(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|s| {
        if let Err(e) = s.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    })
}

/// Serves on `listener` until `shutdown` is cancelled; then open streams end abruptly and the
/// ground truth is flushed.
pub async fn serve(
    config: SimConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let truth = config.truth.as_deref().map(TruthLog::create).transpose()?;
    let tokenizer = load_tokenizer(&config)?;
    let sender = truth.as_ref().and_then(TruthLog::sender);
    let served = run(config, listener, sender, tokenizer, shutdown).await;
    close_truth(truth, served)
}

/// Serves on a current-thread runtime of the calling thread (one core's worth, as the
/// simulator is designed) until `shutdown`.
fn run_on_this_thread(
    config: SimConfig,
    listener: std::net::TcpListener,
    truth: Option<std_mpsc::Sender<TruthRecord>>,
    tokenizer: Option<tokenizers::Tokenizer>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Server)?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(listener).map_err(Error::Server)?;
        run(config, listener, truth, tokenizer, shutdown).await
    })
}

/// Flushes the truth file once the server (every holder of a sender) is done.
fn close_truth(truth: Option<TruthLog>, served: Result<(), Error>) -> Result<(), Error> {
    let closed = truth.map(TruthLog::close).transpose();
    served?;
    closed.map(|_| ())
}

/// Serves from `workers` threads, each a current-thread runtime pinned to one of the CPUs this
/// process may use and accepting on its own `SO_REUSEPORT` listener bound to the one address
/// (the kernel spreads connections over them), with one truth log. For load-generator
/// benchmarks beyond one core: each worker is its own server, so only the fixed time model,
/// whose requests are independent, is allowed. Blocks until `shutdown`; `on_listen` gets the
/// bound address first.
pub fn serve_workers(
    config: SimConfig,
    addr: SocketAddr,
    workers: usize,
    shutdown: CancellationToken,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    config.validate()?;
    if matches!(config.time, TimeModel::Engine(_)) && workers > 1 {
        return Err(Error::InvalidSetting {
            name: "workers",
            reason: "several workers serve only the fixed time model (--ttft/--itl): an engine \
                     model's batch is one scheduler"
                .into(),
        });
    }
    let first = trace_sys::listen_shared(addr).map_err(|source| Error::Bind { addr, source })?;
    let local = first
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(
            trace_sys::listen_shared(local).map_err(|source| Error::Bind {
                addr: local,
                source,
            })?,
        );
    }
    let truth = config.truth.as_deref().map(TruthLog::create).transpose()?;
    let cpus = trace_sys::allowed_cpus();
    on_listen(local);
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(k, listener)| {
            let (config, stop) = (config.clone(), shutdown.clone());
            let sender = truth.as_ref().and_then(TruthLog::sender);
            let cpu = (!cpus.is_empty()).then(|| cpus[k % cpus.len()]);
            std::thread::Builder::new()
                .name(format!("trace-sim-{k}"))
                .spawn(move || -> Result<(), Error> {
                    if let Some(c) = cpu {
                        trace_sys::pin_current(&[c]);
                    }
                    let tokenizer = load_tokenizer(&config)?;
                    run_on_this_thread(config, listener, sender, tokenizer, stop)
                })
                .map_err(Error::Server)
        })
        .collect::<Result<_, _>>()?;
    let mut served = Ok(());
    for t in threads {
        let r = t.join().map_err(|_| Error::Panicked).and_then(|r| r);
        if served.is_ok() {
            served = r;
        }
    }
    close_truth(truth, served)
}

/// Loads the configured tokenizer before serving, so a bad path fails the start, not requests.
fn load_tokenizer(config: &SimConfig) -> Result<Option<tokenizers::Tokenizer>, Error> {
    config
        .tokenizer
        .as_deref()
        .map(|path| {
            tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

async fn run(
    config: SimConfig,
    listener: TcpListener,
    truth: Option<std_mpsc::Sender<TruthRecord>>,
    tokenizer: Option<tokenizers::Tokenizer>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let (submit, scheduler) = match &config.time {
        TimeModel::Engine(params) => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some((params.clone(), rx)))
        }
        TimeModel::Fixed { .. } => (None, None),
    };
    let fixed = match config.time {
        TimeModel::Fixed { ttft, itl } => Some((ttft, itl)),
        TimeModel::Engine(_) => None,
    };
    let state = Arc::new(AppState {
        model: config.model.clone(),
        tokenizer,
        faults: config.faults.clone(),
        seed: config.seed,
        output_dist: config.output_dist,
        default_max_tokens: config.default_max_tokens,
        reasoning_tokens: config.reasoning_tokens,
        prefix: config.prefix_cache_tokens.map(|cap| {
            let block = match &config.time {
                TimeModel::Engine(p) => p.block_size,
                TimeModel::Fixed { .. } => 16,
            };
            std::sync::Mutex::new(crate::prefix_cache::PrefixCache::new(block, cap))
        }),
        submit,
        fixed,
        gauges: Gauges::default(),
        requests: AtomicU64::new(0),
        truth,
        clock: RunClock::start(),
        shutdown: shutdown.clone(),
    });
    let sched = scheduler.map(|(params, rx)| {
        tokio::spawn(scheduler_loop(params, rx, state.clone(), shutdown.clone()))
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(request::chat))
        .route("/v1/completions", post(request::completions))
        .route("/v1/responses", post(request::responses))
        .route("/v1/messages", post(request::messages))
        .route("/v1/models", get(models))
        .route("/generate_stream", post(request::tgi))
        .route("/generate", post(request::sglang))
        .route("/v2/models/{model}/generate_stream", post(request::triton))
        .route("/tokenize", post(request::tokenize))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/metrics", get(prometheus::metrics))
        .with_state(state.clone());
    let served = match &config.tls {
        None => {
            axum::serve(no_delay(listener), app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        Some(t) => {
            let acceptor = trace_sys::tls::acceptor(&t.cert, &t.key, t.client_ca.as_deref(), true)?;
            let l = tls::TlsListener::new(listener, acceptor, shutdown.clone())
                .map_err(Error::Server)?;
            axum::serve(l, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    };
    if let Some(s) = sched {
        let _ = s.await;
    }
    // The truth thread ends once every sender clone (held by the state) is gone.
    drop(state);
    served.map_err(Error::Server)
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({
        "object": "list",
        "data": [{
            "id": s.model, "object": "model", "created": s.clock.now_unix_ns() / 1_000_000_000, "owned_by": "vllm",
            "root": s.model, "parent": null, "max_model_len": MAX_MODEL_LEN,
        }],
    });
    json_response(StatusCode::OK, body.to_string())
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": status.as_u16() },
    });
    json_response(status, body.to_string())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        use axum::serve::Listener;
        let l = tokio::net::TcpListener::from_std(
            trace_sys::listen(([127, 0, 0, 1], 0).into()).unwrap(),
        )
        .unwrap();
        let addr = l.local_addr().unwrap();
        let mut l = super::no_delay(l);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (io, _) = l.accept().await;
        assert!(io.nodelay().unwrap());
    }
}
