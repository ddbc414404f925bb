//! OpenAI-compatible serving: an HTTP front end (axum on tokio), a scheduler doing
//! continuous batching (requests join the running batch at every step; prompt chunks and
//! decode tokens share one batched forward), a paged KV cache (fixed-size blocks, a block
//! table per sequence) and a batched step that runs every supported architecture.
//!
//! - `batch.rs`: [`BatchedModel`], the batch-invariant multi-sequence forward step.
//! - `kv.rs`: [`BlockAllocator`], the free list of KV blocks.
//! - `engine.rs`: [`Engine`], the scheduler loop on its own thread: carrying out the
//!   schedule, sampling, streaming text ([`infer_sampling::TextStream`]), cancellation.
//! - `schedule.rs`: admission and the rows of a step, as pure functions.
//! - `api/`: the HTTP routes (`mod.rs`), typed request bodies and their checks
//!   (`request.rs`), typed response bodies and errors (`response.rs`).
//! - `metrics.rs`: Prometheus text metrics.

pub mod api;
pub mod batch;
pub mod engine;
pub mod kv;
pub mod metrics;
pub mod schedule;

pub use api::{ServeOptions, serve};
pub use batch::{
    BatchConfig, BatchedModel, Row, RowOut, RowResult, load_batched, load_batched_model,
};
pub use engine::{Engine, EngineHandle, Event, Failure, GenRequest, Shutdown};
pub use kv::BlockAllocator;
pub use metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("not supported by the batched server: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Model(#[from] infer_models::ModelError),
    #[error(transparent)]
    Kernel(#[from] infer_kernels::KernelError),
    #[error(transparent)]
    Tensor(#[from] infer_tensor::TensorError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

pub type Result<T, E = ServeError> = std::result::Result<T, E>;
