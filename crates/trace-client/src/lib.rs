//! trace-client: engine protocols for the `trace` load generator.
//!
//! Files, one concern each: [`url`] (the one URL normaliser), [`request`] (routes, settings,
//! request bodies), `send` (the request function [`Client::send`], which fills one
//! [`trace_format::TraceRecord`] per request), `h1` (its lean HTTP/1.1 client for plain
//! `http://` targets; HTTPS and HTTP/2 go through reqwest), [`stream`] (response accounting,
//! [`StreamState`]: per-event arrival times and token counts, usage, errors), [`sse`] (the SSE
//! parser, byte-arrival timestamps taken before parsing), [`classify`] (what one event carries),
//! `tokenizer` (Hugging Face tokenizers: [`HfTokenizer`], [`random_prompt`]) and [`metrics`]
//! (the `/metrics` scraper and its sampling loop), [`nvml`] (this host's GPUs through the
//! driver), [`server`] (what the target is and offers:
//! its engine, models, `/tokenize`), [`transport`] (TLS, extra headers, HTTP version: one
//! builder for every client).
//!
//! It depends on trace-format and trace-sys; it must not depend on polars, clap or axum:
//! trace-replay and trace-record drive it, trace-cli renders.
//!
//! `error_kind` codes ([`trace_format::ErrorKind`]) written by [`Client::send`]:
//! - `connect`: no HTTP response was obtained (refused, reset or closed before the headers);
//! - `timeout`: the request deadline (`ClientConfig::timeout`) or the idle limit between reads
//!   (`ClientConfig::idle_timeout`) passed; the chunks received so far are kept;
//! - `http_4xx` / `http_5xx`: an error status; `error_msg` holds the server's message, and for a
//!   422 names the request field the server refused;
//! - `stream`: an error event after HTTP 200 (OpenAI `{"error":..}`, legacy
//!   `{"object":"error"}`, TGI `{"error":"..."}`, llama.cpp `error:` line), a transport error
//!   mid-stream (reset), or a stream that ended with neither `[DONE]` nor a finish reason
//!   (truncated). A stream that ends without `[DONE]` after a finish reason is a success
//!   (`transformers serve` does this);
//! - `parse`: the stream completed but some event's data was not valid JSON (the event is kept
//!   as a chunk with 0 tokens), or a non-streaming body was not valid JSON;
//! - `cancelled`: the caller's cancel future fired ([`Client::send_cancellable`]);
//! - `invalid_request`: the request could not be built (token ids for a chat prompt without a
//!   tokenizer, a request id that cannot be a header); nothing was sent.

pub mod barrier;
pub mod classify;
mod h1;
pub mod metrics;
pub mod nvml;
pub mod request;
mod send;
pub mod server;
pub mod sse;
pub mod stream;
mod tokenizer;
pub mod transport;
pub mod url;

pub use classify::{Classified, EventKind, TokenCounter, Usage, classify};
pub use metrics::{
    MetricsScraper, Samples, Scrape, parse_dcgm, parse_prometheus, sample_every, sample_gpus_every,
    scrape,
};
pub use request::{
    ClientConfig, Endpoint, Message, Prompt, QueryTemplate, RequestSpec, Role, prompt_hash,
};
pub use send::{Client, lean_http1, list_models, resending_client};
pub use server::{ServerApi, ServerInfo};
pub use stream::StreamState;
pub use tokenizer::{HfTokenizer, random_prompt, word_level_tokenizer_json};
pub use transport::Transport;
pub use url::{ServerUrl, redact};

use std::path::PathBuf;

/// Errors of this crate. Request failures are not errors: they are rows (see the crate docs).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client could not be built.
    #[error("cannot build http client: {0}")]
    Build(String),
    /// No model was given and none was asked for.
    #[error("no model: give --model, or ask the server's /v1/models first")]
    NoModel,
    /// A base URL that cannot be used.
    #[error("invalid base url '{}': {msg}", url::redact(url))]
    Url {
        /// The URL.
        url: String,
        /// Why.
        msg: String,
    },
    /// A tokenizer file could not be loaded or used.
    #[error("tokenizer {}: {msg}", path.display())]
    Tokenizer {
        /// The tokenizer.json path.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// A transport error talking to a URL.
    #[error("request to {} failed: {msg}", url::redact(url))]
    Http {
        /// The URL.
        url: String,
        /// The error chain.
        msg: String,
    },
    /// An unexpected HTTP status from a URL.
    #[error("{} answered HTTP {status}", url::redact(url))]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The server answered `GET /metrics` with 404: it exposes no Prometheus metrics.
    #[error(
        "no /metrics at {} (HTTP 404): the server exposes no Prometheus metrics",
        url::redact(url)
    )]
    NoMetrics {
        /// The metrics URL.
        url: String,
    },
    /// A certificate or key file that cannot be used.
    #[error("{}: {msg}", path.display())]
    Tls {
        /// The file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// A response body that is not what the route promises.
    #[error("unexpected response from {}: {msg}", url::redact(url))]
    Body {
        /// The URL.
        url: String,
        /// Why.
        msg: String,
    },
}

/// The error and its sources joined with `: `, since reqwest's and hyper's Display hide the
/// cause (`error sending request` without `connection refused`). Also used by the recording
/// proxy for its upstream errors.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        src = c.source();
    }
    s
}
