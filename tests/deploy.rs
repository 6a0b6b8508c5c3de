//! deploy/kubernetes/: the manifests validated against the Kubernetes JSON schemas
//! (kubernetes-validate, strict: an unknown field fails), checked to agree with each other
//! (shards, names, ports), and their shell scripts run for real: the replay Job's script once
//! per completion index as local processes against a simulator, then the merge Job's script,
//! with the ConfigMap's values where a laptop can use them. What cannot run here (a cluster's
//! DNS, scheduling, object storage credentials) is said in the runbook.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use trace_format::{TraceReader, meta};

use crate::util::*;

fn dir() -> std::path::PathBuf {
    repo().join("deploy/kubernetes")
}

fn yamls() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// Every manifest as JSON (PyYAML, which kubernetes-validate brings), or None when python
/// lacks it and CI does not require it.
fn manifests() -> Option<Vec<Value>> {
    if !python_has("yaml, kubernetes_validate", "kubernetes-validate") {
        return None;
    }
    let o = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))",
        ])
        .args(yamls())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    Some(serde_json::from_slice(&o.stdout).unwrap())
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

#[test]
fn the_manifests_pass_the_kubernetes_schemas_strictly() {
    if manifests().is_none() {
        return;
    }
    let o = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(yamls())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    // The validator does fail a manifest with an unknown field (the check can fail).
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.yaml");
    let text = std::fs::read_to_string(dir().join("job-replay.yaml")).unwrap();
    std::fs::write(&bad, text.replace("completionMode:", "completionMod:")).unwrap();
    let o = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn the_manifests_agree_with_each_other() {
    let Some(docs) = manifests() else { return };
    let cfg = &find(&docs, "ConfigMap", "trace-run")["data"];
    let job = find(&docs, "Job", "trace-replay");
    let svc = find(&docs, "Service", "trace-shards");
    let shards: u64 = cfg["SHARDS"].as_str().unwrap().parse().unwrap();
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"].as_u64(), Some(shards));
    assert_eq!(job["spec"]["parallelism"].as_u64(), Some(shards));
    let pod = &job["spec"]["template"];
    assert_eq!(pod["spec"]["subdomain"], svc["metadata"]["name"]);
    assert_eq!(svc["spec"]["clusterIP"], "None");
    // The Service selects the shard pods.
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(labels.get(k), Some(v), "selector {k}");
    }
    // Shard 0's stable name: <job>-0.<service>, on the Service's port.
    assert_eq!(
        cfg["COORDINATOR_HOST"].as_str().unwrap(),
        format!(
            "{}-0.{}",
            job["metadata"]["name"].as_str().unwrap(),
            svc["metadata"]["name"].as_str().unwrap()
        )
    );
    let port: u64 = cfg["COORDINATOR_PORT"].as_str().unwrap().parse().unwrap();
    assert_eq!(svc["spec"]["ports"][0]["port"].as_u64(), Some(port));
    assert_eq!(
        pod["spec"]["containers"][0]["ports"][0]["containerPort"].as_u64(),
        Some(port)
    );
    // Both Jobs read the same ConfigMap.
    let merge = find(&docs, "Job", "trace-merge");
    for j in [job, merge] {
        let from = &j["spec"]["template"]["spec"]["containers"][0]["envFrom"][0];
        assert_eq!(from["configMapRef"]["name"], "trace-run");
    }
}

fn script(job: &Value) -> String {
    job["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap()
        .to_string()
}

/// The Jobs' scripts as a cluster would run them, on this host: SHARDS pods as processes with
/// JOB_COMPLETION_INDEX set, the coordinator on 127.0.0.1, outputs under a local prefix (the
/// scripts treat a path and an s3:// prefix alike), then the merge Job's script.
#[test]
fn the_jobs_scripts_run_a_sharded_run_and_merge_it() {
    let Some(docs) = manifests() else { return };
    let cfg = find(&docs, "ConfigMap", "trace-run")["data"]
        .as_object()
        .unwrap()
        .clone();
    let replay = script(find(&docs, "Job", "trace-replay"));
    let merge = script(find(&docs, "Job", "trace-merge"));
    let mut sim_cfg =
        trace_sim::SimConfig::fixed(Duration::from_millis(5), Duration::from_millis(1));
    sim_cfg.model = "m".into();
    let sim = trace_sim::spawn(sim_cfg, ([127, 0, 0, 1], 0).into()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bin = Path::new(env!("CARGO_BIN_EXE_trace")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env: BTreeMap<String, String> = cfg
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let shards = 3;
    for (k, v) in [
        ("TARGET_URL", format!("http://{}", sim.addr())),
        ("WORKLOAD", "random".into()),
        (
            "REPLAY_ARGS",
            "--rate 40 -n 12 --seed 7 --input-len 8 --output-len 4".into(),
        ),
        ("SHARDS", shards.to_string()),
        ("OUTPUT_PREFIX", d.path().join("run").display().to_string()),
        ("COORDINATOR_HOST", "127.0.0.1".into()),
        ("COORDINATOR_PORT", port.to_string()),
        ("BARRIER_TIMEOUT", "60s".into()),
        ("PATH", path),
    ] {
        env.insert(k.into(), v);
    }
    // The non-zero shards first: they knock until shard 0 (the coordinator) comes up, as pods
    // scheduled in any order do.
    let pods: Vec<_> = (0..shards)
        .rev()
        .map(|k| {
            let c = Command::new("sh")
                .args(["-c", &replay])
                .envs(&env)
                .env("JOB_COMPLETION_INDEX", k.to_string())
                .current_dir(d.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            c
        })
        .collect();
    for p in pods {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = Command::new("sh")
        .args(["-c", &merge])
        .envs(&env)
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("| rate=40"), "{}", stdout(&o));
    let r = TraceReader::open(d.path().join("run/run.parquet")).unwrap();
    assert_eq!(r.num_rows(), 12);
    let listed: Value = serde_json::from_str(r.meta().get(meta::SHARDS).unwrap()).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), shards);
    assert!(
        listed
            .iter()
            .all(|s| s["clock"] == "coordinator (start barrier)"),
        "{listed:?}"
    );
    drop(sim);
}
