//! trace-selfcheck: `trace selfcheck`, which measures this client's own timing error against
//! the simulator's ground truth, on this machine, through the real replay path; and the
//! recording proxy's overhead benchmark ([`proxy`]), which measures what `trace record` adds.
//!
//! [`run`] starts trace-sim's fixed time model with ground-truth logging on one CPU, drives it
//! with [`trace_replay::run`] (Poisson) from a runtime pinned to the other CPUs, reads the run
//! file back, and [`join`]s each row with the server's truth line ([`trace_sim::TruthRecord`])
//! by request id on one clock.
//!
//! It is a harness above the others: it depends on trace-replay, trace-record, trace-sim,
//! trace-stats and trace-sys, and nothing depends on it but the command line.
//!
//! What is compared (all times as UNIX ns; the client's are `RUN_START_UNIX_NS + offset`, the
//! server's are its own wall anchor + monotonic offset; both anchors are one wall-clock reading
//! taken next to a monotonic one, so they differ by the gap between two such readings, well
//! under a microsecond):
//! - arrival error, per token event: client arrival of the k-th token-bearing event minus the
//!   time the server handed the k-th token-bearing event to its socket;
//! - TTFT error: client TTFT (first token event - `sent_ns`) minus server TTFT (first token event
//!   handed to the socket - request arrival at the server's handler), i.e. request transit plus
//!   first-event transit;
//! - ITL error, per consecutive pair of token events: client gap minus server gap;
//! - send lag: `sent_ns - scheduled_ns` (against the schedule, the client's clock only).
//!
//! Token events are paired by rank (the k-th event with tokens > 0 on each side); a request
//! whose counts differ is counted in `event_count_mismatches` and paired up to the shorter side.

pub mod proxy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trace_client::ClientConfig;
use trace_format::TraceRecord;
use trace_format::derive::token_events;
use trace_replay::dispatch::Counters;
use trace_replay::workload::{RandomSpec, WorkloadSpec};
use trace_replay::{Arrival, ReplayConfig};
use trace_sim::TruthRecord;

