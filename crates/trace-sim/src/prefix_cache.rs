//! The simulator's prefix cache, modelled on vLLM's automatic prefix caching: a prompt is cut
//! into blocks of `block` tokens, each named by a hash chained over every token up to its end
//! (so a block is shared only when the whole prefix before it is), and an LRU of limited
//! capacity keeps the blocks seen. A request's cached tokens are its leading blocks found in
//! the cache, capped so that at least one prompt token is computed (vLLM recomputes the last
//! one to get logits); its blocks then become the most recently used. Counters are in tokens,
//! as vLLM's `prefix_cache_queries` / `prefix_cache_hits`.

use std::collections::{BTreeMap, HashMap};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Block-hash LRU of limited capacity.
#[derive(Debug)]
pub struct PrefixCache {
    block: usize,
    capacity: usize,
    /// Block hash -> the tick it was last used at.
    used: HashMap<u64, u64>,
    /// Tick -> block hash: the LRU order.
    order: BTreeMap<u64, u64>,
    tick: u64,
    /// Prompt tokens looked up.
    pub queries: u64,
    /// Prompt tokens found cached.
    pub hits: u64,
}

impl PrefixCache {
    /// A cache of blocks of `block_tokens` tokens holding at most `capacity_tokens` tokens.
    pub fn new(block_tokens: u32, capacity_tokens: u64) -> Self {
        let block = block_tokens.max(1) as usize;
        Self {
            block,
            capacity: usize::try_from(capacity_tokens / block as u64).unwrap_or(usize::MAX),
            used: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            queries: 0,
            hits: 0,
        }
    }

    /// The chained hashes of the full blocks of a prompt's tokens (`keys`: one per token).
    fn blocks(&self, keys: &[u64]) -> Vec<u64> {
        let mut h = 0u64;
        keys.chunks_exact(self.block)
            .map(|b| {
                let bytes: Vec<u8> = b.iter().flat_map(|k| k.to_le_bytes()).collect();
                h = xxh3_64_with_seed(&bytes, h);
                h
            })
            .collect()
    }

    /// Looks a prompt up: the tokens served from the cache (leading cached blocks, at most
    /// `keys.len() - 1`), then records its blocks as the most recently used, evicting the
    /// least recently used beyond the capacity.
    pub fn lookup(&mut self, keys: &[u64]) -> u32 {
        let blocks = self.blocks(keys);
        let hit_blocks = blocks
            .iter()
            .take_while(|b| self.used.contains_key(b))
            .count();
        let cached = (hit_blocks * self.block).min(keys.len().saturating_sub(1));
        self.queries += keys.len() as u64;
        self.hits += cached as u64;
        for b in blocks {
            self.tick += 1;
            if let Some(old) = self.used.insert(b, self.tick) {
                self.order.remove(&old);
            }
            self.order.insert(self.tick, b);
        }
        while self.used.len() > self.capacity {
            let Some((_, b)) = self.order.pop_first() else {
                break;
            };
            self.used.remove(&b);
        }
        u32::try_from(cached).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefixes_hit_whole_blocks_and_the_last_token_is_computed() {
        let mut c = PrefixCache::new(4, 1 << 20);
        let a: Vec<u64> = (0..10).collect();
        assert_eq!(c.lookup(&a), 0, "a cold cache");
        assert_eq!(
            c.lookup(&a),
            8,
            "two full blocks of four; the last two tokens are computed"
        );
        let mut b = a.clone();
        b[5] = 99;
        assert_eq!(
            c.lookup(&b),
            4,
            "the second block differs, so nothing after it is shared"
        );
        let exact: Vec<u64> = (0..8).collect();
        assert_eq!(
            c.lookup(&exact),
            7,
            "a fully cached prompt still computes one token"
        );
        assert_eq!((c.queries, c.hits), (10 + 10 + 10 + 8, 8 + 4 + 7));
    }

    #[test]
    fn the_least_recently_used_blocks_are_evicted_at_capacity() {
        let mut c = PrefixCache::new(2, 4);
        let a = [1, 2, 3, 4, 9];
        let b = [5, 6, 7, 8, 9];
        c.lookup(&a);
        c.lookup(&b);
        assert_eq!(c.lookup(&a), 0, "b's two blocks pushed a's out");
        assert_eq!(c.lookup(&a), 4);
    }
}
