//! The replay's lean HTTP/1.1 client, for plain `http://` targets: one TCP connection per
//! in-flight request, kept alive in a pool between requests, and no buffer held while a stream
//! waits for its next token.
//!
//! Why not hyper here (reqwest, which is hyper, still carries HTTPS, HTTP/2, URLs with
//! credentials and every other route of the tool): a hyper client connection holds an 8 KiB
//! read buffer, an 8 KiB write buffer and a 32-slot dispatch channel (~9 KiB) for its whole
//! life, 25 KiB of the ~31 KiB an in-flight stream cost (heaptrack, docs/benchmarks.md); at
//! 50,000 streams that is 1.2 GB of buffers that sit empty between tokens. Here a waiting
//! stream holds its socket and a few words of framing state: every read goes into one buffer
//! per worker thread and is decoded and handed to the caller before the task yields again.
//! Response heads are parsed by `httparse` (hyper's parser); the chunked framing is decoded
//! byte by byte so that a chunk-size line split across two reads needs no carry buffer.
//!
//! One resend, as the reqwest path does (see send.rs): a request whose connection closed
//! before any response byte is sent once more on a new connection and counted.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Each worker thread's read buffer: one socket read at a time goes through it.
const READ_BUF: usize = 64 * 1024;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Most header lines in one response head.
const MAX_HEADERS: usize = 96;

/// An idle kept-alive connection older than this is closed, not reused: below the 5 s
/// keep-alive of uvicorn (vLLM, SGLang) and llama.cpp's server, as on the reqwest path.
const IDLE: Duration = Duration::from_secs(4);

thread_local! {
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF].into_boxed_slice());
}

/// This client carries `url`: plain `http://`, no credentials in the URL (reqwest turns those
/// into basic auth; HTTPS and HTTP/2 are reqwest's).
pub(crate) fn carries(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| u.scheme() == "http" && u.username().is_empty() && u.password().is_none())
}

/// One target route over plain HTTP/1.1, with its pool of idle connections.
#[derive(Debug)]
pub(crate) struct H1 {
    host: String,
    port: u16,
    /// The URL, for error messages.
    url: String,
    /// Request line and every header but `x-request-id` and `content-length`.
    head: Vec<u8>,
    idle: Mutex<Vec<(TcpStream, Instant)>>,
}