/// Why a selfcheck could not run or be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid setting; the message names the value.
    #[error("{0}")]
    Config(String),
    /// A scratch file or folder could not be made.
    #[error("cannot write {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A thread or runtime could not be started, or one panicked.
    #[error("{0}")]
    Thread(String),
    /// The run file lacks what the join needs.
    #[error("{}: {problem}", path.display())]
    Run {
        /// The run file.
        path: PathBuf,
        /// What is missing.
        problem: String,
    },
    /// The simulator failed (start, truth file).
    #[error(transparent)]
    Sim(#[from] trace_sim::Error),
    /// The replay failed.
    #[error(transparent)]
    Replay(#[from] trace_replay::Error),
    /// The recording proxy failed.
    #[error(transparent)]
    Record(#[from] trace_record::Error),
    /// A trace could not be read.
    #[error(transparent)]
    Format(#[from] trace_format::Error),
}

/// Prompt length of selfcheck requests: short, so the client spends its time on the stream.
const INPUT_LEN: u32 = 16;

/// A selfcheck's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfcheckConfig {
    /// Simulated time to first token.
    pub ttft: Duration,
    /// Simulated time between tokens.
    pub itl: Duration,
    /// Output tokens per request.
    pub tokens: u32,
    /// Target concurrency; sets the rate when `rate` is None.
    pub concurrency: usize,
    /// Request rate (req/s); None: `concurrency / (ttft + tokens * itl)`.
    pub rate: Option<f64>,
    /// Requests to send; None: `rate * duration`.
    pub requests: Option<u64>,
    /// Length of the sending window when `requests` is None.
    pub duration: Duration,
    /// Seed of the Poisson schedule.
    pub seed: u64,
    /// Pin the simulator and the client to different CPUs when there are at least two.
    pub pin: bool,
}

impl Default for SelfcheckConfig {
    fn default() -> Self {
        Self {
            ttft: Duration::from_millis(50),
            itl: Duration::from_millis(10),
            tokens: 100,
            concurrency: 1000,
            rate: None,
            requests: None,
            duration: Duration::from_secs(10),
            seed: 0,
            pin: true,
        }
    }
}

impl SelfcheckConfig {
    /// One request's simulated lifetime: `ttft + tokens * itl`.
    pub fn request_secs(&self) -> f64 {
        self.ttft.as_secs_f64() + f64::from(self.tokens) * self.itl.as_secs_f64()
    }

    /// The request rate used: the given one, or the one that keeps `concurrency` in flight.
    pub fn effective_rate(&self) -> f64 {
        self.rate
            .unwrap_or_else(|| self.concurrency as f64 / self.request_secs().max(1e-9))
    }

    /// The number of requests sent: the given one, or `rate * duration` (at least 1).
    pub fn effective_requests(&self) -> u64 {
        self.requests.unwrap_or_else(|| {
            (self.effective_rate() * self.duration.as_secs_f64())
                .round()
                .max(1.0) as u64
        })
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), Error> {
        if self.tokens == 0 {
            return Err(Error::Config("invalid --tokens '0': must be >= 1".into()));
        }
        if self.concurrency == 0 {
            return Err(Error::Config(
                "invalid --concurrency '0': must be >= 1".into(),
            ));
        }
        let r = self.effective_rate();
        if !(r.is_finite() && r > 0.0) {
            return Err(Error::Config(format!(
                "invalid rate '{r}': must be a finite number > 0"
            )));
        }
        if self.requests.is_none() && self.duration.is_zero() {
            return Err(Error::Config("invalid --duration '0s': must be > 0".into()));
        }
        Ok(())
    }
}

/// The raw per-event and per-request errors of a join, in ns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Joined {
    /// Client arrival minus server write, per paired token event.
    pub arrival_err_ns: Vec<f64>,
    /// Client TTFT minus server TTFT, per request.
    pub ttft_err_ns: Vec<f64>,
    /// Client gap minus server gap, per consecutive pair of token events.
    pub itl_err_ns: Vec<f64>,
    /// `sent_ns - scheduled_ns`, per sent request.
    pub lag_ns: Vec<f64>,
    /// Rows in the run file.
    pub requests: u64,
    /// Rows that finished without an error.
    pub ok: u64,
    /// Rows with an error.
    pub failed: u64,
    /// Successful rows without a truth line.
    pub unmatched: u64,
    /// Matched rows whose token-event counts differ from the truth's.
    pub event_count_mismatches: u64,
    /// Token-bearing events the client saw (all rows).
    pub client_token_events: u64,
    /// Tokens the client counted (all rows).
    pub client_tokens: u64,
    /// First and last `sent_ns` (client offsets).
    pub sent_span_ns: Option<(i64, i64)>,
    /// First and last token event arrival (client offsets).
    pub event_span_ns: Option<(i64, i64)>,
}

fn widen(span: &mut Option<(i64, i64)>, t: i64) {
    *span = Some(match *span {
        Some((a, b)) => (a.min(t), b.max(t)),
        None => (t, t),
    });
}

/// Joins the client's rows (offsets from `run_start_unix_ns`) with the truth by request id.
pub fn join(
    run_start_unix_ns: i64,
    records: &[TraceRecord],
    truth: &HashMap<String, TruthRecord>,
) -> Joined {
    let mut j = Joined::default();
    for r in records {
        j.requests += 1;
        if let Some(s) = r.sent_ns {
            j.lag_ns.push((s - r.scheduled_ns) as f64);
            widen(&mut j.sent_span_ns, s);
        }
        let events: Vec<(i64, i32)> = token_events(&r.chunk_ns, &r.chunk_tokens).collect();
        let client: Vec<i64> = events.iter().map(|e| e.0).collect();
        j.client_token_events += client.len() as u64;
        j.client_tokens += events.iter().map(|e| e.1 as u64).sum::<u64>();
        for &t in &client {
            widen(&mut j.event_span_ns, t);
        }
        if r.error_kind.is_some() {
            j.failed += 1;
            continue;
        }
        j.ok += 1;
        let Some(t) = truth.get(&r.request_id) else {
            j.unmatched += 1;
            continue;
        };
        let server: Vec<i64> = t
            .event_unix_ns
            .iter()
            .zip(&t.event_tokens)
            .filter(|(_, k)| **k > 0)
            .map(|(t, _)| *t)
            .collect();
        if server.len() != client.len() {
            j.event_count_mismatches += 1;
        }
        let client_abs: Vec<i64> = client.iter().map(|c| run_start_unix_ns + c).collect();
        for (c, s) in client_abs.iter().zip(&server) {
            j.arrival_err_ns.push((c - s) as f64);
        }
        if let (Some(sent), Some(c0), Some(s0)) = (r.sent_ns, client.first(), server.first()) {
            let client_ttft = c0 - sent;
            let server_ttft = s0 - t.arrival_unix_ns;
            j.ttft_err_ns.push((client_ttft - server_ttft) as f64);
        }
        let n = client_abs.len().min(server.len());
        for k in 1..n {
            let cg = client_abs[k] - client_abs[k - 1];
            let sg = server[k] - server[k - 1];
            j.itl_err_ns.push((cg - sg) as f64);
        }
    }
    j
}

/// One timing error's spread, in µs: signed percentiles (the error can be either side of
/// zero), the P99 of its absolute value (what the bounds are checked against) and the largest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorDist {
    /// Samples.
    pub n: u64,
    /// Median (signed).
    pub median_us: f64,
    /// P1 (signed).
    pub p1_us: f64,
    /// P99 (signed).
    pub p99_us: f64,
    /// P99 - P1.
    pub spread_us: f64,
    /// P99 of the absolute value (what the bounds are checked against).
    pub p99_abs_us: f64,
    /// Largest absolute value.
    pub max_abs_us: f64,
}

