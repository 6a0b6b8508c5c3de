//! The stages of a run: one per rate (or one for a trace's recorded timing), a warmup stage
//! first when asked, each a [`StagePlan`] of absolute send offsets and the workload index of its
//! first request. Pure: no clock, no network.

use crate::Error;
use crate::config::ReplayConfig;
use crate::schedule;
use crate::workload::Workload;

/// Requests per stage when `-n` is not given and the workload is synthetic.
pub const DEFAULT_REQUESTS: u64 = 100;

/// One stage to dispatch: its label, rate and absolute offsets from the stage start.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// Stage label (`rate=5`, `warmup`, `recorded`).
    pub label: String,
    /// Requested rate, None for recorded timing.
    pub target_rate: Option<f64>,
    /// Send offsets (ns) from the stage start, non-decreasing.
    pub offsets_ns: Vec<i64>,
    /// Workload index of the stage's first request (or session).
    pub first_item: u64,
    /// How much the recorded timeline was stretched (retargeting times `--time-scale`): a
    /// session's think times stretch with it. 1 for synthetic arrivals.
    pub time_factor: f64,
    /// The stage's own concurrency cap (a concurrency sweep's `conc=C`); None: the run's.
    pub max_concurrency: Option<usize>,
}

/// One host's share of a run spread over several (`--shard k/n`): arrivals (requests, or
/// whole sessions) whose index in the run's one schedule is k modulo n. Every host computes the
/// same schedule, so the shards' union is the single-host run: the same ids, the same times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This host's share, 0-based.
    pub index: u32,
    /// Hosts.
    pub count: u32,
}

impl Shard {
    /// Parses `k/n` (0 <= k < n).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid shard '{s}': expected k/n with 0 <= k < n, e.g. 0/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether this host sends arrival `unit` (its workload index).
    pub fn owns(&self, unit: u64) -> bool {
        unit % u64::from(self.count) == u64::from(self.index)
    }
}

/// An id of a run's whole schedule: the workload, the seed and every stage's label, first item
/// and offsets. Shards of one run carry the same id; `trace merge` refuses to mix others.
pub fn schedule_id(plans: &[StagePlan], workload: &serde_json::Value, seed: u64) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(workload.to_string().as_bytes());
    h.update(&seed.to_le_bytes());
    for p in plans {
        h.update(p.label.as_bytes());
        h.update(&p.first_item.to_le_bytes());
        for o in &p.offsets_ns {
            h.update(&o.to_le_bytes());
        }
    }
    format!("{:016x}", h.digest())
}

/// The stage label of a concurrency sweep's stage: `conc=128`.
pub fn conc_label(c: usize) -> String {
    format!("conc={c}")
}

/// The stage label of a rate: `rate=5`, `rate=0.5`, `rate=inf`.
pub fn stage_label(rate: f64) -> String {
    if rate.is_infinite() {
        "rate=inf".into()
    } else {
        format!("rate={rate}")
    }
}

