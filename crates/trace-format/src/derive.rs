//! The per-request metric definitions (README "Metric definitions"), computed from a row's raw
//! columns. The one home of what first token, TTFT, TPOT, E2E, send lag and the output token
//! count mean: the analyzer, the replay's live summary and selfcheck all call [`metrics`].
//!
//! - The first token is the first event carrying at least one output token; role-only and
//!   usage-only events (0 tokens) never stop the TTFT clock. The first answer token (TTFA) is
//!   the first event with more tokens than reasoning tokens (`chunk_reasoning`); without a
//!   reasoning channel it is the first token.
//! - Output tokens are `output_tokens` when the row has it, else the sum of `chunk_tokens`.
//! - A row is *completed* when it has no `error_kind` and both `sent_ns` and `end_ns`; latency
//!   metrics are defined only for completed rows. Send lag is defined for every sent row.

use crate::TraceRecord;

/// The raw columns the metrics are computed from, borrowed from a row or from column arrays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowRef<'a> {
    /// `scheduled_ns`.
    pub scheduled_ns: i64,
    /// `sent_ns`.
    pub sent_ns: Option<i64>,
    /// `end_ns`.
    pub end_ns: Option<i64>,
    /// `chunk_ns`.
    pub chunk_ns: &'a [i64],
    /// `chunk_tokens`.
    pub chunk_tokens: &'a [i32],
    /// `output_tokens`.
    pub output_tokens: Option<i32>,
    /// `error_kind` is not null.
    pub failed: bool,
    /// `chunk_reasoning`: empty when the row has no reasoning channel.
    pub chunk_reasoning: &'a [i32],
}

/// Offsets past this (a year, in ns) are impossible for one run: a corrupt or forged time.
pub const MAX_OFFSET_NS: i64 = 366 * 24 * 3600 * 1_000_000_000;

impl RowRef<'_> {
    /// What makes this row impossible, as `(column, problem)`, or `None` for a row metrics can
    /// be computed from. Such rows (end before send, unsorted or mismatched chunk lists, times
    /// past a year) come from corrupt or hand-edited files; computing from them yields negative
    /// latencies that a diff would happily call "better".
    pub fn problem(&self) -> Option<(&'static str, String)> {
        use crate::schema::col;
        let far = |t: i64| !(0..=MAX_OFFSET_NS).contains(&t);
        if far(self.scheduled_ns) {
            return Some((
                col::SCHEDULED_NS,
                format!("is {}, outside 0..1 year", self.scheduled_ns),
            ));
        }
        for (c, v) in [(col::SENT_NS, self.sent_ns), (col::END_NS, self.end_ns)] {
            if let Some(t) = v.filter(|&t| far(t)) {
                return Some((c, format!("is {t}, outside 0..1 year")));
            }
        }
        if self.chunk_ns.len() != self.chunk_tokens.len() {
            return Some((
                col::CHUNK_TOKENS,
                format!(
                    "has {} entries for {} chunk_ns",
                    self.chunk_tokens.len(),
                    self.chunk_ns.len()
                ),
            ));
        }
        if let (Some(s), Some(e)) = (self.sent_ns, self.end_ns)
            && e < s
        {
            return Some((col::END_NS, format!("{e} is before sent_ns {s}")));
        }
        if let Some(i) = self.chunk_ns.windows(2).position(|w| w[1] < w[0]) {
            return Some((col::CHUNK_NS, format!("is not sorted (entry {})", i + 1)));
        }
        if let Some(&t) = self.chunk_ns.iter().find(|&&t| far(t)) {
            return Some((col::CHUNK_NS, format!("holds {t}, outside 0..1 year")));
        }
        if let (Some(&first), Some(s)) = (self.chunk_ns.first(), self.sent_ns)
            && first < s
        {
            return Some((
                col::CHUNK_NS,
                format!("starts at {first}, before sent_ns {s}"),
            ));
        }
        if let (Some(&last), Some(e)) = (self.chunk_ns.last(), self.end_ns)
            && last > e
        {
            return Some((col::CHUNK_NS, format!("ends at {last}, after end_ns {e}")));
        }
        if let Some(&k) = self.chunk_tokens.iter().find(|&&k| k < 0) {
            return Some((col::CHUNK_TOKENS, format!("holds {k}, a negative count")));
        }
        if !self.chunk_reasoning.is_empty() {
            if self.chunk_reasoning.len() != self.chunk_tokens.len() {
                return Some((
                    col::CHUNK_REASONING,
                    format!(
                        "has {} entries for {} chunk_tokens",
                        self.chunk_reasoning.len(),
                        self.chunk_tokens.len()
                    ),
                ));
            }
            if let Some(i) = self
                .chunk_reasoning
                .iter()
                .zip(self.chunk_tokens)
                .position(|(&r, &t)| r < 0 || r > t)
            {
                return Some((
                    col::CHUNK_REASONING,
                    format!("entry {i} is not between 0 and its chunk_tokens"),
                ));
            }
        }
        None
    }
}

