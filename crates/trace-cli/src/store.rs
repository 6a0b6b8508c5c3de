//! Traces on object storage (`s3://`, `gs://`, `az://`) for every verb that writes or reads
//! one, through the Arrow ecosystem's `object_store` (credentials and endpoints from the usual
//! environment: `AWS_*`, `GOOGLE_*`, `AZURE_*`).
//!
//! Writing keeps the local writer's crash safety: the verb writes to a local staging copy, and
//! each part file the writer closes (every flush interval) is uploaded at once to
//! `URL.partial/part-N.parquet`, so a host that dies loses no more than it would locally; on
//! close the finished file is uploaded (multipart, streamed) and the uploaded parts deleted. A
//! killed run's parts are read (`trace report URL.partial/`) or merged (`trace recover
//! URL.partial/`) from the bucket like a local `.partial`.
//!
//! Reading downloads the object (or every object under a prefix ending in `/`: a directory of
//! shards, a `.partial`) to a temporary directory first: polars and the Parquet reader want
//! seekable local files, and a trace is read several times over by `report` and `diff`.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt as _};
use tokio::io::AsyncWriteExt as _;

/// URL schemes read as object storage.
const SCHEMES: &[&str] = &[
    "s3://", "s3a://", "gs://", "az://", "azure://", "abfs://", "abfss://",
];

/// How often the uploader looks for parts the writer has closed.
const PART_POLL: Duration = Duration::from_millis(500);

/// Local stand-ins of remote paths (staging copies, downloads) and the URLs they stand for, so
/// messages name what the user gave.
static SHOWN: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

fn stand_in(local: &Path, url: &str) {
    SHOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((local.to_path_buf(), url.to_string()));
}

/// How to name `p` to the user: the URL it stands in for, else the path itself.
pub(crate) fn shown(p: &Path) -> String {
    SHOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(l, _)| l == p)
        .map_or_else(|| p.display().to_string(), |(_, u)| u.clone())
}

/// True when `s` names an object-storage location.
pub(crate) fn is_remote(s: &str) -> bool {
    SCHEMES.iter().any(|p| s.starts_with(p))
}

/// A bucket and a key in it.
#[derive(Clone)]
struct Remote {
    store: Arc<dyn ObjectStore>,
    key: Key,
    url: String,
}

impl Remote {
    fn open(url: &str) -> anyhow::Result<Self> {
        use object_store::aws::AmazonS3Builder;
        use object_store::azure::MicrosoftAzureBuilder;
        use object_store::gcp::GoogleCloudStorageBuilder;
        // reqwest is built without a TLS provider of its own: the one trace uses everywhere.
        trace_sys::tls::install_provider();
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        // The key is what follows the bucket (or container, or container@account host).
        let key = rest.split_once('/').map_or("", |(_, k)| k);
        let key = key.trim_end_matches('/');
        let store: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => Arc::new(AmazonS3Builder::from_env().with_url(url).build()?),
            "gs" => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()?,
            ),
            _ => Arc::new(MicrosoftAzureBuilder::from_env().with_url(url).build()?),
        };
        let key = Key::parse(key).with_context(|| format!("{url}: not a valid object key"))?;
        Ok(Self {
            store,
            key,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    /// The same bucket, another key.
    fn at(&self, key: Key, url: String) -> Self {
        Self {
            store: self.store.clone(),
            key,
            url,
        }
    }

    /// The `.partial` prefix beside this object, where a live run's parts go.
    fn partial(&self) -> Self {
        let key = Key::from(format!("{}.partial", self.key));
        self.at(key, format!("{}.partial", self.url))
    }

    /// The keys under this one taken as a prefix, with their sizes.
    async fn list(&self) -> anyhow::Result<Vec<(Key, u64)>> {
        let mut out = Vec::new();
        let mut s = self.store.list(Some(&self.key));
        while let Some(m) = s.next().await {
            let m = m.with_context(|| format!("listing {}/", self.url))?;
            out.push((m.location, m.size));
        }
        Ok(out)
    }

    async fn exists(&self) -> anyhow::Result<bool> {
        match self.store.head(&self.key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("looking up {}", self.url)),
        }
    }

    /// Streams `file` to this key (multipart above the buffer size).
    async fn upload(&self, file: &Path) -> anyhow::Result<u64> {
        let mut w = object_store::buffered::BufWriter::new(self.store.clone(), self.key.clone());
        let mut f =
            std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
        let mut buf = vec![0u8; 4 << 20];
        let mut sent = 0u64;
        let done: anyhow::Result<()> = async {
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n]).await?;
                sent += n as u64;
            }
            w.shutdown().await?;
            Ok(())
        }
        .await;
        if let Err(e) = done {
            let _ = w.abort().await;
            return Err(e).with_context(|| format!("uploading {} to {}", file.display(), self.url));
        }
        Ok(sent)
    }

    /// Streams this object into `file`.
    async fn download(&self, file: &Path) -> anyhow::Result<()> {
        let got = self.store.get(&self.key).await;
        let got = match got {
            Err(object_store::Error::NotFound { .. }) => {
                let partial = self.partial();
                if !partial.list().await.unwrap_or_default().is_empty() {
                    anyhow::bail!(
                        "{}: no such object, but {}/ holds an interrupted run: read that, or \
                         merge it with `trace recover {}/`",
                        self.url,
                        partial.url,
                        partial.url
                    );
                }
                anyhow::bail!("{}: no such object", self.url)
            }
            r => r.with_context(|| format!("reading {}", self.url))?,
        };
        let mut out =
            std::fs::File::create(file).with_context(|| format!("writing {}", file.display()))?;
        let mut s = got.into_stream();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.with_context(|| format!("reading {}", self.url))?;
            out.write_all(&chunk)?;
        }
        out.sync_all()?;
        Ok(())
    }

    async fn delete_under(&self) -> anyhow::Result<()> {
        for (k, _) in self.list().await? {
            self.store
                .delete(&k)
                .await
                .with_context(|| format!("deleting {k} under {}", self.url))?;
        }
        Ok(())
    }
}