impl H1 {
    /// A client for `url` when this client can carry it (plain `http://`, no credentials in the
    /// URL); `fixed` are the route's own headers, `extra` the user's (`--header`), which give
    /// way to the route's of the same name.
    pub(crate) fn new(
        url: &str,
        fixed: &[(HeaderName, HeaderValue)],
        extra: &[(HeaderName, HeaderValue)],
    ) -> Option<Self> {
        if !carries(url) {
            return None;
        }
        let u = reqwest::Url::parse(url).ok()?;
        // An IPv6 literal comes bracketed; the resolver takes it bare.
        let host = u
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u.port_or_known_default()?;
        let authority = match u.port() {
            Some(p) => format!("{}:{p}", u.host_str()?),
            None => u.host_str()?.to_string(),
        };
        let mut path = u.path().to_string();
        if let Some(q) = u.query() {
            path.push('?');
            path.push_str(q);
        }
        let mut head = format!("POST {path} HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
        let own = |n: &HeaderName| {
            fixed.iter().any(|(k, _)| k == n)
                || n == "host"
                || n == "x-request-id"
                || n == "content-length"
                || n == "transfer-encoding"
        };
        for (k, v) in fixed.iter().chain(extra.iter().filter(|(k, _)| !own(k))) {
            head.extend_from_slice(k.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if !fixed.iter().chain(extra).any(|(k, _)| k == "accept") {
            head.extend_from_slice(b"accept: */*\r\n");
        }
        Some(Self {
            host,
            port,
            url: crate::redact(url),
            head,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends one POST and reads the response head. `Err` is a message: the request never got
    /// a response (connect failure, a closed connection, an invalid head).
    pub(crate) async fn send(
        &self,
        request_id: &HeaderValue,
        body: Vec<u8>,
        resends: &AtomicU64,
    ) -> Result<Response<'_>, String> {
        let mut msg = Vec::with_capacity(self.head.len() + 64 + body.len());
        msg.extend_from_slice(&self.head);
        msg.extend_from_slice(b"x-request-id: ");
        msg.extend_from_slice(request_id.as_bytes());
        msg.extend_from_slice(format!("\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes());
        msg.extend_from_slice(&body);
        drop(body);
        let mut resent = false;
        loop {
            let mut conn = match self.take_idle() {
                Some(c) => c,
                None => self.connect().await?,
            };
            let head = match conn.write_all(&msg).await {
                Ok(()) => read_head(&conn).await,
                Err(e) if closed(&e) => Err(HeadError::Closed(e.to_string())),
                Err(e) => Err(HeadError::Other(e.to_string())),
            };
            match head {
                Ok((head, pending, at)) => {
                    return Ok(Response::new(self, conn, head, pending, at));
                }
                Err(HeadError::Closed(_)) if !resent => {
                    resent = true;
                    resends.fetch_add(1, Ordering::Relaxed);
                }
                Err(HeadError::Closed(why)) => {
                    return Err(format!(
                        "error sending request to {}: connection closed before message completed ({why}), also when sent once more",
                        self.url
                    ));
                }
                Err(HeadError::Other(why)) => {
                    return Err(format!("error reading the response of {}: {why}", self.url));
                }
            }
        }
    }

    async fn connect(&self) -> Result<TcpStream, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                format!(
                    "error sending request to {}: resolving {}: {e}",
                    self.url, self.host
                )
            })?
            .collect();
        let mut last = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    // Each event goes out as the server writes it; the request is one write.
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some((a, e)),
            }
        }
        Err(match last {
            Some((a, e)) => format!(
                "error sending request to {}: tcp connect to {a}: {e}",
                self.url
            ),
            None => format!(
                "error sending request to {}: {} resolved to no address",
                self.url, self.host
            ),
        })
    }

    /// The newest idle connection still open and not idle too long.
    fn take_idle(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((c, since)) = idle.pop() {
            if since.elapsed() >= IDLE {
                // Older ones lie below: all too old.
                idle.clear();
                return None;
            }
            // A connection the server has closed (or that holds stray bytes) is not reused.
            let mut probe = [0u8; 1];
            if matches!(c.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, c: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle
            .first()
            .is_some_and(|(_, since)| since.elapsed() >= IDLE)
        {
            idle.retain(|(_, since)| since.elapsed() < IDLE);
        }
        idle.push((c, Instant::now()));
    }
}

enum HeadError {
    /// Closed before any response byte: the request may be sent once more.
    Closed(String),
    Other(String),
}

fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// A `content-type` of a JSON body (`application/json`, `...+json`): read whole, not as events.
pub(crate) fn json_type(content_type: &str) -> bool {
    content_type.contains("json")
}

/// What a response head says.
#[derive(Debug)]
struct Head {
    status: u16,
    http10: bool,
    is_json: bool,
    framing: Framing,
    keep_alive: bool,
}

/// How the body ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the server closes the connection.
    Close,
    Done,
}

/// The chunked decoder's place in the framing.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// In a chunk-size line: the size so far, and whether an extension began.
    Size {
        n: u64,
        digits: u8,
        ext: bool,
    },
    SizeLf {
        n: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines; `empty` when the current line has no byte yet.
    Trailer {
        empty: bool,
        cr: bool,
    },
}

const CHUNK_START: Chunk = Chunk::Size {
    n: 0,
    digits: 0,
    ext: false,
};

/// Waits until `c` is readable and reads once into this thread's buffer, handing `f` the bytes
/// read (none: the peer closed) and the instant the read returned; a wake with nothing to read
/// is waited out. No buffer is held while waiting.
async fn read_once<T>(c: &TcpStream, mut f: impl FnMut(&[u8], Instant) -> T) -> io::Result<T> {
    loop {
        c.readable().await?;
        let got = BUF.with_borrow_mut(|buf| match c.try_read(buf) {
            Ok(n) => Ok(Some(f(&buf[..n], Instant::now()))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        })?;
        if let Some(v) = got {
            return Ok(v);
        }
    }
}

/// Reads until a whole response head is in; the bytes after it are returned with it.
async fn read_head(conn: &TcpStream) -> Result<(Head, Vec<u8>, Instant), HeadError> {
    let mut acc: Vec<u8> = Vec::new();
    let mut any = false;
    // When the last read returned: the head's instant, and that of the body bytes read with it.
    let mut at = Instant::now();
    loop {
        if !acc.is_empty() {
            match parse_head(&acc).map_err(HeadError::Other)? {
                Some((n, None)) => {
                    // 1xx: an interim response; the real one follows.
                    acc.drain(..n);
                    continue;
                }
                Some((n, Some(head))) => return Ok((head, acc.split_off(n), at)),
                None if acc.len() > MAX_HEAD => {
                    return Err(HeadError::Other(format!(
                        "response head longer than {} KiB",
                        MAX_HEAD / 1024
                    )));
                }
                None => {}
            }
        }
        let r = read_once(conn, |bytes, now| {
            at = now;
            acc.extend_from_slice(bytes);
            bytes.len()
        })
        .await;
        match r {
            Ok(0) if !any => {
                return Err(HeadError::Closed("the server closed the connection".into()));
            }
            Ok(0) => {
                return Err(HeadError::Other(
                    "connection closed in the middle of the response head".into(),
                ));
            }
            Ok(_) => any = true,
            Err(e) if !any && closed(&e) => return Err(HeadError::Closed(e.to_string())),
            Err(e) => return Err(HeadError::Other(e.to_string())),
        }
    }
}

/// A complete head's length and what it says (None for a 1xx), or None while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Option<Head>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    let status = r.code.unwrap_or(0);
    if (100..200).contains(&status) && status != 101 {
        return Ok(Some((n, None)));
    }
    let http10 = r.version == Some(0);
    let (mut length, mut chunked, mut close, mut keep, mut is_json) =
        (None::<u64>, false, false, false, false);
    for h in r.headers.iter() {
        let v = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let l: u64 = v
                .parse()
                .map_err(|_| format!("invalid content-length '{v}'"))?;
            if length.is_some_and(|p| p != l) {
                return Err("two different content-length headers".into());
            }
            length = Some(l);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in v.split(',') {
                close |= t.trim().eq_ignore_ascii_case("close");
                keep |= t.trim().eq_ignore_ascii_case("keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            is_json = json_type(v);
        }
    }
    let framing = if status == 204 || status == 304 {
        Framing::Done
    } else if chunked {
        Framing::Chunked(CHUNK_START)
    } else if let Some(l) = length {
        if l == 0 {
            Framing::Done
        } else {
            Framing::Length(l)
        }
    } else {
        Framing::Close
    };
    let keep_alive = !close && (!http10 || keep) && !matches!(framing, Framing::Close);
    Ok(Some((
        n,
        Some(Head {
            status,
            http10,
            is_json,
            framing,
            keep_alive,
        }),
    )))
}

/// One response whose head has been read; [`Response::read`] hands over its body.
#[derive(Debug)]
pub(crate) struct Response<'a> {
    client: &'a H1,
    conn: Option<TcpStream>,
    framing: Framing,
    keep_alive: bool,
    /// Body bytes that came in with the head, and when that read returned.
    pending: Vec<u8>,
    head_at: Instant,
    status: u16,
    http10: bool,
    is_json: bool,
}

impl<'a> Response<'a> {
    fn new(client: &'a H1, conn: TcpStream, head: Head, pending: Vec<u8>, at: Instant) -> Self {
        let done = matches!(head.framing, Framing::Done);
        let mut r = Self {
            client,
            conn: Some(conn),
            framing: head.framing,
            // Bytes after a body that was over with its head: not a connection to reuse.
            keep_alive: head.keep_alive && (!done || pending.is_empty()),
            pending,
            head_at: at,
            status: head.status,
            http10: head.http10,
            is_json: head.is_json,
        };
        r.release_if_done();
        r
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    pub(crate) fn is_json(&self) -> bool {
        self.is_json
    }

    /// When the read that completed the head returned.
    pub(crate) fn head_at(&self) -> Instant {
        self.head_at
    }

    pub(crate) fn version(&self) -> &'static str {
        if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" }
    }

    /// Waits for the next read of the body and hands its payload to `sink` with the instant
    /// the read returned (each piece of a read that held several chunks gets the same
    /// instant). `Ok(false)`: the body had ended.
    pub(crate) async fn read(
        &mut self,
        sink: &mut (dyn FnMut(Instant, &[u8]) + Send),
    ) -> io::Result<bool> {
        if !self.pending.is_empty() {
            let p = std::mem::take(&mut self.pending);
            let r = decode(
                &mut self.framing,
                &mut self.keep_alive,
                &p,
                self.head_at,
                sink,
            );
            self.release_if_done();
            return r.map(|()| true);
        }
        let Self {
            conn,
            framing,
            keep_alive,
            ..
        } = self;
        let Some(c) = conn.as_ref() else {
            return Ok(false);
        };
        if matches!(framing, Framing::Done) {
            return Ok(false);
        }
        let r = read_once(c, |bytes, now| {
            if !bytes.is_empty() {
                decode(framing, keep_alive, bytes, now, sink).map(|()| true)
            } else if matches!(framing, Framing::Close) {
                *framing = Framing::Done;
                Ok(false)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the end of the body",
                ))
            }
        })
        .await
        .and_then(|r| r);
        match r {
            Ok(more) => {
                self.release_if_done();
                Ok(more)
            }
            Err(e) => {
                // A broken framing or connection: the connection is not reused.
                self.keep_alive = false;
                Err(e)
            }
        }
    }

    /// A body read to its end on a kept-alive connection: back to the pool.
    fn release_if_done(&mut self) {
        if matches!(self.framing, Framing::Done)
            && let Some(c) = self.conn.take()
            && self.keep_alive
        {
            self.client.put_idle(c);
        }
    }
}

/// Decodes one read's bytes by the framing, handing each run of payload to `sink`. Bytes after
/// the body's end mean the connection cannot be reused.
fn decode(
    framing: &mut Framing,
    keep_alive: &mut bool,
    mut bytes: &[u8],
    now: Instant,
    sink: &mut (dyn FnMut(Instant, &[u8]) + Send),
) -> io::Result<()> {
    while !bytes.is_empty() {
        match framing {
            Framing::Done => {
                *keep_alive = false;
                return Ok(());
            }
            Framing::Close => {
                sink(now, bytes);
                return Ok(());
            }
            Framing::Length(left) => {
                bytes = take_payload(left, bytes, now, sink);
                if *left == 0 {
                    *framing = Framing::Done;
                }
            }
            Framing::Chunked(state) => {
                if let Chunk::Data(left) = state {
                    bytes = take_payload(left, bytes, now, sink);
                    if *left == 0 {
                        *state = Chunk::DataCr;
                    }
                    continue;
                }
                let b = bytes[0];
                bytes = &bytes[1..];
                match chunk_step(*state, b)? {
                    Some(next) => *state = next,
                    None => *framing = Framing::Done,
                }
            }
        }
    }
    Ok(())
}

/// Hands up to `left` bytes of payload to `sink`, counting them off; the rest is returned.
fn take_payload<'b>(
    left: &mut u64,
    bytes: &'b [u8],
    now: Instant,
    sink: &mut (dyn FnMut(Instant, &[u8]) + Send),
) -> &'b [u8] {
    let k = usize::try_from(*left)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    sink(now, &bytes[..k]);
    *left -= k as u64;
    &bytes[k..]
}

