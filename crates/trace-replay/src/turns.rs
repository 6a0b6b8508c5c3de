//! A session's turns on the run clock. The first turn is due at the session's arrival; each
//! later turn is due when its parent ended plus its think time (closed-loop), and that due time
//! is its `scheduled_ns`, so a late send shows as send lag, never hidden. A turn with several
//! children (an agent's sub-agents) releases them together. Each turn carries the history its
//! [`History`] mode gives: the parent's messages and the reply streamed in this run (live) or
//! the recorded one.
//!
//! A think time the trace does not give (an import with send times only) is the recorded gap
//! between the parent's send and the turn's, never less than 0 after the parent ended. Think
//! times stretch with the stage's timeline (a retargeted rate, `--time-scale`) and
//! `--think-scale`.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use trace_client::{Message, Role};
use trace_format::ErrorKind;

use crate::dispatch::{Sent, Shared, put_dropped, send_request};
use crate::session::{History, OnTurnError};
use crate::workload::{SessionWork, WorkItem};

/// Runs one session to its end (or until the run stops: turns not yet due are not sent).
pub(crate) async fn run_session(shared: &Arc<Shared>, work: SessionWork, arrival: Instant) {
    let Some(first) = work.turns.first() else {
        return;
    };
    let arrival_ns = shared.clock.offset_ns(arrival.into_std());
    // The session cap: a waiting session keeps its arrival as its first turn's schedule.
    let _slot = match &shared.session_sem {
        Some(s) => tokio::select! {
            p = s.clone().acquire_owned() => p.ok(),
            () = shared.d.cancel.cancelled() => {
                let why = "cancelled while waiting for a session slot".to_string();
                put_dropped(shared, &first.item, arrival_ns, ErrorKind::Cancelled, why).await;
                return;
            }
        },
        None => None,
    };
    let n = work.turns.len();
    // The messages before each turn's own, held until its children are released.
    let mut before: Vec<Option<Arc<Vec<Message>>>> = vec![None; n];
    let mut scheduled = vec![arrival_ns; n];
    before[0] = Some(Arc::default());
    let mut set = JoinSet::new();
    spawn_turn(&mut set, shared, 0, first.item.clone(), arrival_ns);
    while let Some(joined) = set.join_next().await {
        // A turn task panicking is a bug in this crate; the session ends there.
        let Ok((idx, sent)) = joined else { continue };
        let turn = &work.turns[idx];
        let history = before[idx].take().unwrap_or_default();
        // Not sent (the run stopped): neither are its children.
        let Some(sent) = sent else { continue };
        if turn.children.is_empty() {
            continue;
        }
        if !sent.ok && shared.d.sessions.on_turn_error == OnTurnError::End {
            drop_descendants(shared, &work, idx, sent.end_ns).await;
            continue;
        }
        let reply = match shared.d.sessions.history {
            History::Live => sent.reply.clone().unwrap_or_default(),
            History::Recorded => turn.recorded_reply.clone(),
        };
        let mut next: Vec<Message> = if turn.whole_prompt {
            Vec::with_capacity(2)
        } else {
            let mut v = Vec::with_capacity(history.len() + 2);
            v.extend_from_slice(&history);
            v
        };
        next.push(Message {
            role: Role::User,
            content: turn.item.prompt.clone(),
        });
        next.push(Message {
            role: Role::Assistant,
            content: reply,
        });
        let next = Arc::new(next);
        for &c in &turn.children {
            let child = &work.turns[c];
            let due = due_ns(shared, &sent, scheduled[idx], child.think_ns, child.gap_ns);
            scheduled[c] = due;
            let mut item = child.item.clone();
            item.think_ns = Some(due - sent.end_ns);
            if !child.whole_prompt {
                item.history = next.clone();
            }
            before[c] = Some(next.clone());
            spawn_turn(&mut set, shared, c, item, due);
        }
    }
}

/// When a child of a turn that ended at `sent.end_ns` (and was due at `parent_due`) is due.
fn due_ns(
    shared: &Shared,
    sent: &Sent,
    parent_due: i64,
    think_ns: Option<i64>,
    gap_ns: Option<i64>,
) -> i64 {
    let scale = |t: i64| (t as f64 * shared.think_factor).round() as i64;
    match (think_ns, gap_ns) {
        (Some(t), _) => sent.end_ns.saturating_add(scale(t.max(0))),
        (None, Some(g)) => sent.end_ns.max(parent_due.saturating_add(scale(g.max(0)))),
        (None, None) => sent.end_ns,
    }
}

/// Sends one turn when it is due; None when the run stopped first.
fn spawn_turn(
    set: &mut JoinSet<(usize, Option<Sent>)>,
    shared: &Arc<Shared>,
    idx: usize,
    item: WorkItem,
    due_ns: i64,
) {
    let shared = shared.clone();
    set.spawn(async move {
        let at = Instant::from_std(shared.clock.instant_at(due_ns));
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = shared.d.stop.cancelled() => return (idx, None),
        }
        (idx, Some(send_request(&shared, item, due_ns).await))
    });
}

/// Rows for every turn below `idx`, never sent because `idx` failed.
async fn drop_descendants(shared: &Arc<Shared>, work: &SessionWork, idx: usize, at_ns: i64) {
    let failed = &work.turns[idx].item.request_id;
    let mut stack = work.turns[idx].children.clone();
    while let Some(d) = stack.pop() {
        let t = &work.turns[d];
        let why = format!(
            "not sent: turn '{failed}' of session '{}' failed (--on-turn-error continue sends \
             the rest)",
            work.id
        );
        put_dropped(shared, &t.item, at_ns, ErrorKind::Dropped, why).await;
        stack.extend(t.children.iter().copied());
    }
}
