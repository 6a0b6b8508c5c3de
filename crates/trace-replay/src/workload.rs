//! Workloads: what each request asks for. `random` (exact or ranged synthetic lengths),
//! `sharegpt=FILE` (the first human turn and the length of its reply, through trace-import's
//! one ShareGPT reader) and a trace file
//! (`.parquet`, its request ids, prompts or prompt lengths, output caps and recorded timeline).
//!
//! Items are produced on demand by index ([`Workload::item`]), so a run of a million synthetic
//! requests holds no prompt it is not sending.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use trace_client::HfTokenizer;

use trace_client::Message;

use crate::Error;
use crate::prompts::Vocab;
use crate::session::{self, History, Linked, RowLinks, Session, SessionOptions};

/// Tokens per `hash_ids` block when rebuilding prefix-sharing prompts (Mooncake's block size).
pub const HASH_BLOCK_TOKENS: u32 = 512;

/// One request of a workload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkItem {
    /// Stable id, kept from the source so runs pair up.
    pub request_id: String,
    /// Prompt text. Synthetic prompts are words `w<k>` the simulator counts as one token each.
    pub prompt: String,
    /// Prompt length in tokens, as the workload defines it.
    pub prompt_tokens: u32,
    /// Requested output cap; None sends no cap, as a recorded request that set none.
    pub max_tokens: Option<u32>,
    /// Prompt block hashes from the source trace, if any.
    pub hash_ids: Vec<u64>,
    /// Previous turn's request id, if any.
    pub parent_id: Option<String>,
    /// The session this turn belongs to (session workloads).
    pub session_id: Option<String>,
    /// The turn's number in its session, 0-based.
    pub turn: Option<u32>,
    /// The think time applied before this turn, set when it is scheduled.
    pub think_ns: Option<i64>,
    /// The messages before this turn's own (`prompt`): a session's history. Empty: the prompt is
    /// sent alone.
    pub history: Arc<Vec<Message>>,
    /// Keep the streamed reply for the next turn (live history).
    pub keep_output: bool,
}

/// One turn of a [`SessionWork`].
#[derive(Debug, Clone, PartialEq)]
pub struct TurnWork {
    /// What to send, but for `history` and `think_ns`, set when the turn is scheduled. `prompt`
    /// is the turn's own new input, or its whole prompt when `whole_prompt`.
    pub item: WorkItem,
    /// The prompt is the whole recorded prompt (`hash_ids` blocks): no history goes before it.
    pub whole_prompt: bool,
    /// The parent turn (index into the session's turns).
    pub parent: Option<usize>,
    /// Turns sent once this one ends.
    pub children: Vec<usize>,
    /// Recorded think time before this turn (after its parent ended), unscaled.
    pub think_ns: Option<i64>,
    /// Recorded gap from the parent's send to this one's, used when the think time is unknown.
    pub gap_ns: Option<i64>,
    /// The recorded reply (stored text, else synthetic of the recorded length), for recorded
    /// history; empty for turns without children.
    pub recorded_reply: String,
}

/// One session to send: its turns, the root first, parents before children.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionWork {
    /// The session id (with a lap suffix when the workload cycles).
    pub id: String,
    /// The turns.
    pub turns: Vec<TurnWork>,
}

/// What a stage releases at each arrival.
#[derive(Debug, Clone, PartialEq)]
pub enum Unit {
    /// One request.
    Request(WorkItem),
    /// One session, its first turn at the arrival.
    Session(SessionWork),
}

/// Settings of the `random` workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RandomSpec {
    /// Prompt length in tokens.
    pub input_len: u32,
    /// Output cap in tokens.
    pub output_len: u32,
    /// 1.0 for exact lengths; r < 1 samples each length uniformly in `[r*len, len]`.
    pub range_ratio: f64,
}

impl Default for RandomSpec {
    fn default() -> Self {
        Self {
            input_len: 1024,
            output_len: 128,
            range_ratio: 1.0,
        }
    }
}

/// A prompt dataset (`jsonl=FILE`, `json=FILE`): one prompt per record.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// The file.
    pub path: PathBuf,
    /// JSON lines or one JSON array.
    pub kind: trace_import::datasets::DatasetKind,
    /// Dotted path to the prompt in each record; None: the published layouts' fields.
    pub field: Option<String>,
    /// Leave out prompts shorter than this many tokens.
    pub min_tokens: Option<u32>,
    /// Leave out prompts longer than this many tokens.
    pub max_tokens: Option<u32>,
    /// Counts prompt tokens for the bounds (`--tokenizer`); None: whitespace words.
    pub tokenizer: Option<PathBuf>,
    /// Output cap of every request (`--output-len`).
    pub output_len: u32,
}

/// Which workload to replay, before it is loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadSpec {
    /// Synthetic prompts of given lengths.
    Random(RandomSpec),
    /// A ShareGPT JSON file.
    ShareGpt(PathBuf),
    /// A prompt dataset.
    Dataset(DatasetSpec),
    /// A trace file (.parquet).
    Trace(PathBuf),
}

