//! Loading a run: metadata through [`trace_format::TraceReader`] (footers only), rows through a
//! lazy polars scan of the needed columns, reduced in one pass to per-request metrics (by
//! [`trace_format::derive`], the one definition) and pooled inter-token gaps per stage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use trace_format::derive::{self, RowRef};
use trace_format::{TraceMeta, TraceReader, col, meta};

use crate::{Error, Result};

const NS_PER_MS: f64 = 1e6;

/// What to load besides the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Also load `request_id` and `prompt_hash`, to pair requests across runs (diff).
    pub with_ids: bool,
    /// Rows collected per polars slice (default [`SLICE_ROWS`]); bounds peak memory.
    pub slice_rows: Option<usize>,
}

/// One request reduced to its metrics. Latencies are in ms; NaN where undefined (a failed
/// request, no token-bearing event, a single-token output for TPOT).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReqRow {
    /// Intended send time, ns since run start (the arrival time used by saturation tests).
    pub scheduled_ns: i64,
    /// Completed: no `error_kind`, and both `sent_ns` and `end_ns` are present.
    pub ok: bool,
    /// `sent_ns - scheduled_ns`; NaN when never sent. Defined for failed requests too.
    pub send_lag_ms: f64,
    /// First token-bearing event minus `sent_ns`.
    pub ttft_ms: f64,
    /// First token-bearing event minus `scheduled_ns` (includes client queueing).
    pub ttft_sched_ms: f64,
    /// `(e2e - ttft) / (output_tokens - 1)` for more than one output token.
    pub tpot_ms: f64,
    /// `end_ns - sent_ns`.
    pub e2e_ms: f64,
    /// `end_ns - scheduled_ns`.
    pub e2e_sched_ms: f64,
    /// `end_ns`, ns since run start; `i64::MIN` when absent.
    pub end_ns: i64,
    /// Prompt tokens (0 when unknown).
    pub input_tokens: u32,
    /// Output tokens: `output_tokens`, else the sum of `chunk_tokens`.
    pub output_tokens: u32,
    /// `headers_ns - sent_ns`: the engine's queue wait when it sends headers only once a
    /// request gets a slot (llama.cpp), else connection and header latency.
    pub queue_wait_ms: f64,
    /// `(prompt_tokens - expected_prompt_tokens) / expected_prompt_tokens`: how far the
    /// server's prompt count is from the workload's length; NaN when either is unknown.
    pub prompt_error: f32,
    /// `event_tokens_gap`: output tokens the per-event counts could not place (0 when they
    /// agree with the server's total).
    pub token_gap: i32,
    /// First answer token minus `sent_ns` (TTFA; TTFT when there is no reasoning).
    pub ttfa_ms: f64,
    /// Reasoning tokens (`reasoning_tokens`), 0 when none; `reasoning` says whether the row
    /// had a reasoning channel at all.
    pub reasoning_tokens: u32,
    /// The row reports reasoning (`chunk_reasoning` or `reasoning_tokens`).
    pub reasoning: bool,
    /// Prompt tokens served from the server's prefix cache, when it says.
    pub cached_tokens: Option<u32>,
    /// The turn's number in its session (`turn`), when the row is a session turn.
    pub turn: Option<u32>,
    /// The row's session, interned per run (`session_id`).
    pub session: Option<u32>,
}

/// One stage's requests and pooled inter-token gaps.
#[derive(Debug, Clone, Default)]
pub struct StageData {
    /// Stage label (`rate=5`).
    pub label: String,
    /// Requested rate, req/s; None for recorded timing.
    pub target_rate: Option<f64>,
    /// Every request of the stage, in file order.
    pub rows: Vec<ReqRow>,
    /// ITL: gaps between consecutive token-bearing events of completed requests, pooled, in ms.
    pub itl_ms: Vec<f32>,
    /// The `itl_per_token` variant (a k-token event's gap spread over its k tokens); None when
    /// every event carried at most one token, where it equals `itl_ms`.
    pub itl_per_token_ms: Option<Vec<f32>>,
    /// `request_id` per row (only with [`LoadOptions::with_ids`]).
    pub request_ids: Vec<Option<String>>,
    /// `prompt_hash` per row (only with [`LoadOptions::with_ids`]).
    pub prompt_hashes: Vec<Option<u64>>,
}

