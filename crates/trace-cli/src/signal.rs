//! Stopping a long-running verb (replay, record, sim): the first Ctrl-C or SIGTERM (how systemd,
//! docker and Kubernetes stop a process) cancels the verb's token, which stops new work and
//! drains what is in flight; a second one aborts the process at once (exit 130), leaving the
//! flushed data readable in the run's `.partial` directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Set once the first signal arrived, so the verb can say it was interrupted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interrupted(Arc<AtomicBool>);

impl Interrupted {
    /// Whether a signal stopped the verb.
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The next Ctrl-C or SIGTERM; never returns where neither can be listened for.
async fn next_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
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
        next_signal().await;
        f.0.store(true, Ordering::SeqCst);
        eprintln!("\n{stopping}");
        stop.cancel();
        next_signal().await;
        eprintln!("{aborted}");
        #[allow(clippy::exit)]
        std::process::exit(130);
    });
    flag
}
