//! trace-stats: every statistic of `trace`, in one place.
//!
//! - [`percentile`]: percentiles by numpy's default linear interpolation (as vLLM's benchmark
//!   computes them) and [`Dist`], a metric's summary (count, mean, std, min, max, percentiles);
//! - [`trend`]: the OLS slope with its Student-t interval ([`ols`]) and Mann-Kendall
//!   ([`mann_kendall`]), for the saturation rule and the simulator's calibration;
//! - [`bootstrap`]: the seeded m-out-of-n [`Bootstrap`] of differences behind `trace diff`;
//! - [`across`]: a metric's mean over repeated runs with its t-interval and CV ([`mean_ci`]).
//!
//! It depends on no other trace crate, and on nothing heavier than statrs and rand, so the
//! analyzer, the replay summary, selfcheck and the simulator all share it.

pub mod across;
pub mod bootstrap;
pub mod percentile;
pub mod trend;

pub use across::{MeanCi, mean_ci};
pub use bootstrap::{Bootstrap, Ci, Stat, benjamini_hochberg};
pub use percentile::{Dist, dist_f64, dist_of, p_label, percentile, percentiles_in_place};
pub use trend::{MannKendall, Slope, linear_fit, mann_kendall, ols};
