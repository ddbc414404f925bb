//! Rows from many sequences in one step (batched serving): rope at per-row positions, and
//! a paged KV cache (fixed-size blocks, a block table per sequence) written and attended.

use super::attention::RopeMode;

/// Where each row of a batched step belongs and how the paged caches are laid out.
#[derive(Clone, Debug)]
pub struct PagedShape<'a> {
    /// Position of each row in its sequence.
    pub pos: &'a [u32],
    /// Sequence (block-table row) of each row.
    pub seq: &'a [u32],
    /// `(n_seqs, max_blocks)` physical block ids.
    pub table: &'a [u32],
    pub max_blocks: usize,
    pub block_size: usize,
    pub n_kv: usize,
    pub head_dim: usize,
}

impl PagedShape<'_> {
    /// The cache slot of position `j` of sequence `s`.
    pub fn slot(&self, s: usize, j: usize) -> usize {
        self.table[s * self.max_blocks + j / self.block_size] as usize * self.block_size
            + j % self.block_size
    }
}

/// [`super::rope`] over rows at their own positions: row r of `x`
/// (`(n_rows, n_heads, head_dim)`) rotated by the (cos, sin) table `cs`
/// (`(positions, half)` pairs) at `pos[r]`.
pub fn rope_rows(
    x: &mut [f32],
    pos: &[u32],
    n_heads: usize,
    head_dim: usize,
    cs: &[f32],
    half: usize,
    mode: RopeMode,
) {
    for (t, &p) in pos.iter().enumerate() {
        for h in 0..n_heads {
            let v = &mut x[(t * n_heads + h) * head_dim..][..head_dim];
            for i in 0..half {
                let (c, s) = (
                    cs[(p as usize * half + i) * 2] as f64,
                    cs[(p as usize * half + i) * 2 + 1] as f64,
                );
                let (a, b) = match mode {
                    RopeMode::RotateHalf => (i, i + half),
                    RopeMode::Interleaved => (2 * i, 2 * i + 1),
                };
                let (xa, xb) = (v[a] as f64, v[b] as f64);
                v[a] = (xa * c - xb * s) as f32;
                v[b] = (xb * c + xa * s) as f32;
            }
        }
    }
}

/// Writes rows of `k`, `v` (`(n_rows, n_kv, head_dim)`) into the paged caches
/// (`(n_slots, n_kv, head_dim)`) at their sequences' slots.
pub fn paged_kv_write(
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    k: &[f32],
    v: &[f32],
    s: &PagedShape,
) {
    let row = s.n_kv * s.head_dim;
    for (t, (&p, &q)) in s.pos.iter().zip(s.seq).enumerate() {
        let dst = s.slot(q as usize, p as usize) * row;
        k_cache[dst..dst + row].copy_from_slice(&k[t * row..][..row]);
        v_cache[dst..dst + row].copy_from_slice(&v[t * row..][..row]);
    }
}

/// Causal grouped-query attention of each row of `q` (`(n_rows, n_heads, head_dim)`) over
/// its own sequence's positions `0..=pos` (or the last `window`) in the paged caches.
pub fn paged_attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    n_heads: usize,
    scale: f32,
    window: usize,
    s: &PagedShape,
) -> Vec<f32> {
    let d = s.head_dim;
    let group = n_heads / s.n_kv;
    let mut out = vec![0f32; s.pos.len() * n_heads * d];
    for (t, (&p, &sq)) in s.pos.iter().zip(s.seq).enumerate() {
        let p = p as usize;
        let lo = if window > 0 {
            (p + 1).saturating_sub(window)
        } else {
            0
        };
        for h in 0..n_heads {
            let qv = &q[(t * n_heads + h) * d..][..d];
            let kvh = h / group;
            let at = |j: usize| (s.slot(sq as usize, j) * s.n_kv + kvh) * d;
            let scores: Vec<f64> = (lo..=p)
                .map(|j| {
                    let kv = &k_cache[at(j)..][..d];
                    qv.iter()
                        .zip(kv)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|&x| (x - max).exp()).collect();
            let sum: f64 = w.iter().sum();
            let o = &mut out[(t * n_heads + h) * d..][..d];
            for (i, oi) in o.iter_mut().enumerate() {
                let mut acc = 0f64;
                for (jj, j) in (lo..=p).enumerate() {
                    acc += w[jj] * v_cache[at(j) + i] as f64;
                }
                *oi = (acc / sum) as f32;
            }
        }
    }
    out
}
