//! Recorded data is never destroyed by accident: `recover` deletes only what a writer made, no
//! verb writes over one of its inputs, and a finished run is replaced only with `--force`.

use std::path::Path;

use trace_format::{TraceReader, TraceWriter, WriterOptions, partial_dir};

use crate::fixtures;
use crate::util::*;

fn sample(dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::copy(repo().join("traces/sample.parquet"), &p).unwrap();
    p
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn recover_refuses_a_directory_that_is_not_a_run_and_deletes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("photos");
    std::fs::create_dir_all(victim.join("2024")).unwrap();
    std::fs::write(victim.join("2024/a.jpg"), b"jpeg").unwrap();
    let out = run_in(&["recover", "photos", "-o", "x.parquet"], d.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no trace part files"),
        "{}",
        stderr(&out)
    );
    assert_eq!(bytes(&victim.join("2024/a.jpg")), b"jpeg");
    assert!(!d.path().join("x.parquet").exists());
    // inspect and report do not call it an interrupted run either.
    for verb in ["inspect", "report"] {
        let o = run_in(&[verb, "photos"], d.path());
        assert_eq!(o.status.code(), Some(2), "{verb}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("not an interrupted run"),
            "{verb}: {}",
            stderr(&o)
        );
    }
}

/// A `.partial` directory as a crash leaves it: two finished parts, one torn part and the lock
/// file, plus a file the user put there.
fn crashed_run(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("run.parquet");
    let mut w = TraceWriter::create(
        &out,
        trace_format::TraceMeta::new(),
        WriterOptions::default(),
    )
    .unwrap();
    for i in 0..3 {
        w.write(&fixtures::failed(&format!("r{i}"), "s", None, i))
            .unwrap();
        w.rotate().unwrap();
    }
    let partial = w.abandon().unwrap();
    std::fs::write(partial.join("part-00009.parquet.tmp"), b"torn").unwrap();
    std::fs::write(partial.join("notes.txt"), b"mine").unwrap();
    partial
}

#[test]
fn recover_deletes_only_what_the_writer_made() {
    let d = tempfile::tempdir().unwrap();
    let partial = crashed_run(d.path());
    let out = run_ok_in(&["recover", partial.to_str().unwrap()], d.path());
    assert!(
        stderr(&out).contains("recovered 3 rows from 3 part files"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("kept"), "{}", stderr(&out));
    assert_eq!(
        TraceReader::open(d.path().join("run.parquet"))
            .unwrap()
            .num_rows(),
        3
    );
    let left: Vec<String> = std::fs::read_dir(&partial)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["notes.txt".to_string()],
        "only the user's file stays"
    );
}

#[test]
fn recover_and_a_second_writer_refuse_a_live_run() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("live.parquet");
    let mut w = TraceWriter::create(
        &out,
        trace_format::TraceMeta::new(),
        WriterOptions::default(),
    )
    .unwrap();
    w.write(&fixtures::failed("r0", "s", None, 0)).unwrap();
    w.rotate().unwrap();
    let partial = partial_dir(&out);
    // The lock is per open file, so this process's own second attempt is refused like another
    // process's would be; the real binary is another process.
    let o = run_in(&["recover", partial.to_str().unwrap()], d.path());
    assert_eq!(o.status.code(), Some(2));
    let pid = format!("pid {}", std::process::id());
    assert!(
        stderr(&o).contains("being written") && stderr(&o).contains(&pid),
        "{}",
        stderr(&o)
    );
    assert!(
        partial.join("part-00001.parquet").exists(),
        "the live run is untouched"
    );
    let second = TraceWriter::create(
        &out,
        trace_format::TraceMeta::new(),
        WriterOptions::default(),
    )
    .err();
    assert!(
        matches!(second, Some(trace_format::Error::Busy { .. })),
        "{second:?}"
    );
    // inspect says so too.
    let o = run_ok_in(&["inspect", partial.to_str().unwrap()], d.path());
    assert!(stdout(&o).contains(&pid), "{}", stdout(&o));
    w.close().unwrap();
    assert_eq!(TraceReader::open(&out).unwrap().num_rows(), 1);
}

#[test]
fn parts_of_two_runs_are_not_merged_as_one() {
    let d = tempfile::tempdir().unwrap();
    let write_run = |name: &str, start: &str| {
        let out = d.path().join(name);
        let mut m = trace_format::TraceMeta::new();
        m.set(trace_format::meta::RUN_START_UNIX_NS, start);
        let mut w = TraceWriter::create(&out, m, WriterOptions::default()).unwrap();
        w.write(&fixtures::failed("r", "s", None, 0)).unwrap();
        w.abandon().unwrap()
    };
    let a = write_run("a.parquet", "1000");
    let b = write_run("b.parquet", "2000");
    std::fs::rename(b.join("part-00001.parquet"), a.join("part-00002.parquet")).unwrap();
    let o = run_in(&["recover", a.to_str().unwrap()], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("parts of different runs"),
        "{}",
        stderr(&o)
    );
    assert!(a.join("part-00001.parquet").exists() && a.join("part-00002.parquet").exists());
}

#[test]
fn no_verb_writes_over_its_input() {
    let d = tempfile::tempdir().unwrap();
    let x = sample(d.path(), "x.parquet");
    let before = bytes(&x);
    let azure = d.path().join("a.csv");
    std::fs::copy(repo().join("traces/import/azure_2023.csv"), &azure).unwrap();
    let csv_before = bytes(&azure);
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "replay",
            "x.parquet",
            "-n",
            "3",
            "-o",
            "x.parquet",
            "--force",
        ],
        vec![
            "replay",
            "x.parquet",
            "-n",
            "3",
            "-o",
            "./x.parquet",
            "--force",
        ],
        vec!["import", "azure", "a.csv", "-o", "a.csv", "--force"],
        vec![
            "import",
            "mooncake",
            "x.parquet",
            "--export",
            "-o",
            "x.parquet",
        ],
        vec![
            "synth",
            "--fit",
            "x.parquet",
            "--rate",
            "1",
            "-n",
            "5",
            "-o",
            "x.parquet",
            "--force",
        ],
        vec!["report", "x.parquet", "--html", "x.parquet"],
        vec!["report", "x.parquet", "--export", "vllm-json", "x.parquet"],
        vec!["diff", "x.parquet", "x.parquet", "--html", "x.parquet"],
        vec!["sim", "--fit", "x.parquet", "-o", "x.parquet"],
    ];
    for args in cases {
        let o = run_in(&args, d.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("the output is the input"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_eq!(bytes(&x), before, "{args:?} changed its input");
        assert_eq!(bytes(&azure), csv_before, "{args:?} changed its input");
    }
}

#[test]
fn a_finished_run_is_replaced_only_with_force() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.parquet");
    let synth = |extra: &[&str]| {
        let mut a = vec!["synth", "--rate", "5", "-n", "4", "-o", "o.parquet"];
        a.extend_from_slice(extra);
        run_in(&a, d.path())
    };
    assert_eq!(synth(&[]).status.code(), Some(0));
    let first = bytes(&out);
    let o = synth(&["--seed", "9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("already exists") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(bytes(&out), first);
    let o = run_in(
        &[
            "import",
            "azure",
            repo()
                .join("traces/import/azure_2023.csv")
                .to_str()
                .unwrap(),
            "-o",
            "o.parquet",
        ],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(bytes(&out), first);
    assert_eq!(synth(&["--seed", "9", "--force"]).status.code(), Some(0));
    assert_ne!(bytes(&out), first);
    assert!(!partial_dir(&out).exists());
}
