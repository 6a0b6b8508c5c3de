//! Property: any split of a byte stream into reads yields the same events, and the same chunk
//! and token counts through the whole parse + classify path.

use proptest::prelude::*;
use trace_client::StreamState;
use trace_client::sse::{SseBody, SseParser};

fn events(reads: &[&[u8]]) -> Vec<(u8, Vec<u8>)> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for r in reads {
        p.feed(r, 0, |e| match e.body {
            SseBody::Data { data, .. } => out.push((0, data.to_vec())),
            SseBody::Unknown { value, .. } => out.push((1, value.to_vec())),
            SseBody::Comment => out.push((2, Vec::new())),
        });
    }
    out
}

fn stream() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b": hello\n\n");
    s.extend_from_slice(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\r\n\r\n");
    for i in 0..5 {
        s.extend_from_slice(
            format!("data:{{\"choices\":[{{\"delta\":{{\"content\":\"x{i}\"}}}}]}}\n\n").as_bytes(),
        );
    }
    s.extend_from_slice(
        b"event: message\nid: 3\ndata: {\"choices\":[{\"text\":\"a\"}]}\ndata: \n\n",
    );
    s.extend_from_slice(b"error: {\"error\":\"x\"}\r\n\r\n");
    s.extend_from_slice(
        b"data: {\"choices\":[],\"usage\":{\"completion_tokens\":6}}\n\ndata: [DONE]\n\n",
    );
    s
}

proptest! {
    #[test]
    fn any_split_same_events(cuts in proptest::collection::vec(0usize..1000, 0..40)) {
        let s = stream();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (s.len() + 1)).collect();
        cuts.sort_unstable();
        let mut reads = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([s.len()]) {
            reads.push(&s[prev..c]);
            prev = c;
        }
        let whole = events(&[&s]);
        prop_assert_eq!(whole.len(), 11);
        prop_assert_eq!(events(&reads), whole);

        let mut a = StreamState::new(false);
        a.feed(&s, 0);
        let mut b = StreamState::new(false);
        for (i, r) in reads.iter().enumerate() {
            b.feed(r, i as i64);
        }
        prop_assert_eq!((a.chunks(), a.tokens(), a.keepalives(), a.done()), (b.chunks(), b.tokens(), b.keepalives(), b.done()));
    }
}
