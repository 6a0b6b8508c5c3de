//! Server queue metrics: a minimal Prometheus text-format parser that maps the queue gauges of
//! vLLM, SGLang, LMDeploy, TGI and llama.cpp (reference table 4.7) onto one
//! [`trace_format::ServerSample`], a scraper for `GET /metrics`, and the loop that samples it
//! every second during a run ([`sample_every`]). The same loop samples a DCGM exporter's GPU
//! telemetry ([`parse_dcgm`], [`sample_gpus_every`]).
//!
//! Hand-written rather than a Prometheus crate: about twenty names are read, and the crates
//! allocate per sample. Counts (waiting, running, preemptions) are summed over label sets, since
//! a server with several engines or data-parallel ranks exposes one series each; KV usage is a
//! fraction, so it is averaged over label sets instead.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trace_format::{GpuReading, GpuSample, ServerSample};
use trace_sys::RunClock;

use crate::Error;

/// One scrape: the normalised queue state, and which engine's names it was read from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// The queue state (`t_ns`: when the scrape answered, on the run's clock; 0 from
    /// [`parse_prometheus`]).
    pub sample: ServerSample,
    /// Engine recognised from the metric names: vllm, sglang, lmdeploy, tgi, llamacpp; None when
    /// no known name was seen.
    pub engine: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq)]
enum Concept {
    Waiting,
    Running,
    Kv,
    KvFallback,
    Preempt,
    PrefixQueries,
    PrefixHits,
}

/// (metric name, engine, concept). Order matters only for the engine name: the first engine
/// whose metric is seen wins.
const MAP: &[(&str, &str, Concept)] = &[
    ("vllm:num_requests_waiting", "vllm", Concept::Waiting),
    ("vllm:num_requests_running", "vllm", Concept::Running),
    ("vllm:kv_cache_usage_perc", "vllm", Concept::Kv),
    ("vllm:gpu_cache_usage_perc", "vllm", Concept::KvFallback),
    ("vllm:num_preemptions_total", "vllm", Concept::Preempt),
    ("vllm:num_preemptions", "vllm", Concept::Preempt),
    (
        "vllm:prefix_cache_queries_total",
        "vllm",
        Concept::PrefixQueries,
    ),
    ("vllm:prefix_cache_hits_total", "vllm", Concept::PrefixHits),
    // The names before vLLM 0.10 (tokens, as now).
    (
        "vllm:gpu_prefix_cache_queries_total",
        "vllm",
        Concept::PrefixQueries,
    ),
    (
        "vllm:gpu_prefix_cache_hits_total",
        "vllm",
        Concept::PrefixHits,
    ),
    ("sglang:num_queue_reqs", "sglang", Concept::Waiting),
    ("sglang:num_running_reqs", "sglang", Concept::Running),
    ("sglang:token_usage", "sglang", Concept::Kv),
    ("sglang:num_retracted_reqs", "sglang", Concept::Preempt),
    (
        "lmdeploy:num_requests_waiting",
        "lmdeploy",
        Concept::Waiting,
    ),
    (
        "lmdeploy:num_requests_running",
        "lmdeploy",
        Concept::Running,
    ),
    ("lmdeploy:gpu_cache_usage_perc", "lmdeploy", Concept::Kv),
    ("tgi_queue_size", "tgi", Concept::Waiting),
    ("tgi_batch_current_size", "tgi", Concept::Running),
    ("llamacpp:requests_deferred", "llamacpp", Concept::Waiting),
    ("llamacpp:requests_processing", "llamacpp", Concept::Running),
];

#[derive(Default)]
struct Acc {
    sum: f64,
    n: u32,
}

impl Acc {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }
    fn sum(&self) -> Option<f64> {
        (self.n > 0).then_some(self.sum)
    }
    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / f64::from(self.n))
    }
}

