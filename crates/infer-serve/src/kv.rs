//! The paged KV cache's block allocator, with automatic prefix caching.
//!
//! A sequence holds a list of block ids (its row of the block table). A block whose
//! positions all hold a prompt's K and V can be registered under the hash of (its parent
//! block's hash, its tokens): a later prompt that starts with the same tokens takes those
//! blocks instead of computing them again. Blocks are reference-counted; a registered
//! block nobody holds stays cached (evictable, least recently used first) until free blocks
//! run out. The K and V of a position depend only on the tokens up to it (the batched
//! kernels compute each row the same whatever else is in the batch), so a shared block
//! holds exactly what the sequence would have written itself.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The chained hash of one full block: its parent's hash and its tokens.
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// The chained hashes of the whole blocks of `tokens` (a partial last block has none).
pub fn prefix_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    let mut parent = 0;
    tokens
        .chunks_exact(block_size)
        .map(|b| {
            parent = block_hash(parent, b);
            parent
        })
        .collect()
}

/// What a registered block holds, to confirm a hash match.
#[derive(Debug)]
struct Cached {
    hash: u64,
    parent: u64,
    tokens: Vec<u32>,
}

/// KV cache blocks: free, held (reference-counted), or cached and evictable.
#[derive(Debug)]
pub struct BlockAllocator {
    free: Vec<u32>,
    total: usize,
    refs: Vec<u32>,
    cached: Vec<Option<Cached>>,
    by_hash: HashMap<u64, u32>,
    /// Registered blocks nobody holds, by the tick they were released at.
    evictable: BTreeMap<u64, u32>,
    released_at: Vec<u64>,
    tick: u64,
    /// Whether blocks are registered and looked up at all (`--no-prefix-cache`: no).
    caching: bool,
}

impl BlockAllocator {
    pub fn new(total: usize) -> Self {
        Self::with_caching(total, true)
    }

