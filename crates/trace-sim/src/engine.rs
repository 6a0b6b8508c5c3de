//! The engine core: a pure, deterministic continuous-batching state machine (no tokio, no clock).
//!
//! It owns the waiting FIFO, the running batch, the KV-cache block pool and the step-time model.
//! The caller drives it: [`Engine::add`] a request, then [`Engine::step`] returns how long the next
//! step takes and which sequences produce a token at its end. The server runs steps against the
//! wall clock; [`simulate`] runs them in virtual time for calibration and tests.

use std::collections::{HashMap, VecDeque};

/// How a step chooses between prefill and decode work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulePolicy {
    /// vLLM 0.4 (V0 without chunked prefill): when a waiting prompt can be admitted, the step
    /// prefills whole prompts only and the running sequences do not decode in it.
    PrefillFirst,
    /// Chunked prefill (vLLM V1, Sarathi, TurboMind-like): every step decodes all running
    /// sequences and spends the rest of its token budget on prompt chunks.
    Chunked,
}

/// Step-time coefficients: `step = a + b*prefill_tokens + c*decoding_seqs + d*kv_tokens_attended`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepCoeffs {
    /// Fixed cost of one step (weights read, launch and scheduling overhead), ns.
    pub a_ns: f64,
    /// Cost per prompt token prefilled in the step, ns.
    pub b_ns_per_prefill_token: f64,
    /// Cost per sequence decoding one token in the step (sampling, detokenising, bookkeeping), ns.
    pub c_ns_per_decode_seq: f64,
    /// Cost per KV-cache token read by the decoding sequences' attention, ns.
    pub d_ns_per_kv_token: f64,
}

impl StepCoeffs {
    /// The step's duration in ns (at least 1 µs, so virtual time always advances).
    pub fn step_ns(&self, prefill_tokens: u64, decode_seqs: u64, kv_tokens: u64) -> u64 {
        let t = self.a_ns
            + self.b_ns_per_prefill_token * prefill_tokens as f64
            + self.c_ns_per_decode_seq * decode_seqs as f64
            + self.d_ns_per_kv_token * kv_tokens as f64;
        (t.round() as u64).max(1_000)
    }
}

/// The scheduler's limits and time model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineParams {
    /// Most sequences in the running batch (vLLM `--max-num-seqs`).
    pub max_num_seqs: usize,
    /// KV-cache capacity in blocks (vLLM `num_gpu_blocks`).
    pub kv_blocks: u64,
    /// Tokens per KV block (vLLM `--block-size`).
    pub block_size: u32,
    /// Token budget per step (vLLM `--max-num-batched-tokens`).
    pub max_batched_tokens: u32,
    /// Blocks kept free at admission so running sequences can grow (vLLM's 1% watermark).
    pub watermark_blocks: u64,
    /// Prefill-first or chunked steps.
    pub policy: SchedulePolicy,
    /// Step-time coefficients.
    pub coeffs: StepCoeffs,
}

/// One token-producing event at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emit {
    /// The id given to [`Engine::add`].
    pub id: u64,
    /// True when this was the sequence's last token; it has left the engine.
    pub finished: bool,
}

/// What a step did, for gauges and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Prompt (or recompute) tokens prefilled.
    pub prefill_tokens: u64,
    /// Sequences that decoded one token.
    pub decode_seqs: u64,
    /// KV tokens the decoding sequences attended over.
    pub kv_tokens: u64,
    /// Sequences preempted (recompute) during this step's planning.
    pub preempted: u64,
}

#[derive(Debug, Clone)]
struct Seq {
    prompt_tokens: u32,
    output_tokens: u32,
    generated: u32,
    /// Tokens of `prompt + generated` already in the KV cache.
    computed: u32,
    blocks: u64,
    /// Prompt tokens found in the prefix cache: computed from the start, and again after a
    /// preemption.
    cached: u32,
}

impl Seq {
    /// Tokens that must be in the cache before the next token can be sampled.
    fn context(&self) -> u32 {
        self.prompt_tokens + self.generated
    }
    fn prefilling(&self) -> bool {
        self.computed < self.context()
    }
}

