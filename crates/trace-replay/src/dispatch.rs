//! The dispatcher: releases each request at its absolute deadline on the run's clock, caps
//! concurrency by queueing (the wait is recorded as `sent_ns - scheduled_ns`, never skipped),
//! hands finished records to the sink, and drains or cancels in-flight requests on stop.
//!
//! Two timers release requests. [`Timer::Tokio`] uses `sleep_until` (about 1 ms granularity;
//! exact under `start_paused` tests). [`Timer::Thread`] releases from one dedicated OS thread:
//! a precise sleep to just before the deadline, then a spin of at most [`SPIN`], then a spawn
//! onto the runtime. Runtime workers never spin.
//!
//! The request itself is sent by an injected [`RequestSender`], so this module knows no HTTP.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trace_format::{ErrorKind, RecordSender, TraceRecord};
use trace_sys::RunClock;

pub use crate::plan::StagePlan;
use crate::session::SessionOptions;
use crate::summary::{ReqStat, StageStats};
use crate::workload::{Unit, WorkItem, Workload};

/// The longest the timing thread spins before a deadline; the rest is an OS sleep.
pub const SPIN: Duration = Duration::from_micros(50);

/// A boxed send future borrowing the record it fills.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Sends one request and fills `rec`'s response columns (`sent_ns`, `chunk_ns`, `end_ns`,
/// `status`, `error_kind`...).
pub trait RequestSender: Send + Sync + 'static {
    /// Sends `item`; times are offsets on `clock`. When `cancel` completes the request is
    /// abandoned and the row gets `error_kind = cancelled`, keeping the chunks received so far.
    fn send<'a>(
        &'a self,
        item: &'a WorkItem,
        clock: &'a RunClock,
        rec: &'a mut TraceRecord,
        cancel: SendFuture<'a>,
    ) -> SendFuture<'a>;
}

/// Where finished records go.
#[derive(Clone)]
pub enum Sink {
    /// The Parquet writer thread (backpressure applies). When it is gone (its file failed:
    /// a full disk, a removed directory), the first record it refuses cancels `stop`, so the run
    /// sends nothing more and drains; the writer's own error ends the run.
    Parquet {
        /// To the writer thread.
        tx: RecordSender,
        /// The run's stop token.
        stop: CancellationToken,
    },
    /// Kept in memory (tests).
    Memory(Arc<Mutex<Vec<TraceRecord>>>),
}

impl Sink {
    async fn put(&self, rec: TraceRecord) {
        match self {
            Sink::Parquet { tx, stop } => {
                if tx.send_async(rec).await.is_err() && !stop.is_cancelled() {
                    tracing::error!(
                        "the trace writer stopped; sending no more requests (its error follows)"
                    );
                    stop.cancel();
                }
            }
            Sink::Memory(v) => {
                if let Ok(mut v) = v.lock() {
                    v.push(rec);
                }
            }
        }
    }
}

/// How requests are released at their deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// `tokio::time::sleep_until` on the runtime (deterministic under paused time).
    Tokio,
    /// A dedicated OS thread: precise sleep, a short spin, then a spawn onto the runtime.
    Thread,
}

/// Live counters for a progress display; all monotonic except `in_flight`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests released (sent or queued at the cap).
    pub released: AtomicU64,
    /// Requests finished (ok or failed).
    pub done: AtomicU64,
    /// Requests finished with an error.
    pub errors: AtomicU64,
    /// Requests released and not yet finished.
    pub in_flight: AtomicI64,
    /// Most requests in flight at once (queued at a cap included).
    pub max_in_flight: AtomicI64,
    /// Send lag of the latest request, ns.
    pub last_lag_ns: AtomicI64,
    /// Current stage label.
    pub stage: Mutex<String>,
    /// Requests planned in the current stage.
    pub stage_total: AtomicU64,
}

/// What one dispatched stage did.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    /// Stage label.
    pub label: String,
    /// Requested rate.
    pub target_rate: Option<f64>,
    /// Stage start, ns since run start.
    pub start_ns: i64,
    /// When its last request finished, ns since run start.
    pub end_ns: i64,
    /// Arrivals released, requests or sessions (fewer than planned after a stop).
    pub released: u64,
    /// Rows the stage wrote: every request, and the turns of sessions never sent.
    pub rows: u64,
    /// The summary's running totals and histograms (fixed size).
    pub stats: StageStats,
}