impl ErrorDist {
    /// Summarises values in ns; None when empty.
    pub fn of_ns(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().map(|x| x / 1e3).collect();
        let d = trace_stats::dist_of(&mut v, &[1.0, 50.0, 99.0]);
        let (p1_us, median_us, p99_us) = (d.pct(1.0)?, d.pct(50.0)?, d.pct(99.0)?);
        let mut a: Vec<f64> = v.iter().map(|x| x.abs()).collect();
        let abs = trace_stats::dist_of(&mut a, &[99.0]);
        let (p99_abs_us, max_abs_us) = (abs.pct(99.0)?, abs.max?);
        Some(Self {
            n: v.len() as u64,
            median_us,
            p1_us,
            p99_us,
            spread_us: p99_us - p1_us,
            p99_abs_us,
            max_abs_us,
        })
    }
}

/// Which CPUs the simulator and the client ran on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pinning {
    /// The simulator thread's CPU.
    pub sim_cpu: usize,
    /// The client runtime's CPUs.
    pub client_cpus: Vec<usize>,
}

/// The result of one selfcheck run (the `--format json` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelfcheckReport {
    /// Simulated TTFT, ms.
    pub ttft_ms: f64,
    /// Simulated inter-token time, ms.
    pub itl_ms: f64,
    /// Output tokens per request.
    pub tokens: u32,
    /// Target concurrency (None for a run selfcheck did not send: the replay chose it).
    pub concurrency_target: Option<usize>,
    /// Requested rate, req/s (None for a run selfcheck did not send).
    pub rate_requested: Option<f64>,
    /// Achieved send rate: `(sent - 1) / (last send - first send)`, req/s.
    pub rate_achieved: Option<f64>,
    /// Rows written.
    pub requests: u64,
    /// Rows without an error.
    pub ok: u64,
    /// Rows with an error.
    pub failed: u64,
    /// Successful rows without a truth line.
    pub unmatched: u64,
    /// Matched rows whose token-event count differs from the server's.
    pub event_count_mismatches: u64,
    /// Token-bearing events the client saw.
    pub token_events: u64,
    /// `tokens * requests`.
    pub token_events_expected: u64,
    /// Token events per second over the span of their arrivals.
    pub event_rate_per_s: Option<f64>,
    /// Most requests in flight at once.
    pub peak_concurrency: i64,
    /// CPU pinning, None when not pinned.
    pub pinning: Option<Pinning>,
    /// Client arrival minus server write, per token event.
    pub arrival_error: Option<ErrorDist>,
    /// Client TTFT minus server TTFT, per request.
    pub ttft_error: Option<ErrorDist>,
    /// Client gap minus server gap, per consecutive token-event pair.
    pub itl_error: Option<ErrorDist>,
    /// `sent_ns - scheduled_ns`, per request.
    pub send_lag: Option<ErrorDist>,
}

