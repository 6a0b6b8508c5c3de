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
        [dir] => merged(&shards_in(dir)?, &dir.display().to_string()),
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

/// A directory that is neither an interrupted run (`.partial`) nor a campaign.
fn is_shard_dir_candidate(p: &Path) -> bool {
    p.is_dir() && p.extension().is_none_or(|e| e != "partial") && !p.join("suite.json").is_file()
}

/// The shard traces in `dir`: its `.parquet` files, and the `.parquet.partial` directories of
/// killed shards that never finished.
fn shards_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    for e in entries {
        let p = e?.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".parquet") && p.is_file() {
            found.push(p);
        } else if let Some(stem) = name.strip_suffix(".partial")
            && stem.ends_with(".parquet")
            && p.is_dir()
            && !dir.join(stem).exists()
        {
            found.push(p);
        }
    }
    found.sort();
    anyhow::ensure!(
        !found.is_empty(),
        "{}: a directory given as a run must hold the shard traces of one sharded run, and \
         this one holds no .parquet file",
        dir.display()
    );
    let others: Vec<String> = found
        .iter()
        .filter(|p| !merge::is_shard(p))
        .map(|p| p.display().to_string())
        .collect();
    anyhow::ensure!(
        others.is_empty(),
        "{}: a directory given as a run must hold only the shards of one sharded run, but {} \
         {} not a shard; give a trace file instead",
        dir.display(),
        others.join(", "),
        if others.len() == 1 { "is" } else { "are" }
    );
    Ok(found)
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
