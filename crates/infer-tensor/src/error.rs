//! Errors of the device and tensor layer.

#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),
    #[error("unknown backend `{0}` (expected vulkan, metal, dx12 or gl)")]
    UnknownBackend(String),
    #[error("could not open a device on adapter `{adapter}`: {reason}")]
    RequestDevice { adapter: String, reason: String },
    #[error("wgpu error in {context}: {message}")]
    Gpu { context: String, message: String },
    #[error("tensor `{name}`: {reason}")]
    Shape { name: String, reason: String },
    #[error(
        "tensor `{name}` needs {needed} bytes in one binding, over the adapter's limit of {limit} bytes"
    )]
    TooLarge {
        name: String,
        needed: u64,
        limit: u64,
    },
    #[error("buffer map failed: {0}")]
    Map(String),
    #[error("invalid environment setting: {0}")]
    Env(String),
}

pub type Result<T, E = TensorError> = std::result::Result<T, E>;
