//! The matrix-vector kernels: `matvec` (one invocation walks rows; CPU adapters),
//! `matvec_coalesced` (lanes across a row; GPUs), and their fused gated-MLP forms
//! `matvec_glu` / `matvec_glu_coalesced`. matvec over several tokens decodes each weight unit
//! once per tile of tokens ([`Variant::Matvec`]).

use infer_tensor::{DType, Tensor};

#[cfg(doc)]
use crate::Variant;
use crate::linear::Out;
use crate::params::params;
use crate::{
    Dispatch, Kernel, KernelError, Kernels, PipelineKey, Result, need_f32, u32s, weight_dtype,
};

params! {
    /// The matvec kernels' parameters (common/matvec_io.wgsl).
    pub(crate) struct MatvecParams {
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
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// One matvec call: `m` tokens of `x` (from element `x_off`) times `w`, into `out` (from
/// element `y_off` of its first tensor).
#[derive(Clone, Copy)]
struct Call<'a> {
    w: &'a Tensor,
    x: &'a Tensor,
    x_off: usize,
    m: usize,
    out: Out<'a>,
    y_off: usize,
    /// matvec: 1 to add to y; the glu kernels: the activation.
    flag: u32,
}

impl<'a> Call<'a> {
    fn new(w: &'a Tensor, x: &'a Tensor, m: usize, out: Out<'a>) -> Self {
        Call {
            w,
            x,
            x_off: 0,
            m,
            out,
            y_off: 0,
            flag: 0,
        }
    }
}

/// The gated activation of [`Kernels::matvec_glu`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// SwiGLU: silu(gate) * up (Llama, Phi-3).
    Silu,
    /// GeGLU: gelu_tanh(gate) * up (Gemma).
    GeluTanh,
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
fn same_layout(kernel: Kernel, wg: &Tensor, wu: &Tensor) -> Result<()> {
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
        self.matvec_rows(Call {
            x_off,
            y_off,
            ..Call::new(w, x, 1, Out::One(y))
        })
    }

    /// matvec over `m` tokens: `y[t] = w x[t]` with `x` `(m, k)` and `y` `(m, n)`. For
    /// float and Q8_0 weights each weight unit is decoded once per tile of up to
    /// [`Kernels::matvec_tokens`] tokens (see `matvec_plan` for where tiles are used). Batch invariant: `y[t]` is bit-identical
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
        self.matvec_rows(Call::new(w, x, m, y.into()))
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
        self.matvec_rows(Call {
            flag: 1,
            ..Call::new(w, x, m, Out::One(y))
        })
    }

    /// Whether [`Kernels::linear`] runs matvec (rather than the tiled matmul) for `m` rows
    /// of `w`.
    ///
    /// On the GPU layout (coalesced) up to [`crate::COALESCED_LINEAR_ROWS`] rows: a verification
    /// step of a few rows is latency-bound, and the coalesced matvec's m x n / 4 workgroups
    /// (each matrix read again from cache per row) keep the chip busy where the tiled
    /// matmul's few tiles leave it idle (with matmul, speculation ran slower than plain
    /// decode).
    ///
    /// On CPU adapters at every row count, whatever the dtype: quantized weights always ran
    /// matvec there, and since the grouped weight layout (`Device::weight_group`) the float
    /// weights' token tiles beat the tiled matmul at prefill sizes too.
    pub fn linear_uses_matvec(&self, m: usize, _w: &Tensor) -> bool {
        if self.coalesced {
            return m <= crate::COALESCED_LINEAR_ROWS;
        }
        m == 1 || self.tuning().cpu
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
        let dt = weight_dtype(Kernel::MatvecGlu, wg)?;
        let (n, k) = (wg.rows(), wg.cols());
        same_layout(Kernel::MatvecGlu, wg, wu)?;
        if self.coalesced && self.coalesced_fits(wg) {
            return self.matvec_glu_coalesced([wg, wu], x, m, out, act, None);
        }
        need_f32(Kernel::MatvecGlu, x, m * k)?;
        need_f32(Kernel::MatvecGlu, out, m * n)?;
        if m == 0 || m > 65535 {
            return Err(KernelError::Shape {
                kernel: Kernel::MatvecGlu,
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
                    ..Default::default()
                };
                let threads = pg.rows.div_ceil(8);
                let key = PipelineKey {
                    kernel: Kernel::MatvecGlu,
                    dtype: Some(dt),
                    variant: self.matvec_variant(dt, 1),
                };
                self.dispatch_key(
                    key,
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

    /// The matvec as [`Kernels::matvec_batched`] computes it (x and y each from an element
    /// offset; `acc`: added to `y`), always
    /// with the GPU layout `matvec_coalesced` (which matvec picks by itself on GPUs; see
    /// [`Kernels::matvec_coalesced_default`]). Batch invariant like the other layout.
    pub fn matvec_coalesced(
        &self,
        w: &Tensor,
        (x, x_off): (&Tensor, usize),
        m: usize,
        (y, y_off): (&Tensor, usize),
        acc: bool,
    ) -> Result<Vec<Dispatch>> {
        let call = Call {
            x_off,
            y_off,
            flag: u32::from(acc),
            ..Call::new(w, x, m, Out::One(y))
        };
        self.coalesced(Kernel::MatvecCoalesced, call, None, None)
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
        let call = Call::new(w, x, m, y.into());
        self.coalesced(Kernel::MatvecCoalesced, call, None, Some(norm))
    }

    /// [`Kernels::matvec_glu`] with the GPU layout `matvec_glu_coalesced` (which matvec_glu
    /// picks by itself where matvec is coalesced), optionally over `norm` applied to `x`
    /// (see [`Kernels::matvec_coalesced_norm`]). The gate and up values are
    /// [`Kernels::matvec_coalesced`]'s bits; batch invariant.
    pub fn matvec_glu_coalesced(
        &self,
        [wg, wu]: [&Tensor; 2],
        x: &Tensor,
        m: usize,
        out: &Tensor,
        act: Glu,
        norm: Option<Norm<'_>>,
    ) -> Result<Vec<Dispatch>> {
        let kernel = Kernel::MatvecGluCoalesced;
        same_layout(kernel, wg, wu)?;
        let call = Call {
            flag: glu_flag(act),
            ..Call::new(wg, x, m, Out::One(out))
        };
        self.coalesced(kernel, call, Some(wu), norm)
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
    fn coalesced(
        &self,
        kernel: Kernel,
        call: Call<'_>,
        wu: Option<&Tensor>,
        norm: Option<Norm<'_>>,
    ) -> Result<Vec<Dispatch>> {
        let Call {
            w,
            x,
            x_off,
            m,
            out,
            y_off,
            flag,
        } = call;
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
                    ..Default::default()
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

    /// matvec (or, on the GPU layout, matvec_coalesced) of `call`, by [`Kernels::matvec_plan`].
    fn matvec_rows(&self, call: Call<'_>) -> Result<Vec<Dispatch>> {
        let Call {
            w,
            x,
            x_off,
            m,
            out,
            y_off,
            flag,
        } = call;
        let acc = flag != 0;
        let dt = weight_dtype(Kernel::Matvec, w)?;
        let (n, k) = (w.rows(), w.cols());
        need_f32(Kernel::Matvec, x, x_off + m * k)?;
        let of = out.fields(Kernel::Matvec, m, n, y_off, acc)?;
        let (y, rest) = (out.first(), out.rest(&self.spare));
        if m == 0 || m > 65535 {
            return Err(KernelError::Shape {
                kernel: Kernel::Matvec,
                reason: format!("{m} tokens (1..=65535)"),
            });
        }
        if self.coalesced && self.coalesced_fits(w) {
            return self.coalesced(Kernel::MatvecCoalesced, call, None, None);
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
                        flag,
                        row0: u32s(part.row_start),
                        seg1: of.seg1,
                        seg2: of.seg2,
                        n_all: of.n_all,
                        t0: u32s(t0),
                        ..Default::default()
                    };
                    let threads = part.rows.div_ceil(8);
                    let key = PipelineKey {
                        kernel: Kernel::Matvec,
                        dtype: Some(dt),
                        variant: self.matvec_variant(dt, tok),
                    };
                    self.dispatch_key(
                        key,
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
    /// invocation; the other quantized types (Q4_0, Q4_1, Q5_*, the K- and I-quants, whose
    /// unit decode a tile shares) where x is shared over subgroups
    /// ([`Kernels::matvec_x_broadcast`]) as the floats, otherwise never (each token's 8
    /// loads of x per unit then dominate: tiles measured no faster; with x shared they
    /// are). m = 1 is always the
    /// single-token pipeline. Every plan gives the same bits (see `matvec.wgsl`), so this
    /// is purely a speed choice.
    fn matvec_plan(&self, dtype: DType, m: usize) -> Vec<(u32, usize, usize)> {
        let tile = self.matvec_tokens() as usize;
        let (min, rem_tiles) = match dtype {
            DType::F32 | DType::F16 | DType::BF16 => (2, true),
            DType::Q8_0 => (tile, false),
            d if d.is_quantized() && self.matvec_x_broadcast() => (2, true),
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
}
