//! One proxied exchange: read the request, forward it upstream, stream the response back read
//! by read, and hand the row to the writer. Until the upstream's response head arrives the
//! exchange runs in its own task, so a client that goes away while the engine queues the request
//! still leaves a `cancelled` row. After it, the response body *is* the upstream body ([`Relay`]):
//! the client connection's task polls the upstream read, stamps it and writes it out, with no
//! task or channel between the two sockets, and the row is finished when the relay ends or is
//! dropped.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use trace_format::{ErrorKind, TraceRecord};

use super::capture::{Capture, RequestInfo, Route};
use super::{InFlight, STAGE, Shared};

/// Request bodies larger than this are refused with 413 (they are buffered to be parsed).
const MAX_REQUEST_BODY: usize = 64 << 20;

/// A response body: one the proxy wrote itself, or the upstream's, relayed.
pub(crate) enum ProxyBody {
    Full(Option<Bytes>),
    Relay(Box<Relay>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Relay(r) => r.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Relay(r) => r.done || r.upstream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Full(b) => {
                hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Self::Relay(r) => r.upstream.size_hint(),
        }
    }
}

fn full(status: StatusCode, body: Bytes, headers: HeaderMap) -> Response<ProxyBody> {
    let body = (!body.is_empty()).then_some(body);
    let mut resp = Response::new(ProxyBody::Full(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// An OpenAI-style error body from the proxy itself.
fn proxy_error(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": { "message": msg, "type": "proxy_error", "code": status.as_u16() }
    });
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    full(status, Bytes::from(body.to_string()), h)
}

/// Hop-by-hop headers (RFC 9110 7.6.1) and those the HTTP stacks set themselves.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn forwardable(h: &HeaderMap) -> HeaderMap {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::with_capacity(h.len());
    for (k, v) in h {
        if !is_hop_by_hop(k) && !named.iter().any(|n| n == k.as_str()) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// The hyper service: runs the exchange in its own task and waits for its response head.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    http: reqwest::Client,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let arrival = Instant::now();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(exchange(shared, http, req, arrival, tx));
    Ok(rx.await.unwrap_or_else(|_| {
        proxy_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "recording proxy: the exchange ended without a response",
        )
    }))
}

/// The row being built, with what is needed to finish and send it.
struct Row {
    rec: TraceRecord,
    route: Route,
    info: RequestInfo,
}

