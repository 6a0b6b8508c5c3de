//! The request function: sends one request, reads the response body one read at a time with a
//! timestamp per read, and fills one [`TraceRecord`] through [`StreamState`].
//!
//! reqwest rather than raw hyper: reqwest's `Response::chunk()` hands over each hyper body frame
//! as it is decoded from a socket read, with no buffering in between, so stamping the clock when
//! `chunk()` returns is as close to the read as hyper's own frame would be (sub-microsecond
//! apart); reqwest adds the connection pool, connect errors with causes and URL handling. It is
//! built with no proxy and an unbounded idle pool so thousands of concurrent streams each keep
//! their own HTTP/1.1 connection.
//!
//! One retry, of one kind: a request whose connection closed before any response byte
//! (hyper's "connection closed before message completed") is sent once more on a new
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

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};
use trace_format::{ErrorKind, TraceRecord};
use trace_sys::RunClock;

use crate::request::{ClientConfig, RequestSpec, body, prompt_hash};
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
    auth: Option<HeaderValue>,
    /// The key alone, for routes that take it as `x-api-key` (Messages).
    api_key: Option<HeaderValue>,
    cfg: Arc<ClientConfig>,
    model: Arc<str>,
    tokenizer: Option<Arc<HfTokenizer>>,
    resends: Arc<AtomicU64>,
    version: Arc<OnceLock<&'static str>>,
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
        Ok(Self {
            http: http_client(&cfg.transport, None, resends.clone())?,
            url: url.into(),
            auth,
            api_key,
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

    async fn drive(
        &self,
        body: Vec<u8>,
        spec: &RequestSpec,
        clock: &RunClock,
        rec: &mut TraceRecord,
        st: &mut StreamState,
    ) -> Outcome {
        let cfg = &*self.cfg;
        let mut req = self
            .http
            .post(&*self.url)
            .header(CONTENT_TYPE, "application/json")
            .header("x-request-id", spec.request_id.as_str())
            .body(body);
        if cfg.endpoint == crate::Endpoint::Messages {
            // Anthropic's headers: the key as x-api-key, and the API version.
            req = req.header("anthropic-version", "2023-06-01");
            if let Some(k) = &self.api_key {
                req = req.header("x-api-key", k.clone());
            }
        } else if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let sent = Instant::now();
        let deadline = sent + cfg.timeout;
        rec.sent_ns = Some(clock.offset_ns(sent.into_std()));
        let mut resp = match timeout_at(deadline, req.send()).await {
            Err(_) => {
                return Outcome::fail(
                    ErrorKind::Timeout,
                    format!("no response headers within {:?}", cfg.timeout),
                );
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Outcome::fail(ErrorKind::Timeout, error_chain(&e));
            }
            Ok(Err(e)) => return Outcome::fail(ErrorKind::Connect, error_chain(&e)),
            Ok(Ok(r)) => r,
        };
        let headers_at = Instant::now();
        rec.headers_ns = Some(clock.offset_ns(headers_at.into_std()));
        self.version.get_or_init(|| match resp.version() {
            reqwest::Version::HTTP_2 => "HTTP/2",
            reqwest::Version::HTTP_3 => "HTTP/3",
            reqwest::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        });
        let status = resp.status();
        rec.status = i16::try_from(status.as_u16()).ok();
        let is_json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let mut last_read = headers_at;
        let mut buf: Vec<u8> = Vec::new();
        let keep_body = !status.is_success() || is_json;
        let mut n_reads: u64 = 0;
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
            let next = timeout_at(read_deadline, resp.chunk()).await;
            // One clock read per read(), before any parsing.
            let now = Instant::now();
            let t_ns = clock.offset_ns(now.into_std());
            match next {
                Err(_) if st.done() => break,
                Err(_) => {
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
                    let kind = if status.is_success() {
                        ErrorKind::Stream
                    } else {
                        ErrorKind::of_status(status.as_u16())
                    };
                    let msg = if status.is_success() {
                        format!(
                            "connection error mid-stream after {} events: {}",
                            st.chunks(),
                            error_chain(&e)
                        )
                    } else {
                        http_error_msg(status.as_u16(), &buf, cfg)
                    };
                    return Outcome {
                        end: now,
                        error: Some((kind, msg)),
                    };
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(bytes))) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    n_reads += 1;
                    if n_reads == 1 {
                        rec.first_byte_ns = Some(t_ns);
                    }
                    last_read = now;
                    if keep_body {
                        if buf.len() < MAX_ERROR_BODY || is_json && status.is_success() {
                            buf.extend_from_slice(&bytes);
                        }
                    } else {
                        st.feed(&bytes, t_ns);
                        if st.has_error() {
                            // An error event ends the request: stop reading so end_ns is its time.
                            return Outcome {
                                end: now,
                                error: None,
                            };
                        }
                    }
                }
            }
        }
        let end = Instant::now();
        if !status.is_success() {
            return Outcome {
                end,
                error: Some((
                    ErrorKind::of_status(status.as_u16()),
                    http_error_msg(status.as_u16(), &buf, cfg),
                )),
            };
        }
        if is_json {
            st.feed_json(&buf, clock.offset_ns(last_read.into_std()));
        }
        Outcome { end, error: None }
    }
}
