//! The seeded bootstrap behind `trace diff`'s confidence intervals: [`Bootstrap`] holds the
//! number of resamples, the cap on values per side and its RNG (ChaCha8, so the same inputs and
//! seed give the same intervals on every machine).
//!
//! Hand-written: the m-out-of-n scaling and the paired resampling of index pairs are the point,
//! and no kept crate does both.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::percentile::percentiles_in_place;

/// A bootstrap confidence interval of a statistic's difference (B - A).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ci {
    /// Lower end (2.5th percentile of the bootstrap distribution).
    pub low: f64,
    /// Upper end (97.5th percentile).
    pub high: f64,
    /// Two-sided bootstrap p-value of "no difference": twice the smaller share of the
    /// (recentred, scaled) resampled deltas on either side of zero, add-one smoothed so it is
    /// never 0. What [`benjamini_hochberg`] adjusts across a diff's many tests.
    pub p_value: f64,
}

/// Benjamini-Hochberg q-values of `p`, in the same order: the smallest false discovery rate at
/// which each test would be called a discovery. Calling every test with `q <= alpha` keeps the
/// expected share of false discoveries among them at most `alpha` (for independent or
/// positively dependent tests, as a diff's metrics of one stage are).
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for (k, &i) in order.iter().enumerate() {
        // Rank from the top: the largest p has rank m.
        let rank = m - k;
        running = running.min(p[i] * m as f64 / rank as f64);
        q[i] = running.min(1.0);
    }
    q
}

/// The statistic a bootstrap computes on each resample: a percentile rank, or the mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// Arithmetic mean.
    Mean,
    /// Percentile rank 0..=100.
    Pct(f64),
}

/// A seeded bootstrap of differences B - A.
///
/// Work is bounded: each side is subsampled to at most `cap` values, and the resampled
/// deviations are scaled by sqrt(m/n) (m-out-of-n bootstrap) so the interval still reflects the
/// full sample size.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    resamples: usize,
    cap: usize,
    rng: ChaCha8Rng,
}

impl Bootstrap {
    /// `resamples` per interval, at most `cap` values per side, seeded.
    pub fn new(resamples: usize, cap: usize, seed: u64) -> Self {
        Self {
            resamples,
            cap: cap.max(2),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A seeded subsample of at most the cap's number of indices out of `n` (all of them when
    /// `n` is within the cap), drawn from this bootstrap's RNG.
    pub fn subsample(&mut self, n: usize) -> Vec<usize> {
        if n <= self.cap {
            return (0..n).collect();
        }
        (0..self.cap).map(|_| self.rng.random_range(0..n)).collect()
    }

    /// 95% CIs of `stat(B) - stat(A)` for each statistic, resampling pairs: `a[i]` goes with
    /// `b[i]`. `point` holds the full-sample differences the intervals are centred on.
    pub fn paired(
        &mut self,
        a: &[f64],
        b: &[f64],
        stats: &[Stat],
        point: &[f64],
    ) -> Vec<Option<Ci>> {
        let n = a.len().min(b.len());
        if n < 2 {
            return vec![None; stats.len()];
        }
        let sub = self.subsample(n);
        let m = sub.len();
        let scale = (m as f64 / n as f64).sqrt();
        let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(self.resamples); stats.len()];
        let (mut ba, mut bb) = (Vec::with_capacity(m), Vec::with_capacity(m));
        for _ in 0..self.resamples {
            ba.clear();
            bb.clear();
            for _ in 0..m {
                let i = sub[self.rng.random_range(0..m)];
                ba.push(a[i]);
                bb.push(b[i]);
            }
            push_deltas(&mut draws, &mut ba, &mut bb, stats);
        }
        intervals(draws, point, scale)
    }

    /// 95% CIs of `stat(B) - stat(A)` for independent samples. `full` holds the sizes the
    /// samples stand for (larger than `a` and `b` when the caller subsampled them already).
    pub fn unpaired(
        &mut self,
        a: &[f64],
        b: &[f64],
        full: (usize, usize),
        stats: &[Stat],
        point: &[f64],
    ) -> Vec<Option<Ci>> {
        if a.len() < 2 || b.len() < 2 {
            return vec![None; stats.len()];
        }
        let sa = self.subsample(a.len());
        let sb = self.subsample(b.len());
        // One scale for both sides: the variance of a difference is dominated by the smaller
        // side, so use the larger of the two ratios (conservative).
        let scale = (sa.len() as f64 / full.0.max(a.len()) as f64)
            .sqrt()
            .max((sb.len() as f64 / full.1.max(b.len()) as f64).sqrt());
        let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(self.resamples); stats.len()];
        let (mut ba, mut bb) = (Vec::with_capacity(sa.len()), Vec::with_capacity(sb.len()));
        for _ in 0..self.resamples {
            ba.clear();
            bb.clear();
            for _ in 0..sa.len() {
                ba.push(a[sa[self.rng.random_range(0..sa.len())]]);
            }
            for _ in 0..sb.len() {
                bb.push(b[sb[self.rng.random_range(0..sb.len())]]);
            }
            push_deltas(&mut draws, &mut ba, &mut bb, stats);
        }
        intervals(draws, point, scale)
    }
}