impl StageData {
    /// Earliest scheduled send, ns.
    pub fn start_ns(&self) -> Option<i64> {
        self.rows.iter().map(|r| r.scheduled_ns).min()
    }

    /// Latest stream end (or scheduled send, for requests that never ended), ns.
    pub fn end_ns(&self) -> Option<i64> {
        self.rows.iter().map(|r| r.end_ns.max(r.scheduled_ns)).max()
    }

    /// The stage span in seconds: first scheduled send to last stream end.
    pub fn duration_s(&self) -> f64 {
        match (self.start_ns(), self.end_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => 0.0,
        }
    }

    /// ITL values of the `itl_per_token` variant.
    pub fn itl_per_token(&self) -> &[f32] {
        self.itl_per_token_ms.as_deref().unwrap_or(&self.itl_ms)
    }
}

/// One scrape of the server's queue gauges (from the `trace.server_samples` metadata).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerPoint {
    /// ns since run start.
    pub t_ns: i64,
    /// Requests waiting in the server queue.
    pub waiting: Option<f64>,
    /// Requests running.
    pub running: Option<f64>,
    /// KV-cache usage, 0 to 1.
    pub kv_usage: Option<f64>,
    /// Prefix-cache lookups so far (a counter), in tokens or blocks as the engine counts.
    pub prefix_queries: Option<f64>,
    /// Prefix-cache hits so far (a counter).
    pub prefix_hits: Option<f64>,
}

/// A loaded run.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The path given.
    pub path: PathBuf,
    /// The file's metadata.
    pub meta: TraceMeta,
    /// True for an interrupted run's `.partial` directory.
    pub interrupted: bool,
    /// Stages in sweep order (metadata order, else by first scheduled send).
    pub stages: Vec<StageData>,
    /// Server queue samples, when scraped.
    pub server: Vec<ServerPoint>,
    /// Impossible rows left out of every figure (see `RowRef::problem`).
    pub bad_rows: u64,
    /// The first of them: `row N (0-based, in file order), column C: problem`.
    pub first_bad: Option<String>,
    /// The name the caller gives the run (a campaign's grid point, a shard directory's name),
    /// before the label and the file stem.
    pub alias: Option<String>,
}

impl RunData {
    /// A short name: the caller's alias, else the `--label` from metadata, else the file stem.
    pub fn name(&self) -> String {
        if let Some(a) = &self.alias {
            return a.clone();
        }
        if let Some(l) = self.meta.get(meta::LABEL).filter(|l| !l.is_empty()) {
            return l.to_string();
        }
        let stem = self
            .path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("run");
        stem.trim_end_matches(".partial")
            .trim_end_matches(".parquet")
            .to_string()
    }

    /// The stage with this label.
    pub fn stage(&self, label: &str) -> Option<&StageData> {
        self.stages.iter().find(|s| s.label == label)
    }
}

