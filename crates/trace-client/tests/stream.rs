//! The request function against a scripted local server: one test per engine quirk, exact chunk
//! counts and token counts, error kinds, and arrival-time properties.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use trace_client::{Client, ClientConfig, Endpoint, Prompt, RequestSpec};
use trace_format::TraceRecord;

const ROLE: &str = r#"{"id":"c","object":"chat.completion.chunk","model":"served-m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#;
const FINISH: &str =
    r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#;
const DONE: &[u8] = b"data: [DONE]\n\n";

fn content(s: &str) -> String {
    format!(
        r#"{{"id":"c","choices":[{{"index":0,"delta":{{"content":"{s}"}},"finish_reason":null}}],"usage":null}}"#
    )
}

fn usage(p: i64, c: i64) -> String {
    format!(
        r#"{{"id":"c","choices":[],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{}}}}}"#,
        p + c
    )
}

fn spec() -> RequestSpec {
    RequestSpec {
        request_id: "req-1".into(),
        prompt: Prompt::Text("w1 w2 w3".into()),
        prompt_tokens: Some(3),
        max_tokens: Some(16),
        keep_output: false,
    }
}

fn cfg(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url, "m");
    c.timeout = Duration::from_secs(5);
    c
}

async fn run_cfg(c: ClientConfig) -> TraceRecord {
    let client = Client::new(c).unwrap();
    let start = trace_sys::RunClock::start();
    let mut rec = TraceRecord {
        request_id: "req-1".into(),
        ..Default::default()
    };
    client.send(&spec(), &start, &mut rec).await;
    rec
}

async fn run(url: &str) -> TraceRecord {
    run_cfg(cfg(url)).await
}

fn assert_times(rec: &TraceRecord) {
    let sent = rec.sent_ns.unwrap();
    let end = rec.end_ns.unwrap();
    assert!(end >= sent);
    if let Some(h) = rec.headers_ns {
        assert!(h >= sent);
        if let Some(f) = rec.first_byte_ns {
            assert!(f >= h);
        }
    }
    assert!(
        rec.chunk_ns.windows(2).all(|w| w[0] <= w[1]),
        "chunk_ns not monotonic"
    );
    if let (Some(f), Some(c)) = (rec.first_byte_ns, rec.chunk_ns.first()) {
        assert!(*c >= f);
    }
    if let Some(c) = rec.chunk_ns.last() {
        assert!(*c <= end);
    }
    assert_eq!(rec.chunk_ns.len(), rec.chunk_tokens.len());
}

#[tokio::test]
async fn openai_chat_role_only_and_usage_only() {
    let s = serve(
        sse_head(),
        vec![
            w(data(ROLE)),
            Step::Sleep(5),
            w(data(&content("a"))),
            w(data(&content("b"))),
            w(data(&content("c"))),
            w(data(FINISH)),
            w(data(&usage(7, 3))),
            w(DONE),
        ],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_times(&rec);
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.chunk_tokens, vec![0, 1, 1, 1, 0, 0]);
    assert_eq!(rec.output_tokens, Some(3));
    assert_eq!(rec.prompt_tokens, Some(7));
    assert_eq!(rec.token_source.as_deref(), Some("usage"));
    assert_eq!(rec.finish_reason.as_deref(), Some("stop"));
    assert_eq!(rec.endpoint.as_deref(), Some("chat"));
    assert_eq!(rec.model.as_deref(), Some("served-m"));
    assert_eq!(rec.max_tokens, Some(16));
    assert!(rec.prompt_hash.is_some());
    assert_eq!(rec.output_text, None);
    // The request carried what engines need.
    let body = s.body_json(0);
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], "m");
    assert_eq!(body["max_tokens"], 16);
    assert_eq!(body["messages"][0]["content"], "w1 w2 w3");
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["stream_options"]["continuous_usage_stats"], true);
    assert!(body.get("ignore_eos").is_none());
    let head = s.head(0).to_ascii_lowercase();
    assert!(head.starts_with("post /v1/chat/completions "), "{head}");
    assert!(head.contains("x-request-id: req-1"), "{head}");
}

/// transformers serve: role event, the templated prompt echoed as two content events with the
/// headers, the generated tokens much later, usage on the finish event and no [DONE]. The echo
/// must not stop the TTFT clock: usage says 2 tokens, so the two leading content events get 0.
#[tokio::test]
async fn prompt_echo_before_generation_is_not_a_token() {
    let finish_with_usage = r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
    let s = serve(
        sse_head(),
        vec![
            w(data(
                r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
            )),
            w(data(&content("<|im_start|> user w1 w2 w3"))),
            w(data(&content(" <|im_start|> assistant"))),
            Step::Sleep(100),
            w(data(&content("w17"))),
            w(data(&content(" w4"))),
            w(data(finish_with_usage)),
        ],
    )
    .await;
    let mut c = cfg(&s.url());
    c.continuous_usage = false;
    let rec = run_cfg(c).await;
    assert_times(&rec);
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![0, 0, 0, 1, 1, 0]);
    assert_eq!(rec.output_tokens, Some(2));
    // The first token-bearing event is the one after the scripted delay.
    assert!(rec.chunk_ns[3] - rec.chunk_ns[2] >= 90_000_000);
}

