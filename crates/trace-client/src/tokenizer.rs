//! Hugging Face `tokenizer.json` support: counting output tokens when the server sends no
//! usage, and building random prompts of an exact token length.

use std::path::{Path, PathBuf};

use rand::Rng;

use crate::Error;

/// A loaded Hugging Face tokenizer plus the ids random prompts draw from (the vocabulary
/// without special/added tokens).
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    sample_ids: Vec<u32>,
    path: PathBuf,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("path", &self.path)
            .field("vocab", &self.sample_ids.len())
            .finish()
    }
}

impl HfTokenizer {
    /// Loads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let mut sample_ids: Vec<u32> = {
            let added = inner.get_added_tokens_decoder();
            inner
                .get_vocab(false)
                .into_values()
                .filter(|id| !added.contains_key(id))
                .collect()
        };
        // HashMap order is random; sort so a seeded rng gives the same prompt everywhere.
        sample_ids.sort_unstable();
        if sample_ids.is_empty() {
            return Err(Error::Tokenizer {
                path: path.to_path_buf(),
                msg: "vocabulary has no ordinary tokens".into(),
            });
        }
        Ok(Self {
            inner,
            sample_ids,
            path: path.to_path_buf(),
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tokens in `text`, without special tokens added.
    pub fn count(&self, text: &str) -> Result<usize, Error> {
        self.encode(text).map(|ids| ids.len())
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        self.inner
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: e.to_string(),
            })
    }

    pub(crate) fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            msg: e.to_string(),
        })
    }
}

/// Builds a prompt of `n_tokens` random ordinary tokens and returns it with its token count.
///
/// Decoding random ids and re-encoding the text can merge or split tokens with BPE vocabularies,
/// so the text is re-encoded and corrected a few times (as vLLM's random dataset does); the
/// returned count is the re-encoded length, exact for word-level tokenizers such as the
/// project's `traces/tokenizer.json`.
pub fn random_prompt<R: Rng + ?Sized>(
    tokenizer: &HfTokenizer,
    n_tokens: usize,
    rng: &mut R,
) -> Result<(String, i32), Error> {
    let pool = &tokenizer.sample_ids;
    let mut ids: Vec<u32> = (0..n_tokens)
        .map(|_| pool[rng.random_range(0..pool.len())])
        .collect();
    let mut text = tokenizer.decode(&ids)?;
    for _ in 0..8 {
        let enc = tokenizer.encode(&text)?;
        if enc.len() == n_tokens {
            break;
        }
        ids = enc;
        if ids.len() > n_tokens {
            ids.truncate(n_tokens);
        } else {
            ids.extend((ids.len()..n_tokens).map(|_| pool[rng.random_range(0..pool.len())]));
        }
        text = tokenizer.decode(&ids)?;
    }
    let n = tokenizer.count(&text)?;
    Ok((text, i32::try_from(n).unwrap_or(i32::MAX)))
}

/// The JSON of the project's test tokenizer: a WordLevel model over `w0..w4095` (ids 4..4099)
/// after the specials `<unk>`, `<s>`, `</s>`, `<pad>` (ids 0..3), split on whitespace.
/// `traces/tokenizer.json` is this, written by the ignored test `regen_tokenizer`.
pub fn word_level_tokenizer_json(words: usize) -> serde_json::Value {
    let specials = ["<unk>", "<s>", "</s>", "<pad>"];
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, s) in specials.iter().enumerate() {
        vocab.insert((*s).to_string(), i.into());
        added.push(serde_json::json!({
            "id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true
        }));
    }
    for w in 0..words {
        vocab.insert(format!("w{w}"), (w + specials.len()).into());
    }
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}
