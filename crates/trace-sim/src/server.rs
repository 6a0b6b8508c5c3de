//! The HTTP server: OpenAI-compatible routes on axum, vLLM's SSE framing, Prometheus /metrics,
//! faults and ground truth. One scheduler task drives the engine against the wall clock and
//! hands each token to its request's channel; the response stream formats it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::engine::{Emit, Engine, EngineParams};
use crate::fault::{FAULT_HEADER, Fault, unit};
use crate::truth::{Clock, TruthLog, TruthRecord};
use crate::{Error, OutputDist, SimConfig, TimeModel};

/// A request handed to the scheduler task.
struct Submit {
    id: u64,
    prompt_tokens: u32,
    output_tokens: u32,
    tx: mpsc::UnboundedSender<bool>,
}

/// Gauges shared between the scheduler and /metrics.
#[derive(Default)]
struct Gauges {
    waiting: AtomicU64,
    running: AtomicU64,
    kv_usage_bits: AtomicU64,
    preemptions: AtomicU64,
    /// Submitted but not yet taken by the scheduler (they are waiting too).
    pending: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    success: AtomicU64,
}

struct AppState {
    model: String,
    tokenizer: Option<tokenizers::Tokenizer>,
    faults: crate::FaultSpec,
    seed: u64,
    output_dist: Option<OutputDist>,
    default_max_tokens: u32,
    submit: Option<mpsc::UnboundedSender<Submit>>,
    fixed: Option<(Duration, Duration)>,
    gauges: Gauges,
    requests: AtomicU64,
    truth: Option<std_mpsc::Sender<TruthRecord>>,
    clock: Clock,
    shutdown: watch::Receiver<bool>,
}

/// A running simulator on its own thread and runtime.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
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
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
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

/// Accept-queue length. std's `TcpListener::bind` asks for 128: when a load generator opens
/// hundreds of streams at once (a rate of `inf`, a proxy fanning 500 clients out), handshakes
/// beyond it are dropped and retried by the client's kernel a second later, which reads as a
/// second of TTFT. The kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// A non-blocking listening socket with a 4096-deep accept queue, for every server the
/// toolkit runs (the simulator, the recording proxy): tokio's and std's `bind` ask for less.
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    bind_listener(addr, false)
}

/// Like [`listen`], with SO_REUSEPORT: more listeners may bind the same address (one per
/// serving thread), and the kernel spreads new connections over them.
pub fn listen_shared(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    bind_listener(addr, true)
}

fn bind_listener(addr: SocketAddr, share_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if share_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Starts the simulator on its own OS thread with a current-thread tokio runtime, so that a load
/// generator in the same process keeps its timing. `addr` may use port 0.
pub fn spawn(config: SimConfig, addr: SocketAddr) -> Result<SimHandle, Error> {
    config.validate()?;
    let listener = listen(addr).map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let truth = config.truth.as_deref().map(TruthLog::create).transpose()?;
    let tokenizer = load_tokenizer(&config)?;
    let (tx, rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("trace-sim".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Server)?;
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).map_err(Error::Server)?;
                run(config, listener, truth, tokenizer, async move {
                    let _ = rx.await;
                })
                .await
            })
        })
        .map_err(Error::Server)?;
    Ok(SimHandle {
        addr: local,
        shutdown: Some(tx),
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

/// Serves on `listener` until `shutdown` completes; then open streams end abruptly and the
/// ground truth is flushed.
pub async fn serve(
    config: SimConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.validate()?;
    let truth = config.truth.as_deref().map(TruthLog::create).transpose()?;
    let tokenizer = load_tokenizer(&config)?;
    run(config, listener, truth, tokenizer, shutdown).await
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
    truth: Option<TruthLog>,
    tokenizer: Option<tokenizers::Tokenizer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
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
        submit,
        fixed,
        gauges: Gauges::default(),
        requests: AtomicU64::new(0),
        truth: truth.as_ref().and_then(TruthLog::sender),
        clock: Clock::new(),
        shutdown: stop_rx.clone(),
    });
    let sched = scheduler.map(|(params, rx)| {
        tokio::spawn(scheduler_loop(params, rx, state.clone(), stop_rx.clone()))
    });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let mut graceful = stop_rx.clone();
    let served = axum::serve(no_delay(listener), app)
        .with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|s| *s).await;
        })
        .await;
    if let Some(s) = sched {
        let _ = s.await;
    }
    // The truth thread ends once every sender clone (held by the state) is gone.
    drop(state);
    let closed = truth.map(TruthLog::close).transpose();
    served.map_err(Error::Server)?;
    closed.map(|_| ())
}

