//! Causal grouped-query attention over contiguous KV caches: `attention` picks among
//! `attention_lane` (one invocation per token and head), `attention` (tiled) and the split
//! (flash-decoding) kernels `attention_split` / `attention_split_heads` (GPUs) /
//! `attention_split_sg` (CPU adapters), merged by `attention_split_merge`. Also the
//! grouped-heads helpers the paged kernels share.

use infer_tensor::{AttentionChoice, DType, Tensor};

use crate::params::params;
use crate::{
    Dispatch, Kernel, KernelError, Kernels, PipelineKey, Result, Variant, grid1, need_f32,
    need_len, u32s,
};

params! {
    /// attention's and attention_lane's parameters.
    pub(crate) struct AttentionGpu {
        n_heads: u32,
        n_kv: u32,
        head_dim: u32,
        capacity: u32,
        n_tokens: u32,
        window: u32,
        scale: f32,
        softcap: f32,
        /// attention_lane: lanes over (token, head) pairs (else over tokens of one head).
        heads_in_lanes: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

params! {
    /// The split kernels' parameters (common/attention_split_params.wgsl).
    pub(crate) struct SplitGpu {
        n_heads: u32,
        n_kv: u32,
        head_dim: u32,
        capacity: u32,
        n_tokens: u32,
        window: u32,
        scale: f32,
        softcap: f32,
        chunk: u32,
        n_chunks: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// The tensors of an attention call: `q` and `out` `(n_tokens, n_heads, head_dim)`, the
/// caches `(n_kv, capacity, head_dim)`, and `pos` (token t at position `pos[0] + t`).
#[derive(Clone, Copy, Debug)]
pub struct AttentionIo<'a> {
    pub q: &'a Tensor,
    pub k_cache: &'a Tensor,
    pub v_cache: &'a Tensor,
    pub out: &'a Tensor,
    pub pos: &'a Tensor,
}

/// Shape and options of an attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionParams {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    /// Positions each cache holds.
    pub capacity: usize,
    pub scale: f32,
    /// Soft-capping of scores when > 0.
    pub softcap: f32,
    /// Sliding window when > 0.
    pub window: usize,
}

/// The attention variants [`Kernels::attention`] chooses between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// attention_lane.wgsl: one invocation per (token, head), no barriers.
    Lane,
    /// attention.wgsl: a workgroup per (head, token), tiles in workgroup memory.
    Tiled,
    /// attention_split.wgsl + attention_split_merge.wgsl: split over the KV length.
    Split,
    /// attention_split_sg.wgsl + attention_split_merge.wgsl: split over the KV length,
    /// phase 1 laid out for CPU adapters (needs subgroups).
    SplitSg,
    /// attention_split_heads.wgsl + attention_split_merge.wgsl: split over the KV length,
    /// phase 1 laid out for GPUs (query heads of a KV head together, unrolled loads).
    SplitHeads,
}

/// Phase 1 of the split attention ([`Kernels::attention_split`] and its variants).
#[derive(Clone, Copy)]
enum Phase1 {
    /// attention_split.wgsl.
    Plain,
    /// attention_split_sg.wgsl with `heads` query heads and `tokens` tokens per workgroup.
    Sg { heads: usize, tokens: usize },
    /// attention_split_heads.wgsl with `heads` query heads per workgroup.
    Heads { heads: usize },
}

/// The largest divisor of the query heads per KV head (n_heads / n_kv; 1 where they do not
/// divide) up to `most` (at least 1): the query heads a workgroup of the grouped attention
/// kernels serves.
pub(crate) fn head_group(n_heads: usize, n_kv: usize, most: usize) -> usize {
    let per_kv = if n_kv > 0 && n_heads.is_multiple_of(n_kv) {
        n_heads / n_kv
    } else {
        1
    };
    (1..=most.max(1).min(per_kv))
        .rev()
        .find(|g| per_kv.is_multiple_of(*g))
        .unwrap_or(1)
}

/// Query heads one workgroup of the subgroup attention kernels serves (see
/// [`Kernels::attention_split_sg_heads`]).
pub(crate) fn sg_heads(n_heads: usize, n_kv: usize, head_dim: usize) -> usize {
    head_group(n_heads, n_kv, 8.min(16 / head_dim.div_ceil(32).max(1)))
}

/// That `heads` query heads per workgroup of `kernel` is 1..=8 and divides the heads per KV
/// head.
pub(crate) fn check_head_group(
    kernel: Kernel,
    n_heads: usize,
    n_kv: usize,
    heads: usize,
) -> Result<()> {
    let per_kv = n_heads.checked_div(n_kv).unwrap_or(0);
    if !(1..=8).contains(&heads) || per_kv == 0 || !per_kv.is_multiple_of(heads) {
        return Err(KernelError::Shape {
            kernel,
            reason: format!(
                "{heads} query heads per workgroup: needs 1..=8 dividing the {per_kv} heads \
                 per KV head"
            ),
        });
    }
    Ok(())
}

impl Kernels {
    /// Causal grouped-query attention of `q` over the caches into `out`
    /// (both `(n_tokens, n_heads, head_dim)`), token t at position `pos[0] + t`, by the
    /// variant [`Kernels::attention_kernel`] picks.
    pub fn attention(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        a: &AttentionParams,
    ) -> Result<Vec<Dispatch>> {
        let io = AttentionIo {
            q,
            k_cache,
            v_cache,
            out,
            pos,
        };
        match self.attention_kernel(a) {
            AttentionKernel::Lane => self.attention_lane(q, k_cache, v_cache, out, pos, a),
            AttentionKernel::Tiled => self.attention_tiled(q, k_cache, v_cache, out, pos, a),
            AttentionKernel::Split => {
                let chunk = self.attention_split_chunk(a.capacity);
                self.attention_split(io, a, chunk)
            }
            AttentionKernel::SplitHeads => {
                let chunk = self.attention_split_chunk(a.capacity);
                self.attention_split_heads(io, a, chunk)
            }
            AttentionKernel::SplitSg => {
                // Steps of many tokens (prefill) have workgroups enough without a split:
                // one chunk, which writes the output directly.
                let chunk = if a.n_tokens > Self::SPLIT_MAX_TOKENS {
                    a.capacity
                } else {
                    self.attention_split_chunk(a.capacity)
                };
                self.attention_split_sg(io, a, chunk)
            }
        }
    }

    /// The variant [`Kernels::attention`] runs for `a`:
    /// - steps of at most [`Kernels::SPLIT_MAX_TOKENS`] tokens (decode, speculative
    ///   verification) on GPUs whose cache holds more than one chunk: split over the KV
    ///   length (one workgroup per head would leave most of a GPU idle at long contexts),
    ///   phase 1 by attention_split_heads where head_dim % 4 == 0 and <= 256 (the query
    ///   heads of a KV head in one workgroup, head_dim a constant so the row loops are
    ///   unrolled; attention_split's invocations walk 64 positions one load at a time),
    ///   else attention_split;
    ///   other steps on GPUs: tiled;
    /// - on CPU adapters, every step: attention_split_sg where the adapter has subgroups
    ///   and head_dim % 4 == 0, split over the KV length for the short steps and as one
    ///   chunk (no split, no merge) for longer ones (faster than lane, whose invocations
    ///   keep all of head_dim and each load K and V);
    ///   else lane (head_dim % 4 == 0), else tiled.
    ///
    /// [`infer_tensor::Tuning::attention`] forces a choice (for tests and measurements)
    /// where the variant can run: split and split_heads only for steps of at
    /// most [`Kernels::SPLIT_MAX_TOKENS`] tokens (their scratch grows with the tokens),
    /// split_heads only where attention_split_heads fits, split_sg and lane only where
    /// head_dim % 4 == 0, split_sg only with subgroups.
    pub fn attention_kernel(&self, a: &AttentionParams) -> AttentionKernel {
        let few = a.n_tokens <= Self::SPLIT_MAX_TOKENS;
        let lane_ok = a.head_dim.is_multiple_of(4);
        let sg_ok = lane_ok && self.attention_split_sg_supported();
        let heads_ok = few && Self::attention_split_heads_fits(a);
        match self.tuning().attention {
            Some(AttentionChoice::Split) if few => return AttentionKernel::Split,
            Some(AttentionChoice::SplitHeads) if heads_ok => return AttentionKernel::SplitHeads,
            Some(AttentionChoice::SplitSg) if sg_ok => return AttentionKernel::SplitSg,
            Some(AttentionChoice::Lane) if lane_ok => return AttentionKernel::Lane,
            Some(AttentionChoice::Tiled) => return AttentionKernel::Tiled,
            _ => {}
        }
        if self.tuning().cpu {
            if sg_ok {
                AttentionKernel::SplitSg
            } else if lane_ok {
                AttentionKernel::Lane
            } else {
                AttentionKernel::Tiled
            }
        } else if few && a.capacity > self.attention_split_chunk(a.capacity) {
            if heads_ok {
                AttentionKernel::SplitHeads
            } else {
                AttentionKernel::Split
            }
        } else {
            AttentionKernel::Tiled
        }
    }

    /// Most tokens of a step [`Kernels::attention`] runs split over the KV length.
    pub const SPLIT_MAX_TOKENS: usize = 8;

    /// Positions per chunk of the split kernels for a cache of `capacity`:
    /// [`infer_tensor::Tuning::split_chunk`], at least 256 past 16384 positions so the merge
    /// stays short.
    pub fn attention_split_chunk(&self, capacity: usize) -> usize {
        let chunk = self.tuning().split_chunk;
        if capacity > 16384 {
            chunk.max(256)
        } else {
            chunk
        }
    }

    /// f32 elements of the scratch [`Kernels::attention_split`] allocates: per (token,
    /// head, chunk) a max, a sum and head_dim partial outputs.
    pub fn attention_split_scratch_len(a: &AttentionParams, chunk: usize) -> usize {
        a.n_tokens * a.n_heads * a.capacity.div_ceil(chunk) * (a.head_dim + 2)
    }

    /// [`Kernels::attention`] split over the KV length (flash-decoding): a workgroup per
    /// (chunk of `chunk` positions, head, token) writes a partial softmax into a scratch
    /// buffer allocated here, once per dispatch (attention_split.wgsl), then a workgroup
    /// per (head, token) merges the chunks (attention_split_merge.wgsl). The grid covers
    /// the capacity; chunks past the current position return at once. `chunk` > 0.
    pub fn attention_split(
        &self,
        io: AttentionIo<'_>,
        a: &AttentionParams,
        chunk: usize,
    ) -> Result<Vec<Dispatch>> {
        self.split(io, a, chunk, Phase1::Plain)
    }

    /// Whether [`Kernels::attention_split_heads`] takes this shape: head_dim a multiple of
    /// 4 up to 256.
    pub fn attention_split_heads_fits(a: &AttentionParams) -> bool {
        a.head_dim.is_multiple_of(4) && (4..=256).contains(&a.head_dim)
    }

    /// Query heads one workgroup of [`Kernels::attention_split_heads`] serves: the largest
    /// divisor of the heads per KV head (n_heads / n_kv) up to 8.
    pub fn attention_split_heads_group(a: &AttentionParams) -> usize {
        head_group(a.n_heads, a.n_kv, 8)
    }

    /// [`Kernels::attention_split`] with the phase 1 made for GPUs
    /// (attention_split_heads.wgsl): a workgroup per (chunk, query heads sharing a KV head,
    /// token) loads each K and V row once for those heads, and head_dim is a constant of
    /// the pipeline, so the row loops are unrolled and their loads in flight together.
    /// Decode's default on GPUs; needs [`Kernels::attention_split_heads_fits`].
    pub fn attention_split_heads(
        &self,
        io: AttentionIo<'_>,
        a: &AttentionParams,
        chunk: usize,
    ) -> Result<Vec<Dispatch>> {
        let heads = Self::attention_split_heads_group(a);
        self.attention_split_heads_grouped(io, a, chunk, heads)
    }

    /// [`Kernels::attention_split_heads`] with `heads` query heads per workgroup (1..=8, a
    /// divisor of n_heads / n_kv); every choice gives the same values up to rounding (the
    /// same bits on CPU adapters; a GPU compiler may contract each variant's multiply-adds
    /// its own way) (for tests and measurements).
    pub fn attention_split_heads_grouped(
        &self,
        io: AttentionIo<'_>,
        a: &AttentionParams,
        chunk: usize,
        heads: usize,
    ) -> Result<Vec<Dispatch>> {
        check_head_group(Kernel::AttentionSplitHeads, a.n_heads, a.n_kv, heads)?;
        if !Self::attention_split_heads_fits(a) {
            return Err(KernelError::Shape {
                kernel: Kernel::AttentionSplitHeads,
                reason: format!("head_dim {} must be a multiple of 4 up to 256", a.head_dim),
            });
        }
        self.split(io, a, chunk, Phase1::Heads { heads })
    }

    /// Whether [`Kernels::attention_split_sg`] runs here: the adapter has subgroups of at
    /// least 8 invocations (its workgroup of 8 is then one subgroup).
    pub fn attention_split_sg_supported(&self) -> bool {
        let c = &self.dev.caps;
        c.subgroup && c.subgroup_min_size >= 8
    }

    /// [`Kernels::attention_split`] with the phase 1 made for CPU adapters
    /// (attention_split_sg.wgsl: 8 invocations across head_dim, scores by `subgroupAdd`, no
    /// barriers). Needs [`Kernels::attention_split_sg_supported`] and head_dim % 4 == 0.
    pub fn attention_split_sg(
        &self,
        io: AttentionIo<'_>,
        a: &AttentionParams,
        chunk: usize,
    ) -> Result<Vec<Dispatch>> {
        self.split_sg_check(a)?;
        let g = Self::attention_split_sg_heads(a);
        let tokens = if a.capacity <= chunk {
            Self::SPLIT_SG_TOKENS.min(a.n_tokens).max(1)
        } else {
            1
        };
        self.split(io, a, chunk, Phase1::Sg { heads: g, tokens })
    }

    /// Query heads one workgroup of [`Kernels::attention_split_sg`] serves: the largest
    /// divisor of the heads per KV head (n_heads / n_kv) up to 8 and up to 16 / E, where E
    /// = ceil(head_dim / 32) is the vec4 units of a head each invocation holds (a bound on
    /// the q and accumulator values it keeps; E = 2 at head_dim 64, so up to 8 heads). The
    /// heads share one KV head, whose K and V rows the workgroup then loads once for all of
    /// them (SmolLM2-135M, 9 heads over 3 KV heads: 3, a third of the loads). The bounds
    /// past the measured G = 1 and 3 are a guess (bench/notes/kernels.md).
    pub fn attention_split_sg_heads(a: &AttentionParams) -> usize {
        sg_heads(a.n_heads, a.n_kv, a.head_dim)
    }

    /// Tokens per workgroup of [`Kernels::attention_split_sg`] over one chunk (prefill on
    /// CPU adapters): they share each K and V row load; 8 is slower (the state of 8 tokens
    /// x 3 heads no longer fits in registers).
    pub const SPLIT_SG_TOKENS: usize = 4;

    /// [`Kernels::attention_split_sg`] with `heads` query heads per workgroup (1..=8, a
    /// divisor of n_heads / n_kv) and `tokens` tokens per workgroup (1..=8; more than 1 only
    /// over one chunk, chunk >= capacity); every choice gives the same values (for tests
    /// and measurements).
    pub fn attention_split_sg_grouped(
        &self,
        io: AttentionIo<'_>,
        a: &AttentionParams,
        chunk: usize,
        heads: usize,
        tokens: usize,
    ) -> Result<Vec<Dispatch>> {
        check_head_group(Kernel::AttentionSplitSg, a.n_heads, a.n_kv, heads)?;
        if !(1..=8).contains(&tokens) || (tokens > 1 && a.capacity > chunk) {
            return Err(KernelError::Shape {
                kernel: Kernel::AttentionSplitSg,
                reason: format!(
                    "{tokens} tokens per workgroup: needs 1..=8, and 1 unless one chunk \
                     (chunk {chunk} >= capacity {})",
                    a.capacity
                ),
            });
        }
        self.split_sg_check(a)?;
        self.split(io, a, chunk, Phase1::Sg { heads, tokens })
    }

    /// What attention_split_sg needs of the adapter and the shape.
    fn split_sg_check(&self, a: &AttentionParams) -> Result<()> {
        if !self.attention_split_sg_supported() || !a.head_dim.is_multiple_of(4) {
            return Err(KernelError::Shape {
                kernel: Kernel::AttentionSplitSg,
                reason: format!(
                    "needs subgroups of >= 8 invocations (adapter: {}..={}, feature {}) and \
                     head_dim % 4 == 0 (head_dim {})",
                    self.dev.caps.subgroup_min_size,
                    self.dev.caps.subgroup_max_size,
                    self.dev.caps.subgroup,
                    a.head_dim
                ),
            });
        }
        Ok(())
    }

    /// The split attention's two dispatches, phase 1 as `phase1` says (attention_split_sg
    /// over one chunk: one dispatch).
    fn split(
        &self,
        io: AttentionIo<'_>,
        a: &AttentionParams,
        chunk: usize,
        phase1: Phase1,
    ) -> Result<Vec<Dispatch>> {
        let AttentionIo {
            q,
            k_cache,
            v_cache,
            out,
            pos,
        } = io;
        let base = self.attention_params(io, a)?;
        if chunk == 0 {
            return Err(KernelError::Shape {
                kernel: Kernel::AttentionSplit,
                reason: "chunk 0".into(),
            });
        }
        let n_chunks = a.capacity.div_ceil(chunk).max(1);
        let params = SplitGpu {
            n_heads: base.n_heads,
            n_kv: base.n_kv,
            head_dim: base.head_dim,
            capacity: base.capacity,
            n_tokens: base.n_tokens,
            window: base.window,
            scale: base.scale,
            softcap: base.softcap,
            chunk: u32s(chunk),
            n_chunks: u32s(n_chunks),
            ..Default::default()
        };
        // attention_split_sg over one chunk writes the output itself: no scratch, no merge.
        let direct = matches!(phase1, Phase1::Sg { .. }) && n_chunks == 1;
        let scratch = if direct {
            None
        } else {
            Some(Tensor::zeros(
                &self.dev,
                "attention_split scratch",
                &[Self::attention_split_scratch_len(a, chunk).max(1)],
                DType::F32,
            )?)
        };
        let target = scratch.as_ref().unwrap_or(out).buffer();
        let bind = [
            pos.buffer(),
            q.buffer(),
            k_cache.buffer(),
            v_cache.buffer(),
            target,
            q.buffer(),
            k_cache.buffer(),
        ];
        let phase1 = match phase1 {
            Phase1::Sg { heads, tokens } => {
                let key = PipelineKey {
                    kernel: Kernel::AttentionSplitSg,
                    dtype: None,
                    variant: Variant::sg(heads, a.head_dim, tokens),
                };
                let grid = [
                    u32s(n_chunks),
                    u32s(a.n_heads / heads),
                    u32s(a.n_tokens.div_ceil(tokens)),
                ];
                self.dispatch_key(key, &params, &bind[..5], grid)?
            }
            Phase1::Heads { heads } => {
                let key = PipelineKey {
                    kernel: Kernel::AttentionSplitHeads,
                    dtype: None,
                    variant: Variant::heads(heads, a.head_dim),
                };
                let grid = [u32s(n_chunks), u32s(a.n_heads / heads), u32s(a.n_tokens)];
                self.dispatch_key(key, &params, &bind[..5], grid)?
            }
            Phase1::Plain => {
                let grid = [u32s(n_chunks), u32s(a.n_heads), u32s(a.n_tokens)];
                self.dispatch(Kernel::AttentionSplit, None, &params, &bind, grid)?
            }
        };
        let Some(scratch) = scratch else {
            return Ok(vec![phase1]);
        };
        Ok(vec![
            phase1,
            self.dispatch(
                Kernel::AttentionSplitMerge,
                None,
                &params,
                &[pos.buffer(), scratch.buffer(), out.buffer()],
                [u32s(a.n_heads), u32s(a.n_tokens), 1],
            )?,
        ])
    }

    /// [`Kernels::attention`] with one invocation per (token, head) and no barriers
    /// (attention_lane.wgsl); head_dim must be a multiple of 4.
    pub fn attention_lane(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        a: &AttentionParams,
    ) -> Result<Vec<Dispatch>> {
        let io = AttentionIo {
            q,
            k_cache,
            v_cache,
            out,
            pos,
        };
        let mut params = self.attention_params(io, a)?;
        // Few tokens (decode): lanes over (token, head) pairs; else over tokens of one head.
        let heads_in_lanes = a.n_tokens < 8;
        params.heads_in_lanes = heads_in_lanes as u32;
        if !a.head_dim.is_multiple_of(4) {
            return Err(KernelError::Shape {
                kernel: Kernel::AttentionLane,
                reason: format!("head_dim {} is not a multiple of 4", a.head_dim),
            });
        }
        Ok(vec![self.dispatch(
            Kernel::AttentionLane,
            None,
            &params,
            &[
                pos.buffer(),
                q.buffer(),
                k_cache.buffer(),
                v_cache.buffer(),
                out.buffer(),
            ],
            if heads_in_lanes {
                grid1(u32s((a.n_tokens * a.n_heads).div_ceil(8)))
            } else {
                [u32s(a.n_tokens.div_ceil(8)), u32s(a.n_heads), 1]
            },
        )?])
    }

    /// [`Kernels::attention`] with a workgroup per (head, token) and tiles of 64 positions
    /// in workgroup memory (attention.wgsl).
    pub fn attention_tiled(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        a: &AttentionParams,
    ) -> Result<Vec<Dispatch>> {
        let io = AttentionIo {
            q,
            k_cache,
            v_cache,
            out,
            pos,
        };
        let params = self.attention_params(io, a)?;
        Ok(vec![self.dispatch(
            Kernel::Attention,
            None,
            &params,
            &[
                pos.buffer(),
                q.buffer(),
                k_cache.buffer(),
                v_cache.buffer(),
                out.buffer(),
                q.buffer(),
                k_cache.buffer(),
            ],
            [u32s(a.n_heads), u32s(a.n_tokens), 1],
        )?])
    }

    /// The checks every contiguous attention kernel needs, and its parameters.
    fn attention_params(&self, io: AttentionIo<'_>, a: &AttentionParams) -> Result<AttentionGpu> {
        let AttentionIo {
            q,
            k_cache,
            v_cache,
            out,
            pos,
        } = io;
        let n = a.n_tokens * a.n_heads * a.head_dim;
        need_f32(Kernel::Attention, q, n)?;
        need_f32(Kernel::Attention, out, n)?;
        need_f32(Kernel::Attention, k_cache, a.n_kv * a.capacity * a.head_dim)?;
        need_f32(Kernel::Attention, v_cache, a.n_kv * a.capacity * a.head_dim)?;
        need_len(Kernel::Attention, pos, 1)?;
        if a.head_dim > 256 || a.n_kv == 0 || !a.n_heads.is_multiple_of(a.n_kv) {
            return Err(KernelError::Shape {
                kernel: Kernel::Attention,
                reason: format!(
                    "head_dim {} (max 256), {} heads over {} KV heads",
                    a.head_dim, a.n_heads, a.n_kv
                ),
            });
        }
        let params = AttentionGpu {
            n_heads: u32s(a.n_heads),
            n_kv: u32s(a.n_kv),
            head_dim: u32s(a.head_dim),
            capacity: u32s(a.capacity),
            n_tokens: u32s(a.n_tokens),
            window: u32s(a.window),
            scale: a.scale,
            softcap: a.softcap,
            ..Default::default()
        };
        Ok(params)
    }
}
