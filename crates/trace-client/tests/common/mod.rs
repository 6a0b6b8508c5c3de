//! A scripted HTTP/1.1 test server on 127.0.0.1:0: each connection gets the same response head,
//! then a list of steps (write bytes, sleep, reset), so engine quirks are reproduced byte for
//! byte with known delays.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One scripted action.
#[derive(Clone, Debug)]
pub enum Step {
    /// Write these bytes (one write; one chunk when chunked).
    Write(Vec<u8>),
    /// Sleep this many ms.
    Sleep(u64),
    /// Close with a TCP reset.
    Reset,
    /// Keep the connection open without writing (a stall), for this many ms.
    Stall(u64),
}

/// A captured request.
#[derive(Clone, Debug)]
pub struct Captured {
    pub head: String,
    pub body: String,
}

pub struct Server {
    pub addr: SocketAddr,
    pub reqs: Arc<Mutex<Vec<Captured>>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn body_json(&self, i: usize) -> serde_json::Value {
        let r = self.reqs.lock().unwrap();
        serde_json::from_str(&r[i].body).unwrap()
    }
    pub fn head(&self, i: usize) -> String {
        self.reqs.lock().unwrap()[i].head.clone()
    }
}

pub fn sse_head() -> String {
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n".into()
}

pub fn chunked_sse_head() -> String {
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        .into()
}

pub fn json_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `data: {json}\n\n`
pub fn data(json: &str) -> Vec<u8> {
    format!("data: {json}\n\n").into_bytes()
}

pub fn w(bytes: impl AsRef<[u8]>) -> Step {
    Step::Write(bytes.as_ref().to_vec())
}

pub async fn serve(head: String, steps: Vec<Step>) -> Server {
    serve_opts(head, steps, false).await
}

pub async fn serve_opts(head: String, steps: Vec<Step>, chunked: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reqs = Arc::new(Mutex::new(Vec::new()));
    let reqs2 = reqs.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let head = head.clone();
            let steps = steps.clone();
            let reqs = reqs2.clone();
            tokio::spawn(async move {
                let _ = handle(sock, head, steps, chunked, reqs).await;
            });
        }
    });
    Server { addr, reqs }
}

async fn handle(
    mut sock: TcpStream,
    head: String,
    steps: Vec<Step>,
    chunked: bool,
    reqs: Arc<Mutex<Vec<Captured>>>,
) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let req_head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = req_head
        .lines()
        .find_map(|l| {
            let l = l.to_ascii_lowercase();
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    reqs.lock().unwrap().push(Captured {
        head: req_head,
        body,
    });
    sock.write_all(head.as_bytes()).await?;
    sock.flush().await?;
    for s in steps {
        match s {
            Step::Write(b) => {
                if chunked {
                    let mut c = format!("{:x}\r\n", b.len()).into_bytes();
                    c.extend_from_slice(&b);
                    c.extend_from_slice(b"\r\n");
                    sock.write_all(&c).await?;
                } else {
                    sock.write_all(&b).await?;
                }
                sock.flush().await?;
            }
            Step::Sleep(ms) | Step::Stall(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await
            }
            Step::Reset => {
                sock.set_zero_linger()?;
                drop(sock);
                return Ok(());
            }
        }
    }
    if chunked {
        sock.write_all(b"0\r\n\r\n").await?;
    }
    sock.shutdown().await?;
    Ok(())
}
