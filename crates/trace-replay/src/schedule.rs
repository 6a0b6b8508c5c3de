//! Arrival schedules: pure iterators of **absolute** send offsets from a stage's start.
//!
//! One generator per [`Arrival`] process (the one type, defined with the trace's metadata in
//! trace-format and used by both `trace replay` and `trace synth`): [`Constant`], [`Poisson`]
//! and [`Gamma`] are renewal processes drawn from a named, seeded RNG (`ChaCha8Rng`, so the same
//! seed gives the same schedule on every machine); [`Daily`] thins a Poisson process by a daily
//! profile. [`arrivals`] streams any of them; [`offsets_ns`] takes `n` at an exact rate.
//! [`recorded`], [`retarget`] and [`time_scale`] turn a trace's `scheduled_ns` into a timeline.
//! Offsets are absolute (not gaps) so that the dispatcher never accumulates sleep error.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;
pub use trace_format::{Arrival, DailyProfile};

use crate::Error;

/// Offsets beyond this are clamped: about 292 years in ns, the range of the `i64` columns.
const MAX_OFFSET_S: f64 = (i64::MAX / 1_000_000_000) as f64;

fn check_rate(rate_per_s: f64) -> Result<(), Error> {
    if rate_per_s.is_nan() || rate_per_s <= 0.0 {
        return Err(Error::Config(format!(
            "invalid rate '{rate_per_s}': must be a number > 0 or inf"
        )));
    }
    Ok(())
}

fn secs(t: f64) -> Duration {
    Duration::from_secs_f64(t.clamp(0.0, MAX_OFFSET_S))
}

/// Evenly spaced arrivals: the k-th request at `k / rate`. `inf` sends everything at 0.
#[derive(Debug, Clone)]
pub struct Constant {
    rate_per_s: f64,
    k: u64,
}

impl Constant {
    /// A constant-rate schedule; the rate must be > 0 (inf allowed).
    pub fn new(rate_per_s: f64) -> Result<Self, Error> {
        check_rate(rate_per_s)?;
        Ok(Self { rate_per_s, k: 0 })
    }
}

impl Iterator for Constant {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        // Multiplying (not summing gaps) keeps the k-th offset exact for any k.
        let t = self.k as f64 / self.rate_per_s;
        self.k += 1;
        Some(secs(if t.is_nan() { 0.0 } else { t }))
    }
}

/// Poisson arrivals: exponential gaps drawn by inverse CDF, `-ln(1 - U) / rate`.
#[derive(Debug, Clone)]
pub struct Poisson {
    rate_per_s: f64,
    rng: ChaCha8Rng,
    t_s: f64,
    first: bool,
}

impl Poisson {
    /// A Poisson process at `rate_per_s` (> 0; inf sends everything at 0), seeded.
    ///
    /// The first arrival is at offset 0, so a stage starts sending immediately.
    pub fn new(rate_per_s: f64, seed: u64) -> Result<Self, Error> {
        check_rate(rate_per_s)?;
        Ok(Self {
            rate_per_s,
            rng: ChaCha8Rng::seed_from_u64(seed),
            t_s: 0.0,
            first: true,
        })
    }
}

impl Iterator for Poisson {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        if std::mem::take(&mut self.first) {
            return Some(Duration::ZERO);
        }
        let u: f64 = self.rng.random();
        self.t_s += -(1.0 - u).ln() / self.rate_per_s;
        Some(secs(self.t_s))
    }
}

/// Gamma-renewal arrivals with shape `burstiness` K and mean gap `1/rate`: K = 1 is Poisson,
/// K < 1 burstier, K > 1 smoother; the gaps' CV is `1/sqrt(K)` (vLLM's `--burstiness`).
#[derive(Debug, Clone)]
pub struct Gamma {
    dist: Option<rand_distr::Gamma<f64>>,
    rng: ChaCha8Rng,
    t_s: f64,
    first: bool,
}