async fn exchange(
    shared: Arc<Shared>,
    http: reqwest::Client,
    req: Request<Incoming>,
    arrival: Instant,
    reply: oneshot::Sender<Response<ProxyBody>>,
) {
    let in_flight = InFlight::new(&shared);
    let t0 = shared.clock.offset_ns(arrival.into_std());
    let (parts, body) = req.into_parts();
    let path_q = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let route = Route::of(
        &parts.method,
        parts.uri.path(),
        shared.custom_route.as_ref().map(|(p, _)| p.as_str()),
    );

    let mut row = None;
    if let Some(route) = route {
        if shared.stop.is_cancelled() {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(proxy_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "recording proxy is stopping",
            ));
            return;
        }
        let n = shared.accepted.fetch_add(1, Ordering::SeqCst);
        if let Some(max) = shared.max_requests {
            if n >= max {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(proxy_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "recording proxy reached --max-requests",
                ));
                return;
            }
            if n + 1 == max {
                shared.stop.cancel();
            }
        }
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| format!("rec-{n:08}"), str::to_string);
        row = Some(Row {
            rec: TraceRecord {
                request_id,
                stage: STAGE.to_string(),
                scheduled_ns: t0,
                sent_ns: Some(t0),
                ..Default::default()
            },
            route,
            info: RequestInfo::default(),
        });
    } else {
        shared.unrecorded.fetch_add(1, Ordering::Relaxed);
    }

    let body = match http_body_util::Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e.is::<http_body_util::LengthLimitError>();
            let (status, kind) = if too_big {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::InvalidRequest)
            } else {
                (StatusCode::BAD_REQUEST, ErrorKind::Cancelled)
            };
            let msg = format!("cannot read the request body: {e}");
            finish(&shared, row, None, Some((kind, msg.clone())), status).await;
            let _ = reply.send(proxy_error(status, &msg));
            return;
        }
    };
    if let Some(r) = &mut row {
        r.info = RequestInfo::parse(r.route, &body);
        r.info.fill(r.route, &mut r.rec, shared.store_prompts);
    }

    let url = format!("{}{path_q}", shared.upstream);
    let upstream_req = http
        .request(parts.method.clone(), &url)
        .headers(forwardable(&parts.headers))
        .body(body);
    let mut reply = reply;
    let abort = shared.abort.clone();
    let sent = tokio::select! {
        r = tokio::time::timeout(shared.idle_timeout, upstream_req.send()) => Some(r),
        () = reply.closed() => None,
        () = abort.cancelled() => None,
    };
    let resp = match sent {
        None => {
            let msg = "client disconnected or proxy stopped before the upstream answered";
            finish(
                &shared,
                row,
                None,
                Some((ErrorKind::Cancelled, msg.into())),
                499,
            )
            .await;
            return;
        }
        Some(Err(_)) => {
            let msg = format!(
                "upstream {url} sent no response headers within {:?}",
                shared.idle_timeout
            );
            finish(
                &shared,
                row,
                None,
                Some((ErrorKind::Timeout, msg.clone())),
                StatusCode::GATEWAY_TIMEOUT,
            )
            .await;
            let _ = reply.send(proxy_error(StatusCode::GATEWAY_TIMEOUT, &msg));
            return;
        }
        Some(Ok(Err(e))) => {
            let msg = format!(
                "upstream {url} unreachable: {}",
                trace_client::error_chain(&e)
            );
            let kind = if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Connect
            };
            finish(
                &shared,
                row,
                None,
                Some((kind, msg.clone())),
                StatusCode::BAD_GATEWAY,
            )
            .await;
            let _ = reply.send(proxy_error(StatusCode::BAD_GATEWAY, &msg));
            return;
        }
        Some(Ok(Ok(r))) => r,
    };
    let headers_at = Instant::now();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let capture = row.as_ref().map(|r| {
        Capture::new(
            r.route,
            shared.custom_route.as_ref().and_then(|(_, f)| f.as_deref()),
            status.as_u16(),
            content_type.as_deref(),
            shared.store_outputs,
        )
    });
    if let Some(r) = &mut row {
        r.rec.headers_ns = Some(shared.clock.offset_ns(headers_at.into_std()));
    }
    let mut out_headers = forwardable(resp.headers());
    if let Some(cl) = resp.headers().get(header::CONTENT_LENGTH) {
        out_headers.insert(header::CONTENT_LENGTH, cl.clone());
    }
    let upstream = Response::<reqwest::Body>::from(resp).into_body();
    let relay = Relay {
        idle: Box::pin(tokio::time::sleep_until(headers_at + shared.idle_timeout)),
        abort: Box::pin(abort.cancelled_owned()),
        shared,
        upstream,
        row,
        capture,
        status,
        reads: 0,
        last_read: headers_at,
        done: false,
        in_flight: Some(in_flight),
    };
    let mut out = Response::new(ProxyBody::Relay(Box::new(relay)));
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    if let Err(out) = reply.send(out)
        && let ProxyBody::Relay(mut r) = out.into_body()
    {
        r.end(Some((
            ErrorKind::Cancelled,
            "client disconnected before the response started".into(),
        )));
    }
}

/// The upstream's response body on its way to the client, recorded read by read.
pub(crate) struct Relay {
    shared: Arc<Shared>,
    upstream: reqwest::Body,
    row: Option<Row>,
    capture: Option<Capture>,
    status: StatusCode,
    reads: u64,
    /// The last upstream read (or the response head): the idle timeout counts from it.
    last_read: Instant,
    /// Fires at `last_read + idle_timeout` or earlier; re-armed lazily, not on every read.
    idle: Pin<Box<Sleep>>,
    /// Resolves when the drain timeout cuts in-flight exchanges.
    abort: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
    /// Held until the row reaches the writer, so that shutdown waits for it.
    in_flight: Option<InFlight>,
}

