//! `--export vllm-json`: vLLM `--save-result` JSON objects (reference/peers.md section 4), one
//! per stage, one per line (the `--append-result` JSONL form), so dashboards that read vLLM
//! benchmark results keep working. Detail arrays (`ttfts`, `itls`, ...) are not written.

use serde_json::{Map, Value, json};
use trace_format::meta;

use crate::load::RunData;
use crate::report::Report;
use trace_stats::p_label;

/// One JSON object per stage, in the report's stage order, as JSONL text.
pub fn export(run: &RunData, report: &Report) -> String {
    let mut out = String::new();
    let label = run.meta.get(meta::LABEL).map(str::to_string);
    let date = run
        .meta
        .run_start_unix_ns()
        .map(vllm_date)
        .unwrap_or_default();
    for s in &report.stages {
        let mut m = Map::new();
        m.insert("date".into(), json!(date));
        m.insert("backend".into(), json!("openai-chat"));
        m.insert("endpoint_type".into(), json!("openai-chat"));
        m.insert("label".into(), json!(label));
        m.insert("model_id".into(), json!(""));
        m.insert("tokenizer_id".into(), Value::Null);
        m.insert("num_prompts".into(), json!(s.requests));
        m.insert(
            "request_rate".into(),
            match s.target_rate {
                Some(r) if r.is_finite() => json!(r),
                _ => json!("inf"),
            },
        );
        m.insert("burstiness".into(), json!(1.0));
        m.insert("max_concurrency".into(), Value::Null);
        m.insert("stage".into(), json!(s.stage));
        m.insert("duration".into(), json!(s.duration_s));
        m.insert("completed".into(), json!(s.completed));
        m.insert("failed".into(), json!(s.failed));
        m.insert("total_input_tokens".into(), json!(s.total_input_tokens));
        m.insert("total_output_tokens".into(), json!(s.total_output_tokens));
        m.insert("request_throughput".into(), json!(s.request_throughput));
        m.insert("request_goodput".into(), json!(s.goodput));
        m.insert("output_throughput".into(), json!(s.output_throughput));
        m.insert(
            "total_token_throughput".into(),
            json!(s.total_token_throughput),
        );
        for (ours, theirs) in [
            ("ttft", "ttft"),
            ("tpot", "tpot"),
            ("itl", "itl"),
            ("e2e", "e2el"),
            ("e2e_from_scheduled", "e2el_including_client_queue"),
            ("send_lag", "client_queue_time"),
        ] {
            let Some(d) = s.metrics.get(ours) else {
                continue;
            };
            m.insert(format!("mean_{theirs}_ms"), json!(d.mean.unwrap_or(0.0)));
            m.insert(
                format!("median_{theirs}_ms"),
                json!(d.median().unwrap_or(0.0)),
            );
            m.insert(format!("std_{theirs}_ms"), json!(d.std.unwrap_or(0.0)));
            for (p, v) in &d.percentiles {
                m.insert(
                    format!("{}_{theirs}_ms", p_label(*p)),
                    json!(v.unwrap_or(0.0)),
                );
            }
        }
        out.push_str(&Value::Object(m).to_string());
        out.push('\n');
    }
    out
}

/// `YYYYMMDD-HHMMSS` (UTC) of a UNIX ns timestamp, as vLLM names its result files.
fn vllm_date(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm): no calendar crate needed for one field.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(
            super::vllm_date(1_700_000_000_000_000_000),
            "20231114-221320"
        );
        assert_eq!(super::vllm_date(0), "19700101-000000");
    }
}
