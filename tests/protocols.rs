//! Every native route end to end (issue 17): the real binary replays against the simulator
//! serving TGI's `/generate_stream`, Triton's `/v2/models/{m}/generate_stream` (a query
//! template), SGLang's `/generate` and a custom template route, with exact token counts in the
//! file; and each bad route setting is exit 2 naming the flag before anything is sent.

use trace_format::read_all;

use crate::util::*;

fn sim() -> trace_sim::SimHandle {
    sim_reasoning(0)
}

/// The simulator with a thinking phase of `reasoning` tokens before each answer.
fn sim_reasoning(reasoning: u32) -> trace_sim::SimHandle {
    let mut cfg = trace_sim::SimConfig::fixed(
        std::time::Duration::from_millis(2),
        // Tokens 5 ms apart, so that reasoning and answer usually arrive in separate reads.
        std::time::Duration::from_millis(5),
    );
    cfg.model = "m".into();
    cfg.reasoning_tokens = reasoning;
    trace_sim::spawn(cfg, ([127, 0, 0, 1], 0).into()).unwrap()
}

#[test]
fn every_native_route_replays_with_exact_counts() {
    let sim = sim();
    let url = sim.url();
    let d = tempfile::tempdir().unwrap();
    let custom = [
        "--path",
        "/generate",
        "--query-template",
        r#"{"text": "%p", "sampling_params": {"max_new_tokens": %m}, "stream": true}"#,
        "--text-field",
        "text",
    ];
    let triton = [
        "--query-template",
        r#"{"text_input": "%p", "max_tokens": %m, "stream": true, "end_id": 151643}"#,
    ];
    let routes: [(&str, &[&str], Option<&str>); 7] = [
        ("responses", &[], Some("length")),
        ("messages", &[], Some("length")),
        ("tgi", &[], Some("length")),
        ("triton", &triton, None),
        ("triton", &[], None),
        ("sglang", &[], Some("length")),
        ("custom", &custom, None),
    ];
    for (i, (endpoint, extra, finish)) in routes.into_iter().enumerate() {
        let out = d.path().join(format!("{endpoint}-{i}.parquet"));
        let mut args = vec![
            "replay",
            "--url",
            &url,
            "--model",
            "m",
            "--endpoint",
            endpoint,
            "-n",
            "4",
            "--rate",
            "inf",
            "--input-len",
            "8",
            "--output-len",
            "5",
            "-o",
        ];
        let o = out.to_str().unwrap().to_string();
        args.push(&o);
        args.extend(extra);
        let r = run(&args);
        assert!(r.status.success(), "{endpoint}: {}", stderr(&r));
        let (_, rows) = read_all(&out).unwrap();
        assert_eq!(rows.len(), 4, "{endpoint}");
        for r in &rows {
            assert_eq!(r.error_kind, None, "{endpoint}: {:?}", r.error_msg);
            assert_eq!(r.endpoint.as_deref(), Some(endpoint));
            assert_eq!(r.prompt_tokens, Some(8), "{endpoint}");
            assert_eq!(r.output_tokens, Some(5), "{endpoint}");
            assert_eq!(r.chunk_tokens.iter().sum::<i32>(), 5, "{endpoint}: {r:?}");
            assert_eq!(r.finish_reason.as_deref(), finish, "{endpoint}");
        }
    }
}

