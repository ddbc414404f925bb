//! The launchers, one per shader. Each `#[repr(C)]` params struct matches its WGSL `Params`
//! field for field.

use bytemuck::{Pod, Zeroable};
use infer_tensor::{AttentionChoice, DType, Layout, PagedAttentionChoice, Tensor, wgpu};

use crate::{
    COALESCED_LINEAR_ROWS, Dispatch, KernelError, Kernels, Result, grid1, need_f32, need_len,
};

pub use infer_tensor::reference::{GeluMode, RopeMode};

fn weight_dtype(kernel: &'static str, w: &Tensor) -> Result<DType> {
    if w.layout != Layout::Weights {
        return Err(KernelError::Shape {
            kernel,
            reason: format!(
                "`{}` is not in the weight layout (upload it with Tensor::upload_weights)",
                w.name
            ),
        });
    }
    if w.dtype == DType::U32 {
        return Err(KernelError::DType {
            kernel,
            tensor: w.name.clone(),
            dtype: w.dtype,
        });
    }
    Ok(w.dtype)
}

fn u32s(n: usize) -> u32 {
    u32::try_from(n).expect("sizes fit in u32 (checked against binding limits)")
}

/// The gated activation of [`Kernels::matvec_glu`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// SwiGLU: silu(gate) * up (Llama, Phi-3).
    Silu,
    /// GeGLU: gelu_tanh(gate) * up (Gemma).
    GeluTanh,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatvecParams {
    n: u32,
    k: u32,
    x_off: u32,
    y_off: u32,
    soff: u32,
    m: u32,
    y_ld: u32,
    /// matvec: accumulate into y; the glu kernels: the activation (0 silu, 1 gelu tanh).
    flag: u32,
    /// The coalesced kernels: 1 to fold an RMSNorm (`eps`, `w_offset`) into x.
    norm: u32,
    eps: f32,
    w_offset: f32,
    /// matvec, matvec_coalesced: a split output ([`Out::Split`]; common/split_out.wgsl).
    row0: u32,
    seg1: u32,
    seg2: u32,
    n_all: u32,
    t0: u32,
    _pad: [u32; 3],
}

/// Where a linear layer writes the rows of its weight.
#[derive(Clone, Copy)]
pub enum Out<'a> {
    /// Every row into one `(m, n)` tensor.
    One(&'a Tensor),
    /// A weight that stacks three projections' rows (a fused q/k/v projection): its first
    /// `rows[0]` rows into `ys[0]`, the next `rows[1]` into `ys[1]`, the rest into `ys[2]`,
    /// each `(m, rows[i])`. One dispatch writes all three; every value is the one a
    /// separate launch over that projection's own weight computes.
    Split {
        ys: [&'a Tensor; 3],
        rows: [usize; 3],
    },
}

impl<'a> From<&'a Tensor> for Out<'a> {
    fn from(y: &'a Tensor) -> Self {
        Out::One(y)
    }
}

/// An [`Out`]'s fields of the kernels' parameters: y's row stride and the split rows.
struct OutFields {
    y_ld: u32,
    seg1: u32,
    seg2: u32,
    n_all: u32,
}

impl<'a> Out<'a> {
    /// The tensor the first rows go to (all of them, unsplit).
    fn first(&self) -> &'a Tensor {
        match *self {
            Out::One(y) => y,
            Out::Split { ys, .. } => ys[0],
        }
    }

    /// Checks this output for `m` tokens of a weight of `n` rows, written at `y_off` of the
    /// first tensor (0 when split; `acc`, adding to y, unsplit only).
    fn fields(
        &self,
        kernel: &'static str,
        m: usize,
        n: usize,
        y_off: usize,
        acc: bool,
    ) -> Result<OutFields> {
        match *self {
            Out::One(y) => {
                need_f32(kernel, y, y_off + m * n)?;
                Ok(OutFields {
                    y_ld: u32s(n),
                    seg1: u32::MAX,
                    seg2: u32::MAX,
                    n_all: u32s(n),
                })
            }
            Out::Split { ys, rows } => {
                let distinct = ys[0].buffer() != ys[1].buffer()
                    && ys[0].buffer() != ys[2].buffer()
                    && ys[1].buffer() != ys[2].buffer();
                if rows.iter().sum::<usize>() != n || y_off != 0 || acc || !distinct {
                    return Err(KernelError::Shape {
                        kernel,
                        reason: format!(
                            "a split output needs rows summing to the weight's {n} (got {rows:?}), three distinct tensors, no offset and no accumulation"
                        ),
                    });
                }
                for (y, r) in ys.iter().zip(rows) {
                    need_f32(kernel, y, m * r)?;
                }
                Ok(OutFields {
                    y_ld: u32s(rows[0]),
                    seg1: u32s(rows[0]),
                    seg2: u32s(rows[0] + rows[1]),
                    n_all: u32s(n),
                })
            }
        }
    }

    /// The buffers of bindings y1 and y2: the split's other tensors, else `spare`.
    fn rest(&self, spare: &'a wgpu::Buffer) -> [&'a wgpu::Buffer; 2] {
        match *self {
            Out::One(_) => [spare, spare],
            Out::Split { ys, .. } => [ys[1].buffer(), ys[2].buffer()],
        }
    }
}

/// An RMSNorm folded into the input of a coalesced matvec ([`Kernels::matvec_coalesced_norm`],
/// [`Kernels::matvec_glu_coalesced`]): each token's x is used as
/// `x / sqrt(mean(x^2) + eps) * (offset + weight)`, with the [`Kernels::rms_norm`] kernel's
/// arithmetic (the same sum of squares in the same order), so the values are its bits.
#[derive(Clone, Copy, Debug)]
pub struct Norm<'a> {
    /// (k) f32.
    pub weight: &'a Tensor,
    pub eps: f32,
    /// Added to the weight: 1 for Gemma checkpoints that store w of (1 + w), else 0.
    pub offset: f32,
}

/// Gate and up weights of a glu kernel: the same shape, dtype and parts.
fn same_layout(kernel: &'static str, wg: &Tensor, wu: &Tensor) -> Result<()> {
    if wu.dtype != wg.dtype
        || wu.shape != wg.shape
        || wu.parts.len() != wg.parts.len()
        || wu.parts.iter().zip(&wg.parts).any(|(a, b)| {
            (a.rows, a.row_start, a.scale_offset) != (b.rows, b.row_start, b.scale_offset)
        })
    {
        return Err(KernelError::Shape {
            kernel,
            reason: format!(
                "gate {} {:?} {} and up {} {:?} {} differ in shape, dtype or layout",
                wg.name, wg.shape, wg.dtype, wu.name, wu.shape, wu.dtype
            ),
        });
    }
    Ok(())
}