/// Runs `f` to completion on a runtime of its own, in a thread of its own: the verbs call this
/// both outside and inside their own runtimes.
fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(f)
        })
        .join()
        .expect("the object-store thread")
    })
}

/// A downloaded input, deleted when dropped.
pub(crate) struct Fetched {
    _tmp: tempfile::TempDir,
}

/// Replaces a remote `path` by a local copy of it (an object, or every object under a prefix
/// ending in `/` or `.partial`); a local path is left alone.
pub(crate) fn fetch_in_place(path: &mut PathBuf) -> anyhow::Result<Option<Fetched>> {
    let Some(url) = path.to_str().filter(|s| is_remote(s)).map(str::to_string) else {
        return Ok(None);
    };
    let remote = Remote::open(&url)?;
    let tmp = tempfile::Builder::new().prefix("trace-fetch-").tempdir()?;
    let name = remote
        .key
        .filename()
        .map_or_else(|| "run".to_string(), str::to_string);
    let local = tmp.path().join(&name);
    let as_prefix = url.ends_with('/') || name.ends_with(".partial");
    block_on(async {
        if as_prefix {
            // Listing "a/b" also matches "a/bc": keep what lies under "a/b/".
            let objects = remote.list().await?;
            let mut n = 0;
            for (k, _) in objects {
                let Some(rel) = k
                    .as_ref()
                    .strip_prefix(remote.key.as_ref())
                    .and_then(|r| r.strip_prefix('/'))
                else {
                    continue;
                };
                let dest = local.join(rel);
                std::fs::create_dir_all(dest.parent().unwrap_or(&local))?;
                let url = format!("{}/{rel}", remote.url);
                remote.at(k.clone(), url).download(&dest).await?;
                n += 1;
            }
            anyhow::ensure!(n > 0, "{url}: no objects under this prefix");
            Ok(())
        } else {
            remote.download(&local).await
        }
    })?;
    stand_in(&local, &url);
    *path = local;
    Ok(Some(Fetched { _tmp: tmp }))
}

/// A replay workload naming a remote file (`s3://.../w.parquet`, `sharegpt=s3://...`) made
/// local.
pub(crate) fn fetch_workload(w: &mut String) -> anyhow::Result<Option<Fetched>> {
    let (kind, file) = match w.split_once('=') {
        Some((k, f)) if is_remote(f) => (Some(k.to_string()), f.to_string()),
        _ if is_remote(w) => (None, w.clone()),
        _ => return Ok(None),
    };
    let mut p = PathBuf::from(file);
    let got = fetch_in_place(&mut p)?;
    let local = p.to_string_lossy().into_owned();
    *w = match kind {
        Some(k) => format!("{k}={local}"),
        None => local,
    };
    Ok(got)
}

/// [`fetch_in_place`] for each path.
pub(crate) fn fetch_all(paths: &mut [PathBuf]) -> anyhow::Result<Vec<Fetched>> {
    let mut kept = Vec::new();
    for p in paths {
        kept.extend(fetch_in_place(p)?);
    }
    Ok(kept)
}

/// A remote output being written through a local staging copy.
pub(crate) struct Upload {
    remote: Remote,
    staging: tempfile::TempDir,
    local: PathBuf,
    stop: Arc<(Mutex<bool>, Condvar)>,
    parts: Option<std::thread::JoinHandle<anyhow::Result<BTreeSet<String>>>>,
}

/// Replaces a remote output `path` by a local staging path and starts uploading the parts the
/// writer closes; a local path is left alone. An existing object is refused without `force`.
pub(crate) fn stage_output(
    path: Option<&mut PathBuf>,
    force: bool,
) -> anyhow::Result<Option<Upload>> {
    let Some(path) = path else { return Ok(None) };
    let Some(url) = path.to_str().filter(|s| is_remote(s)).map(str::to_string) else {
        return Ok(None);
    };
    anyhow::ensure!(
        !url.ends_with('/'),
        "{url}: an output is an object, not a prefix: end it with a file name (run.parquet)"
    );
    let remote = Remote::open(&url)?;
    if !force && block_on(remote.exists())? {
        anyhow::bail!("{url} exists: pass --force to replace it");
    }
    let staging = tempfile::Builder::new().prefix("trace-upload-").tempdir()?;
    let name = remote.key.filename().unwrap_or("run.parquet").to_string();
    let local = staging.path().join(name);
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let parts = {
        let (remote, local, stop) = (remote.partial(), local.clone(), stop.clone());
        std::thread::Builder::new()
            .name("trace-upload".into())
            .spawn(move || upload_parts(&remote, &local, &stop))?
    };
    stand_in(&local, &url);
    *path = local.clone();
    Ok(Some(Upload {
        remote,
        staging,
        local,
        stop,
        parts: Some(parts),
    }))
}

