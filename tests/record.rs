//! End-to-end tests of `trace record` through the real binary (issue 5): a raw HTTP/1.1 client
//! talks to a `trace sim` child directly and through the recording proxy; the streams must match
//! byte for byte, the file must hold every request without secrets, replay it with `trace
//! replay`, and record each error path as a row.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trace_format::{TraceRecord, read_all};

use crate::util::*;

const SECRET: &str = "sk-PLANTED-SECRET-4242";

fn sim() -> Proc {
    spawn(
        &[
            "sim", "--port", "0", "--ttft", "50ms", "--itl", "10ms", "--model", "m",
        ],
        "serving model",
    )
}

fn record(upstream: Option<&str>, out: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "record",
        "--listen",
        "127.0.0.1:0",
        "-o",
        out.to_str().unwrap(),
        "--drain-timeout",
        "5s",
    ];
    if let Some(u) = upstream {
        args.extend(["--upstream", u]);
    }
    args.extend(extra);
    spawn(&args, "recording on")
}

/// Waits for a child to exit on its own (it was given --max-requests).
fn wait_exit(p: &mut Proc) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "trace record did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn request(addr: &str, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let rest = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Reply { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        if start + size + 2 > b.len() {
            return out;
        }
        b = &b[start + size + 2..];
    }
}

/// Removes what legitimately differs between two simulator processes: the `created` seconds.
fn normalise(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(s.len());
    let mut rest: &str = &s;
    while let Some(i) = rest.find("\"created\":") {
        let (a, b) = rest.split_at(i + "\"created\":".len());
        out.push_str(a);
        out.push('N');
        rest = b.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

fn chat(content: &str, max_tokens: u32, stream: bool) -> String {
    format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}],"max_tokens":{max_tokens},"stream":{stream},"stream_options":{{"include_usage":true}}}}"#
    )
}

/// The exchanges a client makes, in order: (method, path, body).
fn script() -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("GET", "/v1/models", String::new()),
        (
            "POST",
            "/v1/chat/completions",
            chat("one two three", 5, true),
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat("a b c d e f g", 8, true),
        ),
        (
            "POST",
            "/v1/completions",
            r#"{"model":"m","prompt":"x y","max_tokens":4,"stream":true}"#.to_string(),
        ),
        (
            "POST",
            "/v1/chat/completions",
            chat("no stream here", 3, false),
        ),
    ]
}

fn by_arrival(mut recs: Vec<TraceRecord>) -> Vec<TraceRecord> {
    recs.sort_by_key(|r| r.scheduled_ns);
    recs
}