impl WorkloadSpec {
    /// The file the workload is read from, if any.
    pub fn input_path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Random(_) => None,
            Self::ShareGpt(p) | Self::Trace(p) => Some(p),
            Self::Dataset(d) => Some(&d.path),
        }
    }

    /// Parses the positional WORKLOAD argument: `random`, `sharegpt=FILE`, `jsonl=FILE`,
    /// `json=FILE` or a `.parquet` path. Lengths of `random` come from `random` (the
    /// `--input-len`... flags), as does a dataset's output cap.
    pub fn parse(s: &str, random: RandomSpec) -> Result<Self, Error> {
        use trace_import::datasets::DatasetKind;
        if s == "random" {
            return Ok(Self::Random(random));
        }
        for (prefix, kind) in [("jsonl=", DatasetKind::Jsonl), ("json=", DatasetKind::Json)] {
            if let Some(f) = s.strip_prefix(prefix) {
                if f.is_empty() {
                    return Err(Error::Config(format!(
                        "invalid workload '{s}': missing file"
                    )));
                }
                return Ok(Self::Dataset(DatasetSpec {
                    path: f.into(),
                    kind,
                    field: None,
                    min_tokens: None,
                    max_tokens: None,
                    tokenizer: None,
                    output_len: random.output_len,
                }));
            }
        }
        if let Some(f) = s.strip_prefix("sharegpt=") {
            if f.is_empty() {
                return Err(Error::Config(
                    "invalid workload 'sharegpt=': missing file".into(),
                ));
            }
            return Ok(Self::ShareGpt(f.into()));
        }
        if s.ends_with(".parquet") || s.ends_with(".parquet.partial") || Path::new(s).is_dir() {
            return Ok(Self::Trace(s.into()));
        }
        Err(Error::Config(format!(
            "invalid workload '{s}': expected 'random', 'sharegpt=FILE', 'jsonl=FILE', \
             'json=FILE' or a .parquet trace"
        )))
    }
}

#[derive(Debug, Clone)]
enum Source {
    Random(RandomSpec),
    /// A trace's rows; prompts without stored text are made on demand.
    Trace(Arc<Vec<TraceItem>>),
}

/// One row of a trace workload, before its prompt is made.
#[derive(Debug, Clone)]
struct TraceItem {
    item: WorkItem,
    /// The prompt text was stored in the trace (else it is made from the length and hashes).
    stored: bool,
    /// Row index, for the item's RNG stream.
    index: u64,
    /// Recorded send time, ns.
    scheduled_ns: i64,
    /// Recorded think time before this turn.
    think_ns: Option<i64>,
    /// Recorded reply length in tokens (`output_tokens`, else `max_tokens`).
    reply_tokens: u32,
    /// Recorded reply text, when stored.
    reply_text: Option<String>,
}

/// How synthetic prompts are made: `tokens` long to the server.
#[derive(Debug, Clone, Default)]
pub struct PromptMaker {
    /// Words calibrated to be one token each to the server; None: `w<k>` words (one token each
    /// on a word-level vocabulary like the simulator's, several on a BPE one).
    pub vocab: Option<Arc<Vocab>>,
    /// A local tokenizer for random prompts (`--tokenizer`).
    pub tokenizer: Option<Arc<HfTokenizer>>,
    /// Tokens the server's template adds to every prompt; synthetic content is that much shorter,
    /// so the server prefills the asked length.
    pub template_tokens: u32,
}

impl PromptMaker {
    fn content(&self, tokens: u32) -> u32 {
        tokens.saturating_sub(self.template_tokens).max(1)
    }

    /// A random prompt of `tokens` tokens (template included), unique to `i`.
    /// Calibrated words come first, so two engines with one tokenizer (one through its
    /// `/tokenize`, one through `--tokenizer`) get the same prompts.
    pub(crate) fn random(&self, rng: &mut ChaCha8Rng, i: u64, tokens: u32) -> String {
        self.words(rng, i, self.content(tokens))
    }

    /// Text of exactly `tokens` tokens, no template allowance: a turn's new input or a
    /// recorded reply inside a conversation whose template was counted at its first turn.
    fn words(&self, rng: &mut ChaCha8Rng, i: u64, tokens: u32) -> String {
        let n = tokens.max(1);
        if let Some(v) = &self.vocab {
            return v.random(rng, i, n);
        }
        if let Some(t) = &self.tokenizer
            && let Ok((text, _)) = trace_client::random_prompt(t, n as usize, rng)
        {
            return text;
        }
        synthetic_prompt(rng, i, n)
    }

    /// A prompt of `tokens` tokens built from `hash_ids` blocks of `block` tokens.
    fn blocks(&self, hash_ids: &[u64], block: u32, tokens: u32) -> String {
        let n = self.content(tokens);
        match &self.vocab {
            Some(v) => v.blocks(hash_ids, block, n),
            None => hashed_prompt(hash_ids, block, n),
        }
    }
}

/// A loaded workload. Cloning is cheap (items are shared).
#[derive(Debug, Clone)]
pub struct Workload {
    source: Source,
    seed: u64,
    timeline_ns: Option<Arc<Vec<i64>>>,
    spec_json: serde_json::Value,
    prompts: PromptMaker,
    id_prefix: Option<String>,
    /// Sessions of a trace workload (replayed closed-loop), when it has any.
    sessions: Option<Arc<Vec<Session>>>,
    /// Rows left out for bad session links (`skip_bad`).
    skipped: Vec<String>,
    history: History,
    /// Tokens per `hash_ids` block.
    block_tokens: u32,
}