fn glu_flag(act: Glu) -> u32 {
    match act {
        Glu::Silu => 0,
        Glu::GeluTanh => 1,
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    y_ld: u32,
    /// The part's first row: its column in y (and a split output's row0).
    row0: u32,
    soff: u32,
    /// A split output ([`Out::Split`]; common/split_out.wgsl).
    seg1: u32,
    seg2: u32,
    n_all: u32,
    t0: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EmbeddingParams {
    k: u32,
    row_start: u32,
    rows: u32,
    n_tokens: u32,
    soff: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct NormParams {
    d: u32,
    eps: f32,
    w_offset: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct N4 {
    n: u32,
    a: u32,
    b: u32,
    c: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RopeParams {
    n_heads: u32,
    head_dim: u32,
    half: u32,
    mode: u32,
    n_tokens: u32,
    max_pos: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct KvWriteParams {
    n_kv: u32,
    head_dim: u32,
    capacity: u32,
    n_tokens: u32,
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttentionGpu {
    n_heads: u32,
    n_kv: u32,
    head_dim: u32,
    capacity: u32,
    n_tokens: u32,
    window: u32,
    scale: f32,
    softcap: f32,
    heads_in_lanes: u32,
    _pad: [u32; 3],
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SplitGpu {
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
    _pad: [u32; 2],
}

impl Kernels {
    /// `y[y_off + r] = sum_c w[r, c] x[x_off + c]`; `w` is `(n, k)` in any weight dtype.
    /// The result is bit-identical to [`Kernels::matvec_batched`]'s for the same row of x.
    pub fn matvec(
        &self,
        w: &Tensor,
        x: &Tensor,
        x_off: usize,
        y: &Tensor,
        y_off: usize,
    ) -> Result<Vec<Dispatch>> {
        self.matvec_rows(w, x, x_off, 1, Out::One(y), y_off, false)
    }

    /// matvec over `m` tokens: `y[t] = w x[t]` with `x` `(m, k)` and `y` `(m, n)`. For
    /// float and Q8_0 weights each weight unit is decoded once per tile of up to
    /// [`Kernels::matvec_tokens`] tokens (on lavapipe 1.2-2x less time per token; see
    /// `matvec_plan` for where tiles are used). Batch invariant: `y[t]` is bit-identical
    /// whatever `m` is and wherever `t` falls in a tile (each token's arithmetic is the same
    /// expression; tested on the adapter in tests/kernels.rs), and equal to
    /// [`Kernels::matvec`] of `x[t]`.
    pub fn matvec_batched<'a>(
        &self,
        w: &Tensor,
        x: &Tensor,
        m: usize,
        y: impl Into<Out<'a>>,
    ) -> Result<Vec<Dispatch>> {
        self.matvec_rows(w, x, 0, m, y.into(), 0, false)
    }

    /// [`Kernels::matvec_batched`] adding to `y` instead of overwriting it: `y[t] += w x[t]`
    /// (a residual add fused into the projection; the sum is the one the add kernel
    /// computes, so results are bit-identical to matvec then add).
    pub fn matvec_add(
        &self,
        w: &Tensor,
        x: &Tensor,
        m: usize,
        y: &Tensor,
    ) -> Result<Vec<Dispatch>> {
        self.matvec_rows(w, x, 0, m, Out::One(y), 0, true)
    }

    /// Whether [`Kernels::linear`] runs matvec (rather than the tiled matmul) for `m` rows
    /// of `w`.
    ///
    /// On the GPU layout (coalesced) up to [`COALESCED_LINEAR_ROWS`] rows: a verification
    /// step of a few rows is latency-bound, and the coalesced matvec's m x n / 4 workgroups
    /// (each matrix read again from cache per row) keep the chip busy where the tiled
    /// matmul's few tiles leave it idle. On an H200, with matmul, prompt lookup's 2-9 row
    /// steps cost ~7 one-row steps each and speculation ran at 0.55-0.88x plain decode.
    ///
    /// On CPU adapters at every row count, whatever the dtype: quantized weights always ran
    /// matvec there, and since the grouped weight layout (`Device::weight_group`) the float
    /// weights' token tiles beat the tiled matmul at prefill sizes too (f16 SmolLM2-135M
    /// prefill on lavapipe: 32.4 -> 56.3 tok/s at 128 tokens, 29.7 -> 48.2 at 512).
    pub fn linear_uses_matvec(&self, m: usize, _w: &Tensor) -> bool {
        if self.coalesced {
            return m <= COALESCED_LINEAR_ROWS;
        }
        m == 1 || self.dev.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether the fused [`Kernels::matvec_glu`] is the faster way to run `m` tokens of
    /// `dtype` gate and up weights through matvec: always where matvec is coalesced (GPUs:
    /// one dispatch instead of three, and dispatches dominate there); in the CPU layout when
    /// matvec would run them one token per invocation anyway (where token tiles are faster,
    /// two tiled matvecs and the activation kernel are used instead).
    pub fn glu_fused_faster(&self, dtype: DType, m: usize) -> bool {
        self.coalesced || self.matvec_plan(dtype, m) == [(1, 0, m)]
    }

    /// An MLP's gated activation in one pass over `m` tokens of `x` (`(m, k)`):
    /// `out[t] = act(wg x[t]) * (wu x[t])` (`(m, n)`), for `wg`, `wu` `(n, k)` of the same
    /// dtype. The gate and up values are bit-identical to [`Kernels::matvec_batched`]'s and
    /// the activation is the swiglu / gelu kernel's expression.
    pub fn matvec_glu(
        &self,
        wg: &Tensor,
        wu: &Tensor,
        x: &Tensor,
        m: usize,
        out: &Tensor,
        act: Glu,
    ) -> Result<Vec<Dispatch>> {
        let dt = weight_dtype("matvec_glu", wg)?;
        let (n, k) = (wg.rows(), wg.cols());
        same_layout("matvec_glu", wg, wu)?;
        if self.coalesced && self.coalesced_fits(wg) {
            return self.matvec_glu_coalesced(wg, wu, x, m, out, act, None);
        }
        need_f32("matvec_glu", x, m * k)?;
        need_f32("matvec_glu", out, m * n)?;
        if m == 0 || m > 65535 {
            return Err(KernelError::Shape {
                kernel: "matvec_glu",
                reason: format!("{m} tokens (1..=65535)"),
            });
        }
        wg.parts
            .iter()
            .zip(&wu.parts)
            .map(|(pg, pu)| {
                let params = MatvecParams {
                    n: u32s(pg.rows),
                    k: u32s(k),
                    x_off: 0,
                    y_off: u32s(pg.row_start),
                    soff: u32s(pg.scale_offset),
                    m: u32s(m),
                    y_ld: u32s(n),
                    flag: glu_flag(act),
                    ..Zeroable::zeroed()
                };
                let threads = pg.rows.div_ceil(8);
                self.dispatch(
                    "matvec_glu",
                    Some(dt),
                    &params,
                    &[&pg.buffer, x.buffer(), out.buffer(), x.buffer(), &pu.buffer],
                    [
                        u32s(threads.div_ceil(self.matvec_wg() as usize)),
                        u32s(m),
                        1,
                    ],
                )
            })
            .collect()
    }

    /// The matvec as [`Kernels::matvec_batched`] computes it (`acc`: added to `y`), always
    /// with the GPU layout `matvec_coalesced` (which matvec picks by itself on GPUs; see
    /// [`Kernels::matvec_coalesced_default`]). Batch invariant like the other layout.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_coalesced(
        &self,
        w: &Tensor,
        x: &Tensor,
        x_off: usize,
        m: usize,
        y: &Tensor,
        y_off: usize,
        acc: bool,
    ) -> Result<Vec<Dispatch>> {
        let flag = u32::from(acc);
        self.coalesced(
            "matvec_coalesced",
            w,
            None,
            x,
            x_off,
            m,
            Out::One(y),
            y_off,
            flag,
            None,
        )
    }

    /// `y[t] = w xn[t]` over `m` tokens of `x` (`(m, k)`), `xn` = `norm` applied to `x`
    /// (the RMSNorm computed inside the matvec instead of by a [`Kernels::rms_norm`]
    /// dispatch before it): the GPU layout `matvec_coalesced`, with the bits of rms_norm
    /// then [`Kernels::matvec_coalesced`]. Batch invariant.
    pub fn matvec_coalesced_norm<'a>(
        &self,
        w: &Tensor,
        x: &Tensor,
        m: usize,
        y: impl Into<Out<'a>>,
        norm: Norm<'_>,
    ) -> Result<Vec<Dispatch>> {
        let kernel = "matvec_coalesced";
        self.coalesced(kernel, w, None, x, 0, m, y.into(), 0, 0, Some(norm))
    }

    /// [`Kernels::matvec_glu`] with the GPU layout `matvec_glu_coalesced` (which matvec_glu
    /// picks by itself where matvec is coalesced), optionally over `norm` applied to `x`
    /// (see [`Kernels::matvec_coalesced_norm`]). The gate and up values are
    /// [`Kernels::matvec_coalesced`]'s bits; batch invariant.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_glu_coalesced(
        &self,
        wg: &Tensor,
        wu: &Tensor,
        x: &Tensor,
        m: usize,
        out: &Tensor,
        act: Glu,
        norm: Option<Norm<'_>>,
    ) -> Result<Vec<Dispatch>> {
        let kernel = "matvec_glu_coalesced";
        same_layout(kernel, wg, wu)?;
        self.coalesced(
            kernel,
            wg,
            Some(wu),
            x,
            0,
            m,
            Out::One(out),
            0,
            glu_flag(act),
            norm,
        )
    }

    /// Whether every part of `w` fits the coalesced kernels' grid (ceil(rows / 4) <= 65535).
    fn coalesced_fits(&self, w: &Tensor) -> bool {
        w.parts.iter().all(|pt| pt.rows.div_ceil(4) <= 65535)
    }

    /// Whether matvec over `w` runs the coalesced layout, which can take an RMSNorm of its
    /// input ([`Kernels::matvec_coalesced_norm`], [`Kernels::matvec_glu_coalesced`]): on
    /// GPUs (see [`Kernels::matvec_coalesced_default`]).
    pub fn fuses_norm(&self, w: &Tensor) -> bool {
        self.coalesced && self.coalesced_fits(w)
    }

    /// The coalesced kernels' dispatches: `kernel` over weight `w` (and `wu`, the glu's up
    /// weight, in the same layout), one per part.
    #[allow(clippy::too_many_arguments)]
    fn coalesced(
        &self,
        kernel: &'static str,
        w: &Tensor,
        wu: Option<&Tensor>,
        x: &Tensor,
        x_off: usize,
        m: usize,
        out: Out<'_>,
        y_off: usize,
        flag: u32,
        norm: Option<Norm<'_>>,
    ) -> Result<Vec<Dispatch>> {
        let dt = weight_dtype(kernel, w)?;
        let (n, k) = (w.rows(), w.cols());
        need_f32(kernel, x, x_off + m * k)?;
        // The glu kernel has no split output (its y is never split).
        let of = out.fields(kernel, m, n, y_off, flag != 0 && wu.is_none())?;
        let y = out.first();
        let rest = out.rest(&self.spare);
        if let Some(nm) = norm {
            need_f32(kernel, nm.weight, k)?;
        }
        if m == 0 || m > 65535 || !self.coalesced_fits(w) {
            return Err(KernelError::Shape {
                kernel,
                reason: format!("{m} tokens (1..=65535) of {n} rows (at most 262140 per part)"),
            });
        }
        w.parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let params = MatvecParams {
                    n: u32s(part.rows),
                    k: u32s(k),
                    x_off: u32s(x_off),
                    y_off: u32s(y_off + part.row_start),
                    soff: u32s(part.scale_offset),
                    m: u32s(m),
                    y_ld: of.y_ld,
                    flag,
                    norm: u32::from(norm.is_some()),
                    eps: norm.map_or(0.0, |nm| nm.eps),
                    w_offset: norm.map_or(0.0, |nm| nm.offset),
                    row0: u32s(part.row_start),
                    seg1: of.seg1,
                    seg2: of.seg2,
                    n_all: of.n_all,
                    t0: 0,
                    _pad: [0; 3],
                };
                // Without a norm, x stands in for the norm weight (never read).
                let nw = norm.map_or(x.buffer(), |nm| nm.weight.buffer());
                let mut buffers = vec![&part.buffer, x.buffer(), y.buffer(), x.buffer(), nw];
                match wu {
                    Some(wu) => buffers.push(&wu.parts[i].buffer),
                    None => buffers.extend(rest),
                }
                self.dispatch(
                    kernel,
                    Some(dt),
                    &params,
                    &buffers,
                    [u32s(part.rows.div_ceil(4)), u32s(m), 1],
                )
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn matvec_rows(
        &self,
        w: &Tensor,
        x: &Tensor,
        x_off: usize,
        m: usize,
        out: Out<'_>,
        y_off: usize,
        acc: bool,
    ) -> Result<Vec<Dispatch>> {
        let dt = weight_dtype("matvec", w)?;
        let (n, k) = (w.rows(), w.cols());
        need_f32("matvec", x, x_off + m * k)?;
        let of = out.fields("matvec", m, n, y_off, acc)?;
        let (y, rest) = (out.first(), out.rest(&self.spare));
        if m == 0 || m > 65535 {
            return Err(KernelError::Shape {
                kernel: "matvec",
                reason: format!("{m} tokens (1..=65535)"),
            });
        }
        if self.coalesced && self.coalesced_fits(w) {
            let flag = u32::from(acc);
            let kernel = "matvec_coalesced";
            return self.coalesced(kernel, w, None, x, x_off, m, out, y_off, flag, None);
        }
        self.matvec_plan(dt, m)
            .into_iter()
            .flat_map(|(tok, t0, count)| {
                w.parts.iter().map(move |part| {
                    let params = MatvecParams {
                        n: u32s(part.rows),
                        k: u32s(k),
                        x_off: u32s(x_off + t0 * k),
                        y_off: u32s(y_off + t0 * of.y_ld as usize + part.row_start),
                        soff: u32s(part.scale_offset),
                        m: u32s(count),
                        y_ld: of.y_ld,
                        flag: u32::from(acc),
                        row0: u32s(part.row_start),
                        seg1: of.seg1,
                        seg2: of.seg2,
                        n_all: of.n_all,
                        t0: u32s(t0),
                        ..Zeroable::zeroed()
                    };
                    let threads = part.rows.div_ceil(8);
                    self.dispatch_tok(
                        "matvec",
                        Some(dt),
                        tok,
                        &params,
                        &[
                            &part.buffer,
                            x.buffer(),
                            y.buffer(),
                            x.buffer(),
                            rest[0],
                            rest[1],
                        ],
                        [
                            u32s(threads.div_ceil(self.matvec_wg() as usize)),
                            u32s(count.div_ceil(tok as usize)),
                            1,
                        ],
                    )
                })
            })
            .collect()
    }

    /// matvec's dispatches for `m` tokens of a `dtype` weight: `(tokens per invocation,
    /// first token, tokens)`. Tiles of [`Kernels::matvec_tokens`] tokens only where they
    /// measured faster on lavapipe than one token per invocation: float weights (their
    /// 16-byte unit load dominates) from 2 tokens on, the remainder in one tile of its own
    /// size (2 or 3; no padded tile); Q8_0 from 4 tokens on, the remainder one token per
    /// invocation; Q4_0/Q4_1 where x is shared over subgroups
    /// ([`Kernels::matvec_x_broadcast`]) as the floats, otherwise never (each token's 8
    /// loads of x per unit then dominate: tiles measured no faster, while with x shared
    /// SmolLM2-135M Q4_1 prefill ran ~1.85x faster with them). m = 1 is always the
    /// single-token pipeline. Every plan gives the same bits (see `matvec.wgsl`), so this
    /// is purely a speed choice.
    fn matvec_plan(&self, dtype: DType, m: usize) -> Vec<(u32, usize, usize)> {
        let tile = self.matvec_tokens() as usize;
        let (min, rem_tiles) = match dtype {
            DType::F32 | DType::F16 | DType::BF16 => (2, true),
            DType::Q8_0 => (tile, false),
            DType::Q4_0 | DType::Q4_1 if self.matvec_x_broadcast() => (2, true),
            _ => return vec![(1, 0, m)],
        };
        if m < min {
            return vec![(1, 0, m)];
        }
        let full = m / tile * tile;
        let rem = m - full;
        let mut plan = Vec::new();
        if full > 0 {
            plan.push((tile as u32, 0, full));
        }
        if rem > 0 {
            let tok = if rem_tiles && rem >= 2 { rem } else { 1 };
            plan.push((tok as u32, full, rem));
        }
        plan
    }

    /// `y = x w^T`: `x` is `(m, k)`, `w` is `(n, k)` in any weight dtype, `y` is `(m, n)`
    /// (or split by rows, [`Out::Split`]).
    pub fn matmul<'a>(
        &self,
        x: &Tensor,
        m: usize,
        w: &Tensor,
        y: impl Into<Out<'a>>,
    ) -> Result<Vec<Dispatch>> {
        let dt = weight_dtype("matmul", w)?;
        let (n, k) = (w.rows(), w.cols());
        need_f32("matmul", x, m * k)?;
        let out = y.into();
        let of = out.fields("matmul", m, n, 0, false)?;
        let (y, rest) = (out.first(), out.rest(&self.spare));
        if m.div_ceil(64) > 65535 || n.div_ceil(64) > 65535 {
            return Err(KernelError::Shape {
                kernel: "matmul",
                reason: format!("grid for m={m}, n={n} is too large"),
            });
        }
        w.parts
            .iter()
            .map(|part| {
                let params = MatmulParams {
                    m: u32s(m),
                    n: u32s(part.rows),
                    k: u32s(k),
                    y_ld: of.y_ld,
                    row0: u32s(part.row_start),
                    soff: u32s(part.scale_offset),
                    seg1: of.seg1,
                    seg2: of.seg2,
                    n_all: of.n_all,
                    t0: 0,
                    _pad: [0; 2],
                };
                self.dispatch(
                    "matmul",
                    Some(dt),
                    &params,
                    &[&part.buffer, x.buffer(), y.buffer(), rest[0], rest[1]],
                    [u32s(part.rows.div_ceil(64)), u32s(m.div_ceil(64)), 1],
                )
            })
            .collect()
    }

    /// The linear layer for `m` rows of `x`: matvec for one row; for more, the tiled matmul,
    /// except where [`Kernels::linear_uses_matvec`] says matvec over the tokens is faster:
    /// on CPU adapters always (measured on lavapipe, 128 x 1536 x 576: 1.9x for Q4_1, 1.5x
    /// for Q8_0, and since the grouped weight layout the float weights too; the tiled
    /// kernel computes whole 64-row tiles however few rows there are), on GPUs for
    /// verification-sized steps.
    /// `y` may be split by rows ([`Out::Split`]: a fused q/k/v projection in one dispatch).
    pub fn linear<'a>(
        &self,
        x: &Tensor,
        m: usize,
        w: &Tensor,
        y: impl Into<Out<'a>>,
    ) -> Result<Vec<Dispatch>> {
        let y = y.into();
        if m == 1 || self.linear_uses_matvec(m, w) {
            self.matvec_batched(w, x, m, y)
        } else {
            self.matmul(x, m, w, y)
        }
    }

    /// `out[t] = table[ids[t]]` for `n_tokens` ids; `table` is `(vocab, k)` in any dtype.
    pub fn embedding(
        &self,
        table: &Tensor,
        ids: &Tensor,
        n_tokens: usize,
        out: &Tensor,
    ) -> Result<Vec<Dispatch>> {
        let dt = weight_dtype("embedding", table)?;
        let k = table.cols();
        if ids.dtype != DType::U32 {
            return Err(KernelError::DType {
                kernel: "embedding",
                tensor: ids.name.clone(),
                dtype: ids.dtype,
            });
        }
        need_len("embedding", ids, n_tokens)?;
        need_f32("embedding", out, n_tokens * k)?;
        table
            .parts
            .iter()
            .map(|part| {
                let params = EmbeddingParams {
                    k: u32s(k),
                    row_start: u32s(part.row_start),
                    rows: u32s(part.rows),
                    n_tokens: u32s(n_tokens),
                    soff: u32s(part.scale_offset),
                    _pad: [0; 3],
                };
                self.dispatch(
                    "embedding",
                    Some(dt),
                    &params,
                    &[&part.buffer, ids.buffer(), out.buffer()],
                    [
                        u32s(infer_tensor::tensor::weight_units_per_row(dt, k).div_ceil(64)),
                        u32s(n_tokens),
                        1,
                    ],
                )
            })
            .collect()
    }

    /// RMSNorm over `rows` rows of `d`: `y = x / rms(x) * (w_offset + w)`.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        rows: usize,
        d: usize,
        eps: f32,
        w_offset: f32,
    ) -> Result<Vec<Dispatch>> {
        need_f32("rms_norm", x, rows * d)?;
        need_f32("rms_norm", w, d)?;
        need_f32("rms_norm", y, rows * d)?;
        let params = NormParams {
            d: u32s(d),
            eps,
            w_offset,
            _pad: 0,
        };
        Ok(vec![self.dispatch(
            "rms_norm",
            None,
            &params,
            &[x.buffer(), w.buffer(), y.buffer()],
            [u32s(rows), 1, 1],
        )?])
    }

    /// LayerNorm over `rows` rows of `d`, with weight and bias.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<Vec<Dispatch>> {
        need_f32("layer_norm", x, rows * d)?;
        need_f32("layer_norm", w, d)?;
        need_f32("layer_norm", b, d)?;
        need_f32("layer_norm", y, rows * d)?;
        let params = NormParams {
            d: u32s(d),
            eps,
            w_offset: 0.0,
            _pad: 0,
        };
        Ok(vec![self.dispatch(
            "layer_norm",
            None,
            &params,
            &[x.buffer(), w.buffer(), b.buffer(), y.buffer()],
            [u32s(rows), 1, 1],
        )?])
    }

    /// Softmax over each of `rows` rows of `n`.
    pub fn softmax(&self, x: &Tensor, y: &Tensor, rows: usize, n: usize) -> Result<Vec<Dispatch>> {
        need_f32("softmax", x, rows * n)?;
        need_f32("softmax", y, rows * n)?;
        let params = N4 {
            n: u32s(n),
            a: 0,
            b: 0,
            c: 0,
        };
        Ok(vec![self.dispatch(
            "softmax",
            None,
            &params,
            &[x.buffer(), y.buffer()],
            [u32s(rows), 1, 1],
        )?])
    }

    /// `out = silu(gate) * up` over `n` elements.
    pub fn swiglu(
        &self,
        gate: &Tensor,
        up: &Tensor,
        out: &Tensor,
        n: usize,
    ) -> Result<Vec<Dispatch>> {
        for t in [gate, up, out] {
            need_f32("swiglu", t, n)?;
        }
        let params = N4 {
            n: u32s(n),
            a: 0,
            b: 0,
            c: 0,
        };
        Ok(vec![self.dispatch(
            "swiglu",
            None,
            &params,
            &[gate.buffer(), up.buffer(), out.buffer()],
            grid1(u32s(n.div_ceil(256))),
        )?])
    }

    /// `y = gelu(x)` over `n` elements.
    pub fn gelu(&self, x: &Tensor, y: &Tensor, n: usize, mode: GeluMode) -> Result<Vec<Dispatch>> {
        need_f32("gelu", x, n)?;
        need_f32("gelu", y, n)?;
        let params = N4 {
            n: u32s(n),
            a: match mode {
                GeluMode::Tanh => 0,
                GeluMode::Erf => 1,
            },
            b: 0,
            c: 0,
        };
        Ok(vec![self.dispatch(
            "gelu",
            None,
            &params,
            &[x.buffer(), y.buffer()],
            grid1(u32s(n.div_ceil(256))),
        )?])
    }

    fn binary(
        &self,
        kernel: &'static str,
        a: &Tensor,
        b: &Tensor,
        n: usize,
        b_len: usize,
    ) -> Result<Vec<Dispatch>> {
        need_f32(kernel, a, n)?;
        need_f32(kernel, b, b_len)?;
        if b_len == 0 || !n.is_multiple_of(b_len) {
            return Err(KernelError::Shape {
                kernel,
                reason: format!("b_len {b_len} does not divide n {n}"),
            });
        }
        let params = N4 {
            n: u32s(n),
            a: u32s(b_len),
            b: 0,
            c: 0,
        };
        Ok(vec![self.dispatch(
            kernel,
            None,
            &params,
            &[a.buffer(), b.buffer()],
            grid1(u32s(n.div_ceil(256))),
        )?])
    }

    /// In place: `a[i] += b[i % b_len]` over `n` elements.
    pub fn add(&self, a: &Tensor, b: &Tensor, n: usize, b_len: usize) -> Result<Vec<Dispatch>> {
        self.binary("add", a, b, n, b_len)
    }

    /// In place: `a[i] *= b[i % b_len]` over `n` elements.
    pub fn mul(&self, a: &Tensor, b: &Tensor, n: usize, b_len: usize) -> Result<Vec<Dispatch>> {
        self.binary("mul", a, b, n, b_len)
    }

    /// In place on `x` (`(n_tokens, n_heads, head_dim)`): rotary embedding with the
    /// `(positions, half)` table of (cos, sin) pairs `cs`; token t at position `pos[0] + t`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        x: &Tensor,
        cs: &Tensor,
        pos: &Tensor,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        mode: RopeMode,
    ) -> Result<Vec<Dispatch>> {
        need_f32("rope", x, n_tokens * n_heads * head_dim)?;
        need_f32("rope", cs, 2)?;
        let half = cs.cols() / 2;
        if half == 0 || 2 * half > head_dim || !cs.cols().is_multiple_of(2) {
            return Err(KernelError::Shape {
                kernel: "rope",
                reason: format!("table {:?} does not fit head_dim {head_dim}", cs.shape),
            });
        }
        need_len("rope", pos, 1)?;
        let params = RopeParams {
            n_heads: u32s(n_heads),
            head_dim: u32s(head_dim),
            half: u32s(half),
            mode: match mode {
                RopeMode::RotateHalf => 0,
                RopeMode::Interleaved => 1,
            },
            n_tokens: u32s(n_tokens),
            max_pos: u32s(cs.rows()),
            _pad: [0; 2],
        };
        Ok(vec![self.dispatch(
            "rope",
            None,
            &params,
            &[pos.buffer(), cs.buffer(), x.buffer()],
            [u32s((n_heads * half).div_ceil(64)), u32s(n_tokens), 1],
        )?])
    }

    /// Writes `k`, `v` (`(n_tokens, n_kv, head_dim)`) into the caches
    /// (`(n_kv, capacity, head_dim)`) at position `pos[0]`.
    #[allow(clippy::too_many_arguments)]
    pub fn kv_write(
        &self,
        k: &Tensor,
        v: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        pos: &Tensor,
        n_tokens: usize,
        n_kv: usize,
        head_dim: usize,
        capacity: usize,
    ) -> Result<Vec<Dispatch>> {
        need_f32("kv_write", k, n_tokens * n_kv * head_dim)?;
        need_f32("kv_write", v, n_tokens * n_kv * head_dim)?;
        need_f32("kv_write", k_cache, n_kv * capacity * head_dim)?;
        need_f32("kv_write", v_cache, n_kv * capacity * head_dim)?;
        need_len("kv_write", pos, 1)?;
        let params = KvWriteParams {
            n_kv: u32s(n_kv),
            head_dim: u32s(head_dim),
            capacity: u32s(capacity),
            n_tokens: u32s(n_tokens),
        };
        Ok(vec![self.dispatch(
            "kv_write",
            None,
            &params,
            &[
                pos.buffer(),
                k.buffer(),
                v.buffer(),
                k_cache.buffer(),
                v_cache.buffer(),
            ],
            [u32s((n_kv * head_dim).div_ceil(64)), u32s(n_tokens), 1],
        )?])
    }

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
        match self.attention_kernel(a) {
            AttentionKernel::Lane => self.attention_lane(q, k_cache, v_cache, out, pos, a),
            AttentionKernel::Tiled => self.attention_tiled(q, k_cache, v_cache, out, pos, a),
            AttentionKernel::Split => {
                let chunk = self.attention_split_chunk(a.capacity);
                self.attention_split(q, k_cache, v_cache, out, pos, a, chunk)
            }
            AttentionKernel::SplitHeads => {
                let chunk = self.attention_split_chunk(a.capacity);
                self.attention_split_heads(q, k_cache, v_cache, out, pos, a, chunk)
            }
            AttentionKernel::SplitSg => {
                // Steps of many tokens (prefill) have workgroups enough without a split:
                // one chunk, which writes the output directly.
                let chunk = if a.n_tokens > Self::SPLIT_MAX_TOKENS {
                    a.capacity
                } else {
                    self.attention_split_chunk(a.capacity)
                };
                self.attention_split_sg(q, k_cache, v_cache, out, pos, a, chunk)
            }
        }
    }

    /// The variant [`Kernels::attention`] runs for `a`:
    /// - steps of at most [`Kernels::SPLIT_MAX_TOKENS`] tokens (decode, speculative
    ///   verification) on GPUs whose cache holds more than one chunk: split over the KV
    ///   length (one workgroup per head would leave most of a GPU idle at long contexts),
    ///   phase 1 by attention_split_heads where head_dim % 4 == 0 and <= 256 (the query
    ///   heads of a KV head in one workgroup, head_dim a constant so the row loops are
    ///   unrolled; attention_split's invocations walk 64 positions one load at a time,
    ///   ~70 us per layer on an H200 whatever the context), else attention_split;
    ///   other steps on GPUs: tiled;
    /// - on CPU adapters, every step: attention_split_sg where the adapter has subgroups
    ///   and head_dim % 4 == 0, split over the KV length for the short steps and as one
    ///   chunk (no split, no merge) for longer ones (lavapipe, SmolLM2's 9 heads over 3 KV
    ///   heads x 64, one token: 0.23 / 0.89 ms against lane's 0.59 / 4.2 ms at 512 / 4096
    ///   positions, `cargo xtask bench` at 159d66f; prefill of a 1540-token prompt 1.7x
    ///   faster than with lane, whose invocations keep all of head_dim and each load K
    ///   and V);
    ///   else lane (head_dim % 4 == 0), else tiled.
    ///
    /// `INFER_ATTENTION=split|split_heads|split_sg|lane|tiled` overrides it (for tests and
    /// measurements) where the variant can run: split and split_heads only for steps of at
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
        if self.dev.info.device_type == wgpu::DeviceType::Cpu {
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

    /// Positions per chunk of the split kernels for a cache of `capacity`. On GPUs 128 (a
    /// 4096-long context is 32 workgroups per head), 256 past 16384 positions so the merge
    /// stays short; not yet measured on a GPU. On CPU adapters 256 (on lavapipe 32-128 were
    /// slower: more workgroups and partials for the same work).
    pub fn attention_split_chunk(&self, capacity: usize) -> usize {
        if self.dev.info.device_type == wgpu::DeviceType::Cpu || capacity > 16384 {
            256
        } else {
            128
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
    #[allow(clippy::too_many_arguments)]
    pub fn attention_split(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        a: &AttentionParams,
        chunk: usize,
    ) -> Result<Vec<Dispatch>> {
        self.split(q, k_cache, v_cache, out, pos, a, chunk, Phase1::Plain)
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
    #[allow(clippy::too_many_arguments)]
    pub fn attention_split_heads(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        a: &AttentionParams,
        chunk: usize,
    ) -> Result<Vec<Dispatch>> {
        let heads = Self::attention_split_heads_group(a);
        self.attention_split_heads_grouped(q, k_cache, v_cache, out, pos, a, chunk, heads)
    }

    /// [`Kernels::attention_split_heads`] with `heads` query heads per workgroup (1..=8, a
    /// divisor of n_heads / n_kv); every choice gives the same values up to rounding (the
    /// same bits on CPU adapters; a GPU compiler may contract each variant's multiply-adds
    /// its own way) (for tests and measurements).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_split_heads_grouped(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        a: &AttentionParams,
        chunk: usize,
        heads: usize,
    ) -> Result<Vec<Dispatch>> {
        check_head_group("attention_split_heads", a.n_heads, a.n_kv, heads)?;
        if !Self::attention_split_heads_fits(a) {
            return Err(KernelError::Shape {
                kernel: "attention_split_heads",
                reason: format!("head_dim {} must be a multiple of 4 up to 256", a.head_dim),
            });
        }
        self.split(
            q,
            k_cache,
            v_cache,
            out,
            pos,
            a,
            chunk,
            Phase1::Heads { heads },
        )
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
    #[allow(clippy::too_many_arguments)]
    pub fn attention_split_sg(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
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
        self.split(
            q,
            k_cache,
            v_cache,
            out,
            pos,
            a,
            chunk,
            Phase1::Sg { heads: g, tokens },
        )
    }

    /// Query heads one workgroup of [`Kernels::attention_split_sg`] serves: the largest
    /// divisor of the heads per KV head (n_heads / n_kv) up to 8 and up to 16 / E, where E
    /// = ceil(head_dim / 32) is the vec4 units of a head each invocation holds (a bound on
    /// the q and accumulator values it keeps; E = 2 at head_dim 64, so up to 8 heads). The
    /// heads share one KV head, whose K and V rows the workgroup then loads once for all of
    /// them (SmolLM2-135M, 9 heads over 3 KV heads: 3, a third of the loads). Only G = 1
    /// and 3 at head_dim 64 were measured (lavapipe); the bounds are a guess.
    pub fn attention_split_sg_heads(a: &AttentionParams) -> usize {
        head_group(
            a.n_heads,
            a.n_kv,
            8.min(16 / a.head_dim.div_ceil(32).max(1)),
        )
    }

    /// Tokens per workgroup of [`Kernels::attention_split_sg`] over one chunk (prefill on
    /// CPU adapters): they share each K and V row load. On lavapipe (SmolLM2, a 1540-token
    /// prompt) 4 took ~0.65x the attention time of 1 and 8 ~2x (the state of 8 tokens x 3
    /// heads no longer fits in registers).
    pub const SPLIT_SG_TOKENS: usize = 4;

    /// [`Kernels::attention_split_sg`] with `heads` query heads per workgroup (1..=8, a
    /// divisor of n_heads / n_kv) and `tokens` tokens per workgroup (1..=8; more than 1 only
    /// over one chunk, chunk >= capacity); every choice gives the same values (for tests
    /// and measurements).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_split_sg_grouped(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        a: &AttentionParams,
        chunk: usize,
        heads: usize,
        tokens: usize,
    ) -> Result<Vec<Dispatch>> {
        check_head_group("attention_split_sg", a.n_heads, a.n_kv, heads)?;
        if !(1..=8).contains(&tokens) || (tokens > 1 && a.capacity > chunk) {
            return Err(KernelError::Shape {
                kernel: "attention_split_sg",
                reason: format!(
                    "{tokens} tokens per workgroup: needs 1..=8, and 1 unless one chunk \
                     (chunk {chunk} >= capacity {})",
                    a.capacity
                ),
            });
        }
        self.split_sg_check(a)?;
        self.split(
            q,
            k_cache,
            v_cache,
            out,
            pos,
            a,
            chunk,
            Phase1::Sg { heads, tokens },
        )
    }

    /// What attention_split_sg needs of the adapter and the shape.
    fn split_sg_check(&self, a: &AttentionParams) -> Result<()> {
        if !self.attention_split_sg_supported() || !a.head_dim.is_multiple_of(4) {
            return Err(KernelError::Shape {
                kernel: "attention_split_sg",
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
    #[allow(clippy::too_many_arguments)]
    fn split(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        a: &AttentionParams,
        chunk: usize,
        phase1: Phase1,
    ) -> Result<Vec<Dispatch>> {
        let base = self.attention_params(q, k_cache, v_cache, out, pos, a)?;
        if chunk == 0 {
            return Err(KernelError::Shape {
                kernel: "attention_split",
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
            _pad: [0; 2],
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
                let tok = sg_attention_variant(heads, a.head_dim, tokens);
                let grid = [
                    u32s(n_chunks),
                    u32s(a.n_heads / heads),
                    u32s(a.n_tokens.div_ceil(tokens)),
                ];
                self.dispatch_tok("attention_split_sg", None, tok, &params, &bind[..5], grid)?
            }
            Phase1::Heads { heads } => {
                let tok = heads_variant(heads, a.head_dim);
                let grid = [u32s(n_chunks), u32s(a.n_heads / heads), u32s(a.n_tokens)];
                self.dispatch_tok(
                    "attention_split_heads",
                    None,
                    tok,
                    &params,
                    &bind[..5],
                    grid,
                )?
            }
            Phase1::Plain => {
                let grid = [u32s(n_chunks), u32s(a.n_heads), u32s(a.n_tokens)];
                self.dispatch("attention_split", None, &params, &bind, grid)?
            }
        };
        let Some(scratch) = scratch else {
            return Ok(vec![phase1]);
        };
        Ok(vec![
            phase1,
            self.dispatch(
                "attention_split_merge",
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
        let mut params = self.attention_params(q, k_cache, v_cache, out, pos, a)?;
        // Few tokens (decode): lanes over (token, head) pairs; else over tokens of one head.
        let heads_in_lanes = a.n_tokens < 8;
        params.heads_in_lanes = heads_in_lanes as u32;
        if !a.head_dim.is_multiple_of(4) {
            return Err(KernelError::Shape {
                kernel: "attention_lane",
                reason: format!("head_dim {} is not a multiple of 4", a.head_dim),
            });
        }
        Ok(vec![self.dispatch(
            "attention_lane",
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
        let params = self.attention_params(q, k_cache, v_cache, out, pos, a)?;
        Ok(vec![self.dispatch(
            "attention",
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

    fn attention_params(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        a: &AttentionParams,
    ) -> Result<AttentionGpu> {
        let n = a.n_tokens * a.n_heads * a.head_dim;
        need_f32("attention", q, n)?;
        need_f32("attention", out, n)?;
        need_f32("attention", k_cache, a.n_kv * a.capacity * a.head_dim)?;
        need_f32("attention", v_cache, a.n_kv * a.capacity * a.head_dim)?;
        need_len("attention", pos, 1)?;
        if a.head_dim > 256 || a.n_kv == 0 || !a.n_heads.is_multiple_of(a.n_kv) {
            return Err(KernelError::Shape {
                kernel: "attention",
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
            heads_in_lanes: 0,
            _pad: [0; 3],
        };
        Ok(params)
    }

    /// `out[out_idx] = argmax(x[x_off .. x_off + n])` (u32 `out`).
    pub fn argmax(
        &self,
        x: &Tensor,
        x_off: usize,
        n: usize,
        out: &Tensor,
        out_idx: usize,
    ) -> Result<Vec<Dispatch>> {
        need_f32("argmax", x, x_off + n)?;
        if out.dtype != DType::U32 {
            return Err(KernelError::DType {
                kernel: "argmax",
                tensor: out.name.clone(),
                dtype: out.dtype,
            });
        }
        need_len("argmax", out, out_idx + 1)?;
        let params = N4 {
            n: u32s(n),
            a: u32s(x_off),
            b: u32s(out_idx),
            c: 0,
        };
        Ok(vec![self.dispatch(
            "argmax",
            None,
            &params,
            &[x.buffer(), out.buffer()],
            [1, 1, 1],
        )?])
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TopkParams {
    n: u32,
    off: u32,
    k: u32,
    threads: u32,
    stage: u32,
    m: u32,
    sample: u32,
    _pad: u32,
}

impl Kernels {
    /// Largest k [`Kernels::topk`] takes.
    pub const TOPK_MAX: usize = 256;

    /// Items one stage-0 invocation of `topk` scans: at least k (so the scratch stays
    /// within 2n + 128k words); on CPU adapters 1024 (few workgroups: each costs two
    /// barriers and 64 lists to merge; 49152 items took 0.3 ms at 128-1024 items for
    /// k = 40 on lavapipe, and 1024 was best for k = 256), on GPUs 16 (parallelism).
    fn topk_items(k: usize, cpu: bool) -> usize {
        k.max(if cpu { 1024 } else { 16 })
    }

    /// Stage-0 invocations of `topk` over `n` items, a multiple of the workgroup size 64.
    fn topk_threads(n: usize, items: usize) -> usize {
        64 * n.div_ceil(64 * items).max(1)
    }

    /// u32 elements of the scratch tensor [`Kernels::topk`] needs for `n` items and `k`
    /// (on any adapter).
    pub fn topk_scratch_len(n: usize, k: usize) -> usize {
        let threads = Self::topk_threads(n, Self::topk_items(k, false));
        2 * k * (threads + 72)
    }

    /// The `k` largest of `x[x_off .. x_off + n]`, best first (larger value in
    /// `f32::total_cmp` order, then lower index; NaN never chosen), as pairs
    /// `out[2r] = value bits`, `out[2r + 1] = index` (index `u32::MAX` and value `-f32::MAX`
    /// where fewer than `k` exist). Per-invocation sorted lists of the candidates into
    /// `scratch` (u32, [`Kernels::topk_scratch_len`]), then their merge: one dispatch when
    /// one workgroup covers `n` (vocabularies up to 65536 on CPU adapters), else two.
    pub fn topk(
        &self,
        x: &Tensor,
        x_off: usize,
        n: usize,
        k: usize,
        scratch: &Tensor,
        out: &Tensor,
    ) -> Result<Vec<Dispatch>> {
        need_f32("topk", x, x_off + n)?;
        if k == 0 || k > Self::TOPK_MAX || n == 0 {
            return Err(KernelError::Shape {
                kernel: "topk",
                reason: format!(
                    "k = {k} over n = {n}: need 1 <= k <= {}, n >= 1",
                    Self::TOPK_MAX
                ),
            });
        }
        for t in [scratch, out] {
            if t.dtype != DType::U32 {
                return Err(KernelError::DType {
                    kernel: "topk",
                    tensor: t.name.clone(),
                    dtype: t.dtype,
                });
            }
        }
        need_len("topk", scratch, Self::topk_scratch_len(n, k))?;
        need_len("topk", out, 2 * k)?;
        let cpu = self.dev.info.device_type == wgpu::DeviceType::Cpu;
        let items = Self::topk_items(k, cpu);
        let threads = Self::topk_threads(n, items);
        let params = |stage| TopkParams {
            n: u32s(n),
            off: u32s(x_off),
            k: u32s(k),
            threads: u32s(threads),
            stage,
            m: u32s(items),
            // The threshold from a quarter of the items is loose but cheap for k <= 64
            // (~25% less time on lavapipe); k = 256 needs all of them (else ~2x slower).
            sample: u32s(if k <= 64 { items.div_ceil(4) } else { items }),
            _pad: 0,
        };
        let bind = [x.buffer(), scratch.buffer(), out.buffer(), x.buffer()];
        if threads == 64 {
            return Ok(vec![self.dispatch(
                "topk",
                None,
                &params(2),
                &bind,
                [1, 1, 1],
            )?]);
        }
        Ok(vec![
            self.dispatch("topk", None, &params(0), &bind, [u32s(threads / 64), 1, 1])?,
            self.dispatch("topk", None, &params(1), &bind, [1, 1, 1])?,
        ])
    }

    /// Runs `topk` (the dispatches of [`Kernels::topk`]) and reads its `k` pairs back in
    /// one submission, as (index, value) best first without the missing slots: what a
    /// step with [`Kernels::topk`] at its end reads back.
    pub fn topk_read(&self, topk: &[Dispatch], out: &Tensor, k: usize) -> Result<Vec<(u32, f32)>> {
        need_len("topk", out, 2 * k)?;
        let dev = &self.dev;
        let len = (8 * k) as u64;
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let staging = dev.pool.acquire(dev, len, usage);
        dev.scoped("topk_read", || {
            let mut enc = dev.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in topk {
                    d.record(&mut pass);
                }
            }
            enc.copy_buffer_to_buffer(out.buffer(), 0, &staging, 0, len);
            dev.queue.submit([enc.finish()]);
        })?;
        let bytes = infer_tensor::tensor::map_read(dev, &staging, len);
        dev.pool.release(staging);
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes?);
        Ok(words
            .chunks(2)
            .filter(|p| p[1] != u32::MAX)
            .map(|p| (p[1], f32::from_bits(p[0])))
            .collect())
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SoftcapParams {
    n: u32,
    cap: f32,
    _pad: [u32; 2],
}

impl Kernels {
    /// In place: `x[i] = cap * tanh(x[i] / cap)` over `n` elements (`cap > 0`).
    pub fn softcap(&self, x: &Tensor, n: usize, cap: f32) -> Result<Vec<Dispatch>> {
        need_f32("softcap", x, n)?;
        if !(cap > 0.0 && cap.is_finite()) {
            return Err(KernelError::Shape {
                kernel: "softcap",
                reason: format!("cap {cap} must be a positive number"),
            });
        }
        let params = SoftcapParams {
            n: u32s(n),
            cap,
            _pad: [0; 2],
        };
        Ok(vec![self.dispatch(
            "softcap",
            None,
            &params,
            &[x.buffer()],
            grid1(u32s(n.div_ceil(256))),
        )?])
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PagedKvWriteGpu {
    n_kv: u32,
    head_dim: u32,
    block_size: u32,
    n_rows: u32,
    max_blocks: u32,
    n_slots: u32,
    n_seqs: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PagedAttentionGpu {
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
    _pad: u32,
}

fn need_u32(kernel: &'static str, t: &Tensor, n: usize) -> Result<()> {
    if t.dtype != DType::U32 {
        return Err(KernelError::DType {
            kernel,
            tensor: t.name.clone(),
            dtype: t.dtype,
        });
    }
    need_len(kernel, t, n)
}

impl Kernels {
    /// In place on `x` (`(n_rows, n_heads, head_dim)`): [`Kernels::rope`] with row r at
    /// position `pos[r]` (u32, one per row), for rows of several sequences in one step.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_rows(
        &self,
        x: &Tensor,
        cs: &Tensor,
        pos: &Tensor,
        n_rows: usize,
        n_heads: usize,
        head_dim: usize,
        mode: RopeMode,
    ) -> Result<Vec<Dispatch>> {
        need_f32("rope_rows", x, n_rows * n_heads * head_dim)?;
        need_f32("rope_rows", cs, 2)?;
        need_u32("rope_rows", pos, n_rows)?;
        let half = cs.cols() / 2;
        if half == 0 || 2 * half > head_dim || !cs.cols().is_multiple_of(2) || n_rows > 65535 {
            return Err(KernelError::Shape {
                kernel: "rope_rows",
                reason: format!(
                    "table {:?} does not fit head_dim {head_dim}, or {n_rows} rows (max 65535)",
                    cs.shape
                ),
            });
        }
        let params = RopeParams {
            n_heads: u32s(n_heads),
            head_dim: u32s(head_dim),
            half: u32s(half),
            mode: match mode {
                RopeMode::RotateHalf => 0,
                RopeMode::Interleaved => 1,
            },
            n_tokens: u32s(n_rows),
            max_pos: u32s(cs.rows()),
            _pad: [0; 2],
        };
        Ok(vec![self.dispatch(
            "rope_rows",
            None,
            &params,
            &[pos.buffer(), cs.buffer(), x.buffer()],
            [u32s((n_heads * half).div_ceil(64)), u32s(n_rows.max(1)), 1],
        )?])
    }

    fn paged_check(
        &self,
        kernel: &'static str,
        pos: &Tensor,
        seq: &Tensor,
        table: &Tensor,
        caches: [&Tensor; 2],
        a: &PagedParams,
    ) -> Result<()> {
        need_u32(kernel, pos, a.n_rows)?;
        need_u32(kernel, seq, a.n_rows)?;
        need_u32(kernel, table, a.n_seqs * a.max_blocks)?;
        for c in caches {
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

    /// Writes rows of `k`, `v` (`(n_rows, n_kv, head_dim)`) into the paged caches
    /// (`(n_blocks * block_size, n_kv, head_dim)`): row r of sequence `seq[r]` at position
    /// `pos[r]` goes to slot `table[seq[r], pos[r] / block_size] * block_size + pos[r] %
    /// block_size`.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_kv_write(
        &self,
        k: &Tensor,
        v: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        pos: &Tensor,
        seq: &Tensor,
        table: &Tensor,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        self.paged_check("paged_kv_write", pos, seq, table, [k_cache, v_cache], a)?;
        need_f32("paged_kv_write", k, a.n_rows * a.n_kv * a.head_dim)?;
        need_f32("paged_kv_write", v, a.n_rows * a.n_kv * a.head_dim)?;
        let params = PagedKvWriteGpu {
            n_kv: u32s(a.n_kv),
            head_dim: u32s(a.head_dim),
            block_size: u32s(a.block_size),
            n_rows: u32s(a.n_rows),
            max_blocks: u32s(a.max_blocks),
            n_slots: u32s(a.n_blocks * a.block_size),
            n_seqs: u32s(a.n_seqs),
            _pad: 0,
        };
        Ok(vec![self.dispatch(
            "paged_kv_write",
            None,
            &params,
            &[
                pos.buffer(),
                seq.buffer(),
                table.buffer(),
                k.buffer(),
                v.buffer(),
                k_cache.buffer(),
                v_cache.buffer(),
            ],
            [
                u32s((a.n_kv * a.head_dim).div_ceil(64)),
                u32s(a.n_rows.max(1)),
                1,
            ],
        )?])
    }

    /// Causal grouped-query attention of rows of many sequences over the paged caches in
    /// one dispatch: row r of `q` (`(n_rows, n_heads, head_dim)`) attends to positions
    /// `0..=pos[r]` of sequence `seq[r]`; a row's result does not depend on the other rows.
    /// head_dim must be a multiple of 4 (<= 256). On CPU adapters with subgroups of >= 8
    /// this runs [`Kernels::paged_attention_sg`] (the query heads of a KV head, and a
    /// prompt's consecutive rows, share each K and V load; on lavapipe the serving
    /// benchmark's 428-token prefill went from 75 to 109 tok/s with the heads shared and
    /// to 119 with 4 rows too), on GPUs [`Kernels::paged_attention_heads`] (the layout of
    /// the contiguous decode kernel attention_split_heads, 3.2x faster than
    /// attention_split and ~100x than the lane kernel on an H200 at 512 positions; the
    /// paged kernel itself is not yet measured on a GPU), and on CPU adapters without
    /// subgroups [`Kernels::paged_attention_lane`] (one invocation per row and head).
    /// `INFER_ATTENTION=lane` forces the lane kernel, `split`, `split_heads` or `tiled` (the
    /// GPUs' choices) the heads kernel, `split_sg` the subgroup one where supported.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        seq: &Tensor,
        table: &Tensor,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        match self.tuning().paged_attention {
            PagedAttentionChoice::Sg => {
                self.paged_attention_sg(q, k_cache, v_cache, out, pos, seq, table, a)
            }
            PagedAttentionChoice::Heads => {
                self.paged_attention_heads(q, k_cache, v_cache, out, pos, seq, table, a)
            }
            PagedAttentionChoice::Lane => {
                self.paged_attention_lane(q, k_cache, v_cache, out, pos, seq, table, a)
            }
        }
    }

    /// [`Kernels::paged_attention`] with one invocation per (row, head), walking all of
    /// head_dim (paged_attention.wgsl): any adapter.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention_lane(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        seq: &Tensor,
        table: &Tensor,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        self.paged_dispatch(
            "paged_attention",
            1,
            [q, k_cache, v_cache, out, pos, seq, table],
            a,
            grid1(u32s((a.n_rows * a.n_heads).div_ceil(8))),
        )
    }

    /// [`Kernels::paged_attention`] laid out for GPUs (paged_attention_heads.wgsl): a
    /// workgroup of 64 per (group of query heads sharing a KV head, as many as
    /// [`Kernels::attention_split_heads_group`] gives; row) walks the row's positions in
    /// tiles of 64, loading each K and V row once for those heads, with head_dim a constant
    /// of the pipeline so the row loops unroll.
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention_heads(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        seq: &Tensor,
        table: &Tensor,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        let heads = head_group(a.n_heads, a.n_kv, 8);
        self.paged_attention_heads_grouped(q, k_cache, v_cache, out, pos, seq, table, a, heads)
    }

    /// [`Kernels::paged_attention_heads`] with `heads` query heads per workgroup (1..=8, a
    /// divisor of n_heads / n_kv); every choice gives the same values up to rounding (for
    /// tests and measurements).
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention_heads_grouped(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        seq: &Tensor,
        table: &Tensor,
        a: &PagedParams,
        heads: usize,
    ) -> Result<Vec<Dispatch>> {
        check_head_group("paged_attention_heads", a.n_heads, a.n_kv, heads)?;
        self.paged_dispatch(
            "paged_attention_heads",
            heads_variant(heads, a.head_dim),
            [q, k_cache, v_cache, out, pos, seq, table],
            a,
            [u32s(a.n_heads / heads), u32s(a.n_rows.max(1)), 1],
        )
    }

    /// [`Kernels::paged_attention`] laid out for CPU adapters (paged_attention_sg.wgsl): a
    /// workgroup of 8 invocations across head_dim per (rows, group of query heads sharing
    /// a KV head; as many as [`Kernels::attention_split_sg_heads`] gives), scores by
    /// `subgroupAdd`; [`Kernels::PAGED_SG_ROWS`] rows per workgroup in large steps.
    /// Needs [`Kernels::attention_split_sg_supported`].
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention_sg(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        seq: &Tensor,
        table: &Tensor,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        let heads = head_group(
            a.n_heads,
            a.n_kv,
            8.min(16 / a.head_dim.div_ceil(32).max(1)),
        );
        let rows = if a.n_rows >= 4 * Self::PAGED_SG_ROWS {
            Self::PAGED_SG_ROWS
        } else {
            1
        };
        self.paged_attention_sg_grouped(q, k_cache, v_cache, out, pos, seq, table, a, heads, rows)
    }

    /// Rows per workgroup of [`Kernels::paged_attention_sg`] in steps of at least 4 times
    /// as many rows: a sequence's consecutive rows (a prompt's) then share each K and V
    /// load, as [`Kernels::SPLIT_SG_TOKENS`] tokens do in attention_split_sg; fewer rows
    /// keep one per workgroup, for parallelism.
    pub const PAGED_SG_ROWS: usize = 4;

    /// [`Kernels::paged_attention_sg`] with `heads` query heads per workgroup (1..=8, a
    /// divisor of n_heads / n_kv) and `rows` rows per workgroup (1..=8); every choice
    /// gives the same values (for tests and measurements).
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention_sg_grouped(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        out: &Tensor,
        pos: &Tensor,
        seq: &Tensor,
        table: &Tensor,
        a: &PagedParams,
        heads: usize,
        rows: usize,
    ) -> Result<Vec<Dispatch>> {
        if !self.attention_split_sg_supported() {
            let c = &self.dev.caps;
            return Err(KernelError::Shape {
                kernel: "paged_attention_sg",
                reason: format!(
                    "needs subgroups of >= 8 invocations (adapter: {}..={}, feature {})",
                    c.subgroup_min_size, c.subgroup_max_size, c.subgroup
                ),
            });
        }
        check_head_group("paged_attention_sg", a.n_heads, a.n_kv, heads)?;
        if !(1..=8).contains(&rows) {
            return Err(KernelError::Shape {
                kernel: "paged_attention_sg",
                reason: format!("{rows} rows per workgroup: needs 1..=8"),
            });
        }
        let variant = sg_attention_variant(heads, a.head_dim, rows);
        self.paged_dispatch(
            "paged_attention_sg",
            variant,
            [q, k_cache, v_cache, out, pos, seq, table],
            a,
            [
                u32s(a.n_heads / heads),
                u32s(a.n_rows.div_ceil(rows).max(1)),
                1,
            ],
        )
    }

    /// A paged attention kernel's dispatch (variant `tok`) over `[q, k_cache, v_cache, out,
    /// pos, seq, table]`, after the checks they share.
    fn paged_dispatch(
        &self,
        kernel: &'static str,
        tok: u32,
        t: [&Tensor; 7],
        a: &PagedParams,
        grid: [u32; 3],
    ) -> Result<Vec<Dispatch>> {
        let [q, k_cache, v_cache, out, pos, seq, table] = t;
        self.paged_check(kernel, pos, seq, table, [k_cache, v_cache], a)?;
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
            _pad: 0,
        };
        let buffers = [pos, seq, table, q, k_cache, v_cache, out].map(|t| t.buffer());
        Ok(vec![self.dispatch_tok(
            kernel, None, tok, &params, &buffers, grid,
        )?])
    }
}

/// The variant number (`TOK`, 1-based) of the grouped-heads attention kernels
/// (common/attention_heads.wgsl) for `heads` query heads per workgroup (1..=8) at
/// `head_dim` (a multiple of 4, 4..=256; the callers check): heads - 1 in bits 0-2,
/// head_dim / 4 - 1 in bits 3-8.
fn heads_variant(heads: usize, head_dim: usize) -> u32 {
    u32s((heads - 1) | (((head_dim / 4).clamp(1, 64) - 1) << 3)) + 1
}

/// The largest divisor of the query heads per KV head (n_heads / n_kv; 1 where they do not
/// divide) up to `most` (at least 1): the query heads a workgroup of the grouped attention
/// kernels serves.
fn head_group(n_heads: usize, n_kv: usize, most: usize) -> usize {
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

/// That `heads` query heads per workgroup of `kernel` is 1..=8 and divides the heads per KV
/// head.
fn check_head_group(kernel: &'static str, n_heads: usize, n_kv: usize, heads: usize) -> Result<()> {
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

/// The variant number (`TOK`, 1-based) of the subgroup attention kernels
/// (common/attention_sg.wgsl) for `heads` query heads and `rows` tokens or rows per
/// workgroup (1..=8 each) at `head_dim` (<= 256; larger ones are rejected by the callers'
/// checks): heads - 1, 8 - the vec4 units of a head per invocation, whether head_dim fills
/// them all (a multiple of 32), rows - 1.
fn sg_attention_variant(heads: usize, head_dim: usize, rows: usize) -> u32 {
    let units = head_dim.div_ceil(32).clamp(1, 8);
    let full = head_dim.is_multiple_of(32);
    let v = (heads - 1) | ((8 - units) << 3) | (usize::from(full) << 6) | ((rows - 1) << 7);
    u32s(v + 1)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RopeKvGpu {
    n_heads: u32,
    n_kv: u32,
    head_dim: u32,
    half: u32,
    mode: u32,
    n_tokens: u32,
    max_pos: u32,
    capacity: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PagedRopeKvGpu {
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
    _pad: u32,
}

/// The half-width of the rope table `cs` (`(positions, 2 * half)` f32) for heads of
/// `head_dim`, checked.
fn rope_half(kernel: &'static str, cs: &Tensor, head_dim: usize) -> Result<usize> {
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
    /// [`Kernels::rope`] on `q` (`(n_tokens, n_heads, head_dim)`, in place) and on `k`, and
    /// [`Kernels::kv_write`] of the rotated `k` and of `v` (`(n_tokens, n_kv, head_dim)`)
    /// into the caches (`(n_kv, capacity, head_dim)`), in one dispatch with the same
    /// arithmetic. `k` itself is left unrotated. Token t at position `pos[0] + t`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        cs: &Tensor,
        pos: &Tensor,
        mode: RopeMode,
        n_tokens: usize,
        n_heads: usize,
        n_kv: usize,
        head_dim: usize,
        capacity: usize,
    ) -> Result<Vec<Dispatch>> {
        let half = rope_half("rope_kv", cs, head_dim)?;
        need_f32("rope_kv", q, n_tokens * n_heads * head_dim)?;
        need_f32("rope_kv", k, n_tokens * n_kv * head_dim)?;
        need_f32("rope_kv", v, n_tokens * n_kv * head_dim)?;
        need_f32("rope_kv", k_cache, n_kv * capacity * head_dim)?;
        need_f32("rope_kv", v_cache, n_kv * capacity * head_dim)?;
        need_len("rope_kv", pos, 1)?;
        let params = RopeKvGpu {
            n_heads: u32s(n_heads),
            n_kv: u32s(n_kv),
            head_dim: u32s(head_dim),
            half: u32s(half),
            mode: rope_mode(mode),
            n_tokens: u32s(n_tokens),
            max_pos: u32s(cs.rows()),
            capacity: u32s(capacity),
        };
        let width = (n_heads * half).max(n_kv * head_dim);
        Ok(vec![self.dispatch(
            "rope_kv",
            None,
            &params,
            &[
                pos.buffer(),
                cs.buffer(),
                q.buffer(),
                k.buffer(),
                v.buffer(),
                k_cache.buffer(),
                v_cache.buffer(),
            ],
            [u32s(width.div_ceil(64)), u32s(n_tokens), 1],
        )?])
    }

    /// Whether the adapter binds enough storage buffers for [`Kernels::paged_rope_kv`].
    pub fn paged_rope_kv_fits(&self) -> bool {
        self.dev.limits.max_storage_buffers_per_shader_stage >= PAGED_ROPE_KV_BUFFERS
    }

    /// [`Kernels::rope_rows`] on `q` (`(n_rows, n_heads, head_dim)`, in place) and on `k`, and
    /// [`Kernels::paged_kv_write`] of the rotated `k` and of `v` (`(n_rows, n_kv,
    /// head_dim)`), in one dispatch with the same arithmetic; `k` itself is left unrotated.
    /// Needs [`Kernels::paged_rope_kv_fits`].
    #[allow(clippy::too_many_arguments)]
    pub fn paged_rope_kv(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        cs: &Tensor,
        mode: RopeMode,
        pos: &Tensor,
        seq: &Tensor,
        table: &Tensor,
        a: &PagedParams,
    ) -> Result<Vec<Dispatch>> {
        let kernel = "paged_rope_kv";
        self.paged_check(kernel, pos, seq, table, [k_cache, v_cache], a)?;
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
        let params = PagedRopeKvGpu {
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
            _pad: 0,
        };
        let width = (a.n_heads * half).max(a.n_kv * a.head_dim);
        Ok(vec![self.dispatch(
            kernel,
            None,
            &params,
            &[
                pos.buffer(),
                seq.buffer(),
                table.buffer(),
                cs.buffer(),
                q.buffer(),
                k.buffer(),
                v.buffer(),
                k_cache.buffer(),
                v_cache.buffer(),
            ],
            [u32s(width.div_ceil(64)), u32s(a.n_rows.max(1)), 1],
        )?])
    }
}
