//! The streaming writer: bounded memory, row groups flushed on size and on a timer, crash safety.
//!
//! Crash-safety mechanism (rolling part files, merged on close): while a run is open its rows
//! live in the directory `OUT.parquet.partial/`. Every flush interval the rows buffered so far
//! are written as one complete Parquet file `part-NNNNN.parquet` (written under a `.tmp` name and
//! renamed once its footer is on disk), so a SIGKILL loses at most the rows of the current
//! interval and every finished part stays readable by `trace` (which accepts the directory) and
//! by polars (`OUT.parquet.partial/*.parquet`). A clean close merges the parts, batch by batch,
//! into `OUT.parquet` and removes the directory. `trace recover OUT.parquet.partial` does the
//! same merge after a crash ([`recover`]).
//!
//! A live writer holds an exclusive `flock` on `writer.lock` inside its directory (the kernel
//! drops it when the process dies, however it dies), so `recover` and readers can tell a live
//! run from an interrupted one, and a second writer is refused with the first one's pid.
//! Cleanup removes only what the writer made (its parts, torn `.tmp` parts and the lock file),
//! then the directory if that left it empty: nothing a user put there is ever deleted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::record::records_to_batch;
use crate::schema::schema;
use crate::{Error, Result, TraceMeta, TraceRecord};

/// Tuning of the writer. The defaults suit runs from seconds to days.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Close a part file (the crash-loss window) this often when it holds rows.
    pub flush_interval: Duration,
    /// Flush a row group once its encoded size in memory crosses this many bytes.
    pub row_group_bytes: usize,
    /// Encode buffered records into the open row group every this many rows.
    pub batch_rows: usize,
    /// Capacity of the channel between producers and the writer thread (backpressure beyond).
    pub channel_capacity: usize,
    /// Replace an existing finished trace at the output path (a CLI's `--force`). Off, creating
    /// a writer over an existing file is refused.
    pub overwrite: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(2),
            row_group_bytes: 64 << 20,
            batch_rows: 1024,
            channel_capacity: 8192,
            overwrite: false,
        }
    }
}

/// What a closed writer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Rows written.
    pub rows: u64,
    /// Part files written while the run was open.
    pub parts: u32,
    /// Times a producer found the channel full and had to wait.
    pub backpressure_waits: u64,
}

/// The crash-safety directory for a final path: `OUT.parquet` -> `OUT.parquet.partial`.
pub fn partial_dir(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// The lock file a live writer holds inside its `.partial` directory.
pub(crate) const LOCK_FILE: &str = "writer.lock";

/// Takes the directory's writer lock and records this process's pid in it.
fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            return Err(Error::Busy {
                path: dir.to_path_buf(),
                holder: lock_holder(&mut f),
            });
        }
        Err(e) => return Err(io_err(&path)(e.into())),
    }
    f.set_len(0).map_err(io_err(&path))?;
    f.write_all(format!("pid {}\n", std::process::id()).as_bytes())
        .map_err(io_err(&path))?;
    Ok(f)
}

fn lock_holder(f: &mut File) -> String {
    let mut s = String::new();
    let _ = f.take(64).read_to_string(&mut s);
    let s = s.trim();
    if s.is_empty() {
        "another process".into()
    } else {
        s.to_string()
    }
}

/// Who is writing the `.partial` directory `dir` right now (for example `pid 4242`), or `None`
/// when no live process holds its lock (an interrupted run, or not a run at all).
pub fn live_writer(dir: &Path) -> Option<String> {
    let mut f = File::open(dir.join(LOCK_FILE)).ok()?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared) {
        // Got it, so nobody holds it exclusively; dropping `f` releases it.
        Ok(()) => None,
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Some(lock_holder(&mut f)),
        Err(_) => None,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn pq_err(path: &Path) -> impl FnOnce(parquet::errors::ParquetError) -> Error + '_ {
    move |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

/// The schema with the run's metadata in it: the Parquet footer's key-value pairs are what
/// `trace` and DuckDB read, but pyarrow and pandas read `schema.metadata`, which comes from the
/// Arrow schema the writer embeds; so both carry the `trace.*` keys.
fn schema_with(meta: &TraceMeta) -> arrow_schema::SchemaRef {
    let map: std::collections::HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(schema().as_ref().clone().with_metadata(map))
}

/// `batch` under `schema` (the same fields, plus the run's metadata).
fn restamp(batch: RecordBatch, schema: &arrow_schema::SchemaRef) -> Result<RecordBatch> {
    batch
        .with_schema(schema.clone())
        .map_err(|source| Error::Arrow {
            context: "stamping the run's metadata on a batch".into(),
            source,
        })
}

fn props(meta: &TraceMeta) -> WriterProperties {
    let kv = meta
        .iter()
        .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
        .collect();
    WriterProperties::builder()
        // zstd level 3: chunk_ns lists compress ~4x, at a cost far below the run's own CPU.
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(kv))
        .build()
}

