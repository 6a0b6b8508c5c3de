//! Event classification: what one stream event's JSON carries (role, text, usage, finish,
//! error), and per-stream token accounting across events.
//!
//! Shapes understood: OpenAI chat (`choices[].delta.{role,content,reasoning_content,reasoning,
//! tool_calls}`) and completions (`choices[].text`) chunks and their non-streaming responses
//! (`choices[].message`), usage-only chunks (`choices: []`), errors after HTTP 200 in OpenAI
//! (`{"error":{...}}`), legacy vLLM (`{"object":"error",...}`) and TGI (`{"error":"..."}`)
//! form, TGI `generate_stream` (`token.text`, `details.finish_reason`) and Triton
//! `generate_stream` (`text_output`).
//!
//! JSON is deserialised into borrowed structs that name only the fields used: unknown fields
//! are skipped without being built, strings borrow from the event unless they hold escapes
//! (`opt_cow`), the `choices` array is folded as it is read (no Vec), and UTF-8 is checked once
//! per event rather than once per string. A typical chunk thus costs no heap allocation.
//!
//! Two readers fill those structs. The usual OpenAI-style chunk is read by a hand-written fast
//! path (`fast`, several times cheaper than serde_json's generic machinery); anything it does
//! not fully understand (errors, TGI and Triton shapes, `\u` escapes, invalid JSON...) it hands
//! to serde_json, which stays the reference: the fast path only accepts input that serde_json
//! reads to the same result, which a test checks on mutated chunks.

mod fast;

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};

/// What kind of event a stream event is. One event can also carry a finish reason and usage;
/// see [`Classified`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Only `delta.role` (vLLM's and LMDeploy's opening chat event): never a token.
    RoleOnly,
    /// Carries output: content, reasoning_content, text, tool_calls or a native token.
    Content,
    /// `choices: []` with `usage`: the final usage event.
    UsageOnly,
    /// A finish reason and no output.
    Finish,
    /// An error object after HTTP 200.
    Error,
    /// `data: [DONE]`.
    Done,
    /// A `:` comment.
    Keepalive,
    /// Data that is not valid JSON.
    Unparseable,
    /// Valid JSON with nothing of the above (e.g. an empty-content delta held back by the
    /// detokeniser).
    Empty,
}

impl EventKind {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoleOnly => "role_only",
            Self::Content => "content",
            Self::UsageOnly => "usage_only",
            Self::Finish => "finish",
            Self::Error => "error",
            Self::Done => "done",
            Self::Keepalive => "keepalive",
            Self::Unparseable => "unparseable",
            Self::Empty => "empty",
        }
    }
}

/// Token counts from a `usage` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "RawUsage")]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Output tokens so far (cumulative under continuous usage).
    pub completion_tokens: Option<i64>,
    /// `completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: Option<i64>,
    /// `prompt_tokens_details.cached_tokens`: prompt tokens served from the prefix cache.
    pub cached_tokens: Option<i64>,
}

/// `usage` as sent, the details nested.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    reasoning_tokens: Option<i64>,
    #[serde(default)]
    cached_tokens: Option<i64>,
}

impl From<RawUsage> for Usage {
    fn from(r: RawUsage) -> Self {
        Self {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            reasoning_tokens: r.completion_tokens_details.and_then(|d| d.reasoning_tokens),
            cached_tokens: r.prompt_tokens_details.and_then(|d| d.cached_tokens),
        }
    }
}

