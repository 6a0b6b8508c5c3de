//! Protocol conformance, queueing, faults and ground truth, over real HTTP on 127.0.0.1.

use std::time::Duration;

use serde_json::{Value, json};
use trace_sim::engine::{EngineParams, SchedulePolicy, StepCoeffs};
use trace_sim::{SimConfig, SimHandle, TimeModel, spawn};

/// A simulator serving the model `m`, the name these tests send (it answers 404 to others).
fn sim(mut config: SimConfig) -> SimHandle {
    config.model = "m".into();
    spawn(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn fast() -> SimConfig {
    SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(2))
}

fn client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own (the workspace's is ring).
    trace_sys::tls::install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Splits an SSE body into its events (comments kept, as `:` lines).
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

fn data(ev: &str) -> Option<&str> {
    ev.strip_prefix("data: ")
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    path: &str,
    body: Value,
    fault: Option<&str>,
) -> reqwest::Response {
    let mut req = c.post(format!("{url}{path}")).json(&body);
    if let Some(f) = fault {
        req = req.header("X-Sim-Fault", f);
    }
    req.send().await.unwrap()
}

fn chat_body(max_tokens: u32) -> Value {
    json!({
        "model": "m", "stream": true, "max_tokens": max_tokens, "ignore_eos": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "one two three four"}],
    })
}

/// Every data event of a streamed chat response parsed, checked against the chunk schema.
fn check_chat_stream(body: &str, max_tokens: u32, prompt: u32) {
    let evs = events(body);
    assert_eq!(evs.last().map(String::as_str), Some("data: [DONE]"));
    let chunks: Vec<Value> = evs[..evs.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(data(e).expect("data line")).expect("event is JSON"))
        .collect();
    let first = &chunks[0];
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let mut words = 0;
    let mut finish = Vec::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], first["id"]);
        assert_eq!(c["model"], "m");
        assert!(c["created"].is_u64());
        for ch in c["choices"].as_array().unwrap() {
            assert_eq!(ch["index"], 0);
            if let Some(t) = ch["delta"]["content"].as_str() {
                words += t.split_whitespace().count();
            }
            if !ch["finish_reason"].is_null() {
                finish.push(ch["finish_reason"].clone());
            }
        }
    }
    assert_eq!(words, max_tokens as usize);
    assert_eq!(finish, vec![json!("length")]);
    // Role event, one event per token, the usage event.
    assert_eq!(chunks.len(), max_tokens as usize + 2);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    // The prefix cache's share is checked in its own test; the counts here.
    let mut u = usage["usage"].clone();
    assert!(u["prompt_tokens_details"]["cached_tokens"].is_u64(), "{u}");
    u.as_object_mut().unwrap().remove("prompt_tokens_details");
    assert_eq!(
        u,
        json!({"prompt_tokens": prompt, "completion_tokens": max_tokens, "total_tokens": prompt + max_tokens})
    );
}

#[tokio::test]
async fn chat_stream_conforms() {
    let s = sim(fast());
    let c = client();
    let r = post(&c, &s.url(), "/v1/chat/completions", chat_body(7), None).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    check_chat_stream(&r.text().await.unwrap(), 7, 4);
    s.shutdown().unwrap();
}