/// Drives the engine in real time: plan a step, sleep until it ends, deliver its tokens.
async fn scheduler_loop(
    params: EngineParams,
    mut rx: mpsc::UnboundedReceiver<Submit>,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut engine = Engine::new(params);
    let mut senders: HashMap<u64, mpsc::UnboundedSender<bool>> = HashMap::new();
    let mut out: Vec<Emit> = Vec::new();
    let mut deadline = Instant::now();
    let g = &state.gauges;
    let add = |engine: &mut Engine, senders: &mut HashMap<u64, _>, s: Submit| {
        g.pending.fetch_sub(1, Ordering::Relaxed);
        engine.add(s.id, s.prompt_tokens, s.output_tokens);
        senders.insert(s.id, s.tx);
    };
    loop {
        if *stop.borrow() {
            break;
        }
        if engine.is_idle() {
            publish(&engine, g);
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => add(&mut engine, &mut senders, s),
                    None => break,
                },
                _ = stop.changed() => break,
            }
            deadline = Instant::now();
        }
        while let Ok(s) = rx.try_recv() {
            add(&mut engine, &mut senders, s);
        }
        let Some((ns, _)) = engine.step(&mut out) else {
            continue;
        };
        publish(&engine, g);
        deadline += Duration::from_nanos(ns);
        // Behind schedule (a slow host): the engine slows down rather than bursting.
        let now = Instant::now();
        if deadline < now {
            deadline = now;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stop.changed() => break,
        }
        let mut gone = Vec::new();
        for e in &out {
            let Some(tx) = senders.get(&e.id) else {
                continue;
            };
            if tx.send(e.finished).is_err() {
                gone.push(e.id);
            } else if e.finished {
                senders.remove(&e.id);
            }
        }
        g.generation_tokens
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        for id in gone {
            // The client went away: free its KV blocks like vLLM's abort.
            engine.abort(id);
            senders.remove(&id);
        }
    }
    // Dropping the senders ends every open stream.
}

fn publish(engine: &Engine, g: &Gauges) {
    g.waiting
        .store(engine.num_waiting() as u64, Ordering::Relaxed);
    g.running
        .store(engine.num_running() as u64, Ordering::Relaxed);
    g.kv_usage_bits
        .store(engine.kv_usage().to_bits(), Ordering::Relaxed);
    g.preemptions
        .store(engine.preemptions_total(), Ordering::Relaxed);
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let g = &s.gauges;
    let m = serde_json::to_string(&s.model).unwrap_or_default();
    let waiting = g.waiting.load(Ordering::Relaxed) + g.pending.load(Ordering::Relaxed);
    let mut t = String::with_capacity(1024);
    let mut metric = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = write!(
            t,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{model_name={m}}} {v:?}\n"
        );
    };
    metric(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        g.running.load(Ordering::Relaxed) as f64,
    );
    metric(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        waiting as f64,
    );
    let kv = f64::from_bits(g.kv_usage_bits.load(Ordering::Relaxed));
    metric(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        kv,
    );
    metric(
        "vllm:gpu_cache_usage_perc",
        "gauge",
        "GPU KV-cache usage (deprecated alias).",
        kv,
    );
    metric(
        "vllm:num_preemptions_total",
        "counter",
        "Cumulative number of preemptions from the engine.",
        g.preemptions.load(Ordering::Relaxed) as f64,
    );
    metric(
        "vllm:prompt_tokens_total",
        "counter",
        "Number of prefill tokens processed.",
        g.prompt_tokens.load(Ordering::Relaxed) as f64,
    );
    metric(
        "vllm:generation_tokens_total",
        "counter",
        "Number of generation tokens processed.",
        g.generation_tokens.load(Ordering::Relaxed) as f64,
    );
    metric(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
        g.success.load(Ordering::Relaxed) as f64,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t,
    )
        .into_response()
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({
        "object": "list",
        "data": [{
            "id": s.model, "object": "model", "created": s.clock.unix_secs(), "owned_by": "vllm",
            "root": s.model, "parent": null, "max_model_len": 8192,
        }],
    });
    json_response(StatusCode::OK, body.to_string())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": status.as_u16() },
    });
    json_response(status, body.to_string())
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
    #[serde(default)]
    continuous_usage_stats: bool,
}

