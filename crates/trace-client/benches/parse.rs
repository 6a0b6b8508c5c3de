//! Criterion bench of the client's hot path without a network: SSE parsing, event
//! classification, token accounting and per-read timestamps over a realistic vLLM chat stream.

use criterion::{Criterion, Throughput, criterion_main};
use std::hint::black_box;
use trace_client::StreamState;

fn stream(events: usize) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":9,"total_tokens":9,"completion_tokens":0}}"#);
    s.extend_from_slice(b"\n\n");
    for i in 1..events {
        s.extend_from_slice(format!(r#"data: {{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{{"index":0,"delta":{{"content":" w{i}"}},"logprobs":null,"finish_reason":null}}],"usage":{{"prompt_tokens":9,"total_tokens":{},"completion_tokens":{i}}}}}"#, 9 + i).as_bytes());
        s.extend_from_slice(b"\n\n");
    }
    s.extend_from_slice(b"data: [DONE]\n\n");
    s
}

fn bench(c: &mut Criterion) {
    let events = 1000;
    let bytes = stream(events);
    let mut g = c.benchmark_group("client_parse");
    g.throughput(Throughput::Elements(events as u64));
    // Reads of 64 bytes split most events across reads; whole-event reads are the common case
    // on loopback, where each event arrives in its own read.
    for read in [64usize, 256, 4096] {
        g.bench_function(format!("chat_stream_read_{read}B"), |b| {
            b.iter(|| {
                let start = std::time::Instant::now();
                let mut st = StreamState::new(false);
                for part in bytes.chunks(read) {
                    // One clock read per read(), as the client does.
                    let t = start.elapsed().as_nanos() as i64;
                    st.feed(black_box(part), t);
                }
                assert_eq!(st.chunks(), events);
                black_box(st.tokens())
            })
        });
    }
    g.finish();
}

// criterion_group! generates an undocumented pub fn.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;

criterion_main!(benches);