/// Dispatcher settings.
#[derive(Clone)]
pub struct Dispatcher {
    /// Sends each request.
    pub sender: Arc<dyn RequestSender>,
    /// Receives each finished record.
    pub sink: Sink,
    /// At most this many requests in flight; later arrivals queue.
    pub max_concurrency: Option<usize>,
    /// How deadlines are met.
    pub timer: Timer,
    /// Progress counters.
    pub counters: Arc<Counters>,
    /// Cancelled to stop releasing new requests (the first Ctrl-C or SIGTERM); in-flight ones
    /// drain.
    pub stop: CancellationToken,
    /// Cancelled by the dispatcher when the drain timeout passes after a stop: in-flight
    /// requests end as `cancelled` rows.
    pub cancel: CancellationToken,
    /// After a stop, how long in-flight requests may finish before they are cancelled.
    pub drain_timeout: Duration,
    /// How a session workload's sessions run (history, failed turns, cap, think scale).
    pub sessions: SessionOptions,
    /// Rows keep the output text (`--store outputs`); otherwise a live session's reply is
    /// held only until its next turn is sent.
    pub store_output: bool,
    /// This host's share of a sharded run; None sends every arrival.
    pub shard: Option<crate::plan::Shard>,
}

impl Dispatcher {
    fn owns(&self, unit: u64) -> bool {
        self.shard.is_none_or(|s| s.owns(unit))
    }
}

/// One stage's state, shared by its requests and sessions.
pub(crate) struct Shared {
    pub(crate) d: Dispatcher,
    workload: Arc<Workload>,
    pub(crate) clock: RunClock,
    sem: Option<Arc<Semaphore>>,
    /// The session cap.
    pub(crate) session_sem: Option<Arc<Semaphore>>,
    /// Think times are multiplied by this: the stage's time factor times `--think-scale`.
    pub(crate) think_factor: f64,
    /// Precise wake-ups for session turns under [`Timer::Thread`].
    pub(crate) alarms: Option<crate::alarm::Alarms>,
    stats: Mutex<StageStats>,
    /// Units (requests or whole sessions) not finished: the stage waits for 0.
    in_flight: AtomicI64,
    idle: Notify,
    last_end_ns: AtomicI64,
    /// Rows handed to the sink.
    rows: AtomicU64,
    stage: String,
    target_rate: Option<f64>,
}

/// What a sent request gave its session.
pub(crate) struct Sent {
    /// It succeeded.
    pub ok: bool,
    /// When it ended, ns since run start.
    pub end_ns: i64,
    /// The streamed text, when the item asked to keep it.
    pub reply: Option<String>,
}

impl Dispatcher {
    /// Dispatches one stage: releases its requests at `stage start + offset`, waits for all of
    /// them to finish (or, after a stop, for the drain timeout, then cancels the rest: each
    /// cancelled request is still a row, `error_kind = cancelled`).
    pub async fn run_stage(
        &self,
        clock: &RunClock,
        plan: &StagePlan,
        workload: Arc<Workload>,
    ) -> StageOutcome {
        self.run_stage_at(clock, plan, workload, None).await
    }

