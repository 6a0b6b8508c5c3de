//! ShareGPT conversations as a workload, the way vLLM's loader reads them: the first human
//! turn is the prompt, the reply after it gives the output length. The file is one JSON array;
//! it is visited element by element (a serde `SeqAccess`), never held whole.

use std::fmt;
use std::fs::File;
use std::io::BufReader;

use serde::Deserialize;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use trace_format::TraceRecord;

use crate::WORKLOAD_STAGE;
use crate::error::{Error, Result};
use crate::jsonl::json_problem;
use crate::sink::{Flow, Row, Sink};

#[derive(Deserialize)]
struct Conversation {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    #[serde(default)]
    from: String,
    #[serde(default)]
    value: String,
}

fn is_human(from: &str) -> bool {
    matches!(from.to_ascii_lowercase().as_str(), "human" | "user")
}

/// Length in whitespace-separated words: the unit when no tokenizer is given.
pub(crate) fn words(s: &str) -> i32 {
    i32::try_from(s.split_whitespace().count()).unwrap_or(i32::MAX)
}

struct Elements<'a> {
    sink: &'a mut Sink,
    /// The sink's error, carried out through serde's error type.
    failed: Option<Error>,
    /// The limit was reached: the rest of the array is left unread on purpose.
    stopped: bool,
}

impl<'de> Visitor<'de> for &mut Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of ShareGPT conversations")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0u64;
        while let Some(c) = seq.next_element::<Conversation>()? {
            index += 1;
            let turns = &c.conversations;
            let Some(h) = turns.iter().position(|t| is_human(&t.from)) else {
                self.sink.exclude();
                continue;
            };
            let Some(reply) = turns.get(h + 1) else {
                self.sink.exclude();
                continue;
            };
            let prompt = turns[h].value.clone();
            let request_id = match &c.id {
                Some(serde_json::Value::String(s)) => format!("sharegpt-{s}"),
                Some(v) if !v.is_null() => format!("sharegpt-{v}"),
                _ => format!("sharegpt-{index}"),
            };
            let rec = TraceRecord {
                request_id,
                stage: WORKLOAD_STAGE.into(),
                prompt_tokens: Some(words(&prompt)),
                max_tokens: Some(words(&reply.value).max(1)),
                prompt_hash: Some(xxhash_rust::xxh3::xxh3_64(prompt.as_bytes())),
                prompt: Some(prompt),
                ..TraceRecord::default()
            };
            match self.sink.push(
                index,
                Row {
                    time_ns: None,
                    rec,
                    log_type: None,
                },
            ) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => {
                    self.stopped = true;
                    return Err(serde::de::Error::custom("limit reached"));
                }
                Err(e) => {
                    self.failed = Some(e);
                    return Err(serde::de::Error::custom("stopped"));
                }
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for &mut Elements<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

/// Imports a ShareGPT JSON file. Lengths are in words (no tokenizer here).
pub(crate) fn import_sharegpt(sink: &mut Sink) -> Result<()> {
    let path = sink.path().to_path_buf();
    let file = File::open(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 20, file));
    let mut el = Elements {
        sink,
        failed: None,
        stopped: false,
    };
    let res = (&mut el).deserialize(&mut de);
    if let Some(e) = el.failed {
        return Err(e);
    }
    if el.stopped {
        return Ok(());
    }
    res.and_then(|()| de.end()).map_err(|e| bad_json(&path, &e))
}

fn bad_json(path: &std::path::Path, e: &serde_json::Error) -> Error {
    let (problem, col) = json_problem(e);
    // A syntax error in one conversation breaks the array: it cannot be skipped.
    Error::BadInput {
        path: path.to_path_buf(),
        problem: format!("line {}, column {col}: {problem}", e.line()),
    }
}