#[tokio::test]
async fn chat_stream_conforms_on_engine_profile() {
    let mut cfg = SimConfig::default();
    if let TimeModel::Engine(p) = &mut cfg.time {
        // Speed the profile up: the protocol, not the timing, is under test.
        p.coeffs = StepCoeffs {
            a_ns: 2e6,
            b_ns_per_prefill_token: 0.0,
            c_ns_per_decode_seq: 0.0,
            d_ns_per_kv_token: 0.0,
        };
    }
    let s = sim(cfg);
    let c = client();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (c, url) = (c.clone(), s.url());
            tokio::spawn(async move {
                post(&c, &url, "/v1/chat/completions", chat_body(9), None)
                    .await
                    .text()
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        check_chat_stream(&t.await.unwrap(), 9, 4);
    }
    s.shutdown().unwrap();
}

#[tokio::test]
async fn completions_stream_counts_token_ids() {
    let s = sim(fast());
    let c = client();
    let body = json!({"model": "m", "prompt": [1, 2, 3, 4, 5], "max_tokens": 4, "stream": true,
        "stream_options": {"include_usage": true, "continuous_usage_stats": true}});
    let text = post(&c, &s.url(), "/v1/completions", body, None)
        .await
        .text()
        .await
        .unwrap();
    let evs = events(&text);
    assert_eq!(evs.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = evs[..evs.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(data(e).unwrap()).unwrap())
        .collect();
    assert_eq!(chunks.len(), 5);
    for (i, c) in chunks[..4].iter().enumerate() {
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["choices"][0]["text"], format!("w{i} "));
        assert_eq!(c["usage"]["completion_tokens"], i + 1);
        assert_eq!(c["usage"]["prompt_tokens"], 5);
    }
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 4);
    s.shutdown().unwrap();
}

