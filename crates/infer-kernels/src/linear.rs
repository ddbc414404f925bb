//! Linear layers over many tokens: [`Out`] (where a projection's rows go, possibly split
//! into q/k/v), `matmul` (64x64 tiles), `linear` (matvec or matmul by
//! [`Kernels::linear_uses_matvec`]) and `embedding` (rows of a weight table).

use infer_tensor::{DType, Tensor, wgpu};

use crate::params::params;
use crate::{
    Dispatch, Kernel, KernelError, Kernels, Result, need_f32, need_len, u32s, weight_dtype,
};

/// Most rows [`Kernels::linear`] runs through the coalesced (GPU layout) matvec rather
/// than the tiled matmul: speculative verification steps (at most 16 rows) included.
pub const COALESCED_LINEAR_ROWS: usize = 16;

params! {
    pub(crate) struct MatmulParams {
        m: u32,
        n: u32,
        k: u32,
        y_ld: u32,
        /// The part's first row: its column in y (and a split output's row0).
        row0: u32,
        soff: u32,
        /// A split output ([`Out::Split`]; common/split_out.wgsl); t0 = 0.
        seg1: u32,
        seg2: u32,
        n_all: u32,
        t0: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

params! {
    pub(crate) struct EmbeddingParams {
        k: u32,
        row_start: u32,
        rows: u32,
        n_tokens: u32,
        soff: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
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
pub(crate) struct OutFields {
    pub(crate) y_ld: u32,
    pub(crate) seg1: u32,
    pub(crate) seg2: u32,
    pub(crate) n_all: u32,
}

impl<'a> Out<'a> {
    /// The tensor the first rows go to (all of them, unsplit).
    pub(crate) fn first(&self) -> &'a Tensor {
        match *self {
            Out::One(y) => y,
            Out::Split { ys, .. } => ys[0],
        }
    }

    /// Checks this output for `m` tokens of a weight of `n` rows, written at `y_off` of the
    /// first tensor (0 when split; `acc`, adding to y, unsplit only).
    pub(crate) fn fields(
        &self,
        kernel: Kernel,
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
    pub(crate) fn rest(&self, spare: &'a wgpu::Buffer) -> [&'a wgpu::Buffer; 2] {
        match *self {
            Out::One(_) => [spare, spare],
            Out::Split { ys, .. } => [ys[1].buffer(), ys[2].buffer()],
        }
    }
}

impl Kernels {
    /// `y = x w^T`: `x` is `(m, k)`, `w` is `(n, k)` in any weight dtype, `y` is `(m, n)`
    /// (or split by rows, [`Out::Split`]).
    pub fn matmul<'a>(
        &self,
        x: &Tensor,
        m: usize,
        w: &Tensor,
        y: impl Into<Out<'a>>,
    ) -> Result<Vec<Dispatch>> {
        let dt = weight_dtype(Kernel::Matmul, w)?;
        let (n, k) = (w.rows(), w.cols());
        need_f32(Kernel::Matmul, x, m * k)?;
        let out = y.into();
        let of = out.fields(Kernel::Matmul, m, n, 0, false)?;
        let (y, rest) = (out.first(), out.rest(&self.spare));
        if m.div_ceil(64) > 65535 || n.div_ceil(64) > 65535 {
            return Err(KernelError::Shape {
                kernel: Kernel::Matmul,
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
                    ..Default::default()
                };
                self.dispatch(
                    Kernel::Matmul,
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
    /// on CPU adapters always (the tiled kernel computes whole 64-row tiles however few rows
    /// there are, and the row-grouped weight layout makes matvec's token tiles faster for
    /// every dtype), on GPUs for verification-sized steps.
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
        let dt = weight_dtype(Kernel::Embedding, table)?;
        let k = table.cols();
        if ids.dtype != DType::U32 {
            return Err(KernelError::DType {
                kernel: Kernel::Embedding,
                tensor: ids.name.clone(),
                dtype: ids.dtype,
            });
        }
        need_len(Kernel::Embedding, ids, n_tokens)?;
        need_f32(Kernel::Embedding, out, n_tokens * k)?;
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
                    ..Default::default()
                };
                self.dispatch(
                    Kernel::Embedding,
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
}