impl Gamma {
    /// A gamma process at `rate_per_s` (> 0; inf sends everything at 0) with shape `burstiness`
    /// (> 0, finite), seeded.
    pub fn new(rate_per_s: f64, burstiness: f64, seed: u64) -> Result<Self, Error> {
        check_rate(rate_per_s)?;
        if !(burstiness.is_finite() && burstiness > 0.0) {
            return Err(Error::Config(format!(
                "invalid burstiness '{burstiness}': must be a finite number > 0"
            )));
        }
        let dist = if rate_per_s.is_infinite() {
            None
        } else {
            let scale = 1.0 / (rate_per_s * burstiness);
            Some(rand_distr::Gamma::new(burstiness, scale).map_err(|e| {
                Error::Config(format!(
                    "invalid gamma rate {rate_per_s} burstiness {burstiness}: {e}"
                ))
            })?)
        };
        Ok(Self {
            dist,
            rng: ChaCha8Rng::seed_from_u64(seed),
            t_s: 0.0,
            first: true,
        })
    }
}

impl Iterator for Gamma {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        if std::mem::take(&mut self.first) {
            return Some(Duration::ZERO);
        }
        if let Some(d) = &self.dist {
            self.t_s += d.sample(&mut self.rng);
        }
        Some(secs(self.t_s))
    }
}

/// A non-homogeneous Poisson process whose rate follows a [`DailyProfile`]: candidates at the
/// peak rate, each kept with probability `rate(t)/peak` (Lewis-Shedler thinning). The first
/// arrival is at offset 0.
#[derive(Debug, Clone)]
pub struct Daily {
    mean_per_s: f64,
    profile: DailyProfile,
    rng: ChaCha8Rng,
    t_s: f64,
    first: bool,
}

impl Daily {
    /// `mean_per_s` > 0 and finite; the profile as [`DailyProfile::check`] accepts.
    pub fn new(mean_per_s: f64, profile: DailyProfile, seed: u64) -> Result<Self, Error> {
        check_rate(mean_per_s)?;
        if mean_per_s.is_infinite() {
            return Err(Error::Config(
                "invalid rate 'inf' for a daily cycle: must be finite".into(),
            ));
        }
        profile.check().map_err(Error::Config)?;
        Ok(Self {
            mean_per_s,
            profile,
            rng: ChaCha8Rng::seed_from_u64(seed),
            t_s: 0.0,
            first: true,
        })
    }
}

impl Iterator for Daily {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        if std::mem::take(&mut self.first) {
            return Some(Duration::ZERO);
        }
        let peak = self.mean_per_s * self.profile.max_factor();
        loop {
            let u: f64 = self.rng.random();
            self.t_s += -(1.0 - u).ln() / peak;
            let keep: f64 = self.rng.random();
            let rate = self.mean_per_s * self.profile.factor(self.t_s);
            if keep * peak < rate || self.t_s >= MAX_OFFSET_S {
                return Some(secs(self.t_s));
            }
        }
    }
}

/// A recorded timeline: the trace's `scheduled_ns`, sorted and shifted so the first is 0.
pub fn recorded(scheduled_ns: &[i64]) -> Vec<i64> {
    let mut v = scheduled_ns.to_vec();
    v.sort_unstable();
    let first = v.first().copied().unwrap_or(0);
    v.iter_mut().for_each(|t| *t = t.saturating_sub(first));
    v
}

/// Rescales a (sorted, zero-based) timeline so its mean rate becomes `rate_per_s`, keeping every
/// inter-arrival ratio (the bursts' shape). The mean rate of n arrivals over span T is
/// `(n - 1) / T`. `inf` puts every arrival at 0; a timeline with a zero span is left as is.
pub fn retarget(timeline_ns: &[i64], rate_per_s: f64) -> Result<Vec<i64>, Error> {
    check_rate(rate_per_s)?;
    if rate_per_s.is_infinite() {
        return Ok(vec![0; timeline_ns.len()]);
    }
    let span = timeline_ns.last().copied().unwrap_or(0) - timeline_ns.first().copied().unwrap_or(0);
    if timeline_ns.len() < 2 || span <= 0 {
        return Ok(timeline_ns.to_vec());
    }
    let new_span_ns = (timeline_ns.len() - 1) as f64 / rate_per_s * 1e9;
    time_scale(timeline_ns, new_span_ns / span as f64)
}

