//! The bottom layer of infer: wgpu device and adapter selection, tensors and dtypes,
//! and `reference`, plain CPU implementations of every op (the specification the GPU
//! kernels are tested against).

pub mod device;
pub mod dtype;
pub mod error;
pub mod reference;
pub mod tensor;
pub mod tuning;
mod unit_pack;

pub use device::{AdapterSummary, Caps, Device, DeviceOptions};
pub use dtype::DType;
pub use error::{Result, TensorError};
pub use tensor::{BufferPool, Layout, Part, Tensor};
pub use tuning::{AttentionChoice, MatvecLayout, PagedAttentionChoice, PipelineCache, Tuning};
pub use wgpu;
