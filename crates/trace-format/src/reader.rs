//! The validating reader: opens a finished trace file or an interrupted run's `.partial`
//! directory, checks it is a trace this build understands, and streams record batches.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::meta_keys::meta;
use crate::record::batch_to_records;
use crate::schema::schema;
use crate::writer::{list_parts, partial_dir};
use crate::{Error, Result, SCHEMA_VERSION, TraceMeta, TraceRecord};

/// An opened, validated trace.
#[derive(Debug)]
pub struct TraceReader {
    path: PathBuf,
    files: Vec<PathBuf>,
    meta: TraceMeta,
    num_rows: u64,
    interrupted: bool,
}

fn check_magic(path: &Path) -> Result<()> {
    let mut f = File::open(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let len = f
        .metadata()
        .map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?
        .len();
    let not = |reason: &str| Error::NotParquet {
        path: path.into(),
        reason: reason.into(),
    };
    if len < 12 {
        return Err(not(&format!("only {len} bytes")));
    }
    let mut head = [0u8; 4];
    let mut tail = [0u8; 4];
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    f.read_exact(&mut head).map_err(io)?;
    f.seek(SeekFrom::End(-4)).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    f.read_exact(&mut tail).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    if &head != b"PAR1" {
        return Err(not("no Parquet magic at the start"));
    }
    if &tail != b"PAR1" {
        return Err(not(
            "no footer: the file is truncated, or its writer never closed it",
        ));
    }
    Ok(())
}

fn same_type(found: &DataType, want: &DataType) -> bool {
    match (found, want) {
        (DataType::List(a), DataType::List(b)) => a.data_type() == b.data_type(),
        _ => found == want,
    }
}

/// Opens one Parquet file, validates it as a trace, and returns its metadata and row count.
fn open_one(path: &Path) -> Result<(TraceMeta, u64)> {
    check_magic(path)?;
    let f = File::open(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let builder = crate::guarded(path, || {
        ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| Error::NotParquet {
            path: path.into(),
            reason: e.to_string(),
        })
    })?;
    let md = builder.metadata().file_metadata();
    let map = md
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    let trace_meta = TraceMeta::from_map(map);
    let version = match trace_meta.get(meta::SCHEMA_VERSION) {
        None => {
            return Err(Error::NotATrace {
                path: path.into(),
                key: meta::SCHEMA_VERSION,
            });
        }
        Some(v) => v.trim().parse::<u32>().map_err(|_| Error::BadMeta {
            path: path.into(),
            key: meta::SCHEMA_VERSION.into(),
            problem: format!("is '{v}', not an integer"),
        })?,
    };
    if version > SCHEMA_VERSION {
        return Err(Error::NewerSchema {
            path: path.into(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    check_columns(path, builder.schema())?;
    Ok((trace_meta, md.num_rows().max(0) as u64))
}

fn check_columns(path: &Path, found: &SchemaRef) -> Result<()> {
    for want in schema().fields() {
        match found.field_with_name(want.name()) {
            Err(_) if crate::col::ADDED.contains(&want.name().as_str()) => {}
            Err(_) => {
                return Err(Error::BadColumn {
                    path: path.into(),
                    column: want.name().clone(),
                    problem: "is missing".into(),
                });
            }
            Ok(f) if !same_type(f.data_type(), want.data_type()) => {
                return Err(Error::BadColumn {
                    path: path.into(),
                    column: want.name().clone(),
                    problem: format!("has type {}, expected {}", f.data_type(), want.data_type()),
                });
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

impl TraceReader {
    /// Opens `path`: a finished `.parquet` trace, or the `.partial` directory of an interrupted
    /// run (its finished parts are read in order).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            let partial = partial_dir(&path);
            let source = if partial.is_dir() {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no such file, but {} holds an interrupted run: read that directory, \
                         or merge it with `trace recover {}`",
                        partial.display(),
                        partial.display()
                    ),
                )
            } else {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
            };
            return Err(Error::Io { path, source });
        }
        let (files, interrupted) = if path.is_dir() {
            let parts = list_parts(&path)?;
            // A run that crashed before its first flush leaves only its lock file; any other
            // directory without parts is not a run at all.
            if parts.is_empty() && !path.join(crate::writer::LOCK_FILE).is_file() {
                return Err(Error::NoParts { path });
            }
            (parts, true)
        } else {
            (vec![path.clone()], false)
        };
        let mut meta = TraceMeta::default();
        let mut num_rows = 0;
        let mut first_start: Option<(String, &PathBuf)> = None;
        for (i, f) in files.iter().enumerate() {
            let (m, n) = open_one(f)?;
            num_rows += n;
            // Every part of one run carries its start time; parts of another run do not match.
            if let Some(start) = m.get(meta::RUN_START_UNIX_NS) {
                match &first_start {
                    None => first_start = Some((start.to_string(), f)),
                    Some((s, first)) if s != start => {
                        let name = |p: &Path| {
                            p.file_name()
                                .unwrap_or_default()
                                .to_string_lossy()
                                .into_owned()
                        };
                        return Err(Error::MixedRuns {
                            path,
                            first: name(first),
                            other: name(f),
                            key: meta::RUN_START_UNIX_NS,
                        });
                    }
                    Some(_) => {}
                }
            }
            // Later parts carry the most recent metadata (keys set while the run was open).
            if i + 1 == files.len() {
                meta = m;
            }
        }
        if files.is_empty() {
            meta.set(meta::SCHEMA_VERSION, SCHEMA_VERSION.to_string());
        }
        Ok(Self {
            path,
            files,
            meta,
            num_rows,
            interrupted,
        })
    }

    /// The path given to [`TraceReader::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's metadata.
    pub fn meta(&self) -> &TraceMeta {
        &self.meta
    }

    /// Rows in the trace (from the footers; no data read).
    pub fn num_rows(&self) -> u64 {
        self.num_rows
    }

    /// True when this is an interrupted run's `.partial` directory.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted
    }

    /// The Parquet files behind this trace (one, or the parts of an interrupted run).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Streams all columns' record batches.
    pub fn batches(&self) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        self.batches_of(None)
    }

    /// Streams record batches of the named columns only.
    pub fn batches_with(&self, columns: &[&str]) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        let cols: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        self.batches_of(Some(cols))
    }

    fn batches_of(
        &self,
        columns: Option<Vec<String>>,
    ) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        self.files.iter().flat_map(move |path| {
            let opened = crate::guarded(path, || -> Result<_> {
                let f = File::open(path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                let mut b = ParquetRecordBatchReaderBuilder::try_new(f)
                    .map_err(|source| Error::Parquet {
                        path: path.clone(),
                        source,
                    })?
                    .with_batch_size(8192);
                if let Some(cols) = &columns {
                    let mask = ProjectionMask::columns(
                        b.parquet_schema(),
                        cols.iter().map(String::as_str),
                    );
                    b = b.with_projection(mask);
                }
                b.build().map_err(|source| Error::Parquet {
                    path: path.clone(),
                    source,
                })
            });
            let iter: Box<dyn Iterator<Item = Result<RecordBatch>>> = match opened {
                Ok(mut r) => {
                    let mut failed = false;
                    // Each batch decoded under `guarded`; after an error, nothing more.
                    Box::new(std::iter::from_fn(move || {
                        if failed {
                            return None;
                        }
                        let next = crate::guarded(path, || Ok(r.next()))
                            .and_then(|b| {
                                b.transpose().map_err(|source| Error::Arrow {
                                    context: format!("reading {}", path.display()),
                                    source,
                                })
                            })
                            .transpose();
                        failed = matches!(next, Some(Err(_)));
                        next
                    }))
                }
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            iter
        })
    }

    /// Decodes every page of the named columns and drops the data: a damaged file fails here,
    /// with an error, before a reader without this crate's guards (polars) sees it. Returns the
    /// rows decoded.
    pub fn verify(&self, columns: &[&str]) -> Result<u64> {
        let mut rows = 0u64;
        for b in self.batches_with(columns) {
            rows += b?.num_rows() as u64;
        }
        if rows != self.num_rows {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                reason: format!("{rows} rows decoded, the footer says {}", self.num_rows),
            });
        }
        Ok(rows)
    }

    /// Streams the rows as [`TraceRecord`]s.
    pub fn records(&self) -> impl Iterator<Item = Result<TraceRecord>> + '_ {
        self.batches().flat_map(|b| {
            let rows: Box<dyn Iterator<Item = Result<TraceRecord>>> =
                match b.and_then(|b| crate::guarded(&self.path, || batch_to_records(&b))) {
                    Ok(v) => Box::new(v.into_iter().map(Ok)),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
            rows
        })
    }
}

/// Reads a whole trace into memory (small traces and tests).
pub fn read_all(path: impl AsRef<Path>) -> Result<(TraceMeta, Vec<TraceRecord>)> {
    let r = TraceReader::open(path)?;
    let recs = r.records().collect::<Result<Vec<_>>>()?;
    Ok((r.meta().clone(), recs))
}