fn pe(path: &Path) -> impl FnOnce(PolarsError) -> Error + '_ {
    move |source| Error::Polars {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads a trace file (or an interrupted run's `.partial` directory) and computes every
/// per-request metric.
pub fn load_run(path: &Path, opts: LoadOptions) -> Result<RunData> {
    // Polars reads the footer and decodes the pages itself: a damaged file is an error, not a
    // crash (its metadata parser panicked on a few flipped bytes: tests/fuzz.rs).
    trace_format::guarded(path, || Ok(load_unguarded(path, opts)))?
}

fn load_unguarded(path: &Path, opts: LoadOptions) -> Result<RunData> {
    let reader = TraceReader::open(path)?;
    let meta = reader.meta().clone();
    let server = meta
        .server_samples()
        .iter()
        .map(|s| ServerPoint {
            t_ns: s.t_ns,
            waiting: s.waiting,
            running: s.running,
            kv_usage: s.kv_usage,
            prefix_queries: s.prefix_queries,
            prefix_hits: s.prefix_hits,
        })
        .collect();
    let mut run = RunData {
        path: path.to_path_buf(),
        meta,
        interrupted: reader.is_interrupted(),
        stages: Vec::new(),
        server,
        bad_rows: 0,
        first_bad: None,
        alias: None,
    };
    if reader.files().is_empty() {
        return Ok(run);
    }
    let mut cols = vec![
        col::STAGE,
        col::TARGET_RATE,
        col::SCHEDULED_NS,
        col::SENT_NS,
        col::HEADERS_NS,
        col::END_NS,
        col::CHUNK_NS,
        col::CHUNK_TOKENS,
        col::PROMPT_TOKENS,
        col::OUTPUT_TOKENS,
        col::ERROR_KIND,
        col::EXPECTED_PROMPT_TOKENS,
        col::EVENT_TOKENS_GAP,
        col::CHUNK_REASONING,
        col::REASONING_TOKENS,
        col::CACHED_TOKENS,
        col::TURN,
        col::SESSION_ID,
    ];
    if opts.with_ids {
        cols.extend([col::REQUEST_ID, col::PROMPT_HASH]);
    }
    // Polars aborts the process (an allocation of 2^61 bytes) on some damaged pages, which no
    // guard can catch (tests/fuzz.rs found it): the same columns are decoded first by the
    // checked reader, which fails with an error instead. Its cost: docs/benchmarks.md.
    reader.verify(&cols)?;
    let mut frames = Vec::new();
    for f in reader.files() {
        let p = PlRefPath::try_from_path(f).map_err(pe(path))?;
        // Never Hive partitioning: a campaign keeps runs under `key=value` directories
        // (`ttft=5ms/`), which polars would otherwise parse into a column, and fail on.
        let mut args = ScanArgsParquet::default();
        args.hive_options.enabled = Some(false);
        let mut lf = LazyFrame::scan_parquet(p, args).map_err(pe(path))?;
        // Files written before a column was added lack it: it reads as nulls.
        let present = lf.collect_schema().map_err(pe(path))?;
        frames.push(
            lf.select(
                cols.iter()
                    .map(|c| {
                        if present.contains(c) || !col::ADDED.contains(c) {
                            polars::prelude::col(*c)
                        } else if *c == col::SESSION_ID {
                            lit(NULL).cast(DataType::String).alias(*c)
                        } else if *c == col::CHUNK_REASONING {
                            lit(NULL)
                                .cast(DataType::List(Box::new(DataType::Int32)))
                                .alias(*c)
                        } else {
                            lit(NULL).cast(DataType::Int32).alias(*c)
                        }
                    })
                    .collect::<Vec<_>>(),
            ),
        );
    }
    let lf = if frames.len() == 1 {
        frames.remove(0)
    } else {
        concat(frames, UnionArgs::default()).map_err(pe(path))?
    };
    // Collect in row slices: the list columns of a million-request run are gigabytes, while
    // the reduced metrics are a few floats per request and per token gap.
    let total = reader.num_rows();
    let mut acc = Accumulator::default();
    let mut offset = 0u64;
    let slice = opts.slice_rows.unwrap_or(SLICE_ROWS).max(1);
    loop {
        let df = lf
            .clone()
            .slice(offset as i64, slice as IdxSize)
            .collect()
            .map_err(pe(path))?;
        let n = df.height() as u64;
        reduce(path, &df, opts, offset, &mut acc)?;
        offset += n;
        if n < slice as u64 || offset >= total {
            break;
        }
    }
    run.stages = acc.stages;
    run.bad_rows = acc.bad_rows;
    run.first_bad = acc.first_bad;
    order_stages(&mut run);
    Ok(run)
}

fn order_stages(run: &mut RunData) {
    let declared: Vec<String> = run.meta.stages().into_iter().map(|s| s.stage).collect();
    run.stages.sort_by_key(|s| {
        let pos = declared
            .iter()
            .position(|d| *d == s.label)
            .unwrap_or(usize::MAX);
        (pos, s.start_ns().unwrap_or(i64::MAX))
    });
}

fn bad(path: &Path, column: &str, problem: impl Into<String>) -> Error {
    Error::BadColumn {
        path: path.into(),
        column: column.into(),
        problem: problem.into(),
    }
}

/// Flattened view of a list column: per chunk, its offsets and its values.
struct FlatList<'a, T> {
    parts: Vec<(&'a [i64], &'a [T])>,
}

impl<'a, T> FlatList<'a, T> {
    fn rows(&self) -> impl Iterator<Item = &'a [T]> + '_ {
        self.parts.iter().flat_map(|(offs, vals)| {
            offs.windows(2).map(move |w| {
                let (a, b) = (w[0] as usize, w[1] as usize);
                vals.get(a..b).unwrap_or(&[])
            })
        })
    }
}

fn series<'a>(path: &Path, df: &'a DataFrame, name: &str) -> Result<&'a Series> {
    Ok(df
        .column(name)
        .map_err(|_| bad(path, name, "is missing"))?
        .as_materialized_series())
}