fn bad_chunk(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid chunked body: {what}"),
    )
}

/// One framing byte of a chunked body; None: the body is over.
fn chunk_step(state: Chunk, b: u8) -> io::Result<Option<Chunk>> {
    Ok(Some(match state {
        Chunk::Size { n, digits, ext } => match b {
            b'\r' if digits > 0 => Chunk::SizeLf { n },
            b'\n' if digits > 0 => after_size(n),
            _ if ext => state,
            b';' | b' ' | b'\t' if digits > 0 => Chunk::Size {
                n,
                digits,
                ext: true,
            },
            _ => {
                let d = (b as char)
                    .to_digit(16)
                    .ok_or_else(|| bad_chunk("a chunk size that is not hexadecimal"))?;
                if digits >= 15 {
                    return Err(bad_chunk("a chunk size too large"));
                }
                Chunk::Size {
                    n: n * 16 + u64::from(d),
                    digits: digits + 1,
                    ext: false,
                }
            }
        },
        Chunk::SizeLf { n } if b == b'\n' => after_size(n),
        Chunk::SizeLf { .. } => return Err(bad_chunk("CR without LF after a chunk size")),
        Chunk::Data(_) => unreachable!("payload is taken whole in decode"),
        Chunk::DataCr if b == b'\r' => Chunk::DataLf,
        Chunk::DataCr | Chunk::DataLf if b == b'\n' => CHUNK_START,
        Chunk::DataCr | Chunk::DataLf => return Err(bad_chunk("no CRLF after a chunk")),
        Chunk::Trailer { empty, cr } => match b {
            b'\n' if empty => return Ok(None),
            b'\n' => Chunk::Trailer {
                empty: true,
                cr: false,
            },
            b'\r' => Chunk::Trailer { empty, cr: true },
            _ if cr => return Err(bad_chunk("CR without LF in a trailer")),
            _ => Chunk::Trailer {
                empty: false,
                cr: false,
            },
        },
    }))
}

