//! Object storage (`-o s3://...`, `trace report s3://...`) against a local S3-compatible server
//! (moto, started by the test on 127.0.0.1 through tests/python/s3_server.py): a run written
//! to a bucket and read back by report, inspect and replay; an existing object refused; a
//! killed run's flushed parts found in the bucket, reported and recovered there; the shards of
//! a sharded run written to one prefix and reported as one run from it. `az://` against
//! Azurite (Microsoft's local Blob Storage emulator, scripts/ci/azurite.sh): a run written to a
//! container and read back.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The moto server, stopped (stdin closed, then killed) on drop.
struct S3 {
    child: Child,
    url: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3() -> Option<S3> {
    if !python_has("moto.server, boto3", "moto[server], a local S3") {
        return None;
    }
    let mut child = Command::new("python3")
        .arg(repo().join("tests/python/s3_server.py"))
        .arg("runs")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().strip_prefix("listening ").unwrap_or_default();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    Some(S3 {
        url: url.to_string(),
        child,
    })
}

impl S3 {
    /// `trace ARGS` with this server's endpoint and test credentials.
    fn trace(&self, args: &[&str], cwd: &Path) -> Output {
        trace()
            .args(args)
            .current_dir(cwd)
            .env("AWS_ENDPOINT", &self.url)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str], cwd: &Path) -> Output {
        let o = self.trace(args, cwd);
        assert!(
            o.status.success(),
            "trace {args:?}: {}\n{}",
            stderr(&o),
            stdout(&o)
        );
        o
    }

    /// The keys in the bucket `runs`.
    fn keys(&self) -> Vec<String> {
        let o = Command::new("python3")
            .args([
                "-c",
                "import boto3,sys\n\
                 c=boto3.client('s3',endpoint_url=sys.argv[1],aws_access_key_id='test',\
                 aws_secret_access_key='test',region_name='us-east-1')\n\
                 for o in c.list_objects_v2(Bucket='runs').get('Contents',[]): print(o['Key'])",
                &self.url,
            ])
            .output()
            .unwrap();
        let mut v: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
        v.sort();
        v
    }
}

const SMALL: [&str; 4] = ["--input-len", "8", "--output-len", "4"];

fn completed(s3: &S3, run: &str, cwd: &Path) -> u64 {
    let o = s3.ok(&["report", run, "--format", "json"], cwd);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["completed"].as_u64().unwrap())
        .sum()
}

#[test]
fn runs_are_written_to_and_read_from_a_bucket() {
    let Some(s3) = s3() else { return };
    let d = tempfile::tempdir().unwrap();
    let url = "s3://runs/a/run.parquet";
    let mut args = vec!["replay", "--rate", "50", "-n", "20", "-o", url];
    args.extend(SMALL);
    let o = s3.ok(&args, d.path());
    assert!(
        stderr(&o).contains(&format!("uploaded {url}")),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains(&format!("read more: trace report {url}")));
    assert_eq!(s3.keys(), ["a/run.parquet"]);
    assert_eq!(completed(&s3, url, d.path()), 20);
    let o = s3.ok(&["inspect", url], d.path());
    assert!(stdout(&o).contains("label"), "{}", stdout(&o));
    // The bucket's run replays as a workload.
    let o = s3.ok(&["replay", url, "-o", "again.parquet"], d.path());
    assert!(
        stderr(&o).contains("wrote again.parquet (20 rows"),
        "{}",
        stderr(&o)
    );
    // An existing object is never overwritten without --force.
    let mut args = vec!["replay", "--rate", "50", "-n", "2", "-o", url];
    args.extend(SMALL);
    let o = s3.trace(&args, d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!("{url} exists: pass --force")),
        "{}",
        stderr(&o)
    );
    assert_eq!(completed(&s3, url, d.path()), 20);
    // A missing object is named.
    let o = s3.trace(&["report", "s3://runs/none.parquet"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("s3://runs/none.parquet: no such object"));
}

