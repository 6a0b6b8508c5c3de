//! ShareGPT conversations: the one reader of `trace`. Both `trace import sharegpt` and `trace
//! replay sharegpt=FILE` read files through [`read_sharegpt`], so the two send the same workload.
//!
//! As vLLM's loader: the first human turn (role `human` or `user`, any case) is the prompt, and
//! the turn after it gives the output length; lengths are whitespace words when no tokenizer is
//! used. Each later human turn followed by a reply is one more turn of the conversation:
//! [`ShareGptItem::records`] makes a conversation one session (every turn a row, each after the
//! one before), or its first turn alone as vLLM sends it. The file is one JSON array, visited
//! element by element (a serde `SeqAccess`), never held whole.

use std::path::Path;

use serde::Deserialize;
use trace_format::TraceRecord;

use crate::WORKLOAD_STAGE;
use crate::error::Result;
use crate::sink::{Flow, Row, Sink};

/// One usable conversation of a ShareGPT file.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareGptItem {
    /// Position in the file's array, 0-based.
    pub index: u64,
    /// The conversation's `id` as given (a number as its text), else `sharegpt-{index}`.
    pub request_id: String,
    /// The first human turn.
    pub prompt: String,
    /// The prompt's length in whitespace words.
    pub prompt_words: u32,
    /// The reply's length in whitespace words: the output length.
    pub reply_words: u32,
    /// The reply's text (the recorded history of the next turn).
    pub reply: String,
    /// The conversation's later turns, in order, up to the first without a reply.
    pub later: Vec<ShareGptTurn>,
}

/// A later turn of a ShareGPT conversation: a human message and the reply to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareGptTurn {
    /// The human message.
    pub prompt: String,
    /// Its length in whitespace words.
    pub prompt_words: u32,
    /// The reply.
    pub reply: String,
    /// Its length in whitespace words.
    pub reply_words: u32,
}

impl ShareGptItem {
    /// The conversation's rows: with `all_turns`, one per turn, as a session (`session_id` the
    /// conversation's id, turn k's id `<id>-t<k>` after turn k-1, its `prompt` the new human
    /// message and its `prompt_tokens` the whole conversation so far, each reply kept as the
    /// `output_text` the next turn's recorded history resends); else the first turn alone, a
    /// plain request (vLLM's reading).
    pub fn records(self, all_turns: bool) -> Vec<TraceRecord> {
        let id = self.request_id;
        let mut turns = vec![ShareGptTurn {
            prompt: self.prompt,
            prompt_words: self.prompt_words,
            reply: self.reply,
            reply_words: self.reply_words,
        }];
        if all_turns {
            turns.extend(self.later);
        }
        let name = |k: usize| match k {
            0 => id.clone(),
            k => format!("{id}-t{k}"),
        };
        let words = |w: u32| i32::try_from(w).unwrap_or(i32::MAX);
        let mut out: Vec<TraceRecord> = Vec::with_capacity(turns.len());
        let mut context = 0i32;
        let mut reply: Option<String> = None;
        for (k, t) in turns.into_iter().enumerate() {
            let prompt_tokens = context.saturating_add(words(t.prompt_words));
            context = prompt_tokens.saturating_add(words(t.reply_words));
            // Only a turn followed by another needs its reply kept.
            if let (Some(prev), Some(r)) = (out.last_mut(), reply.take()) {
                prev.output_text = Some(r);
            }
            out.push(TraceRecord {
                request_id: name(k),
                stage: WORKLOAD_STAGE.into(),
                prompt_tokens: Some(prompt_tokens),
                max_tokens: Some(words(t.reply_words)),
                prompt_hash: Some(xxhash_rust::xxh3::xxh3_64(t.prompt.as_bytes())),
                prompt: Some(t.prompt),
                parent_id: (k > 0).then(|| name(k - 1)),
                session_id: all_turns.then(|| id.clone()),
                turn: all_turns.then_some(k as i32),
                ..TraceRecord::default()
            });
            reply = Some(t.reply);
        }
        out
    }
}

/// What [`read_sharegpt`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareGptStats {
    /// Conversations read (usable or not).
    pub conversations: u64,
    /// Conversations without a human turn followed by a non-empty reply.
    pub skipped: u64,
}

/// Whether the reader should go on after an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the next conversation.
    Continue,
    /// Stop here; the rest of the file is left unread.
    Stop,
}

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
    from.eq_ignore_ascii_case("human") || from.eq_ignore_ascii_case("user")
}

/// Length in whitespace-separated words: the unit when no tokenizer is given.
pub fn words(s: &str) -> u32 {
    u32::try_from(s.split_whitespace().count()).unwrap_or(u32::MAX)
}

fn item(index: u64, c: Conversation) -> Option<ShareGptItem> {
    let turns = c.conversations;
    let h = turns.iter().position(|t| is_human(&t.from))?;
    let reply = turns.get(h + 1)?;
    let (prompt_words, reply_words) = (words(&turns[h].value), words(&reply.value));
    if prompt_words == 0 || reply_words == 0 {
        return None;
    }
    let request_id = match c.id {
        Some(serde_json::Value::String(s)) => s,
        Some(v) if !v.is_null() => v.to_string(),
        _ => format!("sharegpt-{index}"),
    };
    let mut turns = turns;
    // Later turns: a human message and the reply after it, up to the first pair that is not.
    let mut later = Vec::new();
    let mut i = h + 2;
    while i + 1 < turns.len() && is_human(&turns[i].from) && !is_human(&turns[i + 1].from) {
        let (p, r) = (words(&turns[i].value), words(&turns[i + 1].value));
        if p == 0 || r == 0 {
            break;
        }
        later.push(ShareGptTurn {
            prompt: std::mem::take(&mut turns[i].value),
            prompt_words: p,
            reply: std::mem::take(&mut turns[i + 1].value),
            reply_words: r,
        });
        i += 2;
    }
    Some(ShareGptItem {
        index,
        request_id,
        prompt: std::mem::take(&mut turns[h].value),
        prompt_words,
        reply: std::mem::take(&mut turns[h + 1].value),
        reply_words,
        later,
    })
}

/// Streams the ShareGPT file at `path`, calling `each` for every usable conversation in order.
/// A malformed file is an error naming the file, the entry, the line and the column (a syntax
/// error breaks the array: it cannot be skipped).
pub fn read_sharegpt(
    path: &Path,
    mut each: impl FnMut(ShareGptItem) -> Result<Next>,
) -> Result<ShareGptStats> {
    let mut stats = ShareGptStats::default();
    crate::array::each_element(path, |index, c: Conversation| {
        stats.conversations += 1;
        match item(index, c) {
            Some(it) => each(it),
            None => {
                stats.skipped += 1;
                Ok(Next::Continue)
            }
        }
    })?;
    Ok(stats)
}

/// Imports a ShareGPT JSON file. Lengths are in words (no tokenizer here).
pub(crate) fn import_sharegpt(sink: &mut Sink) -> Result<()> {
    let path = sink.path().to_path_buf();
    let all_turns = !sink.config().sharegpt_first_turn;
    let stats = read_sharegpt(&path, |it| {
        let line = it.index + 1;
        for rec in it.records(all_turns) {
            let row = Row {
                time_ns: None,
                rec,
                log_type: None,
            };
            if sink.push(line, row)? == Flow::Stop {
                return Ok(Next::Stop);
            }
        }
        Ok(Next::Continue)
    })?;
    for _ in 0..stats.skipped {
        sink.exclude();
    }
    Ok(())
}
