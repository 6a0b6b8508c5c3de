//! The fast path of [`super::classify`]: a hand-written reader for the usual shape of an
//! OpenAI-style stream chunk that builds the same [`Chunk`] serde would, or gives up.
//!
//! serde_json's generic machinery costs most of a chunk's parse (several thousand instructions
//! for ~280 bytes); this reader does the same work in a fraction of that. It is not a second
//! JSON parser with its own opinions: it accepts a strict subset of what serde_json accepts,
//! reads that subset exactly as the derived `Deserialize` impls do, and gives up on anything
//! else (a control character anywhere, an escape in a key, `\u` escapes in used strings, a
//! non-null `error`, `message`, `token`, `details`, `text_output` or `timings`, a choice that is not an
//! object, an integer that is negative or has 19+ digits, a duplicate known field, deep
//! nesting, invalid JSON...), in which case serde_json parses the event and decides. So a malformed or unusual event is
//! judged by serde_json alone, and `tests::fast_path_agrees_with_serde` checks on mutated
//! chunks that whatever this accepts, serde_json accepts with the same result.
//!
//! Rules it shares with serde_json and the derives: whitespace is space, tab, CR and LF (the
//! fast path takes only events without control characters, so here only spaces);
//! unknown fields are skipped but must be valid JSON (escapes among `"\/bfnrt` or `u` and four
//! hex digits, numbers per the JSON grammar);
//! a known field given twice is an error (here: give up); a `null` optional field is absent;
//! the object must be followed by nothing but whitespace.

use std::borrow::Cow;

use super::{Choices, Chunk, Usage, push_text};

/// Deeper than this gives up; serde_json's own limit for the structs is 128.
const MAX_DEPTH: u32 = 64;

/// Reads `s` (one event's data, valid UTF-8) into `out` (a default [`Chunk`]); false: give up
/// and let serde_json decide (`out` is then left part-filled).
pub(super) fn chunk<'a>(s: &'a str, out: &mut Chunk<'a>) -> bool {
    read(s, out).is_some()
}

fn read<'a>(s: &'a str, out: &mut Chunk<'a>) -> Option<()> {
    // A control character is an error inside a string and whitespace (tab, CR, LF) outside
    // one: compact JSON, what servers send in a `data:` line, has none. Give up on any, so the
    // string scans below need only look for `"` and `\`. (A fold, not `any`: it vectorises.)
    if s.bytes().fold(false, |ctl, b| ctl | (b < 0x20)) {
        return None;
    }
    let mut c = Cur {
        s,
        b: s.as_bytes(),
        i: 0,
    };
    c.ws();
    let mut seen = Seen::default();
    c.object(|c, key| {
        match key {
            "choices" => {
                seen.once(0)?;
                out.choices = c.opt(Cur::choices)?;
            }
            "usage" => {
                seen.once(1)?;
                out.usage = c.opt(Cur::usage)?;
            }
            "object" => {
                seen.once(2)?;
                out.object = c.opt(Cur::string)?;
            }
            "model" => {
                seen.once(3)?;
                out.model = c.opt(Cur::string)?;
            }
            // Errors, other engines' shapes and llama.cpp's timings: only their absence is
            // handled here.
            "error" | "message" | "token" | "details" | "text_output" | "timings" => {
                seen.once(match key {
                    "error" => 4,
                    "message" => 5,
                    "token" => 6,
                    "details" => 7,
                    "text_output" => 8,
                    _ => 9,
                })?;
                c.null()?;
            }
            _ => c.skip(1)?,
        }
        Some(())
    })?;
    c.ws();
    (c.i == c.b.len()).then_some(())
}

/// Known fields seen in one object, to give up on a duplicate (an error for the derives).
#[derive(Default)]
struct Seen(u16);

impl Seen {
    fn once(&mut self, bit: u32) -> Option<()> {
        let m = 1 << bit;
        if self.0 & m != 0 {
            return None;
        }
        self.0 |= m;
        Some(())
    }
}

