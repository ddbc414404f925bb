//! The paged KV cache's block allocator: a free list of fixed-size blocks. A sequence
//! holds a list of block ids (its row of the block table); freeing returns them at once.

/// Free list of KV cache blocks.
#[derive(Debug)]
pub struct BlockAllocator {
    free: Vec<u32>,
    total: usize,
}

impl BlockAllocator {
    pub fn new(total: usize) -> Self {
        // Lowest ids handed out first.
        BlockAllocator {
            free: (0..total as u32).rev().collect(),
            total,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    pub fn used(&self) -> usize {
        self.total - self.free.len()
    }

    /// `n` blocks, or `None` (nothing taken) when fewer are free.
    pub fn alloc(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free.len() {
            return None;
        }
        let at = self.free.len() - n;
        Some(self.free.split_off(at).into_iter().rev().collect())
    }

    pub fn release(&mut self, blocks: &mut Vec<u32>) {
        self.free.append(blocks);
        debug_assert!(self.free.len() <= self.total);
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
}
