//! One launcher per WGSL kernel in `shaders/`, usable on its own, grouped by op family.
//!
//! A launcher checks shapes and dtypes and returns [`Dispatch`]es: a pipeline (built once per
//! kernel and weight dtype, then cached), a bind group and a grid. Building dispatches
//! allocates their parameter buffers once; recording them allocates nothing, so a forward
//! pass is built once and replayed every step. Dynamic per-step values (the position of the
//! first new token) live in a small `pos` buffer the caller overwrites.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use infer_tensor::{Device, DeviceOptions, DType, Tensor};
//! let dev = Arc::new(Device::new(&DeviceOptions::default())?);
//! let k = infer_kernels::Kernels::new(dev.clone());
//! let w = Tensor::upload_weights(&dev, "w", &[2, 3], DType::F32,
//!     bytemuck::cast_slice(&[1f32, 2., 3., 4., 5., 6.]))?;
//! let x = Tensor::from_f32(&dev, "x", &[3], &[1., 1., 1.])?;
//! let y = Tensor::zeros(&dev, "y", &[2], DType::F32)?;
//! k.run(&k.matvec(&w, &x, 0, &y, 0)?)?;
//! assert_eq!(y.read_f32(&dev)?, vec![6., 15.]);
//! # Ok(()) }
//! ```

use infer_tensor::{DType, Layout, Tensor};

mod attention;
mod elementwise;
mod kernel;
mod linear;
mod matvec;
mod norm;
mod paged;
pub(crate) mod params;
mod pipeline;
mod rope_kv;
mod select;

pub use attention::{AttentionIo, AttentionKernel, AttentionParams};
pub use infer_tensor::reference::{GeluMode, RopeMode};
pub use kernel::{Kernel, PipelineKey, Variant, VariantKind, weights_snippet, x_broadcast_dtype};
pub use linear::{COALESCED_LINEAR_ROWS, Out};
pub use matvec::{Glu, Norm};
pub use paged::{PagedCache, PagedParams};
pub use pipeline::{Dispatch, Kernels};
pub use rope_kv::{KvCache, RopeTable};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{kernel}: {reason}")]
    Shape { kernel: Kernel, reason: String },
    #[error("{kernel}: unsupported dtype {dtype} for `{tensor}`")]
    DType {
        kernel: Kernel,
        tensor: String,
        dtype: DType,
    },
    #[error("{kernel}: no pipeline variant {variant:?}: {reason}")]
    Variant {
        kernel: Kernel,
        variant: Variant,
        reason: String,
    },
    #[error(transparent)]
    Tensor(#[from] infer_tensor::TensorError),
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// A `usize` size as the u32 of a kernel parameter.
pub(crate) fn u32s(n: usize) -> u32 {
    u32::try_from(n).expect("sizes fit in u32 (checked against binding limits)")
}

/// The dtype of weight tensor `w` (in the weight layout, not U32).
pub(crate) fn weight_dtype(kernel: Kernel, w: &Tensor) -> Result<DType> {
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

/// Requires an f32 tensor with at least `n` elements in one buffer.
pub(crate) fn need_f32(kernel: Kernel, t: &Tensor, n: usize) -> Result<()> {
    if t.dtype != DType::F32 {
        return Err(KernelError::DType {
            kernel,
            tensor: t.name.clone(),
            dtype: t.dtype,
        });
    }
    need_len(kernel, t, n)
}

pub(crate) fn need_len(kernel: Kernel, t: &Tensor, n: usize) -> Result<()> {
    if t.parts.len() != 1 || t.numel() < n {
        return Err(KernelError::Shape {
            kernel,
            reason: format!(
                "`{}` {:?} needs {n} elements in one buffer",
                t.name, t.shape
            ),
        });
    }
    Ok(())
}

/// A grid of `n` workgroups along x, folded into y past 65535.
pub(crate) fn grid1(n: u32) -> [u32; 3] {
    if n <= 65535 {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(65535);
        [n.div_ceil(y), y, 1]
    }
}

/// Requires a u32 tensor with at least `n` elements in one buffer.
pub(crate) fn need_u32(kernel: Kernel, t: &Tensor, n: usize) -> Result<()> {
    if t.dtype != DType::U32 {
        return Err(KernelError::DType {
            kernel,
            tensor: t.name.clone(),
            dtype: t.dtype,
        });
    }
    need_len(kernel, t, n)
}