#[tokio::test]
async fn completions_route_ignore_eos_extra_body_and_text() {
    let text = r#"{"id":"x","object":"text_completion","choices":[{"index":0,"text":"hi","finish_reason":null}]}"#;
    let fin = r#"{"id":"x","object":"text_completion","choices":[{"index":0,"text":"","finish_reason":"length"}]}"#;
    let s = serve(
        sse_head(),
        vec![w(data(text)), w(data(text)), w(data(fin)), w(DONE)],
    )
    .await;
    let mut c = cfg(&format!("{}/v1/", s.url()));
    c.endpoint = Endpoint::Completions;
    c.ignore_eos = true;
    c.continuous_usage = false;
    c.store_output = true;
    c.store_prompt = true;
    c.transport
        .headers
        .push(trace_client::Transport::parse_header("X-Gateway-Key: gw-1").unwrap());
    c.api_key = Some("sk-test".into());
    c.extra_body = Some(serde_json::json!({"temperature": 0.0, "max_tokens": 99}));
    let rec = run_cfg(c).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![1, 1, 0]);
    assert_eq!(rec.output_tokens, Some(2));
    assert_eq!(rec.token_source.as_deref(), Some("chunks"));
    assert_eq!(rec.output_text.as_deref(), Some("hihi"));
    assert_eq!(rec.prompt.as_deref(), Some("w1 w2 w3"));
    assert_eq!(rec.prompt_tokens, Some(3));
    assert_eq!(rec.finish_reason.as_deref(), Some("length"));
    let body = s.body_json(0);
    assert_eq!(body["prompt"], "w1 w2 w3");
    assert_eq!(body["ignore_eos"], true);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["max_tokens"], 99);
    assert!(
        body["stream_options"]
            .get("continuous_usage_stats")
            .is_none()
    );
    let head = s.head(0).to_ascii_lowercase();
    assert!(head.starts_with("post /v1/completions "), "{head}");
    assert!(head.contains("authorization: bearer sk-test"), "{head}");
    assert!(head.contains("x-gateway-key: gw-1"), "{head}");
}

#[tokio::test]
async fn keepalive_comments_are_not_chunks() {
    let s = serve(
        sse_head(),
        vec![
            w(b": ping\n\n"),
            w(data(&content("a"))),
            w(b":keep-alive\n\n"),
            w(data(&content("b"))),
            w(data(FINISH)),
            w(b": bye\n\n"),
            w(DONE),
        ],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![1, 1, 0]);
    assert_eq!(rec.output_tokens, Some(2));
}

#[tokio::test]
async fn events_split_across_reads_and_several_in_one_read() {
    let a = data(&content("a"));
    let (a1, a2) = a.split_at(17);
    let mut many = Vec::new();
    for x in ["b", "c", "d"] {
        many.extend_from_slice(&data(&content(x)));
    }
    // CRLF framing and "data:" without a space on the last events.
    let tail = format!("data:{FINISH}\r\n\r\ndata:[DONE]\r\n\r\n");
    let s = serve_opts(
        chunked_sse_head(),
        vec![
            w(data(ROLE)),
            Step::Sleep(50),
            w(a1),
            Step::Sleep(50),
            w(a2),
            Step::Sleep(50),
            w(&many),
            Step::Sleep(50),
            w(tail),
        ],
        true,
    )
    .await;
    let rec = run(&s.url()).await;
    assert_times(&rec);
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![0, 1, 1, 1, 1, 0]);
    // The split event is stamped by the read that completed it, well after the first half.
    assert!(
        rec.chunk_ns[1] - rec.chunk_ns[0] >= 90_000_000,
        "{:?}",
        rec.chunk_ns
    );
    // Events of one read share that read's timestamp.
    assert_eq!(rec.chunk_ns[2], rec.chunk_ns[3]);
    assert_eq!(rec.chunk_ns[3], rec.chunk_ns[4]);
}

#[tokio::test]
async fn continuous_usage_multi_token_events() {
    let ev = |text: &str, c: i64| {
        format!(
            r#"{{"choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}],"usage":{{"prompt_tokens":4,"completion_tokens":{c}}}}}"#
        )
    };
    let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":4,"completion_tokens":0}}"#;
    let fin = r#"{"choices":[{"index":0,"delta":{"content":"z"},"finish_reason":"length"}],"usage":{"prompt_tokens":4,"completion_tokens":6}}"#;
    let s = serve(
        sse_head(),
        vec![
            w(data(role)),
            w(data(&ev("abc", 3))),
            w(data(&ev("de", 5))),
            w(data(fin)),
            w(data(&usage(4, 6))),
            w(DONE),
        ],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![0, 3, 2, 1, 0]);
    assert_eq!(rec.output_tokens, Some(6));
    assert_eq!(rec.token_source.as_deref(), Some("usage"));
}

