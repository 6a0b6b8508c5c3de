//! What a RUN argument of the reading verbs (`report`, `diff`) may be, resolved to one local
//! trace: a trace file or an interrupted run's `.partial` directory as it is; several shard
//! files of one sharded run, or a directory holding them, merged into a temporary trace first
//! (the same streamed merge as `trace merge`, so memory stays bounded).

use std::path::{Path, PathBuf};

use super::merge;

/// One run, ready to read. Holds the temporary directory of a merge until dropped.
pub(crate) struct LocalRun {
    /// The trace to open.
    pub(crate) path: PathBuf,
    /// The run's name where the file's own would mislead (a merge's temporary file).
    pub(crate) alias: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// Resolves the paths naming one run.
pub(crate) fn resolve(paths: &[PathBuf]) -> anyhow::Result<LocalRun> {
    match paths {
        [] => anyhow::bail!("no run given"),
        [one] if !is_shard_dir_candidate(one) => Ok(LocalRun {
            path: one.clone(),
            alias: None,
            _tmp: None,
        }),
        [dir] => merged(&merge::shards_in(dir)?, &dir.display().to_string()),
        many => {
            for p in many {
                anyhow::ensure!(
                    merge::is_shard(p),
                    "{}: several files make one run only as the shards of a sharded run \
                     (trace replay --shard k/n), and this is not one",
                    p.display()
                );
            }
            merged(many, &format!("{} shard files", many.len()))
        }
    }
}

/// A directory that is neither an interrupted run (`.partial`) nor a campaign, and holds
/// traces (else the reader says what it is not).
fn is_shard_dir_candidate(p: &Path) -> bool {
    p.is_dir()
        && p.extension().is_none_or(|e| e != "partial")
        && !p.join("suite.json").is_file()
        && merge::traces_in(p).is_ok_and(|t| !t.is_empty())
}

fn merged(shards: &[PathBuf], what: &str) -> anyhow::Result<LocalRun> {
    let tmp = tempfile::Builder::new().prefix("trace-merge-").tempdir()?;
    let path = tmp.path().join("merged.parquet");
    let m = merge::merge(shards, &path, false)?;
    eprintln!(
        "trace: {what}: {} shards ({} rows) read as one run (`trace merge` keeps the merge)",
        m.shards, m.rows
    );
    let alias = match shards {
        [one] => one.parent(),
        many => many[0].parent(),
    }
    .and_then(|d| d.file_name())
    .map(|n| n.to_string_lossy().into_owned())
    .filter(|n| !n.is_empty());
    Ok(LocalRun {
        path,
        alias,
        _tmp: Some(tmp),
    })
}