/// One request's metrics, in ns. `None` where undefined.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Metrics {
    /// No error, and both sent and ended.
    pub completed: bool,
    /// `sent_ns - scheduled_ns`, for any sent row.
    pub send_lag_ns: Option<i64>,
    /// First token-bearing event minus `sent_ns`.
    pub ttft_ns: Option<i64>,
    /// First token-bearing event minus `scheduled_ns` (includes client-side queueing).
    pub ttft_sched_ns: Option<i64>,
    /// First answer-bearing event minus `sent_ns` (time to first answer token; equals TTFT
    /// without reasoning).
    pub ttfa_ns: Option<i64>,
    /// `(e2e - ttft) / (output_tokens - 1)`, for more than one output token.
    pub tpot_ns: Option<f64>,
    /// `end_ns - sent_ns`.
    pub e2e_ns: Option<i64>,
    /// `end_ns - scheduled_ns`.
    pub e2e_sched_ns: Option<i64>,
    /// Output tokens (see [`output_tokens`]), for any row.
    pub output_tokens: i64,
}

/// Arrival time of the first event carrying at least one output token.
pub fn first_token_ns(chunk_ns: &[i64], chunk_tokens: &[i32]) -> Option<i64> {
    token_events(chunk_ns, chunk_tokens).next().map(|(t, _)| t)
}

/// Arrival time of the first event carrying an answer token: more tokens than reasoning tokens
/// (`chunk_reasoning`, empty when the row has no reasoning channel).
pub fn first_answer_ns(
    chunk_ns: &[i64],
    chunk_tokens: &[i32],
    chunk_reasoning: &[i32],
) -> Option<i64> {
    if chunk_reasoning.is_empty() {
        return first_token_ns(chunk_ns, chunk_tokens);
    }
    chunk_ns
        .iter()
        .zip(chunk_tokens.iter().zip(chunk_reasoning))
        .find(|(_, (t, r))| *t > *r)
        .map(|(t, _)| *t)
}

/// The token-bearing events of a row, in order: (arrival ns, tokens > 0).
pub fn token_events<'a>(
    chunk_ns: &'a [i64],
    chunk_tokens: &'a [i32],
) -> impl Iterator<Item = (i64, i32)> + 'a {
    chunk_ns
        .iter()
        .zip(chunk_tokens)
        .filter(|(_, k)| **k > 0)
        .map(|(t, k)| (*t, *k))
}

/// Output tokens: the `output_tokens` column (negative read as 0), else the sum of the
/// per-event counts (negative ones read as 0).
pub fn output_tokens(output_tokens: Option<i32>, chunk_tokens: &[i32]) -> i64 {
    match output_tokens {
        Some(n) => i64::from(n.max(0)),
        None => chunk_tokens.iter().map(|&k| i64::from(k.max(0))).sum(),
    }
}

/// Every metric of one request.
pub fn metrics(r: RowRef<'_>) -> Metrics {
    let out = output_tokens(r.output_tokens, r.chunk_tokens);
    let mut m = Metrics {
        send_lag_ns: r.sent_ns.map(|s| s - r.scheduled_ns),
        output_tokens: out,
        ..Metrics::default()
    };
    let (Some(sent), Some(end), false) = (r.sent_ns, r.end_ns, r.failed) else {
        return m;
    };
    m.completed = true;
    m.e2e_ns = Some(end - sent);
    m.e2e_sched_ns = Some(end - r.scheduled_ns);
    if let Some(first) = first_token_ns(r.chunk_ns, r.chunk_tokens) {
        let ttft = first - sent;
        m.ttft_ns = Some(ttft);
        m.ttft_sched_ns = Some(first - r.scheduled_ns);
        m.ttfa_ns =
            first_answer_ns(r.chunk_ns, r.chunk_tokens, r.chunk_reasoning).map(|a| a - sent);
        if out > 1 {
            m.tpot_ns = Some((end - sent - ttft) as f64 / (out - 1) as f64);
        }
    }
    m
}

