//! Errors of model loading and running. Each names the file, tensor or field at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid {what}: {reason}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{path}: missing field `{field}`")]
    MissingField { path: PathBuf, field: String },
    #[error("{path}: field `{field}`: {reason}")]
    BadField {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{path}: missing tensor `{tensor}`")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor `{tensor}`: {reason}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{path}: unsupported tensor type {ggml_type} for tensor {tensor}")]
    UnsupportedTensorType {
        path: PathBuf,
        tensor: String,
        ggml_type: String,
    },
    #[error("unsupported architecture `{name}` (from {field}); supported: {supported}")]
    UnsupportedArchitecture {
        name: String,
        field: String,
        supported: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("prompt has {tokens} tokens but the context holds {context}")]
    PromptTooLong { tokens: usize, context: usize },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tensor(#[from] infer_tensor::TensorError),
    #[error(transparent)]
    Kernel(#[from] infer_kernels::KernelError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
