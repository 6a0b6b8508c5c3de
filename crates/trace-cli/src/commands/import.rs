//! `trace import`: public traces and peers' result files into the trace format (and, with
//! `--export`, a trace back out as Mooncake JSONL). Calls `trace_import::import`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use trace_import::{Filter, Format, ImportConfig, Window};

/// An input format of `trace import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Azure LLM inference trace 2023/2024 CSV (TIMESTAMP, ContextTokens, GeneratedTokens).
    Azure,
    /// BurstGPT CSV (Timestamp s, Model, Request/Response tokens, Log Type).
    Burstgpt,
    /// Mooncake JSONL (timestamp ms, input_length, output_length, hash_ids of 512 tokens).
    Mooncake,
    /// Alibaba Bailian/Qwen JSONL (timestamp s, chat_id/parent_chat_id, hash_ids of 16 tokens).
    Bailian,
    /// ShareGPT conversation JSON (first human turn as prompt; lengths in words).
    Sharegpt,
    /// vLLM `--save-result` JSON (old and new keys; per-request arrays when saved).
    VllmJson,
    /// SGLang bench_serving JSONL results.
    SglangJsonl,
    /// AIPerf profile_export.jsonl per-request records: scheduled at `credit_issued_ns`, E2E from
    /// its `request_latency`, the server's usage counts when kept (else AIPerf's tokenizer's,
    /// `token_source = tokenizer`), every time metric by its unit.
    Aiperf,
    /// GitHub Copilot coding-agent sessions (AzurePublicDataset 2026, gunzipped shards): every
    /// LLM call a turn of its session, think time the gap after the previous call ended.
    CopilotAgent,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Azure => Format::Azure,
            FormatArg::Burstgpt => Format::BurstGpt,
            FormatArg::Mooncake => Format::Mooncake,
            FormatArg::Bailian => Format::Bailian,
            FormatArg::Sharegpt => Format::ShareGpt,
            FormatArg::VllmJson => Format::VllmJson,
            FormatArg::SglangJsonl => Format::SglangJsonl,
            FormatArg::Aiperf => Format::Aiperf,
            FormatArg::CopilotAgent => Format::CopilotAgent,
        }
    }
}

/// Arguments of `trace import`.
#[derive(Debug, Args)]
#[command(after_help = "\
Arrival traces become workloads: scheduled_ns is the offset from the trace's first row (from \
the window start with --window), max_tokens the output length. Results files with per-request \
arrays become runs with chunk times rebuilt; without them, the summary goes into metadata.

Examples:
  trace import azure AzureLLMInferenceTrace_conv.csv -o azure.parquet
  trace import azure AzureLLMInferenceTrace_code_1week.csv --window 10m..20m -o azure-10m.parquet
  trace import burstgpt BurstGPT_1.csv --filter model=GPT-4 --filter log_type=api -o gpt4.parquet
  trace import mooncake conversation_trace.jsonl --limit 1000 -o mooncake.parquet
  trace import bailian qwen_traceA_blksz_16.jsonl -o qwen.parquet
  trace import vllm-json vllm-5.0qps-Llama-3.1-8B.json -o vllm.parquet
  trace import mooncake run.parquet --export -o run.jsonl   # a trace out as Mooncake JSONL")]
pub struct ImportArgs {
    /// Input format.
    #[arg(value_enum)]
    pub format: FormatArg,
    /// Input file (with --export: the trace to write out).
    pub input: PathBuf,
    /// Output trace (with --export: the JSONL file).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace an existing trace at the output path (without it, an existing file is refused).
    #[arg(long)]
    pub force: bool,
    /// Keep rows with START <= t < END: offsets from the first row (10m..20m, 90s.., ..1h) or,
    /// for azure and aiperf, datetimes ('2024-05-10 09:00:00..2024-05-10 10:00:00').
    #[arg(long, value_name = "START..END")]
    pub window: Option<Window>,
    /// Stop after writing N rows.
    #[arg(long, value_name = "N", value_parser = crate::parse::positive_u64)]
    pub limit: Option<u64>,
    /// Keep rows where KEY equals VALUE (case-insensitive): model=..., log_type=api|conversation
    /// (burstgpt). Repeat for alternatives of one key; different keys must all match.
    #[arg(long, value_name = "KEY=VALUE")]
    pub filter: Vec<Filter>,
    /// Skip malformed lines and report how many, instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Tokens per hash_ids block (mooncake: 512, bailian: 16).
    #[arg(long, value_name = "TOKENS")]
    pub block_size: Option<u32>,
    /// Write the other way: read the trace INPUT and write FORMAT (mooncake only) to OUTPUT.
    #[arg(long)]
    pub export: bool,
    /// sharegpt: every turn of each conversation (a session per conversation), or the first
    /// alone (vLLM's reading).
    #[arg(long, value_enum, default_value_t = super::replay::SharegptTurnsArg::All)]
    pub sharegpt_turns: super::replay::SharegptTurnsArg,
}

/// Runs `trace import`.
pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let format = Format::from(args.format);
    super::not_an_input(&args.output, &[&args.input])?;
    if args.export {
        anyhow::ensure!(
            format == Format::Mooncake,
            "--export writes mooncake only, not {format}"
        );
        let s = trace_import::export_mooncake(&args.input, &args.output)
            .with_context(|| format!("exporting {} as Mooncake JSONL", args.input.display()))?;
        println!(
            "exported {} rows from {} to {} (mooncake JSONL, timestamp in ms){}",
            s.rows,
            args.input.display(),
            args.output.display(),
            if s.skipped > 0 {
                format!("; {} rows without prompt_tokens left out", s.skipped)
            } else {
                String::new()
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = ImportConfig {
        format,
        input: args.input,
        output: args.output,
        force: args.force,
        window: args.window,
        limit: args.limit,
        filters: args.filter,
        skip_bad: args.skip_bad,
        block_size: args.block_size,
        sharegpt_first_turn: args.sharegpt_turns == super::replay::SharegptTurnsArg::First,
    };
    let s = trace_import::import(&cfg)
        .with_context(|| format!("importing {} as {format}", cfg.input.display()))?;
    println!(
        "imported {} of {} rows from {} ({format}) into {} as a {}",
        s.rows_written,
        s.rows_read,
        cfg.input.display(),
        cfg.output.display(),
        s.kind
    );
    if s.kind == "run" && s.rows_written == 0 && s.rows_read == 0 {
        println!(
            "  summary only (no per-request arrays): the aggregates are in the trace.source metadata"
        );
    }
    if s.rows_excluded > 0 {
        println!(
            "  {} rows left out by the window, filters or limit rules",
            s.rows_excluded
        );
    }
    if s.source_failures > 0 {
        println!(
            "  {} rows failed in the source (kept, error_kind set)",
            s.source_failures
        );
    }
    if s.rows_bad > 0 {
        println!("  {} bad lines skipped (--skip-bad)", s.rows_bad);
        for e in &s.bad_examples {
            eprintln!("trace: skipped: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
