//! `trace merge`: the shard files of one run sent from several hosts (`trace replay --shard
//! k/n`) joined into one trace. Rows are streamed file by file through the writer (bounded
//! memory), each shard's times rebased onto the earliest shard's start by the difference of
//! their wall-clock anchors; stages are joined by label (earliest start, latest end, requests
//! summed), server and GPU samples rebased and interleaved, and `trace.shards` lists every shard
//! (file, host, target URL, start, offset applied, its requests, failures and send lag, from the
//! rows as they stream past). Shards of different schedules, a shard given twice or a missing
//! one are refused, naming the files.
//!
//! With a start barrier (`--coordinator`) every shard's start is on the coordinator's clock,
//! with the bound of its offset; without one the offsets rest on the hosts' wall clocks (NTP),
//! their error bound unknown (null in the metadata).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use trace_format::{
    GpuSample, ServerSample, StageInfo, TraceMeta, TraceReader, TraceWriter, WriterOptions, meta,
};

/// Arguments of `trace merge`.
#[derive(Debug, Args)]
#[command(after_help = "\
Example (three hosts, then one file):
  host0$ trace replay w.parquet --url http://gw:8000 --shard 0/3 -o shard-0.parquet
  host1$ trace replay w.parquet --url http://gw:8000 --shard 1/3 -o shard-1.parquet
  host2$ trace replay w.parquet --url http://gw:8000 --shard 2/3 -o shard-2.parquet
  trace merge shard-*.parquet -o run.parquet")]
pub struct MergeArgs {
    /// The shard files (every k of one k/n), or one directory (or object-storage prefix,
    /// `s3://bucket/run/`) holding them.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// The merged trace.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace an existing trace at the output path.
    #[arg(long)]
    pub force: bool,
}

#[derive(serde::Deserialize)]
struct ShardMeta {
    index: u32,
    count: u32,
    schedule_id: String,
    #[serde(default)]
    host: Option<String>,
    /// The run's start on the coordinator's clock, when a start barrier was used.
    #[serde(default)]
    run_start_coord_ns: Option<i64>,
    /// Bound of the host's offset to the coordinator.
    #[serde(default)]
    offset_error_ns: Option<i64>,
    /// The host kernel's view of its wall clock (adjtimex), kept as recorded.
    #[serde(default)]
    kernel_clock: Option<serde_json::Value>,
}

struct Shard {
    path: PathBuf,
    meta: TraceMeta,
    info: ShardMeta,
    start_unix_ns: i64,
    /// Read from a killed shard's `.partial` directory: its rows stop where it died.
    interrupted: bool,
}

fn open(path: &Path) -> anyhow::Result<Shard> {
    let r = TraceReader::open(path).with_context(|| format!("reading {}", path.display()))?;
    let meta = r.meta().clone();
    let interrupted = r.is_interrupted();
    let info: ShardMeta = meta.json(meta::SHARD).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: not a shard (no {} metadata: made without --shard k/n)",
            path.display(),
            meta::SHARD
        )
    })?;
    // On the coordinator's clock when the shards met at a start barrier; else the host's own.
    let start_unix_ns = info
        .run_start_coord_ns
        .or(meta.run_start_unix_ns())
        .ok_or_else(|| anyhow::anyhow!("{}: no run start time", path.display()))?;
    Ok(Shard {
        path: path.to_path_buf(),
        meta,
        info,
        start_unix_ns,
        interrupted,
    })
}

/// The traces in `dir`, sorted: its `.parquet` files, and the `.parquet.partial` directories of
/// runs killed before they finished their file.
pub(crate) fn traces_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)? {
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
    Ok(found)
}