/// The continuous-batching engine state.
#[derive(Debug)]
pub struct Engine {
    params: EngineParams,
    seqs: HashMap<u64, Seq>,
    waiting: VecDeque<u64>,
    running: Vec<u64>,
    free_blocks: u64,
    preemptions_total: u64,
    scratch: Vec<u64>,
}

impl Engine {
    /// An empty engine.
    pub fn new(params: EngineParams) -> Self {
        let free_blocks = params.kv_blocks;
        Self {
            params,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            free_blocks,
            preemptions_total: 0,
            scratch: Vec::new(),
        }
    }

    /// The parameters it runs with.
    pub fn params(&self) -> &EngineParams {
        &self.params
    }

    /// Queues a request at the back of the waiting FIFO. `output_tokens` is clamped to >= 1.
    /// `id` must be unique among live requests.
    ///
    /// A request that could never fit the KV cache (vLLM would reject it against
    /// `max_model_len`) is shortened to fit: half the capacity for the prompt, the rest for output.
    pub fn add(&mut self, id: u64, prompt_tokens: u32, output_tokens: u32) {
        self.add_cached(id, prompt_tokens, output_tokens, 0);
    }

    /// [`Engine::add`] for a request whose first `cached` prompt tokens are in the prefix
    /// cache: their prefill is skipped (vLLM starts such a request at its cached length).
    pub fn add_cached(&mut self, id: u64, prompt_tokens: u32, output_tokens: u32, cached: u32) {
        let bs = u64::from(self.params.block_size.max(1));
        let usable = self
            .params
            .kv_blocks
            .saturating_sub(self.params.watermark_blocks + 1)
            * bs;
        let cap = u32::try_from(usable).unwrap_or(u32::MAX).max(2);
        let prompt_tokens = prompt_tokens.clamp(1, cap / 2);
        let output_tokens = output_tokens.clamp(1, cap - prompt_tokens);
        let cached = cached.min(prompt_tokens.saturating_sub(1));
        let seq = Seq {
            prompt_tokens,
            output_tokens,
            generated: 0,
            computed: cached,
            blocks: 0,
            cached,
        };
        self.seqs.insert(id, seq);
        self.waiting.push_back(id);
    }

    /// Removes a request (client went away), freeing its blocks. Unknown ids are ignored.
    pub fn abort(&mut self, id: u64) {
        if let Some(seq) = self.seqs.remove(&id) {
            self.free_blocks += seq.blocks;
            self.waiting.retain(|&w| w != id);
            self.running.retain(|&r| r != id);
        }
    }

    /// Requests in the waiting queue (including preempted ones).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Requests in the running batch.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Fraction of KV blocks in use, 0..=1.
    pub fn kv_usage(&self) -> f64 {
        if self.params.kv_blocks == 0 {
            return 0.0;
        }
        (self.params.kv_blocks - self.free_blocks) as f64 / self.params.kv_blocks as f64
    }

    /// Preemptions since start.
    pub fn preemptions_total(&self) -> u64 {
        self.preemptions_total
    }

