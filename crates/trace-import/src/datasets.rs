//! Prompt datasets (`trace replay jsonl=FILE` and `json=FILE`): one prompt per JSON record, at a
//! dotted `--prompt-field`, else where the EvalScope datasets keep it as published
//! (open_qa.jsonl's `question`; LongAlpaca-12k.json's `instruction` followed by its `input`),
//! else `prompt` or `text`. JSON lines are read line by line, a JSON array element by element:
//! neither is held whole. A record without the field is an error naming the file, the line (or
//! the array entry) and the field.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::sharegpt::Next;
use crate::sink::Flow;

/// How a dataset file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// One JSON object per line.
    Jsonl,
    /// One JSON array of objects.
    Json,
}

/// One prompt of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetPrompt {
    /// The record's position, 0-based.
    pub index: u64,
    /// The prompt text.
    pub text: String,
}

/// The fields read when no `--prompt-field` is given, in order; `instruction` takes its
/// record's `input` after it when that is not empty (LongAlpaca, Alpaca).
const DEFAULT_FIELDS: [&str; 4] = ["question", "instruction", "prompt", "text"];

/// The prompt of one record, or why there is none.
fn prompt_of(v: &Value, field: Option<&str>) -> std::result::Result<String, String> {
    if let Some(f) = field {
        return match trace_format::json_at(v, f) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Err(format!("no field '{f}'")),
            Some(other) => Err(format!("field '{f}' is not a string: {other}")),
        };
    }
    let Some(obj) = v.as_object() else {
        return Err("the record is not a JSON object".into());
    };
    let Some((key, s)) = DEFAULT_FIELDS
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str).map(|s| (*k, s)))
    else {
        return Err(format!(
            "none of the fields {} holds a string; give --prompt-field",
            DEFAULT_FIELDS.join(", ")
        ));
    };
    let input = obj.get("input").and_then(Value::as_str).unwrap_or("");
    Ok(if key == "instruction" && !input.trim().is_empty() {
        format!("{s}\n{input}")
    } else {
        s.to_string()
    })
}

/// Streams the prompts of a dataset file in order, until `each` says stop. Records whose
/// prompt is empty are skipped; the count of those is returned.
pub fn read_prompts(
    path: &Path,
    kind: DatasetKind,
    field: Option<&str>,
    mut each: impl FnMut(DatasetPrompt) -> Result<Next>,
) -> Result<u64> {
    let mut skipped = 0;
    let mut index = 0;
    let mut take = |v: &Value, at: &str| -> Result<Next> {
        let text = prompt_of(v, field).map_err(|problem| Error::BadInput {
            path: path.to_path_buf(),
            problem: format!("{at}: {problem}"),
        })?;
        let i = index;
        index += 1;
        if text.trim().is_empty() {
            skipped += 1;
            return Ok(Next::Continue);
        }
        each(DatasetPrompt { index: i, text })
    };
    match kind {
        DatasetKind::Json => {
            crate::array::each_element(path, |i, v: Value| take(&v, &format!("entry {i}")))?;
        }
        DatasetKind::Jsonl => crate::jsonl::lines(path, |l, line| {
            let v: Value = serde_json::from_slice(l).map_err(|e| {
                let (problem, col) = crate::jsonl::json_problem(&e);
                Error::BadInput {
                    path: path.to_path_buf(),
                    problem: format!("line {line}, column {col}: {problem}"),
                }
            })?;
            Ok(match take(&v, &format!("line {line}"))? {
                Next::Continue => Flow::Continue,
                Next::Stop => Flow::Stop,
            })
        })?,
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(kind: DatasetKind, body: &str, field: Option<&str>) -> Result<Vec<String>> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("d.json");
        std::fs::write(&p, body).unwrap();
        let mut out = Vec::new();
        read_prompts(&p, kind, field, |pr| {
            out.push(pr.text);
            Ok(Next::Continue)
        })?;
        Ok(out)
    }

    #[test]
    fn the_published_layouts_read_without_a_field() {
        // open_qa.jsonl: a question per line.
        let got = read(
            DatasetKind::Jsonl,
            "{\"question\": \"Why is the sky blue?\", \"answer\": \"x\"}\n\n{\"question\": \"2+2?\"}\n",
            None,
        )
        .unwrap();
        assert_eq!(got, ["Why is the sky blue?", "2+2?"]);
        // LongAlpaca: instruction, then input when there is one.
        let got = read(
            DatasetKind::Json,
            r#"[{"instruction": "Summarise.", "input": "A long paper.", "output": "x"},
                {"instruction": "Say hi.", "input": ""}]"#,
            None,
        )
        .unwrap();
        assert_eq!(got, ["Summarise.\nA long paper.", "Say hi."]);
    }

    #[test]
    fn a_dotted_field_and_errors_that_name_the_place() {
        let body = "{\"m\": [{\"content\": \"a\"}]}\n{\"m\": []}\n";
        let e = read(DatasetKind::Jsonl, body, Some("m.0.content"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("d.json") && e.contains("line 2") && e.contains("'m.0.content'"),
            "{e}"
        );
        let got = read(
            DatasetKind::Jsonl,
            "{\"m\": [{\"content\": \"a\"}]}\n",
            Some("m.0.content"),
        );
        assert_eq!(got.unwrap(), ["a"]);
        let e = read(DatasetKind::Json, r#"[{"q": 1}]"#, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 0") && e.contains("--prompt-field"), "{e}");
        let e = read(DatasetKind::Jsonl, "{\"question\": \"a\"}\n{oops\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, column"), "{e}");
        let e = read(DatasetKind::Json, "[{\"question\": \"a\"}, {", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 1"), "{e}");
    }
}