#[tokio::test]
async fn reasoning_content_counts_as_output() {
    let r = |t: &str| {
        format!(
            r#"{{"choices":[{{"index":0,"delta":{{"reasoning_content":"{t}","content":null}}}}]}}"#
        )
    };
    let s = serve(
        sse_head(),
        vec![
            w(data(ROLE)),
            w(data(&r("think"))),
            w(data(&content("ans"))),
            w(data(FINISH)),
            w(DONE),
        ],
    )
    .await;
    let mut c = cfg(&s.url());
    c.store_output = true;
    let rec = run_cfg(c).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![0, 1, 1, 0]);
    assert_eq!(rec.output_text.as_deref(), Some("thinkans"));
}

#[tokio::test]
async fn error_event_after_200() {
    let s = serve(
        sse_head(),
        vec![
            w(data(&content("a"))),
            w(data(
                r#"{"error":{"message":"kv cache exhausted","type":"BadRequestError","code":400}}"#,
            )),
            w(DONE),
        ],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_times(&rec);
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.error_kind.as_deref(), Some("stream"));
    assert!(
        rec.error_msg
            .as_deref()
            .unwrap()
            .contains("kv cache exhausted"),
        "{:?}",
        rec.error_msg
    );
    assert_eq!(rec.chunk_tokens, vec![1]);
    assert_eq!(rec.output_tokens, Some(1));
}