    pub fn with_caching(total: usize, caching: bool) -> Self {
        // Lowest ids handed out first.
        BlockAllocator {
            free: (0..total as u32).rev().collect(),
            total,
            refs: vec![0; total],
            cached: (0..total).map(|_| None).collect(),
            by_hash: HashMap::new(),
            evictable: BTreeMap::new(),
            released_at: vec![0; total],
            tick: 0,
            caching,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Blocks a new sequence can take: free ones and cached ones nobody holds.
    pub fn free(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    pub fn used(&self) -> usize {
        self.total - self.free()
    }

    /// Cached blocks nobody holds (counted in [`BlockAllocator::free`]).
    pub fn cached_idle(&self) -> usize {
        self.evictable.len()
    }

    /// `n` blocks, or `None` (nothing taken) when fewer are free: free blocks first, then
    /// the least recently released cached ones, which are forgotten.
    pub fn alloc(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free() {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let b = match self.free.pop() {
                Some(b) => b,
                None => {
                    let (_, b) = self.evictable.pop_first().expect("counted above");
                    let c = self.cached[b as usize]
                        .take()
                        .expect("evictable are cached");
                    self.by_hash.remove(&c.hash);
                    b
                }
            };
            self.refs[b as usize] = 1;
            out.push(b);
        }
        Some(out)
    }

    /// Drops the caller's hold on `blocks` (emptied): a block nobody holds goes back to
    /// the free list, or, if registered, stays cached until evicted.
    pub fn release(&mut self, blocks: &mut Vec<u32>) {
        for b in blocks.drain(..) {
            let i = b as usize;
            self.refs[i] -= 1;
            if self.refs[i] > 0 {
                continue;
            }
            if self.cached[i].is_some() {
                self.tick += 1;
                self.released_at[i] = self.tick;
                self.evictable.insert(self.tick, b);
            } else {
                self.free.push(b);
            }
        }
        debug_assert!(self.free() <= self.total);
    }

    /// The longest run of cached blocks that starts `tokens` (whole blocks, at most
    /// `max_blocks`), each now held once more by the caller.
    pub fn lookup(&mut self, tokens: &[u32], block_size: usize, max_blocks: usize) -> Vec<u32> {
        let mut out = Vec::new();
        if !self.caching {
            return out;
        }
        let mut parent = 0;
        for chunk in tokens.chunks_exact(block_size).take(max_blocks) {
            let hash = block_hash(parent, chunk);
            let Some(&b) = self.by_hash.get(&hash) else {
                break;
            };
            let c = self.cached[b as usize]
                .as_ref()
                .expect("indexed blocks are cached");
            if c.parent != parent || c.tokens != chunk {
                break;
            }
            if self.refs[b as usize] == 0 {
                self.evictable.remove(&self.released_at[b as usize]);
            }
            self.refs[b as usize] += 1;
            out.push(b);
            parent = hash;
        }
        out
    }

    /// Registers held block `b` as holding `tokens` (one whole block) after the block
    /// hashed `parent`; a block already registered for the same content keeps that role.
    pub fn register(&mut self, b: u32, parent: u64, tokens: &[u32]) {
        if !self.caching || self.cached[b as usize].is_some() {
            return;
        }
        let hash = block_hash(parent, tokens);
        if self.by_hash.contains_key(&hash) {
            return;
        }
        self.by_hash.insert(hash, b);
        self.cached[b as usize] = Some(Cached {
            hash,
            parent,
            tokens: tokens.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_and_release_keep_count_and_never_share() {
        let mut a = BlockAllocator::new(10);
        let mut x = a.alloc(4).unwrap();
        let mut y = a.alloc(6).unwrap();
        assert!(a.alloc(1).is_none());
        assert_eq!(a.used(), 10);
        let mut all: Vec<u32> = x.iter().chain(&y).copied().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        a.release(&mut x);
        assert!(x.is_empty());
        assert_eq!(a.free(), 4);
        assert!(a.alloc(5).is_none());
        assert_eq!(a.free(), 4);
        a.release(&mut y);
        assert_eq!(a.free(), 10);
    }

    #[test]
    fn cached_blocks_are_shared_kept_after_release_and_evicted_oldest_first() {
        let bs = 2;
        let mut a = BlockAllocator::new(4);
        let p: Vec<u32> = vec![1, 2, 3, 4, 5];
        let mut x = a.alloc(3).unwrap();
        let h = prefix_hashes(&p, bs);
        a.register(x[0], 0, &p[0..2]);
        a.register(x[1], h[0], &p[2..4]);
        // Another prompt with the same first 4 tokens shares both blocks.
        let mut y = a.lookup(&[1, 2, 3, 4, 9], bs, 2);
        assert_eq!(y, x[..2]);
        // A different second block shares only the first.
        let mut z = a.lookup(&[1, 2, 7, 7], bs, 2);
        assert_eq!(z, x[..1]);
        a.release(&mut z);
        a.release(&mut y);
        a.release(&mut x);
        assert_eq!(a.free(), 4);
        assert_eq!(a.cached_idle(), 2);
        // Still there after everyone let go.
        let mut w = a.lookup(&p, bs, 2);
        assert_eq!(w.len(), 2);
        a.release(&mut w);
        // Taking all 4 blocks evicts both cached ones; then nothing is found.
        let mut all = a.alloc(4).unwrap();
        assert_eq!(a.cached_idle(), 0);
        assert!(a.lookup(&p, bs, 2).is_empty());
        a.release(&mut all);
        assert_eq!(a.free(), 4);
        // Without caching nothing is registered or found.
        let mut off = BlockAllocator::with_caching(4, false);
        let mut v = off.alloc(1).unwrap();
        off.register(v[0], 0, &p[0..2]);
        assert!(off.lookup(&p, bs, 2).is_empty());
        off.release(&mut v);
        assert_eq!(off.free(), 4);
    }
}