#[derive(Debug, Deserialize)]
struct GenRequest {
    model: Option<String>,
    messages: Option<Vec<Value>>,
    prompt: Option<Value>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    ignore_eos: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completions,
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Api::Chat, headers, body).await
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Api::Completions, headers, body).await
}

/// Tokens of one text: the tokenizer's count when one is loaded (special tokens and the chat
/// template are not added: the engine's template overhead is a constant per request), else
/// whitespace-separated words (the `w<k>` prompts replay builds are one token per word).
fn text_tokens(tok: Option<&tokenizers::Tokenizer>, s: &str) -> u32 {
    match tok.map(|t| t.encode(s, false)) {
        Some(Ok(enc)) => enc.len() as u32,
        _ => s.split_ascii_whitespace().count() as u32,
    }
}

/// Prompt tokens: the text's tokens (see [`text_tokens`]), or the length of token-id arrays.
fn count_prompt(
    api: Api,
    req: &GenRequest,
    tok: Option<&tokenizers::Tokenizer>,
) -> Result<u32, String> {
    let words = |s: &str| text_tokens(tok, s);
    let n = match api {
        Api::Chat => {
            let msgs = req.messages.as_ref().ok_or("'messages' is required")?;
            msgs.iter()
                .map(|m| match m.get("content") {
                    Some(Value::String(t)) => words(t),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .map(words)
                        .sum(),
                    _ => 0,
                })
                .sum()
        }
        Api::Completions => match req.prompt.as_ref().ok_or("'prompt' is required")? {
            Value::String(t) => words(t),
            Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(t) => words(t),
                    Value::Number(_) => 1,
                    Value::Array(ids) => ids.len() as u32,
                    _ => 0,
                })
                .sum(),
            _ => return Err("'prompt' must be a string, an array of strings or token ids".into()),
        },
    };
    Ok(n.max(1))
}

/// Per-request facts the response stream needs.
struct Job {
    api: Api,
    id: String,
    model: String,
    created: u64,
    prompt_tokens: u32,
    output_tokens: u32,
    finish_reason: &'static str,
    include_usage: bool,
    continuous_usage: bool,
    fault: Option<Fault>,
    request_id: String,
    arrival_unix_ns: u64,
}