/// The part files the writer has finished in `local`'s `.partial` directory.
fn finished_parts(local: &Path) -> Vec<(String, PathBuf)> {
    let dir = trace_format::partial_dir(local);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| n.starts_with("part-") && n.ends_with(".parquet"))
        .collect();
    v.sort();
    v
}

/// Uploads each part as the writer closes it, until told to stop; returns the parts sent.
fn upload_parts(
    partial: &Remote,
    local: &Path,
    stop: &(Mutex<bool>, Condvar),
) -> anyhow::Result<BTreeSet<String>> {
    let mut sent = BTreeSet::new();
    loop {
        let stopping = {
            let (m, cv) = stop;
            let g = m.lock().unwrap_or_else(|e| e.into_inner());
            let (g, _) = cv
                .wait_timeout_while(g, PART_POLL, |s| !*s)
                .unwrap_or_else(|e| e.into_inner());
            *g
        };
        send_new_parts(partial, local, &mut sent)?;
        if stopping {
            return Ok(sent);
        }
    }
}

fn send_new_parts(
    partial: &Remote,
    local: &Path,
    sent: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    for (name, path) in finished_parts(local) {
        if sent.contains(&name) {
            continue;
        }
        let dest = partial.at(
            Key::from(format!("{}/{name}", partial.key)),
            format!("{}/{name}", partial.url),
        );
        // The writer may merge and delete a part between the listing and the read: the
        // finished file then goes up whole, so a vanished part is not an error.
        match block_on(dest.upload(&path)) {
            Ok(_) => {
                sent.insert(name);
            }
            Err(_) if !path.exists() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Upload {
    /// After the verb: uploads the finished file and deletes the uploaded parts, or, for a run
    /// that did not finish its file, makes sure every finished part is up. The staging copy is
    /// kept, and named, when an upload fails.
    fn finish(mut self) -> anyhow::Result<()> {
        {
            let (m, cv) = &*self.stop;
            *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        let parts = self.parts.take().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the uploader panicked")))
        });
        let url = self.remote.url.clone();
        let partial = self.remote.partial();
        let result: anyhow::Result<()> = if self.local.is_file() {
            block_on(async {
                let n = self.remote.upload(&self.local).await?;
                partial.delete_under().await?;
                eprintln!("trace: uploaded {url} ({:.1} MB)", n as f64 / 1e6);
                Ok(())
            })
        } else {
            let mut sent = match parts {
                Some(Ok(s)) => s,
                _ => BTreeSet::new(),
            };
            send_new_parts(&partial, &self.local, &mut sent).map(|()| {
                if !sent.is_empty() {
                    eprintln!(
                        "trace: the run did not finish its file; its {} finished part(s) are at \
                         {}/ (read them there, or `trace recover {}/`)",
                        sent.len(),
                        partial.url,
                        partial.url
                    );
                }
            })
        };
        if let Err(e) = result {
            let kept = self.staging.keep();
            return Err(e.context(format!("the local copy is kept in {}", kept.display())));
        }
        Ok(())
    }
}

/// Ends a verb that wrote through [`stage_output`]: its exit code, unless the upload failed.
pub(crate) fn finish(
    upload: Option<Upload>,
    outcome: anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let Some(up) = upload else { return outcome };
    let uploaded = up.finish();
    let code = outcome?;
    uploaded?;
    Ok(code)
}

/// The remote `.partial` prefix a `trace recover URL.partial/` names, merged locally and
/// uploaded as the finished object beside it; the parts are deleted after.
pub(crate) fn recover_remote(
    url: &str,
    recover: impl FnOnce(&Path) -> anyhow::Result<PathBuf>,
) -> anyhow::Result<()> {
    let trimmed = url.trim_end_matches('/');
    let Some(final_url) = trimmed.strip_suffix(".partial") else {
        anyhow::bail!("{url}: recover takes an interrupted run's .partial prefix (URL.partial/)");
    };
    let mut p = PathBuf::from(format!("{trimmed}/"));
    let _fetched = fetch_in_place(&mut p)?;
    let merged = recover(&p)?;
    let remote = Remote::open(final_url)?;
    block_on(async {
        if remote.exists().await? {
            anyhow::bail!("{final_url} exists already: the run finished; nothing to recover");
        }
        remote.upload(&merged).await?;
        remote.partial().delete_under().await
    })?;
    eprintln!("trace: uploaded {final_url}; its parts under {trimmed}/ are deleted");
    Ok(())
}