fn stats_of(buf: &mut [f64], stats: &[Stat]) -> Vec<f64> {
    let ps: Vec<f64> = stats
        .iter()
        .filter_map(|s| if let Stat::Pct(p) = s { Some(*p) } else { None })
        .collect();
    let mean = buf.iter().sum::<f64>() / buf.len().max(1) as f64;
    let pv = percentiles_in_place(buf, &ps);
    let mut pi = pv.into_iter();
    stats
        .iter()
        .map(|s| match s {
            Stat::Mean => mean,
            Stat::Pct(_) => pi.next().flatten().unwrap_or(f64::NAN),
        })
        .collect()
}

fn push_deltas(draws: &mut [Vec<f64>], a: &mut [f64], b: &mut [f64], stats: &[Stat]) {
    let sa = stats_of(a, stats);
    let sb = stats_of(b, stats);
    for k in 0..stats.len() {
        draws[k].push(sb[k] - sa[k]);
    }
}

/// Percentile intervals of the resampled deltas, recentred on the full-sample point estimate
/// and shrunk by the m-out-of-n factor.
fn intervals(draws: Vec<Vec<f64>>, point: &[f64], scale: f64) -> Vec<Option<Ci>> {
    draws
        .into_iter()
        .enumerate()
        .map(|(k, mut d)| {
            d.retain(|x| x.is_finite());
            if d.len() < 10 {
                return None;
            }
            let center = d.iter().sum::<f64>() / d.len() as f64;
            let q = percentiles_in_place(&mut d, &[2.5, 97.5]);
            let (lo, hi) = (q[0]?, q[1]?);
            let p = point.get(k).copied().unwrap_or(center);
            let at = |x: f64| p + (x - center) * scale;
            let below = d.iter().filter(|&&x| at(x) <= 0.0).count();
            let above = d.iter().filter(|&&x| at(x) >= 0.0).count();
            let p_value = (2.0 * (below.min(above) + 1) as f64 / (d.len() + 1) as f64).min(1.0);
            Some(Ci {
                low: at(lo),
                high: at(hi),
                p_value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ci_covers_a_shift_and_unpaired_equal_samples_cover_zero() {
        let mut boot = Bootstrap::new(200, 1000, 7);
        let a: Vec<f64> = (0..2000).map(|i| f64::from(i % 100)).collect();
        let b: Vec<f64> = a.iter().map(|v| v + 10.0).collect();
        let stats = [Stat::Pct(50.0), Stat::Mean];
        let c = boot.paired(&a, &b, &stats, &[10.0, 10.0])[0].unwrap();
        assert!(c.low <= 10.0 && c.high >= 10.0 && c.low > 0.0);
        let mut boot = Bootstrap::new(200, 500, 7);
        let c = boot.unpaired(&a, &a, (2000, 2000), &stats, &[0.0, 0.0])[1].unwrap();
        assert!(c.low < 0.0 && c.high > 0.0);
    }

    #[test]
    fn same_seed_same_intervals_and_too_few_values_give_none() {
        let a: Vec<f64> = (0..300).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|v| v * 1.1).collect();
        let run = || Bootstrap::new(100, 50, 3).paired(&a, &b, &[Stat::Mean], &[15.0]);
        assert_eq!(run(), run());
        assert_eq!(
            Bootstrap::new(100, 50, 3).paired(&[1.0], &[2.0], &[Stat::Mean], &[1.0]),
            vec![None]
        );
    }

    #[test]
    fn benjamini_hochberg_matches_the_textbook_example() {
        // Step-up: p(k) * m / k, made monotone from the top.
        let p = [0.01, 0.04, 0.03, 0.005, 0.5];
        let q = benjamini_hochberg(&p);
        let want = [0.025, 0.05, 0.05, 0.025, 0.5];
        for (g, w) in q.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{q:?}");
        }
        assert!(benjamini_hochberg(&[]).is_empty());
    }

    #[test]
    fn a_clear_shift_has_a_small_p_value_and_no_shift_a_large_one() {
        let mut boot = Bootstrap::new(500, 1000, 3);
        let a: Vec<f64> = (0..200).map(|i| f64::from(i % 17)).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 5.0).collect();
        let ci = boot.paired(&a, &b, &[Stat::Mean], &[5.0])[0].unwrap();
        assert!(ci.p_value < 0.01, "{ci:?}");
        let same = boot.unpaired(&a, &a, (200, 200), &[Stat::Mean], &[0.0])[0].unwrap();
        assert!(same.p_value > 0.5, "{same:?}");
    }
}
