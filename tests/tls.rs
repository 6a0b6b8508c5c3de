//! HTTPS end to end (issue 17), with certificates made at test time (rcgen): the real binary's
//! replay against `trace sim --tls-cert` trusting a given CA, refusing an unknown one with the
//! host and the reason, `--insecure` said and stored, HTTP/2 by ALPN and `--http1`, mutual TLS
//! with and without a client certificate, `trace record` listening with TLS in front of an
//! HTTPS upstream, header values never stored or printed, and bad certificate files named.

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use trace_format::{TraceReader, meta, read_all};

use crate::util::*;

const HEADER_SECRET: &str = "sk-HEADER-SECRET-7731";

/// A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a second
/// CA nobody trusts; all PEM files in one directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            let cert = p.self_signed(&key).unwrap();
            (Issuer::new(p, key), cert)
        };
        let (issuer, ca_cert) = ca("trace test CA");
        let (_, other) = ca("someone else's CA");
        let leaf = |sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.extended_key_usages = vec![usage];
            (p.signed_by(&key, &issuer).unwrap(), key)
        };
        let (server, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = leaf(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth);
        let w = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        w("ca.pem", ca_cert.pem());
        w("other-ca.pem", other.pem());
        w("server.pem", server.pem());
        w("server.key", server_key.serialize_pem());
        w("client.pem", client.pem());
        w("client.key", client_key.serialize_pem());
        w("not-pem.txt", "hello".into());
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

/// `trace sim` serving HTTPS; `extra` adds flags (the client CA for mTLS).
fn tls_sim(pki: &Pki, extra: &[&str]) -> Proc {
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let mut args = vec![
        "sim",
        "--port",
        "0",
        "--ttft",
        "5ms",
        "--itl",
        "1ms",
        "--model",
        "m",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend(extra);
    spawn(&args, "serving model")
}

fn replay(url: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "replay",
        "--url",
        url,
        "--model",
        "m",
        "--endpoint",
        "completions",
        "-n",
        "3",
        "--rate",
        "inf",
        "--input-len",
        "8",
        "--output-len",
        "4",
        "--force",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    run(&args)
}

fn ok_rows(out: &Path) -> usize {
    read_all(out)
        .unwrap()
        .1
        .iter()
        .filter(|r| r.error_kind.is_none())
        .count()
}

#[test]
fn replay_over_https_trusts_the_given_ca_and_names_the_host_and_reason_otherwise() {
    let pki = Pki::new();
    let sim = tls_sim(&pki, &[]);
    let url = format!("https://{}", sim.addr);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("tls.parquet");
    let ca = pki.path("ca.pem");

    let o = replay(
        &url,
        &out,
        &[
            "--cacert",
            &ca,
            "-H",
            &format!("X-Api-Key: {HEADER_SECRET}"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ok_rows(&out), 3);
    let m = TraceReader::open(&out).unwrap().meta().clone();
    assert_eq!(m.get(meta::HTTP_VERSION), Some("HTTP/2"), "ALPN offered h2");
    assert_eq!(
        m.get(meta::HTTP_CLIENT),
        Some("hyper"),
        "HTTPS goes through hyper"
    );
    assert_eq!(m.client().unwrap().headers, vec!["x-api-key".to_string()]);
    assert!(!m.client().unwrap().tls_insecure);
    // The header's value is in neither the file nor anything printed.
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        !bytes
            .windows(HEADER_SECRET.len())
            .any(|w| w == HEADER_SECRET.as_bytes())
    );
    assert!(!stderr(&o).contains(HEADER_SECRET) && !stdout(&o).contains(HEADER_SECRET));

    let o = replay(&url, &out, &["--cacert", &ca, "--http1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = TraceReader::open(&out).unwrap().meta().clone();
    assert_eq!(m.get(meta::HTTP_VERSION), Some("HTTP/1.1"));

    // The system roots do not know the test CA; nor does someone else's CA.
    for extra in [
        vec![],
        vec!["--cacert".to_string(), pki.path("other-ca.pem")],
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let o = replay(&url, &out, &extra);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("127.0.0.1") && e.contains("UnknownIssuer"),
            "{e}"
        );
    }

    let o = replay(&url, &out, &["--insecure"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("WARNING: --insecure"), "{}", stderr(&o));
    assert_eq!(ok_rows(&out), 3);
    let m = TraceReader::open(&out).unwrap().meta().clone();
    assert!(m.client().unwrap().tls_insecure);
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let sim = tls_sim(&pki, &["--tls-client-ca", &ca]);
    let url = format!("https://{}", sim.addr);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("mtls.parquet");

    let o = replay(&url, &out, &["--cacert", &ca]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("TLS"), "{}", stderr(&o));

    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let o = replay(
        &url,
        &out,
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ok_rows(&out), 3);
}

#[test]
fn record_listens_with_tls_in_front_of_an_https_upstream() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let sim = tls_sim(&pki, &[]);
    let d = tempfile::tempdir().unwrap();
    let cap = d.path().join("captured.parquet");
    let upstream = format!("https://{}", sim.addr);
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let mut rec = spawn(
        &[
            "record",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--cacert",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            // The three and the one that measures the tokens the server adds to a prompt.
            "--max-requests",
            "4",
            "-o",
            cap.to_str().unwrap(),
        ],
        "recording on",
    );
    let out = d.path().join("through.parquet");
    let o = replay(&format!("https://{}", rec.addr), &out, &["--cacert", &ca]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ok_rows(&out), 3);
    let t = Instant::now();
    while rec.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "record did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ok_rows(&cap), 4);
}

#[test]
fn bad_certificate_files_are_named_before_anything_is_sent() {
    let pki = Pki::new();
    let bad = pki.path("not-pem.txt");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.parquet");
    let o = replay("https://127.0.0.1:1", &out, &["--cacert", &bad]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not-pem.txt"), "{}", stderr(&o));
    let o = replay(
        "https://127.0.0.1:1",
        &out,
        &["--cert", &pki.path("client.pem"), "--key", &bad],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not-pem.txt") && stderr(&o).contains("private key"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let o = run(&[
        "sim",
        "--port",
        "0",
        "--tls-cert",
        &bad,
        "--tls-key",
        &pki.path("server.key"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not-pem.txt"), "{}", stderr(&o));
    let o = run(&["replay", "-H", "no colon here", "-n", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Name: value"), "{}", stderr(&o));
}
