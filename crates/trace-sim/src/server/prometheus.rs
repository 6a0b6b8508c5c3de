//! `/metrics`: the simulator's gauges and counters in Prometheus text, under vLLM's names, so
//! the scraper reads it as it reads vLLM.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;

pub(super) async fn metrics(State(s): State<Arc<AppState>>) -> Response {
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
    if let Some(c) = &s.prefix {
        let (queries, hits) = {
            let c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (c.queries, c.hits)
        };
        metric(
            "vllm:prefix_cache_queries_total",
            "counter",
            "Prefix cache queries, in terms of number of queried tokens.",
            queries as f64,
        );
        metric(
            "vllm:prefix_cache_hits_total",
            "counter",
            "Prefix cache hits, in terms of number of cached tokens.",
            hits as f64,
        );
    }
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