/// The shard traces in `dir`: its `.parquet` files, and the `.parquet.partial` directories of
/// killed shards that never finished.
pub(crate) fn shards_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let found = traces_in(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    anyhow::ensure!(
        !found.is_empty(),
        "{}: a directory given as a run must hold the shard traces of one sharded run, and \
         this one holds no .parquet file",
        dir.display()
    );
    let others: Vec<String> = found
        .iter()
        .filter(|p| !is_shard(p))
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

/// Runs `trace merge`.
pub fn run(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let inputs: Vec<&Path> = args.shards.iter().map(PathBuf::as_path).collect();
    super::not_an_input(&args.output, &inputs)?;
    let shards = match &args.shards[..] {
        [dir] if dir.is_dir() && dir.extension().is_none_or(|e| e != "partial") => shards_in(dir)?,
        _ => args.shards.clone(),
    };
    let m = merge(&shards, &args.output, args.force)?;
    println!(
        "merged {} shards ({} rows) into {}; their starts spread over {:.3} s of wall clock",
        m.shards,
        m.rows,
        crate::store::shown(&args.output),
        m.spread_ns as f64 / 1e9
    );
    Ok(ExitCode::SUCCESS)
}

/// What a merge did.
pub(crate) struct Merged {
    pub(crate) shards: usize,
    pub(crate) rows: u64,
    /// How far apart the shards' starts were.
    pub(crate) spread_ns: i64,
}

/// True when `path` is a shard's trace (made with `--shard k/n`): what the reading verbs merge
/// when given several files or a directory of them.
pub(crate) fn is_shard(path: &Path) -> bool {
    TraceReader::open(path).is_ok_and(|r| r.meta().get(meta::SHARD).is_some())
}

/// Merges the shard traces `paths` (finished files or killed runs' `.partial` directories) into
/// `output`.
pub(crate) fn merge(paths: &[PathBuf], output: &Path, force: bool) -> anyhow::Result<Merged> {
    let mut shards = paths
        .iter()
        .map(|p| open(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    shards.sort_by_key(|s| s.info.index);
    let first = &shards[0];
    for s in &shards[1..] {
        anyhow::ensure!(
            s.info.schedule_id == first.info.schedule_id && s.info.count == first.info.count,
            "{} and {} are shards of different schedules (schedule ids {} and {}, {} and {} \
             shards): merge only the shards of one run",
            first.path.display(),
            s.path.display(),
            first.info.schedule_id,
            s.info.schedule_id,
            first.info.count,
            s.info.count
        );
    }
    for w in shards.windows(2) {
        anyhow::ensure!(
            w[0].info.index != w[1].info.index,
            "{} and {} are both shard {}",
            w[0].path.display(),
            w[1].path.display(),
            w[0].info.index
        );
    }
    let n = first.info.count;
    let have: Vec<u32> = shards.iter().map(|s| s.info.index).collect();
    let missing: Vec<String> = (0..n)
        .filter(|k| !have.contains(k))
        .map(|k| format!("{k}/{n}"))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "shard(s) {} missing: a merged run needs all {n}",
        missing.join(", ")
    );
    let origin = shards.iter().map(|s| s.start_unix_ns).min().unwrap_or(0);

    // Metadata: the first shard's, the run start the earliest, and the joined per-run keys.
    let mut map = first.meta.as_map().clone();
    map.remove(meta::SHARD);
    let mut m = TraceMeta::from_map(map);
    m.set(meta::RUN_START_UNIX_NS, origin.to_string());
    // Shards may each have had a target of their own (one replica each): name them all.
    let urls: std::collections::BTreeSet<&str> = shards
        .iter()
        .filter_map(|s| s.meta.get(meta::URL))
        .collect();
    if urls.len() > 1 {
        m.set(meta::URL, urls.into_iter().collect::<Vec<_>>().join(", "));
    }
    let mut stages: BTreeMap<String, (usize, StageInfo)> = BTreeMap::new();
    let mut server: Vec<ServerSample> = Vec::new();
    let mut gpu: Vec<GpuSample> = Vec::new();
    let mut listed = Vec::new();
    for (k, s) in shards.iter().enumerate() {
        let off = s.start_unix_ns - origin;
        for (i, st) in s.meta.stages().into_iter().enumerate() {
            let shifted = StageInfo {
                start_ns: st.start_ns + off,
                end_ns: st.end_ns.map(|e| e + off),
                ..st
            };
            stages
                .entry(shifted.stage.clone())
                .and_modify(|(_, acc)| {
                    acc.start_ns = acc.start_ns.min(shifted.start_ns);
                    acc.end_ns = acc.end_ns.max(shifted.end_ns);
                    acc.requests += shifted.requests;
                })
                .or_insert((k * 10_000 + i, shifted));
        }
        server.extend(s.meta.server_samples().into_iter().map(|x| ServerSample {
            t_ns: x.t_ns + off,
            ..x
        }));
        gpu.extend(s.meta.gpu_samples().into_iter().map(|x| GpuSample {
            t_ns: x.t_ns + off,
            ..x
        }));
        listed.push(serde_json::json!({
            "file": s.path.display().to_string(), "index": s.info.index, "host": s.info.host,
            "url": s.meta.get(meta::URL),
            "run_start_unix_ns": s.start_unix_ns, "offset_ns": off,
            "offset_error_ns": s.info.offset_error_ns,
            "kernel_clock": s.info.kernel_clock,
            "interrupted": s.interrupted,
            "clock": if s.info.run_start_coord_ns.is_some() {
                "coordinator (start barrier)"
            } else {
                "host wall clock (no start barrier)"
            },
        }));
    }
    let mut stage_list: Vec<(usize, StageInfo)> = stages.into_values().collect();
    stage_list.sort_by_key(|(order, st)| (st.start_ns, *order));
    let stage_list: Vec<StageInfo> = stage_list.into_iter().map(|(_, s)| s).collect();
    m.set_stages(&stage_list);
    server.sort_by_key(|x| x.t_ns);
    m.set_server_samples(&server);
    gpu.sort_by_key(|x| x.t_ns);
    if !gpu.is_empty() {
        m.set(meta::GPU_SAMPLES, trace_format::to_json(&gpu));
    }
    // Set now as well as at the end: the parts of a merge killed midway still say what they are
    // (the counts and send lags are added once every row has streamed past).
    m.set(
        meta::SHARDS,
        serde_json::Value::Array(listed.clone()).to_string(),
    );

    let mut w = TraceWriter::create(
        output,
        m,
        WriterOptions {
            overwrite: force,
            ..WriterOptions::default()
        },
    )
    .with_context(|| format!("writing {}", output.display()))?;
    let mut rows = 0u64;
    let copied: anyhow::Result<()> = (|| {
        for (s, entry) in shards.iter().zip(listed.iter_mut()) {
            let off = s.start_unix_ns - origin;
            let r = TraceReader::open(&s.path)?;
            // Fixed-size histograms: a shard of millions of rows adds nothing per row.
            let mut stats = trace_replay::summary::StageStats::default();
            for rec in r.records() {
                let mut rec = rec.with_context(|| format!("reading {}", s.path.display()))?;
                stats.add(&trace_replay::summary::ReqStat::from_record(&rec));
                rec.shift_times(off);
                w.write_owned(rec)?;
                rows += 1;
            }
            // A host that could not keep its schedule shows here, shard by shard.
            let sum = stats.summary("", None);
            entry["requests"] = stats.requests().into();
            entry["failed"] = sum.failed.into();
            entry["send_lag_p50_us"] = sum.lag_p50_us.into();
            entry["send_lag_p99_us"] = sum.lag_p99_us.into();
        }
        Ok(())
    })();
    if let Err(e) = copied {
        let _ = w.discard();
        return Err(e);
    }
    w.set_meta(meta::SHARDS, serde_json::Value::Array(listed).to_string());
    w.close()?;
    let spread_ns = shards
        .iter()
        .map(|s| s.start_unix_ns - origin)
        .max()
        .unwrap_or(0);
    Ok(Merged {
        shards: shards.len(),
        rows,
        spread_ns,
    })
}
