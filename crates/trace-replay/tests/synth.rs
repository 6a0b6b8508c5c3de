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