/// Parses Prometheus text exposition (or OpenMetrics) and maps the known queue gauges.
/// Unknown metrics, comments, malformed lines and NaN values are skipped.
pub fn parse_prometheus(text: &str) -> Scrape {
    let mut acc: [Acc; 7] = Default::default();
    let mut engine: Option<&str> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        let Some(&(_, eng, concept)) = MAP.iter().find(|(n, _, _)| *n == name) else {
            continue;
        };
        let rest = &line[name_end..];
        let rest = if rest.starts_with('{') {
            // Label values may hold '}' inside quotes; find the closing brace outside quotes.
            match close_brace(rest) {
                Some(i) => &rest[i + 1..],
                None => continue,
            }
        } else {
            rest
        };
        let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if v.is_nan() {
            continue;
        }
        engine.get_or_insert(eng);
        acc[concept as usize].add(v);
    }
    Scrape {
        sample: ServerSample {
            t_ns: 0,
            waiting: acc[Concept::Waiting as usize].sum(),
            running: acc[Concept::Running as usize].sum(),
            kv_usage: acc[Concept::Kv as usize]
                .mean()
                .or(acc[Concept::KvFallback as usize].mean()),
            preemptions: acc[Concept::Preempt as usize].sum(),
            prefix_queries: acc[Concept::PrefixQueries as usize].sum(),
            prefix_hits: acc[Concept::PrefixHits as usize].sum(),
        },
        engine,
    }
}

/// The DCGM exporter's names ([`GpuReading`]'s fields).
const DCGM: [&str; 4] = [
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_SM_CLOCK",
];

/// Parses a DCGM exporter's Prometheus text into one reading per GPU (by its `gpu` label, else
/// `UUID`), in the order first seen; empty when no DCGM name is present.
pub fn parse_dcgm(text: &str) -> Vec<GpuReading> {
    let mut out: Vec<GpuReading> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        let Some(field) = DCGM.iter().position(|n| *n == &line[..name_end]) else {
            continue;
        };
        let rest = &line[name_end..];
        let (labels, value) = match rest.strip_prefix('{') {
            Some(_) => match close_brace(rest) {
                Some(i) => (&rest[1..i], &rest[i + 1..]),
                None => continue,
            },
            None => ("", rest),
        };
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
        else {
            continue;
        };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        let gpu = label("gpu")
            .or_else(|| label("UUID"))
            .unwrap_or_else(|| "0".into());
        let r = match out.iter().position(|r| r.gpu == gpu) {
            Some(i) => &mut out[i],
            None => {
                out.push(GpuReading {
                    gpu,
                    ..GpuReading::default()
                });
                out.last_mut().expect("just pushed")
            }
        };
        *[
            &mut r.mem_used_mib,
            &mut r.util_pct,
            &mut r.power_w,
            &mut r.sm_clock_mhz,
        ][field] = Some(v);
    }
    out
}

fn close_brace(s: &str) -> Option<usize> {
    let mut in_q = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if in_q => esc = true,
            '"' => in_q = !in_q,
            '}' if !in_q => return Some(i),
            _ => {}
        }
    }
    None
}

/// A reusable `/metrics` scraper (one HTTP connection pool for a run's periodic scrapes).
#[derive(Debug, Clone)]
pub struct MetricsScraper {
    http: reqwest::Client,
    url: String,
}

impl MetricsScraper {
    /// A scraper of `url` (the full metrics URL, e.g. `http://host:8000/metrics`), each scrape
    /// bounded by `timeout`.
    pub fn new(url: &str, transport: &crate::Transport, timeout: Duration) -> Result<Self, Error> {
        let http = transport
            .builder()?
            .timeout(timeout)
            .retry(reqwest::retry::never())
            .build()
            .map_err(|e| Error::Build(e.to_string()))?;
        Ok(Self {
            http,
            url: url.to_string(),
        })
    }

