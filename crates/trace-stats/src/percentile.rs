//! Percentiles (numpy's default linear interpolation, as vLLM's benchmark uses) and [`Dist`],
//! the summary of one metric's distribution.

use serde::Serialize;
use serde::ser::SerializeMap;

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

/// The value at percentile `q` (0..=100) of `values` (reordered), by linear interpolation;
/// None when empty. NaN values must have been removed.
pub fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    percentiles_in_place(values, &[q])[0]
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(percentile(&mut [1.0, 2.0], 50.0), Some(1.5));
        assert_eq!(percentile(&mut [], 50.0), None);
        let d = dist_of(&mut [2.0f64, 4.0], &[50.0]);
        assert_eq!(
            (d.mean, d.std, d.median()),
            (Some(3.0), Some(1.0), Some(3.0))
        );
        assert_eq!(p_label(99.9), "p99.9");
        assert_eq!(p_label(50.0), "p50");
    }
}