async fn handle(s: Arc<AppState>, api: Api, headers: HeaderMap, body: Bytes) -> Response {
    let arrival_unix_ns = s.clock.unix_ns();
    let n = s.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| format!("sim-{n}"), str::to_string);
    let forced = match headers
        .get(FAULT_HEADER)
        .map(|v| v.to_str().map(str::parse::<Fault>))
    {
        None => None,
        Some(Ok(Ok(f))) => Some(f),
        Some(Ok(Err(e))) => {
            return error_response(StatusCode::BAD_REQUEST, "BadRequestError", &e.to_string());
        }
        Some(Err(_)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "x-sim-fault is not ASCII",
            );
        }
    };
    let fault = forced.or_else(|| s.faults.pick(s.seed, n));
    let req: GenRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                &format!("invalid request body: {e}"),
            );
        }
    };
    let prompt_tokens = match count_prompt(api, &req, s.tokenizer.as_ref()) {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "BadRequestError", &e),
    };
    let truth_error = |status: StatusCode| {
        if let Some(t) = &s.truth {
            let _ = t.send(TruthRecord {
                request_id: request_id.clone(),
                arrival_unix_ns,
                event_unix_ns: vec![s.clock.unix_ns()],
                event_tokens: vec![0],
                status: status.as_u16(),
                fault: fault.map(|f| f.to_string()),
            });
        }
    };
    match fault {
        Some(Fault::Http500) => {
            truth_error(StatusCode::INTERNAL_SERVER_ERROR);
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "simulated internal server error",
            );
        }
        Some(Fault::Http429) => {
            truth_error(StatusCode::TOO_MANY_REQUESTS);
            return error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimitError",
                "simulated rate limit: too many requests",
            );
        }
        _ => {}
    }
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(s.default_max_tokens)
        .max(1);
    let output_tokens = match (&s.output_dist, req.ignore_eos) {
        (Some(d), false) => d
            .sample(unit(s.seed ^ 0x0D15, n), unit(s.seed ^ 0x0D16, n))
            .min(max_tokens),
        _ => max_tokens,
    };
    let opts = req.stream_options.as_ref();
    let job = Job {
        api,
        id: match api {
            Api::Chat => format!("chatcmpl-{n:016x}"),
            Api::Completions => format!("cmpl-{n:016x}"),
        },
        model: serde_json::to_string(req.model.as_deref().unwrap_or(&s.model)).unwrap_or_default(),
        created: arrival_unix_ns / 1_000_000_000,
        prompt_tokens,
        output_tokens,
        finish_reason: if output_tokens >= max_tokens {
            "length"
        } else {
            "stop"
        },
        include_usage: opts.is_some_and(|o| o.include_usage || o.continuous_usage_stats),
        continuous_usage: opts.is_some_and(|o| o.continuous_usage_stats),
        fault,
        request_id: request_id.clone(),
        arrival_unix_ns,
    };
    s.gauges
        .prompt_tokens
        .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
    let source = match start(&s, n, prompt_tokens, output_tokens) {
        Some(src) => src,
        None => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
                "simulator is shutting down",
            );
        }
    };
    let rid = HeaderValue::from_str(&request_id).ok();
    let mut resp = if req.stream {
        let stream = SseStream::new(s.clone(), job, source);
        let body = Body::from_stream(futures_util::stream::unfold(stream, |mut st| async move {
            st.next_chunk().await.map(|c| (c, st))
        }));
        let mut r = Response::new(body);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        non_streaming(s.clone(), job, source).await
    };
    if let Some(rid) = rid {
        resp.headers_mut().insert("x-request-id", rid);
    }
    resp
}

/// Where a request's tokens come from.
enum Source {
    /// The shared engine: one `bool` (finished) per token.
    Engine(mpsc::UnboundedReceiver<bool>),
    /// The fixed model: token `i` is due at `first + i * itl`.
    Fixed {
        first: Instant,
        itl: Duration,
        produced: u32,
        total: u32,
        _running: RunningGuard,
    },
}

/// Counts a fixed-model request as running for as long as it lives.
struct RunningGuard(Arc<AppState>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.gauges.running.fetch_sub(1, Ordering::Relaxed);
    }
}

