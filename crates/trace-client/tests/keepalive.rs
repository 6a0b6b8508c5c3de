//! The lean HTTP/1.1 client's connection life: kept-alive connections reused request after
//! request, chunk-size lines split across TCP writes, a pooled connection the server closed
//! replaced without a failed row, and the request head it writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trace_client::{Client, ClientConfig, Prompt, RequestSpec, Transport};
use trace_format::TraceRecord;

/// A server answering every request of a connection with a chunked SSE stream of `tokens`
/// events whose chunk framing is written in pieces (size line, payload and CRLF apart, a few
/// ms between), keeping the connection open for `linger_ms` after each response. Counts
/// connections; keeps each request head.
async fn keepalive_server(
    tokens: usize,
    linger_ms: u64,
) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let conns = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (conns2, heads2) = (conns.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            conns2.fetch_add(1, Ordering::SeqCst);
            let heads = heads2.clone();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    // One request: head, then content-length bytes of body.
                    let (head_end, len) = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            heads.lock().unwrap().push(head);
                            break (p + 4, len);
                        }
                        let tick = tokio::time::timeout(
                            Duration::from_millis(linger_ms),
                            s.read(&mut tmp),
                        );
                        match tick.await {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
                            _ => return,
                        }
                    };
                    while buf.len() < head_end + len {
                        let n = s.read(&mut tmp).await.unwrap();
                        buf.extend_from_slice(&tmp[..n]);
                    }
                    buf.drain(..head_end + len);
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    s.write_all(head.as_bytes()).await.unwrap();
                    let mut events: Vec<String> = (0..tokens)
                        .map(|i| format!(r#"data: {{"choices":[{{"index":0,"delta":{{"content":"t{i}"}},"finish_reason":null}}]}}"#))
                        .collect();
                    events.push(
                        r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":TOK,"total_tokens":0}}"#
                            .replace("TOK", &tokens.to_string()),
                    );
                    events.push("data: [DONE]".into());
                    for e in events {
                        let payload = format!("{e}\n\n");
                        // The size line in two writes, then the payload, then its CRLF.
                        let size = format!("{:x}", payload.len());
                        let (a, b) = size.split_at(1);
                        for piece in [a, &format!("{b}\r\n"), &payload, "\r\n"] {
                            s.write_all(piece.as_bytes()).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    s.write_all(b"0\r\n\r\n").await.unwrap();
                }
            });
        }
    });
    (url, conns, heads)
}

fn spec(i: usize) -> RequestSpec {
    RequestSpec {
        request_id: format!("req-{i}"),
        prompt: Prompt::Text("w1 w2 w3".into()),
        prompt_tokens: Some(3),
        max_tokens: Some(16),
        keep_output: false,
    }
}

async fn send(client: &Client, i: usize) -> TraceRecord {
    let clock = trace_sys::RunClock::start();
    let mut rec = TraceRecord::default();
    client.send(&spec(i), &clock, &mut rec).await;
    rec
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection_and_split_chunk_lines_decode() {
    let (url, conns, heads) = keepalive_server(5, 5_000).await;
    let mut cfg = ClientConfig::new(&url, "m");
    cfg.api_key = Some("sk-test".into());
    cfg.transport = Transport {
        headers: vec![Transport::parse_header("X-Gateway: g1").unwrap()],
        ..Default::default()
    };
    let client = Client::new(cfg).unwrap();
    for i in 0..3 {
        let rec = send(&client, i).await;
        assert_eq!(rec.error_kind, None, "{rec:?}");
        assert_eq!(rec.output_tokens, Some(5));
        // Five content events and the finish event, in order.
        assert_eq!(rec.chunk_tokens, vec![1, 1, 1, 1, 1, 0], "{rec:?}");
        assert!(rec.chunk_ns.windows(2).all(|w| w[0] <= w[1]), "{rec:?}");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one kept-alive connection");
    assert_eq!(client.http_version(), Some("HTTP/1.1"));
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 3);
    for (i, h) in heads.iter().enumerate() {
        assert!(
            h.starts_with("post /v1/chat/completions http/1.1\r\n"),
            "{h}"
        );
        for want in [
            format!("x-request-id: req-{i}"),
            "content-type: application/json".into(),
            "authorization: bearer sk-test".into(),
            "x-gateway: g1".into(),
            "host: 127.0.0.1:".into(),
        ] {
            assert!(h.contains(&want), "{want} missing from {h}");
        }
    }
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_replaced_without_a_failed_row() {
    // The server closes an idle connection after 50 ms; the next request comes 300 ms later.
    let (url, conns, _) = keepalive_server(2, 50).await;
    let client = Client::new(ClientConfig::new(&url, "m")).unwrap();
    let a = send(&client, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = send(&client, 1).await;
    for r in [&a, &b] {
        assert_eq!(r.error_kind, None, "{r:?}");
        assert_eq!(r.output_tokens, Some(2));
    }
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // Seen closed in the pool, not resent.
    assert_eq!(client.resends().load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_request_id_that_cannot_be_a_header_is_an_invalid_request_row() {
    let (url, conns, _) = keepalive_server(1, 1_000).await;
    let client = Client::new(ClientConfig::new(&url, "m")).unwrap();
    let mut s = spec(0);
    s.request_id = "bad\nid".into();
    let mut rec = TraceRecord::default();
    client
        .send(&s, &trace_sys::RunClock::start(), &mut rec)
        .await;
    assert_eq!(
        rec.error_kind.as_deref(),
        Some("invalid_request"),
        "{rec:?}"
    );
    assert_eq!(conns.load(Ordering::SeqCst), 0);
}
