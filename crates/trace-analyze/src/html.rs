//! `--html`: one self-contained HTML file with inline SVG charts (no scripts, no external
//! assets): latency CDFs per stage, TTFT over arrival time, throughput vs TTFT per stage, the
//! server queue over time, and A/B overlays for diff. The SVG is written by hand: a few line and
//! dot charts do not justify a plotting crate's compile time.

use std::fmt::Write as _;

use crate::diff::Diff;
use crate::load::{RunData, StageData};
use crate::report::Report;
use trace_stats::percentiles_in_place;

const W: f64 = 640.0;
const H: f64 = 360.0;
const ML: f64 = 64.0;
const MR: f64 = 150.0;
const MT: f64 = 32.0;
const MB: f64 = 44.0;
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Line,
    Dashed,
    Dots,
}

struct Series {
    name: String,
    color: &'static str,
    mark: Mark,
    pts: Vec<(f64, f64)>,
}

struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(mag * 10.0);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 12 {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}").trim_end_matches(".0").to_string()
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

impl Chart {
    fn svg(&self) -> String {
        let pts = self
            .series
            .iter()
            .flat_map(|s| s.pts.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for p in pts {
            x0 = x0.min(p.0);
            x1 = x1.max(p.0);
            y0 = y0.min(p.1);
            y1 = y1.max(p.1);
        }
        let mut o = String::new();
        let _ = write!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
        );
        let _ = write!(
            o,
            r#"<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>"#,
            ML,
            esc(&self.title)
        );
        if !x0.is_finite() {
            let _ = write!(
                o,
                r#"<text x="{}" y="{}">no data</text></svg>"#,
                W / 2.0 - 20.0,
                H / 2.0
            );
            return o;
        }
        y0 = y0.min(0.0);
        // A (near-)constant series still gets a readable axis around its value.
        if x1 - x0 <= 1e-6 * x0.abs().max(1e-9) {
            let pad = (x0.abs() * 0.05).max(1e-3);
            x0 -= pad;
            x1 += pad;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let (pw, ph) = (W - ML - MR, H - MT - MB);
        let sx = |x: f64| ML + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| MT + ph - (y - y0) / (y1 - y0) * ph;
        let _ = write!(
            o,
            r##"<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
        );
        for t in nice_ticks(x0, x1) {
            let x = sx(t);
            let _ = write!(
                o,
                r##"<line x1="{x:.1}" y1="{MT}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                MT + ph,
                MT + ph + 14.0,
                fmt_tick(t)
            );
        }
        for t in nice_ticks(y0, y1) {
            let y = sy(t);
            let _ = write!(
                o,
                r##"<line x1="{ML}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                ML + pw,
                ML - 4.0,
                y + 4.0,
                fmt_tick(t)
            );
        }
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            ML + pw / 2.0,
            H - 8.0,
            esc(&self.x_label)
        );
        let _ = write!(
            o,
            r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            MT + ph / 2.0,
            esc(&self.y_label)
        );
        for (k, s) in self.series.iter().enumerate() {
            let finite: Vec<&(f64, f64)> = s
                .pts
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            match s.mark {
                Mark::Dots => {
                    let _ = write!(o, r#"<g fill="{}" fill-opacity="0.5">"#, s.color);
                    for p in finite {
                        let _ = write!(
                            o,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6"/>"#,
                            sx(p.0),
                            sy(p.1)
                        );
                    }
                    o.push_str("</g>");
                }
                Mark::Line | Mark::Dashed => {
                    let d: Vec<String> = finite
                        .iter()
                        .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
                        .collect();
                    let dash = if s.mark == Mark::Dashed {
                        r#" stroke-dasharray="5,3""#
                    } else {
                        ""
                    };
                    let _ = write!(
                        o,
                        r#"<polyline fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}"/>"#,
                        s.color,
                        d.join(" ")
                    );
                    if finite.len() <= 12 {
                        for p in &finite {
                            let _ = write!(
                                o,
                                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                                sx(p.0),
                                sy(p.1),
                                s.color
                            );
                        }
                    }
                }
            }
            let ly = MT + 6.0 + 16.0 * k as f64;
            let lx = ML + pw + 10.0;
            let dash = if s.mark == Mark::Dashed {
                r#" stroke-dasharray="5,3""#
            } else {
                ""
            };
            let _ = write!(
                o,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="3"{dash}/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                s.color,
                lx + 22.0,
                ly + 4.0,
                esc(&truncate(&s.name, 20))
            );
        }
        o.push_str("</svg>");
        o
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// An empirical CDF as at most ~200 points (x = value, y = fraction).
fn cdf(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return Vec::new();
    }
    let ps: Vec<f64> = (0..=200).map(|i| f64::from(i) / 2.0).collect();
    let q = percentiles_in_place(&mut v, &ps);
    ps.iter()
        .zip(q)
        .filter_map(|(p, x)| Some((x?, p / 100.0)))
        .collect()
}

fn strided<T: Copy>(v: &[T], max: usize) -> Vec<T> {
    let step = v.len().div_ceil(max.max(1)).max(1);
    v.iter().step_by(step).copied().collect()
}

fn metric_values(s: &StageData, metric: &str) -> Vec<f64> {
    let f: fn(&crate::ReqRow) -> f64 = match metric {
        "ttft" => |r| r.ttft_ms,
        "tpot" => |r| r.tpot_ms,
        "e2e" => |r| r.e2e_ms,
        _ => {
            return strided(&s.itl_ms, 20_000)
                .into_iter()
                .map(f64::from)
                .collect();
        }
    };
    s.rows.iter().filter(|r| r.ok).map(f).collect()
}

const PAGE_HEAD: &str = r#"<!DOCTYPE html><html><head><meta charset="utf-8"><title>TITLE</title>
<style>body{font-family:sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:28px}
.grid{display:flex;flex-wrap:wrap;gap:12px}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}
.warn{color:#a40}</style></head><body>
"#;

fn page(title: &str, body: &str) -> String {
    let mut o = PAGE_HEAD.replace("TITLE", &esc(title));
    o.push_str(body);
    o.push_str("</body></html>\n");
    o
}

fn cdf_chart(title: &str, unit: &str, series: Vec<Series>) -> String {
    Chart {
        title: title.into(),
        x_label: unit.into(),
        y_label: "fraction of requests".into(),
        series,
    }
    .svg()
}

/// A campaign's page (`trace report DIR --html`): every run's stages as points, output tokens/s
/// against TTFT P50 and P99, and per-user tokens/s (1000 / TPOT P50) against total tokens/s,
/// the throughput-latency trade-off across scenarios and engine settings. `runs` are
/// (series name, point label, report).
pub fn campaign_html(title: &str, runs: &[(String, String, Report)]) -> String {
    let mut names: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    names.dedup();
    let mut seen = Vec::new();
    names.retain(|n| {
        let new = !seen.contains(n);
        seen.push(*n);
        new
    });
    let series =
        |mark: Mark, f: &dyn Fn(&crate::report::StageReport) -> (f64, f64), suffix: &str| {
            names
                .iter()
                .enumerate()
                .map(|(k, n)| Series {
                    name: format!("{n}{suffix}"),
                    color: PALETTE[k % PALETTE.len()],
                    mark,
                    pts: runs
                        .iter()
                        .filter(|r| r.0 == *n)
                        .flat_map(|r| r.2.stages.iter().map(f))
                        .collect(),
                })
                .collect::<Vec<_>>()
        };
    let p = |s: &crate::report::StageReport, q: f64| s.metrics.ttft.pct(q).unwrap_or(f64::NAN);
    let mut latency = series(Mark::Dots, &|s| (s.output_throughput, p(s, 50.0)), " P50");
    latency.extend(series(
        Mark::Dashed,
        &|s| (s.output_throughput, p(s, 99.0)),
        " P99",
    ));
    let pareto = series(
        Mark::Dots,
        &|s| {
            let per_user = s.metrics.tpot.pct(50.0).map_or(f64::NAN, |t| 1000.0 / t);
            (s.total_token_throughput, per_user)
        },
        "",
    );
    let mut b = String::new();
    let _ = writeln!(b, "<h1>campaign {}</h1>", esc(title));
    b.push_str("<table><tr><th>scenario</th><th>point</th><th>stage</th><th>out tok/s</th><th>TTFT p50 ms</th><th>TTFT p99 ms</th><th>TPOT p50 ms</th><th>saturation</th></tr>");
    for (name, point, rep) in runs {
        for s in &rep.stages {
            let n = crate::render::num;
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                esc(point),
                esc(&s.stage),
                s.output_throughput,
                n(s.metrics.ttft.pct(50.0), 1),
                n(s.metrics.ttft.pct(99.0), 1),
                n(s.metrics.tpot.pct(50.0), 2),
                s.saturation.verdict.as_str()
            );
        }
    }
    b.push_str("</table>");
    for chart in [
        Chart {
            title: "Throughput against latency, every run and stage".into(),
            x_label: "output tokens/s".into(),
            y_label: "TTFT ms (dots P50, dashes P99)".into(),
            series: latency,
        },
        Chart {
            title: "Per-user against total throughput (the Pareto view)".into(),
            x_label: "total tokens/s".into(),
            y_label: "tokens/s per user (1000 / TPOT P50)".into(),
            series: pareto,
        },
    ] {
        b.push_str(&chart.svg());
    }
    page(&format!("campaign {title}"), &b)
}

/// The `trace report --html` page.
pub fn report_html(report: &Report, run: &RunData) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<h1>trace report {}</h1>", esc(&report.file));
    let _ = writeln!(b, "<p><b>Run:</b> {}</p>", esc(&report.saturation.summary));
    for w in &report.warnings {
        let _ = writeln!(b, "<p class=\"warn\">warning: {}</p>", esc(w));
    }
    b.push_str("<table><tr><th>stage</th><th>target req/s</th><th>completed</th><th>failed</th><th>req/s</th><th>TTFT p50 ms</th><th>TTFT p99 ms</th><th>ITL p50 ms</th><th>saturation</th></tr>");
    for s in &report.stages {
        let n = crate::render::num;
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.stage),
            n(s.target_rate, 2),
            s.completed,
            s.failed,
            s.request_throughput,
            n(s.metrics.ttft.median(), 2),
            n(s.metrics.ttft.pct(99.0), 2),
            n(s.metrics.itl.median(), 2),
            s.saturation.verdict.as_str()
        );
    }
    b.push_str("</table>\n<h2>Latency CDFs per stage</h2><div class=\"grid\">");
    for (metric, title) in [
        ("ttft", "TTFT"),
        ("tpot", "TPOT"),
        ("itl", "ITL"),
        ("e2e", "E2E"),
    ] {
        let series = run
            .stages
            .iter()
            .enumerate()
            .map(|(k, s)| Series {
                name: s.label.clone(),
                color: PALETTE[k % PALETTE.len()],
                mark: Mark::Line,
                pts: cdf(metric_values(s, metric)),
            })
            .collect();
        b.push_str(&cdf_chart(
            &format!("{title} CDF"),
            &format!("{title} (ms)"),
            series,
        ));
    }
    b.push_str("</div>\n<h2>TTFT over arrival time</h2><div class=\"grid\">");
    let series = run
        .stages
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let pts: Vec<(f64, f64)> = s
                .rows
                .iter()
                .filter(|r| r.ok && r.ttft_ms.is_finite())
                .map(|r| (r.scheduled_ns as f64 / 1e9, r.ttft_ms))
                .collect();
            Series {
                name: s.label.clone(),
                color: PALETTE[k % PALETTE.len()],
                mark: Mark::Dots,
                pts: strided(&pts, 3000),
            }
        })
        .collect();
    b.push_str(
        &Chart {
            title: "TTFT by arrival (scheduled send)".into(),
            x_label: "arrival (s since run start)".into(),
            y_label: "TTFT (ms)".into(),
            series,
        }
        .svg(),
    );
    b.push_str(&throughput_chart(&[(run_name(report), report)]));
    b.push_str("</div>");
    if !run.server.is_empty() {
        b.push_str("<h2>Server queue</h2><div class=\"grid\">");
        b.push_str(&server_chart(&[(run_name(report), run)]));
        b.push_str("</div>");
    }
    page(&format!("trace report {}", report.file), &b)
}

