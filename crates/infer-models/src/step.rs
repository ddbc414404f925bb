//! What an architecture's forward pass is written against, so that one graph per
//! architecture serves both ways of running it:
//!
//! - [`Kv::Contiguous`]: one sequence whose step rows are consecutive positions, with a
//!   `(n_kv, capacity, head_dim)` cache per layer (the [`Runner`](crate::Runner) behind
//!   `infer run` and `infer chat`);
//! - [`Kv::Paged`]: rows from many sequences, each at its own position, over a paged KV
//!   cache (infer-serve's continuous batching). Every kernel used this way computes a row
//!   with arithmetic that does not depend on the other rows, so a sequence gets the same
//!   logits alone or beside others (batch invariance).
//!
//! A graph writes its layers with [`Step::rms_norm`], [`Step::linear`], [`Step::glu`] and
//! [`Step::rope_attention`] (or [`Step::attention`] without rotary embedding); the step
//! picks the kernels.

use infer_kernels::{
    AttentionParams, Dispatch, GeluMode, Glu, Kernels, KvCache, Norm, Out, PagedCache, PagedParams,
    RopeMode, RopeTable,
};
use infer_tensor::Tensor;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::io::Io;

/// A paged KV cache and the per-row inputs of a batched step: row r is the token at
/// position `pos[r]` of the sequence in block-table row `seq[r]`; that sequence's position
/// p lives in slot `table[seq][p / block_size] * block_size + p % block_size` of each
/// layer's pages.
pub struct PagedKv {
    /// (R) u32 each.
    pub ids: Tensor,
    pub pos: Tensor,
    pub seq: Tensor,
    /// (max_seqs, max_blocks) u32 physical block ids.
    pub table: Tensor,
    /// Per layer: (n_blocks * block_size, n_kv, head_dim) f32.
    pub k_pages: Vec<Tensor>,
    pub v_pages: Vec<Tensor>,
    pub block_size: usize,
    pub n_blocks: usize,
    pub max_seqs: usize,
    pub max_blocks: usize,
}

/// Where a step's rows sit and where its attention keeps K and V.
#[derive(Clone, Copy)]
pub enum Kv<'a> {
    /// One sequence: row i is position `pos + i` (`io.positions` holds them); `io.kv` holds a
    /// contiguous cache per layer.
    Contiguous(&'a Io),
    /// Rows of many sequences over a paged cache.
    Paged(&'a PagedKv),
}

/// How a layer attends: everything but the shapes, which come from the config.
#[derive(Clone, Copy, Debug)]
pub struct AttnSpec {
    pub n_heads: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Soft-capping of scores when > 0.
    pub softcap: f32,
    /// Sliding window when > 0.
    pub window: usize,
}

impl AttnSpec {
    /// Plain causal attention with the `1 / sqrt(head_dim)` scale and the config's window.
    pub fn of(cfg: &ModelConfig) -> AttnSpec {
        AttnSpec {
            n_heads: cfg.n_heads,
            n_kv: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            softcap: 0.0,
            window: cfg.sliding_window.unwrap_or(0),
        }
    }
}

/// Rotary embedding: the `(capacity, rotary_dim)` table of (cos, sin) pairs and how
/// dimensions pair up.
#[derive(Clone, Copy)]
pub struct Rope<'a> {
    pub cs: &'a Tensor,
    pub mode: RopeMode,
}

/// The input of [`Step::linear`] and [`Step::glu`]: a tensor, or the RMSNorm of one that the
/// matvec computes as it loads it (made by [`Step::rms_norm`]). A `&Tensor` converts into
/// `Plain`.
#[derive(Clone, Copy)]
pub enum Input<'t> {
    Plain(&'t Tensor),
    /// `rms_norm(x) * (offset + weight)`, computed inside the coalesced matvec.
    Normed(&'t Tensor, Norm<'t>),
}

impl<'t> From<&'t Tensor> for Input<'t> {
    fn from(t: &'t Tensor) -> Input<'t> {
        Input::Plain(t)
    }
}

/// An attention layer's q, k and v projections: one weight stacking their rows (`rows`:
/// q's, k's, v's), run as one dispatch that writes q, k and v ([`Out::Split`]; the values
/// of three separate projections), or, where their dtypes differ, three weights.
pub enum Qkv {
    Fused { w: Tensor, rows: [usize; 3] },
    Separate([Tensor; 3]),
}