/// The classification of one event's data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Classified<'a> {
    /// Primary kind; `None` only for the default value.
    pub kind: Option<EventKind>,
    /// Output text carried (content, reasoning or text), concatenated.
    pub text: Option<Cow<'a, str>>,
    /// A finish reason, when present.
    pub finish_reason: Option<Cow<'a, str>>,
    /// Usage, when present and not null.
    pub usage: Option<Usage>,
    /// The response's model name, when present.
    pub model: Option<Cow<'a, str>>,
    /// The error message, for [`EventKind::Error`].
    pub error: Option<String>,
    /// The event's output is reasoning only (`reasoning_content` / `reasoning`, no answer
    /// text or tool call): its tokens count as reasoning, not as the answer.
    pub reasoning: bool,
    /// A native cumulative token counter (TGI `details.generated_tokens`).
    pub native_tokens: Option<i64>,
    /// llama.cpp's cumulative output token count (`timings.predicted_n`, on every chunk when the
    /// request asks for `timings_per_token`).
    pub predicted_n: Option<i64>,
}

/// What [`classify()`] reads from an event. `fast.rs` fills the same fields for the usual chunk
/// shape: keep the two in step (`tests::fast_path_agrees_with_serde` compares them).
#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Chunk<'a> {
    // Folded while parsed (see `Choices`): no Vec and no per-choice struct per event.
    #[serde(default, borrow)]
    choices: Option<Choices<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    object: Option<Cow<'a, str>>,
    // A Value, not a str: Ollama-style bodies carry a `message` object here.
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    token: Option<TgiToken<'a>>,
    #[serde(default, borrow)]
    details: Option<TgiDetails<'a>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    text_output: Option<Cow<'a, str>>,
    #[serde(default)]
    timings: Option<Timings>,
}

/// llama.cpp's per-chunk `timings`: only the cumulative output token count is used.
#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Timings {
    #[serde(default)]
    predicted_n: Option<i64>,
}

/// The `choices` array, folded element by element as it is parsed into what [`classify()`] uses:
/// the text of every choice in order, the last finish reason, and whether any choice had a role
/// or tool calls. Same result as collecting a `Vec<Choice>` and walking it afterwards, without
/// allocating per event.
#[derive(Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Choices<'a> {
    /// The array had at least one element.
    any: bool,
    text: Option<Cow<'a, str>>,
    finish_reason: Option<Cow<'a, str>>,
    role: bool,
    tool: bool,
    /// Some reasoning text, and some answer text (content, text), were seen.
    reasoning: bool,
    answer: bool,
}

