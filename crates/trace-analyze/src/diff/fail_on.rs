//! `--fail-on` conditions: parsed once ([`FailOn::parse`]), checked against a [`Diff`], the
//! exit code 1 of a CI gate.

use trace_stats::p_label;

use super::{Diff, LATENCY};
use crate::{Error, Result};

/// Comparison operator of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Lt,
}

/// How a condition's number is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    /// Relative delta in percent (percentage points for failure_rate).
    Percent,
    /// Absolute delta in the metric's unit, after multiplying by this factor.
    Abs(f64),
}

/// One parsed `--fail-on` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    text: String,
    metric: String,
    stat: String,
    op: Op,
    value: f64,
    unit: Unit,
}

/// Parsed `--fail-on` conditions: `METRIC[.STAT](>|<)[+|-]NUMBER[%|ms|s]`, comma-separated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FailOn {
    conds: Vec<Condition>,
}

const SCALARS: [&str; 4] = ["throughput", "output_throughput", "goodput", "failure_rate"];

impl FailOn {
    /// Parses an expression such as `ttft.p99>+10%,throughput<-5%`.
    ///
    /// Latency metrics (`ttft`, `tpot`, `itl`, `e2e`, `e2e_from_scheduled`) need a statistic
    /// (`mean`, `median`, `p50`, `p99.9`...). `%` compares the relative delta (B vs A) in
    /// percent; `ms`/`s` or a bare number compares the absolute delta (ms for latency, req/s or
    /// tok/s for throughput). For `failure_rate`, `%` means percentage points.
    pub fn parse(expr: &str) -> Result<Self> {
        let mut conds = Vec::new();
        for part in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |reason: &str| Error::BadCondition {
                part: part.to_string(),
                reason: reason.into(),
            };
            let (pos, op) = match (part.find('>'), part.find('<')) {
                (Some(p), None) => (p, Op::Gt),
                (None, Some(p)) => (p, Op::Lt),
                _ => return Err(bad("expected exactly one '>' or '<', e.g. ttft.p99>+10%")),
            };
            let (lhs, rhs) = (part[..pos].trim(), part[pos + 1..].trim());
            let (metric, stat) = match lhs.split_once('.') {
                Some((m, s)) => (m.trim(), Some(s.trim())),
                None => (lhs, None),
            };
            let latency = LATENCY.iter().any(|(n, _)| *n == metric);
            if !latency && !SCALARS.contains(&metric) {
                return Err(bad(&format!(
                    "unknown metric '{metric}'; one of ttft, tpot, itl, e2e, e2e_from_scheduled, throughput, \
                     output_throughput, goodput, failure_rate"
                )));
            }
            let stat = match (latency, stat) {
                (true, None) => {
                    return Err(bad(&format!(
                        "name a statistic, e.g. {metric}.p99 or {metric}.mean"
                    )));
                }
                (true, Some("mean")) => "mean".to_string(),
                (true, Some("median")) => "p50".to_string(),
                (true, Some(s)) => {
                    let p = s
                        .strip_prefix('p')
                        .and_then(|n| n.parse::<f64>().ok())
                        .filter(|p| (0.0..=100.0).contains(p))
                        .ok_or_else(|| {
                            bad(&format!(
                                "unknown statistic '{s}'; use mean, median or pNN (p99, p99.9)"
                            ))
                        })?;
                    p_label(p)
                }
                (false, None) => "value".to_string(),
                (false, Some(s)) => {
                    return Err(bad(&format!(
                        "'{metric}' takes no statistic (found '.{s}')"
                    )));
                }
            };
            let (num, unit) = if let Some(n) = rhs.strip_suffix('%') {
                (n, Unit::Percent)
            } else if let Some(n) = rhs.strip_suffix("ms") {
                (n, Unit::Abs(1.0))
            } else if let Some(n) = rhs.strip_suffix('s') {
                (n, Unit::Abs(1000.0))
            } else {
                (rhs, Unit::Abs(1.0))
            };
            if !latency && matches!(unit, Unit::Abs(f) if f != 1.0 || rhs.ends_with("ms")) {
                return Err(bad("time units apply to latency metrics only"));
            }
            let value = num
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    bad(&format!(
                        "'{rhs}' is not a number with an optional %, ms or s"
                    ))
                })?;
            conds.push(Condition {
                text: part.to_string(),
                metric: metric.into(),
                stat,
                op,
                value,
                unit,
            });
        }
        if conds.is_empty() {
            return Err(Error::BadCondition {
                part: expr.into(),
                reason: "no condition given".into(),
            });
        }
        Ok(Self { conds })
    }

    /// Percentile ranks the conditions need computed.
    pub fn ranks(&self) -> Vec<f64> {
        self.conds
            .iter()
            .filter_map(|c| c.stat.strip_prefix('p')?.parse().ok())
            .collect()
    }

    /// The conditions that hold, as human-readable lines (empty: none holds).
    pub fn check(&self, diff: &Diff) -> Vec<String> {
        let mut hits = Vec::new();
        for c in &self.conds {
            for cmp in &diff.comparisons {
                for s in &cmp.stages {
                    let Some(m) = s.get(&c.metric, &c.stat) else {
                        continue;
                    };
                    let observed = match c.unit {
                        Unit::Percent if c.metric == "failure_rate" => m.delta.map(|d| d * 100.0),
                        Unit::Percent => m.rel_delta.map(|r| r * 100.0),
                        Unit::Abs(f) => m.delta.map(|d| d / f),
                    };
                    let Some(v) = observed else { continue };
                    let holds = match c.op {
                        Op::Gt => v > c.value,
                        Op::Lt => v < c.value,
                    };
                    if holds {
                        let unit = match c.unit {
                            Unit::Percent => "%".to_string(),
                            Unit::Abs(1000.0) => "s".into(),
                            Unit::Abs(_) => {
                                if m.unit == "ms" {
                                    "ms".into()
                                } else {
                                    format!(" {}", m.unit)
                                }
                            }
                        };
                        hits.push(format!(
                            "{}: {} vs {} at {}: {}.{} changed by {v:+.2}{unit}",
                            c.text, cmp.b, cmp.a, s.stage, c.metric, c.stat
                        ));
                    }
                }
            }
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_on_parses_and_names_the_bad_part() {
        let f =
            FailOn::parse("ttft.p99>+10%, throughput<-5%,e2e.mean>50ms,failure_rate>1%").unwrap();
        assert_eq!(f.conds.len(), 4);
        assert_eq!(f.ranks(), vec![99.0]);
        for (bad, needle) in [
            ("ttft>10%", "name a statistic"),
            ("latency.p99>1%", "unknown metric"),
            ("ttft.p99=1", "exactly one"),
            ("ttft.q99>1%", "unknown statistic"),
            ("ttft.p99>ten%", "not a number"),
            ("throughput<-5ms", "latency metrics only"),
        ] {
            let e = FailOn::parse(&format!("ttft.p50>1%,{bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("'{bad}'")) && e.contains(needle), "{e}");
        }
    }
}