impl Workload {
    /// Loads a workload. `seed` drives synthetic prompts and lengths; `sessions` says how a
    /// trace's sessions are read.
    pub fn load(spec: &WorkloadSpec, seed: u64, sessions: &SessionOptions) -> Result<Self, Error> {
        match spec {
            WorkloadSpec::Random(r) => Self::random(*r, seed),
            WorkloadSpec::ShareGpt(p) => Self::sharegpt(p, seed, sessions),
            WorkloadSpec::Dataset(d) => Self::dataset(d, seed),
            WorkloadSpec::Trace(p) => Self::trace(p, seed, sessions),
        }
    }

    fn with_source(source: Source, seed: u64, spec_json: serde_json::Value) -> Self {
        Self {
            source,
            seed,
            timeline_ns: None,
            spec_json,
            prompts: PromptMaker::default(),
            id_prefix: None,
            sessions: None,
            skipped: Vec::new(),
            history: History::Recorded,
            block_tokens: HASH_BLOCK_TOKENS,
        }
    }

    /// The synthetic `random` workload.
    pub fn random(spec: RandomSpec, seed: u64) -> Result<Self, Error> {
        if spec.input_len == 0 || spec.output_len == 0 {
            return Err(Error::Config(format!(
                "invalid random lengths input {} output {}: must be >= 1",
                spec.input_len, spec.output_len
            )));
        }
        if !(spec.range_ratio > 0.0 && spec.range_ratio <= 1.0) {
            return Err(Error::Config(format!(
                "invalid range ratio '{}': must be in (0, 1]",
                spec.range_ratio
            )));
        }
        Ok(Self::with_source(
            Source::Random(spec),
            seed,
            serde_json::json!({"kind": "random", "input_len": spec.input_len,
                "output_len": spec.output_len, "range_ratio": spec.range_ratio}),
        ))
    }

    /// A ShareGPT file, read by trace-import's one reader into the rows `trace import sharegpt`
    /// writes ([`trace_import::ShareGptItem::records`]): each conversation a session of its
    /// turns, or with `sessions.sharegpt_first_turn` its first turn alone (vLLM's reading: the
    /// first human turn is the prompt and the reply's length in words the output cap).
    /// Conversations without a reply are skipped. The file has no timing: arrivals come from
    /// `--rate`.
    pub fn sharegpt(path: &Path, seed: u64, sessions: &SessionOptions) -> Result<Self, Error> {
        let mut recs = Vec::new();
        trace_import::read_sharegpt(path, |it| {
            recs.extend(it.records(!sessions.sharegpt_first_turn));
            Ok(trace_import::Next::Continue)
        })?;
        if recs.is_empty() {
            return Err(Error::Workload {
                path: path.to_path_buf(),
                problem: "no conversation with a human turn followed by a reply".into(),
            });
        }
        let mut w = Self::from_records(path, recs, seed, sessions, false)?;
        w.spec_json = serde_json::json!({"kind": "sharegpt", "file": path.display().to_string(),
            "turns": if sessions.sharegpt_first_turn { "first" } else { "all" }});
        Ok(w)
    }

