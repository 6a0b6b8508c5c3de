//! Named engine profiles: scheduler limits and step-time coefficients fitted to published runs.
//!
//! How each was fitted, and the calibration table, is in the crate README.

use crate::engine::{EngineParams, SchedulePolicy, StepCoeffs};

/// vLLM 0.4.1 on an RTX 3090 (24 GB) serving Llama-3-8B-Instruct.
pub const VLLM_3090: &str = "vllm-0.4.1-3090-llama3-8b";
/// LMDeploy 0.4.0 (TurboMind) on an RTX 3090 (24 GB) serving Llama-3-8B-Instruct.
pub const LMDEPLOY_3090: &str = "lmdeploy-0.4.0-3090-llama3-8b";
/// The name under which the fixed TTFT/ITL time model is reported.
pub const FIXED: &str = "fixed";

/// The profile `SimConfig::default()` and an embedded `trace replay` use.
pub const DEFAULT_PROFILE: &str = VLLM_3090;

const NAMES: &[&str] = &[VLLM_3090, LMDEPLOY_3090];

/// The model both seed profiles serve.
pub const LLAMA3_8B: &str = "meta-llama/Meta-Llama-3-8B-Instruct";

/// Names accepted by `SimConfig::from_profile` (besides `fixed`, which needs times).
pub fn profile_names() -> &'static [&'static str] {
    NAMES
}

/// A named engine model.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile name.
    pub name: &'static str,
    /// Served model name.
    pub model: &'static str,
    /// Scheduler and time model.
    pub params: EngineParams,
}

/// The profile called `name`, if any.
pub fn profile(name: &str) -> Option<Profile> {
    match name {
        // Prefill-first steps (vLLM V0 without chunked prefill); the large per-sequence decode
        // cost is vLLM 0.4's Python-side sampling/detokenising overhead, which caps decode
        // throughput near 1/c tokens/s and makes rate 8 (~1700 tok/s offered) unsustainable.
        VLLM_3090 => Some(Profile {
            name: VLLM_3090,
            model: LLAMA3_8B,
            params: EngineParams {
                max_num_seqs: 256,
                // ~45k tokens: ~5.5 GB of KV at 128 KiB/token (32 layers x 8 KV heads x 128 x fp16 x K,V).
                kv_blocks: 2800,
                block_size: 16,
                max_batched_tokens: 8192,
                watermark_blocks: 24,
                policy: SchedulePolicy::PrefillFirst,
                coeffs: StepCoeffs {
                    a_ns: 21.0e6,
                    b_ns_per_prefill_token: 0.15e6,
                    c_ns_per_decode_seq: 0.45e6,
                    d_ns_per_kv_token: 140.0,
                },
            },
        }),
        // TurboMind: mixed prefill+decode steps, a cheaper per-sequence decode path and a larger
        // cache (cache_max_entry_count 0.8; fitted so that rate 8 never preempts).
        LMDEPLOY_3090 => Some(Profile {
            name: LMDEPLOY_3090,
            model: LLAMA3_8B,
            params: EngineParams {
                max_num_seqs: 256,
                kv_blocks: 1500,
                block_size: 64,
                max_batched_tokens: 8192,
                watermark_blocks: 0,
                policy: SchedulePolicy::Chunked,
                coeffs: StepCoeffs {
                    a_ns: 20.0e6,
                    b_ns_per_prefill_token: 0.15e6,
                    c_ns_per_decode_seq: 0.28e6,
                    d_ns_per_kv_token: 140.0,
                },
            },
        }),
        _ => None,
    }
}
