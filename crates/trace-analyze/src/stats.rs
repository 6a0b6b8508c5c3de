//! Statistics: summary distributions with percentiles (numpy's default linear interpolation,
//! as vLLM's benchmark uses), OLS slope with a t confidence interval, Mann-Kendall trend test,
//! and the seeded bootstrap used by diff.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::ser::SerializeMap;
use statrs::distribution::{ContinuousCDF, Normal};

/// Percentile rank label as vLLM spells it: `p99`, `p99.9`.
pub fn p_label(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("p{}", p as i64)
    } else {
        format!("p{p}")
    }
}

/// A summary of one metric's distribution, in ms (or the metric's unit).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dist {
    /// Samples.
    pub count: usize,
    /// Mean; None when empty.
    pub mean: Option<f64>,
    /// Population standard deviation (numpy's default, as vLLM).
    pub std: Option<f64>,
    /// Smallest sample.
    pub min: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
    /// Requested percentiles: (rank in 0..=100, value).
    pub percentiles: Vec<(f64, Option<f64>)>,
}

impl Dist {
    /// The value at percentile `p` (must be one of the requested ones).
    pub fn pct(&self, p: f64) -> Option<f64> {
        self.percentiles
            .iter()
            .find(|(q, _)| (*q - p).abs() < 1e-9)
            .and_then(|(_, v)| *v)
    }

    /// The median (always computed).
    pub fn median(&self) -> Option<f64> {
        self.pct(50.0)
    }
}

impl Serialize for Dist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("count", &self.count)?;
        m.serialize_entry("mean", &self.mean)?;
        m.serialize_entry("std", &self.std)?;
        m.serialize_entry("min", &self.min)?;
        m.serialize_entry("max", &self.max)?;
        for (p, v) in &self.percentiles {
            m.serialize_entry(&p_label(*p), v)?;
        }
        m.end()
    }
}

/// Values at the given percentile ranks, by linear interpolation between order statistics
/// (numpy `percentile(..., method="linear")`). Reorders `v`; O(n) per rank, no full sort.
/// NaN values must have been removed.
pub fn percentiles_in_place<T: Copy + PartialOrd + Into<f64>>(
    v: &mut [T],
    ps: &[f64],
) -> Vec<Option<f64>> {
    let n = v.len();
    if n == 0 {
        return vec![None; ps.len()];
    }
    let cmp = |a: &T, b: &T| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
    // Ranks ascending, so each selection works on the part right of the previous one.
    let mut order: Vec<usize> = (0..ps.len()).collect();
    order.sort_by(|&a, &b| ps[a].total_cmp(&ps[b]));
    let mut out = vec![None; ps.len()];
    let mut lo = 0usize;
    for i in order {
        let p = ps[i].clamp(0.0, 100.0);
        let rank = p / 100.0 * (n - 1) as f64;
        let k = rank.floor() as usize;
        let frac = rank - k as f64;
        if k >= lo {
            let (_, nth, _) = v[lo..].select_nth_unstable_by(k - lo, cmp);
            let _ = nth;
            lo = k;
        }
        let a: f64 = v[k].into();
        let val = if frac > 0.0 && k + 1 < n {
            let b: f64 = v[k + 1..].iter().copied().min_by(cmp).map_or(a, Into::into);
            a + (b - a) * frac
        } else {
            a
        };
        out[i] = Some(val);
    }
    out
}

/// Summarises `values` (NaNs skipped) at the percentile ranks `ps`.
pub fn dist_f64(values: impl Iterator<Item = f64>, ps: &[f64]) -> Dist {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    dist_of(&mut v, ps)
}