impl Relay {
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.abort.as_mut().poll(cx).is_ready() {
            let msg = format!("cut by the drain timeout after {} reads", self.reads);
            self.end(Some((ErrorKind::Cancelled, msg.clone())));
            return Poll::Ready(Some(Err(std::io::Error::other(msg))));
        }
        loop {
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(bytes) if bytes.is_empty() => continue,
                        Ok(bytes) => bytes,
                        // Trailers pass through unrecorded.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    // One clock read per upstream read, before it is parsed or written out.
                    let now = Instant::now();
                    let t_ns = self.shared.clock.offset_ns(now.into_std());
                    self.last_read = now;
                    self.reads += 1;
                    if self.reads == 1
                        && let Some(r) = &mut self.row
                    {
                        r.rec.first_byte_ns = Some(t_ns);
                    }
                    if let Some(c) = &mut self.capture {
                        c.feed(&frame, t_ns);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(frame))));
                }
                Poll::Ready(Some(Err(e))) => {
                    let msg = format!(
                        "upstream connection error after {} reads: {}",
                        self.reads,
                        trace_client::error_chain(&e)
                    );
                    self.end(Some((ErrorKind::Stream, msg.clone())));
                    return Poll::Ready(Some(Err(std::io::Error::other(msg))));
                }
                Poll::Ready(None) => {
                    self.end(None);
                    return Poll::Ready(None);
                }
                Poll::Pending => break,
            }
        }
        // The upstream is quiet: has it been quiet for too long?
        while self.idle.as_mut().poll(cx).is_ready() {
            let due = self.last_read + self.shared.idle_timeout;
            if due > Instant::now() {
                self.idle.as_mut().reset(due);
                continue;
            }
            let msg = format!("upstream silent for {:?}", self.shared.idle_timeout);
            self.end(Some((
                ErrorKind::Timeout,
                format!("{msg} after {} reads", self.reads),
            )));
            return Poll::Ready(Some(Err(std::io::Error::other(msg))));
        }
        Poll::Pending
    }

    /// Finishes the row (once) and hands it to the writer from a task of its own.
    fn end(&mut self, failure: Option<(ErrorKind, String)>) {
        if self.done {
            return;
        }
        self.done = true;
        let (shared, row, capture) = (self.shared.clone(), self.row.take(), self.capture.take());
        let (status, guard) = (self.status, self.in_flight.take());
        // Inside the runtime unless it is being torn down, when the writer is gone anyway.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                finish(&shared, row, capture, failure, status).await;
                drop(guard);
            });
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // hyper stops polling a body whose length it has written in full, so an upstream at
        // its end is a complete exchange, not a departure.
        let failure = if self.upstream.is_end_stream() {
            None
        } else if self.shared.abort.is_cancelled() {
            Some((
                ErrorKind::Cancelled,
                format!("cut by the drain timeout after {} reads", self.reads),
            ))
        } else {
            Some((
                ErrorKind::Cancelled,
                format!("client disconnected after {} reads", self.reads),
            ))
        };
        self.end(failure);
    }
}

/// Completes the row (if this exchange has one) and sends it to the writer.
async fn finish(
    shared: &Shared,
    row: Option<Row>,
    capture: Option<Capture>,
    failure: Option<(ErrorKind, String)>,
    status: impl Into<StatusCodeLike>,
) {
    let Some(Row { mut rec, info, .. }) = row else {
        return;
    };
    let end_ns = shared.clock.now_ns();
    rec.status = i16::try_from(status.into().0).ok();
    match capture {
        Some(c) => c.finish_into(&mut rec, &info, failure, end_ns, shared.store_outputs),
        None => {
            rec.end_ns = Some(end_ns);
            if let Some((k, m)) = failure {
                rec.error_kind = Some(k);
                rec.error_msg = Some(m);
            }
        }
    }
    if rec.error_kind.is_some() {
        shared.errors.fetch_add(1, Ordering::Relaxed);
    }
    shared.rows.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = shared.sender.send_async(rec).await {
        tracing::error!("cannot record a request: {e}");
    }
}

/// A status code as the row stores it: an HTTP status, or 499 (nginx's "client closed
/// request") when the client left before any response.
struct StatusCodeLike(u16);

impl From<StatusCode> for StatusCodeLike {
    fn from(s: StatusCode) -> Self {
        Self(s.as_u16())
    }
}

impl From<u16> for StatusCodeLike {
    fn from(s: u16) -> Self {
        Self(s)
    }
}
