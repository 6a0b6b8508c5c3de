//! Prints the calibration table (published vs simulated) for every profile, in virtual time.
//! `cargo run --release -p trace-sim --example calibrate`

use trace_sim::calibrate::{CALIBRATION_REQUESTS, PUBLISHED, run_stage};
use trace_sim::profile::profile;

fn main() {
    println!(
        "| profile | rate | P50 TTFT ms published | simulated | P50 TPOT ms published | simulated | TTFT slope (95% CI) | max waiting | preemptions | saturated |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &(name, rate, ttft, tpot) in PUBLISHED {
        let Some(p) = profile(name) else { continue };
        let r = run_stage(&p.params, rate, CALIBRATION_REQUESTS, 42);
        let slope = r.ttft_slope.map_or("-".to_string(), |s| {
            format!("{:.3} ({:.3}..{:.3})", s.slope, s.ci_low, s.ci_high)
        });
        println!(
            "| {name} | {rate} | {ttft:.2} | {:.2} | {tpot:.2} | {:.2} | {slope} | {} | {} | {} |",
            r.p50_ttft_ms, r.p50_tpot_ms, r.max_waiting, r.preemptions, r.saturated
        );
    }
}
