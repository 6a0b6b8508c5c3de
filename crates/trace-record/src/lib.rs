//! trace-record: the recording proxy behind `trace record`, a transparent proxy in front of an
//! OpenAI-compatible engine.
//!
//! [`run`] listens (HTTP/1.1, hyper), forwards every request unchanged to the upstream (reqwest,
//! hop-by-hop headers dropped both ways), streams each upstream read to the client as soon as it
//! arrives (the client's connection polls the upstream body itself: a slow client slows its own
//! upstream read, nothing is buffered whole), and writes one row per generation request
//! (`POST .../chat/completions`, `POST .../completions`) through the trace-format writer thread.
//! Other routes (`/v1/models`, `/health`, ...) are forwarded without a row, and counted.
//!
//! Column mapping (times in ns since the proxy started, on one monotonic clock):
//! - `scheduled_ns` = `sent_ns` = when the request's headers reached the proxy (its arrival: the
//!   time the client sent it, as `trace replay` will re-send it);
//! - `headers_ns` = upstream response headers received by the proxy;
//! - `first_byte_ns`, `chunk_ns` = when each upstream read reached the proxy, taken before it is
//!   forwarded or parsed; `end_ns` = the `[DONE]` event, or the end of the exchange;
//! - `status` = the status the client got (502 / 504 when the proxy answered for a dead or silent
//!   upstream); `error_kind`: `connect` (upstream refused / unreachable, 502), `timeout` (no
//!   headers or no bytes for `idle_timeout`, 504 or a cut stream), `http_4xx` / `http_5xx`
//!   (upstream's status and body passed through), `stream` / `parse` (as trace-client),
//!   `cancelled` (the client disconnected, or the drain timeout passed at shutdown);
//! - `prompt_tokens` from the server's usage, else the prompt's whitespace word count (an
//!   estimate); `prompt_hash` as trace-client computes it, so a replay of the file pairs up.
//!
//! Secrets: no header is ever written to the file (Authorization, X-Api-Key, api-key included),
//! only the request id taken from `X-Request-Id`. The prompt text is written only with
//! `store_prompts`, the output text only with `store_outputs`.
//!
//! Threads: [`RecordConfig::threads`] serving threads, each a single-threaded runtime with its
//! own listener on the shared port (SO_REUSEPORT) and its own upstream pool, so an exchange
//! never changes thread; the kernel spreads connections over them.
//!
//! Shutdown (the `stop` token, `duration`, `max_requests`): stop accepting, finish in-flight
//! exchanges for up to `drain_timeout`, then cut the rest (rows `cancelled`) and close the file.
//!
//! It depends on trace-format, trace-client (request parsing and the one response accounting,
//! `StreamState`) and trace-sys; the simulator is only a dev-dependency: the command line starts
//! it when no upstream is given.

mod capture;
mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trace_format::{TraceMeta, WriterOptions, meta, spawn_writer};
use trace_sys::RunClock;

pub use capture::{Capture, RequestInfo, Route};

/// Why a recording could not start or finish. Requests that fail are rows, not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening address could not be bound (or is already in use).
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A serving thread could not be started.
    #[error("cannot start a serving thread")]
    Thread(#[source] std::io::Error),
    /// A certificate or key (listening or upstream) that cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The upstream URL is not an http(s) URL.
    #[error("invalid upstream url '{0}': must start with http:// or https://")]
    Upstream(String),
    /// Writing the trace failed.
    #[error(transparent)]
    Format(#[from] trace_format::Error),
}

/// The `stage` label of every recorded row.
pub const STAGE: &str = "recorded";

/// A validated `trace record` configuration.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Address to listen on (port 0 picks one; [`run`] reports the bound address).
    pub listen: SocketAddr,
    /// Upstream base URL (`http://host:port`).
    pub upstream: String,
    /// The trace file to write.
    pub output: PathBuf,
    /// Replace an existing trace at `output` (`--force`); off, an existing file is refused.
    pub force: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many recorded requests (later ones get 503).
    pub max_requests: Option<u64>,
    /// Store the prompt text of each request.
    pub store_prompts: bool,
    /// Store the output text of each response.
    pub store_outputs: bool,
    /// Engine label for the metadata.
    pub label: Option<String>,
    /// How long in-flight exchanges may finish after a stop.
    pub drain_timeout: Duration,
    /// Upstream silence (no headers, or no bytes) after which an exchange is a `timeout`.
    pub idle_timeout: Duration,
    /// Serving threads, each with its own listener on the same port (SO_REUSEPORT), runtime and
    /// upstream connections; 0: one per CPU, at most [`MAX_AUTO_THREADS`].
    pub threads: usize,
    /// How the upstream is reached (its CA, `--insecure`, client certificate, extra headers).
    pub upstream_transport: trace_client::Transport,
    /// Listen with TLS: certificate chain and key (PEM). None: plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A JSON-over-SSE route to record besides the known ones, and where its events hold
    /// their text delta (dotted path; default `text`).
    pub custom_route: Option<(String, Option<String>)>,
}