#[tokio::test]
async fn non_streaming_and_info_routes() {
    let s = sim(fast());
    let c = client();
    let body =
        json!({"messages": [{"role": "user", "content": "a b c"}], "max_completion_tokens": 6});
    let v: Value = post(&c, &s.url(), "/v1/chat/completions", body, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion");
    // No model in the request: the served one.
    assert_eq!(v["model"], "m");
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        6
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9,
               "prompt_tokens_details": {"cached_tokens": 0}})
    );
    let v: Value = post(
        &c,
        &s.url(),
        "/v1/completions",
        json!({"prompt": "x y", "max_tokens": 2}),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "w0 w1 ");
    let m: Value = c
        .get(format!("{}/v1/models", s.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["data"][0]["id"], "m");
    assert_eq!(
        c.get(format!("{}/health", s.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = c
        .get(format!("{}/metrics", s.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
    ] {
        assert!(
            metrics.contains(&format!("{name}{{model_name=\"m\"}}")),
            "{metrics}"
        );
    }
    let bad = c
        .post(format!("{}/v1/chat/completions", s.url()))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let e: Value = bad.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid request body")
    );
    s.shutdown().unwrap();
}

fn tiny_engine(max_num_seqs: usize, kv_blocks: u64, step_ms: f64) -> SimConfig {
    SimConfig {
        time: TimeModel::Engine(EngineParams {
            max_num_seqs,
            kv_blocks,
            block_size: 16,
            max_batched_tokens: 2048,
            watermark_blocks: 0,
            policy: SchedulePolicy::PrefillFirst,
            coeffs: StepCoeffs {
                a_ns: step_ms * 1e6,
                b_ns_per_prefill_token: 0.0,
                c_ns_per_decode_seq: 0.0,
                d_ns_per_kv_token: 0.0,
            },
        }),
        ..SimConfig::default()
    }
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test]
async fn burst_beyond_max_running_waits() {
    let s = sim(tiny_engine(2, 1000, 50.0));
    let c = client();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (c, url) = (c.clone(), s.url());
            tokio::spawn(async move {
                post(
                    &c,
                    &url,
                    "/v1/completions",
                    json!({"prompt": "a b", "max_tokens": 10}),
                    None,
                )
                .await
                .status()
            })
        })
        .collect();
    let mut seen = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let m = c
            .get(format!("{}/metrics", s.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let (run, wait) = (
            gauge(&m, "vllm:num_requests_running"),
            gauge(&m, "vllm:num_requests_waiting"),
        );
        assert!(run <= 2.0, "{m}");
        if run == 2.0 && wait == 3.0 {
            seen = true;
            break;
        }
    }
    assert!(seen, "never saw 2 running and 3 waiting");
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    s.shutdown().unwrap();
}

#[tokio::test]
async fn kv_exhaustion_preempts() {
    // 5 blocks of 16 tokens: two 16-word prompts growing to 56 tokens each cannot both fit.
    let s = sim(tiny_engine(8, 5, 1.0));
    let c = client();
    let prompt = (0..16)
        .map(|i| format!("p{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (c, url, prompt) = (c.clone(), s.url(), prompt.clone());
            tokio::spawn(async move {
                let v: Value = post(
                    &c,
                    &url,
                    "/v1/completions",
                    json!({"prompt": prompt, "max_tokens": 40}),
                    None,
                )
                .await
                .json()
                .await
                .unwrap();
                v["usage"]["completion_tokens"].as_u64()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Some(40));
    }
    let m = c
        .get(format!("{}/metrics", s.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(gauge(&m, "vllm:num_preemptions_total") >= 1.0, "{m}");
    s.shutdown().unwrap();
}

#[tokio::test]
async fn http_error_faults() {
    let s = sim(fast());
    let c = client();
    for (fault, status) in [("http500", 500), ("http429", 429)] {
        let r = post(
            &c,
            &s.url(),
            "/v1/chat/completions",
            chat_body(5),
            Some(fault),
        )
        .await;
        assert_eq!(r.status(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], status);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("simulated")
        );
    }
    let r = post(
        &c,
        &s.url(),
        "/v1/chat/completions",
        chat_body(5),
        Some("bogus"),
    )
    .await;
    assert_eq!(r.status(), 400);
    s.shutdown().unwrap();
}

#[tokio::test]
async fn stream_faults() {
    let s = sim(fast());
    let c = client();
    let url = s.url();
    let body = |f: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            post(&c, &url, "/v1/chat/completions", chat_body(8), Some(f))
                .await
                .text()
                .await
        }
    };

    // Error event after HTTP 200, then [DONE].
    let t = body("error-event").await.unwrap();
    let evs = events(&t);
    assert_eq!(evs.last().unwrap(), "data: [DONE]");
    let err: Value = serde_json::from_str(data(&evs[evs.len() - 2]).unwrap()).unwrap();
    assert_eq!(err["error"]["code"], 500);
    assert!(events(&t).len() < 12);

    // Reset mid-stream: the body read fails.
    assert!(body("reset").await.is_err());

    // Malformed JSON in one event; the others parse and [DONE] follows.
    let t = body("malformed").await.unwrap();
    let evs = events(&t);
    assert_eq!(evs.last().unwrap(), "data: [DONE]");
    let bad = evs[..evs.len() - 1]
        .iter()
        .filter(|e| serde_json::from_str::<Value>(data(e).unwrap()).is_err())
        .count();
    assert_eq!(bad, 1);

    // No [DONE].
    let t = body("no-done").await.unwrap();
    assert!(!t.contains("[DONE]"));
    assert!(t.contains("\"usage\""));

    // Multi-token events: 8 tokens in events of 3, 3, 2.
    let t = body("multi-token:3").await.unwrap();
    let per_event: Vec<usize> = events(&t)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(data(e)?).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(|s| s.split_whitespace().count())
        })
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(per_event, vec![3, 3, 2]);

    // Keep-alive comments between events; data events unchanged.
    let t = body("keep-alive").await.unwrap();
    let evs = events(&t);
    assert_eq!(evs.iter().filter(|e| e.starts_with(':')).count(), 8);
    let data_only: String = evs
        .iter()
        .filter(|e| !e.starts_with(':'))
        .map(|e| format!("{e}\n\n"))
        .collect();
    check_chat_stream(&data_only, 8, 4);

    // Stall past the client's timeout.
    trace_sys::tls::install_provider();
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = short
        .post(format!("{url}/v1/chat/completions"))
        .header("X-Sim-Fault", "stall")
        .json(&chat_body(8))
        .send()
        .await
        .unwrap();
    let e = r.text().await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    s.shutdown().unwrap();
}

#[tokio::test]
async fn fault_fractions_are_deterministic_per_seed() {
    let statuses = || async {
        let mut cfg = fast();
        cfg.faults = "http500=0.3,http429=0.2".parse().unwrap();
        cfg.seed = 11;
        let s = sim(cfg);
        let c = client();
        let mut out = Vec::new();
        for _ in 0..40 {
            let r = post(
                &c,
                &s.url(),
                "/v1/completions",
                json!({"prompt": "a", "max_tokens": 1}),
                None,
            )
            .await;
            out.push(r.status().as_u16());
        }
        s.shutdown().unwrap();
        out
    };
    let (a, b) = (statuses().await, statuses().await);
    assert_eq!(a, b);
    assert!(
        a.contains(&500) && a.contains(&429) && a.contains(&200),
        "{a:?}"
    );
}

#[tokio::test]
async fn shutdown_ends_a_stalled_stream() {
    let s = sim(fast());
    let url = s.url();
    let t = tokio::spawn(async move {
        let r = post(
            &client(),
            &url,
            "/v1/chat/completions",
            chat_body(8),
            Some("stall"),
        )
        .await;
        r.text().await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::task::spawn_blocking(move || s.shutdown())
        .await
        .unwrap();
    assert!(stopped.is_ok());
    assert!(t.await.unwrap().is_err());
}

#[tokio::test]
async fn ground_truth_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.jsonl");
    let mut cfg = fast();
    cfg.truth = Some(path.clone());
    let s = sim(cfg);
    let c = client();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let r = c
        .post(format!("{}/v1/chat/completions", s.url()))
        .header("X-Request-Id", "req-abc")
        .json(&chat_body(6))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-abc");
    r.text().await.unwrap();
    post(
        &c,
        &s.url(),
        "/v1/completions",
        json!({"prompt": "a", "max_tokens": 3, "stream": true}),
        Some("multi-token:2"),
    )
    .await
    .text()
    .await
    .unwrap();
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    tokio::task::spawn_blocking(move || s.shutdown())
        .await
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let a = lines.iter().find(|l| l["request_id"] == "req-abc").unwrap();
    let times: Vec<u64> = a["event_unix_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let toks: Vec<u64> = a["event_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(toks, vec![0, 1, 1, 1, 1, 1, 1, 0]);
    let arrival = a["arrival_unix_ns"].as_u64().unwrap();
    // One anchor for the run: comparable with this process's wall clock (generous tolerance).
    assert!(
        arrival + 50_000_000 >= before && arrival <= after,
        "{before} {arrival} {after}"
    );
    assert!(times[0] >= arrival && times.windows(2).all(|w| w[0] <= w[1]));
    // The scripted 5 ms TTFT separates the role event from the first token.
    assert!(times[1] - arrival >= 4_000_000);
    let b = lines.iter().find(|l| l["request_id"] != "req-abc").unwrap();
    assert_eq!(b["event_tokens"], json!([2, 1]));
    assert_eq!(b["fault"], "multi-token:2");
}

#[tokio::test]
async fn tokenizer_counts_prompt_tokens() {
    // `Whitespace` splits punctuation off words, so the tokenizer and the word count disagree:
    // "w1,w2 w1" is 4 tokens but 2 words.
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(
        &tok,
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
            "decoder":null,"model":{"type":"WordLevel","vocab":{"<unk>":0,"w1":1,"w2":2,",":3},
            "unk_token":"<unk>"}}"#,
    )
    .unwrap();
    let prompt_tokens = |config: SimConfig| async move {
        let s = sim(config);
        let body = json!({"model": "m", "prompt": "w1,w2 w1", "max_tokens": 2, "stream": true,
            "stream_options": {"include_usage": true}});
        let text = post(&client(), &s.url(), "/v1/completions", body, None)
            .await
            .text()
            .await
            .unwrap();
        s.shutdown().unwrap();
        let evs = events(&text);
        let usage: Value = serde_json::from_str(data(&evs[evs.len() - 2]).unwrap()).unwrap();
        usage["usage"]["prompt_tokens"].as_u64().unwrap()
    };
    assert_eq!(prompt_tokens(fast()).await, 2, "words without a tokenizer");
    let mut with_tok = fast();
    with_tok.tokenizer = Some(tok);
    assert_eq!(prompt_tokens(with_tok).await, 4);

    let mut missing = fast();
    missing.tokenizer = Some(dir.path().join("nope.json"));
    let err = spawn(missing, "127.0.0.1:0".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.json"), "{err}");
}
