//! The Server-Sent Events parser: raw bytes in, events out, each stamped with the arrival time of
//! the read that completed it.
//!
//! It is fed one read at a time (`feed(bytes, t_ns)`), so the timestamp is taken by the caller
//! when the bytes arrive, before any parsing. An event ends at a blank line (`\n\n`, `\r\n\r\n`,
//! or a mix); `data:` is accepted with or without the one optional space; several `data:` lines
//! join with `\n`; `:` lines are comments (keep-alives), counted and reported; `event:`, `id:`
//! and `retry:` are kept; any other field name (llama.cpp's `error:`) is reported as an unknown
//! field with its value instead of being dropped, which is what generic SSE crates do.
//!
//! Hot path: a line that lies whole inside one read is borrowed from it; only a line split
//! across reads is copied into a carry buffer. An event whose data is one `data:` line inside
//! the read that completes it (the usual LLM chunk) is handed over straight from the read;
//! otherwise its data lines are appended to one reused buffer.

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// Arrival time (ns since run start) of the read that completed this event.
    pub t_ns: i64,
    /// What the event carries.
    pub body: SseBody<'a>,
}

/// The content of an [`SseEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseBody<'a> {
    /// An event with at least one `data:` line (joined with `\n`), plus its `event:` name if any.
    Data {
        /// The joined data lines.
        data: &'a [u8],
        /// The `event:` field, if present.
        event: Option<&'a [u8]>,
    },
    /// A field that is not part of the SSE spec, e.g. llama.cpp's `error: {...}` line. Reported
    /// when its event ends, in place of a data event, when the event has no data lines.
    Unknown {
        /// The field name (`error`).
        field: &'a [u8],
        /// Its value, one optional leading space stripped.
        value: &'a [u8],
    },
    /// One or more `:` comment lines with no data: a keep-alive.
    Comment,
}

/// Incremental SSE parser. Feed it reads in order; it keeps partial lines between reads.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet terminated at the end of the previous read.
    carry: Vec<u8>,
    /// The previous read ended with `\r`: a `\n` starting the next read belongs to it.
    pending_cr: bool,
    /// Data of the event being assembled.
    data: Vec<u8>,
    has_data: bool,
    event: Vec<u8>,
    has_event: bool,
    unknown_field: Vec<u8>,
    unknown_value: Vec<u8>,
    has_unknown: bool,
    has_comment: bool,
    /// Count of `:` comment lines seen.
    comments: u64,
    /// Last `id:` seen.
    last_id: Vec<u8>,
    /// Last `retry:` seen, in ms.
    retry_ms: Option<u64>,
}

impl SseParser {
    /// A fresh parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of `:` comment (keep-alive) lines seen so far.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// The last `id:` field seen (empty if none).
    pub fn last_id(&self) -> &[u8] {
        &self.last_id
    }

    /// The last `retry:` field seen, in ms.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// True when bytes of an unfinished event or line are buffered.
    pub fn has_partial(&self) -> bool {
        !self.carry.is_empty() || self.has_data || self.has_unknown || self.has_event
    }