    /// True when no request is waiting or running.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    fn blocks_for(&self, tokens: u32) -> u64 {
        u64::from(tokens.div_ceil(self.params.block_size.max(1)))
    }

    /// Plans and applies one step. Returns its duration in ns (None when idle) and pushes the
    /// sequences that produce a token at its end onto `out` (cleared first).
    pub fn step(&mut self, out: &mut Vec<Emit>) -> Option<(u64, StepStats)> {
        out.clear();
        if self.is_idle() {
            return None;
        }
        let mut stats = StepStats::default();
        if self.params.policy == SchedulePolicy::PrefillFirst {
            self.prefill_first(out, &mut stats);
        } else {
            self.chunked(out, &mut stats);
        }
        let ns =
            self.params
                .coeffs
                .step_ns(stats.prefill_tokens, stats.decode_seqs, stats.kv_tokens);
        Some((ns, stats))
    }

    /// Admits waiting prompts (whole, prefill-first) or, when none fits, decodes the batch.
    fn prefill_first(&mut self, out: &mut Vec<Emit>, stats: &mut StepStats) {
        let mut budget = u64::from(self.params.max_batched_tokens);
        let mut admitted = std::mem::take(&mut self.scratch);
        admitted.clear();
        while let Some(&id) = self.waiting.front() {
            if self.running.len() + admitted.len() >= self.params.max_num_seqs {
                break;
            }
            let Some(seq) = self.seqs.get(&id) else {
                self.waiting.pop_front();
                continue;
            };
            let tokens = u64::from(seq.context() - seq.computed);
            // A prompt longer than the whole budget still runs alone, as vLLM would reject it
            // instead; the simulator is lenient.
            if tokens > budget && !admitted.is_empty() {
                break;
            }
            let need = self.blocks_for(seq.context()) - seq.blocks;
            if need + self.params.watermark_blocks > self.free_blocks {
                break;
            }
            self.waiting.pop_front();
            self.free_blocks -= need;
            budget = budget.saturating_sub(tokens);
            stats.prefill_tokens += tokens;
            if let Some(seq) = self.seqs.get_mut(&id) {
                seq.blocks += need;
                seq.computed = seq.context();
            }
            admitted.push(id);
        }
        if !admitted.is_empty() {
            for &id in &admitted {
                self.running.push(id);
                self.emit_token(id, out);
            }
            self.scratch = admitted;
            return;
        }
        self.scratch = admitted;
        self.decode_all(out, stats);
    }

    /// Every step decodes the batch, then fills the remaining budget with prompt chunks.
    fn chunked(&mut self, out: &mut Vec<Emit>, stats: &mut StepStats) {
        self.reserve_decode_blocks(stats);
        let mut budget = u64::from(self.params.max_batched_tokens);
        let mut finishing = std::mem::take(&mut self.scratch);
        finishing.clear();
        // Decode and in-progress prefill chunks of running sequences, in admission order.
        for &id in &self.running {
            let Some(seq) = self.seqs.get_mut(&id) else {
                continue;
            };
            if seq.prefilling() {
                let left = u64::from(seq.context() - seq.computed);
                let chunk = left.min(budget);
                budget -= chunk;
                seq.computed += chunk as u32;
                stats.prefill_tokens += chunk;
                if !seq.prefilling() {
                    finishing.push(id);
                }
            } else {
                budget = budget.saturating_sub(1);
                stats.decode_seqs += 1;
                stats.kv_tokens += u64::from(seq.context());
                finishing.push(id);
            }
        }
        // Admit waiting prompts into the leftover budget.
        while budget > 0 && self.running.len() < self.params.max_num_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let Some(seq) = self.seqs.get(&id) else {
                self.waiting.pop_front();
                continue;
            };
            let need = self.blocks_for(seq.context()) - seq.blocks;
            if need + self.params.watermark_blocks > self.free_blocks {
                break;
            }
            self.waiting.pop_front();
            self.free_blocks -= need;
            self.running.push(id);
            if let Some(seq) = self.seqs.get_mut(&id) {
                seq.blocks += need;
                let left = u64::from(seq.context() - seq.computed);
                let chunk = left.min(budget);
                budget -= chunk;
                seq.computed += chunk as u32;
                stats.prefill_tokens += chunk;
                if !seq.prefilling() {
                    finishing.push(id);
                }
            }
        }
        for &id in &finishing {
            self.emit_token(id, out);
        }
        self.scratch = finishing;
    }

    /// A decode-only step over the whole running batch.
    fn decode_all(&mut self, out: &mut Vec<Emit>, stats: &mut StepStats) {
        self.reserve_decode_blocks(stats);
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend_from_slice(&self.running);
        for &id in &ids {
            if let Some(seq) = self.seqs.get(&id) {
                stats.decode_seqs += 1;
                stats.kv_tokens += u64::from(seq.context());
            }
            self.emit_token(id, out);
        }
        self.scratch = ids;
    }

    /// Makes sure every decoding sequence has a block for its next token, preempting (recompute)
    /// the most recently admitted sequences while the pool is short, as vLLM does.
    fn reserve_decode_blocks(&mut self, stats: &mut StepStats) {
        let mut i = 0;
        while i < self.running.len() {
            let id = self.running[i];
            let Some(seq) = self.seqs.get(&id) else {
                self.running.remove(i);
                continue;
            };
            if seq.prefilling() {
                i += 1;
                continue;
            }
            // The token sampled this step is appended to the cache: context + 1 tokens.
            let need = self
                .blocks_for(seq.context() + 1)
                .saturating_sub(seq.blocks);
            if need <= self.free_blocks {
                self.free_blocks -= need;
                if let Some(seq) = self.seqs.get_mut(&id) {
                    seq.blocks += need;
                }
                i += 1;
                continue;
            }
            // Preempt the newest running sequence (possibly this one) and retry.
            let Some(victim) = self.running.pop() else {
                break;
            };
            self.preempt(victim);
            stats.preempted += 1;
        }
    }

    fn preempt(&mut self, id: u64) {
        if let Some(seq) = self.seqs.get_mut(&id) {
            self.free_blocks += seq.blocks;
            seq.blocks = 0;
            seq.computed = seq.cached;
            self.preemptions_total += 1;
            self.waiting.push_front(id);
        }
    }

    /// Records one sampled token for `id`; a sequence that reaches its length leaves the engine.
    fn emit_token(&mut self, id: u64, out: &mut Vec<Emit>) {
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        seq.generated += 1;
        // The sampled token's KV entry is written next step; keep `computed` at the context
        // before it so that the decode step attends over it.
        seq.computed = seq.context();
        let finished = seq.generated >= seq.output_tokens;
        out.push(Emit { id, finished });
        if finished {
            let blocks = seq.blocks;
            self.seqs.remove(&id);
            self.free_blocks += blocks;
            self.running.retain(|&r| r != id);
        }
    }
}