/// A cursor over the event's bytes. Every method returns `None` to give up.
struct Cur<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Skips whitespace: spaces only, as the input has no tab, CR or LF (see [`chunk`]).
    fn ws(&mut self) {
        while self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(w).then(|| self.i += w.len())
    }

    fn null(&mut self) -> Option<()> {
        self.word(b"null")
    }

    /// `null` as `None`, else the value read by `f`.
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek() == Some(b'n') {
            self.null()?;
            return Some(None);
        }
        f(self).map(Some)
    }

    /// Skips a run of string bytes that need nothing done: up to a quote or a backslash (or the
    /// end). The input holds no control characters (checked by [`chunk`]), so these are the
    /// only bytes that end a plain run. Eight bytes at a time, as serde_json's own scan.
    fn plain(&mut self) {
        const ONES: u64 = u64::MAX / 255;
        let (quote, backslash) = (ONES * u64::from(b'"'), ONES * u64::from(b'\\'));
        while let Some(w) = self.b[self.i..].first_chunk::<8>() {
            let w = u64::from_le_bytes(*w);
            let (q, s) = (w ^ quote, w ^ backslash);
            // The high bit of each byte that is zero in q or s; the lowest one is exact.
            let hit = (q.wrapping_sub(ONES) & !q | s.wrapping_sub(ONES) & !s) & (ONES << 7);
            if hit != 0 {
                self.i += hit.trailing_zeros() as usize / 8;
                return;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' || c == b'\\' {
                return;
            }
            self.i += 1;
        }
    }

    /// An object's members: `f` reads the value of each key (the cursor after the colon and
    /// whitespace). Keys with escapes give up.
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let start = self.i;
            self.plain();
            let key = &self.s[start..self.i];
            self.eat(b'"')?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string value, escapes decoded as serde_json does; borrowed when it has none. `\u`
    /// escapes give up.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        self.plain();
        if self.eat(b'"').is_some() {
            return Some(Cow::Borrowed(&self.s[start..self.i - 1]));
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    out.push(match self.b.get(self.i + 1)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\x08',
                        b'f' => '\x0c',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        _ => return None,
                    });
                    self.i += 2;
                }
                _ => {
                    let run = self.i;
                    self.plain();
                    out.push_str(&self.s[run..self.i]);
                }
            }
        }
    }

    /// A non-negative integer of at most 18 digits, as an `i64` field reads it. Anything else
    /// (a sign, a fraction, an exponent, a longer number) gives up.
    fn int(&mut self) -> Option<i64> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        let leading_zero = digits.len() > 1 && digits[0] == b'0';
        if digits.is_empty()
            || digits.len() > 18
            || leading_zero
            || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        Some(digits.iter().fold(0, |v, &c| v * 10 + i64::from(c - b'0')))
    }

    /// Skips any JSON value, validated as serde_json's `ignore_value` does.
    fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                loop {
                    self.plain();
                    match self.peek()? {
                        b'"' => {
                            self.i += 1;
                            return Some(());
                        }
                        b'\\' => match self.b.get(self.i + 1)? {
                            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                                self.i += 2;
                            }
                            b'u' => {
                                let hex = self.b.get(self.i + 2..self.i + 6)?;
                                if !hex.iter().all(u8::is_ascii_hexdigit) {
                                    return None;
                                }
                                self.i += 6;
                            }
                            _ => return None,
                        },
                        _ => return None,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                self.eat(b'-');
                let digits = |c: &mut Self| {
                    let start = c.i;
                    while let Some(b'0'..=b'9') = c.peek() {
                        c.i += 1;
                    }
                    c.i - start
                };
                let start = self.i;
                let n = digits(self);
                if n == 0 || (n > 1 && self.b[start] == b'0') {
                    return None;
                }
                if self.eat(b'.').is_some() && digits(self) == 0 {
                    return None;
                }
                if let Some(b'e' | b'E') = self.peek() {
                    self.i += 1;
                    if let Some(b'+' | b'-') = self.peek() {
                        self.i += 1;
                    }
                    if digits(self) == 0 {
                        return None;
                    }
                }
                Some(())
            }
            b'n' => self.null(),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.object(|c, _| c.skip(depth + 1))
            }
            _ => None,
        }
    }

    /// The `choices` array, folded as `Choices::add` folds it on the serde path.
    fn choices(&mut self) -> Option<Choices<'a>> {
        self.eat(b'[')?;
        self.ws();
        let mut out = Choices::default();
        if self.eat(b']').is_some() {
            return Some(out);
        }
        loop {
            self.choice(&mut out)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }

    /// One choice, folded into `acc` in place (no `Choice` is built): its text pieces are
    /// joined in `Choices::add`'s order whatever the order of the keys.
    fn choice(&mut self, acc: &mut Choices<'a>) -> Option<()> {
        // `text`, then `delta`'s and `message`'s reasoning_content, reasoning and content.
        let mut parts: [Option<Cow<'a, str>>; 7] = Default::default();
        let mut finish_reason = None;
        let (mut role, mut tool) = (false, false);
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "delta" | "message" => {
                    let (bit, at) = if key == "delta" { (0, 1) } else { (1, 4) };
                    seen.once(bit)?;
                    if c.peek() == Some(b'n') {
                        c.null()?;
                    } else {
                        let [rc, r, ct] = &mut parts[at..at + 3] else {
                            unreachable!()
                        };
                        c.delta([rc, r, ct], &mut role, &mut tool)?;
                    }
                }
                "text" => {
                    seen.once(2)?;
                    parts[0] = c.opt(Cur::string)?;
                }
                "finish_reason" => {
                    seen.once(3)?;
                    finish_reason = c.opt(Cur::string)?;
                }
                _ => c.skip(3)?,
            }
            Some(())
        })?;
        acc.any = true;
        if finish_reason.is_some() {
            acc.finish_reason = finish_reason;
        }
        // parts: text, then (reasoning_content, reasoning, content) of delta and of message.
        for (i, t) in parts.into_iter().enumerate() {
            if let Some(t) = t {
                if matches!(i, 1 | 2 | 4 | 5) {
                    acc.reasoning |= !t.is_empty();
                } else {
                    acc.answer |= !t.is_empty();
                }
                push_text(&mut acc.text, t);
            }
        }
        acc.role |= role;
        acc.tool |= tool;
        Some(())
    }

    /// A `delta` or `message` object: its reasoning_content, reasoning and content into
    /// `parts`, and whether it has a non-null role or tool_calls.
    fn delta(
        &mut self,
        parts: [&mut Option<Cow<'a, str>>; 3],
        role: &mut bool,
        tool: &mut bool,
    ) -> Option<()> {
        let [reasoning_content, reasoning, content] = parts;
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "role" | "tool_calls" => {
                    let (bit, flag) = if key == "role" {
                        (0, &mut *role)
                    } else {
                        (4, &mut *tool)
                    };
                    seen.once(bit)?;
                    // Option<IgnoredAny>: null is absent, any valid value present.
                    if c.opt(|c| c.skip(4))?.is_some() {
                        *flag = true;
                    }
                }
                "content" => {
                    seen.once(1)?;
                    *content = c.opt(Cur::string)?;
                }
                "reasoning_content" => {
                    seen.once(2)?;
                    *reasoning_content = c.opt(Cur::string)?;
                }
                "reasoning" => {
                    seen.once(3)?;
                    *reasoning = c.opt(Cur::string)?;
                }
                _ => c.skip(4)?,
            }
            Some(())
        })?;
        Some(())
    }

    /// A `*_tokens_details` object: its `cached_tokens` and `reasoning_tokens` (serde reads
    /// both keys in either object, so both are checked here too).
    fn details(&mut self) -> Option<(Option<i64>, Option<i64>)> {
        let (mut cached, mut reasoning) = (None, None);
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "cached_tokens" => {
                    seen.once(0)?;
                    cached = c.opt(Cur::int)?;
                }
                "reasoning_tokens" => {
                    seen.once(1)?;
                    reasoning = c.opt(Cur::int)?;
                }
                _ => c.skip(3)?,
            }
            Some(())
        })?;
        Some((cached, reasoning))
    }

    fn usage(&mut self) -> Option<Usage> {
        let mut out = Usage::default();
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "prompt_tokens" => {
                    seen.once(0)?;
                    out.prompt_tokens = c.opt(Cur::int)?;
                }
                "completion_tokens" => {
                    seen.once(1)?;
                    out.completion_tokens = c.opt(Cur::int)?;
                }
                "prompt_tokens_details" => {
                    seen.once(2)?;
                    if let Some((cached, _)) = c.opt(Cur::details)? {
                        out.cached_tokens = cached;
                    }
                }
                "completion_tokens_details" => {
                    seen.once(3)?;
                    if let Some((_, reasoning)) = c.opt(Cur::details)? {
                        out.reasoning_tokens = reasoning;
                    }
                }
                _ => c.skip(2)?,
            }
            Some(())
        })?;
        Some(out)
    }
}
