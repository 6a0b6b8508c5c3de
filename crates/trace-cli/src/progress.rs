//! The live progress line on stderr (indicatif): a campaign's prefix (scenario k of n, time
//! left), the stage and its ETA, sent, done, errors, in flight, send lag. Drawn from its own thread every 200 ms from the dispatcher's [`Counters`], so the hot
//! path only bumps atomics. Hidden when stderr is not a terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use trace_replay::dispatch::Counters;

/// A running progress display; [`ProgressLine::finish`] clears it.
pub(crate) struct ProgressLine {
    done: Arc<AtomicBool>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl ProgressLine {
    /// Starts drawing `counters` on stderr.
    pub(crate) fn start(counters: Arc<Counters>, prefix: Option<String>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let join = std::thread::Builder::new()
            .name("trace-progress".into())
            .spawn(move || draw(&counters, &flag, prefix.as_deref()))
            .ok();
        Self { done, join }
    }

    /// Stops and clears the line.
    pub(crate) fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop();
    }
}

fn draw(c: &Counters, done: &AtomicBool, prefix: Option<&str>) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Some(p) = prefix {
        bar.set_prefix(format!("{p} "));
    }
    // The ETA is the stage's, from its sent count against its total.
    let style = ProgressStyle::with_template(
        "{spinner} {prefix}[{elapsed_precise}] {bar:30} eta {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let mut stage_base = 0u64;
    let mut last_stage = String::new();
    while !done.load(Ordering::Relaxed) {
        let stage = c.stage.lock().map(|s| s.clone()).unwrap_or_default();
        let released = c.released.load(Ordering::Relaxed);
        if stage != last_stage {
            stage_base = released;
            last_stage.clone_from(&stage);
        }
        bar.set_length(c.stage_total.load(Ordering::Relaxed));
        bar.set_position(released.saturating_sub(stage_base));
        bar.set_message(format!(
            "{stage}  sent {released}  done {}  errors {}  in flight {}  lag {:.0} us",
            c.done.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
            c.in_flight.load(Ordering::Relaxed),
            c.last_lag_ns.load(Ordering::Relaxed) as f64 / 1e3,
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish_and_clear();
}