#[test]
fn bad_route_settings_exit_2_naming_the_flag() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.parquet");
    let o = out.to_str().unwrap();
    let base = ["replay", "--url", "http://127.0.0.1:1", "-n", "1", "-o", o];
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "--endpoint",
                "triton",
                "--model",
                "m",
                "--query-template",
                r#"{"a": 1}"#,
            ],
            "%p",
        ),
        (
            &[
                "--endpoint",
                "triton",
                "--model",
                "m",
                "--query-template",
                r#"{"a": %p}"#,
            ],
            "not JSON",
        ),
        (&["--endpoint", "grpc"], "--endpoint"),
        (
            &["--endpoint", "custom", "--query-template", r#"{"a": "%p"}"#],
            "--path",
        ),
        (&["--endpoint", "triton"], "--model"),
        (
            &["--endpoint", "chat", "--query-template", r#"{"a": "%p"}"#],
            "--query-template",
        ),
    ];
    for (extra, needle) in cases {
        let r = run(&[&base[..], extra].concat());
        assert_eq!(r.status.code(), Some(2), "{extra:?}: {}", stderr(&r));
        assert!(stderr(&r).contains(needle), "{extra:?}: {}", stderr(&r));
    }
    assert!(!out.exists());
}

#[test]
fn record_captures_native_routes_as_replay_counts_them() {
    let sim = sim();
    let d = tempfile::tempdir().unwrap();
    let cap = d.path().join("cap.parquet");
    // Three replays of two requests, each with the request that measures the prompt overhead.
    let mut rec = spawn(
        &[
            "record",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &sim.url(),
            "--max-requests",
            "9",
            "-o",
            cap.to_str().unwrap(),
        ],
        "recording on",
    );
    let url = format!("http://{}", rec.addr);
    for endpoint in ["tgi", "triton", "sglang"] {
        let out = d.path().join(format!("{endpoint}.parquet"));
        let r = run(&[
            "replay",
            "--url",
            &url,
            "--model",
            "m",
            "--endpoint",
            endpoint,
            "-n",
            "2",
            "--rate",
            "inf",
            "--input-len",
            "8",
            "--output-len",
            "5",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{endpoint}: {}", stderr(&r));
    }
    let t = std::time::Instant::now();
    while rec.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed().as_secs() < 30, "record did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, rows) = read_all(&cap).unwrap();
    assert_eq!(rows.len(), 9);
    for endpoint in ["tgi", "triton", "sglang"] {
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| r.endpoint.as_deref() == Some(endpoint))
            .collect();
        assert_eq!(mine.len(), 3, "{endpoint}");
        let asked: Vec<_> = mine.iter().filter(|r| r.max_tokens == Some(5)).collect();
        assert_eq!(asked.len(), 2, "{endpoint}: the request's cap was read");
        for r in asked {
            assert_eq!(r.error_kind, None, "{endpoint}: {:?}", r.error_msg);
            assert_eq!(r.output_tokens, Some(5), "{endpoint}: {r:?}");
            assert_eq!(r.chunk_tokens.iter().sum::<i32>(), 5, "{endpoint}");
        }
    }
}

#[test]
fn reasoning_is_its_own_channel_from_the_server_to_the_report() {
    const R: i32 = 3;
    let thinking = sim_reasoning(R as u32);
    let url = thinking.url();
    let d = tempfile::tempdir().unwrap();
    for endpoint in ["chat", "responses", "messages"] {
        let out = d.path().join(format!("{endpoint}.parquet"));
        let r = run(&[
            "replay",
            "--url",
            &url,
            "--model",
            "m",
            "--endpoint",
            endpoint,
            "-n",
            "6",
            "--rate",
            "inf",
            "--input-len",
            "8",
            "--output-len",
            "8",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{endpoint}: {}", stderr(&r));
        let (_, rows) = read_all(&out).unwrap();
        for r in &rows {
            // The simulator's setting, not the client's arithmetic, is what must come back.
            assert_eq!(r.reasoning_tokens, Some(R), "{endpoint}: {r:?}");
            assert_eq!(r.chunk_reasoning.iter().sum::<i32>(), R, "{endpoint}");
            assert_eq!(r.output_tokens, Some(8), "{endpoint}");
            // Reasoning comes first, the answer after: every reasoning event precedes the first
            // answer event. (Their times may be equal: events that arrive in one socket read
            // share its instant.)
            let first_answer = r
                .chunk_tokens
                .iter()
                .zip(&r.chunk_reasoning)
                .position(|(t, re)| t > re)
                .expect("an answer event");
            assert!(
                r.chunk_reasoning[first_answer..].iter().all(|&re| re == 0),
                "{endpoint}: {r:?}"
            );
            assert!(r.chunk_reasoning[..first_answer].iter().sum::<i32>() == R);
            let m = r.metrics();
            assert!(m.ttfa_ns >= m.ttft_ns, "{endpoint}: {m:?}");
            assert_eq!(
                m.ttfa_ns.unwrap() - m.ttft_ns.unwrap(),
                r.chunk_ns[first_answer]
                    - r.chunk_ns[r.chunk_tokens.iter().position(|&t| t > 0).unwrap()],
                "{endpoint}"
            );
        }
        let o = run(&["report", out.to_str().unwrap(), "--format", "json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let st = &v["stages"][0];
        assert_eq!(st["reasoning_tokens"], 6 * R, "{endpoint}");
        // The answer never comes before the reasoning; on a loaded host both may come in one
        // socket read, and then at one instant.
        let (ttft, ttfa) = (&st["metrics"]["ttft"]["p50"], &st["metrics"]["ttfa"]["p50"]);
        assert!(
            ttfa.as_f64().unwrap() >= ttft.as_f64().unwrap(),
            "{endpoint}: {st}"
        );
        let text = stdout(&run(&["report", out.to_str().unwrap()]));
        assert!(
            text.contains("TTFA (answer)") && text.contains("Reasoning tokens"),
            "{text}"
        );
    }
    // Without reasoning the report has no TTFA line and no reasoning count.
    let plain = sim();
    let out = d.path().join("plain.parquet");
    let r = run(&[
        "replay",
        "--url",
        &plain.url(),
        "--model",
        "m",
        "-n",
        "3",
        "--rate",
        "inf",
        "--input-len",
        "8",
        "--output-len",
        "4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let text = stdout(&run(&["report", out.to_str().unwrap()]));
    assert!(
        !text.contains("TTFA") && !text.contains("Reasoning tokens"),
        "{text}"
    );
}

#[test]
fn record_captures_a_custom_route_at_its_text_field() {
    let sim = sim();
    let d = tempfile::tempdir().unwrap();
    let cap = d.path().join("cap.parquet");
    // The simulator's SGLang route, recorded as a custom one read at a field every event
    // carries: the proxy and the client count one token per event, as a custom route must.
    let mut rec = spawn(
        &[
            "record",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &sim.url(),
            "--custom-path",
            "/generate",
            "--text-field",
            "meta_info.id",
            "--max-requests",
            "3",
            "-o",
            cap.to_str().unwrap(),
        ],
        "recording on",
    );
    let out = d.path().join("custom.parquet");
    let r = run(&[
        "replay",
        "--url",
        &format!("http://{}", rec.addr),
        "--model",
        "m",
        "--endpoint",
        "custom",
        "--path",
        "/generate",
        "--query-template",
        r#"{"text": "%p", "sampling_params": {"max_new_tokens": %m}, "stream": true}"#,
        "--text-field",
        "meta_info.id",
        "-n",
        "2",
        "--rate",
        "inf",
        "--input-len",
        "8",
        "--output-len",
        "5",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let t = std::time::Instant::now();
    while rec.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed().as_secs() < 30, "record did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, rows) = read_all(&cap).unwrap();
    assert_eq!(rows.len(), 3);
    let (_, replayed) = read_all(&out).unwrap();
    for r in &rows {
        assert_eq!(r.endpoint.as_deref(), Some("custom"));
        assert_eq!(r.error_kind, None, "{:?}", r.error_msg);
    }
    // The proxy and the client count the same stream alike.
    let events = |rows: &[trace_format::TraceRecord]| {
        let mut v: Vec<i32> = rows.iter().map(|r| r.chunk_tokens.iter().sum()).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(events(&replayed), vec![5, 5]);
    assert_eq!(&events(&rows)[1..], &[5, 5]);
}