    /// A prompt dataset: every record's prompt (within the length bounds, in tokens by the
    /// tokenizer when given, else whitespace words) with the dataset's output cap; ids
    /// `<kind>-<record index>`, so runs of one dataset pair up. No timing: arrivals come from
    /// `--rate`, or all at once in a concurrency sweep.
    pub fn dataset(spec: &DatasetSpec, seed: u64) -> Result<Self, Error> {
        use trace_import::datasets::DatasetKind;
        let tokenizer = spec
            .tokenizer
            .as_deref()
            .map(HfTokenizer::load)
            .transpose()?;
        let count = |t: &str| -> u32 {
            let n = match &tokenizer {
                Some(tk) => tk.count(t).unwrap_or(0),
                None => t.split_whitespace().count(),
            };
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        let name = match spec.kind {
            DatasetKind::Jsonl => "jsonl",
            DatasetKind::Json => "json",
        };
        let (mut recs, mut outside) = (Vec::new(), 0u64);
        let empty = trace_import::datasets::read_prompts(
            &spec.path,
            spec.kind,
            spec.field.as_deref(),
            |p| {
                let n = count(&p.text);
                if spec.min_tokens.is_some_and(|m| n < m) || spec.max_tokens.is_some_and(|m| n > m)
                {
                    outside += 1;
                    return Ok(trace_import::Next::Continue);
                }
                recs.push(trace_format::TraceRecord {
                    request_id: format!("{name}-{}", p.index),
                    prompt_tokens: i32::try_from(n).ok(),
                    max_tokens: i32::try_from(spec.output_len).ok(),
                    prompt: Some(p.text),
                    ..trace_format::TraceRecord::default()
                });
                Ok(trace_import::Next::Continue)
            },
        )?;
        if recs.is_empty() {
            return Err(Error::Workload {
                path: spec.path.clone(),
                problem: format!(
                    "no prompt to send ({outside} outside the length bounds, {empty} empty)"
                ),
            });
        }
        let mut w = Self::from_records(&spec.path, recs, seed, &SessionOptions::default(), false)?;
        w.spec_json = serde_json::json!({"kind": name, "file": spec.path.display().to_string(),
            "field": spec.field, "min_prompt_tokens": spec.min_tokens,
            "max_prompt_tokens": spec.max_tokens, "length_unit":
                if tokenizer.is_some() { "tokens" } else { "words" },
            "left_out": outside, "empty": empty, "output_len": spec.output_len});
        Ok(w)
    }

    /// A trace file: request ids kept, prompt text if stored else a synthetic prompt of the
    /// recorded length (built from `hash_ids` blocks when present, so prefix sharing is
    /// reproduced), output cap from `max_tokens` else `output_tokens` (else none), and
    /// `scheduled_ns` as the recorded timeline. Rows with session links (`session_id`,
    /// `parent_id`) make sessions, replayed closed-loop: the timeline is then the sessions'
    /// first turns (see [`crate::session`]).
    pub fn trace(path: &Path, seed: u64, opts: &SessionOptions) -> Result<Self, Error> {
        let (meta, recs) = trace_format::read_all(path)?;
        if recs.is_empty() {
            return Err(Error::Workload {
                path: path.to_path_buf(),
                problem: "the trace has no rows".into(),
            });
        }
        let mut w = Self::from_records(path, recs, seed, opts, timed(&meta))?;
        w.block_tokens = block_tokens(&meta);
        Ok(w)
    }

    /// A workload of trace rows read from `path`; `timed`: their `scheduled_ns` is a recorded
    /// timeline (else arrivals come from `--rate`).
    fn from_records(
        path: &Path,
        mut recs: Vec<trace_format::TraceRecord>,
        seed: u64,
        opts: &SessionOptions,
        timed: bool,
    ) -> Result<Self, Error> {
        // Stable: rows sent at one instant keep the file's order.
        recs.sort_by_key(|r| r.scheduled_ns);
        let mut items = Vec::with_capacity(recs.len());
        for (i, r) in recs.into_iter().enumerate() {
            let stored = r.prompt.is_some();
            // A recorded request that set no cap and produced nothing (a capture's failure, a
            // source trace's failed row) is re-sent without a cap, as it was sent.
            let max_tokens = r
                .max_tokens
                .or(r.output_tokens)
                .filter(|&t| t > 0)
                .map(|t| t as u32);
            let (prompt, prompt_tokens) = match (r.prompt, r.prompt_tokens) {
                (Some(p), t) => {
                    let n = t
                        .map(|t| t.max(0) as u32)
                        .unwrap_or_else(|| trace_import::sharegpt::words(&p));
                    (p, n)
                }
                (None, Some(t)) if t > 0 => (String::new(), t as u32),
                _ => {
                    return Err(Error::Workload {
                        path: path.to_path_buf(),
                        problem: format!(
                            "row {i} (request_id '{}'): neither prompt nor prompt_tokens",
                            r.request_id
                        ),
                    });
                }
            };
            let request_id = if r.request_id.is_empty() {
                format!("req-{i}")
            } else {
                r.request_id
            };
            let reply_tokens = r
                .output_tokens
                .filter(|&t| t > 0)
                .or(r.max_tokens)
                .map_or(0, |t| t.max(0) as u32);
            items.push(TraceItem {
                item: WorkItem {
                    request_id,
                    prompt,
                    prompt_tokens,
                    max_tokens,
                    hash_ids: r.hash_ids,
                    parent_id: r.parent_id,
                    session_id: r.session_id,
                    turn: r.turn.and_then(|t| u32::try_from(t).ok()),
                    ..WorkItem::default()
                },
                stored,
                index: i as u64,
                scheduled_ns: r.scheduled_ns,
                think_ns: r.think_ns.filter(|&t| t >= 0),
                reply_tokens,
                reply_text: r.output_text,
            });
        }
        let has_links = items
            .iter()
            .any(|t| t.item.session_id.is_some() || t.item.parent_id.is_some());
        let linked = if opts.enabled && has_links {
            let rows: Vec<RowLinks<'_>> = items
                .iter()
                .map(|t| RowLinks {
                    request_id: &t.item.request_id,
                    session_id: t.item.session_id.as_deref(),
                    turn: t.item.turn.map(|t| t as i32),
                    parent_id: t.item.parent_id.as_deref(),
                    scheduled_ns: t.scheduled_ns,
                })
                .collect();
            Some(
                session::link(&rows, opts.skip_bad).map_err(|problem| Error::Workload {
                    path: path.to_path_buf(),
                    problem: format!("{problem} (--skip-bad leaves such rows out)"),
                })?,
            )
        } else {
            None
        };
        let starts: Vec<i64> = match &linked {
            Some(l) => l
                .sessions
                .iter()
                .map(|s| items[s.turns[0].row].scheduled_ns)
                .collect(),
            None => items.iter().map(|t| t.scheduled_ns).collect(),
        };
        if starts.is_empty() {
            return Err(Error::Workload {
                path: path.to_path_buf(),
                problem: "every row was left out for bad session links".into(),
            });
        }
        let timeline = crate::schedule::recorded(&starts);
        let mut w = Self::with_source(
            Source::Trace(Arc::new(items)),
            seed,
            serde_json::json!({"kind": "trace", "file": path.display().to_string()}),
        );
        w.timeline_ns = timed.then(|| Arc::new(timeline));
        w.history = opts.history;
        if let Some(Linked { sessions, skipped }) = linked {
            w.sessions = Some(Arc::new(sessions));
            w.skipped = skipped;
        }
        Ok(w)
    }

    /// Sessions in the workload (replayed closed-loop), if any.
    pub fn session_count(&self) -> Option<usize> {
        self.sessions.as_ref().map(|s| s.len())
    }

    /// Rows left out for bad session links, each with its problem.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// What arrival `i` releases: a request, or a whole session.
    pub fn unit(&self, i: u64) -> Unit {
        match self.sessions.is_some() {
            true => Unit::Session(self.session(i)),
            false => Unit::Request(self.item(i)),
        }
    }

    /// The `i`-th session (cycling, a lap suffix on every id as for items).
    pub fn session(&self, i: u64) -> SessionWork {
        let (Some(sessions), Source::Trace(items)) = (&self.sessions, &self.source) else {
            return SessionWork {
                id: format!("session-{i}"),
                turns: Vec::new(),
            };
        };
        let n = sessions.len() as u64;
        let s = &sessions[(i % n) as usize];
        let lap = i / n;
        let suffix = |id: &str| {
            let mut id = if lap > 0 {
                format!("{id}#{lap}")
            } else {
                id.to_string()
            };
            if let Some(p) = &self.id_prefix {
                id.insert_str(0, p);
            }
            id
        };
        let turns = s
            .turns
            .iter()
            .map(|link| {
                let t = &items[link.row];
                let parent = link.parent.map(|p| &items[s.turns[p].row]);
                let mut item = t.item.clone();
                let whole = !item.hash_ids.is_empty()
                    && (parent.is_none() || self.history == History::Recorded);
                if !t.stored {
                    let mut rng = item_rng(self.seed, t.index);
                    item.prompt = match parent {
                        _ if whole => self.prompts.blocks(
                            &item.hash_ids,
                            self.block_tokens,
                            item.prompt_tokens,
                        ),
                        None => self.prompts.random(&mut rng, t.index, item.prompt_tokens),
                        // The new input: what the recorded prompt adds to the parent's prompt
                        // and reply.
                        Some(p) => {
                            let new = item
                                .prompt_tokens
                                .saturating_sub(p.item.prompt_tokens)
                                .saturating_sub(p.reply_tokens);
                            self.prompts.words(&mut rng, t.index, new)
                        }
                    };
                }
                item.request_id = suffix(&item.request_id);
                item.parent_id = parent.map(|p| suffix(&p.item.request_id));
                item.session_id = Some(suffix(&s.id));
                item.turn = Some(depth(s, link));
                item.keep_output = self.history == History::Live && !link.children.is_empty();
                let recorded_reply = if link.children.is_empty() || self.history == History::Live {
                    String::new()
                } else if let Some(r) = &t.reply_text {
                    r.clone()
                } else {
                    // A different stream from the prompt's: reply and input do not repeat.
                    let mut rng = item_rng(self.seed ^ REPLY_STREAM, t.index);
                    self.prompts.words(&mut rng, t.index, t.reply_tokens)
                };
                TurnWork {
                    item,
                    whole_prompt: whole,
                    parent: link.parent,
                    children: link.children.clone(),
                    think_ns: t.think_ns,
                    gap_ns: parent.map(|p| t.scheduled_ns - p.scheduled_ns),
                    recorded_reply,
                }
            })
            .collect();
        SessionWork {
            id: suffix(&s.id),
            turns,
        }
    }

    /// Makes synthetic prompts (random ones, and a trace's rows without stored text) with
    /// `prompts`: of exactly the asked length when it holds a tokenizer or a calibrated vocab.
    pub fn set_prompts(&mut self, prompts: PromptMaker) {
        self.prompts = prompts;
    }

    /// The same items with `prefix` put before every request id (warmup copies).
    pub fn with_id_prefix(&self, prefix: &str) -> Self {
        Self {
            id_prefix: Some(prefix.to_string()),
            ..self.clone()
        }
    }

    /// Number of distinct items (sessions, for a session workload); None for an unbounded
    /// synthetic workload.
    pub fn len(&self) -> Option<usize> {
        if let Some(s) = &self.sessions {
            return Some(s.len());
        }
        match &self.source {
            Source::Random(_) => None,
            Source::Trace(v) => Some(v.len()),
        }
    }

    /// True for a file workload without items (never: loading rejects it).
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The recorded timeline (ns, first at 0) of a trace workload.
    pub fn timeline_ns(&self) -> Option<&[i64]> {
        self.timeline_ns.as_deref().map(Vec::as_slice)
    }

    /// The workload's spec, for the `trace.workload` metadata key.
    pub fn spec_json(&self) -> &serde_json::Value {
        &self.spec_json
    }

    /// The `i`-th request. File workloads cycle; a reused item gets `#k` appended to its id so
    /// ids stay unique within a run.
    pub fn item(&self, i: u64) -> WorkItem {
        let mut it = self.raw_item(i);
        if let Some(p) = &self.id_prefix {
            it.request_id.insert_str(0, p);
        }
        it
    }

    fn raw_item(&self, i: u64) -> WorkItem {
        match &self.source {
            Source::Random(spec) => {
                let mut rng = item_rng(self.seed, i);
                let input = sample_len(&mut rng, spec.input_len, spec.range_ratio);
                let output = sample_len(&mut rng, spec.output_len, spec.range_ratio);
                WorkItem {
                    request_id: format!("req-{i}"),
                    prompt: self.prompts.random(&mut rng, i, input),
                    prompt_tokens: input,
                    max_tokens: Some(output),
                    ..WorkItem::default()
                }
            }
            Source::Trace(items) => lap(items, i, |t| {
                let mut it = t.item.clone();
                if !t.stored {
                    it.prompt = if it.hash_ids.is_empty() {
                        let mut rng = item_rng(self.seed, t.index);
                        self.prompts.random(&mut rng, t.index, it.prompt_tokens)
                    } else {
                        self.prompts
                            .blocks(&it.hash_ids, self.block_tokens, it.prompt_tokens)
                    };
                }
                it
            }),
        }
    }
}

/// The `i`-th item of a file workload, cycling; a reused item gets `#k` appended to its id.
fn lap<T>(items: &[T], i: u64, make: impl Fn(&T) -> WorkItem) -> WorkItem {
    let n = items.len() as u64;
    let mut it = make(&items[(i % n) as usize]);
    let lap = i / n;
    if lap > 0 {
        it.request_id = format!("{}#{lap}", it.request_id);
    }
    it
}

/// Salt of the RNG streams of recorded replies, apart from the prompts'.
const REPLY_STREAM: u64 = 0x5e55_1011_0000_0001;

/// Tokens per `hash_ids` block of a trace: its `trace.hash_block_tokens`, else the block size
/// an importer noted in `trace.source`, else Mooncake's 512.
fn block_tokens(meta: &trace_format::TraceMeta) -> u32 {
    let from_source = || {
        let v: serde_json::Value =
            serde_json::from_str(meta.get(trace_format::meta::SOURCE)?).ok()?;
        u32::try_from(v.get("block_size")?.as_u64()?).ok()
    };
    meta.get(trace_format::meta::HASH_BLOCK_TOKENS)
        .and_then(|v| v.parse().ok())
        .or_else(from_source)
        .filter(|&b| b > 0)
        .unwrap_or(HASH_BLOCK_TOKENS)
}

/// Whether a trace's `scheduled_ns` is a timeline: not for an import from a source without
/// one (ShareGPT: `trace.source` says `time_unit: null`), whose rows all sit at 0.
fn timed(meta: &trace_format::TraceMeta) -> bool {
    let source = meta
        .get(trace_format::meta::SOURCE)
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
    !source.is_some_and(|v| v.get("time_unit").is_some_and(serde_json::Value::is_null))
}

/// A turn's depth in its session tree: its turn number as replayed.
fn depth(s: &Session, link: &session::TurnLink) -> u32 {
    let mut d = 0;
    let mut at = link.parent;
    while let Some(p) = at {
        d += 1;
        at = s.turns[p].parent;
    }
    d
}

/// One RNG stream per item: item i is the same whatever else the run draws.
fn item_rng(seed: u64, i: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(i);
    rng
}

fn sample_len(rng: &mut ChaCha8Rng, len: u32, ratio: f64) -> u32 {
    if ratio >= 1.0 {
        return len;
    }
    let lo = ((len as f64 * ratio).floor() as u32).max(1);
    rng.random_range(lo..=len)
}

/// `tokens` words; the first carries the item index so that no two prompts share a prefix
/// (engines with prefix caching would otherwise skip the prefill).
fn synthetic_prompt(rng: &mut ChaCha8Rng, i: u64, tokens: u32) -> String {
    let mut s = String::with_capacity(tokens as usize * 6);
    s.push_str(&format!("w{i}"));
    for _ in 1..tokens {
        s.push_str(&format!(" w{}", rng.random_range(0..10_000u32)));
    }
    s
}

/// A prompt whose k-th block of `block` words depends only on `hash_ids[k]`, so requests
/// sharing leading hashes share a prefix, truncated to `tokens` words.
fn hashed_prompt(hash_ids: &[u64], block: u32, tokens: u32) -> String {
    let mut s = String::with_capacity(tokens as usize * 8);
    let mut n = 0;
    'outer: for h in hash_ids
        .iter()
        .chain(std::iter::repeat(hash_ids.last().unwrap_or(&0)))
    {
        for j in 0..block.max(1) {
            if n == tokens {
                break 'outer;
            }
            if n > 0 {
                s.push(' ');
            }
            s.push_str(&format!("h{h:x}.{j}"));
            n += 1;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_lengths_are_exact_by_default() {
        let w = Workload::random(
            RandomSpec {
                input_len: 7,
                output_len: 3,
                range_ratio: 1.0,
            },
            1,
        )
        .unwrap();
        for i in 0..20 {
            let it = w.item(i);
            assert_eq!(it.prompt.split(' ').count(), 7);
            assert_eq!(it.prompt_tokens, 7);
            assert_eq!(it.max_tokens, Some(3));
            assert_eq!(it.request_id, format!("req-{i}"));
        }
        assert_eq!(w.item(5), w.item(5));
        assert_ne!(w.item(5).prompt, w.item(6).prompt);
    }

    #[test]
    fn random_prompts_have_exact_token_length_with_a_tokenizer() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traces/tokenizer.json");
        let tok = Arc::new(HfTokenizer::load(&p).unwrap());
        let spec = RandomSpec {
            input_len: 50,
            output_len: 4,
            range_ratio: 1.0,
        };
        let mut w = Workload::random(spec, 2).unwrap();
        w.set_prompts(PromptMaker {
            tokenizer: Some(tok.clone()),
            ..PromptMaker::default()
        });
        for i in 0..5 {
            let it = w.item(i);
            assert_eq!(it.prompt_tokens, 50);
            assert_eq!(tok.count(&it.prompt).unwrap(), 50);
        }
        assert_eq!(w.item(3), w.item(3), "same seed, same prompt");
    }

    #[test]
    fn random_range_ratio_samples_in_range() {
        let spec = RandomSpec {
            input_len: 100,
            output_len: 40,
            range_ratio: 0.5,
        };
        let w = Workload::random(spec, 3).unwrap();
        let lens: Vec<u32> = (0..200).map(|i| w.item(i).prompt_tokens).collect();
        assert!(lens.iter().all(|l| (50..=100).contains(l)));
        assert!(lens.iter().any(|&l| l != lens[0]));
        assert!((0..200).all(|i| (20..=40).contains(&w.item(i).max_tokens.unwrap_or(0))));
    }

    #[test]
    fn random_rejects_bad_lengths() {
        let e = Workload::random(
            RandomSpec {
                range_ratio: 0.0,
                ..Default::default()
            },
            1,
        );
        assert!(e.unwrap_err().to_string().contains("range ratio '0'"));
        assert!(
            Workload::random(
                RandomSpec {
                    input_len: 0,
                    ..Default::default()
                },
                1
            )
            .is_err()
        );
    }

    #[test]
    fn spec_parsing() {
        let r = RandomSpec::default();
        assert_eq!(
            WorkloadSpec::parse("random", r).unwrap(),
            WorkloadSpec::Random(r)
        );
        assert_eq!(
            WorkloadSpec::parse("sharegpt=a.json", r).unwrap(),
            WorkloadSpec::ShareGpt("a.json".into())
        );
        assert_eq!(
            WorkloadSpec::parse("x.parquet", r).unwrap(),
            WorkloadSpec::Trace("x.parquet".into())
        );
        match WorkloadSpec::parse("jsonl=open_qa.jsonl", r).unwrap() {
            WorkloadSpec::Dataset(d) => {
                assert_eq!(d.path, PathBuf::from("open_qa.jsonl"));
                assert_eq!(d.output_len, r.output_len);
            }
            other => panic!("{other:?}"),
        }
        assert!(WorkloadSpec::parse("json=", r).is_err());
        let e = WorkloadSpec::parse("nonsense", r).unwrap_err().to_string();
        assert!(e.contains("'nonsense'"), "{e}");
    }

    fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn sharegpt_takes_first_human_turn_and_reply_length() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "s.json",
            r#"[{"id":"a","conversations":[{"from":"human","value":"hello there"},
                {"from":"gpt","value":"one two three"}]},
               {"id":"b","conversations":[{"from":"gpt","value":"orphan"}]},
               {"conversations":[{"from":"system","value":"s"},{"from":"human","value":"q"},
                {"from":"gpt","value":"r"}]}]"#,
        );
        let w = Workload::sharegpt(&p, 0, &SessionOptions::default()).unwrap();
        assert_eq!(w.len(), Some(2));
        let a = w.item(0);
        assert_eq!(
            (a.request_id.as_str(), a.prompt.as_str(), a.max_tokens),
            ("a", "hello there", Some(3))
        );
        assert_eq!(w.item(1).request_id, "sharegpt-2");
        assert_eq!(w.item(2).request_id, "a#1");
    }

    #[test]
    fn sharegpt_bad_files_name_file_and_entry() {
        let d = tempfile::tempdir().unwrap();
        let p = write(&d, "bad.json", "{not json");
        let e = Workload::sharegpt(&p, 0, &SessionOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.json") && e.contains("line 1"), "{e}");
        let p = write(
            &d,
            "bad2.json",
            r#"[{"conversations":[]},{"conversations":[{"from":1}]}]"#,
        );
        let e = Workload::sharegpt(&p, 0, &SessionOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad2.json") && e.contains("entry 1"), "{e}");
        let p = write(&d, "empty.json", "[]");
        let e = Workload::sharegpt(&p, 0, &SessionOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no conversation"), "{e}");
        let e = Workload::sharegpt(
            &d.path().join("missing.json"),
            0,
            &SessionOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing.json"), "{e}");
    }

    #[test]
    fn sharegpt_conversations_are_sessions_or_first_turns() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "multi.json",
            r#"[{"id":"c","conversations":[{"from":"human","value":"one two"},
                {"from":"gpt","value":"three four five"},{"from":"human","value":"six"},
                {"from":"gpt","value":"seven eight"},{"from":"human","value":"nine"}]}]"#,
        );
        let w = Workload::sharegpt(&p, 0, &SessionOptions::default()).unwrap();
        assert_eq!((w.len(), w.session_count()), (Some(1), Some(1)));
        assert!(
            w.timeline_ns().is_none(),
            "no timing: arrivals come from --rate"
        );
        let s = w.session(0);
        assert_eq!(s.id, "c");
        assert_eq!(s.turns.len(), 2, "the last human turn has no reply");
        let (t0, t1) = (&s.turns[0], &s.turns[1]);
        assert_eq!(
            (t0.item.prompt.as_str(), t0.item.max_tokens),
            ("one two", Some(3))
        );
        assert_eq!(t0.recorded_reply, "three four five");
        assert_eq!(t1.item.request_id, "c-t1");
        assert_eq!(t1.item.parent_id.as_deref(), Some("c"));
        // The new message, and the whole conversation's length: 2 + 3 + 1 words.
        assert_eq!((t1.item.prompt.as_str(), t1.item.prompt_tokens), ("six", 6));
        let first = SessionOptions {
            sharegpt_first_turn: true,
            ..SessionOptions::default()
        };
        let w = Workload::sharegpt(&p, 0, &first).unwrap();
        assert_eq!((w.len(), w.session_count()), (Some(1), None));
        assert_eq!(w.item(0).prompt, "one two");
    }

    #[test]
    fn a_dataset_keeps_prompts_within_the_length_bounds() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            &d,
            "qa.jsonl",
            "{\"question\": \"one\"}\n{\"question\": \"one two three\"}\n\
             {\"question\": \"one two three four five six\"}\n",
        );
        let spec = DatasetSpec {
            path: p,
            kind: trace_import::datasets::DatasetKind::Jsonl,
            field: None,
            min_tokens: Some(2),
            max_tokens: Some(5),
            tokenizer: None,
            output_len: 7,
        };
        let w = Workload::dataset(&spec, 0).unwrap();
        assert_eq!(w.len(), Some(1));
        assert!(w.timeline_ns().is_none());
        let it = w.item(0);
        assert_eq!(it.request_id, "jsonl-1");
        assert_eq!(
            (it.prompt.as_str(), it.prompt_tokens, it.max_tokens),
            ("one two three", 3, Some(7))
        );
        let none = DatasetSpec {
            min_tokens: Some(100),
            ..spec
        };
        let e = Workload::dataset(&none, 0).unwrap_err().to_string();
        assert!(
            e.contains("qa.jsonl") && e.contains("3 outside the length bounds"),
            "{e}"
        );
    }

    #[test]
    fn shipped_sharegpt_sample_loads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traces/sharegpt_sample.json");
        let w = Workload::sharegpt(&p, 0, &SessionOptions::default()).unwrap();
        assert!(w.len().unwrap() >= 40);
    }

    #[test]
    fn trace_workload_keeps_ids_and_timeline_and_prefixes() {
        use trace_format::{TraceMeta, TraceRecord, TraceWriter, WriterOptions};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.parquet");
        let mut meta = TraceMeta::new();
        meta.set(trace_format::meta::KIND, "workload");
        let mut w = TraceWriter::create(&p, meta, WriterOptions::default()).unwrap();
        let rows = [
            ("x", 1_000, Some("hi there"), None, vec![]),
            ("y", 3_000, None, Some(600), vec![7, 8]),
            ("z", 2_000, None, Some(600), vec![7, 9]),
        ];
        for (id, t, prompt, pt, hashes) in rows {
            w.write(&TraceRecord {
                request_id: id.into(),
                scheduled_ns: t,
                prompt: prompt.map(Into::into),
                prompt_tokens: pt,
                output_tokens: Some(5),
                hash_ids: hashes,
                ..Default::default()
            })
            .unwrap();
        }
        w.close().unwrap();
        let wl = Workload::trace(&p, 0, &SessionOptions::default()).unwrap();
        assert_eq!(wl.timeline_ns().unwrap(), &[0, 1_000, 2_000]);
        let ids: Vec<String> = (0..3).map(|i| wl.item(i).request_id).collect();
        assert_eq!(ids, ["x", "z", "y"]);
        assert_eq!(wl.item(0).prompt, "hi there");
        let (z, y) = (wl.item(1), wl.item(2));
        assert_eq!((z.prompt_tokens, z.max_tokens), (600, Some(5)));
        assert_eq!(z.prompt.split(' ').count(), 600);
        // Shared first block, different second block.
        let zb: Vec<&str> = z.prompt.split(' ').collect();
        let yb: Vec<&str> = y.prompt.split(' ').collect();
        assert_eq!(zb[..512], yb[..512]);
        assert_ne!(zb[512], yb[512]);
    }

    #[test]
    fn recorded_failure_without_a_cap_is_resent_without_one() {
        use trace_format::{TraceMeta, TraceRecord, TraceWriter, WriterOptions};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("captured.parquet");
        let mut w = TraceWriter::create(&p, TraceMeta::new(), WriterOptions::default()).unwrap();
        // A captured request that set no max_tokens and failed before any output.
        w.write(&TraceRecord {
            request_id: "failed".into(),
            prompt_tokens: Some(3),
            output_tokens: Some(0),
            error_kind: Some(trace_format::ErrorKind::Http5xx),
            ..Default::default()
        })
        .unwrap();
        w.close().unwrap();
        let wl = Workload::trace(&p, 0, &SessionOptions::default()).unwrap();
        assert_eq!(wl.item(0).max_tokens, None);
        assert_eq!(wl.item(0).prompt_tokens, 3);
    }

    #[test]
    fn trace_workload_errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = write(&d, "junk.parquet", "not parquet");
        let e = Workload::trace(&p, 0, &SessionOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("junk.parquet"), "{e}");
    }
}