/// The factor [`retarget`] stretches `timeline_ns` by: 0 for `inf`, 1 when it leaves it as is.
pub fn retarget_factor(timeline_ns: &[i64], rate_per_s: f64) -> f64 {
    if rate_per_s.is_infinite() {
        return 0.0;
    }
    let span = timeline_ns.last().copied().unwrap_or(0) - timeline_ns.first().copied().unwrap_or(0);
    if timeline_ns.len() < 2 || span <= 0 || rate_per_s.is_nan() || rate_per_s <= 0.0 {
        return 1.0;
    }
    (timeline_ns.len() - 1) as f64 / rate_per_s * 1e9 / span as f64
}

/// Multiplies every offset by `factor` (> 0, finite): 2 plays the trace twice as slowly.
pub fn time_scale(timeline_ns: &[i64], factor: f64) -> Result<Vec<i64>, Error> {
    if !(factor.is_finite() && factor > 0.0) {
        return Err(Error::Config(format!(
            "invalid time scale '{factor}': must be a finite number > 0"
        )));
    }
    Ok(timeline_ns
        .iter()
        .map(|&t| (t as f64 * factor).round().min(i64::MAX as f64) as i64)
        .collect())
}

/// The endless schedule of `arrival` at `rate_per_s` (the mean rate for gamma and daily),
/// seeded, as absolute offsets in ns; the first arrival is at 0.
pub fn arrivals(
    arrival: &Arrival,
    rate_per_s: f64,
    seed: u64,
) -> Result<Box<dyn Iterator<Item = i64> + Send>, Error> {
    arrival.check().map_err(Error::Config)?;
    let it: Box<dyn Iterator<Item = Duration> + Send> = match arrival {
        Arrival::Poisson => Box::new(Poisson::new(rate_per_s, seed)?),
        Arrival::Gamma { burstiness } => Box::new(Gamma::new(rate_per_s, *burstiness, seed)?),
        Arrival::Constant => Box::new(Constant::new(rate_per_s)?),
        Arrival::Daily { profile } => Box::new(Daily::new(rate_per_s, profile.clone(), seed)?),
    };
    Ok(Box::new(
        it.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
    ))
}

