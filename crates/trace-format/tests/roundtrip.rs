//! Round trips through the writer and reader: any sequence of records written and read back is
//! identical, including empty lists, nulls, unicode and extreme values.

use proptest::prelude::*;
use trace_format::{TraceMeta, TraceRecord, TraceWriter, WriterOptions, meta, read_all};

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![Just(None), s.prop_map(Some)]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "\\PC{0,12}",
        Just("日本語 ✓ \u{0} \"quoted\"".to_string())
    ]
}

fn record() -> impl Strategy<Value = TraceRecord> {
    let times = (
        any::<i64>(),
        opt(any::<i64>()),
        opt(any::<i64>()),
        opt(any::<i64>()),
        opt(any::<i64>()),
    );
    let chunks = prop::collection::vec((any::<i64>(), any::<i32>()), 0..20);
    let counts = (
        opt(any::<i32>()),
        opt(any::<i32>()),
        opt(any::<i32>()),
        opt(any::<i16>()),
    );
    let strs = (
        text(),
        text(),
        opt(text()),
        opt(text()),
        opt(text()),
        opt(text()),
        opt(text()),
    );
    let more = (
        opt(text()),
        opt(any::<u64>()),
        prop::collection::vec(any::<u64>(), 0..5),
        opt(text()),
        opt(text()),
        opt(text()),
        opt(prop_oneof![
            Just(0.0f64),
            Just(f64::MAX),
            Just(1e-300),
            0.001f64..1e6
        ]),
    );
    let added = (
        opt(any::<i32>()),
        opt(any::<i32>()),
        prop::collection::vec(any::<i32>(), 0..5),
        opt(any::<i32>()),
        opt(any::<i32>()),
        opt(text()),
        opt(any::<i32>()),
        opt(any::<i64>()),
    );
    (times, chunks, counts, strs, more, added).prop_map(|(t, ch, c, s, m, a)| TraceRecord {
        request_id: s.0,
        stage: s.1,
        target_rate: m.6,
        scheduled_ns: t.0,
        sent_ns: t.1,
        headers_ns: t.2,
        first_byte_ns: t.3,
        chunk_ns: ch.iter().map(|x| x.0).collect(),
        chunk_tokens: ch.iter().map(|x| x.1).collect(),
        end_ns: t.4,
        prompt_tokens: c.0,
        output_tokens: c.1,
        max_tokens: c.2,
        token_source: s.2,
        status: c.3,
        error_kind: s.3.map(|k| trace_format::ErrorKind::parse(&k)),
        error_msg: s.4,
        endpoint: s.5,
        model: s.6,
        finish_reason: m.0,
        prompt_hash: m.1,
        hash_ids: m.2,
        parent_id: m.3,
        prompt: m.4,
        output_text: m.5,
        expected_prompt_tokens: a.0,
        event_tokens_gap: a.1,
        chunk_reasoning: a.2,
        reasoning_tokens: a.3,
        cached_tokens: a.4,
        session_id: a.5,
        turn: a.6,
        think_ns: a.7,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn written_records_read_back_identical(
        recs in prop::collection::vec(record(), 0..40),
        batch_rows in 1usize..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut meta = TraceMeta::new();
        meta.set(meta::LABEL, "proptest ✓");
        // Small batches and a zero flush interval exercise many parts and the merge.
        let opts = WriterOptions {
            batch_rows,
            flush_interval: std::time::Duration::ZERO,
            ..WriterOptions::default()
        };
        let mut w = TraceWriter::create(&path, meta, opts).unwrap();
        for (i, r) in recs.iter().enumerate() {
            w.write(r).unwrap();
            if i % 3 == 0 {
                w.tick().unwrap();
            }
        }
        w.close().unwrap();
        prop_assert!(!trace_format::partial_dir(&path).exists());
        let (m, back) = read_all(&path).unwrap();
        prop_assert_eq!(m.get(meta::LABEL), Some("proptest ✓"));
        prop_assert_eq!(back, recs);
    }
}

#[test]
fn spawned_writer_collects_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.parquet");
    let opts = WriterOptions {
        channel_capacity: 4,
        batch_rows: 16,
        ..WriterOptions::default()
    };
    let (tx, handle) = trace_format::spawn_writer(&path, TraceMeta::new(), opts).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    let rec = TraceRecord {
                        request_id: format!("{t}-{i}"),
                        chunk_ns: vec![i; (i % 7) as usize],
                        chunk_tokens: vec![1; (i % 7) as usize],
                        ..TraceRecord::default()
                    };
                    tx.send(rec).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    handle.set_meta(meta::LABEL, "late key");
    let stats = handle.close().unwrap();
    assert_eq!(stats.rows, 1000);
    let (m, recs) = read_all(&path).unwrap();
    assert_eq!(recs.len(), 1000);
    assert_eq!(m.get(meta::LABEL), Some("late key"));
    let mut ids: Vec<_> = recs.iter().map(|r| r.request_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "every record exactly once");
}

#[test]
fn empty_trace_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.parquet");
    TraceWriter::create(&path, TraceMeta::new(), WriterOptions::default())
        .unwrap()
        .close()
        .unwrap();
    let (m, recs) = read_all(&path).unwrap();
    assert!(recs.is_empty());
    assert_eq!(m.schema_version(), Some(1));
}

#[test]
fn refuses_to_overwrite_an_interrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.parquet");
    let mut w = TraceWriter::create(&path, TraceMeta::new(), WriterOptions::default()).unwrap();
    w.write(&TraceRecord::default()).unwrap();
    let partial = w.abandon().unwrap();
    let err = TraceWriter::create(&path, TraceMeta::new(), WriterOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("interrupted run"), "{err}");
    // The abandoned run is readable as a directory.
    let (_, recs) = read_all(&partial).unwrap();
    assert_eq!(recs.len(), 1);
}

/// A file written before the columns of `col::ADDED` existed still opens, and reads them as
/// null (schema_version 1 grows by nullable columns only).
#[test]
fn files_without_the_added_columns_read_them_as_null() {
    use std::sync::Arc;
    use trace_format::{col, records_to_batch, schema};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.parquet");
    let rec = TraceRecord {
        request_id: "r".into(),
        expected_prompt_tokens: Some(5),
        ..TraceRecord::default()
    };
    let full = records_to_batch(&[rec]).unwrap();
    let keep: Vec<usize> = (0..full.num_columns())
        .filter(|&i| !col::ADDED.contains(&schema().field(i).name().as_str()))
        .collect();
    let old = full.project(&keep).unwrap();
    let mut meta = TraceMeta::new();
    meta.set(meta::KIND, "run");
    let kv = meta
        .iter()
        .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.into(), v.to_string()))
        .collect();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .build();
    let f = std::fs::File::create(&path).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(f, Arc::clone(old.schema_ref()), Some(props)).unwrap();
    w.write(&old).unwrap();
    w.close().unwrap();
    let (_, recs) = read_all(&path).unwrap();
    assert_eq!(recs[0].request_id, "r");
    assert_eq!(recs[0].expected_prompt_tokens, None);
}