fn start(s: &Arc<AppState>, n: u64, prompt_tokens: u32, output_tokens: u32) -> Option<Source> {
    if let Some((ttft, itl)) = s.fixed {
        s.gauges.running.fetch_add(1, Ordering::Relaxed);
        let guard = RunningGuard(s.clone());
        return Some(Source::Fixed {
            first: Instant::now() + ttft,
            itl,
            produced: 0,
            total: output_tokens,
            _running: guard,
        });
    }
    let (tx, rx) = mpsc::unbounded_channel();
    s.gauges.pending.fetch_add(1, Ordering::Relaxed);
    let submit = s.submit.as_ref()?;
    if submit
        .send(Submit {
            id: n,
            prompt_tokens,
            output_tokens,
            tx,
        })
        .is_err()
    {
        s.gauges.pending.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(Source::Engine(rx))
}

impl Source {
    /// The next token: `Some(finished)`, or None when the server is stopping.
    async fn next(&mut self, stop: &mut watch::Receiver<bool>) -> Option<bool> {
        match self {
            Self::Engine(rx) => rx.recv().await,
            Self::Fixed {
                first,
                itl,
                produced,
                total,
                ..
            } => {
                if *produced >= *total {
                    return None;
                }
                let due = *first + *itl * *produced;
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stop.wait_for(|s| *s) => return None,
                }
                *produced += 1;
                Some(*produced >= *total)
            }
        }
    }
}

async fn non_streaming(s: Arc<AppState>, job: Job, mut source: Source) -> Response {
    let mut stop = s.shutdown.clone();
    if job.fault == Some(Fault::Stall) {
        let _ = stop.wait_for(|s| *s).await;
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            "simulator is shutting down",
        );
    }
    let mut got = 0u32;
    let mut text = String::with_capacity(job.output_tokens as usize * 6);
    loop {
        match source.next(&mut stop).await {
            Some(fin) => {
                let _ = write!(text, "w{got} ");
                got += 1;
                if fin {
                    break;
                }
            }
            None => {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableError",
                    "simulator is shutting down",
                );
            }
        }
    }
    if matches!(source, Source::Fixed { .. }) {
        s.gauges
            .generation_tokens
            .fetch_add(u64::from(got), Ordering::Relaxed);
    }
    s.gauges.success.fetch_add(1, Ordering::Relaxed);
    let usage = serde_json::json!({
        "prompt_tokens": job.prompt_tokens, "total_tokens": job.prompt_tokens + got, "completion_tokens": got,
    });
    let model: Value = serde_json::from_str(&job.model).unwrap_or(Value::Null);
    let choice = match job.api {
        Api::Chat => serde_json::json!({
            "index": 0, "message": {"role": "assistant", "content": text},
            "logprobs": null, "finish_reason": job.finish_reason, "stop_reason": null,
        }),
        Api::Completions => serde_json::json!({
            "index": 0, "text": text, "logprobs": null, "finish_reason": job.finish_reason, "stop_reason": null,
        }),
    };
    let object = if job.api == Api::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    let body = serde_json::json!({
        "id": job.id, "object": object, "created": job.created, "model": model,
        "choices": [choice], "usage": usage,
    });
    let now = s.clock.unix_ns();
    if let Some(t) = &s.truth {
        let _ = t.send(TruthRecord {
            request_id: job.request_id.clone(),
            arrival_unix_ns: job.arrival_unix_ns,
            event_unix_ns: vec![now],
            event_tokens: vec![got],
            status: 200,
            fault: job.fault.map(|f| f.to_string()),
        });
    }
    json_response(StatusCode::OK, body.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Role,
    Tokens,
    Usage,
    Done,
    End,
}

/// The state of one SSE response; yields the bytes of each event.
struct SseStream {
    s: Arc<AppState>,
    job: Job,
    source: Source,
    stop: watch::Receiver<bool>,
    phase: Phase,
    /// Tokens streamed so far (also the next word's number).
    sent: u32,
    /// The token count at which a mid-stream fault fires.
    fault_at: u32,
    fault_done: bool,
    keepalive_due: bool,
    /// Bytes before the token text of a content event.
    prefix: String,
    event_ns: Vec<u64>,
    event_tokens: Vec<u32>,
    status: u16,
}