/// A synchronous trace writer. Use it directly from one thread (importers, tests), or through
/// [`spawn_writer`] from many tasks.
pub struct TraceWriter {
    final_path: PathBuf,
    dir: PathBuf,
    /// Held (flock) for the writer's lifetime; see the module docs.
    _lock: File,
    meta: TraceMeta,
    opts: WriterOptions,
    buf: Vec<TraceRecord>,
    /// The open part: its writer, its temporary path, and the schema it was opened with.
    part: Option<(ArrowWriter<File>, PathBuf, arrow_schema::SchemaRef)>,
    parts: u32,
    rows: u64,
    last_rotate: Instant,
}

impl TraceWriter {
    /// Starts a trace at `path`. Refuses to start over a live or interrupted run's directory,
    /// and over an existing finished trace unless `opts.overwrite`, so recorded data is never
    /// overwritten by accident.
    pub fn create(path: impl AsRef<Path>, meta: TraceMeta, opts: WriterOptions) -> Result<Self> {
        let final_path = path.as_ref().to_path_buf();
        let dir = partial_dir(&final_path);
        let taken = |dir: PathBuf| match live_writer(&dir) {
            Some(holder) => Error::Busy { path: dir, holder },
            None => Error::Interrupted { path: dir },
        };
        if dir.exists() {
            return Err(taken(dir));
        }
        if final_path.is_dir() || (final_path.exists() && !opts.overwrite) {
            return Err(Error::Exists { path: final_path });
        }
        if let Some(parent) = final_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // Another writer created it between the check and here.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(taken(dir)),
            Err(e) => return Err(io_err(&dir)(e)),
        }
        let lock = match take_lock(&dir) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        Ok(Self {
            final_path,
            dir,
            _lock: lock,
            meta,
            opts,
            buf: Vec::new(),
            part: None,
            parts: 0,
            rows: 0,
            last_rotate: Instant::now(),
        })
    }

    /// The final path the trace is renamed to on close.
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// Sets a metadata key; it is written into every part started after this and the final file.
    pub fn set_meta(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.meta.set(key, value);
    }

    /// Mutable access to the metadata, for the typed setters.
    pub fn meta_mut(&mut self) -> &mut TraceMeta {
        &mut self.meta
    }

    /// Buffers one record; encodes and flushes as the size limits require.
    pub fn write(&mut self, rec: &TraceRecord) -> Result<()> {
        self.buf.push(rec.clone());
        self.after_push()
    }

    /// Buffers one owned record (no clone).
    pub fn write_owned(&mut self, rec: TraceRecord) -> Result<()> {
        self.buf.push(rec);
        self.after_push()
    }

    fn after_push(&mut self) -> Result<()> {
        self.rows += 1;
        if self.buf.len() >= self.opts.batch_rows {
            self.encode_buffer()?;
        }
        Ok(())
    }

    fn encode_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = records_to_batch(&self.buf)?;
        self.buf.clear();
        if self.part.is_none() {
            self.parts += 1;
            let tmp = self.dir.join(format!("part-{:05}.parquet.tmp", self.parts));
            let file = File::create(&tmp).map_err(io_err(&tmp))?;
            let full = schema_with(&self.meta);
            let w = ArrowWriter::try_new(file, full.clone(), Some(props(&self.meta)))
                .map_err(pq_err(&tmp))?;
            self.part = Some((w, tmp, full));
        }
        if let Some((w, tmp, full)) = self.part.as_mut() {
            let batch = restamp(batch, full)?;
            w.write(&batch).map_err(pq_err(tmp))?;
            if w.in_progress_size() >= self.opts.row_group_bytes {
                w.flush().map_err(pq_err(tmp))?;
            }
        }
        Ok(())
    }

    /// Closes the current part if the flush interval has passed. Call it regularly.
    pub fn tick(&mut self) -> Result<()> {
        if self.last_rotate.elapsed() >= self.opts.flush_interval {
            self.rotate()?;
        }
        Ok(())
    }

    /// Time left until the next timed flush.
    pub fn until_flush(&self) -> Duration {
        self.opts
            .flush_interval
            .saturating_sub(self.last_rotate.elapsed())
    }

    /// Makes everything written so far durable as a finished part file.
    pub fn rotate(&mut self) -> Result<()> {
        self.last_rotate = Instant::now();
        self.encode_buffer()?;
        if let Some((w, tmp, _)) = self.part.take() {
            w.close().map_err(pq_err(&tmp))?;
            let done = tmp.with_extension("");
            std::fs::rename(&tmp, &done).map_err(io_err(&done))?;
        }
        Ok(())
    }

    /// Leaves the run as an interrupted one: flushes what is buffered into a part and keeps the
    /// `.partial` directory (used on a hard abort, where merging would take too long).
    pub fn abandon(mut self) -> Result<PathBuf> {
        self.rotate()?;
        Ok(self.dir.clone())
    }

    /// Finishes the trace: merges the parts into the final file and removes the directory.
    pub fn close(mut self) -> Result<WriterStats> {
        self.rotate()?;
        let parts = list_parts(&self.dir)?;
        merge_into(&parts, &self.final_path, &self.meta)?;
        cleanup(&self.dir, &parts)?;
        Ok(WriterStats {
            rows: self.rows,
            parts: self.parts,
            backpressure_waits: 0,
        })
    }

    /// Throws the run away (a failed import or synthesis): removes what this writer made.
    pub fn discard(mut self) -> Result<()> {
        if let Some((w, tmp, _)) = self.part.take() {
            drop(w);
            let _ = std::fs::remove_file(&tmp);
        }
        let parts = list_parts(&self.dir)?;
        cleanup(&self.dir, &parts)
    }
}

