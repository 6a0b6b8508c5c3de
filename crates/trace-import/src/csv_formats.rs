//! The CSV traces: Azure LLM inference 2023/2024 and BurstGPT. Read record by record with the
//! csv crate's byte records (no per-row allocation); columns are found by header name.

use std::fs::File;
use std::io::BufReader;

use crate::input::LineCap;

use csv::ByteRecord;
use trace_format::{ErrorKind, TraceRecord};

use crate::WORKLOAD_STAGE;
use crate::config::Format;
use crate::error::{Error, Result};
use crate::sink::{Flow, Row, Sink};
use crate::timestamp::parse_datetime_ns;

/// One header column this importer needs (or may use).
struct Col {
    name: &'static str,
    idx: Option<usize>,
}

type Input = BufReader<LineCap<File>>;

fn open_csv(sink: &Sink) -> Result<csv::Reader<Input>> {
    Ok(csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(crate::input::open_lines(sink.path())?))
}

/// Finds the columns by name (case- and space-insensitive). Missing required ones are an error
/// naming line 1 and what the header has instead.
fn header(
    sink: &Sink,
    rdr: &mut csv::Reader<Input>,
    required: &[&'static str],
    optional: &[&'static str],
) -> Result<Vec<Col>> {
    let path = sink.path().to_path_buf();
    let h = rdr.byte_headers().map_err(|e| csv_err(sink, e))?.clone();
    let norm = |s: &[u8]| {
        String::from_utf8_lossy(s)
            .trim()
            .trim_start_matches('\u{feff}')
            .to_ascii_lowercase()
    };
    let names: Vec<String> = h.iter().map(norm).collect();
    let mut cols = Vec::new();
    for (name, req) in required
        .iter()
        .map(|n| (n, true))
        .chain(optional.iter().map(|n| (n, false)))
    {
        let idx = names.iter().position(|h| *h == name.to_ascii_lowercase());
        if idx.is_none() && req {
            // A missing column is never a skippable row.
            return Err(Error::BadInput {
                path,
                problem: format!(
                    "line 1, column '{name}': the header has no such column (found: {}); is this the right format?",
                    crate::input::excerpt(
                        &h.iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<Vec<_>>()
                            .join(", "),
                        200
                    )
                ),
            });
        }
        cols.push(Col { name, idx });
    }
    Ok(cols)
}

fn csv_err(sink: &Sink, e: csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => Error::Io {
            path: sink.path().to_path_buf(),
            source,
        },
        other => Error::BadRow {
            at: sink.at(line, None, None),
            problem: format!("{other:?}"),
        },
    }
}

fn field<'r>(sink: &Sink, rec: &'r ByteRecord, line: u64, col: &Col) -> Result<Option<&'r str>> {
    let Some(i) = col.idx else { return Ok(None) };
    let at = || sink.at(line, Some(i as u64 + 1), Some(col.name));
    let raw = rec.get(i).ok_or_else(|| Error::BadRow {
        at: at(),
        problem: format!(
            "missing: the line has {} fields (truncated line?)",
            rec.len()
        ),
    })?;
    let s = std::str::from_utf8(raw).map_err(|_| Error::BadRow {
        at: at(),
        problem: "not valid UTF-8".into(),
    })?;
    Ok(Some(s.trim()))
}

fn req<'r>(sink: &Sink, rec: &'r ByteRecord, line: u64, col: &Col) -> Result<&'r str> {
    field(sink, rec, line, col)?.ok_or_else(|| Error::BadRow {
        at: sink.at(line, None, Some(col.name)),
        problem: "missing column".into(),
    })
}

fn int(sink: &Sink, rec: &ByteRecord, line: u64, col: &Col) -> Result<i32> {
    let s = req(sink, rec, line, col)?;
    // Some exports write counts as floats ("52.0").
    let v = s.parse::<i64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && f.is_finite())
            .map(|f| f as i64)
    });
    match v {
        Some(v) if (0..=i64::from(i32::MAX)).contains(&v) => Ok(v as i32),
        _ => Err(Error::BadRow {
            at: sink.at(line, col.idx.map(|i| i as u64 + 1), Some(col.name)),
            problem: format!("'{s}' is not a token count (a non-negative integer)"),
        }),
    }
}

