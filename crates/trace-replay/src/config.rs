//! [`ReplayConfig`]: a replay's settings, validated, with no clap types. The client's own
//! settings (target, route, model, auth, timeouts, what to store) are one
//! [`trace_client::ClientConfig`] inside it, not copies.

use std::path::PathBuf;
use std::time::Duration;

use trace_client::ClientConfig;

use crate::Error;
use crate::dispatch::Timer;
use crate::schedule::Arrival;
use crate::session::SessionOptions;
use crate::workload::{RandomSpec, WorkloadSpec};

/// The longest schedule a replay plans: a month of arrivals. Longer is a typo (`--rate 0.0001`).
pub const MAX_PLANNED: Duration = Duration::from_secs(31 * 24 * 3600);

/// A validated replay configuration.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// The client: target URL, route, model (None: ask `/v1/models`), auth, timeouts, tokenizer,
    /// what to store.
    pub client: ClientConfig,
    /// What to send.
    pub workload: WorkloadSpec,
    /// One stage per rate (req/s, `inf` allowed). Empty: a trace's recorded timing.
    pub rates: Vec<f64>,
    /// Synthetic arrival process.
    pub arrival: Arrival,
    /// Multiplies a trace's timeline (after any retargeting).
    pub time_scale: Option<f64>,
    /// Requests per stage; None: the whole trace, or [`crate::DEFAULT_REQUESTS`].
    pub requests: Option<u64>,
    /// Instead of `requests`: each stage sends rate x this many seconds of arrivals, so every
    /// stage lasts as long and low-rate stages are not cut short.
    pub stage_duration: Option<Duration>,
    /// Warmup requests before the first stage.
    pub warmup: u64,
    /// Concurrency cap.
    pub max_concurrency: Option<usize>,
    /// A concurrency sweep: one closed-loop stage per cap (`conc=C`, every request released at
    /// once and at most C in flight), as `rates` gives one stage per rate. Empty: no sweep.
    pub concurrencies: Vec<usize>,
    /// Open files each in-flight request holds in this process: 1 (its socket), 2 when the
    /// target is the embedded simulator (the server's end too). Sizes the cap that keeps the
    /// open-file limit from starving the trace writer.
    pub fds_per_request: usize,
    /// Seed of schedules and synthetic prompts.
    pub seed: u64,
    /// The trace file to write.
    pub output: PathBuf,
    /// Replace an existing trace at `output` (`--force`); off, an existing file is refused.
    pub force: bool,
    /// Engine label.
    pub label: Option<String>,
    /// After a stop, how long in-flight requests may finish.
    pub drain_timeout: Duration,
    /// How deadlines are met.
    pub timer: Timer,
    /// Sample the target's `/metrics` during the run.
    pub scrape_metrics: bool,
    /// How often `/metrics` is sampled.
    pub metrics_interval: Duration,
    /// How a trace's sessions are replayed.
    pub sessions: SessionOptions,
    /// The campaign this run belongs to (JSON for `trace.campaign`), set by `trace suite run`.
    pub campaign: Option<String>,
    /// This host's share of a run sent from several (`--shard k/n`).
    pub shard: Option<crate::plan::Shard>,
    /// A coordinator's URL: the shards start together, at the time it releases, on its clock.
    pub coordinator: Option<String>,
    /// How long to wait at the coordinator's barrier.
    pub barrier_timeout: Duration,
    /// Where the GPUs' memory, utilisation, power and clock are sampled from, every
    /// `metrics_interval`.
    pub gpu_metrics: GpuTelemetry,
}

/// The source of GPU telemetry beside a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuTelemetry {
    /// None.
    Off,
    /// This host's GPUs through NVML when the target is on this host (loopback) and a driver
    /// is there; else nothing, silently.
    #[default]
    Auto,
    /// This host's GPUs through NVML; a notice when there are none.
    Nvml,
    /// A DCGM exporter's `/metrics` URL.
    Dcgm(String),
}

impl ReplayConfig {
    /// Defaults for a target and an output file: the `random` workload, Poisson arrivals, no
    /// rate yet (give one), 30 s drain, the timing thread, `/metrics` sampled.
    pub fn new(url: impl Into<String>, output: impl Into<PathBuf>) -> Self {
        let mut client = ClientConfig::new(url, "");
        client.model = None;
        Self {
            client,
            workload: WorkloadSpec::Random(RandomSpec::default()),
            rates: Vec::new(),
            arrival: Arrival::Poisson,
            time_scale: None,
            requests: None,
            stage_duration: None,
            warmup: 0,
            max_concurrency: None,
            concurrencies: Vec::new(),
            fds_per_request: 1,
            seed: 0,
            output: output.into(),
            force: false,
            label: None,
            drain_timeout: Duration::from_secs(30),
            timer: Timer::Thread,
            scrape_metrics: true,
            metrics_interval: Duration::from_secs(1),
            sessions: SessionOptions::default(),
            campaign: None,
            gpu_metrics: GpuTelemetry::default(),
            shard: None,
            coordinator: None,
            barrier_timeout: Duration::from_secs(300),
        }
    }