/// Sorted finished part files of a `.partial` directory.
pub(crate) fn list_parts(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let p = entry.map_err(io_err(dir))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            parts.push(p);
        }
    }
    parts.sort();
    Ok(parts)
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Rows merged into the output.
    pub rows: u64,
    /// Part files merged.
    pub parts: usize,
    /// Set when the directory was kept because it holds files the writer did not make.
    pub kept_dir: Option<PathBuf>,
}

/// Turns an interrupted run's `.partial` directory into the finished trace `out`: refuses a
/// live run (its writer holds the lock), a directory without part files, parts of different
/// runs, and an existing `out`; merges with the last part's metadata (keys set while the run
/// was open arrive late); deletes only the merged parts and the writer's own leftovers.
pub fn recover(dir: &Path, out: &Path) -> Result<Recovered> {
    if let Some(holder) = live_writer(dir) {
        return Err(Error::Busy {
            path: dir.to_path_buf(),
            holder,
        });
    }
    if out.exists() {
        return Err(Error::Exists {
            path: out.to_path_buf(),
        });
    }
    let reader = crate::TraceReader::open(dir)?;
    if !reader.is_interrupted() || reader.files().is_empty() {
        return Err(Error::NoParts {
            path: dir.to_path_buf(),
        });
    }
    let parts = reader.files().to_vec();
    let meta = reader.meta().clone();
    drop(reader);
    let rows = merge_into(&parts, out, &meta)?;
    cleanup(dir, &parts)?;
    Ok(Recovered {
        rows,
        parts: parts.len(),
        kept_dir: dir.exists().then(|| dir.to_path_buf()),
    })
}

