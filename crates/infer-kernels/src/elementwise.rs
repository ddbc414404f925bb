//! Elementwise kernels: `swiglu`, `gelu`, and the in-place broadcasts `add` and `mul`.

use infer_tensor::Tensor;

use crate::GeluMode;

use crate::params::params;
use crate::{Dispatch, Kernel, KernelError, Kernels, Result, grid1, need_f32, u32s};

params! {
    /// A length: softmax's row length, swiglu's element count.
    pub(crate) struct LenParams {
        n: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

params! {
    pub(crate) struct GeluParams {
        n: u32,
        /// 0 tanh approximation, 1 erf.
        mode: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

params! {
    /// add and mul: `a[i] op= b[i % b_len]` over n elements.
    pub(crate) struct BinaryParams {
        n: u32,
        b_len: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

impl Kernels {
    /// `out = silu(gate) * up` over `n` elements.
    pub fn swiglu(
        &self,
        gate: &Tensor,
        up: &Tensor,
        out: &Tensor,
        n: usize,
    ) -> Result<Vec<Dispatch>> {
        for t in [gate, up, out] {
            need_f32(Kernel::Swiglu, t, n)?;
        }
        let params = LenParams {
            n: u32s(n),
            ..Default::default()
        };
        Ok(vec![self.dispatch(
            Kernel::Swiglu,
            None,
            &params,
            &[gate.buffer(), up.buffer(), out.buffer()],
            grid1(u32s(n.div_ceil(256))),
        )?])
    }

    /// `y = gelu(x)` over `n` elements.
    pub fn gelu(&self, x: &Tensor, y: &Tensor, n: usize, mode: GeluMode) -> Result<Vec<Dispatch>> {
        need_f32(Kernel::Gelu, x, n)?;
        need_f32(Kernel::Gelu, y, n)?;
        let params = GeluParams {
            n: u32s(n),
            mode: match mode {
                GeluMode::Tanh => 0,
                GeluMode::Erf => 1,
            },
            ..Default::default()
        };
        Ok(vec![self.dispatch(
            Kernel::Gelu,
            None,
            &params,
            &[x.buffer(), y.buffer()],
            grid1(u32s(n.div_ceil(256))),
        )?])
    }

    fn binary(
        &self,
        kernel: Kernel,
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
        let params = BinaryParams {
            n: u32s(n),
            b_len: u32s(b_len),
            ..Default::default()
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
        self.binary(Kernel::Add, a, b, n, b_len)
    }

    /// In place: `a[i] *= b[i % b_len]` over `n` elements.
    pub fn mul(&self, a: &Tensor, b: &Tensor, n: usize, b_len: usize) -> Result<Vec<Dispatch>> {
        self.binary(Kernel::Mul, a, b, n, b_len)
    }
}