/// One request of a virtual-time run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Arrival time, ns since the run start.
    pub at_ns: u64,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Output length in tokens.
    pub output_tokens: u32,
}

/// What a virtual-time run measured for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTiming {
    /// Arrival time, ns since the run start.
    pub arrival_ns: u64,
    /// The time each output token was produced, ns since the run start.
    pub token_ns: Vec<u64>,
}

impl RequestTiming {
    /// Time to first token, ns.
    pub fn ttft_ns(&self) -> Option<u64> {
        self.token_ns.first().map(|t| t - self.arrival_ns)
    }

    /// Time per output token after the first, ns (None for one-token outputs).
    pub fn tpot_ns(&self) -> Option<f64> {
        let (first, last) = (self.token_ns.first()?, self.token_ns.last()?);
        let n = self.token_ns.len();
        (n > 1).then(|| (last - first) as f64 / (n - 1) as f64)
    }
}

/// A whole virtual-time run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimRun {
    /// Per request, in arrival order.
    pub requests: Vec<RequestTiming>,
    /// `(time_ns, waiting, running)` after every step.
    pub queue: Vec<(u64, usize, usize)>,
    /// Preemptions during the run.
    pub preemptions: u64,
}

/// Runs `arrivals` (sorted by time) through a fresh engine in virtual time (discrete events:
/// arrivals during a step join at its end, as in a real scheduler loop).
pub fn simulate(params: &EngineParams, arrivals: &[Arrival]) -> SimRun {
    let mut engine = Engine::new(params.clone());
    let mut requests: Vec<RequestTiming> = arrivals
        .iter()
        .map(|a| RequestTiming {
            arrival_ns: a.at_ns,
            token_ns: Vec::with_capacity(a.output_tokens as usize),
        })
        .collect();
    let mut queue = Vec::new();
    let mut out = Vec::new();
    let mut t = 0u64;
    let mut next = 0usize;
    loop {
        while next < arrivals.len() && arrivals[next].at_ns <= t {
            let a = arrivals[next];
            engine.add(next as u64, a.prompt_tokens, a.output_tokens);
            next += 1;
        }
        if engine.is_idle() {
            match arrivals.get(next) {
                Some(a) => {
                    t = t.max(a.at_ns);
                    continue;
                }
                None => break,
            }
        }
        let Some((ns, _)) = engine.step(&mut out) else {
            continue;
        };
        t += ns;
        for e in &out {
            requests[e.id as usize].token_ns.push(t);
        }
        queue.push((t, engine.num_waiting(), engine.num_running()));
    }
    SimRun {
        requests,
        queue,
        preemptions: engine.preemptions_total(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(policy: SchedulePolicy) -> EngineParams {
        EngineParams {
            max_num_seqs: 2,
            kv_blocks: 100,
            block_size: 16,
            max_batched_tokens: 64,
            watermark_blocks: 0,
            policy,
            coeffs: StepCoeffs {
                a_ns: 1e6,
                b_ns_per_prefill_token: 0.0,
                c_ns_per_decode_seq: 0.0,
                d_ns_per_kv_token: 0.0,
            },
        }
    }

    #[test]
    fn burst_beyond_max_running_waits() {
        for policy in [SchedulePolicy::PrefillFirst, SchedulePolicy::Chunked] {
            let mut e = Engine::new(params(policy));
            for id in 0..5 {
                e.add(id, 10, 3);
            }
            let mut out = Vec::new();
            e.step(&mut out);
            assert_eq!(e.num_running(), 2, "{policy:?}");
            assert_eq!(e.num_waiting(), 3);
            let mut steps = 0;
            let mut finished = out.iter().filter(|x| x.finished).count();
            while e.step(&mut out).is_some() {
                finished += out.iter().filter(|x| x.finished).count();
                assert!(e.num_running() <= 2);
                steps += 1;
                assert!(steps < 100);
            }
            assert_eq!(finished, 5);
            assert!(e.is_idle());
            assert_eq!(e.kv_usage(), 0.0);
        }
    }

    #[test]
    fn chunked_prefill_spreads_long_prompt() {
        let mut e = Engine::new(params(SchedulePolicy::Chunked));
        e.add(1, 150, 2);
        let mut out = Vec::new();
        let (_, s) = e.step(&mut out).unwrap();
        assert_eq!(s.prefill_tokens, 64);
        assert!(out.is_empty());
        e.step(&mut out);
        assert!(out.is_empty());
        let (_, s) = e.step(&mut out).unwrap();
        assert_eq!(s.prefill_tokens, 22);
        assert_eq!(
            out,
            vec![Emit {
                id: 1,
                finished: false
            }]
        );
        let (_, s) = e.step(&mut out).unwrap();
        assert_eq!(s.decode_seqs, 1);
        assert_eq!(
            out,
            vec![Emit {
                id: 1,
                finished: true
            }]
        );
    }

    #[test]
    fn kv_exhaustion_preempts_and_recomputes() {
        let mut p = params(SchedulePolicy::PrefillFirst);
        p.kv_blocks = 5; // 80 tokens, 64 usable per sequence; two need 2 x 56
        p.max_batched_tokens = 1000;
        let mut e = Engine::new(p);
        e.add(1, 16, 40);
        e.add(2, 16, 40);
        let mut out = Vec::new();
        let mut tokens = [0u32; 3];
        let mut steps = 0;
        while e.step(&mut out).is_some() {
            for x in &out {
                tokens[x.id as usize] += 1;
            }
            steps += 1;
            assert!(steps < 1000);
        }
        assert!(e.preemptions_total() > 0);
        assert_eq!(tokens[1], 40);
        assert_eq!(tokens[2], 40);
    }

    #[test]
    fn simulate_is_deterministic_and_orders_tokens() {
        let p = params(SchedulePolicy::Chunked);
        let arr: Vec<Arrival> = (0..20)
            .map(|i| Arrival {
                at_ns: i * 300_000,
                prompt_tokens: 20,
                output_tokens: 5,
            })
            .collect();
        let a = simulate(&p, &arr);
        let b = simulate(&p, &arr);
        assert_eq!(a, b);
        for r in &a.requests {
            assert_eq!(r.token_ns.len(), 5);
            assert!(r.token_ns.windows(2).all(|w| w[0] < w[1]));
            assert!(r.ttft_ns().unwrap() > 0);
        }
    }
}