/// Removes the merged `parts`, torn `part-*.parquet.tmp` files and the lock file from `dir`,
/// then the directory itself if nothing else is in it.
fn cleanup(dir: &Path, parts: &[PathBuf]) -> Result<()> {
    for p in parts {
        std::fs::remove_file(p).map_err(io_err(p))?;
    }
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let p = entry.map_err(io_err(dir))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let torn = name.starts_with("part-") && name.ends_with(".parquet.tmp");
        if torn || name == LOCK_FILE {
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        // Someone else's files are in it: leave them (and the directory) alone.
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Streams `parts` into `out` with `meta`, through a temporary file beside `out` (not inside
/// the `.partial` directory, whose disk may be the full one), removed again on any failure.
/// Memory stays bounded: parts are streamed batch by batch.
fn merge_into(parts: &[PathBuf], out: &Path, meta: &TraceMeta) -> Result<u64> {
    let mut name = out.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = out.with_file_name(name);
    let res = write_merged(parts, &tmp, meta).and_then(|rows| {
        std::fs::rename(&tmp, out)
            .map(|()| rows)
            .map_err(io_err(out))
    });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn write_merged(parts: &[PathBuf], tmp: &Path, meta: &TraceMeta) -> Result<u64> {
    let file = File::create(tmp).map_err(io_err(tmp))?;
    let full = schema_with(meta);
    let mut w = ArrowWriter::try_new(file, full.clone(), Some(props(meta))).map_err(pq_err(tmp))?;
    let mut rows = 0u64;
    for part in parts {
        let f = File::open(part).map_err(io_err(part))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(pq_err(part))?;
        for batch in reader {
            let batch = batch.map_err(|source| Error::Arrow {
                context: format!("reading {}", part.display()),
                source,
            })?;
            rows += batch.num_rows() as u64;
            // Re-stamp with the canonical schema (field metadata may differ between parts, and a
            // part written by an older build lacks the columns added since).
            let batch = restamp(crate::record::conform(&batch)?, &full)?;
            w.write(&batch).map_err(pq_err(tmp))?;
            if w.in_progress_size() >= 64 << 20 {
                w.flush().map_err(pq_err(tmp))?;
            }
        }
    }
    let file = w.into_inner().map_err(pq_err(tmp))?;
    file.sync_all().map_err(io_err(tmp))?;
    Ok(rows)
}

enum Msg {
    Record(Box<TraceRecord>),
    Meta(String, String),
    Close,
}

/// A cloneable handle that producers use to send records to the writer thread.
#[derive(Clone)]
pub struct RecordSender {
    tx: flume::Sender<Msg>,
    waits: Arc<AtomicU64>,
    path: Arc<PathBuf>,
}

impl RecordSender {
    fn gone(&self) -> Error {
        Error::WriterGone {
            path: self.path.to_path_buf(),
            reason: "the writer thread has stopped (see its error on close)".into(),
        }
    }

    fn note_full(&self) {
        if self.tx.is_full() && self.waits.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "trace writer for {} is behind; producers are waiting (backpressure)",
                self.path.display()
            );
        }
    }

    /// Sends a record from async code; waits (without blocking the runtime) when the channel
    /// is full.
    pub async fn send_async(&self, rec: TraceRecord) -> Result<()> {
        self.note_full();
        self.tx
            .send_async(Msg::Record(Box::new(rec)))
            .await
            .map_err(|_| self.gone())
    }

    /// Sends a record from a plain thread; blocks when the channel is full.
    pub fn send(&self, rec: TraceRecord) -> Result<()> {
        self.note_full();
        self.tx
            .send(Msg::Record(Box::new(rec)))
            .map_err(|_| self.gone())
    }
}

/// Owner of the writer thread.
pub struct WriterHandle {
    tx: flume::Sender<Msg>,
    waits: Arc<AtomicU64>,
    join: std::thread::JoinHandle<Result<WriterStats>>,
}

impl WriterHandle {
    /// Sets a metadata key (written into later parts and the final file).
    pub fn set_meta(&self, key: impl Into<String>, value: impl Into<String>) {
        let _ = self.tx.send(Msg::Meta(key.into(), value.into()));
    }

    /// Writes everything sent before this call, merges the parts and renames into place.
    pub fn close(self) -> Result<WriterStats> {
        let _ = self.tx.send(Msg::Close);
        let mut stats = self.join.join().unwrap_or_else(|_| {
            Err(Error::WriterGone {
                path: PathBuf::new(),
                reason: "writer thread panicked".into(),
            })
        })?;
        stats.backpressure_waits = self.waits.load(Ordering::Relaxed);
        Ok(stats)
    }
}

/// Starts a writer thread for `path`. Records sent through the returned [`RecordSender`] are
/// written in order of arrival. If every sender and the handle are dropped without `close`, the
/// run is left as an interrupted `.partial` directory (its data flushed and readable).
pub fn spawn_writer(
    path: impl AsRef<Path>,
    meta: TraceMeta,
    opts: WriterOptions,
) -> Result<(RecordSender, WriterHandle)> {
    let path = path.as_ref().to_path_buf();
    let (tx, rx) = flume::bounded::<Msg>(opts.channel_capacity.max(1));
    let mut writer = TraceWriter::create(&path, meta, opts)?;
    let join = std::thread::Builder::new()
        .name("trace-writer".into())
        .spawn(move || -> Result<WriterStats> {
            // Encoding and compressing a part file takes milliseconds of CPU at once. On a
            // load generator with few cores this thread shares a core with the client's
            // runtime, whose timestamps are the measurement: at nice 10 the scheduler lets a
            // waking client thread preempt it instead of sharing time slices (Linux nice
            // values are per thread). Best effort; the writer keeps up either way.
            let _ = rustix::process::setpriority_process(None, 10);
            loop {
                match rx.recv_timeout(writer.until_flush()) {
                    Ok(Msg::Record(rec)) => writer.write_owned(*rec)?,
                    Ok(Msg::Meta(k, v)) => writer.set_meta(k, v),
                    Ok(Msg::Close) => return writer.close(),
                    Err(flume::RecvTimeoutError::Timeout) => {}
                    Err(flume::RecvTimeoutError::Disconnected) => {
                        writer.abandon()?;
                        return Ok(WriterStats::default());
                    }
                }
                writer.tick()?;
            }
        })
        .map_err(io_err(&path))?;
    let waits = Arc::new(AtomicU64::new(0));
    let sender = RecordSender {
        tx: tx.clone(),
        waits: waits.clone(),
        path: Arc::new(path),
    };
    Ok((sender, WriterHandle { tx, waits, join }))
}
