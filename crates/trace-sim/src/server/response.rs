//! The response to one request: the SSE stream (vLLM's framing: a role event, one event per
//! token, a usage event, `[DONE]`) or a non-streaming body, each logging its ground truth.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::BytesMut;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::request::{Api, Job};
use super::scheduler::Source;
use super::{AppState, error_response, json_response};
use crate::fault::Fault;
use crate::truth::TruthRecord;

pub(super) async fn non_streaming(s: Arc<AppState>, job: Job, mut source: Source) -> Response {
    let stop = s.shutdown.clone();
    if job.fault == Some(Fault::Stall) {
        stop.cancelled().await;
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            "simulator is shutting down",
        );
    }
    let mut got = 0u32;
    let mut text = String::with_capacity(job.output_tokens as usize * 6);
    loop {
        match source.next(&stop).await {
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
    let mut usage = serde_json::json!({
        "prompt_tokens": job.prompt_tokens, "total_tokens": job.prompt_tokens + got, "completion_tokens": got,
    });
    if let Some(c) = job.cached_tokens {
        usage["prompt_tokens_details"] = serde_json::json!({ "cached_tokens": c });
    }
    let model: Value = serde_json::from_str(&job.model).unwrap_or(Value::Null);
    let choice = match job.api {
        Api::Chat => serde_json::json!({
            "index": 0, "message": {"role": "assistant", "content": text},
            "logprobs": null, "finish_reason": job.finish_reason, "stop_reason": null,
        }),
        // Native routes always stream; a non-streaming answer is completions-shaped.
        _ => serde_json::json!({
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
    let now = s.clock.now_unix_ns();
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
pub(super) struct SseStream {
    s: Arc<AppState>,
    job: Job,
    source: Source,
    stop: CancellationToken,
    phase: Phase,
    /// Tokens streamed so far (also the next word's number).
    sent: u32,
    /// The token count at which a mid-stream fault fires.
    fault_at: u32,
    fault_done: bool,
    keepalive_due: bool,
    /// Bytes before the token text of a content event.
    prefix: String,
    event_ns: Vec<i64>,
    event_tokens: Vec<u32>,
    status: u16,
}

impl SseStream {
    pub(super) fn new(s: Arc<AppState>, job: Job, source: Source) -> Self {
        let prefix = match job.api {
            Api::Chat => format!(
                "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"",
                job.id, job.created, job.model
            ),
            Api::Completions => format!(
                "data: {{\"id\":\"{}\",\"object\":\"text_completion\",\"created\":{},\"model\":{},\"choices\":[{{\"index\":0,\"text\":\"",
                job.id, job.created, job.model
            ),
            // Native events are written whole by `native_event`.
            _ => String::new(),
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
            phase: if matches!(job.api, Api::Chat | Api::Responses | Api::Messages) {
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
            self.event_ns.push(self.s.clock.now_unix_ns());
            self.event_tokens.push(tokens);
        }
        Some(Ok(bytes))
    }

    fn usage_json(&self, completion: u32) -> String {
        let mut details = if self.job.reasoning > 0 {
            format!(
                ",\"completion_tokens_details\":{{\"reasoning_tokens\":{}}}",
                self.job.reasoning.min(completion)
            )
        } else {
            String::new()
        };
        if let Some(c) = self.job.cached_tokens {
            let _ = write!(
                details,
                ",\"prompt_tokens_details\":{{\"cached_tokens\":{c}}}"
            );
        }
        format!(
            "{{\"prompt_tokens\":{},\"total_tokens\":{},\"completion_tokens\":{}{details}}}",
            self.job.prompt_tokens,
            self.job.prompt_tokens + completion,
            completion
        )
    }

    /// Prompt tokens served from the prefix cache (0 when caching is off).
    fn cached(&self) -> u32 {
        self.job.cached_tokens.unwrap_or(0)
    }

    /// A typed event (Responses, Messages): the SSE `event:` line and its data.
    fn typed(ty: &str, data: &str) -> String {
        format!("event: {ty}\ndata: {data}\n\n")
    }

    /// The opening event of a typed route.
    fn opening(&self) -> String {
        match self.job.api {
            Api::Responses => Self::typed(
                "response.created",
                &format!(
                    "{{\"type\":\"response.created\",\"sequence_number\":0,\"response\":{{\"id\":\"{}\",\"object\":\"response\",\"created_at\":{},\"status\":\"in_progress\",\"model\":{},\"output\":[],\"usage\":null}}}}",
                    self.job.id, self.job.created, self.job.model
                ),
            ),
            _ => Self::typed(
                "message_start",
                &format!(
                    "{{\"type\":\"message_start\",\"message\":{{\"id\":\"{}\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":{},\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":{},\"output_tokens\":1}}}}}}",
                    self.job.id,
                    self.job.model,
                    // Anthropic counts cache reads apart from input_tokens.
                    self.job.prompt_tokens - self.cached(),
                    self.cached()
                ),
            ),
        }
    }

    /// The closing events of a typed route (usage and finish).
    fn closing(&self) -> String {
        let length = self.job.finish_reason == "length";
        match self.job.api {
            Api::Responses => {
                let (ty, status, why) = if length {
                    (
                        "response.incomplete",
                        "incomplete",
                        "{\"reason\":\"max_output_tokens\"}",
                    )
                } else {
                    ("response.completed", "completed", "null")
                };
                Self::typed(
                    ty,
                    &format!(
                        "{{\"type\":\"{ty}\",\"response\":{{\"id\":\"{}\",\"object\":\"response\",\"status\":\"{status}\",\"incomplete_details\":{why},\"model\":{},\"usage\":{{\"input_tokens\":{},\"input_tokens_details\":{{\"cached_tokens\":{}}},\"output_tokens\":{},\"output_tokens_details\":{{\"reasoning_tokens\":{}}},\"total_tokens\":{}}}}}}}",
                        self.job.id,
                        self.job.model,
                        self.job.prompt_tokens,
                        self.cached(),
                        self.sent,
                        self.job.reasoning.min(self.sent),
                        self.job.prompt_tokens + self.sent
                    ),
                )
            }
            _ => Self::typed(
                "message_delta",
                &format!(
                    "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}",
                    if length { "max_tokens" } else { "end_turn" },
                    self.sent
                ),
            ),
        }
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

    pub(super) async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            match self.phase {
                Phase::Role if self.job.api != Api::Chat => {
                    self.phase = Phase::Tokens;
                    let b = self.opening();
                    return self.event(Bytes::from(b), 0);
                }
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
                        match self.source.next(&self.stop).await {
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
                    if self.job.api.native() {
                        let b = self.native_event(got, finished);
                        self.sent += got;
                        if finished {
                            self.phase = match self.job.api {
                                Api::Sglang => Phase::Done,
                                Api::Responses | Api::Messages => Phase::Usage,
                                _ => Phase::End,
                            };
                            self.s.gauges.success.fetch_add(1, Ordering::Relaxed);
                        }
                        self.keepalive_due = true;
                        return self.event(Bytes::from(b), got);
                    }
                    let mut b = BytesMut::with_capacity(self.prefix.len() + 96 + 8 * got as usize);
                    if self.sent < self.job.reasoning {
                        // The thinking phase: the same chunk, its text as reasoning_content.
                        b.extend_from_slice(
                            self.prefix
                                .replace(
                                    "\"delta\":{\"content\":",
                                    "\"delta\":{\"reasoning_content\":",
                                )
                                .as_bytes(),
                        );
                    } else {
                        b.extend_from_slice(self.prefix.as_bytes());
                    }
                    for i in self.sent..self.sent + got {
                        let _ = write!(b, "w{i} ");
                    }
                    self.sent += got;
                    let close = match self.job.api {
                        Api::Chat => "\"}",
                        _ => "\"",
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
                Phase::Usage if matches!(self.job.api, Api::Responses | Api::Messages) => {
                    self.phase = Phase::Done;
                    let b = self.closing();
                    return self.event(Bytes::from(b), 0);
                }
                Phase::Done if matches!(self.job.api, Api::Responses | Api::Messages) => {
                    self.phase = Phase::End;
                    if self.job.api == Api::Messages {
                        return Some(Ok(Bytes::from(Self::typed(
                            "message_stop",
                            "{\"type\":\"message_stop\"}",
                        ))));
                    }
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

    /// One event of a native route carrying tokens `sent..sent + got` (`w<k> ` words), in the
    /// engine's own shape (see `Api`).
    fn native_event(&self, got: u32, finished: bool) -> String {
        let words =
            |from: u32, to: u32| -> String { (from..to).map(|i| format!("w{i} ")).collect() };
        let (from, to) = (self.sent, self.sent + got);
        match self.job.api {
            Api::Tgi => {
                let (generated, details) = if finished {
                    (
                        serde_json::to_string(&words(0, to)).unwrap_or_default(),
                        format!(
                            "{{\"finish_reason\":\"{}\",\"generated_tokens\":{to},\"input_length\":{},\"seed\":null}}",
                            self.job.finish_reason, self.job.prompt_tokens
                        ),
                    )
                } else {
                    ("null".into(), "null".into())
                };
                // TGI writes `data:` with no space, one token per event.
                format!(
                    "data:{{\"index\":{to},\"token\":{{\"id\":{to},\"text\":\"{}\",\"logprob\":0.0,\"special\":false}},\"top_tokens\":null,\"generated_text\":{generated},\"details\":{details}}}\n\n",
                    words(from, to)
                )
            }
            Api::Responses => {
                let (ty, item) = if from < self.job.reasoning {
                    ("response.reasoning_text.delta", "rs")
                } else {
                    ("response.output_text.delta", "msg")
                };
                Self::typed(
                    ty,
                    &format!(
                        "{{\"type\":\"{ty}\",\"item_id\":\"{item}_{}\",\"output_index\":0,\"content_index\":0,\"delta\":\"{}\",\"sequence_number\":{to}}}",
                        self.job.id,
                        words(from, to)
                    ),
                )
            }
            Api::Messages => {
                let (index, kind, field) = if from < self.job.reasoning {
                    (0, "thinking_delta", "thinking")
                } else {
                    (1, "text_delta", "text")
                };
                Self::typed(
                    "content_block_delta",
                    &format!(
                        "{{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"{kind}\",\"{field}\":\"{}\"}}}}",
                        words(from, to)
                    ),
                )
            }
            Api::Triton => format!(
                "data: {{\"model_name\":{},\"model_version\":\"1\",\"sequence_end\":{finished},\"sequence_id\":0,\"sequence_start\":false,\"text_output\":\"{}\"}}\n\n",
                self.job.model,
                words(from, to)
            ),
            _ => {
                let finish = if finished {
                    format!(
                        "{{\"type\":\"{}\",\"length\":{to}}}",
                        self.job.finish_reason
                    )
                } else {
                    "null".into()
                };
                format!(
                    "data: {{\"text\":\"{}\",\"output_ids\":[],\"meta_info\":{{\"id\":\"{}\",\"finish_reason\":{finish},\"prompt_tokens\":{},\"completion_tokens\":{to},\"cached_tokens\":{}}},\"index\":0}}\n\n",
                    words(0, to),
                    self.job.id,
                    self.job.prompt_tokens,
                    self.cached()
                )
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
                self.stop.cancelled().await;
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