#[tokio::test]
async fn llamacpp_error_line() {
    let s = serve(
        sse_head(),
        vec![
            w(data(&content("a"))),
            w(b"error: {\"error\":{\"code\":500,\"message\":\"slot died\"}}\n\n"),
            w(DONE),
        ],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_eq!(rec.error_kind.as_deref(), Some("stream"));
    assert!(
        rec.error_msg.as_deref().unwrap().contains("slot died"),
        "{:?}",
        rec.error_msg
    );
}

#[tokio::test]
async fn no_done_after_finish_is_success() {
    // transformers serve: the last event carries finish_reason and usage, then the stream closes.
    let last = r#"{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
    let s = serve(
        sse_head(),
        vec![w(data(ROLE)), w(data(&content("a"))), w(data(last))],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![0, 1, 1]);
    assert_eq!(rec.output_tokens, Some(2));
    assert_eq!(rec.finish_reason.as_deref(), Some("length"));
}

#[tokio::test]
async fn no_done_and_no_finish_is_truncated() {
    let s = serve(
        sse_head(),
        vec![w(data(ROLE)), w(data(&content("a"))), w(b"data: {\"cho")],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_times(&rec);
    assert_eq!(rec.error_kind.as_deref(), Some("stream"));
    assert!(
        rec.error_msg.as_deref().unwrap().contains("truncated"),
        "{:?}",
        rec.error_msg
    );
    assert_eq!(rec.chunk_tokens, vec![0, 1]);
}

#[tokio::test]
async fn malformed_json_is_recorded_not_fatal() {
    let s = serve(
        sse_head(),
        vec![
            w(data(&content("a"))),
            w(b"data: {broken\n\n"),
            w(data(&content("b"))),
            w(data(FINISH)),
            w(DONE),
        ],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_eq!(rec.error_kind.as_deref(), Some("parse"));
    assert!(rec.error_msg.as_deref().unwrap().contains("{broken"));
    assert_eq!(rec.chunk_tokens, vec![1, 0, 1, 0]);
}

#[tokio::test]
async fn non_streaming_json_response() {
    let body = r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"w1 w2"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    let s = serve(json_response("200 OK", body), vec![]).await;
    let mut c = cfg(&s.url());
    c.store_output = true;
    let rec = run_cfg(c).await;
    assert_times(&rec);
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![2]);
    assert_eq!(rec.output_tokens, Some(2));
    assert_eq!(rec.finish_reason.as_deref(), Some("stop"));
    assert_eq!(rec.output_text.as_deref(), Some("w1 w2"));
}

/// A 200 JSON body that is not JSON was read whole: `parse`, as the crate docs say, not a
/// truncated stream.
#[tokio::test]
async fn non_streaming_body_not_json_is_a_parse_error() {
    let s = serve(json_response("200 OK", "{not json"), vec![]).await;
    let rec = run(&s.url()).await;
    assert_times(&rec);
    assert_eq!(
        rec.error_kind.as_deref(),
        Some("parse"),
        "{:?}",
        rec.error_msg
    );
    assert!(
        rec.error_msg.as_deref().unwrap().contains("{not json"),
        "{:?}",
        rec.error_msg
    );
    assert!(rec.chunk_ns.is_empty());
}

#[tokio::test]
async fn http_errors_with_bodies() {
    let s = serve(
        json_response(
            "500 Internal Server Error",
            r#"{"error":{"message":"engine dead"}}"#,
        ),
        vec![],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_times(&rec);
    assert_eq!(rec.status, Some(500));
    assert_eq!(rec.error_kind.as_deref(), Some("http_5xx"));
    assert!(
        rec.error_msg.as_deref().unwrap().contains("engine dead"),
        "{:?}",
        rec.error_msg
    );
    assert!(rec.chunk_ns.is_empty());

    let s = serve(
        json_response(
            "429 Too Many Requests",
            r#"{"error":"Model is overloaded","error_type":"overloaded"}"#,
        ),
        vec![],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_eq!(rec.status, Some(429));
    assert_eq!(rec.error_kind.as_deref(), Some("http_4xx"));
    assert!(
        rec.error_msg.as_deref().unwrap().contains("overloaded"),
        "{:?}",
        rec.error_msg
    );

    // transformers serve refuses unknown fields.
    let s = serve(
        json_response(
            "422 Unprocessable Entity",
            r#"{"detail":"Unexpected fields in the request: {'ignore_eos'}"}"#,
        ),
        vec![],
    )
    .await;
    let mut c = cfg(&s.url());
    c.ignore_eos = true;
    let rec = run_cfg(c).await;
    assert_eq!(rec.status, Some(422));
    assert_eq!(rec.error_kind.as_deref(), Some("http_4xx"));
    let msg = rec.error_msg.unwrap();
    assert!(
        msg.contains("refused a request field") && msg.contains("ignore_eos"),
        "{msg}"
    );

    // pydantic's list form.
    let s = serve(
        json_response("422 Unprocessable Entity", r#"{"detail":[{"loc":["body","stream_options","continuous_usage_stats"],"msg":"Extra inputs are not permitted","type":"extra_forbidden"}]}"#),
        vec![],
    )
    .await;
    let rec = run(&s.url()).await;
    let msg = rec.error_msg.unwrap();
    assert!(
        msg.contains("body.stream_options.continuous_usage_stats")
            && msg.contains("continuous usage off"),
        "{msg}"
    );
}

#[tokio::test]
async fn connection_reset_mid_stream() {
    let s = serve(
        sse_head(),
        vec![
            w(data(ROLE)),
            w(data(&content("a"))),
            Step::Sleep(50),
            Step::Reset,
        ],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_times(&rec);
    assert_eq!(rec.error_kind.as_deref(), Some("stream"));
    assert_eq!(rec.chunk_tokens, vec![0, 1]);
    assert_eq!(rec.output_tokens, Some(1));
}

#[tokio::test]
async fn stall_past_timeout() {
    let s = serve(
        sse_head(),
        vec![w(data(ROLE)), w(data(&content("a"))), Step::Stall(3000)],
    )
    .await;
    let mut c = cfg(&s.url());
    c.timeout = Duration::from_millis(300);
    let rec = run_cfg(c).await;
    assert_times(&rec);
    assert_eq!(rec.error_kind.as_deref(), Some("timeout"));
    assert_eq!(rec.chunk_tokens, vec![0, 1]);
    assert!(rec.end_ns.unwrap() - rec.sent_ns.unwrap() >= 300_000_000);

    // The idle limit fires first when set shorter.
    let mut c = cfg(&s.url());
    c.idle_timeout = Some(Duration::from_millis(200));
    let rec = run_cfg(c).await;
    assert_eq!(rec.error_kind.as_deref(), Some("timeout"));
    assert!(
        rec.error_msg.as_deref().unwrap().contains("stalled"),
        "{:?}",
        rec.error_msg
    );
}

#[tokio::test]
async fn connect_refused() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let rec = run(&format!("http://{addr}")).await;
    assert_eq!(rec.error_kind.as_deref(), Some("connect"));
    assert!(rec.sent_ns.is_some() && rec.end_ns.is_some());
    assert_eq!(rec.status, None);
}

#[tokio::test]
async fn scripted_delay_is_visible_in_chunk_ns() {
    let mut steps = vec![w(data(ROLE))];
    for i in 0..4 {
        steps.push(Step::Sleep(100));
        steps.push(w(data(&content(&format!("t{i}")))));
    }
    steps.push(w(data(FINISH)));
    steps.push(w(DONE));
    let s = serve(sse_head(), steps).await;
    let rec = run(&s.url()).await;
    assert_times(&rec);
    assert_eq!(rec.chunk_tokens, vec![0, 1, 1, 1, 1, 0]);
    for i in 1..5 {
        let gap = rec.chunk_ns[i] - rec.chunk_ns[i - 1];
        // One-sided: the client may read late, never early. 10 ms allows for the first chunk
        // being read late by a loaded machine.
        assert!(gap >= 90_000_000, "gap {i} = {gap} ns");
    }
}

#[tokio::test]
async fn cancel_keeps_received_chunks() {
    let s = serve(
        sse_head(),
        vec![w(data(ROLE)), w(data(&content("a"))), Step::Stall(3000)],
    )
    .await;
    let client = Client::new(cfg(&s.url())).unwrap();
    let mut rec = TraceRecord::default();
    let start = trace_sys::RunClock::start();
    client
        .send_cancellable(
            &spec(),
            &start,
            &mut rec,
            tokio::time::sleep(Duration::from_millis(200)),
        )
        .await;
    assert_eq!(rec.error_kind.as_deref(), Some("cancelled"));
    assert_eq!(rec.chunk_tokens, vec![0, 1]);
    assert!(rec.end_ns.is_some());
}

#[tokio::test]
async fn tgi_generate_stream_shape() {
    // TGI's native stream: no space after "data:", no [DONE], ends after `details`.
    let t = |i: u32, text: &str| {
        format!(
            r#"data:{{"index":{i},"token":{{"id":{i},"text":"{text}","logprob":-0.1,"special":false}},"generated_text":null,"details":null}}"#
        )
    };
    let last = r#"data:{"index":3,"token":{"id":2,"text":"</s>","logprob":-0.1,"special":true},"generated_text":"a b","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":null}}"#;
    let s = serve(
        sse_head(),
        vec![
            w(format!("{}\n\n", t(1, "a"))),
            w(format!("{}\n\n", t(2, " b"))),
            w(format!("{last}\n\n")),
        ],
    )
    .await;
    let rec = run(&s.url()).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![1, 1, 1]);
    assert_eq!(rec.finish_reason.as_deref(), Some("eos_token"));
}

fn tokenizer_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../traces/tokenizer.json")
}

#[tokio::test]
async fn tokenizer_counts_output_without_usage() {
    let s = serve(
        sse_head(),
        vec![
            w(data(ROLE)),
            w(data(&content("w1 w2"))),
            w(data(&content(" w3"))),
            w(data(FINISH)),
            w(DONE),
        ],
    )
    .await;
    let mut c = cfg(&s.url());
    c.tokenizer = Some(tokenizer_path());
    let rec = run_cfg(c).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![0, 1, 1, 0]);
    assert_eq!(rec.output_tokens, Some(3));
    assert_eq!(rec.token_source.as_deref(), Some("tokenizer"));
    assert_eq!(rec.output_text, None);
}

#[tokio::test]
async fn list_models_and_metrics() {
    let s = serve(
        json_response(
            "200 OK",
            r#"{"object":"list","data":[{"id":"qwen","object":"model"}]}"#,
        ),
        vec![],
    )
    .await;
    let models =
        trace_client::list_models(&s.url(), None, &Default::default(), Duration::from_secs(2))
            .await
            .unwrap();
    assert_eq!(models, vec!["qwen".to_string()]);

    let s = serve(
        json_response("404 Not Found", r#"{"detail":"Not Found"}"#),
        vec![],
    )
    .await;
    let err = trace_client::scrape(&format!("{}/metrics", s.url()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, trace_client::Error::NoMetrics { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no /metrics"));

    let text =
        "vllm:num_requests_waiting{engine=\"0\"} 2\nvllm:num_requests_running{engine=\"0\"} 5\n";
    let s = serve(
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}", text.len()),
        vec![],
    )
    .await;
    let q = trace_client::scrape(&format!("{}/metrics", s.url()))
        .await
        .unwrap();
    assert_eq!(
        (q.sample.waiting, q.sample.running, q.engine.unwrap_or("")),
        (Some(2.0), Some(5.0), "vllm")
    );
}

#[tokio::test]
async fn many_concurrent_streams_reuse_one_client() {
    let s = serve(
        sse_head(),
        vec![
            w(data(ROLE)),
            w(data(&content("a"))),
            Step::Sleep(50),
            w(data(FINISH)),
            w(DONE),
        ],
    )
    .await;
    let client = Client::new(cfg(&s.url())).unwrap();
    let start = trace_sys::RunClock::start();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut sp = spec();
            sp.request_id = format!("r{i}");
            let mut rec = TraceRecord::default();
            client.send(&sp, &start, &mut rec).await;
            rec
        }));
    }
    for t in tasks {
        let rec = t.await.unwrap();
        assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
        assert_eq!(rec.chunk_tokens, vec![0, 1, 0]);
    }
    assert_eq!(s.reqs.lock().unwrap().len(), 64);
}

#[tokio::test]
async fn done_then_open_body_is_complete_at_done() {
    // A server that sends [DONE] but never ends the body must not turn into a timeout.
    let s = serve_opts(
        chunked_sse_head(),
        vec![
            w(data(&content("a"))),
            w(data(FINISH)),
            w(DONE),
            Step::Stall(3000),
        ],
        true,
    )
    .await;
    let t0 = std::time::Instant::now();
    let rec = run(&s.url()).await;
    assert!(t0.elapsed() < Duration::from_millis(2500));
    assert_times(&rec);
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![1, 0]);
    assert!(rec.end_ns.unwrap() >= *rec.chunk_ns.last().unwrap());
}