fn after_size(n: u64) -> Chunk {
    if n == 0 {
        Chunk::Trailer {
            empty: true,
            cr: false,
        }
    } else {
        Chunk::Data(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, reads: &[&[u8]]) -> (io::Result<Vec<u8>>, Framing, bool) {
        let mut f = framing;
        let mut keep = true;
        let mut out = Vec::new();
        let now = Instant::now();
        for r in reads {
            let mut sink = |_: Instant, b: &[u8]| out.extend_from_slice(b);
            if let Err(e) = decode(&mut f, &mut keep, r, now, &mut sink) {
                return (Err(e), f, keep);
            }
        }
        (Ok(out), f, keep)
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let body: &[u8] =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..body.len() {
            for split2 in split..body.len() {
                let (out, f, keep) = decode_all(
                    Framing::Chunked(CHUNK_START),
                    &[&body[..split], &body[split..split2], &body[split2..]],
                );
                assert_eq!(out.unwrap(), b"helloabcdefghijklmnopqrstuvwxyz");
                assert!(matches!(f, Framing::Done), "{split} {split2}: {f:?}");
                assert!(keep);
            }
        }
    }

    #[test]
    fn bad_chunk_framing_is_an_error_and_extra_bytes_spoil_reuse() {
        let (out, _, _) = decode_all(Framing::Chunked(CHUNK_START), &[b"zz\r\n"]);
        assert!(out.unwrap_err().to_string().contains("hexadecimal"));
        let (out, _, _) = decode_all(Framing::Chunked(CHUNK_START), &[b"2\r\nabXY"]);
        assert!(out.unwrap_err().to_string().contains("CRLF"));
        let (out, f, keep) = decode_all(Framing::Length(3), &[b"abcdef"]);
        assert_eq!(out.unwrap(), b"abc");
        assert!(matches!(f, Framing::Done));
        assert!(!keep);
    }

    #[test]
    fn heads_say_framing_and_reuse() {
        let h = |s: &str| parse_head(s.as_bytes()).unwrap().unwrap().1.unwrap();
        let a = h(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        assert!(matches!(a.framing, Framing::Chunked(_)) && a.keep_alive && !a.is_json);
        let b = h(
            "HTTP/1.1 400 Bad\r\ncontent-type: application/json\r\ncontent-length: 10\r\nconnection: close\r\n\r\n",
        );
        assert!(matches!(b.framing, Framing::Length(10)) && !b.keep_alive && b.is_json);
        let c = h("HTTP/1.0 200 OK\r\n\r\n");
        assert!(matches!(c.framing, Framing::Close) && !c.keep_alive && c.http10);
        assert!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\n")
                .unwrap()
                .unwrap()
                .1
                .is_none()
        );
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