    /// Scrapes once; `t_ns` is stamped when the body has arrived, as an offset on `clock`.
    /// A 404 is [`Error::NoMetrics`]: the server exposes no Prometheus metrics.
    pub async fn scrape(&self, clock: &RunClock) -> Result<Scrape, Error> {
        let text = self.text().await?;
        let mut s = parse_prometheus(&text);
        s.sample.t_ns = clock.now_ns();
        Ok(s)
    }

    /// The metrics page's text.
    async fn text(&self) -> Result<String, Error> {
        let resp = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| Error::Http {
                url: self.url.clone(),
                msg: crate::error_chain(&e),
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Error::NoMetrics {
                url: self.url.clone(),
            });
        }
        if !status.is_success() {
            return Err(Error::Status {
                url: self.url.clone(),
                status: status.as_u16(),
            });
        }
        resp.text().await.map_err(|e| Error::Http {
            url: self.url.clone(),
            msg: crate::error_chain(&e),
        })
    }
}

/// Scrapes `url` once (5 s timeout); `t_ns` is 0. For periodic sampling use [`sample_every`].
pub async fn scrape(url: &str) -> Result<Scrape, Error> {
    let s = MetricsScraper::new(url, &crate::Transport::default(), Duration::from_secs(5))?;
    let mut q = s.scrape(&RunClock::start()).await?;
    q.sample.t_ns = 0;
    Ok(q)
}

/// What [`sample_every`] collected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// One sample per successful scrape that held a known queue gauge.
    pub samples: Vec<ServerSample>,
    /// The engine the names belong to.
    pub engine: Option<&'static str>,
}

/// Scrapes `url` every `period` until `stop` is cancelled, and once more then (when a scrape
/// has answered before). A 404 (no metrics) ends sampling quietly; so do five failures before
/// any success. A slow scrape is not followed by catch-up scrapes.
pub async fn sample_every(
    url: String,
    transport: crate::Transport,
    period: Duration,
    clock: RunClock,
    stop: CancellationToken,
) -> Samples {
    let mut engine = None;
    let samples = every(&url, &transport, period, clock, stop, |text, t_ns| {
        let q = parse_prometheus(text);
        let s = q.sample;
        // A /metrics without any known queue gauge is not an inference engine's.
        (s.waiting.is_some() || s.running.is_some() || s.kv_usage.is_some()).then(|| {
            engine = engine.or(q.engine);
            ServerSample { t_ns, ..s }
        })
    })
    .await;
    Samples { samples, engine }
}

/// Scrapes a DCGM exporter's `url` every `period` until `stop` is cancelled, as
/// [`sample_every`] does a server's: the GPUs' memory, utilisation, power and clock.
pub async fn sample_gpus_every(
    url: String,
    transport: crate::Transport,
    period: Duration,
    clock: RunClock,
    stop: CancellationToken,
) -> Vec<GpuSample> {
    every(&url, &transport, period, clock, stop, |text, t_ns| {
        let gpus = parse_dcgm(text);
        (!gpus.is_empty()).then_some(GpuSample { t_ns, gpus })
    })
    .await
}