/// A server that reads each request and then, for the first `drop_first` connections, closes
/// without a byte of response (as llama-server's closing connection looks to a request written
/// into it); later connections get a one-token stream.
async fn dropping_server(
    drop_first: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let n = seen2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                // The whole request: its head and a JSON body ending in '}'.
                while !buf.ends_with(b"}") {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&tmp[..k]),
                    }
                }
                if n < drop_first {
                    return;
                }
                let mut out = sse_head().into_bytes();
                out.extend(data(&content("hi")));
                out.extend(data(FINISH));
                out.extend(DONE);
                let _ = s.write_all(&out).await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_connection_closed_before_any_response_byte_is_resent_once_and_counted() {
    let (url, seen) = dropping_server(1).await;
    let client = Client::new(cfg(&url)).unwrap();
    let clock = trace_sys::RunClock::start();
    let mut rec = TraceRecord::default();
    client.send(&spec(), &clock, &mut rec).await;
    assert_eq!(rec.error_kind, None, "{rec:?}");
    assert!(!rec.chunk_ns.is_empty(), "{rec:?}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        client.resends().load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // Never twice: a server that drops every request gives a failed row after one resend.
    let (url, seen) = dropping_server(usize::MAX).await;
    let client = Client::new(cfg(&url)).unwrap();
    let mut rec = TraceRecord::default();
    client.send(&spec(), &clock, &mut rec).await;
    assert_eq!(
        rec.error_kind,
        Some(trace_format::ErrorKind::Connect),
        "{rec:?}"
    );
    assert!(
        rec.error_msg
            .as_deref()
            .unwrap()
            .contains("closed before message completed")
    );
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
}

fn native_cfg(url: &str, endpoint: Endpoint) -> ClientConfig {
    let mut c = cfg(url);
    c.endpoint = endpoint;
    c.store_output = true;
    c
}

#[tokio::test]
async fn tgi_native_stream_no_space_no_done_details_last() {
    let tok = |i: u32, text: &str, special: bool, last: bool| {
        let (generated, details) = if last {
            (
                r#""hi there</s>""#.to_string(),
                r#"{"finish_reason":"eos_token","generated_tokens":3,"input_length":3,"seed":null}"#
                    .to_string(),
            )
        } else {
            ("null".into(), "null".into())
        };
        // TGI writes `data:` with no space after the colon.
        format!(
            "data:{{\"index\":{i},\"token\":{{\"id\":{i},\"text\":\"{text}\",\"logprob\":-0.1,\"special\":{special}}},\"top_tokens\":null,\"generated_text\":{generated},\"details\":{details}}}\n\n"
        )
    };
    let s = serve(
        sse_head(),
        vec![
            w(tok(1, "hi", false, false)),
            w(tok(2, " there", false, false)),
            w(tok(3, "</s>", true, true)),
        ],
    )
    .await;
    let rec = run_cfg(native_cfg(&s.url(), Endpoint::Tgi)).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![1, 1, 1]);
    assert_eq!(rec.output_tokens, Some(3));
    assert_eq!(rec.finish_reason.as_deref(), Some("eos_token"));
    let head = s.head(0).to_ascii_lowercase();
    assert!(head.starts_with("post /generate_stream "), "{head}");
    let body = s.body_json(0);
    assert_eq!(body["inputs"], "w1 w2 w3");
    assert_eq!(body["parameters"]["max_new_tokens"], 16);
}

