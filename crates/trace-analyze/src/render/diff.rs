//! `trace diff`'s text, markdown and CSV.

use std::fmt::Write as _;

use super::{cell, ci_str, csv_text, num, rel_str};
use crate::diff::Diff;

impl Diff {
    /// Plain text: the headline of each comparison first, then per-stage tables.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        for c in &self.comparisons {
            let _ = writeln!(o, "{}", c.headline);
        }
        for c in &self.comparisons {
            let _ = writeln!(o, "\n{} (B) vs {} (A, baseline)", c.b, c.a);
            let _ = writeln!(o, "pairing: {} ({})", c.pairing.mode, c.pairing.reason);
            for n in &c.notes {
                let _ = writeln!(o, "note: {n}");
            }
            for s in &c.stages {
                let title = if s.stage == s.stage_b {
                    s.stage.clone()
                } else {
                    format!("{} vs {}", s.stage, s.stage_b)
                };
                let _ = writeln!(
                    o,
                    "\n== stage {title} : A {} / B {} ==",
                    s.saturation_a.as_str(),
                    s.saturation_b.as_str()
                );
                let _ = writeln!(
                    o,
                    "{:<30}{:>11}{:>11}{:>11}{:>9}  {:<24}verdict",
                    "metric", "A", "B", "delta", "rel", "95% CI of delta"
                );
                for m in &s.metrics {
                    let name = if m.stat == "value" {
                        format!("{} ({})", m.metric, m.unit)
                    } else {
                        format!("{} {} ({})", m.metric, m.stat, m.unit)
                    };
                    let prec = if m.unit == "fraction" { 4 } else { 2 };
                    let _ = writeln!(
                        o,
                        "{name:<30}{:>11}{:>11}{:>11}{:>9}  {:<24}{}",
                        num(m.a, prec),
                        num(m.b, prec),
                        m.delta.map_or("-".into(), |d| format!("{d:+.prec$}")),
                        rel_str(m.rel_delta),
                        ci_str(m.ci, prec),
                        m.verdict
                    );
                }
            }
            let _ = writeln!(o, "\nsaturation A: {}", c.saturation_a.summary);
            let _ = writeln!(o, "saturation B: {}", c.saturation_b.summary);
        }
        o
    }

    /// Markdown: headline, then one table per stage.
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        for c in &self.comparisons {
            let _ = writeln!(o, "**{}**\n", c.headline);
            let _ = writeln!(
                o,
                "- B: `{}` vs A: `{}`; pairing: {} ({})",
                c.b, c.a, c.pairing.mode, c.pairing.reason
            );
            for n in &c.notes {
                let _ = writeln!(o, "- note: {n}");
            }
            let _ = writeln!(
                o,
                "- saturation A: {}\n- saturation B: {}",
                c.saturation_a.summary, c.saturation_b.summary
            );
            for s in &c.stages {
                let _ = writeln!(
                    o,
                    "\n### {} (A {}, B {})\n",
                    s.stage,
                    s.saturation_a.as_str(),
                    s.saturation_b.as_str()
                );
                let _ = writeln!(
                    o,
                    "| metric | stat | A | B | delta | rel | 95% CI | verdict |"
                );
                let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---|---|");
                for m in &s.metrics {
                    let _ = writeln!(
                        o,
                        "| {} ({}) | {} | {} | {} | {} | {} | {} | {} |",
                        m.metric,
                        m.unit,
                        m.stat,
                        num(m.a, 3),
                        num(m.b, 3),
                        num(m.delta, 3),
                        rel_str(m.rel_delta),
                        ci_str(m.ci, 3),
                        m.verdict
                    );
                }
            }
            let _ = writeln!(o);
        }
        o
    }

    /// Long CSV: one row per compared number.
    pub fn to_csv(&self) -> String {
        let head = [
            "a",
            "b",
            "stage",
            "metric",
            "stat",
            "unit",
            "value_a",
            "value_b",
            "delta",
            "rel_delta",
            "ci_low",
            "ci_high",
            "verdict",
        ];
        let mut rows = vec![head.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        for c in &self.comparisons {
            for s in &c.stages {
                for m in &s.metrics {
                    rows.push(vec![
                        c.a.clone(),
                        c.b.clone(),
                        s.stage.clone(),
                        m.metric.to_string(),
                        m.stat.clone(),
                        m.unit.to_string(),
                        cell(m.a),
                        cell(m.b),
                        cell(m.delta),
                        cell(m.rel_delta),
                        cell(m.ci.map(|c| c.low)),
                        cell(m.ci.map(|c| c.high)),
                        m.verdict.to_string(),
                    ]);
                }
            }
        }
        csv_text(rows)
    }
}
