//! The request function: sends one request, reads the response body one read at a time with a
//! timestamp per read, and fills one [`TraceRecord`] through [`StreamState`].
//!
//! Two clients under one driver. Plain `http://` targets go through the lean HTTP/1.1 client of
//! h1.rs (a quarter of hyper's memory per in-flight stream; its header says why), which stamps
//! the clock as each socket read returns. HTTPS, HTTP/2, URLs with credentials and `--hyper`
//! go through reqwest: its `Response::chunk()` hands over each hyper body frame as it is
//! decoded from a socket read, with no buffering in between, so stamping the clock when
//! `chunk()` returns is as close to the read as hyper's own frame would be (sub-microsecond
//! apart). It is built with no proxy and an unbounded idle pool so thousands of concurrent
//! streams each keep their own HTTP/1.1 connection.
//!
//! One retry, of one kind, on both paths: a request whose connection closed before any response
//! byte (hyper's "connection closed before message completed") is sent once more on a new
//! connection. llama-server closes every connection right after a streamed response's last
//! byte, so the pool can hand that connection to the next request in the instant before the
//! close arrives; the request never reached a handler (CI saw one such row in twelve). Each
//! resend is counted ([`Client::resends`]) and reported in the run's metadata; a server that
//! drops the resend too gives a failed row.

use std::future::Future;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};
use trace_format::{ErrorKind, TraceRecord};
use trace_sys::RunClock;

use crate::h1::{self, H1};
use crate::request::{ClientConfig, Endpoint, RequestSpec, body, prompt_hash};
use crate::stream::{StreamState, http_error_msg};
use crate::tokenizer::HfTokenizer;
use crate::transport::Transport;
use crate::url::ServerUrl;
use crate::{Error, error_chain};

/// Largest error body kept from a failed HTTP response.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How long to wait for the end of the body after `[DONE]`.
const DONE_GRACE: Duration = Duration::from_millis(100);

/// The streaming client. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: Arc<str>,
    /// Every request's headers but `x-request-id` ([`route_headers`]).
    headers: Arc<[(HeaderName, HeaderValue)]>,
    cfg: Arc<ClientConfig>,
    model: Arc<str>,
    tokenizer: Option<Arc<HfTokenizer>>,
    resends: Arc<AtomicU64>,
    version: Arc<OnceLock<&'static str>>,
    /// The lean HTTP/1.1 client, where the target is plain `http://` (see h1.rs); else every
    /// request goes through `http`.
    h1: Option<Arc<H1>>,
}

/// Every host: the retry below is about the connection, not the server.
struct AnyHost;

impl PartialEq<&str> for AnyHost {
    fn eq(&self, _: &&str) -> bool {
        true
    }
}

