//! Paged (serving) attention: rows of many sequences over block-table KV caches in one
//! dispatch, by three layouts: `paged_attention` (lane: one invocation per row and head),
//! `paged_attention_sg` (CPU adapters with subgroups) and `paged_attention_heads` (GPUs).

use infer_tensor::{PagedAttentionChoice, Tensor};

use crate::attention::{check_head_group, head_group, sg_heads};
use crate::params::params;
use crate::{
    Dispatch, Kernel, KernelError, Kernels, PipelineKey, Result, Variant, grid1, need_f32,
    need_u32, u32s,
};

params! {
    /// The paged attention kernels' parameters (common/paged_attention_params.wgsl).
    pub(crate) struct PagedAttentionGpu {
        n_heads: u32,
        n_kv: u32,
        head_dim: u32,
        block_size: u32,
        n_rows: u32,
        max_blocks: u32,
        window: u32,
        n_slots: u32,
        scale: f32,
        softcap: f32,
        n_seqs: u32,
        _pad0: u32,
    }
}

/// Where the rows of a batched step belong and how the paged KV caches are laid out, for
/// [`Kernels::paged_kv_write`] and [`Kernels::paged_attention`].
#[derive(Clone, Copy, Debug)]
pub struct PagedParams {
    pub n_rows: usize,
    pub n_heads: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    /// Positions per block.
    pub block_size: usize,
    /// Blocks in each cache (a cache holds `n_blocks * block_size` slots).
    pub n_blocks: usize,
    /// Rows of the block table.
    pub n_seqs: usize,
    /// Columns of the block table (most blocks one sequence holds).
    pub max_blocks: usize,
    pub scale: f32,
    /// Soft-capping of scores when > 0.
    pub softcap: f32,
    /// Sliding window when > 0.
    pub window: usize,
}

/// One layer's paged KV caches (`(n_blocks * block_size, n_kv, head_dim)` each) and where
/// the step's rows go: row r of sequence `seq[r]` (u32) sits at position `pos[r]` (u32), in
/// slot `table[seq[r], pos[r] / block_size] * block_size + pos[r] % block_size` (`table`:
/// u32 `(n_seqs, max_blocks)`).
#[derive(Clone, Copy, Debug)]
pub struct PagedCache<'a> {
    pub k_cache: &'a Tensor,
    pub v_cache: &'a Tensor,
    pub pos: &'a Tensor,
    pub seq: &'a Tensor,
    pub table: &'a Tensor,
}

impl Kernels {
    /// What every paged launcher needs of the step's rows, the block table and the caches.
    pub(crate) fn paged_check(
        &self,
        kernel: Kernel,
        kv: &PagedCache<'_>,
        a: &PagedParams,
    ) -> Result<()> {
        need_u32(kernel, kv.pos, a.n_rows)?;
        need_u32(kernel, kv.seq, a.n_rows)?;
        need_u32(kernel, kv.table, a.n_seqs * a.max_blocks)?;
        for c in [kv.k_cache, kv.v_cache] {
            need_f32(kernel, c, a.n_blocks * a.block_size * a.n_kv * a.head_dim)?;
        }
        if a.block_size == 0
            || a.n_blocks == 0
            || a.n_seqs == 0
            || a.max_blocks == 0
            || a.n_kv == 0
            || !a.n_heads.is_multiple_of(a.n_kv)
            || a.n_rows > 65535
        {
            return Err(KernelError::Shape {
                kernel,
                reason: format!("{a:?}"),
            });
        }
        Ok(())
    }