    /// Checks the settings that do not need the workload loaded.
    pub fn validate(&self) -> Result<(), Error> {
        for &r in &self.rates {
            if r.is_nan() || r <= 0.0 {
                return Err(Error::Config(format!(
                    "invalid rate '{r}': must be a number > 0 or inf"
                )));
            }
        }
        if let Some(f) = self.time_scale
            && !(f.is_finite() && f > 0.0)
        {
            return Err(Error::Config(format!(
                "invalid time scale '{f}': must be a number > 0"
            )));
        }
        if let Some(d) = self.stage_duration {
            if self.requests.is_some() {
                return Err(Error::Config(
                    "give either --requests or --stage-duration, not both".into(),
                ));
            }
            if d.is_zero() {
                return Err(Error::Config(
                    "invalid stage duration '0s': must be > 0".into(),
                ));
            }
            if self.rates.is_empty() || self.rates.iter().any(|r| r.is_infinite()) {
                return Err(Error::Config(
                    "--stage-duration needs finite --rate values (requests per stage = rate x duration)"
                        .into(),
                ));
            }
        }
        if self.requests == Some(0) {
            return Err(Error::Config(
                "invalid request count '0': must be >= 1".into(),
            ));
        }
        if self.metrics_interval.is_zero() {
            return Err(Error::Config(
                "invalid metrics interval '0s': must be > 0".into(),
            ));
        }
        if self.client.timeout.is_zero() {
            return Err(Error::Config(
                "invalid request timeout '0s': must be > 0".into(),
            ));
        }
        let planned_s: f64 = match (self.stage_duration, self.requests, &self.workload) {
            (Some(d), _, _) => d.as_secs_f64() * self.rates.len() as f64,
            (
                None,
                n,
                WorkloadSpec::Random(_) | WorkloadSpec::ShareGpt(_) | WorkloadSpec::Dataset(_),
            ) => self
                .rates
                .iter()
                .filter(|r| r.is_finite())
                .map(|r| n.unwrap_or(crate::DEFAULT_REQUESTS) as f64 / r)
                .sum(),
            // A trace's span is known once it is loaded.
            (None, _, WorkloadSpec::Trace(_)) => 0.0,
        };
        if planned_s > MAX_PLANNED.as_secs_f64() {
            return Err(Error::Config(format!(
                "the schedule would run for {:.0} days (requests / rate, summed over the stages); \
                 at most {} days: check --rate and -n",
                planned_s / 86_400.0,
                MAX_PLANNED.as_secs() / 86_400
            )));
        }
        if !self.concurrencies.is_empty() {
            if self.concurrencies.contains(&0) {
                return Err(Error::Config(
                    "invalid max concurrency '0': must be >= 1".into(),
                ));
            }
            if self.rates.iter().any(|r| r.is_finite()) || self.stage_duration.is_some() {
                return Err(Error::Config(
                    "a concurrency sweep (--max-concurrency C1,C2,...) runs closed-loop stages: \
                     give --rate inf or no --rate, and -n rather than --stage-duration"
                        .into(),
                ));
            }
        }
        if self.max_concurrency == Some(0) {
            return Err(Error::Config(
                "invalid max concurrency '0': must be >= 1".into(),
            ));
        }
        self.arrival.check().map_err(Error::Config)?;
        if self.coordinator.is_some() && self.shard.is_none() {
            return Err(Error::Config(
                "--coordinator needs --shard k/n: it starts the shards of one run together".into(),
            ));
        }
        let ts = self.sessions.think_scale;
        if !(ts.is_finite() && ts >= 0.0) {
            return Err(Error::Config(format!(
                "invalid think scale '{ts}': must be a number >= 0"
            )));
        }
        if self.sessions.max_sessions == Some(0) {
            return Err(Error::Config(
                "invalid max sessions '0': must be >= 1".into(),
            ));
        }
        if self.rates.is_empty()
            && self.concurrencies.is_empty()
            && !matches!(self.workload, WorkloadSpec::Trace(_))
        {
            return Err(Error::Config(
                "no --rate: only a trace workload has recorded timing to replay; give --rate R"
                    .into(),
            ));
        }
        if self.time_scale.is_some() && !matches!(self.workload, WorkloadSpec::Trace(_)) {
            return Err(Error::Config(
                "--time-scale applies only to a trace workload".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_value() {
        let mut base = ReplayConfig::new("http://127.0.0.1:1", "x.parquet");
        base.rates = vec![5.0];
        let bad = |f: &dyn Fn(&mut ReplayConfig)| {
            let mut c = base.clone();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(&|c| c.rates = vec![0.0]).contains("'0'"));
        assert!(bad(&|c| c.requests = Some(0)).contains("'0'"));
        assert!(bad(&|c| c.rates = vec![]).contains("--rate"));
        assert!(bad(&|c| c.arrival = Arrival::Gamma { burstiness: -1.0 }).contains("'-1'"));
        assert!(base.validate().is_ok());
    }
}