/// The sampling loop of [`sample_every`] and [`sample_gpus_every`]: `keep` turns a page's text
/// (and when it arrived) into a sample, or None to drop it.
async fn every<T>(
    url: &str,
    transport: &crate::Transport,
    period: Duration,
    clock: RunClock,
    stop: CancellationToken,
    mut keep: impl FnMut(&str, i64) -> Option<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    let Ok(scraper) = MetricsScraper::new(url, transport, Duration::from_secs(2)) else {
        return out;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failures = 0u32;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        // One more scrape at the stop, from a server that answered before: counters
        // (preemptions, prefix-cache hits) then end at the run's end, not a period before it.
        if stopping && out.is_empty() {
            break;
        }
        match scraper.text().await {
            Ok(text) => {
                if let Some(s) = keep(&text, clock.now_ns()) {
                    out.push(s);
                }
            }
            Err(Error::NoMetrics { .. }) => break,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::info!("metrics scrape failed: {e}");
                }
                if failures >= 5 && out.is_empty() {
                    break;
                }
            }
        }
        if stopping {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcgm_readings_per_gpu() {
        let t = r#"# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a",device="nvidia0",modelName="NVIDIA H200",Hostname="h"} 81234
DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-b",device="nvidia1"} 120
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a"} 97
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a"} 612.5
DCGM_FI_DEV_SM_CLOCK{gpu="0"} 1980
DCGM_FI_DEV_MEM_COPY_UTIL{gpu="0"} 40
"#;
        let g = parse_dcgm(t);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].gpu, "0");
        assert_eq!(
            (
                g[0].mem_used_mib,
                g[0].util_pct,
                g[0].power_w,
                g[0].sm_clock_mhz
            ),
            (Some(81234.0), Some(97.0), Some(612.5), Some(1980.0))
        );
        assert_eq!((g[1].mem_used_mib, g[1].util_pct), (Some(120.0), None));
        assert!(parse_dcgm("vllm:num_requests_waiting 3\n").is_empty());
    }

    #[test]
    fn vllm_two_engines_summed_kv_averaged() {
        let t = r#"# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 4.0
vllm:num_requests_running{engine="0",model_name="m"} 8
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7
vllm:gpu_cache_usage_perc{engine="1",model_name="m"} 0.1
vllm:num_preemptions_total{engine="0",model_name="a}b"} 2 1700000000
vllm:time_to_first_token_seconds_bucket{le="0.001"} 0
"#;
        let q = parse_prometheus(t);
        assert_eq!(q.engine, Some("vllm"));
        let s = q.sample;
        assert_eq!(s.waiting, Some(7.0));
        assert_eq!(s.running, Some(8.0));
        assert!((s.kv_usage.unwrap_or(0.0) - 0.6).abs() < 1e-9);
        assert_eq!(s.preemptions, Some(2.0));
    }

    #[test]
    fn other_engines() {
        let p = |t: &str| {
            let q = parse_prometheus(t);
            (q.sample, q.engine.unwrap_or(""))
        };
        let (s, e) = p(
            "sglang:num_queue_reqs{tp_rank=\"0\"} 5\nsglang:num_running_reqs 2\nsglang:token_usage 0.25\nsglang:num_retracted_reqs 1\n",
        );
        assert_eq!(
            (e, s.waiting, s.running, s.kv_usage, s.preemptions),
            ("sglang", Some(5.0), Some(2.0), Some(0.25), Some(1.0))
        );
        let (s, e) = p(
            "lmdeploy:num_requests_waiting 1\nlmdeploy:num_requests_running 2\nlmdeploy:gpu_cache_usage_perc 0.3\n",
        );
        assert_eq!(
            (e, s.waiting, s.running, s.kv_usage, s.preemptions),
            ("lmdeploy", Some(1.0), Some(2.0), Some(0.3), None)
        );
        let (s, e) = p("tgi_queue_size 9\ntgi_batch_current_size 4\n");
        assert_eq!(
            (e, s.waiting, s.running, s.kv_usage),
            ("tgi", Some(9.0), Some(4.0), None)
        );
        let (s, e) = p("llamacpp:requests_deferred 2\nllamacpp:requests_processing 4\n");
        assert_eq!(
            (e, s.waiting, s.running),
            ("llamacpp", Some(2.0), Some(4.0))
        );
        let (s, _) = p("vllm:gpu_cache_usage_perc 0.4\n");
        assert_eq!(s.kv_usage, Some(0.4));
        let (s, e) = p("garbage line\nfoo 1\n");
        assert_eq!((s, e), (ServerSample::default(), ""));
    }

    #[tokio::test]
    async fn a_404_ends_sampling_with_no_samples_and_no_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            sample_every(
                url,
                crate::Transport::default(),
                Duration::from_millis(10),
                RunClock::start(),
                CancellationToken::new(),
            ),
        )
        .await
        .expect("a 404 ends sampling at once");
        assert!(got.samples.is_empty() && got.engine.is_none());
    }
}