    /// [`Dispatcher::run_stage`] with the schedule anchored at `at` instead of now: a sharded
    /// run's first stage starts at the start barrier's common instant on every host, whatever
    /// each spent setting up after the barrier released it.
    pub async fn run_stage_at(
        &self,
        clock: &RunClock,
        plan: &StagePlan,
        workload: Arc<Workload>,
        at: Option<std::time::Instant>,
    ) -> StageOutcome {
        let stage_start = at.map_or_else(Instant::now, Instant::from_std);
        let start_ns = clock.offset_ns(stage_start.into_std());
        if let Ok(mut s) = self.counters.stage.lock() {
            s.clone_from(&plan.label);
        }
        self.counters
            .stage_total
            .store(plan.offsets_ns.len() as u64, Ordering::Relaxed);
        let sessions = workload.session_count().is_some();
        let shared = Arc::new(Shared {
            d: self.clone(),
            workload,
            clock: *clock,
            sem: plan
                .max_concurrency
                .or(self.max_concurrency)
                .map(|c| Arc::new(Semaphore::new(c.max(1)))),
            session_sem: self
                .sessions
                .max_sessions
                .map(|c| Arc::new(Semaphore::new(c.max(1)))),
            think_factor: plan.time_factor * self.sessions.think_scale,
            alarms: (self.timer == Timer::Thread && sessions)
                .then(crate::alarm::Alarms::start)
                .flatten(),
            stats: Mutex::new(StageStats::default()),
            in_flight: AtomicI64::new(0),
            idle: Notify::new(),
            last_end_ns: AtomicI64::new(start_ns),
            rows: AtomicU64::new(0),
            stage: plan.label.clone(),
            target_rate: plan.target_rate,
        });
        let released = match self.timer {
            Timer::Tokio => release_tokio(&shared, stage_start, plan).await,
            Timer::Thread => release_thread(&shared, stage_start, plan).await,
        };
        self.drain(&shared).await;
        let stats = shared
            .stats
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        StageOutcome {
            label: plan.label.clone(),
            target_rate: plan.target_rate,
            start_ns,
            end_ns: shared.last_end_ns.load(Ordering::SeqCst),
            released,
            rows: shared.rows.load(Ordering::SeqCst),
            stats,
        }
    }

