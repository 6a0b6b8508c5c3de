//! Peers' benchmark results: vLLM `--save-result` JSON (old and new key names, JSONL with
//! `--append-result`) and SGLang `bench_serving` JSONL. Each JSON object becomes one stage.
//!
//! Decisions (also in the crate README):
//! - With per-request arrays (`ttfts`, `itls`, ...) each request is a row: `sent_ns` from
//!   `start_times` (relative to the earliest; all 0 when the file has none, as SGLang's and
//!   older vLLM's), `chunk_ns` rebuilt as `sent + ttft`, then `+ cumsum(itls)`, one token per
//!   chunk (the source does not say more), `end_ns` from `latencies` when present.
//! - Without them (no `--save-detailed`) the file is summary-only: the trace has no rows and
//!   the aggregates go into the `trace.source` metadata under `summaries`.
//! - Objects in one file follow each other in time: stage k starts after stage k-1's last end
//!   (or its `duration`).
//!
//! Results files are small (one run's arrays) and are read whole.

use serde_json::{Map, Value};
use trace_format::{ErrorKind, TraceRecord};

use crate::config::Format;
use crate::error::{Error, Result};
use crate::jsonl::json_problem;
use crate::sink::{Flow, Row, Sink};

/// Keys holding per-request arrays; everything else is the run's summary.
const ARRAY_KEYS: [&str; 10] = [
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "latencies",
    "start_times",
    "queue_times",
    "generated_texts",
    "errors",
    "output_ids",
];

fn secs_to_ns(s: f64) -> i64 {
    if s.is_finite() {
        (s * 1e9).round() as i64
    } else {
        0
    }
}

fn f64s(obj: &Map<String, Value>, key: &str) -> Option<Vec<f64>> {
    obj.get(key)?
        .as_array()
        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
}

/// The stage label and target rate for a `request_rate` value (number, "inf", "trace").
fn stage_of(obj: &Map<String, Value>) -> (String, Option<f64>) {
    match obj.get("request_rate") {
        Some(Value::Number(n)) => {
            let r = n.as_f64().unwrap_or(0.0);
            (format!("rate={r}"), Some(r))
        }
        Some(Value::String(s)) => (
            format!("rate={s}"),
            s.parse::<f64>().ok().filter(|r| r.is_finite()),
        ),
        _ => ("run".to_string(), None),
    }
}

/// Results files are read whole (one JSON document, or a few lines of them); bounded so that
/// a wrong file fails with a message instead of filling memory. Per-request arrays of a
/// million-request vLLM run take about 100 MB.
const MAX_RESULTS_BYTES: u64 = 1 << 30;

