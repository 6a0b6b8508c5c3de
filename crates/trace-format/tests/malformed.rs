//! The reader refuses what it cannot read correctly, with an error naming the file and the
//! problem: never a panic, never a silent partial read. Also the SIGKILL crash-safety case.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use trace_format::{TraceMeta, TraceReader, TraceRecord, TraceWriter, WriterOptions, meta};

/// The error as `trace` prints it: the message, then each cause once.
fn err_of(path: &Path) -> String {
    let e = TraceReader::open(path).expect_err("must be refused");
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

fn good_trace(dir: &Path, meta: TraceMeta) -> PathBuf {
    let path = dir.join("good.parquet");
    let mut w = TraceWriter::create(&path, meta, WriterOptions::default()).unwrap();
    for i in 0..10 {
        w.write(&TraceRecord {
            request_id: i.to_string(),
            ..Default::default()
        })
        .unwrap();
    }
    w.close().unwrap();
    path
}

fn plain_parquet(path: &Path, kv: Vec<KeyValue>) {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn not_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.parquet");
    std::fs::write(&p, "request_id,ttft\n1,2\n").unwrap();
    let e = err_of(&p);
    assert!(
        e.contains("notes.parquet") && e.contains("not a readable Parquet file"),
        "{e}"
    );
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = good_trace(dir.path(), TraceMeta::new());
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = err_of(&p);
    assert!(e.contains("good.parquet") && e.contains("truncated"), "{e}");
}

#[test]
fn parquet_but_not_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("other.parquet");
    plain_parquet(&p, vec![]);
    let e = err_of(&p);
    assert!(
        e.contains("other.parquet") && e.contains("not a trace file"),
        "{e}"
    );
}

#[test]
fn newer_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = TraceMeta::new();
    m.set(meta::SCHEMA_VERSION, "2");
    let p = good_trace(dir.path(), m);
    let e = err_of(&p);
    assert!(
        e.contains("schema_version 2") && e.contains("upgrade"),
        "{e}"
    );
}

#[test]
fn missing_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("partial-schema.parquet");
    plain_parquet(
        &p,
        vec![KeyValue::new(meta::SCHEMA_VERSION.into(), "1".to_string())],
    );
    let e = err_of(&p);
    assert!(
        e.contains("partial-schema.parquet") && e.contains("column 'request_id' is missing"),
        "{e}"
    );
}

#[test]
fn missing_file_points_at_interrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run.parquet");
    assert!(err_of(&p).contains("no such file"));
    let mut w = TraceWriter::create(&p, TraceMeta::new(), WriterOptions::default()).unwrap();
    w.write(&TraceRecord::default()).unwrap();
    w.abandon().unwrap();
    let e = err_of(&p);
    assert!(
        e.contains("interrupted run") && e.contains("trace recover"),
        "{e}"
    );
}

/// The child half of `sigkill_loses_at_most_the_last_interval`: writes forever (bounded at 60 s)
/// with a 100 ms flush interval until its parent kills it.
#[test]
fn child_writer() {
    let Ok(path) = std::env::var("TRACE_FORMAT_CHILD_OUT") else {
        return;
    };
    let opts = WriterOptions {
        flush_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let (tx, _handle) = trace_format::spawn_writer(&path, TraceMeta::new(), opts).unwrap();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(60) {
        let rec = TraceRecord {
            request_id: format!("r{i}"),
            scheduled_ns: i as i64,
            chunk_ns: vec![i as i64; 8],
            chunk_tokens: vec![1; 8],
            ..Default::default()
        };
        tx.send(rec).unwrap();
        i += 1;
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn sigkill_loses_at_most_the_last_interval() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("killed.parquet");
    let partial = trace_format::partial_dir(&out);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "malformed::child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TRACE_FORMAT_CHILD_OUT", &out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until several parts are on disk, then SIGKILL mid-run.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let parts = std::fs::read_dir(&partial)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                    .count()
            })
            .unwrap_or(0);
        if parts >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "child never flushed 3 parts");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(!out.exists(), "a killed run never gets the final name");
    let reader = TraceReader::open(&partial).unwrap();
    assert!(reader.is_interrupted());
    let recs: Vec<TraceRecord> = reader.records().collect::<Result<_, _>>().unwrap();
    assert!(recs.len() >= 3, "flushed rows survive: {}", recs.len());
    // Rows are the exact prefix the child wrote: nothing reordered, duplicated or corrupted.
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.request_id, format!("r{i}"));
        assert_eq!(r.chunk_ns, vec![i as i64; 8]);
    }
    // The recovery merge turns it into a normal trace.
    drop(reader);
    let merged = trace_format::recover(&partial, &out).unwrap();
    assert_eq!(merged.rows as usize, recs.len());
    assert!(!partial.exists(), "a recovered run's directory is removed");
    assert_eq!(
        TraceReader::open(&out).unwrap().num_rows() as usize,
        recs.len()
    );
}