    async fn drain(&self, shared: &Arc<Shared>) {
        let wait_idle = async {
            loop {
                let notified = shared.idle.notified();
                if shared.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::pin!(wait_idle);
        // Without a stop, wait as long as requests take (each has the client's timeout).
        tokio::select! {
            () = &mut wait_idle => return,
            () = self.stop.cancelled() => {}
        }
        if tokio::time::timeout(self.drain_timeout, &mut wait_idle)
            .await
            .is_err()
        {
            tracing::warn!(
                "drain timeout: cancelling {} in-flight requests",
                shared.in_flight.load(Ordering::SeqCst)
            );
            self.cancel.cancel();
            wait_idle.await;
        }
    }
}

/// Releases with `sleep_until`; returns how many were released.
async fn release_tokio(shared: &Arc<Shared>, stage_start: Instant, plan: &StagePlan) -> u64 {
    let mut n = 0;
    for (k, &off) in plan.offsets_ns.iter().enumerate() {
        if shared.d.stop.is_cancelled() {
            break;
        }
        if !shared.d.owns(plan.first_item + k as u64) {
            continue;
        }
        let unit = shared.workload.unit(plan.first_item + k as u64);
        let deadline = stage_start + Duration::from_nanos(off.max(0) as u64);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = shared.d.stop.cancelled() => break,
        }
        spawn_unit(shared, &tokio::runtime::Handle::current(), unit, deadline);
        n += 1;
    }
    n
}

/// Releases from a dedicated OS thread; returns how many were released.
async fn release_thread(shared: &Arc<Shared>, stage_start: Instant, plan: &StagePlan) -> u64 {
    let handle = tokio::runtime::Handle::current();
    let shared2 = shared.clone();
    let offsets = plan.offsets_ns.clone();
    let first = plan.first_item;
    let std_start = stage_start.into_std();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("trace-release".into())
        .spawn(move || {
            let mut n = 0u64;
            for (k, &off) in offsets.iter().enumerate() {
                if !shared2.d.owns(first + k as u64) {
                    continue;
                }
                // The prompt is built before the deadline so that only the spawn happens after it.
                let unit = shared2.workload.unit(first + k as u64);
                let off = Duration::from_nanos(off.max(0) as u64);
                if !precise_sleep_until(std_start + off, &shared2.d.stop) {
                    break;
                }
                spawn_unit(&shared2, &handle, unit, stage_start + off);
                n += 1;
            }
            let _ = tx.send(n);
        });
    match spawned {
        Ok(_) => rx.await.unwrap_or(0),
        Err(e) => {
            tracing::warn!("cannot start the release thread ({e}); using tokio timers");
            release_tokio(shared, stage_start, plan).await
        }
    }
}

/// Sleeps until `deadline` on this OS thread: coarse sleeps in slices (to notice a stop), an OS
/// sleep to [`SPIN`] plus the usual wake-up overshoot before it, then a spin. False if stopped.
fn precise_sleep_until(deadline: std::time::Instant, stop: &CancellationToken) -> bool {
    const OVERSHOOT: Duration = Duration::from_micros(60);
    loop {
        if stop.is_cancelled() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return true;
        }
        let left = deadline - now;
        if left > SPIN + OVERSHOOT {
            std::thread::sleep((left - SPIN - OVERSHOOT).min(Duration::from_millis(50)));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Starts a request, or a session whose first turn is due at `deadline`.
fn spawn_unit(
    shared: &Arc<Shared>,
    handle: &tokio::runtime::Handle,
    unit: Unit,
    deadline: Instant,
) {
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    // The work is boxed apart from the task: a future is as large as its largest branch and
    // its captures, and a session's turn state (~8 KiB) would otherwise sit in every plain
    // request's task, waiting streams included.
    let work: Pin<Box<dyn Future<Output = ()> + Send>> = match unit {
        Unit::Request(item) => {
            let scheduled_ns = shared.clock.offset_ns(deadline.into_std());
            Box::pin(send_request(shared.clone(), item, scheduled_ns).map(drop))
        }
        Unit::Session(work) => Box::pin(crate::turns::run_session(shared.clone(), work, deadline)),
    };
    let shared = shared.clone();
    handle.spawn(async move {
        work.await;
        if shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.idle.notify_waiters();
        }
    });
}

/// Sends one request due at `scheduled_ns` (waiting at the concurrency cap, the wait recorded),
/// counts it and hands its row to the sink.
pub(crate) async fn send_request(shared: Arc<Shared>, item: WorkItem, scheduled_ns: i64) -> Sent {
    let shared = &shared;
    let c = &shared.d.counters;
    c.released.fetch_add(1, Ordering::Relaxed);
    let now_in_flight = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    c.max_in_flight.fetch_max(now_in_flight, Ordering::Relaxed);
    let mut rec = row(shared, &item, scheduled_ns);
    let cancel = shared.d.cancel.clone();
    let cancelled = move || -> SendFuture<'static> { Box::pin(cancel.clone().cancelled_owned()) };
    // The semaphore is FIFO: queued arrivals go out in schedule order.
    let permit = match &shared.sem {
        Some(s) => tokio::select! {
            p = s.clone().acquire_owned() => Some(p.ok()),
            () = cancelled() => None,
        },
        None => Some(None),
    };
    match permit {
        Some(_permit) => {
            shared
                .d
                .sender
                .send(&item, &shared.clock, &mut rec, cancelled())
                .await
        }
        None => {
            rec.end_ns = Some(shared.clock.now_ns());
            rec.error_kind = Some(ErrorKind::Cancelled);
            rec.error_msg = Some("cancelled while queued at the concurrency cap".into());
        }
    }
    let reply = match (item.keep_output, shared.d.store_output) {
        (false, _) => None,
        (true, true) => rec.output_text.clone(),
        (true, false) => rec.output_text.take(),
    };
    let ok = rec.error_kind.is_none();
    let end_ns = rec.end_ns.unwrap_or_else(|| shared.clock.now_ns());
    // Boxed: handing the row over takes more state than waiting on the stream, and only for an
    // instant at the end.
    Box::pin(finish(shared, rec)).await;
    c.in_flight.fetch_sub(1, Ordering::Relaxed);
    Sent { ok, end_ns, reply }
}

/// The row of a turn never sent (an earlier turn of its session failed, a stop while it waited
/// for a session slot).
pub(crate) async fn put_dropped(
    shared: &Arc<Shared>,
    item: &WorkItem,
    at_ns: i64,
    kind: ErrorKind,
    why: String,
) {
    let mut rec = row(shared, item, at_ns);
    rec.end_ns = Some(at_ns);
    rec.error_kind = Some(kind);
    rec.error_msg = Some(why);
    finish(shared, rec).await;
}

/// A row's request-side columns.
fn row(shared: &Shared, item: &WorkItem, scheduled_ns: i64) -> TraceRecord {
    TraceRecord {
        request_id: item.request_id.clone(),
        stage: shared.stage.clone(),
        target_rate: shared.target_rate,
        scheduled_ns,
        prompt_tokens: i32::try_from(item.prompt_tokens).ok(),
        max_tokens: item.max_tokens.and_then(|m| i32::try_from(m).ok()),
        hash_ids: item.hash_ids.clone(),
        parent_id: item.parent_id.clone(),
        session_id: item.session_id.clone(),
        turn: item.turn.and_then(|t| i32::try_from(t).ok()),
        think_ns: item.think_ns,
        ..Default::default()
    }
}

/// Counts a finished row and hands it to the sink.
async fn finish(shared: &Shared, rec: TraceRecord) {
    let stat = ReqStat::from_record(&rec);
    let c = &shared.d.counters;
    if let Some(lag) = stat.lag_ns {
        c.last_lag_ns.store(lag, Ordering::Relaxed);
    }
    if !stat.ok {
        c.errors.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(end) = rec.end_ns {
        shared.last_end_ns.fetch_max(end, Ordering::SeqCst);
    }
    if let Ok(mut s) = shared.stats.lock() {
        s.add(&stat);
    }
    shared.rows.fetch_add(1, Ordering::SeqCst);
    shared.d.sink.put(rec).await;
    c.done.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::RandomSpec;

    /// Answers after a fixed service time with `output` one-token chunks.
    struct FakeSender {
        service: Duration,
    }

    impl RequestSender for FakeSender {
        fn send<'a>(
            &'a self,
            item: &'a WorkItem,
            clock: &'a RunClock,
            rec: &'a mut TraceRecord,
            cancel: SendFuture<'a>,
        ) -> SendFuture<'a> {
            Box::pin(async move {
                let now = || clock.offset_ns(Instant::now().into_std());
                rec.sent_ns = Some(now());
                tokio::select! {
                    () = tokio::time::sleep(self.service) => {}
                    () = cancel => {
                        rec.end_ns = Some(now());
                        rec.error_kind = Some(ErrorKind::Cancelled);
                        return;
                    }
                }
                let t = now();
                let n = item.max_tokens.unwrap_or(1);
                rec.chunk_ns = vec![t; n as usize];
                rec.chunk_tokens = vec![1; n as usize];
                rec.output_tokens = Some(n as i32);
                rec.end_ns = Some(t);
                rec.status = Some(200);
            })
        }
    }

    fn dispatcher(
        service_ms: u64,
        cap: Option<usize>,
    ) -> (Dispatcher, Arc<Mutex<Vec<TraceRecord>>>) {
        let mem = Arc::new(Mutex::new(Vec::new()));
        let d = Dispatcher {
            sender: Arc::new(FakeSender {
                service: Duration::from_millis(service_ms),
            }),
            sink: Sink::Memory(mem.clone()),
            max_concurrency: cap,
            timer: Timer::Tokio,
            counters: Arc::default(),
            stop: CancellationToken::new(),
            cancel: CancellationToken::new(),
            drain_timeout: Duration::from_secs(1),
            sessions: SessionOptions::default(),
            store_output: false,
            shard: None,
        };
        (d, mem)
    }

    fn workload() -> Arc<Workload> {
        let spec = RandomSpec {
            input_len: 4,
            output_len: 3,
            range_ratio: 1.0,
        };
        Arc::new(Workload::random(spec, 1).unwrap())
    }

    fn plan(offsets_ms: &[i64]) -> StagePlan {
        StagePlan {
            label: "rate=5".into(),
            target_rate: Some(5.0),
            offsets_ns: offsets_ms.iter().map(|m| m * 1_000_000).collect(),
            first_item: 0,
            time_factor: 1.0,
            max_concurrency: None,
        }
    }

    fn sorted(mem: &Mutex<Vec<TraceRecord>>) -> Vec<TraceRecord> {
        let mut v = mem.lock().unwrap().clone();
        v.sort_by_key(|r| r.scheduled_ns);
        v
    }

    #[tokio::test(start_paused = true)]
    async fn sends_at_exact_offsets() {
        let (d, mem) = dispatcher(100, None);
        let clock = RunClock::from_parts(Instant::now().into_std(), 0);
        let out = d
            .run_stage(&clock, &plan(&[0, 200, 200, 1000]), workload())
            .await;
        assert_eq!(out.released, 4);
        let recs = sorted(&mem);
        let sched: Vec<i64> = recs.iter().map(|r| r.scheduled_ns / 1_000_000).collect();
        assert_eq!(sched, [0, 200, 200, 1000]);
        for r in &recs {
            assert_eq!(r.sent_ns, Some(r.scheduled_ns), "paused clock: no lag");
            assert_eq!(r.stage, "rate=5");
            assert_eq!(r.target_rate, Some(5.0));
            assert_eq!(r.max_tokens, Some(3));
        }
        assert_eq!(out.end_ns / 1_000_000, 1100);
        assert_eq!(d.counters.done.load(Ordering::Relaxed), 4);
        assert_eq!(d.counters.in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_cap_queues_and_records_the_wait() {
        let (d, mem) = dispatcher(100, Some(1));
        let clock = RunClock::from_parts(Instant::now().into_std(), 0);
        let out = d.run_stage(&clock, &plan(&[0, 10, 20]), workload()).await;
        assert_eq!(out.released, 3);
        let recs = sorted(&mem);
        let sent: Vec<i64> = recs
            .iter()
            .map(|r| r.sent_ns.unwrap() / 1_000_000)
            .collect();
        // One at a time, in schedule order: each waits for the previous to finish.
        assert_eq!(sent, [0, 100, 200]);
        let lags: Vec<i64> = recs
            .iter()
            .map(|r| (r.sent_ns.unwrap() - r.scheduled_ns) / 1_000_000)
            .collect();
        let mut lags = lags;
        lags.sort();
        assert_eq!(lags, [0, 90, 180]);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_releasing_and_drain_timeout_cancels_as_rows() {
        let (d, mem) = dispatcher(10_000, None);
        let stop = d.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            stop.cancel();
        });
        let clock = RunClock::from_parts(Instant::now().into_std(), 0);
        let out = d
            .run_stage(&clock, &plan(&[0, 100, 200, 300, 400]), workload())
            .await;
        assert_eq!(out.released, 3);
        let recs = sorted(&mem);
        assert_eq!(recs.len(), 3);
        assert!(
            recs.iter()
                .all(|r| r.error_kind.as_deref() == Some("cancelled"))
        );
        // Stopped at 250 ms, drained for 1 s.
        assert_eq!(recs[0].end_ns.unwrap() / 1_000_000, 1250);
    }

    #[tokio::test(start_paused = true)]
    async fn stages_follow_each_other_and_items_advance() {
        let (d, mem) = dispatcher(50, None);
        let clock = RunClock::from_parts(Instant::now().into_std(), 0);
        let w = workload();
        let a = d.run_stage(&clock, &plan(&[0, 10]), w.clone()).await;
        let mut p = plan(&[0, 10]);
        p.first_item = 2;
        p.label = "rate=9".into();
        let b = d.run_stage(&clock, &p, w).await;
        assert!(b.start_ns >= a.end_ns);
        let ids: Vec<String> = sorted(&mem).into_iter().map(|r| r.request_id).collect();
        assert_eq!(ids, ["req-0", "req-1", "req-2", "req-3"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_shards_of_a_schedule_are_the_single_host_schedule() {
        async fn run(shard: Option<crate::plan::Shard>) -> Vec<(String, i64)> {
            let (mut d, mem) = dispatcher(5, None);
            d.shard = shard;
            let clock = RunClock::from_parts(Instant::now().into_std(), 0);
            d.run_stage(&clock, &plan(&[0, 7, 7, 30, 31, 90, 200]), workload())
                .await;
            sorted(&mem)
                .into_iter()
                .map(|r| (r.request_id, r.scheduled_ns))
                .collect()
        }
        let mut whole = run(None).await;
        let mut union = Vec::new();
        for k in 0..3 {
            let part = run(Some(crate::plan::Shard { index: k, count: 3 })).await;
            assert!(!part.is_empty());
            union.extend(part);
        }
        whole.sort();
        union.sort();
        assert_eq!(
            union, whole,
            "same ids, same scheduled times, nothing twice"
        );
    }

    #[test]
    fn precise_sleep_reaches_the_deadline_and_sees_stop() {
        let stop = CancellationToken::new();
        let d = std::time::Instant::now() + Duration::from_millis(60);
        assert!(precise_sleep_until(d, &stop));
        assert!(std::time::Instant::now() >= d);
        stop.cancel();
        assert!(!precise_sleep_until(d + Duration::from_secs(10), &stop));
    }
}