#[test]
fn proxied_streams_are_byte_identical_recorded_without_secrets_and_replayable() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("captured.parquet");
    let direct = sim();
    let upstream = sim();
    let mut rec = record(
        Some(&format!("http://{}", upstream.addr)),
        &out,
        &[
            "--max-requests",
            "4",
            "--store",
            "prompts,outputs",
            "--label",
            "e2e",
        ],
    );
    let auth = format!("Bearer {SECRET}");
    let headers = [("Authorization", auth.as_str()), ("X-Api-Key", SECRET)];
    for (i, (method, path, body)) in script().into_iter().enumerate() {
        if i > 0 {
            // Spaced arrivals, so the replay has a timeline to reproduce.
            std::thread::sleep(Duration::from_millis(150));
        }
        let a = request(&direct.addr, method, path, &body, &headers);
        let b = request(&rec.addr, method, path, &body, &headers);
        assert_eq!(a.status, b.status, "{path}");
        assert_eq!(
            normalise(&a.body),
            normalise(&b.body),
            "{method} {path}: proxied body differs from direct"
        );
        if body.contains("\"stream\":true") {
            assert!(b.head.contains("text/event-stream"), "{}", b.head);
        }
    }
    assert_eq!(wait_exit(&mut rec), 0);

    let raw = std::fs::read(&out).unwrap();
    assert!(
        !raw.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "a planted API key reached the file"
    );
    let (m, recs) = read_all(&out).unwrap();
    assert_eq!(m.get(trace_format::meta::LABEL), Some("e2e"));
    let recs = by_arrival(recs);
    assert_eq!(recs.len(), 4, "one row per generation request: {recs:?}");
    let want_max = [5, 8, 4, 3];
    for (r, want) in recs.iter().zip(want_max) {
        assert_eq!(r.error_kind, None, "{r:?}");
        assert_eq!(r.status, Some(200));
        assert_eq!(r.max_tokens, Some(want));
        assert_eq!(r.output_tokens, Some(want), "{r:?}");
        assert_eq!(r.sent_ns, Some(r.scheduled_ns));
        assert!(r.headers_ns.unwrap() >= r.scheduled_ns);
        assert!(r.first_byte_ns.unwrap() >= r.headers_ns.unwrap());
        assert_eq!(r.chunk_ns.len(), r.chunk_tokens.len());
        assert_eq!(r.chunk_tokens.iter().sum::<i32>(), want);
        assert!(r.prompt_hash.is_some());
        assert!(!r.output_text.as_deref().unwrap_or("").is_empty());
    }
    assert_eq!(recs[0].endpoint.as_deref(), Some("chat"));
    assert_eq!(recs[2].endpoint.as_deref(), Some("completions"));
    assert_eq!(recs[0].prompt.as_deref(), Some("one two three"));
    assert_eq!(recs[0].prompt_tokens, Some(3));
    assert_eq!(recs[3].chunk_ns.len(), 1, "a JSON body is one chunk");

    // Replay the capture against the direct simulator: same arrival offsets, same lengths.
    let replayed = d.path().join("replayed.parquet");
    let o = trace()
        .args([
            "replay",
            out.to_str().unwrap(),
            "--url",
            &format!("http://{}", direct.addr),
            "-o",
            replayed.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (_, again) = read_all(&replayed).unwrap();
    let again = by_arrival(again);
    assert_eq!(again.len(), 4);
    let rel = |v: &[TraceRecord]| -> Vec<i64> {
        v.iter()
            .map(|r| r.scheduled_ns - v[0].scheduled_ns)
            .collect()
    };
    for (a, b) in rel(&recs).iter().zip(rel(&again)) {
        assert!((a - b).abs() < 1_000_000, "arrival offsets {a} vs {b}");
    }
    for (a, b) in recs.iter().zip(&again) {
        assert_eq!(a.request_id, b.request_id);
        assert_eq!(a.max_tokens, b.max_tokens);
        assert_eq!(a.prompt_tokens, b.prompt_tokens);
        assert_eq!(a.output_tokens, b.output_tokens, "{b:?}");
    }
}

#[test]
fn error_paths_are_rows_and_reach_the_client() {
    let d = tempfile::tempdir().unwrap();
    // Upstream down: a port that was just free.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out_dead = d.path().join("dead.parquet");
    let mut rec = record(
        Some(&format!("http://{dead}")),
        &out_dead,
        &["--max-requests", "1"],
    );
    let r = request(
        &rec.addr,
        "POST",
        "/v1/chat/completions",
        &chat("hi", 3, true),
        &[],
    );
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("unreachable"));
    assert_eq!(wait_exit(&mut rec), 0);
    let (_, recs) = read_all(&out_dead).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].error_kind.as_deref(), Some("connect"));
    assert_eq!(recs[0].status, Some(502));

    // Upstream 500 passed through, then a client that hangs up mid-stream.
    let upstream = sim();
    let direct = sim();
    let out = d.path().join("errors.parquet");
    let mut rec = record(
        Some(&format!("http://{}", upstream.addr)),
        &out,
        &["--max-requests", "2"],
    );
    let fault = [("x-sim-fault", "http500")];
    let body = chat("hi", 3, true);
    let a = request(&direct.addr, "POST", "/v1/chat/completions", &body, &fault);
    let b = request(&rec.addr, "POST", "/v1/chat/completions", &body, &fault);
    assert_eq!((a.status, b.status), (500, 500));
    assert_eq!(normalise(&a.body), normalise(&b.body));

    // 300 tokens at 10 ms each: the client leaves after the first bytes.
    let mut s = TcpStream::connect(&rec.addr).unwrap();
    let long = chat("hi", 300, true);
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{long}",
        long.len()
    )
    .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    assert!(n > 0);
    std::thread::sleep(Duration::from_millis(100));
    drop(s);
    assert_eq!(wait_exit(&mut rec), 0);
    let (_, recs) = read_all(&out).unwrap();
    let recs = by_arrival(recs);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].status, Some(500));
    assert_eq!(
        recs[0].error_kind.as_deref(),
        Some("http_5xx"),
        "{:?}",
        recs[0]
    );
    assert_eq!(
        recs[1].error_kind.as_deref(),
        Some("cancelled"),
        "{:?}",
        recs[1]
    );
    assert!(
        recs[1].output_tokens.unwrap_or(0) < 300,
        "cut short: {:?}",
        recs[1]
    );
}

