//! What an architecture implements: [`Graph`], its forward pass as a list of dispatches,
//! and [`Acts`], the activation buffers that pass writes.

use infer_kernels::Dispatch;
use infer_tensor::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::step::Step;

/// An architecture's forward pass as a list of dispatches, over one sequence's cache or
/// many sequences' paged cache (see [`crate::step`]).
pub trait Graph: Send {
    fn config(&self) -> &ModelConfig;
    /// The activations (sized for the most rows of a step).
    fn acts(&self) -> &Acts;
    /// The dispatches of a step over `s.n` rows, from the ids to the final normed hidden
    /// states, left in `acts().xn`.
    fn body(&self, s: &Step) -> Result<Vec<Dispatch>>;
    /// The `(vocab, hidden)` output head and the soft-cap of the final logits (Gemma 2).
    fn head(&self) -> (&Tensor, Option<f32>);
    /// Called once per `forward()` that takes the sequence from `pos` to `end` tokens, before
    /// any step. Returns true when the cache of positions `0..pos` must be recomputed first
    /// (Phi-3 LongRoPE switching between short and long factors: transformers' generate()
    /// recomputes the whole sequence then). The runner replays those tokens.
    fn begin(&self, _dev: &Device, _pos: usize, _end: usize) -> Result<bool> {
        Ok(false)
    }
    /// Whether [`Graph::begin`] for a step ending at `end` would change anything (switch
    /// rope tables). The runner chains greedy steps ahead of the host only while it would
    /// not, since chained steps may be discarded.
    fn begin_changes(&self, _end: usize) -> bool {
        false
    }
}

impl<G: Graph + ?Sized> Graph for Box<G> {
    fn config(&self) -> &ModelConfig {
        (**self).config()
    }
    fn acts(&self) -> &Acts {
        (**self).acts()
    }
    fn body(&self, s: &Step) -> Result<Vec<Dispatch>> {
        (**self).body(s)
    }
    fn head(&self) -> (&Tensor, Option<f32>) {
        (**self).head()
    }
    fn begin(&self, dev: &Device, pos: usize, end: usize) -> Result<bool> {
        (**self).begin(dev, pos, end)
    }
    fn begin_changes(&self, end: usize) -> bool {
        (**self).begin_changes(end)
    }
}

/// Activation buffers of a step of up to `rows` rows, allocated once per model. Each
/// architecture uses the ones it needs.
pub struct Acts {
    pub rows: usize,
    /// (rows, hidden) residual stream.
    pub x: Tensor,
    /// (rows, hidden) normed; after the body, the final normed hidden states.
    pub xn: Tensor,
    /// (rows, heads * hd)
    pub q: Tensor,
    /// (rows, kv * hd)
    pub k: Tensor,
    pub v: Tensor,
    /// q and k after a per-head norm (Qwen3).
    pub qn: Tensor,
    pub kn: Tensor,
    /// (rows, heads * hd) attention output.
    pub attn: Tensor,
    /// (rows, hidden) a projection back to hidden (and GPT-2's position embeddings).
    pub o: Tensor,
    /// (rows, inter)
    pub gate: Tensor,
    pub up: Tensor,
    pub act: Tensor,
}

impl Acts {
    pub fn new(dev: &Device, cfg: &ModelConfig, rows: usize) -> Result<Acts> {
        let (h, hd, nh, nkv, inter) = cfg.dims();
        let z = |name: &str, cols: usize| Tensor::zeros(dev, name, &[rows, cols], DType::F32);
        let (qn, kn) = if cfg.arch.qk_norm {
            (z("qn", nh * hd)?, z("kn", nkv * hd)?)
        } else {
            (z("qn", 1)?, z("kn", 1)?)
        };
        Ok(Acts {
            rows,
            x: z("x", h)?,
            xn: z("xn", h)?,
            q: z("q", nh * hd)?,
            k: z("k", nkv * hd)?,
            v: z("v", nkv * hd)?,
            qn,
            kn,
            attn: z("attn", nh * hd)?,
            o: z("o", h)?,
            gate: z("gate", inter)?,
            up: z("up", inter)?,
            act: z("act", inter)?,
        })
    }
}
