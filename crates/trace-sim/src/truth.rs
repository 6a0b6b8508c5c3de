//! Ground truth: one JSON line per finished request ([`TruthRecord`]) with the server-side
//! arrival time and the time each event was handed to the socket, written by a background
//! thread (`--truth FILE`) and read back by [`read_truth`] (selfcheck, the proxy benchmark).
//!
//! Times are UNIX ns on the simulator's [`trace_sys::RunClock`] (one wall-clock reading at
//! startup plus a monotonic offset), so they are comparable with a client on the same host
//! that does the same.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// One line of the ground-truth file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthRecord {
    /// The request's `X-Request-Id` (`sim-N` when it sent none).
    pub request_id: String,
    /// When the handler saw the request, UNIX ns.
    pub arrival_unix_ns: i64,
    /// When each response event was handed to the socket, UNIX ns.
    pub event_unix_ns: Vec<i64>,
    /// Output tokens in each event.
    pub event_tokens: Vec<u32>,
    /// HTTP status (0 for a reset stream).
    #[serde(default)]
    pub status: u16,
    /// The fault injected, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// Reads a ground-truth file into a map by request id; errors name the file and line.
pub fn read_truth(path: &Path) -> Result<HashMap<String, TruthRecord>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Truth {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let t: TruthRecord = serde_json::from_str(line).map_err(|e| Error::TruthLine {
            path: path.to_path_buf(),
            line: i + 1,
            source: e,
        })?;
        out.insert(t.request_id.clone(), t);
    }
    Ok(out)
}

/// The writer thread and its channel.
#[derive(Debug)]
pub(crate) struct TruthLog {
    tx: Option<mpsc::Sender<TruthRecord>>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl TruthLog {
    pub(crate) fn create(path: &Path) -> Result<Self, Error> {
        let err = |source| Error::Truth {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(err)?;
        let (tx, rx) = mpsc::channel::<TruthRecord>();
        let path: PathBuf = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("trace-sim-truth".into())
            .spawn(move || {
                // Serialising the truth log must not delay the server's runtime between
                // stamping an event and writing it to the socket (that gap would read as client
                // error): at nice 10 the runtime preempts this thread on its core.
                let _ = rustix::process::setpriority_process(None, 10);
                write_loop(file, &rx).map_err(|source| Error::Truth { path, source })
            })
            .map_err(err)?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn sender(&self) -> Option<mpsc::Sender<TruthRecord>> {
        self.tx.clone()
    }

    /// Stops the thread after everything sent so far is written. Every clone of the sender
    /// must be dropped first for the thread to see the end.
    pub(crate) fn close(mut self) -> Result<(), Error> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| Error::Panicked)?,
            None => Ok(()),
        }
    }
}

fn write_loop(file: File, rx: &mpsc::Receiver<TruthRecord>) -> std::io::Result<()> {
    let mut out = BufWriter::new(file);
    while let Ok(rec) = rx.recv() {
        write_one(&mut out, &rec)?;
        // Drain what is queued, then flush once, so a reader sees lines soon after they finish.
        while let Ok(rec) = rx.try_recv() {
            write_one(&mut out, &rec)?;
        }
        out.flush()?;
    }
    out.flush()
}

fn write_one(out: &mut BufWriter<File>, rec: &TruthRecord) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, rec).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}
