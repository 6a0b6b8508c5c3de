//! `trace synth` end to end in the library: the rate and the length distributions of what it
//! writes, fitting a workload from another, and reproducibility from the seed.

use trace_format::{meta, read_all};
use trace_replay::Arrival;
use trace_replay::synth::{LengthDist, SynthConfig, fit_lognormal, synth};

#[test]
fn synth_rate_and_fitted_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.parquet");
    let base = SynthConfig {
        output: src.clone(),
        force: false,
        arrival: Arrival::Poisson,
        rate: 50.0,
        duration: None,
        count: Some(5000),
        input: Some(LengthDist::LogNormal {
            mu: 6.0,
            sigma: 0.5,
        }),
        output_len: Some(LengthDist::LogNormal {
            mu: 4.0,
            sigma: 1.0,
        }),
        fit: None,
        seed: 11,
        model: Some("m".into()),
        sessions: None,
    };
    let s = synth(&base).unwrap();
    assert_eq!(s.rows, 5000);
    let rate = 5000.0 / (s.last_ns as f64 / 1e9);
    assert!((rate - 50.0).abs() < 2.5, "rate {rate}");
    let fit = fit_lognormal(&src).unwrap();
    assert!(
        (fit.prompt.mu - 6.0).abs() < 0.05 && (fit.prompt.sigma - 0.5).abs() < 0.05,
        "{fit:?}"
    );
    assert!(
        (fit.output.mu - 4.0).abs() < 0.05 && (fit.output.sigma - 1.0).abs() < 0.05,
        "{fit:?}"
    );

    // A gamma workload fitted from the first; duration-bounded.
    let out = dir.path().join("fitted.parquet");
    let cfg2 = SynthConfig {
        sessions: None,
        output: out.clone(),
        force: false,
        arrival: Arrival::Gamma { burstiness: 0.5 },
        rate: 20.0,
        duration: Some(std::time::Duration::from_secs(100)),
        count: None,
        input: None,
        output_len: None,
        fit: Some(src.clone()),
        seed: 3,
        model: None,
    };
    let s2 = synth(&cfg2).unwrap();
    assert!(s2.fit.is_some());
    assert!(
        (1600..2400).contains(&s2.rows),
        "{} rows in 100 s at 20/s",
        s2.rows
    );
    assert!(s2.last_ns < 100_000_000_000);
    let refit = fit_lognormal(&out).unwrap();
    assert!(
        (refit.prompt.mu - fit.prompt.mu).abs() < 0.1,
        "{refit:?} vs {fit:?}"
    );
    assert!(
        (refit.output.sigma - fit.output.sigma).abs() < 0.1,
        "{refit:?} vs {fit:?}"
    );
    let (m, recs) = read_all(&out).unwrap();
    assert_eq!(m.get(meta::KIND), Some("workload"));
    assert_eq!(m.get(meta::SEED), Some("3"));
    assert!(
        recs.windows(2)
            .all(|w| w[0].scheduled_ns <= w[1].scheduled_ns)
    );

    // Same seed, same file content.
    let again = dir.path().join("again.parquet");
    synth(&SynthConfig {
        output: again.clone(),
        force: false,
        ..cfg2
    })
    .unwrap();
    assert_eq!(read_all(&again).unwrap().1, recs);
}

#[test]
fn session_workloads_link_turns_and_share_group_prefixes() {
    use trace_replay::synth::{SessionSynth, ThinkDist};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.parquet");
    let cfg = SynthConfig {
        output: out.clone(),
        force: false,
        arrival: Arrival::Poisson,
        rate: 5.0,
        duration: None,
        count: Some(40),
        input: Some(LengthDist::Fixed(50)),
        output_len: Some(LengthDist::Fixed(20)),
        fit: None,
        seed: 2,
        model: None,
        sessions: Some(SessionSynth {
            turns: LengthDist::Fixed(3),
            think: ThinkDist::Exponential(std::time::Duration::from_secs(2)),
            prefix_len: 100,
            prefix_groups: 4,
        }),
    };
    let s = synth(&cfg).unwrap();
    assert_eq!((s.rows, s.sessions), (120, Some(40)));
    let (meta, rows) = trace_format::read_all(&out).unwrap();
    assert_eq!(meta.get(trace_format::meta::HASH_BLOCK_TOKENS), Some("16"));
    let by: std::collections::HashMap<&str, &trace_format::TraceRecord> =
        rows.iter().map(|r| (r.request_id.as_str(), r)).collect();
    let mut thinks = Vec::new();
    for r in &rows {
        match r.parent_id.as_deref() {
            None => {
                assert_eq!(r.turn, Some(0));
                assert_eq!(r.prompt_tokens, Some(150));
                // 100 prefix tokens: 7 blocks of 16, then 4 of the session's own.
                assert_eq!(r.hash_ids.len(), 7 + 4);
            }
            Some(p) => {
                let p = by[p];
                assert_eq!(r.session_id, p.session_id);
                assert_eq!(r.turn, p.turn.map(|t| t + 1));
                assert_eq!(r.prompt_tokens, Some(p.prompt_tokens.unwrap() + 20 + 50));
                let think = r.think_ns.unwrap();
                assert_eq!(r.scheduled_ns, p.scheduled_ns + think);
                thinks.push(think as f64 / 1e9);
            }
        }
    }
    let mean = thinks.iter().sum::<f64>() / thinks.len() as f64;
    assert!(
        (1.3..2.7).contains(&mean),
        "exponential think, mean 2 s: {mean}"
    );
    // Sessions of one group share their prefix blocks; other groups do not.
    let root = |k: u64| by[format!("s{k}-t0").as_str()];
    assert_eq!(root(0).hash_ids[..7], root(4).hash_ids[..7]);
    assert_ne!(root(0).hash_ids[0], root(1).hash_ids[0]);
    assert_ne!(root(0).hash_ids[7], root(4).hash_ids[7]);
}