/// Summarises a slice (reordered in place) at the percentile ranks `ps`.
pub fn dist_of<T: Copy + PartialOrd + Into<f64>>(v: &mut [T], ps: &[f64]) -> Dist {
    let n = v.len();
    if n == 0 {
        return Dist {
            percentiles: ps.iter().map(|p| (*p, None)).collect(),
            ..Default::default()
        };
    }
    let (mut sum, mut min, mut max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &x in v.iter() {
        let x: f64 = x.into();
        sum += x;
        min = min.min(x);
        max = max.max(x);
    }
    let mean = sum / n as f64;
    let var = v
        .iter()
        .map(|&x| (Into::<f64>::into(x) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let vals = percentiles_in_place(v, ps);
    Dist {
        count: n,
        mean: Some(mean),
        std: Some(var.sqrt()),
        min: Some(min),
        max: Some(max),
        percentiles: ps.iter().copied().zip(vals).collect(),
    }
}

pub use trace_stats::{Slope, ols};

/// Mann-Kendall trend test result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MannKendall {
    /// Points used (block medians when the series was long).
    pub n: usize,
    /// Standardised statistic Z (positive: upward trend).
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Mann-Kendall on a series already ordered by time. Long series are reduced to at most
/// `max_points` block medians first: the test is O(n^2), and blocks damp autocorrelation.
pub fn mann_kendall(y: &[f64], max_points: usize) -> Option<MannKendall> {
    let series: Vec<f64> = if y.len() > max_points {
        let block = y.len().div_ceil(max_points);
        y.chunks(block)
            .map(|c| {
                let mut c = c.to_vec();
                percentiles_in_place(&mut c, &[50.0])[0].unwrap_or(f64::NAN)
            })
            .collect()
    } else {
        y.to_vec()
    };
    let n = series.len();
    if n < 4 {
        return None;
    }
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            s += match series[j].partial_cmp(&series[i]) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    let nf = n as f64;
    let var = nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0;
    let z = if s > 0 {
        (s - 1) as f64 / var.sqrt()
    } else if s < 0 {
        (s + 1) as f64 / var.sqrt()
    } else {
        0.0
    };
    let p = Normal::new(0.0, 1.0)
        .map(|d| 2.0 * (1.0 - d.cdf(z.abs())))
        .unwrap_or(1.0);
    Some(MannKendall { n, z, p_value: p })
}

/// A bootstrap confidence interval of a statistic's difference (B - A).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ci {
    /// Lower end (2.5th percentile of the bootstrap distribution).
    pub low: f64,
    /// Upper end (97.5th percentile).
    pub high: f64,
}

/// Draws a seeded subsample of at most `cap` indices out of `n` (all of them when `n <= cap`).
pub fn subsample(n: usize, cap: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if n <= cap {
        return (0..n).collect();
    }
    (0..cap).map(|_| rng.random_range(0..n)).collect()
}

/// The statistic a bootstrap computes on each resample: a percentile rank, or the mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// Arithmetic mean.
    Mean,
    /// Percentile rank 0..=100.
    Pct(f64),
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

/// Bootstrap 95% CIs of `stat(B) - stat(A)` for each statistic.
///
/// Paired (`pairs` given as index pairs into a and b): resamples pairs. Unpaired: resamples
/// each side independently. Work is bounded: each side is subsampled to at most `cap` values,
/// and the resampled deviations are scaled by sqrt(m/n) (m-out-of-n bootstrap) so the interval
/// still reflects the full sample size `full` (a's and b's sizes, or the pair count; callers
/// may pass already-subsampled slices with the full sizes).
#[allow(clippy::too_many_arguments)]
pub fn bootstrap_delta(
    a: &[f64],
    b: &[f64],
    full: (usize, usize),
    pairs: Option<&[(usize, usize)]>,
    stats: &[Stat],
    point: &[f64],
    resamples: usize,
    cap: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Option<Ci>> {
    let none = vec![None; stats.len()];
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); stats.len()];
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    let scale;
    match pairs {
        Some(pairs) => {
            if pairs.len() < 2 {
                return none;
            }
            let sub = subsample(pairs.len(), cap, rng);
            let m = sub.len();
            scale = (m as f64 / full.0.max(pairs.len()) as f64).sqrt();
            for _ in 0..resamples {
                ba.clear();
                bb.clear();
                for _ in 0..m {
                    let (i, j) = pairs[sub[rng.random_range(0..m)]];
                    ba.push(a[i]);
                    bb.push(b[j]);
                }
                let sa = stats_of(&mut ba, stats);
                let sb = stats_of(&mut bb, stats);
                for k in 0..stats.len() {
                    draws[k].push(sb[k] - sa[k]);
                }
            }
        }
        None => {
            if a.len() < 2 || b.len() < 2 {
                return none;
            }
            let sa_idx = subsample(a.len(), cap, rng);
            let sb_idx = subsample(b.len(), cap, rng);
            // One scale for both sides: the variance of a difference is dominated by the
            // smaller side, so use the larger of the two ratios (conservative).
            scale = (sa_idx.len() as f64 / full.0.max(a.len()) as f64)
                .sqrt()
                .max((sb_idx.len() as f64 / full.1.max(b.len()) as f64).sqrt());
            for _ in 0..resamples {
                ba.clear();
                bb.clear();
                for _ in 0..sa_idx.len() {
                    ba.push(a[sa_idx[rng.random_range(0..sa_idx.len())]]);
                }
                for _ in 0..sb_idx.len() {
                    bb.push(b[sb_idx[rng.random_range(0..sb_idx.len())]]);
                }
                let sa = stats_of(&mut ba, stats);
                let sb = stats_of(&mut bb, stats);
                for k in 0..stats.len() {
                    draws[k].push(sb[k] - sa[k]);
                }
            }
        }
    }
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
            // Percentile interval of the resampled deltas, recentred on the full-sample point
            // estimate and shrunk by the m-out-of-n factor.
            Some(Ci {
                low: p + (lo - center) * scale,
                high: p + (hi - center) * scale,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn percentiles_match_numpy_linear() {
        let mut v: Vec<f64> = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        let p = percentiles_in_place(&mut v, &[99.0, 50.0, 0.0, 90.0, 100.0, 25.0]);
        // numpy.percentile([1,2,3,4,5], [99,50,0,90,100,25]) = [4.96, 3, 1, 4.6, 5, 2]
        let want = [4.96, 3.0, 1.0, 4.6, 5.0, 2.0];
        for (g, w) in p.iter().zip(want) {
            assert!((g.unwrap() - w).abs() < 1e-12, "{g:?} vs {w}");
        }
        assert_eq!(percentiles_in_place::<f64>(&mut [], &[50.0]), vec![None]);
        let d = dist_of(&mut [2.0f64, 4.0], &[50.0]);
        assert_eq!(
            (d.mean, d.std, d.median()),
            (Some(3.0), Some(1.0), Some(3.0))
        );
        assert_eq!(p_label(99.9), "p99.9");
        assert_eq!(p_label(50.0), "p50");
    }

    #[test]
    fn ols_and_mann_kendall_find_a_trend() {
        let x: Vec<f64> = (0..100).map(f64::from).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|v| 2.0 * v + if (*v as i64) % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let s = ols(&x, &y).unwrap();
        assert!((s.slope - 2.0).abs() < 0.01 && s.significant_up());
        let mk = mann_kendall(&y, 50).unwrap();
        assert!(mk.z > 3.0 && mk.p_value < 0.01);
        let flat: Vec<f64> = x
            .iter()
            .map(|v| if (*v as i64) % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(!ols(&x, &flat).unwrap().significant_up());
    }

    #[test]
    fn bootstrap_ci_covers_a_shift() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let a: Vec<f64> = (0..2000).map(|i| f64::from(i % 100)).collect();
        let b: Vec<f64> = a.iter().map(|v| v + 10.0).collect();
        let pairs: Vec<(usize, usize)> = (0..2000).map(|i| (i, i)).collect();
        let stats = [Stat::Pct(50.0), Stat::Mean];
        let ci = bootstrap_delta(
            &a,
            &b,
            (2000, 2000),
            Some(&pairs),
            &stats,
            &[10.0, 10.0],
            200,
            1000,
            &mut rng,
        );
        let c = ci[0].unwrap();
        assert!(c.low <= 10.0 && c.high >= 10.0 && c.low > 0.0);
        let ci = bootstrap_delta(
            &a,
            &a,
            (2000, 2000),
            None,
            &stats,
            &[0.0, 0.0],
            200,
            500,
            &mut rng,
        );
        let c = ci[1].unwrap();
        assert!(c.low < 0.0 && c.high > 0.0);
    }
}