/// Rows collected per polars slice by default.
pub const SLICE_ROWS: usize = 131_072;

/// Stages built up across slices.
#[derive(Default)]
struct Accumulator {
    stages: Vec<StageData>,
    index: HashMap<String, usize>,
    bad_rows: u64,
    first_bad: Option<String>,
    /// Session ids seen, interned.
    sessions: HashMap<String, u32>,
}

fn reduce(
    path: &Path,
    df: &DataFrame,
    opts: LoadOptions,
    offset: u64,
    acc: &mut Accumulator,
) -> Result<()> {
    let stage = series(path, df, col::STAGE)?
        .str()
        .map_err(|e| bad(path, col::STAGE, e.to_string()))?;
    let f64c = |name: &str| -> Result<Float64Chunked> {
        Ok(series(path, df, name)?
            .f64()
            .map_err(|e| bad(path, name, e.to_string()))?
            .clone())
    };
    let i64c = |name: &str| -> Result<Int64Chunked> {
        Ok(series(path, df, name)?
            .i64()
            .map_err(|e| bad(path, name, e.to_string()))?
            .clone())
    };
    let i32c = |name: &str| -> Result<Int32Chunked> {
        Ok(series(path, df, name)?
            .i32()
            .map_err(|e| bad(path, name, e.to_string()))?
            .clone())
    };
    let target_rate = f64c(col::TARGET_RATE)?;
    let scheduled = i64c(col::SCHEDULED_NS)?;
    let sent = i64c(col::SENT_NS)?;
    let headers = i64c(col::HEADERS_NS)?;
    let end = i64c(col::END_NS)?;
    let prompt_tokens = i32c(col::PROMPT_TOKENS)?;
    let output_tokens = i32c(col::OUTPUT_TOKENS)?;
    let expected = i32c(col::EXPECTED_PROMPT_TOKENS)?;
    let gap = i32c(col::EVENT_TOKENS_GAP)?;
    let reasoning_tokens = i32c(col::REASONING_TOKENS)?;
    let cached_tokens = i32c(col::CACHED_TOKENS)?;
    let turns = i32c(col::TURN)?;
    let session_ids = series(path, df, col::SESSION_ID)?
        .str()
        .map_err(|e| bad(path, col::SESSION_ID, e.to_string()))?
        .clone();
    let mut session_iter = session_ids.iter().zip(turns.iter());
    // Per-row reasoning lists, materialised (rare, small): None for a null list.
    let chunk_reasoning: Vec<Option<Vec<i32>>> = series(path, df, col::CHUNK_REASONING)?
        .list()
        .map_err(|e| bad(path, col::CHUNK_REASONING, e.to_string()))?
        .amortized_iter()
        .map(|s| {
            let s = s.map(|s| s.as_ref().clone());
            s.and_then(|s| {
                s.i32()
                    .ok()
                    .map(|c| c.iter().map(|v| v.unwrap_or(0)).collect())
            })
        })
        .collect();
    let error_kind = series(path, df, col::ERROR_KIND)?
        .str()
        .map_err(|e| bad(path, col::ERROR_KIND, e.to_string()))?;

    let chunk_ns = series(path, df, col::CHUNK_NS)?
        .list()
        .map_err(|e| bad(path, col::CHUNK_NS, e.to_string()))?;
    let chunk_tokens = series(path, df, col::CHUNK_TOKENS)?
        .list()
        .map_err(|e| bad(path, col::CHUNK_TOKENS, e.to_string()))?;
    // Both list columns come from the same row groups; if polars chunked them differently,
    // rechunk so that offsets line up.
    let aligned = chunk_ns.chunk_lengths().eq(chunk_tokens.chunk_lengths());
    let (chunk_ns, chunk_tokens) = if aligned {
        (chunk_ns.clone(), chunk_tokens.clone())
    } else {
        (
            chunk_ns.rechunk().into_owned(),
            chunk_tokens.rechunk().into_owned(),
        )
    };
    let ns_inner = chunk_ns.get_inner();
    let ns_inner = ns_inner
        .i64()
        .map_err(|e| bad(path, col::CHUNK_NS, e.to_string()))?;
    let tok_inner = chunk_tokens.get_inner();
    let tok_inner = tok_inner
        .i32()
        .map_err(|e| bad(path, col::CHUNK_TOKENS, e.to_string()))?;
    let ns_list = FlatList {
        parts: chunk_ns
            .downcast_iter()
            .zip(ns_inner.downcast_iter())
            .map(|(l, v)| (l.offsets().as_slice(), v.values().as_slice()))
            .collect(),
    };
    let tok_list = FlatList {
        parts: chunk_tokens
            .downcast_iter()
            .zip(tok_inner.downcast_iter())
            .map(|(l, v)| (l.offsets().as_slice(), v.values().as_slice()))
            .collect(),
    };

    let ids = if opts.with_ids {
        Some((
            series(path, df, col::REQUEST_ID)?
                .str()
                .map_err(|e| bad(path, col::REQUEST_ID, e.to_string()))?
                .clone(),
            series(path, df, col::PROMPT_HASH)?
                .u64()
                .map_err(|e| bad(path, col::PROMPT_HASH, e.to_string()))?
                .clone(),
        ))
    } else {
        None
    };
    let mut id_iter = ids.as_ref().map(|(r, h)| r.iter().zip(h.iter()));

    let Accumulator {
        stages,
        index,
        bad_rows,
        first_bad,
        sessions,
    } = acc;
    let mut cols = stage
        .iter()
        .zip(target_rate.iter())
        .zip(scheduled.iter())
        .zip(sent.iter())
        .zip(end.iter())
        .zip(prompt_tokens.iter())
        .zip(output_tokens.iter())
        .zip(error_kind.iter())
        .zip(ns_list.rows().zip(tok_list.rows()))
        .zip(headers.iter().zip(expected.iter()).zip(gap.iter()))
        .zip(reasoning_tokens.iter().zip(cached_tokens.iter()));
    for (i, row) in cols.by_ref().enumerate() {
        let (row, (reasoned, cached)) = row;
        let ((((((((st, rate), sched), sent), end), pt), ot), err), (times, toks)) = row.0;
        let ((hdr, exp), gap) = row.1;
        let reasoning = chunk_reasoning
            .get(i)
            .and_then(Option::as_deref)
            .unwrap_or(&[]);
        // The id columns advance with every row, kept or not.
        let ids = id_iter.as_mut().and_then(|it| it.next());
        let (session, turn) = session_iter.next().unwrap_or((None, None));
        let raw = RowRef {
            scheduled_ns: sched.unwrap_or(-1),
            sent_ns: sent,
            end_ns: end,
            chunk_ns: times,
            chunk_tokens: toks,
            output_tokens: ot,
            failed: err.is_some(),
            chunk_reasoning: reasoning,
        };
        let problem = match (st, sched) {
            (None, _) => Some((col::STAGE, "is null".to_string())),
            (_, None) => Some((col::SCHEDULED_NS, "is null".to_string())),
            _ => raw.problem(),
        };
        if let Some((column, what)) = problem {
            *bad_rows += 1;
            if first_bad.is_none() {
                *first_bad = Some(format!(
                    "row {}, column {column}: {what}",
                    offset + i as u64
                ));
            }
            continue;
        }
        let label = st.unwrap_or("");
        let si = match index.get(label) {
            Some(&i) => i,
            None => {
                index.insert(label.to_string(), stages.len());
                stages.push(StageData {
                    label: label.to_string(),
                    target_rate: rate,
                    ..Default::default()
                });
                stages.len() - 1
            }
        };
        let s = &mut stages[si];
        if s.target_rate.is_none() {
            s.target_rate = rate;
        }
        let mut row = req_row(raw, pt);
        if let (Some(h), Some(s)) = (hdr, sent) {
            row.queue_wait_ms = (h - s) as f64 / NS_PER_MS;
        }
        if let (Some(p), Some(e)) = (pt, exp.filter(|&e| e > 0)) {
            row.prompt_error = ((p - e) as f64 / f64::from(e)) as f32;
        }
        row.token_gap = gap.unwrap_or(0);
        row.reasoning = !reasoning.is_empty() || reasoned.is_some();
        row.reasoning_tokens = reasoned.unwrap_or(0).max(0) as u32;
        row.cached_tokens = cached.and_then(|c| u32::try_from(c).ok());
        row.turn = turn.and_then(|t| u32::try_from(t).ok());
        row.session = session.map(|id| {
            let next = sessions.len() as u32;
            *sessions.entry(id.to_string()).or_insert(next)
        });
        if row.ok {
            push_gaps(s, times, toks);
        }
        s.rows.push(row);
        if let Some((rid, h)) = ids {
            s.request_ids.push(rid.map(str::to_string));
            s.prompt_hashes.push(h);
        }
    }
    Ok(())
}

