//! Model loading (Hugging Face folders, GGUF files, tokenizers), the architecture table and
//! forward passes.

pub mod arch;
pub mod config;
pub mod error;
pub mod gguf;
pub mod llama;
pub mod load;
pub mod model;
pub mod runner;
pub mod source;
pub mod tokenizer;

pub use config::ModelConfig;
pub use error::{ModelError, Result};
pub use llama::LlamaModel;
pub use load::{ModelPath, load};
pub use model::{MAX_VERIFY, Model, Output, StepOut};
pub use runner::{LoadOptions, Runner};
pub use tokenizer::{ChatMessage, StreamDecoder, Tokenizer};