/// The most serving threads `threads: 0` picks.
pub const MAX_AUTO_THREADS: usize = 4;

impl RecordConfig {
    /// Defaults: listen on 127.0.0.1:9000, 30 s drain, 300 s idle timeout, one serving thread
    /// per CPU (at most four).
    pub fn new(upstream: impl Into<String>, output: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            upstream: upstream.into(),
            output: output.into(),
            force: false,
            duration: None,
            max_requests: None,
            store_prompts: false,
            store_outputs: false,
            label: None,
            drain_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            threads: 0,
            upstream_transport: trace_client::Transport::default(),
            tls: None,
            custom_route: None,
        }
    }
}

/// What a recording did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Rows written.
    pub rows: u64,
    /// Rows with an error_kind.
    pub errors: u64,
    /// Requests forwarded without a row (not a generation route).
    pub unrecorded: u64,
    /// Requests refused with 503 after the stop.
    pub refused: u64,
    /// The upstream URL used.
    pub upstream: String,
    /// The trace file.
    pub output: PathBuf,
}

/// State shared by every connection and exchange of one recording.
pub(crate) struct Shared {
    pub(crate) upstream: String,
    /// `RecordConfig::custom_route`.
    pub(crate) custom_route: Option<(String, Option<String>)>,
    pub(crate) clock: RunClock,
    pub(crate) sender: trace_format::RecordSender,
    pub(crate) store_prompts: bool,
    pub(crate) store_outputs: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_requests: Option<u64>,
    pub(crate) stop: CancellationToken,
    /// Cancelled when the drain timeout passes: in-flight exchanges are cut.
    pub(crate) abort: CancellationToken,
    pub(crate) accepted: AtomicU64,
    pub(crate) rows: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) unrecorded: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) idle: Notify,
}

/// Counts an exchange in flight until dropped.
pub(crate) struct InFlight(pub(crate) Arc<Shared>);

impl InFlight {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

async fn wait_idle(shared: &Shared, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let notified = shared.idle.notified();
        if shared.in_flight.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return shared.in_flight.load(Ordering::SeqCst) == 0;
        }
    }
}

/// Where a started recording listens, handed to [`run`]'s `on_listen` callback.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The upstream base URL.
    pub upstream: String,
    /// The clock every `*_ns` column is an offset on (for in-process measurements).
    pub clock: RunClock,
}