#[test]
fn with_no_upstream_it_fronts_the_simulator() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo.parquet");
    let mut rec = record(None, &out, &["--max-requests", "1"]);
    let r = request(
        &rec.addr,
        "POST",
        "/v1/completions",
        r#"{"prompt":"a b","max_tokens":3,"stream":true}"#,
        &[],
    );
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("[DONE]"));
    assert_eq!(wait_exit(&mut rec), 0);
    let (_, recs) = read_all(&out).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].error_kind, None, "{:?}", recs[0]);
}

#[test]
fn ctrl_c_and_sigterm_drain_and_leave_a_valid_file() {
    // SIGTERM is how systemd, docker and Kubernetes stop a service: it drains like Ctrl-C and
    // exits 128 + 15, as a process the signal ended would.
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("int.parquet");
        let upstream = sim();
        let mut rec = record(Some(&format!("http://{}", upstream.addr)), &out, &[]);
        let r = request(
            &rec.addr,
            "POST",
            "/v1/completions",
            r#"{"prompt":"a","max_tokens":2,"stream":true}"#,
            &[],
        );
        assert_eq!(r.status, 200);
        let pid = rec.child.id().to_string();
        let k = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(k.success());
        assert_eq!(
            wait_exit(&mut rec),
            code,
            "{signal} drains and exits {code}"
        );
        let (_, recs) = read_all(&out).unwrap();
        assert_eq!(recs.len(), 1, "{signal}");
    }
}

/// Credentials in the upstream URL are used and never stored, printed or shown by inspect.
#[test]
fn credentials_in_the_upstream_url_are_never_stored_or_printed() {
    const PASS: &str = "sk-URL-PASSWORD-9191";
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("cred.parquet");
    let upstream = sim();
    let url = format!("http://admin:{PASS}@{}", upstream.addr);
    let child = trace()
        .args([
            "record",
            "--listen",
            "127.0.0.1:0",
            "--max-requests",
            "1",
            "-o",
        ])
        .arg(&out)
        .args(["--upstream", &url])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut p = Proc {
        child,
        addr: String::new(),
    };
    let mut err = BufReader::new(p.child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if let Some(i) = line.find("recording on http://") {
            p.addr = line[i + "recording on http://".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            break;
        }
        line.clear();
    }
    assert!(!p.addr.is_empty(), "{seen}");
    let r = request(
        &p.addr,
        "POST",
        "/v1/chat/completions",
        &chat("hi", 2, true),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(wait_exit(&mut p), 0);
    err.read_to_string(&mut seen).unwrap();
    assert!(!seen.contains(PASS), "stderr: {seen}");
    let raw = std::fs::read(&out).unwrap();
    assert!(!raw.windows(PASS.len()).any(|w| w == PASS.as_bytes()));
    let o = run(&["inspect", out.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("http://***@127.0.0.1"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains(PASS));
}
