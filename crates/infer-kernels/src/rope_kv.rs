//! Rotary embedding and KV-cache writes, contiguous and paged: `rope` (consecutive
//! positions or one per row), `kv_write`, `paged_kv_write`, and the fused `rope_kv` /
//! `paged_rope_kv` (rope of q and k and the cache write in one dispatch).

use infer_tensor::Tensor;

use crate::paged::PagedCache;
use crate::params::params;
use crate::{
    Dispatch, Kernel, KernelError, Kernels, PagedParams, Result, RopeMode, need_f32, need_len,
    need_u32, u32s,
};

params! {
    pub(crate) struct RopeParams {
        n_heads: u32,
        head_dim: u32,
        half: u32,
        mode: u32,
        /// Rows (tokens) of x.
        n_tokens: u32,
        max_pos: u32,
        /// 1: row r at position pos[r] (rows of several sequences); 0: token t at pos[0] + t.
        per_row: u32,
        _pad0: u32,
    }
}

params! {
    pub(crate) struct KvWriteParams {
        n_kv: u32,
        head_dim: u32,
        capacity: u32,
        n_tokens: u32,
    }
}

params! {
    pub(crate) struct PagedKvWriteParams {
        n_kv: u32,
        head_dim: u32,
        block_size: u32,
        n_rows: u32,
        max_blocks: u32,
        n_slots: u32,
        n_seqs: u32,
        _pad0: u32,
    }
}

params! {
    pub(crate) struct RopeKvParams {
        n_heads: u32,
        n_kv: u32,
        head_dim: u32,
        half: u32,
        mode: u32,
        n_tokens: u32,
        max_pos: u32,
        capacity: u32,
    }
}

params! {
    pub(crate) struct PagedRopeKvParams {
        n_heads: u32,
        n_kv: u32,
        head_dim: u32,
        half: u32,
        mode: u32,
        n_rows: u32,
        max_pos: u32,
        block_size: u32,
        max_blocks: u32,
        n_slots: u32,
        n_seqs: u32,
        _pad0: u32,
    }
}

/// A rotary-embedding table and how it pairs dimensions.
#[derive(Clone, Copy, Debug)]
pub struct RopeTable<'a> {
    /// `(positions, 2 * half)` f32: per position, `half` (cos, sin) pairs, computed on the
    /// host (scaling and attention factor folded in).
    pub cs: &'a Tensor,
    pub mode: RopeMode,
}

/// One layer's contiguous KV caches (`(n_kv, capacity, head_dim)` f32 each) and `pos`,
/// whose element 0 is the position of the step's first token.
#[derive(Clone, Copy, Debug)]
pub struct KvCache<'a> {
    pub k_cache: &'a Tensor,
    pub v_cache: &'a Tensor,
    pub pos: &'a Tensor,
    /// Positions each cache holds.
    pub capacity: usize,
}

impl KvCache<'_> {
    fn check(&self, kernel: Kernel, n_kv: usize, head_dim: usize) -> Result<()> {
        need_f32(kernel, self.k_cache, n_kv * self.capacity * head_dim)?;
        need_f32(kernel, self.v_cache, n_kv * self.capacity * head_dim)?;
        need_len(kernel, self.pos, 1)
    }
}

/// The rows a rope launch rotates in place: `rows` rows of `n_heads` heads of `head_dim`.
#[derive(Clone, Copy)]
struct RopeRows {
    rows: usize,
    n_heads: usize,
    head_dim: usize,
    /// Row r at position `pos[r]` (else token t at `pos[0] + t`).
    per_row: bool,
}

/// The half-width of the rope table `cs` (`(positions, 2 * half)` f32) for heads of
/// `head_dim`, checked.
fn rope_half(kernel: Kernel, cs: &Tensor, head_dim: usize) -> Result<usize> {
    need_f32(kernel, cs, 2)?;
    let half = cs.cols() / 2;
    if half == 0 || 2 * half > head_dim || !cs.cols().is_multiple_of(2) {
        return Err(KernelError::Shape {
            kernel,
            reason: format!("table {:?} does not fit head_dim {head_dim}", cs.shape),
        });
    }
    Ok(half)
}

fn rope_mode(mode: RopeMode) -> u32 {
    match mode {
        RopeMode::RotateHalf => 0,
        RopeMode::Interleaved => 1,
    }
}

/// Storage buffers [`Kernels::paged_rope_kv`] binds (more than WebGPU's default limit of 8).
const PAGED_ROPE_KV_BUFFERS: u32 = 9;