fn seconds_ns(sink: &Sink, rec: &ByteRecord, line: u64, col: &Col) -> Result<i64> {
    let s = req(sink, rec, line, col)?;
    if let Ok(v) = s.parse::<i64>()
        && let Some(ns) = v.checked_mul(1_000_000_000)
    {
        return Ok(ns);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v.abs() < 9.0e9 => Ok((v * 1e9).round() as i64),
        _ => Err(Error::BadRow {
            at: sink.at(line, col.idx.map(|i| i as u64 + 1), Some(col.name)),
            problem: format!("'{s}' is not a time in seconds"),
        }),
    }
}

/// Drives the read loop: parse each record with `parse`, hand it to the sink.
fn each_record(
    sink: &mut Sink,
    rdr: &mut csv::Reader<Input>,
    mut parse: impl FnMut(&Sink, &ByteRecord, u64) -> Result<Row>,
) -> Result<()> {
    let mut rec = ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                let err = csv_err(sink, e);
                sink.bad(err)?;
                continue;
            }
        }
        let line = rec.position().map_or(0, |p| p.line());
        // A blank trailing line or a line of empty fields is not a row.
        if rec.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        match parse(sink, &rec, line) {
            Ok(row) => {
                if sink.push(line, row)? == Flow::Stop {
                    return Ok(());
                }
            }
            Err(e) => sink.bad(e)?,
        }
    }
}

/// Imports an Azure LLM inference trace (2023 or 2024 layout).
pub(crate) fn import_azure(sink: &mut Sink) -> Result<()> {
    let mut rdr = open_csv(sink)?;
    let cols = header(
        sink,
        &mut rdr,
        &["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
        &[],
    )?;
    each_record(sink, &mut rdr, |sink, rec, line| {
        let ts = req(sink, rec, line, &cols[0])?;
        let t = parse_datetime_ns(ts).map_err(|e| Error::BadRow {
            at: sink.at(line, cols[0].idx.map(|i| i as u64 + 1), Some(cols[0].name)),
            problem: format!("bad timestamp '{ts}': {e}"),
        })?;
        let prompt = int(sink, rec, line, &cols[1])?;
        let output = int(sink, rec, line, &cols[2])?;
        Ok(Row {
            time_ns: Some(t),
            rec: TraceRecord {
                request_id: format!("{}-{line}", Format::Azure.name()),
                stage: WORKLOAD_STAGE.into(),
                prompt_tokens: Some(prompt),
                max_tokens: Some(output),
                ..TraceRecord::default()
            },
            log_type: None,
        })
    })
}

/// Imports a BurstGPT CSV. Failed requests (`Response tokens` 0) are kept, marked with
/// `error_kind = source_failed` and no `max_tokens`.
pub(crate) fn import_burstgpt(sink: &mut Sink) -> Result<()> {
    let mut rdr = open_csv(sink)?;
    let cols = header(
        sink,
        &mut rdr,
        &["Timestamp", "Model", "Request tokens", "Response tokens"],
        &["Log Type"],
    )?;
    each_record(sink, &mut rdr, |sink, rec, line| {
        let t = seconds_ns(sink, rec, line, &cols[0])?;
        let model = req(sink, rec, line, &cols[1])?.to_string();
        let prompt = int(sink, rec, line, &cols[2])?;
        let output = int(sink, rec, line, &cols[3])?;
        let log_type = field(sink, rec, line, &cols[4])?.map(str::to_string);
        let failed = output == 0;
        Ok(Row {
            time_ns: Some(t),
            rec: TraceRecord {
                request_id: format!("{}-{line}", Format::BurstGpt.name()),
                stage: WORKLOAD_STAGE.into(),
                prompt_tokens: Some(prompt),
                max_tokens: (!failed).then_some(output),
                model: Some(model),
                error_kind: failed.then_some(ErrorKind::SourceFailed),
                error_msg: failed
                    .then(|| "failed in the source trace (Response tokens = 0)".to_string()),
                ..TraceRecord::default()
            },
            log_type,
        })
    })
}
