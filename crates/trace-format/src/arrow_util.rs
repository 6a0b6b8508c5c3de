//! Small typed accessors over record batches, for callers that read a few columns without
//! decoding whole [`crate::TraceRecord`]s (inspect, summaries).

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};

use crate::{Error, Result};

fn missing(column: &str, problem: &str) -> Error {
    Error::Arrow {
        context: format!("column '{column}'"),
        source: arrow_schema::ArrowError::SchemaError(problem.into()),
    }
}

/// The values of a utf8 column, None for nulls.
pub fn string_values<'a>(batch: &'a RecordBatch, column: &str) -> Result<Vec<Option<&'a str>>> {
    let a = batch
        .column_by_name(column)
        .ok_or_else(|| missing(column, "is missing"))?;
    let a = a
        .as_string_opt::<i32>()
        .ok_or_else(|| missing(column, "is not utf8"))?;
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}