impl TraceRecord {
    /// The row's raw metric columns.
    pub fn row_ref(&self) -> RowRef<'_> {
        RowRef {
            scheduled_ns: self.scheduled_ns,
            sent_ns: self.sent_ns,
            end_ns: self.end_ns,
            chunk_ns: &self.chunk_ns,
            chunk_tokens: &self.chunk_tokens,
            output_tokens: self.output_tokens,
            failed: self.error_kind.is_some(),
            chunk_reasoning: &self.chunk_reasoning,
        }
    }

    /// The row's metrics ([`metrics`]).
    pub fn metrics(&self) -> Metrics {
        metrics(self.row_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(chunk_ns: &'a [i64], chunk_tokens: &'a [i32], out: Option<i32>) -> RowRef<'a> {
        RowRef {
            scheduled_ns: 0,
            sent_ns: Some(1_000_000),
            end_ns: Some(31_000_000),
            chunk_ns,
            chunk_tokens,
            output_tokens: out,
            failed: false,
            chunk_reasoning: &[],
        }
    }

    #[test]
    fn ttft_skips_role_only_events_and_tpot_needs_two_tokens() {
        let t = [2_000_000, 11_000_000, 21_000_000, 31_000_000];
        let m = metrics(row(&t, &[0, 1, 1, 1], Some(3)));
        assert_eq!(m.send_lag_ns, Some(1_000_000));
        assert_eq!(m.ttft_ns, Some(10_000_000));
        assert_eq!(m.ttft_sched_ns, Some(11_000_000));
        assert_eq!(m.e2e_ns, Some(30_000_000));
        assert_eq!(m.tpot_ns, Some(10_000_000.0));
        let one = metrics(row(&[4_000_000], &[1], Some(1)));
        assert_eq!(one.ttft_ns, Some(3_000_000));
        assert_eq!(one.tpot_ns, None);
    }

    #[test]
    fn null_output_tokens_fall_back_to_the_events() {
        let t = [2_000_000, 11_000_000, 21_000_000];
        let m = metrics(row(&t, &[0, 2, 1], None));
        assert_eq!(m.output_tokens, 3);
        assert_eq!(m.tpot_ns, Some((30_000_000.0 - 10_000_000.0) / 2.0));
        assert_eq!(output_tokens(None, &[]), 0);
        assert_eq!(output_tokens(Some(-4), &[1]), 0);
    }

    #[test]
    fn failed_rows_have_a_send_lag_and_no_latency() {
        let mut r = row(&[2_000_000], &[1], Some(1));
        r.failed = true;
        let m = metrics(r);
        assert!(!m.completed);
        assert_eq!(m.send_lag_ns, Some(1_000_000));
        assert_eq!((m.ttft_ns, m.e2e_ns), (None, None));
        r.failed = false;
        r.end_ns = None;
        assert!(!metrics(r).completed);
    }

    #[test]
    fn ttfa_is_the_first_answer_token_after_reasoning() {
        let t = [2_000_000, 11_000_000, 21_000_000, 31_000_000];
        let mut r = row(&t, &[0, 1, 1, 1], Some(3));
        assert_eq!(
            metrics(r).ttfa_ns,
            metrics(r).ttft_ns,
            "no reasoning: TTFA is TTFT"
        );
        r.chunk_reasoning = &[0, 1, 1, 0];
        let m = metrics(r);
        assert_eq!(m.ttft_ns, Some(10_000_000));
        assert_eq!(m.ttfa_ns, Some(30_000_000));
        assert_eq!(r.problem(), None);
        r.chunk_reasoning = &[0, 2, 1, 0];
        assert_eq!(r.problem().unwrap().0, "chunk_reasoning");
        r.chunk_reasoning = &[0, 1];
        assert_eq!(r.problem().unwrap().0, "chunk_reasoning");
        // All reasoning, no answer: no TTFA.
        r.chunk_reasoning = &[0, 1, 1, 1];
        assert_eq!(metrics(r).ttfa_ns, None);
    }
}
