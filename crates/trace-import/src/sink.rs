//! [`Sink`]: the part every importer shares. It turns source times into offsets, applies the
//! window, filters and limit, counts skipped rows, and streams records into a
//! [`TraceWriter`], so no importer ever holds its input.

use std::path::Path;

use trace_format::{TraceMeta, TraceRecord, TraceWriter, WriterOptions};

use crate::config::{Bound, FilterKey, ImportConfig, ImportSummary, norm_log_type};
use crate::error::{Error, Location, Result};

/// How many skipped rows' errors a summary keeps.
const BAD_EXAMPLES: usize = 5;

/// One source row on its way into the trace.
#[derive(Debug, Default)]
pub(crate) struct Row {
    /// The source's arrival time in ns on the source's own clock (absolute UNIX ns for Azure
    /// and AIPerf, since trace start for the others); None when the source has no times.
    pub time_ns: Option<i64>,
    /// The record; its `scheduled_ns` is set here. Response times (`sent_ns`, `chunk_ns`...)
    /// are given on the same clock as `time_ns` and shifted with it.
    pub rec: TraceRecord,
    /// BurstGPT's log type, for `--filter log_type=`.
    pub log_type: Option<String>,
}

/// Whether the reader should go on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

pub(crate) struct Sink {
    cfg: ImportConfig,
    writer: Option<TraceWriter>,
    /// The first row's time: offsets in the window are measured from it.
    origin: Option<i64>,
    /// The previous row's time, for formats whose rows must come in time order.
    last_time: Option<i64>,
    /// Where `scheduled_ns` 0 lies on the source clock.
    zero: Option<i64>,
    models: Vec<String>,
    log_types: Vec<String>,
    pub(crate) summary: ImportSummary,
}

impl Sink {
    pub(crate) fn new(cfg: &ImportConfig, meta: TraceMeta) -> Result<Self> {
        let writer = TraceWriter::create(
            &cfg.output,
            meta,
            WriterOptions {
                overwrite: cfg.force,
                ..WriterOptions::default()
            },
        )?;
        let pick = |k: FilterKey| -> Vec<String> {
            cfg.filters
                .iter()
                .filter(|f| f.key == k)
                .map(|f| f.value.to_ascii_lowercase())
                .collect()
        };
        let log_types = pick(FilterKey::LogType)
            .iter()
            .map(|s| norm_log_type(s))
            .collect();
        Ok(Self {
            cfg: cfg.clone(),
            writer: Some(writer),
            origin: None,
            last_time: None,
            zero: None,
            models: pick(FilterKey::Model),
            log_types,
            summary: ImportSummary::default(),
        })
    }

    /// Fixes the offset origin when the importer knows it better than "the first row".
    pub(crate) fn set_origin(&mut self, t: i64) {
        self.origin = Some(t);
    }

    pub(crate) fn path(&self) -> &Path {
        &self.cfg.input
    }

    pub(crate) fn config(&self) -> &ImportConfig {
        &self.cfg
    }

    pub(crate) fn at(&self, line: u64, column: Option<u64>, field: Option<&str>) -> Location {
        Location {
            path: self.cfg.input.clone(),
            line,
            column,
            field: field.map(str::to_string),
        }
    }

    /// A malformed row: counted and skipped under `--skip-bad`, else the import's error.
    pub(crate) fn bad(&mut self, err: Error) -> Result<()> {
        self.summary.rows_read += 1;
        if self.cfg.skip_bad && err.is_bad_row() {
            self.summary.rows_bad += 1;
            if self.summary.bad_examples.len() < BAD_EXAMPLES {
                self.summary.bad_examples.push(err.to_string());
            }
            Ok(())
        } else {
            Err(err)
        }
    }

    /// A row the format itself leaves out (ShareGPT conversation without a reply).
    pub(crate) fn exclude(&mut self) {
        self.summary.rows_read += 1;
        self.summary.rows_excluded += 1;
    }

