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
//! are skipped without being built, which keeps classification well under a microsecond for a
//! typical chunk.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

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
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: Option<i64>,
    /// Output tokens so far (cumulative under continuous usage).
    #[serde(default)]
    pub completion_tokens: Option<i64>,
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
    /// A native cumulative token counter (TGI `details.generated_tokens`).
    pub native_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    // A Value, not a str: Ollama-style bodies carry a `message` object here.
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    token: Option<TgiToken<'a>>,
    #[serde(default, borrow)]
    details: Option<TgiDetails<'a>>,
    #[serde(default, borrow)]
    text_output: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    message: Option<Delta<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default)]
    role: Option<IgnoredAny>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct TgiToken<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    special: bool,
}

#[derive(Deserialize)]
struct TgiDetails<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    generated_tokens: Option<i64>,
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
    let chunk: Chunk<'_> = match serde_json::from_slice(trimmed) {
        Ok(c) => c,
        Err(_) => {
            return Classified {
                kind: Some(EventKind::Unparseable),
                ..Default::default()
            };
        }
    };
    let mut out = Classified {
        usage: chunk.usage,
        model: chunk.model,
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
    if let Some(choices) = chunk.choices {
        had_choices = !choices.is_empty();
        for c in choices {
            if let Some(f) = c.finish_reason {
                out.finish_reason = Some(f);
            }
            if let Some(t) = c.text {
                push_text(&mut out.text, t);
            }
            for d in [c.delta, c.message].into_iter().flatten() {
                role |= d.role.is_some();
                tool |= d.tool_calls.is_some();
                for t in [d.reasoning_content, d.reasoning, d.content]
                    .into_iter()
                    .flatten()
                {
                    push_text(&mut out.text, t);
                }
            }
        }
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
/// tokens are the change in cumulative `completion_tokens`; otherwise a content event counts
/// 1 and any other event 0. So an old server that puts the total on its last content chunk
/// does not credit that chunk with every token, and a usage-only final event adds nothing.
#[derive(Debug, Default, Clone)]
pub struct TokenCounter {
    data_events: u64,
    prev_had_usage: bool,
    last_completion: Option<i64>,
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
        let n = match cur {
            Some(cur) if first || self.prev_had_usage => {
                (cur - self.last_completion.unwrap_or(0)).max(0)
            }
            _ => i64::from(content),
        };
        if let Some(u) = c.usage {
            // Merge so a later usage without prompt_tokens keeps the earlier one.
            let prev = self.last_usage.unwrap_or_default();
            self.last_usage = Some(Usage {
                prompt_tokens: u.prompt_tokens.or(prev.prompt_tokens),
                completion_tokens: u.completion_tokens.or(prev.completion_tokens),
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
                completion_tokens: Some(4)
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
}