/// The first `n` offsets (ns) of `arrival` at `rate_per_s`, seeded. Poisson and gamma schedules
/// are rescaled so that their mean rate `(n - 1) / (last - first)` is exactly `rate_per_s`, as
/// vLLM's benchmark does: a random schedule of n arrivals misses its rate by about 1/sqrt(n) (3%
/// at n = 1000). Gap ratios (burst shape, CV) are unchanged. Constant is exact already; a daily
/// cycle keeps its shape in time.
pub fn offsets_ns(
    arrival: &Arrival,
    rate_per_s: f64,
    n: usize,
    seed: u64,
) -> Result<Vec<i64>, Error> {
    let v: Vec<i64> = arrivals(arrival, rate_per_s, seed)?.take(n).collect();
    match arrival {
        Arrival::Constant | Arrival::Daily { .. } => Ok(v),
        _ if rate_per_s.is_infinite() || n < 2 => Ok(v),
        _ => retarget(&v, rate_per_s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps_s(offsets: &[Duration]) -> Vec<f64> {
        offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect()
    }

    fn mean_cv(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
        (m, var.sqrt() / m)
    }

    #[test]
    fn bad_rates_are_rejected_with_the_value() {
        for r in [0.0, -1.0, f64::NAN] {
            let e = Poisson::new(r, 1).unwrap_err().to_string();
            assert!(e.contains("invalid rate"), "{e}");
            assert!(Constant::new(r).is_err());
            assert!(Gamma::new(r, 1.0, 1).is_err());
            assert!(retarget(&[0, 1], r).is_err());
        }
        assert!(Gamma::new(1.0, 0.0, 1).is_err());
        assert!(Gamma::new(1.0, f64::NAN, 1).is_err());
        assert!(time_scale(&[0], 0.0).is_err());
        assert!(time_scale(&[0], f64::INFINITY).is_err());
        let amp = DailyProfile::Sinusoid {
            amplitude: 2.0,
            period_s: 1.0,
            peak_s: 0.0,
        };
        assert!(Daily::new(1.0, amp, 1).is_err());
        let flat = DailyProfile::Hourly {
            weights: vec![0.0; 24],
        };
        assert!(arrivals(&Arrival::Daily { profile: flat }, 1.0, 1).is_err());
        assert!(arrivals(&Arrival::Gamma { burstiness: 0.0 }, 1.0, 1).is_err());
    }

    #[test]
    fn constant_table() {
        let cases: [(f64, [u64; 4]); 3] = [
            (1.0, [0, 1_000_000_000, 2_000_000_000, 3_000_000_000]),
            (4.0, [0, 250_000_000, 500_000_000, 750_000_000]),
            (f64::INFINITY, [0, 0, 0, 0]),
        ];
        for (rate, want) in cases {
            let got: Vec<u64> = Constant::new(rate)
                .unwrap()
                .take(4)
                .map(|d| d.as_nanos() as u64)
                .collect();
            assert_eq!(got, want, "rate {rate}");
        }
    }

    #[test]
    fn huge_rates_and_offsets_stay_finite_and_ordered() {
        let v: Vec<Duration> = Poisson::new(1e12, 3).unwrap().take(1000).collect();
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        let v: Vec<Duration> = Poisson::new(1e-300, 3).unwrap().take(3).collect();
        assert!(v[2] <= Duration::from_secs_f64(MAX_OFFSET_S));
        let inf: Vec<Duration> = Poisson::new(f64::INFINITY, 3).unwrap().take(5).collect();
        assert!(inf.iter().all(|d| d.is_zero()));
        let inf: Vec<Duration> = Gamma::new(f64::INFINITY, 0.5, 3).unwrap().take(5).collect();
        assert!(inf.iter().all(|d| d.is_zero()));
    }

    #[test]
    fn poisson_mean_rate_and_cv() {
        let v: Vec<Duration> = Poisson::new(50.0, 42).unwrap().take(20_001).collect();
        assert_eq!(v[0], Duration::ZERO);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        let (m, cv) = mean_cv(&gaps_s(&v));
        assert!((1.0 / m - 50.0).abs() < 1.5, "rate {}", 1.0 / m);
        assert!((cv - 1.0).abs() < 0.05, "cv {cv}");
    }

    #[test]
    fn gamma_cv_follows_burstiness() {
        for k in [0.25, 1.0, 4.0] {
            let v: Vec<Duration> = Gamma::new(20.0, k, 7).unwrap().take(40_001).collect();
            let (m, cv) = mean_cv(&gaps_s(&v));
            let want = 1.0 / f64::sqrt(k);
            assert!((1.0 / m - 20.0).abs() < 1.0, "k {k}: rate {}", 1.0 / m);
            assert!(
                (cv - want).abs() < 0.08 * want,
                "k {k}: cv {cv} want {want}"
            );
        }
    }

    #[test]
    fn same_seed_same_schedule_other_seed_differs() {
        let a: Vec<Duration> = Poisson::new(10.0, 9).unwrap().take(100).collect();
        let b: Vec<Duration> = Poisson::new(10.0, 9).unwrap().take(100).collect();
        let c: Vec<Duration> = Poisson::new(10.0, 10).unwrap().take(100).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let g1: Vec<Duration> = Gamma::new(10.0, 0.5, 9).unwrap().take(100).collect();
        let g2: Vec<Duration> = Gamma::new(10.0, 0.5, 9).unwrap().take(100).collect();
        assert_eq!(g1, g2);
    }

    #[test]
    fn poisson_golden_values_pin_cross_machine_reproducibility() {
        // If these change, every stored seed replays a different schedule: a format break.
        let ns: Vec<u128> = Poisson::new(1.0, 0)
            .unwrap()
            .take(3)
            .map(|d| d.as_nanos() / 1000)
            .collect();
        let again: Vec<u128> = Poisson::new(1.0, 0)
            .unwrap()
            .take(3)
            .map(|d| d.as_nanos() / 1000)
            .collect();
        assert_eq!(ns, again);
        assert_eq!(ns[0], 0);
    }

    #[test]
    fn daily_cycle_follows_the_mean_and_the_peak() {
        // A whole number of periods so the profile averages out.
        let profile = DailyProfile::Sinusoid {
            amplitude: 0.8,
            period_s: 100.0,
            peak_s: 25.0,
        };
        let v: Vec<i64> = arrivals(&Arrival::Daily { profile }, 20.0, 1)
            .unwrap()
            .take_while(|&t| t < 1_000_000_000_000)
            .collect();
        assert_eq!(v[0], 0);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
        let r = v.len() as f64 / 1000.0;
        assert!((r - 20.0).abs() / 20.0 < 0.05, "daily rate {r}");
        // More arrivals near the peak (t mod 100 in 0..50) than in the trough.
        let near = v
            .iter()
            .filter(|&&t| (t / 1_000_000_000) % 100 < 50)
            .count();
        assert!(near as f64 > 0.7 * v.len() as f64, "{near} of {}", v.len());
    }

    #[test]
    fn streams_keep_their_mean_rate_without_rescaling() {
        for (a, tol) in [
            (Arrival::Poisson, 0.05),
            (Arrival::Gamma { burstiness: 0.5 }, 0.08),
            (Arrival::Gamma { burstiness: 4.0 }, 0.05),
        ] {
            let v: Vec<i64> = arrivals(&a, 10.0, 7).unwrap().take(20_000).collect();
            let r = 20_000.0 / (*v.last().unwrap() as f64 / 1e9);
            assert!((r - 10.0).abs() / 10.0 < tol, "{a:?}: rate {r}");
        }
    }

    #[test]
    fn recorded_sorts_and_shifts() {
        assert_eq!(recorded(&[500, 100, 300]), vec![0, 200, 400]);
        assert_eq!(recorded(&[]), Vec::<i64>::new());
    }

    #[test]
    fn retarget_keeps_inter_arrival_ratios() {
        let t = [0, 100, 150, 1150, 1160];
        let r = retarget(&t, 2.0).unwrap();
        // 5 arrivals at 2 req/s span 2 s.
        assert_eq!(*r.last().unwrap(), 2_000_000_000);
        let g0: Vec<f64> = t.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let g1: Vec<f64> = r.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        for i in 1..g0.len() {
            let want = g0[i] / g0[0];
            let got = g1[i] / g1[0];
            assert!(
                (want - got).abs() < 1e-6 * want.max(1.0),
                "gap {i}: {got} vs {want}"
            );
        }
        assert_eq!(retarget(&t, f64::INFINITY).unwrap(), vec![0; 5]);
        assert_eq!(retarget(&[0, 0], 5.0).unwrap(), vec![0, 0]);
        assert_eq!(time_scale(&t, 2.0).unwrap(), vec![0, 200, 300, 2300, 2320]);
    }

    #[test]
    fn arrival_offsets() {
        let c = offsets_ns(&Arrival::Constant, 10.0, 3, 0).unwrap();
        assert_eq!(c, vec![0, 100_000_000, 200_000_000]);
        for a in [Arrival::Poisson, Arrival::Gamma { burstiness: 0.5 }] {
            let p = offsets_ns(&a, 10.0, 1001, 1).unwrap();
            assert_eq!(p.len(), 1001);
            // Exactly 10 req/s over the whole schedule, not merely within sampling error.
            assert_eq!(p[1000], 100_000_000_000);
            assert!(p.windows(2).all(|w| w[0] <= w[1]));
        }
        assert!(offsets_ns(&Arrival::Gamma { burstiness: 0.0 }, 1.0, 1, 1).is_err());
    }
}