#[tokio::test]
async fn triton_stream_ends_by_close_with_the_template_body() {
    let ev = |t: &str| {
        data(&format!(
            r#"{{"model_name":"ensemble","model_version":"1","sequence_end":false,"text_output":"{t}"}}"#
        ))
    };
    let s = serve(sse_head(), vec![w(ev("a")), w(ev(" b")), w(ev(" c"))]).await;
    let mut c = native_cfg(&s.url(), Endpoint::Triton);
    c.model = Some("ensemble".into());
    c.query_template = Some(
        trace_client::QueryTemplate::parse(
            r#"{"text_input": "%p", "max_tokens": 500, "stream": true, "end_id": 151643}"#,
        )
        .unwrap(),
    );
    let rec = run_cfg(c).await;
    // No [DONE], no finish reason: the close ends a Triton stream, and that is a success.
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![1, 1, 1]);
    assert_eq!(rec.output_text.as_deref(), Some("a b c"));
    let head = s.head(0).to_ascii_lowercase();
    assert!(
        head.starts_with("post /v2/models/ensemble/generate_stream "),
        "{head}"
    );
    let body = s.body_json(0);
    assert_eq!(body["text_input"], "w1 w2 w3");
    assert_eq!(body["max_tokens"], 500);
    assert_eq!(body["end_id"], 151643);
}