impl<'a> Choices<'a> {
    /// Folds in the next choice of the array.
    fn add(&mut self, c: Choice<'a>) {
        self.any = true;
        if let Some(f) = c.finish_reason {
            self.finish_reason = Some(f);
        }
        if let Some(t) = c.text {
            self.answer |= !t.is_empty();
            push_text(&mut self.text, t);
        }
        for d in [c.delta, c.message].into_iter().flatten() {
            self.role |= d.role.is_some();
            self.tool |= d.tool_calls.is_some();
            for (i, t) in [d.reasoning_content, d.reasoning, d.content]
                .into_iter()
                .enumerate()
            {
                if let Some(t) = t {
                    if i < 2 {
                        self.reasoning |= !t.is_empty();
                    } else {
                        self.answer |= !t.is_empty();
                    }
                    push_text(&mut self.text, t);
                }
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Choices<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Choices::default();
                while let Some(c) = seq.next_element::<Choice<'de>>()? {
                    out.add(c);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    message: Option<Delta<'a>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default)]
    role: Option<IgnoredAny>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct TgiToken<'a> {
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    special: bool,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct TgiDetails<'a> {
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    generated_tokens: Option<i64>,
}

/// A string or `null` that borrows from the input unless it holds escapes. Needed because
/// serde's `#[serde(borrow)]` only borrows a bare `Cow<str>`: an `Option<Cow<str>>` field would
/// be deserialised as an owned `String`, one allocation per string per event. Accepts exactly
/// what `Option<Cow<str>>` accepts (a string, or null).
fn opt_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Str;
    impl<'de> Visitor<'de> for Str {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(Str).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

fn push_text<'a>(acc: &mut Option<Cow<'a, str>>, s: Cow<'a, str>) {
    if s.is_empty() {
        return;
    }
    match acc {
        None => *acc = Some(s),
        Some(a) => a.to_mut().push_str(&s),
    }
}

fn error_message(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => match o.get("message").and_then(|m| m.as_str()) {
            Some(m) => m.to_string(),
            None => v.to_string(),
        },
        other => other.to_string(),
    }
}

/// Classifies one event's data (the joined `data:` lines).
pub fn classify(data: &[u8]) -> Classified<'_> {
    let trimmed = data.trim_ascii();
    if trimmed == b"[DONE]" {
        return Classified {
            kind: Some(EventKind::Done),
            ..Default::default()
        };
    }
    // One UTF-8 check of the whole event, then readers that do not re-validate each string:
    // the fast path, else serde_json. Invalid UTF-8 inside a string that is skipped is still
    // accepted by `from_slice`, so it decides those events as before.
    let mut chunk = Chunk::default();
    let parsed = match std::str::from_utf8(trimmed) {
        Ok(s) if fast::chunk(s, &mut chunk) => Ok(()),
        Ok(s) => serde_json::from_str(s).map(|c| chunk = c),
        Err(_) => serde_json::from_slice(trimmed).map(|c| chunk = c),
    };
    if parsed.is_err() {
        return Classified {
            kind: Some(EventKind::Unparseable),
            ..Default::default()
        };
    }
    let mut out = Classified {
        usage: chunk.usage,
        model: chunk.model,
        predicted_n: chunk.timings.and_then(|t| t.predicted_n),
        ..Default::default()
    };
    if let Some(err) = &chunk.error {
        out.kind = Some(EventKind::Error);
        out.error = Some(error_message(err));
        return out;
    }
    if chunk.object.as_deref() == Some("error") {
        out.kind = Some(EventKind::Error);
        out.error = Some(match &chunk.message {
            Some(serde_json::Value::String(m)) => m.clone(),
            Some(other) => other.to_string(),
            None => "error".into(),
        });
        return out;
    }
    let mut role = false;
    let mut tool = false;
    let mut had_choices = false;
    if let Some(ch) = chunk.choices {
        had_choices = ch.any;
        role = ch.role;
        tool = ch.tool;
        out.reasoning = ch.reasoning && !ch.answer && !ch.tool;
        out.finish_reason = ch.finish_reason;
        out.text = ch.text;
    }
    let mut native_token = false;
    if let Some(tok) = chunk.token {
        native_token = true;
        if !tok.special
            && let Some(t) = tok.text
        {
            push_text(&mut out.text, t);
        }
    }
    if let Some(det) = chunk.details {
        if let Some(f) = det.finish_reason {
            out.finish_reason = Some(f);
        }
        out.native_tokens = det.generated_tokens;
    }
    if let Some(t) = chunk.text_output {
        native_token = true;
        push_text(&mut out.text, t);
    }
    out.kind = Some(if out.text.is_some() || tool || native_token {
        EventKind::Content
    } else if role {
        EventKind::RoleOnly
    } else if out.finish_reason.is_some() {
        EventKind::Finish
    } else if !had_choices && out.usage.is_some() {
        EventKind::UsageOnly
    } else {
        EventKind::Empty
    });
    out
}

/// Per-stream token accounting: turns a sequence of classified events into per-event output
/// token counts.
///
/// Rule (documented in the crate README): under continuous usage (the event carries `usage`
/// and so did the previous data event, or it is the stream's first data event) an event's
/// tokens are the change in cumulative `completion_tokens`; else, under llama.cpp's
/// `timings_per_token` (an event with `timings.predicted_n`, the stream's first or after an
/// earlier one: llama.cpp leaves it off the finish event only), the change in that count;
/// otherwise a content event counts 1 and any other event 0. So an old server that puts the
/// total on its last content chunk does not credit that chunk with every token, a usage-only
/// final event adds nothing, and a llama.cpp event that carries two tokens (one ended in an
/// incomplete UTF-8 sequence and was held back) counts two.
#[derive(Debug, Default, Clone)]
pub struct TokenCounter {
    data_events: u64,
    prev_had_usage: bool,
    last_completion: Option<i64>,
    last_predicted: Option<i64>,
    /// How the last event was counted: `usage`, `timings` or `events`.
    pub source: Option<&'static str>,
    /// The last usage seen anywhere in the stream.
    pub last_usage: Option<Usage>,
    /// Sum of the per-event counts returned so far.
    pub total: i64,
}

impl TokenCounter {
    /// A fresh counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens carried by this event; call once per data event in stream order.
    pub fn tokens(&mut self, c: &Classified<'_>) -> i32 {
        let first = self.data_events == 0;
        self.data_events += 1;
        let content = c.kind == Some(EventKind::Content);
        let cur = c.usage.and_then(|u| u.completion_tokens);
        let (n, source) = match (cur, c.predicted_n) {
            (Some(cur), _) if first || self.prev_had_usage => {
                ((cur - self.last_completion.unwrap_or(0)).max(0), "usage")
            }
            // Not reset by an event without timings: llama.cpp's finish event has none, and the
            // usage event after it can carry the last token (one whose text never came).
            (_, Some(p)) if first || self.total == 0 || self.last_predicted.is_some() => {
                ((p - self.last_predicted.unwrap_or(0)).max(0), "timings")
            }
            _ => (i64::from(content), "events"),
        };
        if content {
            self.source = Some(source);
        }
        if c.predicted_n.is_some() {
            self.last_predicted = c.predicted_n;
        }
        if let Some(u) = c.usage {
            // Merge so a later usage without prompt_tokens keeps the earlier one.
            let prev = self.last_usage.unwrap_or_default();
            self.last_usage = Some(Usage {
                prompt_tokens: u.prompt_tokens.or(prev.prompt_tokens),
                completion_tokens: u.completion_tokens.or(prev.completion_tokens),
                reasoning_tokens: u.reasoning_tokens.or(prev.reasoning_tokens),
                cached_tokens: u.cached_tokens.or(prev.cached_tokens),
            });
        }
        if cur.is_some() {
            self.last_completion = cur;
        }
        self.prev_had_usage = cur.is_some();
        self.total += n;
        i32::try_from(n).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> EventKind {
        classify(s.as_bytes()).kind.unwrap_or(EventKind::Empty)
    }

    #[test]
    fn kinds() {
        assert_eq!(
            k(
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#
            ),
            EventKind::RoleOnly
        );
        assert_eq!(
            k(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#),
            EventKind::Content
        );
        assert_eq!(
            k(r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#),
            EventKind::Content
        );
        assert_eq!(
            k(r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#),
            EventKind::Content
        );
        assert_eq!(
            k(r#"{"choices":[{"text":"x","finish_reason":null}]}"#),
            EventKind::Content
        );
        assert_eq!(
            k(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#),
            EventKind::Finish
        );
        assert_eq!(
            k(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#),
            EventKind::UsageOnly
        );
        assert_eq!(
            k(r#"{"error":{"message":"boom","code":400}}"#),
            EventKind::Error
        );
        assert_eq!(k(r#"{"object":"error","message":"old"}"#), EventKind::Error);
        assert_eq!(
            k(r#"{"error":"tgi","error_type":"generation"}"#),
            EventKind::Error
        );
        assert_eq!(k("[DONE]"), EventKind::Done);
        assert_eq!(k("{not json"), EventKind::Unparseable);
        assert_eq!(
            k(r#"{"choices":[{"delta":{"content":""}}]}"#),
            EventKind::Empty
        );
        assert_eq!(
            k(r#"{"index":1,"token":{"id":5,"text":" Hi","special":false},"details":null}"#),
            EventKind::Content
        );
        assert_eq!(
            k(r#"{"model_name":"ensemble","text_output":"x"}"#),
            EventKind::Content
        );
    }

    #[test]
    fn fields() {
        let c = classify(
            br#"{"model":"m","choices":[{"delta":{"content":"a\"b"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        );
        assert_eq!(c.text.as_deref(), Some("a\"b"));
        assert_eq!(c.finish_reason.as_deref(), Some("length"));
        assert_eq!(c.model.as_deref(), Some("m"));
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: Some(3),
                completion_tokens: Some(4),
                ..Usage::default()
            })
        );
        let e = classify(br#"{"error":{"message":"boom"}}"#);
        assert_eq!(e.error.as_deref(), Some("boom"));
        let t = classify(
            br#"{"token":{"text":"</s>","special":true},"generated_text":"x","details":{"finish_reason":"length","generated_tokens":2}}"#,
        );
        assert_eq!(t.kind, Some(EventKind::Content));
        assert_eq!(t.text, None);
        assert_eq!(t.finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let c = classify(br#"{"model":"m","choices":[{"delta":{"content":"plain"}}]}"#);
        assert!(matches!(c.text, Some(Cow::Borrowed("plain"))));
        assert!(matches!(c.model, Some(Cow::Borrowed("m"))));
        let c = classify(br#"{"choices":[{"delta":{"content":"a\nb"}}]}"#);
        assert!(matches!(c.text, Some(Cow::Owned(ref t)) if t == "a\nb"));
        // A string field that is null reads as absent; any other type is not a chunk.
        let c = classify(br#"{"model":null,"choices":[{"delta":{"content":null}}]}"#);
        assert_eq!((c.kind, c.model), (Some(EventKind::Empty), None));
        assert_eq!(
            k(r#"{"choices":[{"delta":{"content":5}}]}"#),
            EventKind::Unparseable
        );
        assert_eq!(k(r#"{"model":{"a":1}}"#), EventKind::Unparseable);
    }

    #[test]
    fn choices_fold_like_a_list() {
        let c = classify(
            br#"{"choices":[{"delta":{"reasoning_content":"r","content":"a"},"finish_reason":"stop"},{"text":"b","finish_reason":null},{"message":{"content":"c"},"finish_reason":"length"}]}"#,
        );
        assert_eq!(c.text.as_deref(), Some("rabc"));
        assert_eq!(c.finish_reason.as_deref(), Some("length"));
        assert_eq!(
            k(r#"{"choices":null,"usage":{"completion_tokens":1}}"#),
            EventKind::UsageOnly
        );
        assert_eq!(
            k(r#"{"choices":[{"delta":{}}],"usage":{"completion_tokens":1}}"#),
            EventKind::Empty
        );
        assert_eq!(k(r#"{"choices":{"delta":{}}}"#), EventKind::Unparseable);
        assert_eq!(k(r#"{"choices":[],"choices":[]}"#), EventKind::Unparseable);
    }

    #[test]
    fn utf8_checked_as_serde_json_does() {
        // Invalid UTF-8 in a skipped string is accepted by serde_json; in a used one it is not.
        let mut ok = br#"{"id":"?","choices":[{"delta":{"content":"x"}}]}"#.to_vec();
        ok[7] = 0xff;
        assert_eq!(classify(&ok).text.as_deref(), Some("x"));
        let mut bad = br#"{"choices":[{"delta":{"content":"?"}}]}"#.to_vec();
        bad[33] = 0xff;
        assert_eq!(classify(&bad).kind, Some(EventKind::Unparseable));
        let c = classify("{\"choices\":[{\"delta\":{\"content\":\"h\u{e9}\"}}]}".as_bytes());
        assert_eq!(c.text.as_deref(), Some("h\u{e9}"));
    }

    /// Event data in the shapes servers send, and odd ones, as seeds for the fast-path tests.
    const SHAPES: &[&str] = &[
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":9,"total_tokens":9,"completion_tokens":0}}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":" w1"},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":9,"total_tokens":10,"completion_tokens":1}}"#,
        r#"{"id":"c","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":" a\n\"b\"\\ \/ \t\r\b\f","logprobs":null,"finish_reason":"length","stop_reason":null}],"usage":null}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"hm","content":null,"tool_calls":[{"index":0,"id":"x","type":"function","function":{"name":"f","arguments":"{\"a\": 1}"}}]},"logprobs":{"content":[{"token":"\u00e9","logprob":-0.5,"bytes":[195,169],"top_logprobs":[]}]},"finish_reason":"tool_calls"}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":0}}}"#,
        r#"{"choices":[{"delta":{"reasoning_content":"r"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"completion_tokens_details":{"reasoning_tokens":2},"prompt_tokens_details":null}}"#,
        r#" { "choices" : [ { "delta" : { "role" : null , "reasoning" : "r" } , "message" : { "content" : "hé" , "name" : "\u00e9\ud83d" } } , { "text" : "x" , "finish_reason" : "stop" } ] , "model" : null , "x" : [ 1.5e-3 , -0 , 0.25E+2 , true , false , null , { } , [ ] ] } "#,
        r#"{"error":{"message":"boom","code":400}}"#,
        r#"{"object":"error","message":"old","code":400}"#,
        r#"{"index":1,"token":{"id":5,"text":" Hi","special":false},"generated_text":null,"details":null}"#,
        r#"{"model_name":"ensemble","text_output":"x","error":null,"message":null,"token":null,"details":null}"#,
        r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"completion_tokens":-1,"prompt_tokens":123456789012345678901}}"#,
        r#"{"choices":[{"delta":{"content":"a"},"delta":{"content":"b"}}],"model":"m","model":"n"}"#,
        r#"{"choices":[[{"content":"a"}]],"usage":[1,2]}"#,
        r#"{"choices":null,"object":"chat.completion.chunk","usage":{"prompt_tokens":0,"completion_tokens":0.0}}"#,
    ];

    #[test]
    fn reasoning_only_events_and_usage_details() {
        let c = classify(br#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#);
        assert!(c.reasoning && c.kind == Some(EventKind::Content));
        let c = classify(br#"{"choices":[{"delta":{"reasoning":"hm","content":""}}]}"#);
        assert!(c.reasoning, "an empty answer does not make it an answer");
        let c = classify(br#"{"choices":[{"delta":{"reasoning_content":"hm","content":"a"}}]}"#);
        assert!(
            !c.reasoning,
            "an event with answer text counts as the answer"
        );
        let c = classify(br#"{"choices":[{"delta":{"content":"a"}}]}"#);
        assert!(!c.reasoning);
        let c = classify(
            br#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":3}}}"#,
        );
        let u = c.usage.unwrap();
        assert_eq!((u.cached_tokens, u.reasoning_tokens), (Some(4), Some(3)));
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(9), Some(5)));
        // The fast path skips null details and still reads the counts.
        let c = classify(br#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"prompt_tokens_details":null}}"#);
        assert_eq!(c.usage.unwrap().completion_tokens, Some(5));
    }

    /// Byte-level mutants of [`SHAPES`], deterministic.
    fn mutants(n: usize) -> Vec<Vec<u8>> {
        use rand::{Rng, SeedableRng};
        let alphabet: &[u8] = b"{}[]\":,\\/ \t\r\n0123456789-+.eEnulltrfasbux\x01\x7f\xc3\xa9";
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        (0..n)
            .map(|_| {
                let mut d = SHAPES[rng.random_range(0..SHAPES.len())]
                    .as_bytes()
                    .to_vec();
                for _ in 0..rng.random_range(0..4) {
                    let i = rng.random_range(0..=d.len());
                    let byte = alphabet[rng.random_range(0..alphabet.len())];
                    match rng.random_range(0..4) {
                        0 if i < d.len() => d[i] = byte,
                        1 if i < d.len() => {
                            d.remove(i);
                        }
                        2 => d.insert(i, byte),
                        _ => {
                            let o = SHAPES[rng.random_range(0..SHAPES.len())].as_bytes();
                            let a = rng.random_range(0..o.len());
                            let b = (a + rng.random_range(0..24)).min(o.len());
                            d.splice(i..i, o[a..b].iter().copied());
                        }
                    }
                }
                d
            })
            .collect()
    }

    #[test]
    fn fast_path_takes_the_usual_chunks() {
        for s in &SHAPES[..7] {
            assert!(fast::chunk(s.trim(), &mut Chunk::default()), "{s}");
        }
        for s in &SHAPES[7..] {
            assert!(!fast::chunk(s.trim(), &mut Chunk::default()), "{s}");
        }
    }

    #[test]
    fn fast_path_agrees_with_serde() {
        let (mut taken, mut valid) = (0, 0);
        for d in mutants(60_000) {
            let Ok(s) = std::str::from_utf8(d.trim_ascii()) else {
                continue;
            };
            let serde = serde_json::from_str::<Chunk<'_>>(s);
            valid += usize::from(serde.is_ok());
            let mut fast = Chunk::default();
            if fast::chunk(s, &mut fast) {
                taken += 1;
                match serde {
                    Ok(serde) => assert_eq!(fast, serde, "{s}"),
                    Err(e) => panic!("fast path took what serde_json refuses ({e}): {s}"),
                }
            }
        }
        // The mutants exercise both sides: many stay valid, and the fast path takes most.
        assert!(
            valid > 10_000 && taken > valid / 2,
            "{taken} taken of {valid} valid"
        );
    }

    #[test]
    fn continuous_usage_deltas() {
        let mut tc = TokenCounter::new();
        let evs = [
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":5,"completion_tokens":0}}"#,
            r#"{"choices":[{"delta":{"content":"ab"}}],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#,
            r#"{"choices":[{"delta":{"content":"c"}}],"usage":{"prompt_tokens":5,"completion_tokens":4}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4}}"#,
        ];
        let got: Vec<i32> = evs
            .iter()
            .map(|e| tc.tokens(&classify(e.as_bytes())))
            .collect();
        assert_eq!(got, vec![0, 3, 1, 0]);
        assert_eq!(tc.last_usage.and_then(|u| u.completion_tokens), Some(4));
    }

    #[test]
    fn usage_only_on_last_event_is_not_a_delta() {
        let mut tc = TokenCounter::new();
        let evs = [
            r#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"delta":{"content":"b"}}],"usage":{"completion_tokens":2}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        ];
        let got: Vec<i32> = evs
            .iter()
            .map(|e| tc.tokens(&classify(e.as_bytes())))
            .collect();
        assert_eq!(got, vec![0, 1, 1, 0]);
    }

    /// llama.cpp's chat stream under `timings_per_token`, as its server sends it: a role event
    /// without timings, a first content event already two tokens in (a held-back UTF-8 piece),
    /// a finish event without timings, and a usage event whose count is one more (the last
    /// token's text never came). Every token lands on an event.
    #[test]
    fn llamacpp_timings_count_every_token() {
        let mut tc = TokenCounter::new();
        let t = |n: i64| format!(r#""timings":{{"prompt_n":5,"predicted_n":{n}}}"#);
        let evs = [
            r#"{"choices":[{"delta":{"role":"assistant","content":null}}]}"#.to_string(),
            format!(r#"{{"choices":[{{"delta":{{"content":"éa"}}}}],{}}}"#, t(2)),
            format!(r#"{{"choices":[{{"delta":{{"content":"b"}}}}],{}}}"#, t(3)),
            r#"{"choices":[{"finish_reason":"length","delta":{}}]}"#.to_string(),
            format!(
                r#"{{"choices":[],"usage":{{"prompt_tokens":5,"completion_tokens":4}},{}}}"#,
                t(4)
            ),
        ];
        let got: Vec<i32> = evs
            .iter()
            .map(|e| tc.tokens(&classify(e.as_bytes())))
            .collect();
        assert_eq!(got, vec![0, 2, 1, 0, 1]);
        assert_eq!(tc.total, 4);
        assert_eq!(tc.source, Some("timings"));
    }
}
