//! `trace recover`: turns an interrupted run's `.partial` directory into a normal trace file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

/// Arguments of `trace recover`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  trace recover run.parquet.partial          # writes run.parquet\n  \
trace recover run.parquet.partial -o saved.parquet"
)]
pub struct RecoverArgs {
    /// The interrupted run's `.partial` directory (or its prefix on object storage,
    /// `s3://bucket/run.parquet.partial/`: the recovered file is uploaded beside it).
    pub dir: PathBuf,
    /// Output file (default: the directory name without `.partial`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// The output beside a `.partial` directory: its name without `.partial`.
pub(crate) fn default_output(dir: &Path) -> anyhow::Result<PathBuf> {
    let s = dir.to_string_lossy();
    let Some(stem) = s.trim_end_matches('/').strip_suffix(".partial") else {
        anyhow::bail!(
            "{} does not end in .partial; pass -o OUT.parquet",
            dir.display()
        );
    };
    Ok(PathBuf::from(stem))
}

/// Runs `trace recover`.
pub fn run(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let out = match args.output {
        Some(o) => o,
        None => default_output(&args.dir)?,
    };
    let done = trace_format::recover(&args.dir, &out)
        .with_context(|| format!("recovering {} into {}", args.dir.display(), out.display()))?;
    eprintln!(
        "recovered {} rows from {} part files into {}",
        done.rows,
        done.parts,
        out.display()
    );
    if let Some(dir) = done.kept_dir {
        eprintln!("kept {}: it holds files trace did not write", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
