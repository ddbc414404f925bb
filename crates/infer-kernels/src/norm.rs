//! Normalisations over rows: `rms_norm`, `layer_norm`, `softmax`.

use infer_tensor::Tensor;

use crate::elementwise::LenParams;
use crate::params::params;
use crate::{Dispatch, Kernel, Kernels, Norm, Result, need_f32, u32s};

params! {
    /// rms_norm's and layer_norm's parameters (layer_norm has no weight offset).
    pub(crate) struct NormParams {
        d: u32,
        eps: f32,
        w_offset: f32,
        _pad0: u32,
    }
}

impl Kernels {
    /// RMSNorm over `rows` rows of `d`: `y = x / sqrt(mean(x^2) + eps) * (offset + weight)`.
    pub fn rms_norm(
        &self,
        x: &Tensor,
        norm: Norm<'_>,
        y: &Tensor,
        rows: usize,
        d: usize,
    ) -> Result<Vec<Dispatch>> {
        let Norm {
            weight: w,
            eps,
            offset: w_offset,
        } = norm;
        need_f32(Kernel::RmsNorm, x, rows * d)?;
        need_f32(Kernel::RmsNorm, w, d)?;
        need_f32(Kernel::RmsNorm, y, rows * d)?;
        let params = NormParams {
            d: u32s(d),
            eps,
            w_offset,
            ..Default::default()
        };
        Ok(vec![self.dispatch(
            Kernel::RmsNorm,
            None,
            &params,
            &[x.buffer(), w.buffer(), y.buffer()],
            [u32s(rows), 1, 1],
        )?])
    }

    /// LayerNorm over `rows` rows of `d`, with weight `w` and bias `b` (`(d)` each).
    pub fn layer_norm(
        &self,
        x: &Tensor,
        [w, b]: [&Tensor; 2],
        y: &Tensor,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<Vec<Dispatch>> {
        need_f32(Kernel::LayerNorm, x, rows * d)?;
        need_f32(Kernel::LayerNorm, w, d)?;
        need_f32(Kernel::LayerNorm, b, d)?;
        need_f32(Kernel::LayerNorm, y, rows * d)?;
        let params = NormParams {
            d: u32s(d),
            eps,
            ..Default::default()
        };
        Ok(vec![self.dispatch(
            Kernel::LayerNorm,
            None,
            &params,
            &[x.buffer(), w.buffer(), b.buffer(), y.buffer()],
            [u32s(rows), 1, 1],
        )?])
    }

    /// Softmax over each of `rows` rows of `n`.
    pub fn softmax(&self, x: &Tensor, y: &Tensor, rows: usize, n: usize) -> Result<Vec<Dispatch>> {
        need_f32(Kernel::Softmax, x, rows * n)?;
        need_f32(Kernel::Softmax, y, rows * n)?;
        let params = LenParams {
            n: u32s(n),
            ..Default::default()
        };
        Ok(vec![self.dispatch(
            Kernel::Softmax,
            None,
            &params,
            &[x.buffer(), y.buffer()],
            [u32s(rows), 1, 1],
        )?])
    }
}