#[test]
fn a_killed_runs_parts_are_in_the_bucket_and_recover_there() {
    let Some(s3) = s3() else { return };
    let d = tempfile::tempdir().unwrap();
    let url = "s3://runs/k/run.parquet";
    let mut child = trace()
        .args(["replay", "--rate", "20", "-n", "400", "-o", url])
        .args(SMALL)
        .current_dir(d.path())
        .env("AWS_ENDPOINT", &s3.url)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed (no chance to clean up) once a flushed part has reached the bucket.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(40) && s3.keys().is_empty() {
        std::thread::sleep(Duration::from_millis(250));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let keys = s3.keys();
    assert!(
        !keys.is_empty()
            && keys
                .iter()
                .all(|k| k.starts_with("k/run.parquet.partial/part-")),
        "{keys:?}"
    );
    let o = s3.trace(&["report", url], d.path());
    assert!(
        stderr(&o).contains("holds an interrupted run"),
        "{}",
        stderr(&o)
    );
    let partial = "s3://runs/k/run.parquet.partial/";
    let flushed = completed(&s3, partial, d.path());
    assert!(flushed > 0 && flushed < 400, "{flushed}");
    s3.ok(&["recover", partial], d.path());
    assert_eq!(s3.keys(), ["k/run.parquet"]);
    assert_eq!(completed(&s3, url, d.path()), flushed);
}

#[test]
fn shards_written_to_one_prefix_report_as_one_run() {
    let Some(s3) = s3() else { return };
    let d = tempfile::tempdir().unwrap();
    for k in 0..2 {
        let out = format!("s3://runs/sharded/s{k}.parquet");
        let shard = format!("{k}/2");
        let mut args = vec![
            "replay", "--rate", "50", "-n", "10", "--seed", "9", "--shard", &shard, "-o", &out,
        ];
        args.extend(SMALL);
        s3.ok(&args, d.path());
    }
    assert_eq!(completed(&s3, "s3://runs/sharded/", d.path()), 10);
    s3.ok(
        &[
            "merge",
            "s3://runs/sharded/s0.parquet",
            "s3://runs/sharded/s1.parquet",
            "-o",
            "s3://runs/merged.parquet",
        ],
        d.path(),
    );
    assert_eq!(completed(&s3, "s3://runs/merged.parquet", d.path()), 10);
    // A prefix is no output.
    let o = s3.trace(
        &["synth", "--rate", "1", "-n", "3", "-o", "s3://runs/dir/"],
        d.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a prefix"), "{}", stderr(&o));
}

/// Azurite on a free port of 127.0.0.1 with the container `runs`, stopped on drop.
struct Azure {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Azure {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn azurite() -> Option<Azure> {
    let Some(bin) = std::env::var_os("TRACE_AZURITE") else {
        assert!(
            std::env::var_os("TRACE_REQUIRE_AZURITE").is_none(),
            "TRACE_REQUIRE_AZURITE is set but TRACE_AZURITE is not (eval \"$(scripts/ci/azurite.sh)\")"
        );
        eprintln!("skipped: TRACE_AZURITE not set (scripts/ci/azurite.sh installs Azurite)");
        return None;
    };
    if !python_has(
        "azure.storage.blob",
        "azure-storage-blob, to make a container",
    ) {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir.path())
        .args(["--silent", "--skipApiVersionCheck"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let az = Azure {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Azurite did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = Command::new("python3")
        .arg(repo().join("tests/python/az_container.py"))
        .args([&az.url, "runs"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    Some(az)
}

impl Azure {
    /// `trace ARGS` against this emulator (object_store's emulator settings).
    fn trace(&self, args: &[&str], cwd: &Path) -> Output {
        trace()
            .args(args)
            .current_dir(cwd)
            .env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", &self.url)
            .output()
            .unwrap()
    }
}

#[test]
fn runs_are_written_to_and_read_from_an_azure_container() {
    let Some(az) = azurite() else { return };
    let d = tempfile::tempdir().unwrap();
    let url = "az://runs/a/run.parquet";
    let mut args = vec!["replay", "--rate", "50", "-n", "12", "-o", url];
    args.extend(SMALL);
    let o = az.trace(&args, d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("uploaded {url}")),
        "{}",
        stderr(&o)
    );
    let o = az.trace(&["report", url, "--format", "json"], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stages"][0]["completed"], 12, "{v}");
    // An existing blob is never overwritten without --force; a missing one is named.
    let o = az.trace(&args, d.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{url} exists: pass --force")),
        "{}",
        stderr(&o)
    );
    let o = az.trace(&["inspect", "az://runs/none.parquet"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("az://runs/none.parquet: no such object"),
        "{}",
        stderr(&o)
    );
}