/// One request's row, from trace-format's metric definitions; NaN where a metric is undefined.
fn req_row(r: RowRef<'_>, prompt_tokens: Option<i32>) -> ReqRow {
    let m = derive::metrics(r);
    let ms = |ns: Option<i64>| ns.map_or(f64::NAN, |v| v as f64 / NS_PER_MS);
    ReqRow {
        scheduled_ns: r.scheduled_ns,
        ok: m.completed,
        send_lag_ms: ms(m.send_lag_ns),
        ttft_ms: ms(m.ttft_ns),
        ttft_sched_ms: ms(m.ttft_sched_ns),
        tpot_ms: m.tpot_ns.map_or(f64::NAN, |v| v / NS_PER_MS),
        e2e_ms: ms(m.e2e_ns),
        e2e_sched_ms: ms(m.e2e_sched_ns),
        end_ns: r.end_ns.unwrap_or(i64::MIN),
        input_tokens: prompt_tokens.unwrap_or(0).max(0) as u32,
        output_tokens: if m.completed {
            m.output_tokens.min(i64::from(u32::MAX)) as u32
        } else {
            0
        },
        queue_wait_ms: f64::NAN,
        prompt_error: f32::NAN,
        token_gap: 0,
        ttfa_ms: ms(m.ttfa_ns),
        reasoning_tokens: 0,
        reasoning: false,
        cached_tokens: None,
        turn: None,
        session: None,
    }
}

