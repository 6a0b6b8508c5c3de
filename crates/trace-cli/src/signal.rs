//! Stopping a long-running verb (replay, record, sim): the first Ctrl-C or SIGTERM (how systemd,
//! docker and Kubernetes stop a process) cancels the verb's token, which stops new work and
//! drains what is in flight, and the verb then exits 128 + the signal's number (130 for
//! SIGINT, 143 for SIGTERM, as if the signal had ended it, which callers expect); a second one
//! aborts the process at once (exit 130), leaving the flushed data readable in the run's
//! `.partial` directory.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

const SIGINT: u8 = 2;
const SIGTERM: u8 = 15;

/// Set once the first signal arrived (to its number), so the verb can say it was interrupted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interrupted(Arc<AtomicU8>);

impl Interrupted {
    /// The exit code of a verb a signal stopped (128 + its number), or `None`.
    pub(crate) fn exit_code(&self) -> Option<ExitCode> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            n => Some(ExitCode::from(128 + n)),
        }
    }
}

/// The next Ctrl-C or SIGTERM, as its number; never returns where neither can be listened for.
async fn next_signal() -> u8 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => SIGINT,
                _ = term.recv() => SIGTERM,
            };
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
    SIGINT
}

/// Spawns the listener on the current runtime: the first signal prints `stopping` and cancels
/// `stop`; the second prints `aborted` and exits 130.
pub(crate) fn on_stop(
    stop: CancellationToken,
    stopping: &'static str,
    aborted: String,
) -> Interrupted {
    let flag = Interrupted::default();
    let f = flag.clone();
    tokio::spawn(async move {
        let n = next_signal().await;
        f.0.store(n, Ordering::SeqCst);
        eprintln!("\n{stopping}");
        stop.cancel();
        next_signal().await;
        eprintln!("{aborted}");
        #[allow(clippy::exit)]
        std::process::exit(130);
    });
    flag
}