#[tokio::test]
async fn sglang_cumulative_text_and_counts_become_deltas() {
    let ev = |text: &str, n: u32, fin: &str| {
        data(&format!(
            r#"{{"text":"{text}","meta_info":{{"id":"x","prompt_tokens":3,"completion_tokens":{n},"cached_tokens":0,"finish_reason":{fin}}},"index":0}}"#
        ))
    };
    let s = serve(
        sse_head(),
        vec![
            w(ev("a", 1, "null")),
            // Three tokens in one event (stream interval > 1).
            w(ev("a b c d", 4, "null")),
            w(ev("a b c d e", 5, r#"{"type":"length","length":5}"#)),
            w(DONE),
        ],
    )
    .await;
    let rec = run_cfg(native_cfg(&s.url(), Endpoint::Sglang)).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![1, 3, 1]);
    assert_eq!(rec.output_tokens, Some(5));
    assert_eq!(rec.token_source.as_deref(), Some("usage"));
    assert_eq!(rec.output_text.as_deref(), Some("a b c d e"));
    assert_eq!(rec.finish_reason.as_deref(), Some("length"));
    assert!(
        s.head(0)
            .to_ascii_lowercase()
            .starts_with("post /generate ")
    );
    assert_eq!(s.body_json(0)["text"], "w1 w2 w3");
}

#[tokio::test]
async fn native_error_events_and_a_custom_text_field() {
    let s = serve(
        sse_head(),
        vec![
            w(data(r#"{"text":"a","meta_info":{"completion_tokens":1}}"#)),
            w(data(r#"{"error":"overloaded"}"#)),
        ],
    )
    .await;
    let rec = run_cfg(native_cfg(&s.url(), Endpoint::Sglang)).await;
    assert_eq!(rec.error_kind, Some(trace_format::ErrorKind::Stream));
    assert!(rec.error_msg.unwrap().contains("overloaded"));

    let ev = |t: &str| data(&format!(r#"{{"out":{{"pieces":[{{"t":"{t}"}}]}}}}"#));
    let s = serve(sse_head(), vec![w(ev("x")), w(ev("y")), w(DONE)]).await;
    let mut c = native_cfg(&s.url(), Endpoint::Custom);
    c.custom_path = Some("/my/route".into());
    c.text_field = Some("out.pieces.0.t".into());
    c.query_template = Some(trace_client::QueryTemplate::parse(r#"{"q": "%p", "n": %m}"#).unwrap());
    let rec = run_cfg(c).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.output_text.as_deref(), Some("xy"));
    assert_eq!(rec.chunk_tokens, vec![1, 1]);
    assert!(
        s.head(0)
            .to_ascii_lowercase()
            .starts_with("post /my/route ")
    );
    assert_eq!(s.body_json(0)["n"], 16);
}

#[test]
fn query_templates_are_checked_and_escape_the_prompt() {
    use trace_client::QueryTemplate;
    assert!(
        QueryTemplate::parse(r#"{"text_input": "x"}"#)
            .unwrap_err()
            .contains("%p")
    );
    assert!(
        QueryTemplate::parse(r#"{"text_input": %p}"#)
            .unwrap_err()
            .contains("not JSON")
    );
    assert!(
        QueryTemplate::parse(r#"["%p"]"#)
            .unwrap_err()
            .contains("object")
    );
    let t = QueryTemplate::parse(r#"{"text_input": "%p", "max_tokens": %m}"#).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&t.render("say \"hi\"\n\\ ok", Some(7))).unwrap();
    assert_eq!(v["text_input"], "say \"hi\"\n\\ ok");
    assert_eq!(v["max_tokens"], 7);
}

/// `event: TYPE` then `data: JSON`, as the Responses and Messages APIs write them.
fn typed(ty: &str, json: &str) -> Vec<u8> {
    format!("event: {ty}\ndata: {json}\n\n").into_bytes()
}

#[tokio::test]
async fn responses_api_reasoning_then_text_usage_on_completed() {
    let delta = |ty: &str, d: &str| {
        typed(
            ty,
            &format!(
                r#"{{"type":"{ty}","item_id":"i","output_index":0,"content_index":0,"delta":"{d}"}}"#
            ),
        )
    };
    let s = serve(
        sse_head(),
        vec![
            w(typed("response.created", r#"{"type":"response.created","response":{"id":"r","status":"in_progress","usage":null}}"#)),
            w(delta("response.reasoning_text.delta", "think")),
            Step::Sleep(20),
            w(delta("response.output_text.delta", "Hi")),
            w(delta("response.output_text.delta", " there")),
            w(typed("response.completed", r#"{"type":"response.completed","response":{"id":"r","status":"completed","usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":4},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":1},"total_tokens":10}}}"#)),
        ],
    )
    .await;
    let rec = run_cfg(native_cfg(&s.url(), Endpoint::Responses)).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![0, 1, 1, 1, 0]);
    assert_eq!(rec.chunk_reasoning, vec![0, 1, 0, 0, 0]);
    assert_eq!(rec.reasoning_tokens, Some(1));
    assert_eq!(rec.cached_tokens, Some(4));
    assert_eq!((rec.prompt_tokens, rec.output_tokens), (Some(7), Some(3)));
    assert_eq!(rec.finish_reason.as_deref(), Some("stop"));
    assert_eq!(rec.output_text.as_deref(), Some("thinkHi there"));
    let m = rec.metrics();
    assert!(m.ttfa_ns.unwrap() >= m.ttft_ns.unwrap() + 20_000_000);
    assert!(
        s.head(0)
            .to_ascii_lowercase()
            .starts_with("post /v1/responses ")
    );
    let body = s.body_json(0);
    assert_eq!(
        (body["input"].as_str(), body["max_output_tokens"].as_i64()),
        (Some("w1 w2 w3"), Some(16))
    );
}

#[tokio::test]
async fn messages_api_thinking_text_cache_and_the_key_header() {
    let delta = |i: u32, kind: &str, field: &str, t: &str| {
        typed(
            "content_block_delta",
            &format!(
                r#"{{"type":"content_block_delta","index":{i},"delta":{{"type":"{kind}","{field}":"{t}"}}}}"#
            ),
        )
    };
    let s = serve(
        sse_head(),
        vec![
            w(typed("message_start", r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"usage":{"input_tokens":5,"cache_creation_input_tokens":0,"cache_read_input_tokens":20,"output_tokens":1}}}"#)),
            w(typed("ping", r#"{"type":"ping"}"#)),
            w(delta(0, "thinking_delta", "thinking", "hmm")),
            w(delta(1, "text_delta", "text", "Yes")),
            w(typed("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":2}}"#)),
            w(typed("message_stop", r#"{"type":"message_stop"}"#)),
        ],
    )
    .await;
    let mut c = native_cfg(&s.url(), Endpoint::Messages);
    c.api_key = Some("sk-ant-test".into());
    let rec = run_cfg(c).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_reasoning.iter().sum::<i32>(), 1);
    assert_eq!(rec.chunk_tokens.iter().sum::<i32>(), 2);
    // Anthropic's input_tokens leaves the cache reads out; the prompt is both.
    assert_eq!((rec.prompt_tokens, rec.cached_tokens), (Some(25), Some(20)));
    assert_eq!(rec.output_tokens, Some(2));
    assert_eq!(rec.finish_reason.as_deref(), Some("length"));
    let head = s.head(0).to_ascii_lowercase();
    assert!(head.starts_with("post /v1/messages "), "{head}");
    assert!(
        head.contains("x-api-key: sk-ant-test") && head.contains("anthropic-version: 2023-06-01"),
        "{head}"
    );
    assert!(!head.contains("authorization"), "{head}");
    assert_eq!(s.body_json(0)["max_tokens"], 16);

    let s = serve(
        sse_head(),
        vec![w(typed(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ))],
    )
    .await;
    let rec = run_cfg(native_cfg(&s.url(), Endpoint::Messages)).await;
    assert_eq!(rec.error_kind, Some(trace_format::ErrorKind::Stream));
    assert!(rec.error_msg.unwrap().contains("Overloaded"));
}

#[tokio::test]
async fn chat_reasoning_content_is_its_own_channel() {
    let reason = |t: &str| {
        format!(
            r#"{{"id":"c","choices":[{{"index":0,"delta":{{"reasoning_content":"{t}"}},"finish_reason":null}}]}}"#
        )
    };
    let s = serve(
        sse_head(),
        vec![
            w(data(ROLE)),
            w(data(&reason("a"))),
            w(data(&reason("b"))),
            w(data(&content("x"))),
            w(data(FINISH)),
            w(data(r#"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":2}}}"#)),
            w(DONE),
        ],
    )
    .await;
    let mut c = cfg(&s.url());
    c.continuous_usage = false;
    let rec = run_cfg(c).await;
    assert_eq!(rec.error_kind, None, "{:?}", rec.error_msg);
    assert_eq!(rec.chunk_tokens, vec![0, 1, 1, 1, 0, 0]);
    assert_eq!(rec.chunk_reasoning, vec![0, 1, 1, 0, 0, 0]);
    assert_eq!(
        (rec.reasoning_tokens, rec.cached_tokens),
        (Some(2), Some(2))
    );
    let m = rec.metrics();
    assert_eq!(
        m.ttft_ns.unwrap() + (rec.chunk_ns[3] - rec.chunk_ns[1]),
        m.ttfa_ns.unwrap()
    );
}