/// Plans the measured stages (and the warmup stage first, if any).
pub fn plan_stages(cfg: &ReplayConfig, workload: &Workload) -> Result<Vec<StagePlan>, Error> {
    let n = match (cfg.requests, workload.len()) {
        (Some(n), _) => n,
        (None, Some(len)) => len as u64,
        (None, None) => DEFAULT_REQUESTS,
    };
    let n_usize =
        usize::try_from(n).map_err(|_| Error::Config(format!("too many requests: {n}")))?;
    let offsets_for = |rate: Option<f64>, count: usize| -> Result<(Vec<i64>, f64), Error> {
        match (workload.timeline_ns(), rate) {
            (Some(tl), rate) => {
                let base = cycle(tl, count);
                let (t, f) = match rate {
                    Some(r) => (
                        schedule::retarget(&base, r)?,
                        schedule::retarget_factor(&base, r),
                    ),
                    None => (base, 1.0),
                };
                match cfg.time_scale {
                    Some(s) => Ok((schedule::time_scale(&t, s)?, f * s)),
                    None => Ok((t, f)),
                }
            }
            (None, Some(r)) => Ok((schedule::offsets_ns(&cfg.arrival, r, count, cfg.seed)?, 1.0)),
            (None, None) => Err(Error::Config("no --rate for a synthetic workload".into())),
        }
    };
    if !cfg.concurrencies.is_empty() {
        return Ok(concurrency_stages(cfg, n_usize));
    }
    let rates: Vec<Option<f64>> = if cfg.rates.is_empty() {
        vec![None]
    } else {
        cfg.rates.iter().map(|&r| Some(r)).collect()
    };
    let mut plans = Vec::new();
    if cfg.warmup > 0 {
        let w = usize::try_from(cfg.warmup)
            .map_err(|_| Error::Config(format!("too many warmup requests: {}", cfg.warmup)))?;
        let (offsets_ns, time_factor) = offsets_for(rates[0], w)?;
        plans.push(StagePlan {
            label: "warmup".into(),
            target_rate: rates[0],
            offsets_ns,
            first_item: 0,
            time_factor,
            max_concurrency: None,
        });
    }
    let mut first_item = 0u64;
    for rate in &rates {
        let count = match (cfg.stage_duration, rate) {
            (Some(d), Some(r)) => ((r * d.as_secs_f64()).round() as usize).max(1),
            _ => n_usize,
        };
        let (offsets_ns, time_factor) = offsets_for(*rate, count)?;
        plans.push(StagePlan {
            label: rate.map_or_else(|| "recorded".to_string(), stage_label),
            target_rate: *rate,
            offsets_ns,
            first_item,
            time_factor,
            max_concurrency: None,
        });
        first_item += count as u64;
    }
    Ok(plans)
}

/// A concurrency sweep: per cap, `n` requests released at once (rate `inf`) with at most the
/// cap in flight, closed-loop; a warmup at the first cap. Think times shrink to nothing, as at
/// `--rate inf`.
fn concurrency_stages(cfg: &ReplayConfig, n: usize) -> Vec<StagePlan> {
    let stage = |label: String, c: usize, count: usize, first_item: u64| StagePlan {
        label,
        target_rate: Some(f64::INFINITY),
        offsets_ns: vec![0; count],
        first_item,
        time_factor: 0.0,
        max_concurrency: Some(c),
    };
    let mut plans = Vec::new();
    if cfg.warmup > 0 {
        let w = usize::try_from(cfg.warmup).unwrap_or(usize::MAX);
        plans.push(stage("warmup".into(), cfg.concurrencies[0], w, 0));
    }
    for (k, &c) in cfg.concurrencies.iter().enumerate() {
        plans.push(stage(conc_label(c), c, n, (k * n) as u64));
    }
    plans
}

