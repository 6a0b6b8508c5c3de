//! [`mean_ci`]: a metric over repeated runs (a campaign's `--repeat N`): its mean, the 95%
//! Student t-interval of that mean, and the coefficient of variation that says whether the
//! runs agree.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A metric's mean over repeated runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MeanCi {
    /// Runs.
    pub n: usize,
    /// Mean over the runs.
    pub mean: f64,
    /// 95% t-interval of the mean (None for one run).
    pub low: Option<f64>,
    /// Upper end.
    pub high: Option<f64>,
    /// Sample standard deviation over the mean (None for one run or a zero mean).
    pub cv: Option<f64>,
}

/// The mean, 95% t-interval and coefficient of variation of `v` (finite values only); None when
/// there is none.
pub fn mean_ci(v: &[f64]) -> Option<MeanCi> {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some(MeanCi {
            n,
            mean,
            low: None,
            high: None,
            cv: None,
        });
    }
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .map(|d| d.inverse_cdf(0.975))
        .unwrap_or(f64::NAN);
    let half = t * sd / (n as f64).sqrt();
    Some(MeanCi {
        n,
        mean,
        low: Some(mean - half),
        high: Some(mean + half),
        cv: (mean != 0.0).then(|| sd / mean.abs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_runs() {
        let m = mean_ci(&[10.0, 12.0, 14.0]).unwrap();
        assert_eq!((m.n, m.mean), (3, 12.0));
        // sd 2, t(2, 0.975) = 4.3027: half-width 4.3027 * 2 / sqrt(3) = 4.968.
        assert!((m.high.unwrap() - 16.968).abs() < 1e-3, "{m:?}");
        assert!((m.cv.unwrap() - 2.0 / 12.0).abs() < 1e-12);
        assert_eq!(mean_ci(&[5.0]).unwrap().low, None);
        assert!(mean_ci(&[f64::NAN]).is_none());
    }
}