impl SseStream {
    fn new(s: Arc<AppState>, job: Job, source: Source) -> Self {
        let prefix = match job.api {
            Api::Chat => format!(
                "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"",
                job.id, job.created, job.model
            ),
            Api::Completions => format!(
                "data: {{\"id\":\"{}\",\"object\":\"text_completion\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"text\":\"",
                job.id, job.created, job.model
            ),
        };
        let fault_at = (job.output_tokens / 2).max(1);
        let want_truth = s.truth.is_some();
        let stop = s.shutdown.clone();
        let cap = if want_truth {
            job.output_tokens as usize + 3
        } else {
            0
        };
        Self {
            s,
            source,
            stop,
            phase: if job.api == Api::Chat {
                Phase::Role
            } else {
                Phase::Tokens
            },
            sent: 0,
            fault_at,
            fault_done: false,
            keepalive_due: true,
            prefix,
            event_ns: Vec::with_capacity(cap),
            event_tokens: Vec::with_capacity(cap),
            status: 200,
            job,
        }
    }

    /// Records a data event's time (just before its bytes go to the socket) and hands it out.
    fn event(&mut self, bytes: Bytes, tokens: u32) -> Option<Result<Bytes, std::io::Error>> {
        if self.s.truth.is_some() {
            self.event_ns.push(self.s.clock.unix_ns());
            self.event_tokens.push(tokens);
        }
        Some(Ok(bytes))
    }

    fn usage_json(&self, completion: u32) -> String {
        format!(
            "{{\"prompt_tokens\":{},\"total_tokens\":{},\"completion_tokens\":{}}}",
            self.job.prompt_tokens,
            self.job.prompt_tokens + completion,
            completion
        )
    }

