//! Errors print each cause once: the OS error under a missing file must not be repeated by an
//! error type that both names it in its message and exposes it as `source()`.

use crate::util::*;

fn assert_cause_once(args: &[&str], cause: &str) {
    let d = tempfile::tempdir().unwrap();
    let out = run_in(args, d.path());
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = stderr(&out).to_lowercase();
    assert_eq!(err.matches(cause).count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("trace: "), "{err}");
}

#[test]
fn a_missing_file_names_its_cause_exactly_once() {
    assert_cause_once(&["inspect", "missing.parquet"], "no such file");
    assert_cause_once(&["report", "missing.parquet"], "no such file");
    assert_cause_once(
        &["import", "azure", "missing.csv", "-o", "x.parquet"],
        "no such file",
    );
    assert_cause_once(
        &["replay", "sharegpt=missing.json", "--rate", "1"],
        "no such file",
    );
    assert_cause_once(
        &[
            "replay",
            "--rate",
            "1",
            "--tokenizer",
            "missing.json",
            "--url",
            "http://127.0.0.1:1",
        ],
        "no such file",
    );
}