    /// Offers one parsed row; `line` locates it for errors.
    pub(crate) fn push(&mut self, line: u64, mut row: Row) -> Result<Flow> {
        if let Some(t) = row.time_ns {
            let origin = *self.origin.get_or_insert(t);
            if t < origin {
                let err = Error::BadRow {
                    at: self.at(line, None, None),
                    problem: format!(
                        "timestamp is {:.3} s before the first row's: the input must be sorted by time",
                        (origin - t) as f64 / 1e9
                    ),
                };
                self.bad(err)?;
                return Ok(Flow::Continue);
            }
            if self.cfg.format.sorted_by_time() {
                if let Some(last) = self.last_time.filter(|&l| t < l) {
                    let err = Error::BadRow {
                        at: self.at(line, None, None),
                        problem: format!(
                            "timestamp is {:.3} s before the previous row's: the input must be sorted by time",
                            (last - t) as f64 / 1e9
                        ),
                    };
                    self.bad(err)?;
                    return Ok(Flow::Continue);
                }
                self.last_time = Some(t);
            }
        }
        self.summary.rows_read += 1;
        if !self.keep(&row) {
            self.summary.rows_excluded += 1;
            return Ok(Flow::Continue);
        }
        let zero = match row.time_ns {
            Some(_) => match self.zero {
                Some(z) => z,
                None => {
                    let z = self.window_zero();
                    self.zero = Some(z);
                    z
                }
            },
            None => 0,
        };
        let r = &mut row.rec;
        r.scheduled_ns = row.time_ns.unwrap_or(zero);
        r.shift_times(-zero);
        if r.error_kind.is_some() {
            self.summary.source_failures += 1;
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_owned(row.rec)?;
        }
        self.summary.rows_written += 1;
        if self
            .cfg
            .limit
            .is_some_and(|n| self.summary.rows_written >= n)
        {
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }

    /// The source time that becomes `scheduled_ns` 0: the window's start, else the first row.
    fn window_zero(&self) -> i64 {
        let origin = self.origin.unwrap_or(0);
        match self.cfg.window.and_then(|w| w.start) {
            Some(Bound::Offset(d)) => origin + d,
            Some(Bound::Absolute(a)) => a,
            None => origin,
        }
    }

    fn keep(&self, row: &Row) -> bool {
        if let (Some(w), Some(t)) = (self.cfg.window, row.time_ns) {
            let origin = self.origin.unwrap_or(t);
            let inside = |b: Option<Bound>, after: bool| match b {
                None => true,
                Some(Bound::Offset(d)) => {
                    if after {
                        t - origin >= d
                    } else {
                        t - origin < d
                    }
                }
                Some(Bound::Absolute(a)) => {
                    if after {
                        t >= a
                    } else {
                        t < a
                    }
                }
            };
            if !inside(w.start, true) || !inside(w.end, false) {
                return false;
            }
        }
        if !self.models.is_empty() {
            let m = row
                .rec
                .model
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !self.models.contains(&m) {
                return false;
            }
        }
        if !self.log_types.is_empty() {
            let l = norm_log_type(row.log_type.as_deref().unwrap_or_default());
            if !self.log_types.contains(&l) {
                return false;
            }
        }
        true
    }

    /// The source-clock time of `scheduled_ns` 0, once a row was kept.
    pub(crate) fn zero(&self) -> Option<i64> {
        self.zero
    }

    pub(crate) fn set_meta(&mut self, key: &str, value: impl Into<String>) {
        if let Some(w) = self.writer.as_mut() {
            w.set_meta(key, value);
        }
    }

    /// Closes the trace and returns what was done.
    pub(crate) fn finish(mut self) -> Result<ImportSummary> {
        if let Some(w) = self.writer.take() {
            w.close()?;
        }
        Ok(std::mem::take(&mut self.summary))
    }

    /// Removes the half-written output after a failed import.
    pub(crate) fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.discard();
        }
    }
}
