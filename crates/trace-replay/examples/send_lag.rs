//! Measures replay send lag (sent_ns - scheduled_ns) against the simulator with a fixed time
//! model, for docs/benchmarks.md "Replay send lag".
//!
//! `cargo run --release -p trace-replay --example send_lag -- RATE N [OUTPUT_TOKENS] [TIMER]`
//! (TIMER: `thread`, the default, or `tokio`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trace_replay::dispatch::{Counters, Timer};
use trace_replay::workload::{RandomSpec, WorkloadSpec};
use trace_replay::{ReplayConfig, run};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rate: f64 = args.first().map_or(Ok(100.0), |s| s.parse())?;
    let n: u64 = args.get(1).map_or(Ok(1000), |s| s.parse())?;
    let output_tokens: u32 = args.get(2).map_or(Ok(16), |s| s.parse())?;
    let timer = if args.get(3).map(String::as_str) == Some("tokio") {
        Timer::Tokio
    } else {
        Timer::Thread
    };
    let sim = trace_sim::spawn(
        trace_sim::SimConfig::fixed(Duration::from_millis(50), Duration::from_millis(10)),
        ([127, 0, 0, 1], 0).into(),
    )?;
    let dir = std::env::temp_dir().join(format!("send-lag-{}", std::process::id()));
    let mut client =
        trace_client::ClientConfig::new(sim.url(), trace_sim::SimConfig::default().model);
    client.ignore_eos = true;
    let cfg = ReplayConfig {
        client,
        workload: WorkloadSpec::Random(RandomSpec {
            input_len: 64,
            output_len: output_tokens,
            range_ratio: 1.0,
        }),
        rates: vec![rate],
        requests: Some(n),
        timer,
        scrape_metrics: false,
        ..ReplayConfig::new(sim.url(), dir.join("run.parquet"))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let counters = Arc::new(Counters::default());
    let s = rt.block_on(run(cfg, counters, CancellationToken::new()))?;
    let st = &s.stages[0];
    println!(
        "rate {rate} n {n} out {output_tokens} timer {timer:?}: ok {} failed {} lag p50 {:.0} us p99 {:.0} us, max in flight {}, achieved {:.1} req/s",
        st.ok,
        st.failed,
        st.lag_p50_us.unwrap_or(f64::NAN),
        st.lag_p99_us.unwrap_or(f64::NAN),
        s.max_in_flight,
        st.req_per_s,
    );
    let (_, recs) = trace_format::read_all(&s.output)?;
    let mut sent: Vec<i64> = recs.iter().filter_map(|r| r.sent_ns).collect();
    sent.sort_unstable();
    if sent.len() > 1 {
        let span = (sent[sent.len() - 1] - sent[0]) as f64 / 1e9;
        println!(
            "  send rate {:.1} req/s over {span:.2} s",
            (sent.len() - 1) as f64 / span
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = sim.shutdown();
    Ok(())
}