/// The connection closed before a response began: the request was written into a closing
/// connection (see the module header).
fn closed_before_response(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

pub(crate) fn http_client(
    transport: &Transport,
    timeout: Option<Duration>,
    resends: Arc<AtomicU64>,
) -> Result<reqwest::Client, Error> {
    resending_client(transport, resends, |b| match timeout {
        Some(t) => b.timeout(t),
        None => b,
    })
}

/// A client whose requests are sent once more when their connection closed before any
/// response byte (they never reached the server: a kept-alive connection it was closing as it
/// was reused), counted in `resends`; `tune` adds the caller's settings. The replay's client,
/// and the recording proxy's upstream (whose clients would otherwise get a 502 for it).
pub fn resending_client(
    transport: &Transport,
    resends: Arc<AtomicU64>,
    tune: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, Error> {
    let retry = reqwest::retry::for_host(AnyHost)
        .max_retries_per_request(1)
        .no_budget()
        .classify_fn(move |rr| {
            if rr.status().is_none() && rr.error().is_some_and(closed_before_response) {
                resends.fetch_add(1, Ordering::Relaxed);
                rr.retryable()
            } else {
                rr.success()
            }
        });
    let b = transport
        .builder()?
        .retry(retry)
        .pool_max_idle_per_host(usize::MAX)
        // Below the 5 s keep-alive of uvicorn (vLLM, SGLang) and llama.cpp's HTTP server: a
        // connection idle longer may be closed by the server just as it is reused, and the
        // request then fails without reaching it ("connection closed before message
        // completed", seen against llama-server after the prompt calibration's pause).
        .pool_idle_timeout(Duration::from_secs(4));
    tune(b).build().map_err(|e| Error::Build(error_chain(&e)))
}

pub(crate) fn bearer(key: &str) -> Result<HeaderValue, Error> {
    let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| Error::Build("api key holds characters not allowed in a header".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Asks `GET {base}/v1/models` for the served model ids.
pub async fn list_models(
    base_url: &str,
    api_key: Option<&str>,
    transport: &Transport,
    timeout: Duration,
) -> Result<Vec<String>, Error> {
    let url = ServerUrl::parse(base_url)?.api("models");
    let http = http_client(transport, Some(timeout), Arc::default())?;
    let mut req = http.get(&url);
    if let Some(k) = api_key {
        req = req.header(AUTHORIZATION, bearer(k)?);
    }
    let resp = req.send().await.map_err(|e| Error::Http {
        url: url.clone(),
        msg: error_chain(&e),
    })?;
    if !resp.status().is_success() {
        return Err(Error::Status {
            url,
            status: resp.status().as_u16(),
        });
    }
    let v: Value = resp.json().await.map_err(|e| Error::Body {
        url: url.clone(),
        msg: error_chain(&e),
    })?;
    let ids: Vec<String> = v
        .get("data")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(Error::Body {
            url,
            msg: "no models listed in 'data'".into(),
        });
    }
    Ok(ids)
}

/// Requests of `cfg` go through the lean HTTP/1.1 client (h1.rs), not hyper: a plain `http://`
/// target without credentials in its URL, and no `--hyper`. Its connections are back in the
/// pool before the request's send returns, so a run's open sockets never exceed its requests in
/// flight (hyper's pool takes a connection back a moment later, and may open one meanwhile).
pub fn lean_http1(cfg: &ClientConfig) -> bool {
    !cfg.transport.hyper && crate::h1::carries(&cfg.base_url)
}

/// The headers every request of a route carries besides `x-request-id`: the body's type and
/// the credentials (Anthropic's Messages take the key as `x-api-key`, with the API version).
fn route_headers(
    endpoint: Endpoint,
    auth: Option<&HeaderValue>,
    api_key: Option<&HeaderValue>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    if endpoint == Endpoint::Messages {
        h.push((
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static("2023-06-01"),
        ));
        if let Some(k) = api_key {
            h.push((HeaderName::from_static("x-api-key"), k.clone()));
        }
    } else if let Some(a) = auth {
        h.push((AUTHORIZATION, a.clone()));
    }
    h
}

/// A response whose head is in, from either client.
enum Resp<'a> {
    Lean(h1::Response<'a>),
    Hyper(reqwest::Response),
}

impl Resp<'_> {
    fn status(&self) -> u16 {
        match self {
            Resp::Lean(r) => r.status(),
            Resp::Hyper(r) => r.status().as_u16(),
        }
    }

    fn is_json(&self) -> bool {
        match self {
            Resp::Lean(r) => r.is_json(),
            Resp::Hyper(r) => r
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(h1::json_type),
        }
    }

    fn version(&self) -> &'static str {
        match self {
            Resp::Lean(r) => r.version(),
            Resp::Hyper(r) => match r.version() {
                reqwest::Version::HTTP_2 => "HTTP/2",
                reqwest::Version::HTTP_3 => "HTTP/3",
                reqwest::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
        }
    }

    /// The next read of the body, handed to `sink` with the instant it returned; `Ok(false)`:
    /// the body had ended. The clock is read once per read, before any parsing.
    async fn read(
        &mut self,
        sink: &mut (dyn FnMut(Instant, &[u8]) + Send),
    ) -> Result<bool, String> {
        match self {
            Resp::Lean(r) => r.read(sink).await.map_err(|e| e.to_string()),
            Resp::Hyper(r) => match r.chunk().await {
                Ok(Some(b)) => {
                    sink(Instant::now(), &b);
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(e) => Err(error_chain(&e)),
            },
        }
    }
}

/// How a request ended, before the row is finalised.
struct Outcome {
    end: Instant,
    error: Option<(ErrorKind, String)>,
}

impl Outcome {
    fn fail(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Self {
            end: Instant::now(),
            error: Some((kind, msg.into())),
        }
    }
}

impl Client {
    /// Builds the client (connection pool, URL, tokenizer).
    pub fn new(cfg: ClientConfig) -> Result<Self, Error> {
        let model: Arc<str> = cfg.model.as_deref().ok_or(Error::NoModel)?.into();
        let url = cfg.endpoint.url(
            &ServerUrl::parse(&cfg.base_url)?,
            &model,
            cfg.custom_path.as_deref(),
        );
        let auth = cfg.api_key.as_deref().map(bearer).transpose()?;
        let api_key = match cfg.api_key.as_deref() {
            Some(k) => {
                let mut v = HeaderValue::from_str(k).map_err(|_| {
                    Error::Build("api key holds characters not allowed in a header".into())
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let tokenizer = match &cfg.tokenizer {
            Some(p) => Some(Arc::new(HfTokenizer::load(p)?)),
            None => None,
        };
        if let Some(e) = &cfg.extra_body
            && !e.is_object()
        {
            return Err(Error::Build("extra_body must be a JSON object".into()));
        }
        let resends = Arc::new(AtomicU64::new(0));
        let headers = route_headers(cfg.endpoint, auth.as_ref(), api_key.as_ref());
        let h1 = lean_http1(&cfg)
            .then(|| H1::new(&url, &headers, &cfg.transport.headers))
            .flatten()
            .map(Arc::new);
        Ok(Self {
            http: http_client(&cfg.transport, None, resends.clone())?,
            h1,
            url: url.into(),
            headers: headers.into(),
            cfg: Arc::new(cfg),
            model,
            tokenizer,
            resends,
            version: Arc::default(),
        })
    }

    /// The HTTP version of the first response (`HTTP/1.1`, `HTTP/2`), once one came.
    pub fn http_version(&self) -> Option<&'static str> {
        self.version.get().copied()
    }

    /// Which client sends the requests: `lean` (plain `http://`, see h1.rs) or `hyper`.
    pub fn http_client(&self) -> &'static str {
        if self.h1.is_some() { "lean" } else { "hyper" }
    }

    /// Requests sent a second time because their connection closed before any response byte
    /// (see the module header); shared by clones.
    pub fn resends(&self) -> Arc<AtomicU64> {
        self.resends.clone()
    }

    /// The full request URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The model sent.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The loaded tokenizer, if configured.
    pub fn tokenizer(&self) -> Option<&HfTokenizer> {
        self.tokenizer.as_deref()
    }

    /// The loaded tokenizer, shared, if configured.
    pub fn shared_tokenizer(&self) -> Option<Arc<HfTokenizer>> {
        self.tokenizer.clone()
    }

    /// Sends one request and fills `rec` (see the crate docs for `error_kind`). Never panics
    /// and always sets `end_ns`; request-side fields it does not own (`request_id`, `stage`,
    /// `scheduled_ns`, ...) are left as the caller set them.
    pub async fn send(&self, spec: &RequestSpec, clock: &RunClock, rec: &mut TraceRecord) {
        self.send_cancellable(spec, clock, rec, std::future::pending())
            .await;
    }

    /// [`Client::send`], stopped when `cancel` completes: the row then has error_kind
    /// `cancelled` and keeps every chunk received before.
    pub async fn send_cancellable(
        &self,
        spec: &RequestSpec,
        clock: &RunClock,
        rec: &mut TraceRecord,
        cancel: impl Future<Output = ()>,
    ) {
        let cfg = &*self.cfg;
        rec.endpoint = Some(cfg.endpoint.as_str().to_string());
        rec.model = Some(self.model.to_string());
        rec.max_tokens = spec.max_tokens;
        rec.prompt_tokens = spec.prompt_tokens;
        rec.expected_prompt_tokens = spec.prompt_tokens;
        rec.prompt_hash = Some(prompt_hash(&spec.prompt));
        if cfg.store_prompt {
            rec.prompt = Some(spec.prompt.stored());
        }
        let mut st = StreamState::for_route(
            cfg.store_output || spec.keep_output || self.tokenizer.is_some(),
            cfg.endpoint,
            cfg.text_field.as_deref(),
        );
        let outcome = match body(cfg, &self.model, spec, self.tokenizer.as_deref()) {
            Err(msg) => Outcome::fail(ErrorKind::InvalidRequest, msg),
            Ok(body) => {
                let driven = tokio::select! {
                    o = self.drive(body, spec, clock, rec, &mut st) => Some(o),
                    () = cancel => None,
                };
                driven.unwrap_or_else(|| {
                    Outcome::fail(ErrorKind::Cancelled, "cancelled by the caller")
                })
            }
        };
        st.finish_into(
            rec,
            clock.offset_ns(outcome.end.into_std()),
            outcome.error,
            self.tokenizer.as_deref(),
            cfg.store_output || spec.keep_output,
        );
    }

    /// Sends the request: through the lean client where it carries the target, else reqwest.
    async fn start(
        &self,
        body: Vec<u8>,
        spec: &RequestSpec,
        deadline: Instant,
    ) -> Result<Resp<'_>, Outcome> {
        let cfg = &*self.cfg;
        let sent = match &self.h1 {
            Some(h1) => {
                let Ok(id) = HeaderValue::from_str(&spec.request_id) else {
                    return Err(Outcome::fail(
                        ErrorKind::InvalidRequest,
                        "the request id holds characters a header cannot",
                    ));
                };
                timeout_at(deadline, h1.send(&id, body, &self.resends))
                    .await
                    .map(|r| r.map(Resp::Lean).map_err(|m| (false, m)))
            }
            None => {
                let mut req = self
                    .http
                    .post(&*self.url)
                    .header("x-request-id", spec.request_id.as_str())
                    .body(body);
                for (k, v) in self.headers.iter() {
                    req = req.header(k, v.clone());
                }
                timeout_at(deadline, req.send()).await.map(|r| {
                    r.map(Resp::Hyper)
                        .map_err(|e| (e.is_timeout(), error_chain(&e)))
                })
            }
        };
        match sent {
            Err(_) => Err(Outcome::fail(
                ErrorKind::Timeout,
                format!("no response headers within {:?}", cfg.timeout),
            )),
            Ok(Err((true, msg))) => Err(Outcome::fail(ErrorKind::Timeout, msg)),
            Ok(Err((false, msg))) => Err(Outcome::fail(ErrorKind::Connect, msg)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    async fn drive(
        &self,
        body: Vec<u8>,
        spec: &RequestSpec,
        clock: &RunClock,
        rec: &mut TraceRecord,
        st: &mut StreamState,
    ) -> Outcome {
        let cfg = &*self.cfg;
        let sent = Instant::now();
        let deadline = sent + cfg.timeout;
        rec.sent_ns = Some(clock.offset_ns(sent.into_std()));
        // Boxed: connecting, writing and reading the head take more state than the rest of
        // the exchange (reqwest's pending request is the largest), and it is freed once the
        // head is in, so a task waiting between tokens does not carry it.
        let mut resp = match Box::pin(self.start(body, spec, deadline)).await {
            Ok(r) => r,
            Err(o) => return o,
        };
        let headers_at = match &resp {
            Resp::Lean(r) => r.head_at(),
            Resp::Hyper(_) => Instant::now(),
        };
        rec.headers_ns = Some(clock.offset_ns(headers_at.into_std()));
        self.version.get_or_init(|| resp.version());
        let status = resp.status();
        let ok = (200..300).contains(&status);
        rec.status = i16::try_from(status).ok();
        let is_json = resp.is_json();
        let mut last_read = headers_at;
        let mut buf: Vec<u8> = Vec::new();
        let keep_body = !ok || is_json;
        let mut any_byte = false;
        let mut stopped = false;
        loop {
            let mut read_deadline = match cfg.idle_timeout {
                Some(idle) => deadline.min(last_read + idle),
                None => deadline,
            };
            if st.done() {
                // After [DONE] only the body's end is left to read (so the connection goes back
                // to the pool); a server that keeps the body open must not turn a complete
                // response into a timeout.
                read_deadline = read_deadline.min(last_read + DONE_GRACE);
            }
            let mut sink = |now: Instant, bytes: &[u8]| {
                if bytes.is_empty() || stopped {
                    return;
                }
                let t_ns = clock.offset_ns(now.into_std());
                if !any_byte {
                    any_byte = true;
                    rec.first_byte_ns = Some(t_ns);
                }
                last_read = now;
                if keep_body {
                    if buf.len() < MAX_ERROR_BODY || is_json && ok {
                        buf.extend_from_slice(bytes);
                    }
                } else {
                    st.feed(bytes, t_ns);
                    // An error event ends the request: stop reading so end_ns is its time.
                    stopped = st.has_error();
                }
            };
            let next = timeout_at(read_deadline, resp.read(&mut sink)).await;
            if stopped {
                return Outcome {
                    end: last_read,
                    error: None,
                };
            }
            match next {
                Err(_) if st.done() => break,
                Err(_) => {
                    let now = Instant::now();
                    let what = if now >= deadline {
                        format!("request timeout {:?} passed", cfg.timeout)
                    } else {
                        format!(
                            "stalled: no bytes for {:?}",
                            cfg.idle_timeout.unwrap_or_default()
                        )
                    };
                    return Outcome {
                        end: now,
                        error: Some((
                            ErrorKind::Timeout,
                            format!("{what} after {} events", st.chunks()),
                        )),
                    };
                }
                Ok(Err(e)) => {
                    let (kind, msg) = if ok {
                        (
                            ErrorKind::Stream,
                            format!(
                                "connection error mid-stream after {} events: {e}",
                                st.chunks()
                            ),
                        )
                    } else {
                        (
                            ErrorKind::of_status(status),
                            http_error_msg(status, &buf, cfg),
                        )
                    };
                    return Outcome {
                        end: Instant::now(),
                        error: Some((kind, msg)),
                    };
                }
                Ok(Ok(false)) => break,
                Ok(Ok(true)) => {}
            }
        }
        let end = Instant::now();
        if !ok {
            return Outcome {
                end,
                error: Some((
                    ErrorKind::of_status(status),
                    http_error_msg(status, &buf, cfg),
                )),
            };
        }
        if is_json {
            st.feed_json(&buf, clock.offset_ns(last_read.into_std()));
        }
        Outcome { end, error: None }
    }
}
