//! How to load a model: the options every loader and the [`Runner`](crate::Runner) read.

use infer_tensor::DType;

use crate::config::ModelConfig;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Re-encode every weight matrix in this dtype on load (e.g. Q8_0, Q4_0).
    pub quant: Option<DType>,
    /// Context length (KV cache capacity); default min(model's, 4096).
    pub context: Option<usize>,
    /// Most tokens in one prefill step (longer prompts go in chunks).
    pub max_batch: usize,
    /// Show a progress bar while uploading weights.
    pub progress: bool,
    /// Most greedy steps [`Model::greedy_next`] chains ahead of the host (at most
    /// [`MAX_CHAIN`] - 1); `None`: by adapter type ([`chain_ahead`]).
    pub chain: Option<usize>,
}

impl LoadOptions {
    /// Positions the KV cache and the rope table cover.
    pub fn capacity(&self, cfg: &ModelConfig) -> usize {
        self.context.unwrap_or(cfg.max_position.min(4096)).max(1)
    }

    /// Most rows of one step: what the activation buffers hold.
    pub fn rows(&self, cfg: &ModelConfig) -> usize {
        self.max_batch.clamp(1, self.capacity(cfg))
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            quant: None,
            context: None,
            max_batch: 256,
            progress: false,
            chain: None,
        }
    }
}