fn run_name(r: &Report) -> String {
    r.label
        .clone()
        .unwrap_or_else(|| r.file.rsplit('/').next().unwrap_or(&r.file).to_string())
}

fn throughput_chart(runs: &[(String, &Report)]) -> String {
    let mut series = Vec::new();
    for (k, (name, r)) in runs.iter().enumerate() {
        for (p, mark) in [(50.0, Mark::Dashed), (99.0, Mark::Line)] {
            let mut pts: Vec<(f64, f64)> = r
                .stages
                .iter()
                .filter_map(|s| Some((s.request_throughput, s.metrics.ttft.pct(p)?)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(Series {
                name: format!("{name} p{p}"),
                color: PALETTE[k % PALETTE.len()],
                mark,
                pts,
            });
        }
    }
    Chart {
        title: "Throughput vs TTFT per stage".into(),
        x_label: "request throughput (req/s)".into(),
        y_label: "TTFT (ms)".into(),
        series,
    }
    .svg()
}

fn server_chart(runs: &[(String, &RunData)]) -> String {
    let series = runs
        .iter()
        .enumerate()
        .map(|(k, (name, r))| Series {
            name: format!("{name} waiting"),
            color: PALETTE[k % PALETTE.len()],
            mark: Mark::Line,
            pts: r
                .server
                .iter()
                .filter_map(|p| Some((p.t_ns as f64 / 1e9, p.waiting?)))
                .collect(),
        })
        .collect();
    Chart {
        title: "Server waiting queue".into(),
        x_label: "time (s since run start)".into(),
        y_label: "requests waiting".into(),
        series,
    }
    .svg()
}

/// The `trace diff --html` page: A/B overlays per common stage. `runs[0]` is the baseline;
/// `reports` are the reports of the same runs.
pub fn diff_html(diff: &Diff, runs: &[RunData], reports: &[Report]) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<h1>trace diff against {}</h1>", esc(&diff.baseline));
    for c in &diff.comparisons {
        let _ = writeln!(
            b,
            "<p><b>{}</b></p><p>pairing: {} ({})</p>",
            esc(&c.headline),
            c.pairing.mode,
            esc(&c.pairing.reason)
        );
        for n in &c.notes {
            let _ = writeln!(b, "<p class=\"warn\">note: {}</p>", esc(n));
        }
    }
    let Some(a) = runs.first() else {
        return page("trace diff", &b);
    };
    for s in &diff
        .comparisons
        .first()
        .map(|c| c.stages.clone())
        .unwrap_or_default()
    {
        let _ = writeln!(b, "<h2>stage {}</h2><div class=\"grid\">", esc(&s.stage));
        for (metric, title) in [("ttft", "TTFT"), ("itl", "ITL"), ("e2e", "E2E")] {
            let mut series = Vec::new();
            for (k, r) in runs.iter().enumerate() {
                let label = if k == 0 { &s.stage } else { &s.stage_b };
                let Some(st) = r
                    .stage(label)
                    .or_else(|| if k == 0 { a.stage(&s.stage) } else { None })
                else {
                    continue;
                };
                series.push(Series {
                    name: format!("{}: {}", char::from(b'A' + (k % 26) as u8), r.name()),
                    color: PALETTE[k % PALETTE.len()],
                    mark: if k == 0 { Mark::Dashed } else { Mark::Line },
                    pts: cdf(metric_values(st, metric)),
                });
            }
            b.push_str(&cdf_chart(
                &format!("{title} CDF, A/B"),
                &format!("{title} (ms)"),
                series,
            ));
        }
        b.push_str("</div>");
    }
    b.push_str("<h2>Across stages</h2><div class=\"grid\">");
    let named: Vec<(String, &Report)> = runs
        .iter()
        .zip(reports)
        .map(|(r, rep)| (r.name(), rep))
        .collect();
    b.push_str(&throughput_chart(&named));
    if runs.iter().any(|r| !r.server.is_empty()) {
        let named: Vec<(String, &RunData)> = runs.iter().map(|r| (r.name(), r)).collect();
        b.push_str(&server_chart(&named));
    }
    b.push_str("</div>");
    page("trace diff", &b)
}