impl SelfcheckReport {
    /// Builds the report from a join.
    pub fn from_join(
        cfg: &SelfcheckConfig,
        j: &Joined,
        peak_concurrency: i64,
        pinning: Option<Pinning>,
    ) -> Self {
        let sent = j.lag_ns.len() as f64;
        let rate_achieved = j
            .sent_span_ns
            .filter(|(a, b)| b > a && sent > 1.0)
            .map(|(a, b)| (sent - 1.0) / ((b - a) as f64 / 1e9));
        let event_rate_per_s = j
            .event_span_ns
            .filter(|(a, b)| b > a)
            .map(|(a, b)| j.client_token_events as f64 / ((b - a) as f64 / 1e9));
        Self {
            ttft_ms: cfg.ttft.as_secs_f64() * 1e3,
            itl_ms: cfg.itl.as_secs_f64() * 1e3,
            tokens: cfg.tokens,
            concurrency_target: Some(cfg.concurrency),
            rate_requested: Some(cfg.effective_rate()),
            rate_achieved,
            requests: j.requests,
            ok: j.ok,
            failed: j.failed,
            unmatched: j.unmatched,
            event_count_mismatches: j.event_count_mismatches,
            token_events: j.client_token_events,
            token_events_expected: u64::from(cfg.tokens) * j.requests,
            event_rate_per_s,
            peak_concurrency,
            pinning,
            arrival_error: ErrorDist::of_ns(&j.arrival_err_ns),
            ttft_error: ErrorDist::of_ns(&j.ttft_err_ns),
            itl_error: ErrorDist::of_ns(&j.itl_err_ns),
            send_lag: ErrorDist::of_ns(&j.lag_ns),
        }
    }

    /// Whether the run is within the bounds: every request ok and matched, and the P99 of the
    /// absolute TTFT and ITL errors at most the given bounds (None: not checked).
    pub fn within(&self, max_ttft: Option<Duration>, max_itl: Option<Duration>) -> bool {
        let ok_dist = |d: &Option<ErrorDist>, bound: Option<Duration>| match bound {
            None => true,
            Some(b) => d
                .as_ref()
                .is_some_and(|d| d.p99_abs_us <= b.as_secs_f64() * 1e6),
        };
        self.failed == 0
            && self.unmatched == 0
            && ok_dist(&self.ttft_error, max_ttft)
            && ok_dist(&self.itl_error, max_itl)
    }
}