    /// Feeds one read, stamped `t_ns`, and calls `on_event` for every event it completes.
    pub fn feed(&mut self, input: &[u8], t_ns: i64, mut on_event: impl FnMut(SseEvent<'_>)) {
        // An empty read carries nothing, and must not drop a pending `\r` (found by
        // tests/fuzz.rs: reads "data:\r", "", "\n" dispatched an event the whole stream has not).
        if input.is_empty() {
            return;
        }
        let mut at = 0;
        if self.pending_cr {
            self.pending_cr = false;
            if input.first() == Some(&b'\n') {
                at = 1;
            }
        }
        // The data of the event being assembled while it is one `data:` line lying whole in
        // this read: handed to `on_event` from `input`, not copied (the common event).
        let mut lent: Lent = None;
        while at < input.len() {
            let Some(pos) = memchr2(b'\n', b'\r', &input[at..]) else {
                self.carry.extend_from_slice(&input[at..]);
                break;
            };
            let line_end = at + pos;
            let mut next = line_end + 1;
            if input[line_end] == b'\r' {
                if next < input.len() {
                    if input[next] == b'\n' {
                        next += 1;
                    }
                } else {
                    self.pending_cr = true;
                }
            }
            if self.carry.is_empty() {
                let line = &input[at..line_end];
                self.line(line, Some(at), input, &mut lent, t_ns, &mut on_event);
            } else {
                self.carry.extend_from_slice(&input[at..line_end]);
                let carry = std::mem::take(&mut self.carry);
                self.line(&carry, None, input, &mut lent, t_ns, &mut on_event);
                // Keep the allocation for the next split line.
                self.carry = carry;
                self.carry.clear();
            }
            at = next;
        }
        // The event goes on in a later read: keep its data.
        self.own_lent(input, &mut lent);
    }

    /// Ends the stream: an event left without its closing blank line is dropped, as the SSE
    /// spec says, but reported so the caller can see a truncated stream. Returns true when
    /// something was pending.
    pub fn finish(&mut self) -> bool {
        let pending = self.has_partial();
        self.carry.clear();
        self.reset_event();
        pending
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event.clear();
        self.has_event = false;
        self.unknown_field.clear();
        self.unknown_value.clear();
        self.has_unknown = false;
        self.has_comment = false;
    }

    /// Copies lent data (see [`Lent`]) into the event's own buffer.
    fn own_lent(&mut self, input: &[u8], lent: &mut Lent) {
        if let Some((start, end)) = lent.take() {
            self.data.extend_from_slice(&input[start..end]);
        }
    }

    /// Handles one line; `at` is its offset in `input` when it lies there (not in `carry`).
    fn line(
        &mut self,
        line: &[u8],
        at: Option<usize>,
        input: &[u8],
        lent: &mut Lent,
        t_ns: i64,
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) {
        if line.is_empty() {
            self.dispatch(input, lent, t_ns, on_event);
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            self.has_comment = true;
            return;
        }
        let (field, value) = match memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                match at {
                    // The event's first data line, in this read: lend it (`value` ends the line).
                    Some(at) if !self.has_data => {
                        let end = at + line.len();
                        *lent = Some((end - value.len(), end));
                    }
                    _ => {
                        self.own_lent(input, lent);
                        if self.has_data {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(value);
                    }
                }
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
                self.has_event = true;
            }
            b"id" => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            b"retry" => {
                self.retry_ms = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            _ => {
                // Keep the first unknown field of the event: llama.cpp sends one `error:` line.
                if !self.has_unknown {
                    self.unknown_field.extend_from_slice(field);
                    self.unknown_value.extend_from_slice(value);
                    self.has_unknown = true;
                }
            }
        }
    }

    fn dispatch(
        &mut self,
        input: &[u8],
        lent: &mut Lent,
        t_ns: i64,
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) {
        if self.has_data {
            let data = match lent.take() {
                Some((start, end)) => &input[start..end],
                None => &self.data[..],
            };
            on_event(SseEvent {
                t_ns,
                body: SseBody::Data {
                    data,
                    event: self.has_event.then_some(&self.event[..]),
                },
            });
        } else if self.has_unknown {
            on_event(SseEvent {
                t_ns,
                body: SseBody::Unknown {
                    field: &self.unknown_field,
                    value: &self.unknown_value,
                },
            });
        } else if self.has_comment {
            on_event(SseEvent {
                t_ns,
                body: SseBody::Comment,
            });
        }
        // A blank line with nothing before it (e.g. the second of `\n\n\n`) is not an event.
        self.reset_event();
    }
}

/// Where the data of the event being assembled lies while it is a single `data:` line inside
/// the current read: `(start, end)` offsets into that read. Only valid during one `feed` call;
/// `None` when the data is in `SseParser::data` (or there is none).
type Lent = Option<(usize, usize)>;

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

fn memchr2(a: u8, b: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr2(a, b, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Ev {
        Data(String, Option<String>, i64),
        Unknown(String, String, i64),
        Comment(i64),
    }

    fn run(reads: &[(&[u8], i64)]) -> Vec<Ev> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for (b, t) in reads {
            p.feed(b, *t, |e| {
                out.push(match e.body {
                    SseBody::Data { data, event } => Ev::Data(
                        String::from_utf8_lossy(data).into_owned(),
                        event.map(|e| String::from_utf8_lossy(e).into_owned()),
                        e.t_ns,
                    ),
                    SseBody::Unknown { field, value } => Ev::Unknown(
                        String::from_utf8_lossy(field).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                        e.t_ns,
                    ),
                    SseBody::Comment => Ev::Comment(e.t_ns),
                })
            });
        }
        out
    }

    fn d(s: &str, t: i64) -> Ev {
        Ev::Data(s.to_string(), None, t)
    }

    #[test]
    fn basic_lf_and_crlf() {
        let ev = run(&[(b"data: a\n\ndata:b\r\n\r\ndata:  c\n\n", 5)]);
        assert_eq!(ev, vec![d("a", 5), d("b", 5), d(" c", 5)]);
    }

    #[test]
    fn split_across_reads_takes_completing_read_time() {
        let ev = run(&[
            (b"da", 1),
            (b"ta: hel", 2),
            (b"lo\n", 3),
            (b"\n", 4),
            (b"data: x\n\n", 5),
        ]);
        assert_eq!(ev, vec![d("hello", 4), d("x", 5)]);
    }

    #[test]
    fn crlf_split_between_reads() {
        let ev = run(&[(b"data: a\r", 1), (b"\n\r", 2), (b"\n", 3)]);
        assert_eq!(ev, vec![d("a", 2)]);
    }

    #[test]
    fn multiline_data_joined() {
        let ev = run(&[(b"data: a\ndata: b\ndata\n\n", 1)]);
        assert_eq!(ev, vec![d("a\nb\n", 1)]);
    }

    #[test]
    fn lent_data_kept_across_reads() {
        // A first data line lying in one read, then more lines or the blank line in the next.
        let ev = run(&[(b"data: a\n", 1), (b"data: b\n\n", 2)]);
        assert_eq!(ev, vec![d("a\nb", 2)]);
        let ev = run(&[(b"data: a\n", 1), (b"\ndata: c\n", 2), (b"\n", 3)]);
        assert_eq!(ev, vec![d("a", 2), d("c", 3)]);
        let ev = run(&[(b"data: a\r\ndata:b\r\n", 1), (b"\r\n", 2)]);
        assert_eq!(ev, vec![d("a\nb", 2)]);
        let ev = run(&[(b"data: a\nevent: e\nda", 1), (b"ta: b\n\ndata: z\n\n", 2)]);
        assert_eq!(
            ev,
            vec![Ev::Data("a\nb".into(), Some("e".into()), 2), d("z", 2)]
        );
    }

    #[test]
    fn comments_fields_and_unknown() {
        let mut p = SseParser::new();
        let mut n = 0;
        p.feed(
            b": ping\n\n:keep\n\nid: 7\nretry: 300\nevent: msg\ndata: x\n\n",
            0,
            |_| n += 1,
        );
        assert_eq!(n, 3);
        assert_eq!(p.comments(), 2);
        assert_eq!(p.last_id(), b"7");
        assert_eq!(p.retry_ms(), Some(300));
        let ev = run(&[(b"event: msg\ndata: x\n\nerror: {\"error\":1}\n\n", 9)]);
        assert_eq!(
            ev,
            vec![
                Ev::Data("x".into(), Some("msg".into()), 9),
                Ev::Unknown("error".into(), "{\"error\":1}".into(), 9)
            ]
        );
        assert_eq!(run(&[(b": c\n\n", 3)]), vec![Ev::Comment(3)]);
    }

    #[test]
    fn blank_lines_without_content_are_not_events() {
        assert_eq!(run(&[(b"\n\n\r\n\n", 1)]), vec![]);
    }

    #[test]
    fn unterminated_event_is_pending() {
        let mut p = SseParser::new();
        p.feed(b"data: half", 1, |_| panic!("no event"));
        assert!(p.has_partial());
        assert!(p.finish());
        assert!(!p.has_partial());
    }
}
