//! `trace report`'s text, markdown and CSV.

use std::fmt::Write as _;

use trace_stats::p_label;

use super::{cell, csv_text, num};
use crate::report::{METRIC_NAMES, Report};
use crate::saturation::StageSaturation;

const TABLE_METRICS: [(&str, &str); 10] = [
    ("ttft", "TTFT"),
    ("ttfa", "TTFA (answer)"),
    ("tpot", "TPOT"),
    ("itl", "ITL"),
    ("itl_per_token", "ITL per token"),
    ("e2e", "E2E"),
    ("ttft_from_scheduled", "TTFT from sched."),
    ("e2e_from_scheduled", "E2E from sched."),
    ("send_lag", "Send lag"),
    ("queue_wait", "Queue wait"),
];

/// The evidence behind a verdict, one item per series.
fn evidence(sat: &StageSaturation) -> Vec<String> {
    let mut e = Vec::new();
    if let (Some((a, b)), Some(svc)) = (sat.window_s, sat.service_time_s) {
        e.push(format!(
            "steady window {a:.1}-{b:.1} s of the arrivals (service time ~{svc:.2} s)"
        ));
    }
    for (name, t) in [("TTFT", sat.ttft), ("TPOT", sat.tpot)] {
        if let Some(t) = t {
            let mk = t
                .mann_kendall
                .map_or(String::new(), |m| format!(", Mann-Kendall z={:.2}", m.z));
            e.push(format!(
                "{name} slope {:+.4} s/s [95% CI {:+.4}, {:+.4}], rise {:+.1} ms on a median of {:.1}{mk}",
                t.slope.slope, t.slope.ci_low, t.slope.ci_high, t.rise_ms, t.median_ms
            ));
        }
    }
    if let (Some(s), Some(m)) = (sat.backlog_slope, sat.backlog_mean) {
        e.push(format!(
            "backlog slope {:+.2} req/s [{:+.2}, {:+.2}], mean {m:.1}",
            s.slope, s.ci_low, s.ci_high
        ));
    }
    if let Some(c) = sat.completion_ratio {
        e.push(format!("completions/arrivals {c:.2}"));
    }
    if let (Some(d), Some(m)) = (sat.drain_s, sat.median_e2e_s) {
        e.push(format!(
            "drained {d:.2} s after the last arrival (median E2E {m:.2} s)"
        ));
    }
    if let Some(s) = sat.send_lag_slope {
        e.push(format!("send-lag slope {:+.2e} s/s", s.slope));
    }
    if let Some(s) = sat.server_queue_slope {
        e.push(format!(
            "server queue slope {:+.2} req/s [{:+.2}, {:+.2}]",
            s.slope, s.ci_low, s.ci_high
        ));
    }
    if let Some(m) = sat.capacity_estimate {
        e.push(format!("capacity estimate {m:.2} req/s"));
    }
    e
}