impl Kernels {
    /// In place on `x` (`(n_tokens, n_heads, head_dim)`): rotary embedding by `table`;
    /// token t at position `pos[0] + t`.
    pub fn rope(
        &self,
        x: &Tensor,
        table: RopeTable<'_>,
        pos: &Tensor,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
    ) -> Result<Vec<Dispatch>> {
        need_len(Kernel::Rope, pos, 1)?;
        let rows = RopeRows {
            rows: n_tokens,
            n_heads,
            head_dim,
            per_row: false,
        };
        self.rope_launch(x, table, pos, rows)
    }

    /// Writes `k`, `v` (`(n_tokens, n_kv, head_dim)`) into `cache` at position `pos[0]`.
    pub fn kv_write(
        &self,
        k: &Tensor,
        v: &Tensor,
        cache: &KvCache<'_>,
        n_tokens: usize,
        n_kv: usize,
        head_dim: usize,
    ) -> Result<Vec<Dispatch>> {
        let kernel = Kernel::KvWrite;
        need_f32(kernel, k, n_tokens * n_kv * head_dim)?;
        need_f32(kernel, v, n_tokens * n_kv * head_dim)?;
        cache.check(kernel, n_kv, head_dim)?;
        let params = KvWriteParams {
            n_kv: u32s(n_kv),
            head_dim: u32s(head_dim),
            capacity: u32s(cache.capacity),
            n_tokens: u32s(n_tokens),
        };
        let buffers = [cache.pos, k, v, cache.k_cache, cache.v_cache].map(|t| t.buffer());
        let grid = [u32s((n_kv * head_dim).div_ceil(64)), u32s(n_tokens), 1];
        Ok(vec![self.dispatch(kernel, None, &params, &buffers, grid)?])
    }

    /// In place on `x` (`(n_rows, n_heads, head_dim)`): [`Kernels::rope`] with row r at
    /// position `pos[r]` (u32, one per row), for rows of several sequences in one step.
    pub fn rope_rows(
        &self,
        x: &Tensor,
        table: RopeTable<'_>,
        pos: &Tensor,
        n_rows: usize,
        n_heads: usize,
        head_dim: usize,
    ) -> Result<Vec<Dispatch>> {
        need_u32(Kernel::Rope, pos, n_rows)?;
        let rows = RopeRows {
            rows: n_rows,
            n_heads,
            head_dim,
            per_row: true,
        };
        self.rope_launch(x, table, pos, rows)
    }

    /// The rope kernel over `r.rows` rows of `x` (both launchers' checks but `pos`'s).
    fn rope_launch(
        &self,
        x: &Tensor,
        table: RopeTable<'_>,
        pos: &Tensor,
        r: RopeRows,
    ) -> Result<Vec<Dispatch>> {
        let RopeTable { cs, mode } = table;
        need_f32(Kernel::Rope, x, r.rows * r.n_heads * r.head_dim)?;
        let half = rope_half(Kernel::Rope, cs, r.head_dim)?;
        if r.rows > 65535 {
            return Err(KernelError::Shape {
                kernel: Kernel::Rope,
                reason: format!("{} rows (max 65535)", r.rows),
            });
        }
        let params = RopeParams {
            n_heads: u32s(r.n_heads),
            head_dim: u32s(r.head_dim),
            half: u32s(half),
            mode: rope_mode(mode),
            n_tokens: u32s(r.rows),
            max_pos: u32s(cs.rows()),
            per_row: u32::from(r.per_row),
            ..Default::default()
        };
        Ok(vec![self.dispatch(
            Kernel::Rope,
            None,
            &params,
            &[pos.buffer(), cs.buffer(), x.buffer()],
            [
                u32s((r.n_heads * half).div_ceil(64)),
                u32s(r.rows.max(1)),
                1,
            ],
        )?])
    }

    /// Writes rows of `k`, `v` (`(n_rows, n_kv, head_dim)`) into the paged caches of `kv`,
    /// each row at its sequence's position ([`PagedCache`]).
    pub fn paged_kv_write(
        &self,
        k: &Tensor,
        v: &Tensor,
        kv: &PagedCache<'_>,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        self.paged_check(Kernel::PagedKvWrite, kv, a)?;
        need_f32(Kernel::PagedKvWrite, k, a.n_rows * a.n_kv * a.head_dim)?;
        need_f32(Kernel::PagedKvWrite, v, a.n_rows * a.n_kv * a.head_dim)?;
        let params = PagedKvWriteParams {
            n_kv: u32s(a.n_kv),
            head_dim: u32s(a.head_dim),
            block_size: u32s(a.block_size),
            n_rows: u32s(a.n_rows),
            max_blocks: u32s(a.max_blocks),
            n_slots: u32s(a.n_blocks * a.block_size),
            n_seqs: u32s(a.n_seqs),
            ..Default::default()
        };
        Ok(vec![self.dispatch(
            Kernel::PagedKvWrite,
            None,
            &params,
            &[kv.pos, kv.seq, kv.table, k, v, kv.k_cache, kv.v_cache].map(|t| t.buffer()),
            [
                u32s((a.n_kv * a.head_dim).div_ceil(64)),
                u32s(a.n_rows.max(1)),
                1,
            ],
        )?])
    }