/// The first `count` offsets of a recorded timeline, cycling it (each lap after the last
/// arrival plus one mean gap) when more requests than rows are asked for.
fn cycle(tl: &[i64], count: usize) -> Vec<i64> {
    let span = tl.last().copied().unwrap_or(0);
    let gap = if tl.len() > 1 {
        span / (tl.len() as i64 - 1)
    } else {
        0
    };
    (0..count)
        .map(|i| tl[i % tl.len()] + (i / tl.len()) as i64 * (span + gap))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::schedule::Arrival;
    use crate::workload::RandomSpec;

    fn cfg() -> ReplayConfig {
        ReplayConfig::new("http://127.0.0.1:1", "x.parquet")
    }

    #[test]
    fn labels() {
        assert_eq!(stage_label(5.0), "rate=5");
        assert_eq!(stage_label(0.5), "rate=0.5");
        assert_eq!(stage_label(f64::INFINITY), "rate=inf");
    }

    #[test]
    fn plans_one_stage_per_rate_and_a_warmup() {
        let cfg = ReplayConfig {
            rates: vec![1.0, f64::INFINITY],
            requests: Some(3),
            warmup: 2,
            arrival: Arrival::Constant,
            ..cfg()
        };
        let w = Workload::random(RandomSpec::default(), 0).unwrap();
        let p = plan_stages(&cfg, &w).unwrap();
        let labels: Vec<&str> = p.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["warmup", "rate=1", "rate=inf"]);
        assert_eq!(p[1].offsets_ns, [0, 1_000_000_000, 2_000_000_000]);
        assert_eq!(p[2].offsets_ns, [0, 0, 0]);
        assert_eq!((p[1].first_item, p[2].first_item), (0, 3));
        assert_eq!(p[0].offsets_ns.len(), 2);
    }

    #[test]
    fn stage_duration_sizes_each_stage_by_its_rate() {
        let cfg = ReplayConfig {
            rates: vec![0.5, 2.0, 0.01],
            stage_duration: Some(Duration::from_secs(60)),
            ..cfg()
        };
        let w = Workload::random(RandomSpec::default(), 0).unwrap();
        let p = plan_stages(&cfg, &w).unwrap();
        let counts: Vec<usize> = p.iter().map(|s| s.offsets_ns.len()).collect();
        // 0.01 req/s for 60 s rounds to 1: a stage is never empty.
        assert_eq!(counts, [30, 120, 1]);
        // Items continue across stages, so two runs of the same sweep pair request by request.
        let firsts: Vec<u64> = p.iter().map(|s| s.first_item).collect();
        assert_eq!(firsts, [0, 30, 150]);
        // Poisson offsets are rescaled to the exact rate: the last arrival lands inside 60 s.
        let last = *p[1].offsets_ns.last().unwrap();
        assert!(last > 50_000_000_000 && last < 60_000_000_000, "{last}");

        let bad = |c: ReplayConfig| c.validate().unwrap_err().to_string();
        assert!(
            bad(ReplayConfig {
                requests: Some(5),
                ..cfg.clone()
            })
            .contains("not both")
        );
        assert!(
            bad(ReplayConfig {
                rates: vec![1.0, f64::INFINITY],
                ..cfg.clone()
            })
            .contains("finite --rate")
        );
    }

    #[test]
    fn a_concurrency_sweep_is_one_closed_loop_stage_per_cap() {
        let cfg = ReplayConfig {
            concurrencies: vec![1, 128],
            requests: Some(4),
            warmup: 2,
            ..cfg()
        };
        cfg.validate().unwrap();
        let w = Workload::random(RandomSpec::default(), 0).unwrap();
        let p = plan_stages(&cfg, &w).unwrap();
        let got: Vec<(&str, Option<usize>, usize, u64)> = p
            .iter()
            .map(|s| {
                (
                    s.label.as_str(),
                    s.max_concurrency,
                    s.offsets_ns.len(),
                    s.first_item,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("warmup", Some(1), 2, 0),
                ("conc=1", Some(1), 4, 0),
                ("conc=128", Some(128), 4, 4)
            ]
        );
        assert!(p.iter().all(|s| s.offsets_ns.iter().all(|&o| o == 0)));
        let bad = ReplayConfig {
            rates: vec![2.0],
            ..cfg.clone()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("--rate inf")
        );
    }

    #[test]
    fn shards_split_arrivals_by_index() {
        let s = Shard::parse("1/3").unwrap();
        let owned: Vec<u64> = (0..9).filter(|&u| s.owns(u)).collect();
        assert_eq!(owned, [1, 4, 7]);
        for bad in ["3/3", "1", "a/2", "0/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let w = Workload::random(RandomSpec::default(), 0).unwrap();
        let cfg = ReplayConfig {
            rates: vec![5.0],
            requests: Some(4),
            ..cfg()
        };
        let p = plan_stages(&cfg, &w).unwrap();
        let id = schedule_id(&p, w.spec_json(), 0);
        assert_eq!(id, schedule_id(&p, w.spec_json(), 0));
        assert_ne!(id, schedule_id(&p, w.spec_json(), 1));
    }

    #[test]
    fn recorded_timelines_cycle_after_a_mean_gap() {
        assert_eq!(cycle(&[0, 10, 20], 5), [0, 10, 20, 30, 40]);
        assert_eq!(cycle(&[0], 3), [0, 0, 0]);
    }
}