impl Qkv {
    /// The weights the projections read (for [`Step::rms_norm`]).
    pub fn weights(&self) -> Vec<&Tensor> {
        match self {
            Qkv::Fused { w, .. } => vec![w],
            Qkv::Separate(ws) => ws.iter().collect(),
        }
    }
}

/// One step of `n` rows being built.
pub struct Step<'a> {
    pub k: &'a Kernels,
    pub n: usize,
    pub kv: Kv<'a>,
}

impl<'a> Step<'a> {
    /// (n) u32: the rows' token ids.
    pub fn ids(&self) -> &'a Tensor {
        match self.kv {
            Kv::Contiguous(io) => &io.ids,
            Kv::Paged(p) => &p.ids,
        }
    }

    /// (n) u32: each row's position in its sequence (learned position embeddings).
    pub fn positions(&self) -> &'a Tensor {
        match self.kv {
            Kv::Contiguous(io) => &io.positions,
            Kv::Paged(p) => &p.pos,
        }
    }

    /// `xn = rms_norm(x) * (norm.offset + norm.weight)` (`(n, hidden)`) as the input of the
    /// linear layers (or the glu) over the weights `ws`. Where the step runs every one of
    /// them as the coalesced matvec (GPUs), nothing is dispatched: the returned input has
    /// each layer norm x as it loads it (the same values, one dispatch fewer). Otherwise the
    /// rms_norm kernel writes `xn` now and the input is `xn`. Either way `xn` is not to be
    /// read afterwards except through the returned input.
    pub fn rms_norm<'t>(
        &self,
        g: &mut Vec<Dispatch>,
        x: &'t Tensor,
        norm: Norm<'t>,
        xn: &'t Tensor,
        ws: &[&Tensor],
    ) -> Result<Input<'t>> {
        if ws
            .iter()
            .all(|w| self.matvec_path(w) && self.k.fuses_norm(w))
        {
            return Ok(Input::Normed(x, norm));
        }
        let (k, d) = (self.k, x.cols());
        g.extend(k.rms_norm(x, norm, xn, self.n, d)?);
        Ok(Input::Plain(xn))
    }

    /// `y = x W^T` over the step's rows. One sequence: the fastest kernel for the row count
    /// (`Kernels::linear`); many: the matvec per row, whose arithmetic for a row is the same
    /// whatever the other rows are. A normed input (see [`Step::rms_norm`]) runs the
    /// coalesced matvec with the norm folded in (also row invariant).
    pub fn linear<'t, 'y>(
        &self,
        x: impl Into<Input<'t>>,
        w: &Tensor,
        y: impl Into<Out<'y>>,
    ) -> Result<Vec<Dispatch>> {
        let y = y.into();
        Ok(match (x.into(), self.kv) {
            (Input::Normed(x, norm), _) => self.k.matvec_coalesced_norm(w, x, self.n, y, norm)?,
            (Input::Plain(x), Kv::Contiguous(_)) => self.k.linear(x, self.n, w, y)?,
            (Input::Plain(x), Kv::Paged(_)) => self.k.matvec_batched(w, x, self.n, y)?,
        })
    }

    /// `q, k, v = x Wq^T, x Wk^T, x Wv^T` (each `(n, its rows)`): one [`Step::linear`] over
    /// the fused weight with its output split, else three.
    pub fn qkv<'t>(
        &self,
        x: impl Into<Input<'t>>,
        qkv: &Qkv,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Vec<Dispatch>> {
        let x = x.into();
        match qkv {
            Qkv::Fused { w, rows } => self.linear(
                x,
                w,
                Out::Split {
                    ys: [q, k, v],
                    rows: *rows,
                },
            ),
            Qkv::Separate([wq, wk, wv]) => {
                let mut g = self.linear(x, wq, q)?;
                g.extend(self.linear(x, wk, k)?);
                g.extend(self.linear(x, wv, v)?);
                Ok(g)
            }
        }
    }

    /// Whether this step's linear layers over `w` run matvec (fusable) rather than matmul.
    fn matvec_path(&self, w: &Tensor) -> bool {
        match self.kv {
            Kv::Contiguous(_) => self.k.linear_uses_matvec(self.n, w),
            Kv::Paged(_) => true,
        }
    }

    /// `y += x W^T` (a projection and its residual add): one fused matvec where the step
    /// runs matvec, else the linear layer into `scratch` and an add. Either way `y`'s sums
    /// are the add kernel's.
    pub fn linear_add(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        scratch: &Tensor,
    ) -> Result<Vec<Dispatch>> {
        if self.matvec_path(w) {
            return Ok(self.k.matvec_add(w, x, self.n, y)?);
        }
        let len = self.n * w.rows();
        let mut g = self.linear(x, w, scratch)?;
        g.extend(self.k.add(y, scratch, len, len)?);
        Ok(g)
    }

    /// A gated MLP activation `out = act(x Wg^T) * (x Wu^T)`: one fused pass where the step
    /// runs matvec and `Kernels::glu_fused_faster` says so (on GPUs, the coalesced
    /// matvec_glu, with a normed input's RMSNorm folded in too), else two linear layers into
    /// `gate` and `up` (`scratch`) and the activation kernels. The values are the same
    /// either way.
    pub fn glu<'t>(
        &self,
        x: impl Into<Input<'t>>,
        [wg, wu]: [&Tensor; 2],
        act: Glu,
        out: &Tensor,
        [gate, up]: [&Tensor; 2],
    ) -> Result<Vec<Dispatch>> {
        let (x, n) = (x.into(), self.n);
        if self.matvec_path(wg) && self.k.glu_fused_faster(wg.dtype, n) {
            return Ok(match x {
                Input::Plain(x) => self.k.matvec_glu(wg, wu, x, n, out, act)?,
                Input::Normed(x, norm) => {
                    self.k
                        .matvec_glu_coalesced([wg, wu], x, n, out, act, Some(norm))?
                }
            });
        }
        let len = self.n * wg.rows();
        let mut g = self.linear(x, wg, gate)?;
        g.extend(self.linear(x, wu, up)?);
        match act {
            Glu::Silu => g.extend(self.k.swiglu(gate, up, out, len)?),
            Glu::GeluTanh => {
                g.extend(self.k.gelu(gate, out, len, GeluMode::Tanh)?);
                g.extend(self.k.mul(out, up, len, len)?);
            }
        }
        Ok(g)
    }

    /// Rotary embedding of `(n, heads, head_dim)` `x` at the rows' positions (the unfused
    /// path of [`Step::rope_attention`]).
    fn rope(
        &self,
        x: &Tensor,
        cs: &Tensor,
        heads: usize,
        head_dim: usize,
        mode: RopeMode,
    ) -> Result<Vec<Dispatch>> {
        Ok(match self.kv {
            Kv::Contiguous(io) => self.k.rope(
                x,
                RopeTable { cs, mode },
                &io.positions,
                self.n,
                heads,
                head_dim,
            )?,
            Kv::Paged(p) => {
                self.k
                    .rope_rows(x, RopeTable { cs, mode }, &p.pos, self.n, heads, head_dim)?
            }
        })
    }

    /// Rotary embedding (`rope`) of `q` in place and of `k`, the rotated `k` and `v` written
    /// into layer `layer`'s cache, then [`Step::attention`]'s attention: one fused dispatch
    /// (`rope_kv` / `paged_rope_kv`) before the attention kernel instead of rope on q, rope
    /// on k and the cache write, with the same values. Afterwards `k` holds unspecified
    /// values (the fused kernels leave it unrotated; the fallback, for adapters that bind
    /// too few storage buffers for `paged_rope_kv`, rotates it in place).
    pub fn rope_attention(
        &self,
        layer: usize,
        [q, k, v]: [&Tensor; 3],
        out: &Tensor,
        a: &AttnSpec,
        rope: Rope,
    ) -> Result<Vec<Dispatch>> {
        let (kr, cs, mode) = (self.k, rope.cs, rope.mode);
        let mut g = Vec::new();
        match self.kv {
            Kv::Contiguous(io) => {
                let (kc, vc) = &io.kv[layer];
                g.extend(kr.rope_kv(
                    [q, k, v],
                    RopeTable { cs, mode },
                    &KvCache {
                        k_cache: kc,
                        v_cache: vc,
                        pos: &io.positions,
                        capacity: io.capacity,
                    },
                    self.n,
                    [a.n_heads, a.n_kv],
                    a.head_dim,
                )?);
            }
            Kv::Paged(pk) if kr.paged_rope_kv_fits() => {
                let pp = self.paged_params(pk, a);
                let (kp, vp) = (&pk.k_pages[layer], &pk.v_pages[layer]);
                g.extend(kr.paged_rope_kv(
                    [q, k, v],
                    RopeTable { cs, mode },
                    &PagedCache {
                        k_cache: kp,
                        v_cache: vp,
                        pos: &pk.pos,
                        seq: &pk.seq,
                        table: &pk.table,
                    },
                    &pp,
                )?);
            }
            Kv::Paged(_) => {
                g.extend(self.rope(q, cs, a.n_heads, a.head_dim, mode)?);
                g.extend(self.rope(k, cs, a.n_kv, a.head_dim, mode)?);
                g.extend(self.write_kv(layer, k, v, a)?);
            }
        }
        g.extend(self.attend(layer, q, out, a)?);
        Ok(g)
    }

    /// Writes the rows' `k`, `v` into layer `layer`'s cache and attends `q` over it
    /// (causal, with the spec's scale, soft-cap and window) into `out` (no rotary embedding:
    /// [`Step::rope_attention`] is the same with one).
    pub fn attention(
        &self,
        layer: usize,
        [q, k, v]: [&Tensor; 3],
        out: &Tensor,
        a: &AttnSpec,
    ) -> Result<Vec<Dispatch>> {
        let mut g = self.write_kv(layer, k, v, a)?;
        g.extend(self.attend(layer, q, out, a)?);
        Ok(g)
    }

    fn paged_params(&self, pk: &PagedKv, a: &AttnSpec) -> PagedParams {
        PagedParams {
            n_rows: self.n,
            n_heads: a.n_heads,
            n_kv: a.n_kv,
            head_dim: a.head_dim,
            block_size: pk.block_size,
            n_blocks: pk.n_blocks,
            n_seqs: pk.max_seqs,
            max_blocks: pk.max_blocks,
            scale: a.scale,
            softcap: a.softcap,
            window: a.window,
        }
    }

    /// Writes the rows' `k`, `v` into layer `layer`'s cache.
    fn write_kv(
        &self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        a: &AttnSpec,
    ) -> Result<Vec<Dispatch>> {
        Ok(match self.kv {
            Kv::Contiguous(io) => {
                let (kc, vc) = &io.kv[layer];
                self.k.kv_write(
                    k,
                    v,
                    &KvCache {
                        k_cache: kc,
                        v_cache: vc,
                        pos: &io.positions,
                        capacity: io.capacity,
                    },
                    self.n,
                    a.n_kv,
                    a.head_dim,
                )?
            }
            Kv::Paged(pk) => {
                let pp = self.paged_params(pk, a);
                let (kp, vp) = (&pk.k_pages[layer], &pk.v_pages[layer]);
                self.k.paged_kv_write(
                    k,
                    v,
                    &PagedCache {
                        k_cache: kp,
                        v_cache: vp,
                        pos: &pk.pos,
                        seq: &pk.seq,
                        table: &pk.table,
                    },
                    &pp,
                )?
            }
        })
    }

    /// Attends `q` over layer `layer`'s cache (holding this step's rows) into `out`.
    fn attend(
        &self,
        layer: usize,
        q: &Tensor,
        out: &Tensor,
        a: &AttnSpec,
    ) -> Result<Vec<Dispatch>> {
        let kr = self.k;
        Ok(match self.kv {
            Kv::Contiguous(io) => {
                let (kc, vc) = &io.kv[layer];
                let p = AttentionParams {
                    n_tokens: self.n,
                    n_heads: a.n_heads,
                    n_kv: a.n_kv,
                    head_dim: a.head_dim,
                    capacity: io.capacity,
                    scale: a.scale,
                    softcap: a.softcap,
                    window: a.window,
                };
                kr.attention(q, kc, vc, out, &io.positions, &p)?
            }
            Kv::Paged(pk) => {
                let pp = self.paged_params(pk, a);
                let (kp, vp) = (&pk.k_pages[layer], &pk.v_pages[layer]);
                kr.paged_attention(
                    q,
                    out,
                    &PagedCache {
                        k_cache: kp,
                        v_cache: vp,
                        pos: &pk.pos,
                        seq: &pk.seq,
                        table: &pk.table,
                    },
                    &pp,
                )?
            }
        })
    }
}
