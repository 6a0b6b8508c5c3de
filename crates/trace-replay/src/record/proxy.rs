//! One proxied exchange: read the request, forward it upstream, stream the response back read
//! by read, and hand the row to the writer. Each exchange runs in its own task, so a client that
//! goes away before the upstream answers still leaves a `cancelled` row.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use trace_client::offset_ns;
use trace_format::TraceRecord;

use super::capture::{Capture, RequestInfo, Route};
use super::{InFlight, STAGE, Shared};

/// Request bodies larger than this are refused with 413 (they are buffered to be parsed).
const MAX_REQUEST_BODY: usize = 64 << 20;
/// Upstream reads queued towards one client before the proxy stops reading upstream.
const CHANNEL_READS: usize = 8;

/// The response body: upstream reads handed over by the exchange task.
pub(crate) struct ProxyBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

fn full(status: StatusCode, body: Bytes, headers: HeaderMap) -> Response<ProxyBody> {
    let (tx, rx) = mpsc::channel(1);
    if !body.is_empty() {
        let _ = tx.try_send(Ok(body));
    }
    let mut resp = Response::new(ProxyBody { rx });
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
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let arrival = Instant::now();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(exchange(shared, req, arrival, tx));
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
    req: Request<Incoming>,
    arrival: Instant,
    reply: oneshot::Sender<Response<ProxyBody>>,
) {
    let _in_flight = InFlight::new(&shared);
    let t0 = offset_ns(shared.run_start, arrival);
    let (parts, body) = req.into_parts();
    let path_q = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let route = Route::of(&parts.method, parts.uri.path());

    let mut row = None;
    if let Some(route) = route {
        if shared.stop.is_stopped() {
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
                shared.stop.stop();
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
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request")
            } else {
                (StatusCode::BAD_REQUEST, "cancelled")
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
    let upstream_req = shared
        .http
        .request(parts.method.clone(), &url)
        .headers(forwardable(&parts.headers))
        .body(body);
    let mut reply = reply;
    let mut abort = shared.abort.subscribe();
    let sent = tokio::select! {
        r = tokio::time::timeout(shared.idle_timeout, upstream_req.send()) => Some(r),
        () = reply.closed() => None,
        _ = abort.wait_for(|v| *v) => None,
    };
    let mut resp = match sent {
        None => {
            let msg = "client disconnected or proxy stopped before the upstream answered";
            finish(&shared, row, None, Some(("cancelled", msg.into())), 499).await;
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
                Some(("timeout", msg.clone())),
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
            let kind = if e.is_timeout() { "timeout" } else { "connect" };
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
    let (tx, rx) = mpsc::channel(CHANNEL_READS);
    let mut out = Response::new(ProxyBody { rx });
    *out.status_mut() = status;
    *out.headers_mut() = forwardable(resp.headers());
    if let Some(cl) = resp.headers().get(header::CONTENT_LENGTH) {
        out.headers_mut().insert(header::CONTENT_LENGTH, cl.clone());
    }
    let mut capture = row.as_ref().map(|_| {
        Capture::new(
            status.as_u16(),
            content_type.as_deref(),
            shared.store_outputs,
        )
    });
    if let Some(r) = &mut row {
        r.rec.headers_ns = Some(offset_ns(shared.run_start, headers_at));
    }
    if reply.send(out).is_err() {
        let msg = "client disconnected before the response started";
        finish(
            &shared,
            row,
            capture,
            Some(("cancelled", msg.into())),
            status,
        )
        .await;
        return;
    }

    let mut failure: Option<(&'static str, String)> = None;
    let mut reads: u64 = 0;
    loop {
        let next = tokio::select! {
            biased;
            _ = abort.wait_for(|v| *v) => {
                failure = Some(("cancelled", format!("cut by the drain timeout after {reads} reads")));
                break;
            }
            // The upstream is polled before the client's departure: a client that read a
            // complete response (a Content-Length body) and closed at once must not turn that
            // exchange into a cancellation. A client that leaves mid-stream is still seen, by
            // the failed forward below or here when the upstream is idle.
            r = tokio::time::timeout(shared.idle_timeout, resp.chunk()) => r,
            () = tx.closed() => {
                failure = Some(("cancelled", format!("client disconnected after {reads} reads")));
                break;
            }
        };
        // One clock read per upstream read, before forwarding or parsing.
        let t_ns = offset_ns(shared.run_start, Instant::now());
        match next {
            Err(_) => {
                let msg = format!("upstream silent for {:?}", shared.idle_timeout);
                let _ = tx.send(Err(std::io::Error::other(msg.clone()))).await;
                failure = Some(("timeout", format!("{msg} after {reads} reads")));
                break;
            }
            Ok(Err(e)) => {
                let msg = format!(
                    "upstream connection error after {reads} reads: {}",
                    trace_client::error_chain(&e)
                );
                let _ = tx.send(Err(std::io::Error::other(msg.clone()))).await;
                failure = Some(("stream", msg));
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(bytes))) => {
                if bytes.is_empty() {
                    continue;
                }
                reads += 1;
                if reads == 1
                    && let Some(r) = &mut row
                {
                    r.rec.first_byte_ns = Some(t_ns);
                }
                // Forward first: parsing the copy happens after the bytes are on their way.
                let forwarded = tokio::select! {
                    r = tx.send(Ok(bytes.clone())) => r.is_ok(),
                    _ = abort.wait_for(|v| *v) => false,
                };
                if let Some(c) = &mut capture {
                    c.feed(&bytes, t_ns);
                }
                if !forwarded {
                    failure = Some((
                        "cancelled",
                        format!("client disconnected after {reads} reads"),
                    ));
                    break;
                }
            }
        }
    }
    drop(tx);
    finish(&shared, row, capture, failure, status).await;
}

/// Completes the row (if this exchange has one) and sends it to the writer.
async fn finish(
    shared: &Shared,
    row: Option<Row>,
    capture: Option<Capture>,
    failure: Option<(&'static str, String)>,
    status: impl Into<StatusCodeLike>,
) {
    let Some(Row { mut rec, info, .. }) = row else {
        return;
    };
    let end_ns = offset_ns(shared.run_start, Instant::now());
    rec.status = i16::try_from(status.into().0).ok();
    match capture {
        Some(c) => c.finish_into(&mut rec, &info, failure, end_ns, shared.store_outputs),
        None => {
            rec.end_ns = Some(end_ns);
            if let Some((k, m)) = failure {
                rec.error_kind = Some(k.to_string());
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