fn read_results(path: &std::path::Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_RESULTS_BYTES {
        return Err(Error::BadInput {
            path: path.to_path_buf(),
            problem: format!(
                "{} MiB is larger than any results file (at most {} MiB): is this the right format?",
                len >> 20,
                MAX_RESULTS_BYTES >> 20
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    // Editors on Windows start a UTF-8 file with a byte-order mark; JSON does not allow it.
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Imports a vLLM or SGLang results file. Returns the per-stage summaries for the metadata.
pub(crate) fn import_results(sink: &mut Sink, format: Format) -> Result<Vec<Value>> {
    let path = sink.path().to_path_buf();
    let text = read_results(&path)?;
    let mut summaries = Vec::new();
    let mut stage_start_ns: i64 = 0;
    sink.set_origin(0);
    let mut labels: Vec<String> = Vec::new();
    let stream = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    for (k, item) in stream.enumerate() {
        let obj = match item {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                return Err(Error::BadInput {
                    path,
                    problem: format!("object {}: expected a JSON object of results", k + 1),
                });
            }
            Err(e) => {
                let (problem, col) = json_problem(&e);
                return Err(Error::BadRow {
                    at: sink.at(e.line() as u64, Some(col), None),
                    problem,
                });
            }
        };
        let (mut label, target_rate) = stage_of(&obj);
        if labels.contains(&label) {
            label = format!("{label}#{}", k + 1);
        }
        labels.push(label.clone());
        let mut summary: Map<String, Value> = obj
            .iter()
            .filter(|(key, _)| !ARRAY_KEYS.contains(&key.as_str()))
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect();
        summary.insert("stage".into(), Value::String(label.clone()));
        // The old benchmark_serving.py wrote this key with a trailing colon.
        if let Some(v) = summary.remove("request_goodput:") {
            summary.entry("request_goodput").or_insert(v);
        }
        summaries.push(Value::Object(summary));
        let model = ["model_id", "model", "tokenizer_id"]
            .iter()
            .find_map(|key| obj.get(*key).and_then(Value::as_str))
            .map(str::to_string);
        let Some(ttfts) = f64s(&obj, "ttfts") else {
            // Summary only: advance the clock by the run's duration so later stages follow it.
            stage_start_ns +=
                secs_to_ns(obj.get("duration").and_then(Value::as_f64).unwrap_or(0.0));
            continue;
        };
        let n = ttfts.len();
        // Per-request arrays describe the same requests, in the same order: one of another
        // length (a truncated or hand-merged file) would pair each time with another request's.
        for key in [
            "input_lens",
            "output_lens",
            "latencies",
            "start_times",
            "itls",
            "errors",
        ] {
            if let Some(len) = obj.get(key).and_then(Value::as_array).map(Vec::len)
                && len != n
            {
                return Err(Error::BadInput {
                    path,
                    problem: format!(
                        "object {}: '{key}' has {len} entries for {n} 'ttfts'; the per-request arrays must describe the same requests",
                        k + 1
                    ),
                });
            }
        }
        let input = f64s(&obj, "input_lens");
        let output = f64s(&obj, "output_lens");
        let latencies = f64s(&obj, "latencies");
        let starts = f64s(&obj, "start_times");
        let negative = [("ttfts", Some(&ttfts)), ("latencies", latencies.as_ref())]
            .into_iter()
            .find_map(|(key, v)| Some((key, v?.iter().position(|x| *x < 0.0)?)));
        if let Some((key, i)) = negative {
            return Err(Error::BadInput {
                path,
                problem: format!("object {}: '{key}' entry {i} is negative", k + 1),
            });
        }
        let itls: Vec<Vec<f64>> = obj
            .get("itls")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| {
                        v.as_array()
                            .map(|x| x.iter().filter_map(Value::as_f64).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let errors: Vec<String> = obj
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let min_start = starts
            .as_ref()
            .map_or(0.0, |s| s.iter().copied().fold(f64::INFINITY, f64::min));
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(s) = &starts {
            order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
        }
        let mut stage_end = stage_start_ns;
        for i in order {
            let sent = stage_start_ns + starts.as_ref().map_or(0, |s| secs_to_ns(s[i] - min_start));
            let err = errors.get(i).filter(|e| !e.is_empty());
            let mut rec = TraceRecord {
                request_id: format!("{}-{}-{i}", format.name(), k + 1),
                stage: label.clone(),
                target_rate,
                sent_ns: Some(sent),
                prompt_tokens: input.as_ref().and_then(|v| v.get(i)).map(|&x| x as i32),
                output_tokens: output.as_ref().and_then(|v| v.get(i)).map(|&x| x as i32),
                model: model.clone(),
                ..TraceRecord::default()
            };
            rec.max_tokens = rec.output_tokens;
            rec.token_source = rec.output_tokens.map(|_| "usage".to_string());
            if let Some(e) = err {
                rec.error_kind = Some(ErrorKind::SourceFailed);
                rec.error_msg = Some(e.clone());
            } else {
                let mut t = sent + secs_to_ns(ttfts[i]);
                rec.first_byte_ns = Some(t);
                rec.chunk_ns.push(t);
                for g in itls.get(i).map(Vec::as_slice).unwrap_or_default() {
                    t += secs_to_ns(*g);
                    rec.chunk_ns.push(t);
                }
                rec.chunk_tokens = vec![1; rec.chunk_ns.len()];
            }
            rec.end_ns = match &latencies {
                Some(l) => Some(sent + secs_to_ns(l[i])),
                None => rec.chunk_ns.last().copied(),
            };
            stage_end = stage_end.max(rec.end_ns.unwrap_or(sent));
            if sink.push(
                0,
                Row {
                    time_ns: Some(sent),
                    rec,
                    log_type: None,
                },
            )? == Flow::Stop
            {
                return Ok(summaries);
            }
        }
        let duration = secs_to_ns(obj.get("duration").and_then(Value::as_f64).unwrap_or(0.0));
        stage_start_ns = stage_end.max(stage_start_ns + duration);
    }
    Ok(summaries)
}
