//! Throughput check of the simulator: N concurrent streams against an in-process simulator (its
//! own thread and current-thread runtime, i.e. one core), the client on a second runtime.
//! `cargo run --release -p trace-sim --example loadgen -- [fixed|engine] STREAMS TOKENS`

use std::time::{Duration, Instant};

use trace_sim::engine::{EngineParams, SchedulePolicy, StepCoeffs};
use trace_sim::{SimConfig, TimeModel, spawn};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("fixed", String::as_str);
    let streams: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let tokens: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut cfg = SimConfig::fixed(Duration::from_millis(10), Duration::from_millis(10));
    if mode == "engine" {
        cfg.time = TimeModel::Engine(EngineParams {
            max_num_seqs: streams,
            kv_blocks: 1 << 30,
            block_size: 16,
            max_batched_tokens: 1 << 30,
            watermark_blocks: 0,
            policy: SchedulePolicy::Chunked,
            coeffs: StepCoeffs {
                a_ns: 10e6,
                b_ns_per_prefill_token: 0.0,
                c_ns_per_decode_seq: 0.0,
                d_ns_per_kv_token: 0.0,
            },
        });
    }
    let sim = spawn(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("{}/v1/completions", sim.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (events, gaps, wall) = rt.block_on(async move {
        trace_sys::tls::install_provider();
        let client = reqwest::Client::builder().pool_max_idle_per_host(streams).build().unwrap();
        let start = Instant::now();
        let tasks: Vec<_> = (0..streams)
            .map(|_| {
                let (c, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let body = serde_json::json!({"prompt": "hello world", "max_tokens": tokens, "stream": true, "ignore_eos": true});
                    let mut r = c.post(&url).json(&body).send().await.unwrap();
                    let (mut n, mut gaps, mut last) = (0u64, Vec::new(), None::<Instant>);
                    while let Some(chunk) = r.chunk().await.unwrap() {
                        let now = Instant::now();
                        let k = chunk.windows(8).filter(|w| w == b"\"text\":\"").count() as u64;
                        if k > 0 {
                            if let Some(l) = last {
                                gaps.push(now.duration_since(l).as_secs_f64() * 1e3);
                            }
                            last = Some(now);
                            n += k;
                        }
                    }
                    (n, gaps)
                })
            })
            .collect();
        let (mut events, mut gaps) = (0u64, Vec::new());
        for t in tasks {
            let (n, g) = t.await.unwrap();
            events += n;
            gaps.extend(g);
        }
        (events, gaps, start.elapsed())
    });
    let mut gaps = gaps;
    gaps.sort_by(f64::total_cmp);
    let q = |p: f64| {
        gaps.get(((gaps.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let ideal = Duration::from_millis(10) * (tokens + 1);
    println!(
        "mode={mode} streams={streams} tokens={tokens}: {events} events in {:.2}s (ideal {:.2}s) = {:.0} events/s; client-seen ITL ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        wall.as_secs_f64(),
        ideal.as_secs_f64(),
        events as f64 / wall.as_secs_f64(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    sim.shutdown().unwrap();
}