    /// Causal grouped-query attention of rows of many sequences over the paged caches in
    /// one dispatch: row r of `q` (`(n_rows, n_heads, head_dim)`) attends to positions
    /// `0..=pos[r]` of sequence `seq[r]`; a row's result does not depend on the other rows.
    /// head_dim must be a multiple of 4 (<= 256). The layout is
    /// [`infer_tensor::Tuning::paged_attention`]'s: on CPU adapters with subgroups of >= 8
    /// [`Kernels::paged_attention_sg`] (the query heads of a KV head, and a prompt's
    /// consecutive rows, share each K and V load), on GPUs [`Kernels::paged_attention_heads`]
    /// (the layout of the contiguous decode kernel attention_split_heads), and on CPU
    /// adapters without subgroups [`Kernels::paged_attention_lane`] (one invocation per row
    /// and head).
    pub fn paged_attention(
        &self,
        q: &Tensor,
        out: &Tensor,
        kv: &PagedCache<'_>,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        match self.tuning().paged_attention {
            PagedAttentionChoice::Sg => self.paged_attention_sg(q, out, kv, a),
            PagedAttentionChoice::Heads => self.paged_attention_heads(q, out, kv, a),
            PagedAttentionChoice::Lane => self.paged_attention_lane(q, out, kv, a),
        }
    }

    /// [`Kernels::paged_attention`] with one invocation per (row, head), walking all of
    /// head_dim (paged_attention.wgsl): any adapter.
    pub fn paged_attention_lane(
        &self,
        q: &Tensor,
        out: &Tensor,
        kv: &PagedCache<'_>,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        self.paged_dispatch(
            PipelineKey::new(Kernel::PagedAttention, None, Variant::Plain),
            [q, out],
            kv,
            a,
            grid1(u32s((a.n_rows * a.n_heads).div_ceil(8))),
        )
    }

    /// [`Kernels::paged_attention`] laid out for GPUs (paged_attention_heads.wgsl): a
    /// workgroup of 64 per (group of query heads sharing a KV head, as many as
    /// [`Kernels::attention_split_heads_group`] gives; row) walks the row's positions in
    /// tiles of 64, loading each K and V row once for those heads, with head_dim a constant
    /// of the pipeline so the row loops unroll.
    pub fn paged_attention_heads(
        &self,
        q: &Tensor,
        out: &Tensor,
        kv: &PagedCache<'_>,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        let heads = head_group(a.n_heads, a.n_kv, 8);
        self.paged_attention_heads_grouped(q, out, kv, a, heads)
    }

    /// [`Kernels::paged_attention_heads`] with `heads` query heads per workgroup (1..=8, a
    /// divisor of n_heads / n_kv); every choice gives the same values up to rounding (for
    /// tests and measurements).
    pub fn paged_attention_heads_grouped(
        &self,
        q: &Tensor,
        out: &Tensor,
        kv: &PagedCache<'_>,
        a: &PagedParams,
        heads: usize,
    ) -> Result<Vec<Dispatch>> {
        check_head_group(Kernel::PagedAttentionHeads, a.n_heads, a.n_kv, heads)?;
        self.paged_dispatch(
            PipelineKey::new(
                Kernel::PagedAttentionHeads,
                None,
                Variant::heads(heads, a.head_dim),
            ),
            [q, out],
            kv,
            a,
            [u32s(a.n_heads / heads), u32s(a.n_rows.max(1)), 1],
        )
    }

    /// [`Kernels::paged_attention`] laid out for CPU adapters (paged_attention_sg.wgsl): a
    /// workgroup of 8 invocations across head_dim per (rows, group of query heads sharing
    /// a KV head; as many as [`Kernels::attention_split_sg_heads`] gives), scores by
    /// `subgroupAdd`; [`Kernels::PAGED_SG_ROWS`] rows per workgroup in large steps.
    /// Needs [`Kernels::attention_split_sg_supported`].
    pub fn paged_attention_sg(
        &self,
        q: &Tensor,
        out: &Tensor,
        kv: &PagedCache<'_>,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        let heads = sg_heads(a.n_heads, a.n_kv, a.head_dim);
        let rows = if a.n_rows >= 4 * Self::PAGED_SG_ROWS {
            Self::PAGED_SG_ROWS
        } else {
            1
        };
        self.paged_attention_sg_grouped(q, out, kv, a, heads, rows)
    }

    /// Rows per workgroup of [`Kernels::paged_attention_sg`] in steps of at least 4 times
    /// as many rows: a sequence's consecutive rows (a prompt's) then share each K and V
    /// load, as [`Kernels::SPLIT_SG_TOKENS`] tokens do in attention_split_sg; fewer rows
    /// keep one per workgroup, for parallelism.
    pub const PAGED_SG_ROWS: usize = 4;

    /// [`Kernels::paged_attention_sg`] with `heads` query heads per workgroup (1..=8, a
    /// divisor of n_heads / n_kv) and `rows` rows per workgroup (1..=8); every choice
    /// gives the same values (for tests and measurements).
    pub fn paged_attention_sg_grouped(
        &self,
        q: &Tensor,
        out: &Tensor,
        kv: &PagedCache<'_>,
        a: &PagedParams,
        heads: usize,
        rows: usize,
    ) -> Result<Vec<Dispatch>> {
        if !self.attention_split_sg_supported() {
            let c = &self.dev.caps;
            return Err(KernelError::Shape {
                kernel: Kernel::PagedAttentionSg,
                reason: format!(
                    "needs subgroups of >= 8 invocations (adapter: {}..={}, feature {})",
                    c.subgroup_min_size, c.subgroup_max_size, c.subgroup
                ),
            });
        }
        check_head_group(Kernel::PagedAttentionSg, a.n_heads, a.n_kv, heads)?;
        if !(1..=8).contains(&rows) {
            return Err(KernelError::Shape {
                kernel: Kernel::PagedAttentionSg,
                reason: format!("{rows} rows per workgroup: needs 1..=8"),
            });
        }
        let variant = Variant::sg(heads, a.head_dim, rows);
        self.paged_dispatch(
            PipelineKey::new(Kernel::PagedAttentionSg, None, variant),
            [q, out],
            kv,
            a,
            [
                u32s(a.n_heads / heads),
                u32s(a.n_rows.div_ceil(rows).max(1)),
                1,
            ],
        )
    }

    /// A paged attention kernel's dispatch (the pipeline `key`) of `q` into `out` over
    /// `kv`, after the checks they share.
    fn paged_dispatch(
        &self,
        key: PipelineKey,
        [q, out]: [&Tensor; 2],
        kv: &PagedCache<'_>,
        a: &PagedParams,
        grid: [u32; 3],
    ) -> Result<Vec<Dispatch>> {
        let kernel = key.kernel;
        self.paged_check(kernel, kv, a)?;
        let n = a.n_rows * a.n_heads * a.head_dim;
        need_f32(kernel, q, n)?;
        need_f32(kernel, out, n)?;
        if a.head_dim > 256 || !a.head_dim.is_multiple_of(4) {
            return Err(KernelError::Shape {
                kernel,
                reason: format!("head_dim {} (a multiple of 4, max 256)", a.head_dim),
            });
        }
        let params = PagedAttentionGpu {
            n_heads: u32s(a.n_heads),
            n_kv: u32s(a.n_kv),
            head_dim: u32s(a.head_dim),
            block_size: u32s(a.block_size),
            n_rows: u32s(a.n_rows),
            max_blocks: u32s(a.max_blocks),
            window: u32s(a.window),
            n_slots: u32s(a.n_blocks * a.block_size),
            scale: a.scale,
            softcap: a.softcap,
            n_seqs: u32s(a.n_seqs),
            ..Default::default()
        };
        let buffers =
            [kv.pos, kv.seq, kv.table, q, kv.k_cache, kv.v_cache, out].map(|t| t.buffer());
        Ok(vec![self.dispatch_key(key, &params, &buffers, grid)?])
    }
}
