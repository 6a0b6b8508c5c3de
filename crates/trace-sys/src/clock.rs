//! [`RunClock`]: the one clock of a run. Every time in a trace is a monotonic offset in ns from
//! the run's start; the start itself is one wall-clock reading (`trace.run_start_unix_ns`), so
//! two processes on a host (a client and the simulator's truth log) land on one time line.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A run's start: a monotonic instant and the UNIX time read next to it. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunClock {
    start: Instant,
    start_unix_ns: i64,
}

impl RunClock {
    /// A clock starting now. The wall clock is read between two monotonic reads and the
    /// tightest of a few tries is kept, its instant the midpoint of the two: two unpaired reads
    /// can be split by a preemption, and on a loaded machine that split (up to milliseconds)
    /// becomes a constant error between a client's and a server's clocks, larger than the
    /// transit being measured.
    pub fn start() -> Self {
        let mut best: Option<(Duration, Instant, i64)> = None;
        for _ in 0..20 {
            let a = Instant::now();
            let wall = unix_now_ns();
            let b = Instant::now();
            let gap = b - a;
            if best.is_none_or(|(g, _, _)| gap < g) {
                best = Some((gap, a + gap / 2, wall));
            }
            if gap < Duration::from_micros(2) {
                break;
            }
        }
        let (start, start_unix_ns) = match best {
            Some((_, at, wall)) => (at, wall),
            None => (Instant::now(), unix_now_ns()),
        };
        Self {
            start,
            start_unix_ns,
        }
    }

    /// A clock from a known start (tests under tokio's paused time pass its `Instant`).
    pub fn from_parts(start: Instant, start_unix_ns: i64) -> Self {
        Self {
            start,
            start_unix_ns,
        }
    }

    /// The monotonic start.
    pub fn start_instant(&self) -> Instant {
        self.start
    }

    /// The wall-clock start, UNIX ns (the `trace.run_start_unix_ns` metadata value).
    pub fn start_unix_ns(&self) -> i64 {
        self.start_unix_ns
    }

    /// ns from the start to `t`; 0 for an earlier `t`, `i64::MAX` past ~292 years.
    pub fn offset_ns(&self, t: Instant) -> i64 {
        i64::try_from(t.saturating_duration_since(self.start).as_nanos()).unwrap_or(i64::MAX)
    }

    /// ns from the start to now.
    pub fn now_ns(&self) -> i64 {
        self.offset_ns(Instant::now())
    }

    /// The instant `offset_ns` after the start.
    pub fn instant_at(&self, offset_ns: i64) -> Instant {
        self.start + Duration::from_nanos(offset_ns.max(0) as u64)
    }

    /// UNIX ns of an offset.
    pub fn unix_ns_at(&self, offset_ns: i64) -> i64 {
        self.start_unix_ns.saturating_add(offset_ns)
    }

    /// UNIX ns now, on this clock (monotonic since the start, not the wall clock's steps).
    pub fn now_unix_ns(&self) -> i64 {
        self.unix_ns_at(self.now_ns())
    }
}

/// The wall clock, UNIX ns (0 before 1970).
fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_project_onto_the_unix_clock() {
        let c = RunClock::start();
        std::thread::sleep(Duration::from_millis(20));
        let projected = c.now_unix_ns();
        let now = unix_now_ns();
        // The projection tracks the wall clock (loosely: only a clock step could break it).
        assert!(
            (projected - now).abs() < 1_000_000_000,
            "{}",
            projected - now
        );
        assert!(now - c.start_unix_ns() >= 20_000_000);
        assert!(c.now_ns() >= 20_000_000);
    }

    #[test]
    fn earlier_instants_are_offset_zero_and_offsets_round_trip() {
        let start = Instant::now() + Duration::from_secs(1);
        let c = RunClock::from_parts(start, 1_000);
        assert_eq!(c.offset_ns(Instant::now()), 0);
        assert_eq!(c.offset_ns(c.instant_at(1_234_567)), 1_234_567);
        assert_eq!(c.unix_ns_at(5), 1_005);
    }
}