    fn head(&self) -> String {
        let object = if self.job.api == Api::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        format!(
            "data: {{\"id\":\"{}\",\"object\":\"{object}\",\"created\":{},\"model\":{}",
            self.job.id, self.job.created, self.job.model
        )
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            match self.phase {
                Phase::Role => {
                    self.phase = Phase::Tokens;
                    let mut b = self.head();
                    b.push_str(",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]");
                    if self.job.continuous_usage {
                        let _ = write!(b, ",\"usage\":{}", self.usage_json(0));
                    }
                    b.push_str("}\n\n");
                    return self.event(Bytes::from(b), 0);
                }
                Phase::Tokens => {
                    if self.job.fault == Some(Fault::KeepAlive) && self.keepalive_due {
                        self.keepalive_due = false;
                        return Some(Ok(Bytes::from_static(b": keep-alive\n\n")));
                    }
                    if !self.fault_done
                        && self.sent >= self.fault_at
                        && let Some(r) = self.mid_stream_fault().await
                    {
                        return r;
                    }
                    let k = match self.job.fault {
                        Some(Fault::MultiToken(k)) => k,
                        _ => 1,
                    };
                    let mut got = 0u32;
                    let mut finished = false;
                    while got < k {
                        match self.source.next(&mut self.stop).await {
                            Some(fin) => {
                                got += 1;
                                if fin {
                                    finished = true;
                                    break;
                                }
                            }
                            // Shutting down: end the body abruptly.
                            None => {
                                self.phase = Phase::End;
                                return Some(Err(std::io::Error::other("simulator shutting down")));
                            }
                        }
                    }
                    if matches!(self.source, Source::Fixed { .. }) {
                        self.s
                            .gauges
                            .generation_tokens
                            .fetch_add(u64::from(got), Ordering::Relaxed);
                    }
                    let mut b = BytesMut::with_capacity(self.prefix.len() + 96 + 8 * got as usize);
                    b.extend_from_slice(self.prefix.as_bytes());
                    for i in self.sent..self.sent + got {
                        let _ = write!(b, "w{i} ");
                    }
                    self.sent += got;
                    let close = match self.job.api {
                        Api::Chat => "\"}",
                        Api::Completions => "\"",
                    };
                    b.extend_from_slice(close.as_bytes());
                    b.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
                    if finished {
                        let _ = write!(b, "\"{}\"", self.job.finish_reason);
                    } else {
                        b.extend_from_slice(b"null");
                    }
                    b.extend_from_slice(b",\"stop_reason\":null}]");
                    if self.job.continuous_usage {
                        let _ = write!(b, ",\"usage\":{}", self.usage_json(self.sent));
                    }
                    b.extend_from_slice(b"}\n\n");
                    if finished {
                        self.phase = Phase::Usage;
                        self.s.gauges.success.fetch_add(1, Ordering::Relaxed);
                    }
                    self.keepalive_due = true;
                    return self.event(b.freeze(), got);
                }
                Phase::Usage => {
                    self.phase = Phase::Done;
                    if self.job.include_usage {
                        let b = format!(
                            "{},\"choices\":[],\"usage\":{}}}\n\n",
                            self.head(),
                            self.usage_json(self.sent)
                        );
                        return self.event(Bytes::from(b), 0);
                    }
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    if self.job.fault != Some(Fault::NoDone) {
                        return Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                    }
                }
                Phase::End => return None,
            }
        }
    }

    /// Fires the request's mid-stream fault, if it has one; None lets streaming go on.
    async fn mid_stream_fault(&mut self) -> Option<Option<Result<Bytes, std::io::Error>>> {
        self.fault_done = true;
        match self.job.fault? {
            Fault::Reset => {
                self.phase = Phase::End;
                self.status = 0;
                Some(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated connection reset",
                ))))
            }
            Fault::Stall => {
                let _ = self.stop.wait_for(|s| *s).await;
                self.phase = Phase::End;
                Some(Some(Err(std::io::Error::other("simulator shutting down"))))
            }
            Fault::ErrorEvent => {
                self.phase = Phase::Done;
                let b = Bytes::from_static(
                    b"data: {\"error\": {\"message\": \"simulated engine error\", \"type\": \"InternalServerError\", \"param\": null, \"code\": 500}}\n\n",
                );
                Some(self.event(b, 0))
            }
            Fault::Malformed => {
                let b =
                    format!("{}w{}\n\n", self.prefix, self.sent).replace("\"choices\"", "\"choi");
                Some(self.event(Bytes::from(b), 0))
            }
            _ => None,
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if let Some(t) = &self.s.truth {
            let _ = t.send(TruthRecord {
                request_id: std::mem::take(&mut self.job.request_id),
                arrival_unix_ns: self.job.arrival_unix_ns,
                event_unix_ns: std::mem::take(&mut self.event_ns),
                event_tokens: std::mem::take(&mut self.event_tokens),
                status: self.status,
                fault: self.job.fault.map(|f| f.to_string()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn hundreds_of_simultaneous_handshakes_fit_the_accept_queue() {
        // The kernel caps the backlog at net.core.somaxconn; below 300 this cannot hold.
        let cap: i32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if cap < 300 {
            eprintln!("skipped: net.core.somaxconn is {cap}");
            return;
        }
        let l = super::listen(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = l.local_addr().unwrap();
        // Nobody accepts: every handshake must complete in the queue. With std's backlog of
        // 128 the 130th connect would wait for a SYN retry and time out here.
        let mut open = Vec::new();
        for i in 0..300 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(s) => open.push(s),
                Err(e) => panic!("connect {i} failed: {e}"),
            }
        }
        assert_eq!(open.len(), 300);
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        use axum::serve::Listener;
        let l =
            tokio::net::TcpListener::from_std(super::listen(([127, 0, 0, 1], 0).into()).unwrap())
                .unwrap();
        let addr = l.local_addr().unwrap();
        let mut l = super::no_delay(l);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (io, _) = l.accept().await;
        assert!(io.nodelay().unwrap());
    }
}
