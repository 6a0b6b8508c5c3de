//! [`each_element`]: a top-level JSON array read element by element (a serde `SeqAccess`), never
//! held whole: ShareGPT files and JSON prompt datasets are hundreds of megabytes. A malformed
//! file is an error naming the file, the entry, the line and the column.

use std::marker::PhantomData;
use std::path::Path;

use serde::de::{DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};

use crate::error::{Error, Result};
use crate::jsonl::json_problem;
use crate::sharegpt::Next;

struct Elements<'a, T, F> {
    each: &'a mut F,
    /// Elements read so far.
    count: u64,
    /// The callback's error, carried out through serde's error type.
    failed: Option<Error>,
    /// The callback asked to stop: the rest of the array is left unread on purpose.
    stopped: bool,
    /// The top-level array was entered: errors from here on sit in an entry.
    in_array: bool,
    element: PhantomData<T>,
}

impl<'de, T: DeserializeOwned, F: FnMut(u64, T) -> Result<Next>> Visitor<'de>
    for &mut Elements<'_, T, F>
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.in_array = true;
        while let Some(el) = seq.next_element::<T>()? {
            let index = self.count;
            self.count += 1;
            match (self.each)(index, el) {
                Ok(Next::Continue) => {}
                Ok(Next::Stop) => {
                    self.stopped = true;
                    return Err(serde::de::Error::custom("stopped"));
                }
                Err(e) => {
                    self.failed = Some(e);
                    return Err(serde::de::Error::custom("failed"));
                }
            }
        }
        Ok(())
    }
}

impl<'de, T: DeserializeOwned, F: FnMut(u64, T) -> Result<Next>> DeserializeSeed<'de>
    for &mut Elements<'_, T, F>
{
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

/// Calls `each` with every element of the JSON array in `path` and its 0-based index, in
/// order, until it says stop; returns how many elements were read.
pub(crate) fn each_element<T: DeserializeOwned>(
    path: &Path,
    mut each: impl FnMut(u64, T) -> Result<Next>,
) -> Result<u64> {
    let mut de = serde_json::Deserializer::from_reader(crate::input::open_document(path)?);
    let mut el = Elements {
        each: &mut each,
        count: 0,
        failed: None,
        stopped: false,
        in_array: false,
        element: PhantomData,
    };
    let res = (&mut el).deserialize(&mut de);
    if let Some(e) = el.failed {
        return Err(e);
    }
    if el.stopped {
        return Ok(el.count);
    }
    let (count, in_array) = (el.count, el.in_array);
    res.and_then(|()| de.end()).map_err(|e| {
        let (problem, col) = json_problem(&e);
        let entry = if in_array {
            format!("entry {count}, ")
        } else {
            String::new()
        };
        Error::BadInput {
            path: path.to_path_buf(),
            problem: format!("{entry}line {}, column {col}: {problem}", e.line()),
        }
    })?;
    Ok(count)
}
