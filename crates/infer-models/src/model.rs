//! The interface every architecture's forward pass offers the generation loop.

use crate::config::ModelConfig;
use crate::error::Result;

/// Most positions an all-position output ([`Output::AllArgmax`], [`Output::AllLogits`])
/// covers in one step (a speculative draft of up to 15 tokens plus one).
pub const MAX_VERIFY: usize = 16;

/// What a forward step hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The argmax token of the last position (greedy), computed on the GPU.
    Argmax,
    /// The logits of the last position.
    Logits,
    /// The argmax at every position of the step (at most [`MAX_VERIFY`] tokens).
    AllArgmax,
    /// The logits at every position, row after row (at most [`MAX_VERIFY`] tokens).
    AllLogits,
    /// The k largest logits of the last position with their ids, best first (ties: lower
    /// id), selected on the GPU so only k pairs are read back (1 <= k <= [`MAX_TOPK`]).
    TopK(usize),
}

/// Largest k of [`Output::TopK`].
pub const MAX_TOPK: usize = 256;

impl Output {
    pub fn all_positions(self) -> bool {
        matches!(self, Output::AllArgmax | Output::AllLogits)
    }
}

#[derive(Debug)]
pub enum StepOut {
    Token(u32),
    Tokens(Vec<u32>),
    /// `vocab` floats, or `n * vocab` for [`Output::AllLogits`].
    Logits(Vec<f32>),
    /// (id, logit) pairs for [`Output::TopK`], best first.
    TopK(Vec<(u32, f32)>),
}

/// A causal language model with its KV cache on the GPU.
pub trait Model: Send {
    fn config(&self) -> &ModelConfig;
    /// Tokens held in the KV cache.
    fn position(&self) -> usize;
    /// Most tokens the KV cache holds.
    fn capacity(&self) -> usize;
    /// Forgets everything after the first `pos` tokens (a new conversation at 0, or a
    /// rollback past rejected draft tokens).
    fn truncate(&mut self, pos: usize);
    /// Runs `tokens` (appended at the current position) and returns what `out` asks for.
    fn forward(&mut self, tokens: &[u32], out: Output) -> Result<crate::model::StepOut>;
    /// One greedy decode step: runs `input` at the current position and returns the argmax
    /// of the next token, exactly what `forward(&[input], Output::Argmax)` returns.
    ///
    /// A model may also start up to `ahead` further steps *chained* on the GPU, each fed
    /// the previous step's argmax without a read-back, so the host records and submits
    /// step N+1 while step N runs; their tokens come back, in order, from the next calls
    /// (when each `input` is the token the previous call returned, as in a greedy loop).
    /// Steps started ahead are not part of the sequence: [`Model::position`] counts only
    /// the inputs given here, and any other call (`forward`, `truncate`, a `greedy_next`
    /// with another input) discards them, so `truncate(position())` drops them. The
    /// default runs the plain step (a model answering with logits gets their argmax, the
    /// first on ties, as the greedy sampler takes).
    fn greedy_next(&mut self, input: u32, ahead: usize) -> Result<u32> {
        let _ = ahead;
        Ok(match self.forward(&[input], Output::Argmax)? {
            StepOut::Token(t) => t,
            StepOut::Tokens(t) => *t.last().expect("one token per position"),
            StepOut::Logits(l) => infer_tensor::reference::argmax(&l),
            StepOut::TopK(c) => c.first().map_or(0, |c| c.0),
        })
    }
    /// The marginal cost of one more row in a short step (speculative verification),
    /// relative to a one-token step: a fixed figure per adapter type, for the speculative
    /// k controller. The default, 0.1, is a bandwidth-bound GPU's (reading the weights once
    /// serves every row).
    fn row_cost(&self) -> f64 {
        0.1
    }
}
