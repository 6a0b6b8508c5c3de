//! Precise wake-ups at deadlines known only at run time: a session's later turns, due when
//! their parent ends plus a think time. Tokio's timer wheel has 1 ms granularity (a 1.5 ms
//! median send lag on later turns, measured); these alarms keep them to the timing thread's
//! accuracy. One OS thread per stage holds a heap of deadlines, sleeps on a condition variable
//! to just before the earliest, spins the last [`SPIN`](crate::dispatch::SPIN), then fires the
//! waiting task's oneshot. Runtime workers never spin.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::dispatch::SPIN;

/// The usual OS wake-up overshoot after a timed wait.
const OVERSHOOT: Duration = Duration::from_micros(60);

struct Entry {
    at: Instant,
    seq: u64,
    fire: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    closed: bool,
}

/// The alarm thread's handle; dropping it ends the thread (pending alarms never fire).
pub(crate) struct Alarms {
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl Alarms {
    /// Starts the thread; None when the OS refuses one (callers fall back to tokio timers).
    pub(crate) fn start() -> Option<Self> {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("trace-alarms".into())
            .spawn(move || run(&s2))
            .ok()?;
        Some(Self { shared })
    }

    /// A receiver completed at `at` (at once when it has passed).
    pub(crate) fn at(&self, at: Instant) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let (lock, cv) = &*self.shared;
        if let Ok(mut st) = lock.lock() {
            st.seq += 1;
            let seq = st.seq;
            st.heap.push(Reverse(Entry { at, seq, fire: tx }));
        }
        cv.notify_one();
        rx
    }
}

impl Drop for Alarms {
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        if let Ok(mut st) = lock.lock() {
            st.closed = true;
        }
        cv.notify_one();
    }
}

fn run(shared: &(Mutex<State>, Condvar)) {
    let (lock, cv) = shared;
    let Ok(mut st) = lock.lock() else { return };
    loop {
        if st.closed {
            return;
        }
        let Some(at) = st.heap.peek().map(|e| e.0.at) else {
            st = match cv.wait(st) {
                Ok(g) => g,
                Err(_) => return,
            };
            continue;
        };
        let now = Instant::now();
        if now >= at {
            if let Some(Reverse(e)) = st.heap.pop() {
                // The waiting task may be gone (a stop): nothing to wake.
                let _ = e.fire.send(());
            }
            continue;
        }
        let left = at - now;
        if left > SPIN + OVERSHOOT {
            // An earlier alarm set meanwhile wakes this wait.
            st = match cv.wait_timeout(st, left - SPIN - OVERSHOOT) {
                Ok((g, _)) => g,
                Err(_) => return,
            };
        } else {
            drop(st);
            while Instant::now() < at {
                std::hint::spin_loop();
            }
            st = match lock.lock() {
                Ok(g) => g,
                Err(_) => return,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn alarms_fire_in_order_at_or_after_their_deadline() {
        let a = Alarms::start().unwrap();
        let t0 = Instant::now();
        let late = a.at(t0 + Duration::from_millis(40));
        let early = a.at(t0 + Duration::from_millis(20));
        let past = a.at(t0 - Duration::from_millis(1));
        past.await.unwrap();
        early.await.unwrap();
        assert!(Instant::now() >= t0 + Duration::from_millis(20));
        late.await.unwrap();
        assert!(Instant::now() >= t0 + Duration::from_millis(40));
        drop(a);
    }
}
