//! The recording proxy's overhead benchmark (`trace selfcheck --proxy`): what `trace record`
//! adds to the traffic it records, on this machine.
//!
//! It drives the simulator with the real replay client twice, directly and through the proxy,
//! each against its own simulator with ground-truth logging, and joins both runs (and the
//! proxy's own capture) with the truth the way selfcheck does. Per-chunk transit (client read
//! minus server write) and TTFT error then compare the two paths without pairing requests across
//! runs; the proxy-to-client hop is paired per event. With three or more CPUs the simulator and
//! the client get one each and the proxy the rest, as they would be separate processes; with
//! two, the proxy and the client share one. Figures go to docs/benchmarks.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trace_client::ClientConfig;
use trace_format::TraceRecord;
use trace_format::derive::token_events;
use trace_record::RecordConfig;
use trace_replay::ReplayConfig;
use trace_replay::dispatch::Counters;
use trace_replay::workload::{RandomSpec, WorkloadSpec};
use trace_sim::{SimConfig, SimHandle};

use crate::{Error, Joined, Scratch, join_files};

/// Which CPUs each party runs on (empty: unpinned).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cpus {
    /// The simulator's.
    pub sim: Vec<usize>,
    /// The proxy's.
    pub proxy: Vec<usize>,
    /// The client's.
    pub client: Vec<usize>,
}

impl Cpus {
    fn pick() -> Self {
        let c = trace_sys::allowed_cpus();
        match c.len() {
            0 | 1 => Self {
                sim: vec![],
                proxy: vec![],
                client: vec![],
            },
            2 => Self {
                sim: vec![c[0]],
                proxy: vec![c[1]],
                client: vec![c[1]],
            },
            // Four or more: the proxy gets every CPU but the first and the last.
            n => Self {
                sim: vec![c[0]],
                proxy: c[1..n - 1].to_vec(),
                client: vec![c[n - 1]],
            },
        }
    }
}

/// One load the benchmark offers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Load {
    /// Its name in the table.
    pub name: &'static str,
    /// Requests sent.
    pub requests: u64,
    /// Poisson rate, or `inf` for all at once.
    pub rate: f64,
    /// Concurrency cap.
    pub max_concurrency: Option<usize>,
    /// Output tokens per request.
    pub tokens: u32,
}

/// One stream; 500 streams started at once (a burst of new connections); 500 streams in steady
/// state (Poisson 50/s of 10 s streams). All at 20 ms between tokens.
pub const LOADS: [Load; 3] = [
    Load {
        name: "1 stream",
        requests: 20,
        rate: f64::INFINITY,
        max_concurrency: Some(1),
        tokens: 64,
    },
    Load {
        name: "500 at once",
        requests: 500,
        rate: f64::INFINITY,
        max_concurrency: None,
        tokens: 64,
    },
    Load {
        name: "500 steady",
        requests: 1000,
        rate: 50.0,
        max_concurrency: None,
        tokens: 500,
    },
];

/// The benchmark's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyBenchConfig {
    /// Loads to offer, in order.
    pub loads: Vec<Load>,
    /// Simulated TTFT and inter-token time.
    pub ttft: Duration,
    /// Simulated inter-token time.
    pub itl: Duration,
    /// The proxy's serving threads; None: one per proxy CPU.
    pub proxy_threads: Option<usize>,
    /// Keep the runs and truth files in this folder instead of a scratch one.
    pub keep: Option<PathBuf>,
}

impl Default for ProxyBenchConfig {
    fn default() -> Self {
        Self {
            loads: LOADS.to_vec(),
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(20),
            proxy_threads: None,
            keep: None,
        }
    }
}

/// One load's row of the result table; times in µs unless said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadResult {
    /// The load.
    pub load: Load,
    /// Token events joined on the proxied path.
    pub token_events: usize,
    /// Client read minus server write, direct: p50, p99.
    pub transit_direct_us: (f64, f64),
    /// Client read minus server write, through the proxy: p50, p99.
    pub transit_proxied_us: (f64, f64),
    /// Proxied minus direct transit: p50, p99.
    pub added_us: (f64, f64),
    /// Client read minus the proxy's read of the same event, paired: p50, p99.
    pub proxy_to_client_us: (f64, f64),
    /// The capture's recorded time minus the server's write: p50, p99.
    pub recorded_error_us: (f64, f64),
    /// Proxied minus direct TTFT error, ms: p50, p99.
    pub ttft_added_ms: (f64, f64),
}