/// Records until `stop` is cancelled (or `duration`, or `max_requests`). `on_listen` is called
/// once the proxy accepts connections.
///
/// The proxy serves on its own threads (see [`RecordConfig::threads`]), each a single-threaded
/// runtime with its own listener and upstream connection pool: a chunk's upstream read, its
/// stamp and its write to the client happen on one thread, with no cross-thread wake-up on the
/// path the proxy adds latency to. The kernel spreads new connections over the listeners. The
/// runtime `run` is awaited on only waits for the stop and drains.
pub async fn run(
    cfg: RecordConfig,
    stop: CancellationToken,
    on_listen: impl FnOnce(&Listening),
) -> Result<Summary, Error> {
    let threads = match cfg.threads {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_AUTO_THREADS),
        n => n,
    };
    let upstream = cfg.upstream.trim_end_matches('/').to_string();
    if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
        return Err(Error::Upstream(trace_client::redact(&cfg.upstream)));
    }
    let cannot_listen = |source| Error::Listen {
        addr: cfg.listen,
        source,
    };
    // Certificates are checked before anything listens, naming the file.
    let tls = cfg
        .tls
        .as_ref()
        .map(|(c, k)| trace_sys::tls::acceptor(c, k, None, false))
        .transpose()
        .map_err(|e| Error::Tls(e.to_string()))?;
    cfg.upstream_transport
        .check()
        .map_err(|e| Error::Tls(e.to_string()))?;
    trace_sys::ensure_port_free(cfg.listen).map_err(cannot_listen)?;
    let first = trace_sys::listen_shared(cfg.listen).map_err(cannot_listen)?;
    let local = first.local_addr().map_err(cannot_listen)?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(trace_sys::listen_shared(local).map_err(cannot_listen)?);
    }

    let mut m = TraceMeta::new();
    m.set(meta::KIND, "run");
    m.set(meta::SOURCE, "record");
    // Credentials in the URL (`http://user:key@host`) are used, never stored or printed.
    m.set(meta::URL, trace_client::redact(&upstream));
    if let Some(l) = &cfg.label {
        m.set(meta::LABEL, l.clone());
    }
    let clock = RunClock::start();
    m.set(meta::RUN_START_UNIX_NS, clock.start_unix_ns().to_string());
    m.set(meta::SCHEDULE, r#"{"kind":"recorded"}"#);
    let (sender, writer) = spawn_writer(
        &cfg.output,
        m,
        WriterOptions {
            overwrite: cfg.force,
            ..WriterOptions::default()
        },
    )?;

    let shared = Arc::new(Shared {
        upstream: upstream.clone(),
        custom_route: cfg.custom_route.clone(),
        clock,
        sender,
        store_prompts: cfg.store_prompts,
        store_outputs: cfg.store_outputs,
        idle_timeout: cfg.idle_timeout,
        max_requests: cfg.max_requests,
        stop: stop.clone(),
        abort: CancellationToken::new(),
        accepted: AtomicU64::new(0),
        rows: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        unrecorded: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        idle: Notify::new(),
    });
    // Set once the drain is over: the serving threads then stop their runtimes.
    let finished = CancellationToken::new();
    let mut workers = Vec::with_capacity(threads);
    for (i, l) in listeners.into_iter().enumerate() {
        let (sh, fin, idle_timeout) = (shared.clone(), finished.clone(), cfg.idle_timeout);
        let (tls, upstream_client) = (tls.clone(), cfg.upstream_transport.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("trace-record-{i}"))
            .spawn(move || serve_thread(sh, l, fin, idle_timeout, tls, upstream_client));
        match spawned {
            Ok(h) => workers.push(h),
            Err(e) => {
                stop.cancel();
                finished.cancel();
                return Err(Error::Thread(e));
            }
        }
    }
    on_listen(&Listening {
        addr: local,
        upstream: trace_client::redact(&upstream),
        clock,
    });

    let deadline = cfg
        .duration
        .map(|d| Instant::from_std(clock.start_instant()) + d);
    tokio::select! {
        () = stop.cancelled() => {}
        () = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        } => {}
    }
    stop.cancel();
    if !wait_idle(&shared, cfg.drain_timeout).await {
        tracing::warn!(
            "drain timeout {:?} passed: cutting in-flight exchanges",
            cfg.drain_timeout
        );
        shared.abort.cancel();
        wait_idle(&shared, Duration::from_secs(5)).await;
    }
    finished.cancel();
    let joined = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    });
    let _ = joined.await;
    let summary = Summary {
        rows: shared.rows.load(Ordering::SeqCst),
        errors: shared.errors.load(Ordering::SeqCst),
        unrecorded: shared.unrecorded.load(Ordering::SeqCst),
        refused: shared.refused.load(Ordering::SeqCst),
        upstream: trace_client::redact(&upstream),
        output: cfg.output.clone(),
    };
    writer.set_meta(
        "trace.record.unrecorded_requests",
        summary.unrecorded.to_string(),
    );
    // Merging the parts is blocking file work.
    match tokio::task::spawn_blocking(move || writer.close()).await {
        Ok(closed) => closed?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    Ok(summary)
}

/// One serving thread: accepts on its listener until the stop, then keeps its connections
/// running until the drain is over.
fn serve_thread(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    finished: CancellationToken,
    idle_timeout: Duration,
    tls: Option<trace_sys::tls::TlsAcceptor>,
    upstream: trace_client::Transport,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start a serving runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot serve a listener: {e}");
                return;
            }
        };
        // A request the upstream's closing connection swallowed is sent once more, as the
        // replay client does: llama-server closes each connection after a streamed response.
        let http = match trace_client::resending_client(&upstream, Default::default(), |b| {
            b.http1_only().connect_timeout(idle_timeout)
        }) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot build the upstream client: {e}");
                return;
            }
        };
        let stop = shared.stop.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let (shared, http) = (shared.clone(), http.clone());
                        match &tls {
                            None => {
                                tokio::spawn(serve_connection(shared, http, stream));
                            }
                            Some(acceptor) => {
                                let acceptor = acceptor.clone();
                                tokio::spawn(async move {
                                    let tls = trace_sys::tls::accept(&acceptor, stream, peer);
                                    if let Some(s) = tls.await {
                                        serve_connection(shared, http, s).await;
                                    }
                                });
                            }
                        }
                    }
                    // Out of file descriptors and the like: keep serving the open connections.
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = stop.cancelled() => break,
            }
        }
        drop(listener);
        finished.cancelled().await;
    });
}

async fn serve_connection<S>(shared: Arc<Shared>, http: reqwest::Client, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc =
        hyper::service::service_fn(move |req| proxy::handle(svc_shared.clone(), http.clone(), req));
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let stop = shared.stop.clone();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("connection ended: {e}");
            }
        }
        () = stop.cancelled() => {
            // Finish the exchange in progress, then close instead of waiting for the next one.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                // A client that stopped reading leaves its response unpolled: dropping the
                // connection drops the relay, which records the cut.
                () = shared.abort.cancelled() => {}
            }
        }
    }
}
