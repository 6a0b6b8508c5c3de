//! Calibration in virtual time against the seed benchmark (issue 3): P50 TTFT and P50 TPOT within
//! a factor of 2 at rates 1, 2, 5, 8; vLLM saturated at rate 8, LMDeploy not (and neither below).

use trace_sim::calibrate::{CALIBRATION_REQUESTS, PUBLISHED, run_stage};
use trace_sim::profile::{LMDEPLOY_3090, VLLM_3090, profile};

#[test]
fn profiles_match_published_table_within_2x() {
    for &(name, rate, ttft, tpot) in PUBLISHED {
        let p = profile(name).unwrap();
        let r = run_stage(&p.params, rate, CALIBRATION_REQUESTS, 42);
        let within = |sim: f64, publ: f64| sim >= publ / 2.0 && sim <= publ * 2.0;
        assert!(
            within(r.p50_ttft_ms, ttft),
            "{name} rate {rate}: P50 TTFT {} vs {ttft}",
            r.p50_ttft_ms
        );
        assert!(
            within(r.p50_tpot_ms, tpot),
            "{name} rate {rate}: P50 TPOT {} vs {tpot}",
            r.p50_tpot_ms
        );
        let expect_saturated = name == VLLM_3090 && rate == 8.0;
        assert_eq!(r.saturated, expect_saturated, "{name} rate {rate}: {r:?}");
        if expect_saturated {
            // The waiting queue grows through the stage (the published run had 323 pending).
            assert!(r.max_waiting > 100, "{r:?}");
        }
    }
}

#[test]
fn short_scaled_runs_flag_saturation() {
    // A short stage (300 requests) is enough for the slope test to separate the two engines.
    let v = run_stage(&profile(VLLM_3090).unwrap().params, 8.0, 300, 7);
    let l = run_stage(&profile(LMDEPLOY_3090).unwrap().params, 8.0, 300, 7);
    assert!(v.saturated, "{v:?}");
    assert!(!l.saturated, "{l:?}");
    assert!(v.ttft_slope.unwrap().significant_up());
}
