//! Model loading (Hugging Face folders, GGUF files, tokenizers), the architecture table and
//! forward passes.

pub mod arch;
pub mod config;
pub mod error;
pub mod gemma;
pub mod gguf;
pub mod gpt2;
pub mod graph;
pub mod hub;
pub mod io;
pub mod llama;
pub mod load;
pub mod model;
pub mod options;
pub mod phi3;
pub mod runner;
pub mod source;
pub mod step;
pub mod synth;
pub mod tokenizer;
mod weights;

pub use config::ModelConfig;
pub use error::{ModelError, Result};
pub use gemma::GemmaModel;
pub use gpt2::Gpt2Model;
pub use graph::Graph;
pub use io::MAX_CHAIN;
pub use llama::LlamaModel;
pub use load::{ModelPath, load};
pub use model::{MAX_TOPK, MAX_VERIFY, Model, Output, StepOut};
pub use options::{LoadOptions, Quant, WeightRole};
pub use runner::{Runner, chain_ahead, row_cost};
pub use tokenizer::{ChatMessage, StreamDecoder, Tokenizer};
