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
pub(crate) async fn run_session(shared: Arc<Shared>, work: SessionWork, arrival: Instant) {
    let shared = &shared;
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
        let at = shared.clock.instant_at(due_ns);
        let due = async {
            match &shared.alarms {
                Some(a) => {
                    // A dropped alarm (the thread gone) falls back to tokio's timer.
                    if a.at(at).await.is_err() {
                        tokio::time::sleep_until(Instant::from_std(at)).await;
                    }
                }
                None => tokio::time::sleep_until(Instant::from_std(at)).await,
            }
        };
        tokio::select! {
            () = due => {}
            () = shared.d.stop.cancelled() => return (idx, None),
        }
        (idx, Some(send_request(shared.clone(), item, due_ns).await))
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use trace_format::{TraceMeta, TraceRecord, TraceWriter, WriterOptions};
    use trace_sys::RunClock;

    use super::*;
    use crate::dispatch::{Dispatcher, RequestSender, SendFuture, Sink, StagePlan, Timer};
    use crate::session::SessionOptions;
    use crate::workload::Workload;

    /// Answers after 200 ms with the reply `re:<request id>`; fails requests whose id starts
    /// with `fail`. Keeps what each request was sent with.
    #[derive(Default)]
    struct Echo {
        seen: Mutex<Vec<WorkItem>>,
    }

    impl RequestSender for Echo {
        fn send<'a>(
            &'a self,
            item: &'a WorkItem,
            clock: &'a RunClock,
            rec: &'a mut TraceRecord,
            _cancel: SendFuture<'a>,
        ) -> SendFuture<'a> {
            Box::pin(async move {
                // Tokio's clock: paused in these tests.
                let now = || clock.offset_ns(Instant::now().into_std());
                self.seen.lock().unwrap().push(item.clone());
                rec.sent_ns = Some(now());
                tokio::time::sleep(Duration::from_millis(200)).await;
                rec.end_ns = Some(now());
                if item.request_id.starts_with("fail") {
                    rec.error_kind = Some(ErrorKind::Http5xx);
                    return;
                }
                rec.output_tokens = Some(1);
                if item.keep_output {
                    rec.output_text = Some(format!("re:{}", item.request_id));
                }
            })
        }
    }

    /// (id, session, parent, think ms, recorded send ms)
    type Row = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<i64>,
        i64,
    );

    fn workload(rows: &[Row], opts: &SessionOptions) -> (tempfile::TempDir, Workload) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.parquet");
        let mut w = TraceWriter::create(&p, TraceMeta::new(), WriterOptions::default()).unwrap();
        for &(id, s, parent, think, t) in rows {
            w.write(&TraceRecord {
                request_id: id.into(),
                session_id: Some(s.into()),
                parent_id: parent.map(Into::into),
                think_ns: think.map(|ms| ms * 1_000_000),
                scheduled_ns: t * 1_000_000,
                prompt_tokens: Some(8),
                max_tokens: Some(4),
                ..Default::default()
            })
            .unwrap();
        }
        w.close().unwrap();
        let wl = Workload::trace(&p, 0, opts).unwrap();
        (d, wl)
    }

    async fn run(
        rows: &[Row],
        opts: SessionOptions,
        time_factor: f64,
    ) -> (Vec<TraceRecord>, Vec<WorkItem>) {
        let (_d, wl) = workload(rows, &opts);
        let n = wl.len().unwrap();
        let offsets = wl.timeline_ns().unwrap().to_vec();
        let echo = Arc::new(Echo::default());
        let mem = Arc::new(Mutex::new(Vec::new()));
        let d = Dispatcher {
            sender: echo.clone(),
            sink: Sink::Memory(mem.clone()),
            max_concurrency: None,
            timer: Timer::Tokio,
            counters: Arc::default(),
            stop: CancellationToken::new(),
            cancel: CancellationToken::new(),
            drain_timeout: Duration::from_secs(1),
            sessions: opts,
            store_output: false,
            shard: None,
        };
        let plan = StagePlan {
            label: "recorded".into(),
            target_rate: None,
            offsets_ns: offsets[..n].to_vec(),
            first_item: 0,
            time_factor,
            max_concurrency: None,
        };
        let clock = RunClock::from_parts(Instant::now().into_std(), 0);
        d.run_stage(&clock, &plan, Arc::new(wl)).await;
        let mut recs = mem.lock().unwrap().clone();
        recs.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        let seen = echo.seen.lock().unwrap().clone();
        (recs, seen)
    }

    fn ms(ns: Option<i64>) -> Option<i64> {
        ns.map(|t| t / 1_000_000)
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_is_due_when_its_parent_ended_plus_its_think_time() {
        let rows: [Row; 4] = [
            ("a0", "a", None, None, 0),
            ("a1", "a", Some("a0"), Some(100), 10),
            ("a2", "a", Some("a1"), Some(50), 20),
            ("b0", "b", None, None, 30),
        ];
        let (recs, _) = run(&rows, SessionOptions::default(), 1.0).await;
        // (id, scheduled ms, sent ms, think ms, turn)
        type Seen<'a> = (&'a str, i64, Option<i64>, Option<i64>, Option<i32>);
        let got: Vec<Seen<'_>> = recs
            .iter()
            .map(|r| {
                (
                    r.request_id.as_str(),
                    r.scheduled_ns / 1_000_000,
                    ms(r.sent_ns),
                    ms(r.think_ns),
                    r.turn,
                )
            })
            .collect();
        // a0 ends at 200: a1 due at 300, ends at 500: a2 due at 550. b arrives at 30.
        assert_eq!(
            got,
            [
                ("a0", 0, Some(0), None, Some(0)),
                ("a1", 300, Some(300), Some(100), Some(1)),
                ("a2", 550, Some(550), Some(50), Some(2)),
                ("b0", 30, Some(30), None, Some(0)),
            ]
        );
        assert!(recs.iter().all(|r| r.session_id.is_some()));
        assert_eq!(recs[1].parent_id.as_deref(), Some("a0"));

        // Think times stretch with the timeline and --think-scale.
        let opts = SessionOptions {
            think_scale: 2.0,
            ..SessionOptions::default()
        };
        let (recs, _) = run(&rows, opts, 0.5).await;
        assert_eq!(recs[1].scheduled_ns / 1_000_000, 300);
        assert_eq!(recs[2].scheduled_ns / 1_000_000, 550);
        let (recs, _) = run(&rows, SessionOptions::default(), 0.0).await;
        assert_eq!(recs[1].scheduled_ns / 1_000_000, 200, "think 0 at rate inf");
    }

    #[tokio::test(start_paused = true)]
    async fn children_fan_out_together_and_unknown_think_keeps_the_recorded_gap() {
        let rows: [Row; 4] = [
            ("r", "s", None, None, 0),
            ("x", "s", Some("r"), Some(0), 5),
            ("y", "s", Some("r"), Some(0), 6),
            // No think time: the recorded gap of 1 s after its parent's send.
            ("z", "s", Some("x"), None, 1005),
        ];
        let (recs, _) = run(&rows, SessionOptions::default(), 1.0).await;
        let sent: Vec<(&str, Option<i64>)> = recs
            .iter()
            .map(|r| (r.request_id.as_str(), ms(r.sent_ns)))
            .collect();
        assert_eq!(
            sent,
            [
                ("r", Some(0)),
                ("x", Some(200)),
                ("y", Some(200)),
                ("z", Some(1200))
            ]
        );
        assert_eq!(ms(recs[3].think_ns), Some(800));
    }

    #[tokio::test(start_paused = true)]
    async fn live_history_resends_the_streamed_reply() {
        let rows: [Row; 3] = [
            ("q0", "s", None, None, 0),
            ("q1", "s", Some("q0"), Some(0), 1),
            ("q2", "s", Some("q1"), Some(0), 2),
        ];
        let live = SessionOptions {
            history: History::Live,
            ..SessionOptions::default()
        };
        let (recs, seen) = run(&rows, live, 1.0).await;
        assert!(recs.iter().all(|r| r.output_text.is_none()), "not stored");
        let q2 = seen.iter().find(|i| i.request_id == "q2").unwrap();
        let said: Vec<(Role, &str)> = q2
            .history
            .iter()
            .map(|m| (m.role, m.content.as_str()))
            .collect();
        let q0 = &seen.iter().find(|i| i.request_id == "q0").unwrap().prompt;
        let q1 = &seen.iter().find(|i| i.request_id == "q1").unwrap().prompt;
        assert_eq!(
            said,
            [
                (Role::User, q0.as_str()),
                (Role::Assistant, "re:q0"),
                (Role::User, q1.as_str()),
                (Role::Assistant, "re:q1"),
            ]
        );
        assert!(
            !seen
                .iter()
                .find(|i| i.request_id == "q2")
                .unwrap()
                .keep_output
        );

        // Recorded history: synthetic replies of the recorded length (4 tokens), not the stream.
        let (_, seen) = run(&rows, SessionOptions::default(), 1.0).await;
        let q1 = seen.iter().find(|i| i.request_id == "q1").unwrap();
        assert_eq!(q1.history[1].role, Role::Assistant);
        assert_eq!(q1.history[1].content.split(' ').count(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_turn_ends_its_session_unless_told_to_continue() {
        let rows: [Row; 3] = [
            ("fail0", "s", None, None, 0),
            ("k1", "s", Some("fail0"), Some(0), 1),
            ("k2", "s", Some("k1"), Some(0), 2),
        ];
        let (recs, seen) = run(&rows, SessionOptions::default(), 1.0).await;
        assert_eq!(seen.len(), 1);
        assert_eq!(recs.len(), 3, "every turn is a row");
        for r in &recs[1..] {
            assert_eq!(r.error_kind, Some(ErrorKind::Dropped));
            assert!(r.sent_ns.is_none());
            assert!(r.error_msg.as_deref().unwrap().contains("'fail0'"));
        }
        let go_on = SessionOptions {
            on_turn_error: OnTurnError::Continue,
            ..SessionOptions::default()
        };
        let (recs, seen) = run(&rows, go_on, 1.0).await;
        assert_eq!(seen.len(), 3);
        assert!(recs[1..].iter().all(|r| r.error_kind.is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_cap_queues_whole_sessions_and_keeps_their_arrival() {
        let rows: [Row; 4] = [
            ("a0", "a", None, None, 0),
            ("a1", "a", Some("a0"), Some(100), 1),
            ("b0", "b", None, None, 10),
            ("b1", "b", Some("b0"), Some(100), 11),
        ];
        let capped = SessionOptions {
            max_sessions: Some(1),
            ..SessionOptions::default()
        };
        let (recs, _) = run(&rows, capped, 1.0).await;
        // a runs 0..500; b arrives at 10 and waits for it.
        let b0 = &recs[2];
        assert_eq!(
            (b0.scheduled_ns / 1_000_000, ms(b0.sent_ns)),
            (10, Some(500))
        );
        assert_eq!(ms(recs[3].sent_ns), Some(800));
    }
}