    /// [`Kernels::rope`] on `q` (`(n_tokens, n_heads, head_dim)`, in place) and on `k`, and
    /// [`Kernels::kv_write`] of the rotated `k` and of `v` (`(n_tokens, n_kv, head_dim)`)
    /// into `cache`, in one dispatch with the same arithmetic. `k` itself is left
    /// unrotated. Token t at position `pos[0] + t`.
    pub fn rope_kv(
        &self,
        [q, k, v]: [&Tensor; 3],
        table: RopeTable<'_>,
        cache: &KvCache<'_>,
        n_tokens: usize,
        [n_heads, n_kv]: [usize; 2],
        head_dim: usize,
    ) -> Result<Vec<Dispatch>> {
        let kernel = Kernel::RopeKv;
        let RopeTable { cs, mode } = table;
        let half = rope_half(kernel, cs, head_dim)?;
        need_f32(kernel, q, n_tokens * n_heads * head_dim)?;
        need_f32(kernel, k, n_tokens * n_kv * head_dim)?;
        need_f32(kernel, v, n_tokens * n_kv * head_dim)?;
        cache.check(kernel, n_kv, head_dim)?;
        let params = RopeKvParams {
            n_heads: u32s(n_heads),
            n_kv: u32s(n_kv),
            head_dim: u32s(head_dim),
            half: u32s(half),
            mode: rope_mode(mode),
            n_tokens: u32s(n_tokens),
            max_pos: u32s(cs.rows()),
            capacity: u32s(cache.capacity),
        };
        let width = (n_heads * half).max(n_kv * head_dim);
        let buffers = [cache.pos, cs, q, k, v, cache.k_cache, cache.v_cache].map(|t| t.buffer());
        let grid = [u32s(width.div_ceil(64)), u32s(n_tokens), 1];
        Ok(vec![self.dispatch(kernel, None, &params, &buffers, grid)?])
    }

    /// Whether the adapter binds enough storage buffers for [`Kernels::paged_rope_kv`].
    pub fn paged_rope_kv_fits(&self) -> bool {
        self.dev.limits.max_storage_buffers_per_shader_stage >= PAGED_ROPE_KV_BUFFERS
    }

    /// [`Kernels::rope_rows`] on `q` (`(n_rows, n_heads, head_dim)`, in place) and on `k`, and
    /// [`Kernels::paged_kv_write`] of the rotated `k` and of `v` (`(n_rows, n_kv,
    /// head_dim)`), in one dispatch with the same arithmetic; `k` itself is left unrotated.
    /// Needs [`Kernels::paged_rope_kv_fits`].
    pub fn paged_rope_kv(
        &self,
        [q, k, v]: [&Tensor; 3],
        table: RopeTable<'_>,
        kv: &PagedCache<'_>,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        let kernel = Kernel::PagedRopeKv;
        let RopeTable { cs, mode } = table;
        self.paged_check(kernel, kv, a)?;
        let half = rope_half(kernel, cs, a.head_dim)?;
        need_f32(kernel, q, a.n_rows * a.n_heads * a.head_dim)?;
        need_f32(kernel, k, a.n_rows * a.n_kv * a.head_dim)?;
        need_f32(kernel, v, a.n_rows * a.n_kv * a.head_dim)?;
        if !self.paged_rope_kv_fits() {
            return Err(KernelError::Shape {
                kernel,
                reason: format!(
                    "the adapter binds {} storage buffers per stage, {PAGED_ROPE_KV_BUFFERS} needed",
                    self.dev.limits.max_storage_buffers_per_shader_stage
                ),
            });
        }
        let params = PagedRopeKvParams {
            n_heads: u32s(a.n_heads),
            n_kv: u32s(a.n_kv),
            head_dim: u32s(a.head_dim),
            half: u32s(half),
            mode: rope_mode(mode),
            n_rows: u32s(a.n_rows),
            max_pos: u32s(cs.rows()),
            block_size: u32s(a.block_size),
            max_blocks: u32s(a.max_blocks),
            n_slots: u32s(a.n_blocks * a.block_size),
            n_seqs: u32s(a.n_seqs),
            ..Default::default()
        };
        let width = (a.n_heads * half).max(a.n_kv * a.head_dim);
        Ok(vec![
            self.dispatch(
                kernel,
                None,
                &params,
                &[
                    kv.pos, kv.seq, kv.table, cs, q, k, v, kv.k_cache, kv.v_cache,
                ]
                .map(|t| t.buffer()),
                [u32s(width.div_ceil(64)), u32s(a.n_rows.max(1)), 1],
            )?,
        ])
    }
}
