//! The engine's driver: one task plans a step, sleeps until it ends and delivers its tokens to
//! each request's channel; or, for the fixed time model, a per-request timer ([`Source`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AppState, Gauges};
use crate::engine::{Emit, Engine, EngineParams};

/// A request handed to the scheduler task.
pub(super) struct Submit {
    pub(super) id: u64,
    pub(super) prompt_tokens: u32,
    pub(super) output_tokens: u32,
    /// Prompt tokens already in the prefix cache: not prefilled.
    pub(super) cached_tokens: u32,
    pub(super) tx: mpsc::UnboundedSender<bool>,
}

/// Drives the engine in real time: plan a step, sleep until it ends, deliver its tokens.
pub(super) async fn scheduler_loop(
    params: EngineParams,
    mut rx: mpsc::UnboundedReceiver<Submit>,
    state: Arc<AppState>,
    stop: CancellationToken,
) {
    let mut engine = Engine::new(params);
    let mut senders: HashMap<u64, mpsc::UnboundedSender<bool>> = HashMap::new();
    let mut out: Vec<Emit> = Vec::new();
    let mut deadline = Instant::now();
    let g = &state.gauges;
    let add = |engine: &mut Engine, senders: &mut HashMap<u64, _>, s: Submit| {
        g.pending.fetch_sub(1, Ordering::Relaxed);
        engine.add_cached(s.id, s.prompt_tokens, s.output_tokens, s.cached_tokens);
        senders.insert(s.id, s.tx);
    };
    loop {
        if stop.is_cancelled() {
            break;
        }
        if engine.is_idle() {
            publish(&engine, g);
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => add(&mut engine, &mut senders, s),
                    None => break,
                },
                () = stop.cancelled() => break,
            }
            deadline = Instant::now();
        }
        while let Ok(s) = rx.try_recv() {
            add(&mut engine, &mut senders, s);
        }
        let Some((ns, _)) = engine.step(&mut out) else {
            continue;
        };
        publish(&engine, g);
        deadline += Duration::from_nanos(ns);
        // Behind schedule (a slow host): the engine slows down rather than bursting.
        let now = Instant::now();
        if deadline < now {
            deadline = now;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            () = stop.cancelled() => break,
        }
        let mut gone = Vec::new();
        for e in &out {
            let Some(tx) = senders.get(&e.id) else {
                continue;
            };
            if tx.send(e.finished).is_err() {
                gone.push(e.id);
            } else if e.finished {
                senders.remove(&e.id);
            }
        }
        g.generation_tokens
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        for id in gone {
            // The client went away: free its KV blocks like vLLM's abort.
            engine.abort(id);
            senders.remove(&id);
        }
    }
    // Dropping the senders ends every open stream.
}

fn publish(engine: &Engine, g: &Gauges) {
    g.waiting
        .store(engine.num_waiting() as u64, Ordering::Relaxed);
    g.running
        .store(engine.num_running() as u64, Ordering::Relaxed);
    g.kv_usage_bits
        .store(engine.kv_usage().to_bits(), Ordering::Relaxed);
    g.preemptions
        .store(engine.preemptions_total(), Ordering::Relaxed);
}

/// Where a request's tokens come from.
pub(super) enum Source {
    /// The shared engine: one `bool` (finished) per token.
    Engine(mpsc::UnboundedReceiver<bool>),
    /// The fixed model: token `i` is due at `first + i * itl`.
    Fixed {
        first: Instant,
        itl: Duration,
        produced: u32,
        total: u32,
        _running: RunningGuard,
    },
}

/// Counts a fixed-model request as running for as long as it lives.
pub(super) struct RunningGuard(Arc<AppState>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.gauges.running.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) fn start(
    s: &Arc<AppState>,
    n: u64,
    prompt_tokens: u32,
    output_tokens: u32,
    cached_tokens: u32,
) -> Option<Source> {
    if let Some((ttft, itl)) = s.fixed {
        s.gauges.running.fetch_add(1, Ordering::Relaxed);
        let guard = RunningGuard(s.clone());
        return Some(Source::Fixed {
            first: Instant::now() + ttft,
            itl,
            produced: 0,
            total: output_tokens,
            _running: guard,
        });
    }
    let (tx, rx) = mpsc::unbounded_channel();
    s.gauges.pending.fetch_add(1, Ordering::Relaxed);
    let submit = s.submit.as_ref()?;
    if submit
        .send(Submit {
            id: n,
            prompt_tokens,
            output_tokens,
            cached_tokens,
            tx,
        })
        .is_err()
    {
        s.gauges.pending.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(Source::Engine(rx))
}

impl Source {
    /// The next token: `Some(finished)`, or None when the server is stopping.
    pub(super) async fn next(&mut self, stop: &CancellationToken) -> Option<bool> {
        match self {
            Self::Engine(rx) => rx.recv().await,
            Self::Fixed {
                first,
                itl,
                produced,
                total,
                ..
            } => {
                if *produced >= *total {
                    return None;
                }
                let due = *first + *itl * *produced;
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    () = stop.cancelled() => return None,
                }
                *produced += 1;
                Some(*produced >= *total)
            }
        }
    }
}