/// A unique scratch folder under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p =
            std::env::temp_dir().join(format!("trace-selfcheck-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })?;
        Ok(Self(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one selfcheck: simulator and client in this process, on separate CPUs when possible.
/// Blocks until the run is over (about `duration + ttft + tokens * itl`).
pub fn run(cfg: &SelfcheckConfig) -> Result<SelfcheckReport, Error> {
    cfg.validate()?;
    let scratch = Scratch::new()?;
    let truth_path = scratch.0.join("truth.jsonl");
    let run_path = scratch.0.join("run.parquet");

    let cpus = if cfg.pin {
        trace_sys::allowed_cpus()
    } else {
        Vec::new()
    };
    let pinning = (cpus.len() >= 2).then(|| Pinning {
        sim_cpu: cpus[0],
        client_cpus: cpus[1..].to_vec(),
    });

    let mut sim_cfg = trace_sim::SimConfig::fixed(cfg.ttft, cfg.itl);
    sim_cfg.truth = Some(truth_path.clone());
    let model = sim_cfg.model.clone();
    // Linux threads inherit their creator's affinity: the simulator's thread (and its truth
    // writer) is spawned from a helper pinned to the simulator's CPU.
    let sim_cpu = pinning.as_ref().map(|p| p.sim_cpu);
    let sim = std::thread::Builder::new()
        .name("selfcheck-sim-start".into())
        .spawn(move || {
            if let Some(c) = sim_cpu {
                trace_sys::pin_current(&[c]);
            }
            trace_sim::spawn(sim_cfg, ([127, 0, 0, 1], 0).into())
        })
        .map_err(|e| Error::Thread(format!("cannot start the simulator thread: {e}")))?
        .join()
        .map_err(|_| Error::Thread("simulator start thread panicked".into()))??;

    let mut client = ClientConfig::new(sim.url(), model);
    client.ignore_eos = true;
    // Generous: a request that times out would be a failed row, not a timing error.
    client.timeout = Duration::from_secs(60)
        .saturating_add(cfg.itl.saturating_mul(cfg.tokens.saturating_mul(4)))
        .saturating_add(cfg.ttft.saturating_mul(4));
    let rcfg = ReplayConfig {
        client,
        workload: WorkloadSpec::Random(RandomSpec {
            input_len: INPUT_LEN,
            output_len: cfg.tokens,
            range_ratio: 1.0,
        }),
        rates: vec![cfg.effective_rate()],
        arrival: Arrival::Poisson,
        requests: Some(cfg.effective_requests()),
        seed: cfg.seed,
        label: Some("selfcheck".into()),
        scrape_metrics: false,
        // The simulator serves from this process: two open files per request.
        fds_per_request: 2,
        ..ReplayConfig::new(sim.url(), run_path.clone())
    };
    let client_cpus = pinning.as_ref().map(|p| p.client_cpus.clone());
    let counters = Arc::new(Counters::default());
    let c2 = counters.clone();
    let replay = std::thread::Builder::new()
        .name("selfcheck-client".into())
        .spawn(move || -> Result<trace_replay::Summary, Error> {
            let workers = match &client_cpus {
                Some(c) => {
                    trace_sys::pin_current(c);
                    c.len()
                }
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers.max(1))
                .enable_all()
                .build()
                .map_err(|e| Error::Thread(format!("cannot start the client runtime: {e}")))?;
            Ok(rt.block_on(trace_replay::run(rcfg, c2, CancellationToken::new()))?)
        })
        .map_err(|e| Error::Thread(format!("cannot start the client thread: {e}")))?
        .join()
        .map_err(|_| Error::Thread("client thread panicked".into()));
    // Closing the simulator flushes the truth file.
    let shut = sim.shutdown();
    let summary = replay??;
    shut?;
    let j = join_files(&run_path, &truth_path)?;
    Ok(SelfcheckReport::from_join(
        cfg,
        &j,
        summary.max_in_flight,
        pinning,
    ))
}

/// The most requests a run had in flight at once (sent, not yet ended), from its rows.
pub fn peak_in_flight(run: &Path) -> Result<i64, Error> {
    let (_, records) = trace_format::read_all(run)?;
    let mut edges: Vec<(i64, i64)> = records
        .iter()
        .filter_map(|r| Some([(r.sent_ns?, 1), (r.end_ns.unwrap_or(i64::MAX), -1)]))
        .flatten()
        .collect();
    // Ends before starts at one instant: a request that ended as another began was not
    // concurrent with it.
    edges.sort_unstable_by_key(|&(t, d)| (t, d));
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    Ok(peak)
}

/// Reads a run file and a truth file and joins them ([`join`]).
pub fn join_files(run: &Path, truth: &Path) -> Result<Joined, Error> {
    let (meta, records) = trace_format::read_all(run)?;
    let run_start = meta.run_start_unix_ns().ok_or_else(|| Error::Run {
        path: run.to_path_buf(),
        problem: "no run start time in the metadata".into(),
    })?;
    let truth = trace_sim::read_truth(truth)?;
    Ok(join(run_start, &records, &truth))
}

/// Concurrency levels of a sweep: 100, 250, 500, 1000, 2000, 4000, ... up to `max` (inclusive).
pub fn sweep_levels(max: usize) -> Vec<usize> {
    let mut out: Vec<usize> = [100, 250, 500]
        .into_iter()
        .chain((0..20).map(|k| 1000usize << k))
        .take_while(|&c| c < max)
        .collect();
    out.push(max);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, sched: i64, sent: i64, chunks: &[(i64, i32)]) -> TraceRecord {
        TraceRecord {
            request_id: id.into(),
            scheduled_ns: sched,
            sent_ns: Some(sent),
            chunk_ns: chunks.iter().map(|c| c.0).collect(),
            chunk_tokens: chunks.iter().map(|c| c.1).collect(),
            ..TraceRecord::default()
        }
    }

    fn truth() -> HashMap<String, TruthRecord> {
        TRUTH
            .lines()
            .map(|l| {
                let t: TruthRecord = serde_json::from_str(l).unwrap();
                (t.request_id.clone(), t)
            })
            .collect()
    }

    const TRUTH: &str = r#"{"request_id":"a","arrival_unix_ns":1000100,"event_unix_ns":[1000150,1050000,1060000,1070000,1070010],"event_tokens":[0,1,1,1,0],"status":200}
{"request_id":"b","arrival_unix_ns":2000000,"event_unix_ns":[2050000],"event_tokens":[1],"status":200}
"#;

    #[test]
    fn join_arithmetic() {
        let truth = truth();
        assert_eq!(truth.len(), 2);
        // Run start 1_000_000 UNIX ns: client offsets add to it.
        let a = rec(
            "a",
            0,
            40,
            &[(200, 0), (50_030, 1), (60_010, 1), (70_050, 1), (70_100, 0)],
        );
        let j = join(1_000_000, &[a], &truth);
        assert_eq!((j.requests, j.ok, j.failed, j.unmatched), (1, 1, 0, 0));
        assert_eq!(j.event_count_mismatches, 0);
        assert_eq!(j.client_token_events, 3);
        assert_eq!(j.arrival_err_ns, vec![30.0, 10.0, 50.0]);
        // Client TTFT 50_030 - 40 = 49_990; server TTFT 1_050_000 - 1_000_100 = 49_900.
        assert_eq!(j.ttft_err_ns, vec![90.0]);
        // Client gaps 9_980 and 10_040 against 10_000 and 10_000.
        assert_eq!(j.itl_err_ns, vec![-20.0, 40.0]);
        assert_eq!(j.lag_ns, vec![40.0]);
    }

    #[test]
    fn join_counts_failures_mismatches_and_unmatched() {
        let truth = truth();
        let mut failed = rec("a", 0, 0, &[]);
        failed.error_kind = Some(trace_format::ErrorKind::Connect);
        // Two token events where the server wrote one.
        let b = rec("b", 0, 0, &[(1_050_000, 1), (1_060_000, 1)]);
        let c = rec("c", 0, 0, &[(10, 1)]);
        let j = join(1_000_000, &[failed, b, c], &truth);
        assert_eq!((j.requests, j.ok, j.failed, j.unmatched), (3, 2, 1, 1));
        assert_eq!(j.event_count_mismatches, 1);
        assert_eq!(j.arrival_err_ns, vec![0.0]);
        assert!(j.itl_err_ns.is_empty());
    }

    #[test]
    fn dist_and_bounds() {
        let d = ErrorDist::of_ns(&[-2000.0, 1000.0, 3000.0]).unwrap();
        assert_eq!(d.n, 3);
        assert!((d.median_us - 1.0).abs() < 1e-9);
        assert!((d.max_abs_us - 3.0).abs() < 1e-9);
        assert!(d.spread_us > 0.0 && d.p99_abs_us <= d.max_abs_us);
        assert!(ErrorDist::of_ns(&[]).is_none());

        let cfg = SelfcheckConfig {
            tokens: 3,
            ..SelfcheckConfig::default()
        };
        let truth = truth();
        let a = rec("a", 0, 40, &[(50_030, 1), (60_010, 1), (70_050, 1)]);
        let r = SelfcheckReport::from_join(&cfg, &join(1_000_000, &[a], &truth), 1, None);
        assert_eq!(r.token_events, 3);
        assert_eq!(r.token_events_expected, 3);
        assert!(r.within(None, None));
        assert!(r.within(
            Some(Duration::from_micros(1)),
            Some(Duration::from_micros(1))
        ));
        assert!(!r.within(Some(Duration::from_nanos(1)), None));
        assert!(!r.within(None, Some(Duration::from_nanos(1))));
    }

    #[test]
    fn rate_and_levels() {
        let c = SelfcheckConfig {
            concurrency: 500,
            tokens: 1000,
            ..SelfcheckConfig::default()
        };
        assert!((c.effective_rate() - 500.0 / 10.05).abs() < 1e-6);
        assert_eq!(
            SelfcheckConfig {
                duration: Duration::from_secs(2),
                rate: Some(10.0),
                ..c.clone()
            }
            .effective_requests(),
            20
        );
        assert_eq!(sweep_levels(1000), vec![100, 250, 500, 1000]);
        assert_eq!(sweep_levels(300), vec![100, 250, 300]);
        assert_eq!(sweep_levels(50), vec![50]);
        assert!(SelfcheckConfig { tokens: 0, ..c }.validate().is_err());
    }
}