impl Report {
    /// Plain text: one block per stage, then the run's saturation line and warnings.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "trace report {}{}  ({} stage{})",
            self.file,
            self.label
                .as_ref()
                .map_or(String::new(), |l| format!("  label {l}")),
            self.stages.len(),
            if self.stages.len() == 1 { "" } else { "s" }
        );
        for s in &self.stages {
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "== stage {}{} : {} ==",
                s.stage,
                s.target_rate
                    .map_or(String::new(), |r| format!(" (target {r:.2} req/s)")),
                s.saturation.verdict.as_str()
            );
            let kv = |o: &mut String, k: &str, v: String| {
                let _ = writeln!(o, "{k:<36}{v:>14}");
            };
            kv(&mut o, "Duration (s):", format!("{:.2}", s.duration_s));
            kv(&mut o, "Requests completed:", s.completed.to_string());
            kv(&mut o, "Requests failed:", s.failed.to_string());
            kv(
                &mut o,
                "Total input tokens:",
                s.total_input_tokens.to_string(),
            );
            kv(
                &mut o,
                "Total output tokens:",
                s.total_output_tokens.to_string(),
            );
            if let Some(r) = s.reasoning_tokens {
                kv(&mut o, "Reasoning tokens (of output):", r.to_string());
            }
            if let (Some(c), Some(h)) = (s.cached_tokens, s.cache_hit_rate) {
                kv(&mut o, "Cached prompt tokens:", c.to_string());
                kv(
                    &mut o,
                    "Prefix cache hit rate:",
                    format!("{:.1}%", 100.0 * h),
                );
            }
            if let Some(h) = s.server_cache_hit_rate {
                kv(
                    &mut o,
                    "Server prefix cache hit rate:",
                    format!("{:.1}%", 100.0 * h),
                );
            }
            if let Some(g) = &s.gpu {
                let f = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
                kv(
                    &mut o,
                    "GPU peak memory, one GPU (MiB):",
                    f(g.peak_mem_mib, 0),
                );
                kv(&mut o, "GPU mean utilisation (%):", f(g.mean_util_pct, 1));
                kv(&mut o, "GPU mean power, all (W):", f(g.mean_power_w, 0));
            }
            if let Some(ss) = &s.sessions {
                kv(
                    &mut o,
                    "Sessions (completed/failed):",
                    format!("{} ({}/{})", ss.sessions, ss.completed, ss.failed),
                );
                kv(
                    &mut o,
                    "Turns per session:",
                    format!("{:.2}", ss.turns_mean),
                );
                kv(
                    &mut o,
                    "Session duration p50/max (s):",
                    format!(
                        "{}/{}",
                        num(ss.duration_s.pct(50.0), 2),
                        num(ss.duration_s.max, 2)
                    ),
                );
            }
            kv(
                &mut o,
                "Request throughput (req/s):",
                format!("{:.2}", s.request_throughput),
            );
            if let Some(g) = s.goodput {
                kv(&mut o, "Goodput (req/s):", format!("{g:.2}"));
            }
            kv(
                &mut o,
                "Input token throughput (tok/s):",
                format!("{:.2}", s.input_throughput),
            );
            kv(
                &mut o,
                "Output token throughput (tok/s):",
                format!("{:.2}", s.output_throughput),
            );
            kv(
                &mut o,
                "Total token throughput (tok/s):",
                format!("{:.2}", s.total_token_throughput),
            );
            let _ = write!(o, "{:<20}{:>10}", "latency (ms)", "mean");
            for p in &self.percentiles {
                let _ = write!(o, "{:>10}", p_label(*p));
            }
            let _ = writeln!(o);
            for (key, name) in TABLE_METRICS {
                let Some(d) = s.metrics.get(key) else {
                    continue;
                };
                if key == "itl_per_token" && s.metrics.itl_per_token == s.metrics.itl {
                    continue;
                }
                // Queue wait needs the headers' time, which imported traces may lack.
                if key == "queue_wait" && d.count == 0 {
                    continue;
                }
                // TTFA differs from TTFT only where responses reason first.
                if key == "ttfa" && s.reasoning_tokens.is_none() {
                    continue;
                }
                let _ = write!(o, "{name:<20}{:>10}", num(d.mean, 2));
                for p in &self.percentiles {
                    let _ = write!(o, "{:>10}", num(d.pct(*p), 2));
                }
                let _ = writeln!(o);
            }
            if let Some(ss) = &s.sessions {
                let _ = write!(o, "{:<20}{:>10}", "turns (ms)", "count");
                for p in &self.percentiles {
                    let _ = write!(o, "{:>10}", format!("TTFT {}", p_label(*p)));
                }
                let _ = writeln!(o, "{:>10}{:>10}", "TPOT p50", "cache hit");
                for (name, t) in [
                    ("first turn", &ss.first_turn),
                    ("later turns", &ss.later_turns),
                ] {
                    let _ = write!(o, "{name:<20}{:>10}", t.completed);
                    for p in &self.percentiles {
                        let _ = write!(o, "{:>10}", num(t.ttft.pct(*p), 2));
                    }
                    let hit = t
                        .cache_hit_rate
                        .map_or("-".to_string(), |h| format!("{:.1}%", 100.0 * h));
                    let _ = writeln!(o, "{:>10}{hit:>10}", num(t.tpot.pct(50.0), 2));
                }
            }
            let _ = writeln!(
                o,
                "Saturation: {}: {}",
                s.saturation.verdict.as_str(),
                s.saturation.reason
            );
            for e in evidence(&s.saturation) {
                let _ = writeln!(o, "  {e}");
            }
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "Run: {}", self.saturation.summary);
        for w in &self.warnings {
            let _ = writeln!(o, "warning: {w}");
        }
        o
    }

    /// GitHub-flavoured markdown: a summary table, then a latency table per stage.
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# trace report `{}`\n", self.file);
        let _ = writeln!(
            o,
            "| stage | target req/s | duration s | completed | failed | req/s | out tok/s | goodput req/s | saturation |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for s in &self.stages {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2} | {} | {} | {:.2} | {:.2} | {} | {} |",
                s.stage,
                num(s.target_rate, 2),
                s.duration_s,
                s.completed,
                s.failed,
                s.request_throughput,
                s.output_throughput,
                num(s.goodput, 2),
                s.saturation.verdict.as_str()
            );
        }
        for s in &self.stages {
            let _ = writeln!(o, "\n## {}\n", s.stage);
            let _ = write!(o, "| latency (ms) | mean |");
            for p in &self.percentiles {
                let _ = write!(o, " {} |", p_label(*p));
            }
            let _ = writeln!(o);
            let _ = write!(o, "|---|---:|");
            for _ in &self.percentiles {
                let _ = write!(o, "---:|");
            }
            let _ = writeln!(o);
            for (key, name) in TABLE_METRICS {
                let Some(d) = s.metrics.get(key) else {
                    continue;
                };
                if key == "queue_wait" && d.count == 0 {
                    continue;
                }
                if key == "ttfa" && s.reasoning_tokens.is_none() {
                    continue;
                }
                let _ = write!(o, "| {name} | {} |", num(d.mean, 2));
                for p in &self.percentiles {
                    let _ = write!(o, " {} |", num(d.pct(*p), 2));
                }
                let _ = writeln!(o);
            }
            let _ = writeln!(
                o,
                "\nSaturation: **{}**: {}",
                s.saturation.verdict.as_str(),
                s.saturation.reason
            );
            for e in evidence(&s.saturation) {
                let _ = writeln!(o, "- {e}");
            }
        }
        let _ = writeln!(o, "\n**Run:** {}", self.saturation.summary);
        for w in &self.warnings {
            let _ = writeln!(o, "\n> warning: {w}");
        }
        o
    }

    /// Long-format CSV: `stage,metric,stat,value`, one row per number.
    pub fn to_csv(&self) -> String {
        let mut rows = vec![vec![
            "stage".to_string(),
            "metric".into(),
            "stat".into(),
            "value".into(),
        ]];
        for s in &self.stages {
            let mut row = |m: &str, stat: &str, v: Option<f64>| {
                rows.push(vec![s.stage.clone(), m.into(), stat.into(), cell(v)]);
            };
            row("stage", "target_rate", s.target_rate);
            row("stage", "duration_s", Some(s.duration_s));
            row("stage", "requests", Some(s.requests as f64));
            row("stage", "completed", Some(s.completed as f64));
            row("stage", "failed", Some(s.failed as f64));
            row(
                "stage",
                "total_input_tokens",
                Some(s.total_input_tokens as f64),
            );
            row(
                "stage",
                "total_output_tokens",
                Some(s.total_output_tokens as f64),
            );
            row("stage", "request_throughput", Some(s.request_throughput));
            row("stage", "input_throughput", Some(s.input_throughput));
            row("stage", "output_throughput", Some(s.output_throughput));
            row("stage", "goodput", s.goodput);
            row(
                "stage",
                "reasoning_tokens",
                s.reasoning_tokens.map(|r| r as f64),
            );
            row("stage", "cached_tokens", s.cached_tokens.map(|c| c as f64));
            row("stage", "cache_hit_rate", s.cache_hit_rate);
            row("stage", "server_cache_hit_rate", s.server_cache_hit_rate);
            if let Some(g) = &s.gpu {
                row("gpu", "peak_mem_mib", g.peak_mem_mib);
                row("gpu", "peak_mem_total_mib", g.peak_mem_total_mib);
                row("gpu", "mean_util_pct", g.mean_util_pct);
                row("gpu", "mean_power_w", g.mean_power_w);
            }
            if let Some(ss) = &s.sessions {
                row("sessions", "count", Some(ss.sessions as f64));
                row("sessions", "completed", Some(ss.completed as f64));
                row("sessions", "failed", Some(ss.failed as f64));
                row("sessions", "turns_mean", Some(ss.turns_mean));
                row("sessions", "duration_s_p50", ss.duration_s.pct(50.0));
                for (g, t) in [
                    ("first_turn", &ss.first_turn),
                    ("later_turns", &ss.later_turns),
                ] {
                    row(g, "count", Some(t.completed as f64));
                    row(g, "ttft_p50", t.ttft.pct(50.0));
                    row(g, "ttft_p99", t.ttft.pct(99.0));
                    row(g, "tpot_p50", t.tpot.pct(50.0));
                    row(g, "cache_hit_rate", t.cache_hit_rate);
                }
            }
            row(
                "stage",
                "saturated",
                Some(f64::from(u8::from(
                    s.saturation.verdict == crate::saturation::Verdict::Saturated,
                ))),
            );
            for key in METRIC_NAMES {
                let Some(d) = s.metrics.get(key) else {
                    continue;
                };
                row(key, "count", Some(d.count as f64));
                row(key, "mean", d.mean);
                row(key, "std", d.std);
                for (p, v) in &d.percentiles {
                    row(key, &p_label(*p), *v);
                }
            }
        }
        csv_text(rows)
    }
}