/// Appends one completed request's inter-token gaps to the stage's pools.
fn push_gaps(s: &mut StageData, times: &[i64], toks: &[i32]) {
    let mut prev: Option<i64> = None;
    for (&t, &k) in times.iter().zip(toks) {
        if k <= 0 {
            continue;
        }
        if let Some(p) = prev {
            let gap = (t - p) as f64 / NS_PER_MS;
            s.itl_ms.push(gap as f32);
            if k > 1 && s.itl_per_token_ms.is_none() {
                // Every earlier event carried one token, so the variant so far equals ITL.
                let mut v = s.itl_ms.clone();
                v.pop();
                s.itl_per_token_ms = Some(v);
            }
            if let Some(v) = s.itl_per_token_ms.as_mut() {
                let per = (gap / f64::from(k)) as f32;
                v.extend(std::iter::repeat_n(per, k as usize));
            }
        }
        prev = Some(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_the_format_definitions_in_ms() {
        let times = [2_000_000, 11_000_000, 21_000_000, 31_000_000];
        let r = RowRef {
            scheduled_ns: 0,
            sent_ns: Some(1_000_000),
            end_ns: Some(31_000_000),
            chunk_ns: &times,
            chunk_tokens: &[0, 1, 1, 1],
            output_tokens: None,
            failed: false,
            chunk_reasoning: &[],
        };
        let row = req_row(r, Some(5));
        assert_eq!(
            (row.send_lag_ms, row.ttft_ms, row.e2e_ms, row.tpot_ms),
            (1.0, 10.0, 30.0, 10.0)
        );
        assert_eq!((row.input_tokens, row.output_tokens), (5, 3));
        let failed = req_row(RowRef { failed: true, ..r }, None);
        assert!(failed.e2e_ms.is_nan() && !failed.ok);
        assert_eq!((failed.send_lag_ms, failed.output_tokens), (1.0, 0));
    }

    #[test]
    fn per_token_variant_spreads_multi_token_events() {
        let mut s = StageData::default();
        push_gaps(&mut s, &[0, 10_000_000, 20_000_000], &[1, 1, 1]);
        assert!(s.itl_per_token_ms.is_none());
        push_gaps(&mut s, &[0, 0, 8_000_000, 20_000_000], &[0, 1, 4, 1]);
        assert_eq!(s.itl_ms, vec![10.0, 10.0, 8.0, 12.0]);
        assert_eq!(
            s.itl_per_token_ms.unwrap(),
            vec![10.0, 10.0, 2.0, 2.0, 2.0, 2.0, 12.0]
        );
    }
}
