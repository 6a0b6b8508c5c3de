//! Trend tests for a series over time: an OLS slope with a Student-t confidence interval, and
//! Mann-Kendall (rank-based, robust to outliers). The saturation rule and the simulator's
//! calibration use them. Also [`linear_fit`], least squares on several regressors (the
//! simulator's fit of step costs to a capture).

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use crate::percentile::percentiles_in_place;

/// An ordinary least-squares slope with its 95% t confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Slope {
    /// Points used.
    pub n: usize,
    /// Slope (units of y per unit of x).
    pub slope: f64,
    /// Lower end of the 95% CI.
    pub ci_low: f64,
    /// Upper end of the 95% CI.
    pub ci_high: f64,
    /// Intercept.
    pub intercept: f64,
}

impl Slope {
    /// The CI lies above zero.
    pub fn significant_up(&self) -> bool {
        self.ci_low > 0.0
    }
}

/// OLS of y on x with a 95% CI from Student's t with n-2 degrees of freedom; None when fewer
/// than 3 points or x is constant.
pub fn ols(x: &[f64], y: &[f64]) -> Option<Slope> {
    let n = x.len().min(y.len());
    if n < 3 {
        return None;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for i in 0..n {
        sxx += (x[i] - mx).powi(2);
        sxy += (x[i] - mx) * (y[i] - my);
    }
    if sxx <= 0.0 {
        return None;
    }
    let b = sxy / sxx;
    let a = my - b * mx;
    let sse: f64 = (0..n).map(|i| (y[i] - a - b * x[i]).powi(2)).sum();
    let se = (sse / (n - 2) as f64 / sxx).sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 2) as f64)
        .map(|d| d.inverse_cdf(0.975))
        .unwrap_or(1.96);
    Some(Slope {
        n,
        slope: b,
        ci_low: b - t * se,
        ci_high: b + t * se,
        intercept: a,
    })
}

/// Least squares of `y` on the columns of `x` (one row per observation, every row the same
/// length k): the k coefficients minimising the squared error, from the normal equations by
/// Gaussian elimination with partial pivoting. None when there are fewer rows than columns or
/// the columns are collinear. Include a column of ones for an intercept.
pub fn linear_fit(x: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let k = x.first()?.len();
    if k == 0 || x.len() < k || x.len() != y.len() || x.iter().any(|r| r.len() != k) {
        return None;
    }
    // The augmented normal equations [X'X | X'y].
    let mut m = vec![vec![0.0f64; k + 1]; k];
    for (row, &yi) in x.iter().zip(y) {
        for i in 0..k {
            for j in 0..k {
                m[i][j] += row[i] * row[j];
            }
            m[i][k] += row[i] * yi;
        }
    }
    for col in 0..k {
        let pivot = (col..k).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        let scale = m.iter().map(|r| r[col].abs()).fold(0.0, f64::max);
        if m[pivot][col].abs() <= 1e-12 * scale.max(f64::MIN_POSITIVE) {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *v -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|i| m[i][k] / m[i][i]).collect())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_line_has_a_zero_width_interval() {
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 3.0 + 2.0 * v).collect();
        let s = ols(&x, &y).unwrap();
        assert!((s.slope - 2.0).abs() < 1e-12 && (s.intercept - 3.0).abs() < 1e-12);
        assert!((s.ci_high - s.ci_low).abs() < 1e-9);
        assert!(s.significant_up());
    }

    #[test]
    fn noise_widens_the_interval_by_students_t() {
        // Residuals +-1 around y = x: with 4 points the t quantile (df 2) is 4.30, not 1.96.
        let x = [0.0, 1.0, 2.0, 3.0];
        let y = [1.0, 0.0, 3.0, 2.0];
        let s = ols(&x, &y).unwrap();
        let half = (s.ci_high - s.ci_low) / 2.0;
        let se = (s.ci_high - s.slope) / 4.302_652_729_911_275;
        assert!((half / se - 4.302_652_729_911_275).abs() < 1e-6);
        assert!(!s.significant_up(), "{s:?}");
    }

    #[test]
    fn mann_kendall_finds_a_trend_and_not_noise() {
        let y: Vec<f64> = (0..100)
            .map(|v| 2.0 * f64::from(v) + if v % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let mk = mann_kendall(&y, 50).unwrap();
        assert!(mk.z > 3.0 && mk.p_value < 0.01);
        let flat: Vec<f64> = (0..100)
            .map(|v| if v % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(mann_kendall(&flat, 50).unwrap().p_value > 0.05);
    }

    #[test]
    fn linear_fit_recovers_a_plane_and_refuses_collinear_columns() {
        let x: Vec<Vec<f64>> = (0..20)
            .map(|i| vec![1.0, f64::from(i), f64::from((i * 7) % 5)])
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 2.0 + 3.0 * r[1] - 0.5 * r[2]).collect();
        let b = linear_fit(&x, &y).unwrap();
        for (g, w) in b.iter().zip([2.0, 3.0, -0.5]) {
            assert!((g - w).abs() < 1e-9, "{b:?}");
        }
        let dup: Vec<Vec<f64>> = (0..5)
            .map(|i| vec![f64::from(i), 2.0 * f64::from(i)])
            .collect();
        assert!(linear_fit(&dup, &[0.0, 1.0, 2.0, 3.0, 4.0]).is_none());
        assert!(linear_fit(&[vec![1.0, 2.0]], &[1.0]).is_none());
    }

    #[test]
    fn degenerate_inputs_have_no_slope() {
        assert!(ols(&[1.0, 2.0], &[1.0, 2.0]).is_none());
        assert!(ols(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_none());
    }
}