/// The benchmark's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyReport {
    /// The CPUs used.
    pub cpus: Cpus,
    /// The proxy's serving threads.
    pub proxy_threads: usize,
    /// One row per load.
    pub loads: Vec<LoadResult>,
    /// Where the files were kept, if asked.
    pub kept_in: Option<PathBuf>,
}

/// Runs `f` on a new thread pinned to `cpus` (threads it spawns inherit the pinning).
fn on_cpus<T: Send + 'static>(
    cpus: &[usize],
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let cpus = cpus.to_vec();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if !cpus.is_empty() {
                trace_sys::pin_current(&cpus);
            }
            f()
        })
        .map_err(|e| Error::Thread(format!("cannot start {name}: {e}")))?
        .join()
        .map_err(|_| Error::Thread(format!("{name} panicked")))
}

/// A fixed-time simulator logging its ground truth to `truth`, on `cpus`.
fn truth_sim(
    cpus: &[usize],
    truth: PathBuf,
    ttft: Duration,
    itl: Duration,
) -> Result<SimHandle, Error> {
    Ok(on_cpus(cpus, "bench-sim-start", move || {
        let mut cfg = SimConfig::fixed(ttft, itl);
        cfg.truth = Some(truth);
        trace_sim::spawn(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
    })??)
}

/// Replays `load` against `url` with the real client, on `cpus`, into `out`.
fn replay(cpus: &[usize], url: String, load: Load, out: PathBuf) -> Result<(), Error> {
    let workers = cpus.len().max(1);
    on_cpus(cpus, "bench-client", move || -> Result<(), Error> {
        let mut client = ClientConfig::new(url.clone(), SimConfig::default().model);
        client.ignore_eos = true;
        let cfg = ReplayConfig {
            client,
            workload: WorkloadSpec::Random(RandomSpec {
                input_len: 16,
                output_len: load.tokens,
                range_ratio: 1.0,
            }),
            rates: vec![load.rate],
            requests: Some(load.requests),
            max_concurrency: load.max_concurrency,
            scrape_metrics: false,
            ..ReplayConfig::new(url, out)
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .map_err(|e| Error::Thread(format!("cannot start the client runtime: {e}")))?;
        rt.block_on(trace_replay::run(
            cfg,
            Arc::new(Counters::default()),
            CancellationToken::new(),
        ))?;
        Ok(())
    })?
}

/// Joins a run with a truth file and returns the join, its rows and its run start.
fn joined(run: &Path, truth: &Path) -> Result<(Joined, Vec<TraceRecord>, i64), Error> {
    let j = join_files(run, truth)?;
    let (meta, recs) = trace_format::read_all(run)?;
    let start = meta.run_start_unix_ns().unwrap_or(0);
    Ok((j, recs, start))
}

/// p50 / p99 of values in ns, as µs.
fn p50_p99_us(v: &[f64]) -> (f64, f64) {
    let mut v: Vec<f64> = v.iter().map(|x| x / 1e3).collect();
    let d = trace_stats::dist_of(&mut v, &[50.0, 99.0]);
    (
        d.pct(50.0).unwrap_or(f64::NAN),
        d.pct(99.0).unwrap_or(f64::NAN),
    )
}

/// Token-event arrival times of each row, absolute (UNIX ns), by request id.
fn events_by_id(recs: &[TraceRecord], start: i64) -> HashMap<&str, Vec<i64>> {
    recs.iter()
        .map(|r| {
            let ev = token_events(&r.chunk_ns, &r.chunk_tokens)
                .map(|(t, _)| start + t)
                .collect();
            (r.request_id.as_str(), ev)
        })
        .collect()
}

/// Runs the benchmark. Takes about a minute with the default loads.
pub fn run(cfg: &ProxyBenchConfig) -> Result<ProxyReport, Error> {
    let cpus = Cpus::pick();
    let proxy_threads = cfg.proxy_threads.unwrap_or(cpus.proxy.len().max(1));
    let scratch;
    let dir = match &cfg.keep {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|source| Error::Io {
                path: d.clone(),
                source,
            })?;
            d.clone()
        }
        None => {
            scratch = Scratch::new()?;
            scratch.0.clone()
        }
    };
    let mut rows = Vec::new();
    for load in &cfg.loads {
        let p = |name: &str| dir.join(format!("{}-{name}", load.name.replace(' ', "-")));
        // Direct: the client against its own simulator.
        let sim_a = truth_sim(&cpus.sim, p("truth-direct.jsonl"), cfg.ttft, cfg.itl)?;
        replay(&cpus.client, sim_a.url(), *load, p("direct.parquet"))?;
        sim_a.shutdown()?;

        // Proxied: the same client through the proxy to a second simulator.
        let sim_b = truth_sim(&cpus.sim, p("truth-proxied.jsonl"), cfg.ttft, cfg.itl)?;
        let mut rcfg = RecordConfig::new(sim_b.url(), p("capture.parquet"));
        rcfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        rcfg.threads = proxy_threads;
        let stop = CancellationToken::new();
        let (ltx, lrx) = std::sync::mpsc::channel();
        let s2 = stop.clone();
        let proxy_cpus = cpus.proxy.clone();
        let proxy = std::thread::Builder::new()
            .name("bench-proxy".into())
            .spawn(move || -> Result<(), Error> {
                if !proxy_cpus.is_empty() {
                    trace_sys::pin_current(&proxy_cpus);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Thread(format!("cannot start the proxy runtime: {e}")))?;
                rt.block_on(trace_record::run(rcfg, s2, move |l| {
                    let _ = ltx.send(l.addr);
                }))?;
                Ok(())
            })
            .map_err(|e| Error::Thread(format!("cannot start the proxy: {e}")))?;
        let addr = lrx
            .recv()
            .map_err(|_| Error::Thread("the proxy stopped before listening".into()));
        let replayed = addr.and_then(|a| {
            replay(
                &cpus.client,
                format!("http://{a}"),
                *load,
                p("proxied.parquet"),
            )
        });
        stop.cancel();
        let proxied = proxy
            .join()
            .map_err(|_| Error::Thread("the proxy panicked".into()))?;
        sim_b.shutdown()?;
        replayed?;
        proxied?;

        let (jd, _, _) = joined(&p("direct.parquet"), &p("truth-direct.jsonl"))?;
        let (jp, prox, ps) = joined(&p("proxied.parquet"), &p("truth-proxied.jsonl"))?;
        let (jc, capt, cs) = joined(&p("capture.parquet"), &p("truth-proxied.jsonl"))?;
        if jd.failed + jp.failed + jc.failed > 0 {
            return Err(Error::Run {
                path: dir.clone(),
                problem: format!(
                    "load '{}': {} direct, {} proxied and {} captured requests failed",
                    load.name, jd.failed, jp.failed, jc.failed
                ),
            });
        }
        // Paired per event: when the client read it minus when the proxy read it upstream.
        let at_proxy = events_by_id(&capt, cs);
        let mut fwd = Vec::new();
        for (id, ev) in events_by_id(&prox, ps) {
            if let Some(up) = at_proxy.get(id) {
                for (c, p) in ev.iter().zip(up) {
                    fwd.push((c - p) as f64);
                }
            }
        }
        let (d50, d99) = p50_p99_us(&jd.arrival_err_ns);
        let (p50, p99) = p50_p99_us(&jp.arrival_err_ns);
        let (td50, td99) = p50_p99_us(&jd.ttft_err_ns);
        let (tp50, tp99) = p50_p99_us(&jp.ttft_err_ns);
        rows.push(LoadResult {
            load: *load,
            token_events: jp.arrival_err_ns.len(),
            transit_direct_us: (d50, d99),
            transit_proxied_us: (p50, p99),
            added_us: (p50 - d50, p99 - d99),
            proxy_to_client_us: p50_p99_us(&fwd),
            recorded_error_us: p50_p99_us(&jc.arrival_err_ns),
            ttft_added_ms: ((tp50 - td50) / 1e3, (tp99 - td99) / 1e3),
        });
    }
    Ok(ProxyReport {
        cpus,
        proxy_threads,
        loads: rows,
        kept_in: cfg.keep.clone(),
    })
}
