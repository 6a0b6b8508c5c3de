//! Ground truth: one JSON line per finished request with the server-side arrival time and the
//! time each event was handed to the socket, written by a background thread.
//!
//! Times are ns since the UNIX epoch from ONE wall-clock reading at startup plus a monotonic
//! offset, so they are comparable with a client on the same host that does the same.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use serde::Serialize;

use crate::Error;

/// One wall-clock anchor plus a monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    anchor_unix_ns: u64,
    anchor: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let (anchor, unix_ns) = crate::wall_anchor();
        Self {
            anchor_unix_ns: u64::try_from(unix_ns).unwrap_or(0),
            anchor,
        }
    }

    pub(crate) fn unix_ns(&self) -> u64 {
        self.anchor_unix_ns + self.anchor.elapsed().as_nanos() as u64
    }

    pub(crate) fn unix_secs(&self) -> u64 {
        self.unix_ns() / 1_000_000_000
    }
}

/// One line of the ground-truth file.
#[derive(Debug, Serialize)]
pub(crate) struct TruthRecord {
    pub(crate) request_id: String,
    pub(crate) arrival_unix_ns: u64,
    pub(crate) event_unix_ns: Vec<u64>,
    pub(crate) event_tokens: Vec<u32>,
    pub(crate) status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<String>,
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
