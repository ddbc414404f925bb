//! Plain CPU implementations of every op: the specification the GPU kernels are tested
//! against. f32 in and out, f64 accumulation, no cleverness.

mod attention;
mod ggml_quantize;
pub mod ggml_quants;
mod linalg;
mod ops;
mod paged;
pub mod quant;
mod softcap;
mod topk;

pub use attention::{
    AttentionShape, RopeMode, RopeScaling, attention, kv_write, rope, rope_inv_freq, rope_table,
};
pub use ggml_quants::{GgmlQuant, GgmlQuantError};
pub use linalg::{matmul, matvec};
pub use ops::{GeluMode, add, argmax, embedding, gelu, layer_norm, mul, rms_norm, softmax, swiglu};
pub use paged::{PagedShape, paged_attention, paged_kv_write, rope_rows};
pub use quant::{dequantize, quantize};
pub use softcap::softcap;
pub use topk::topk;
