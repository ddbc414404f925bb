//! Phi-3 / Phi-3.5 (`Phi3ForCausalLM`): the Llama block with fused projections
//! (`qkv_proj` rows = q, k, v, kept fused: one dispatch writes q, k and v; `gate_up_proj`
//! rows = gate, up, split by rows on load; GGUF's `attn_qkv` / `ffn_up` alike), partial or full rotary, an optional sliding window, and
//! LongRoPE (`rope_type: longrope`, formerly `su`).
//!
//! LongRoPE as transformers runs it: the inverse frequencies are divided by `short_factor`
//! while the sequence is at most `original_max_position_embeddings` long, by `long_factor`
//! beyond; cos and sin are multiplied by the attention factor. When generation crosses over,
//! transformers drops the cache and recomputes the whole sequence with the long factors; so
//! here `begin()` rewrites the rope table and asks the runner to replay the cached tokens.
//! Batched serving has no single sequence length, so it picks the table once from the serving
//! context, as llama.cpp does (long factors when the context exceeds the original).
//!
//! The forward pass is the Llama graph's (`llama.rs`); this file loads into it.
//!
//! ```text
//! x = embed[ids]                                   (n, hidden)
//! for each layer:
//!     xn = rms_norm(x) * attn_norm                 (n, hidden)
//!     q, k, v = xn Wq^T, xn Wk^T, xn Wv^T          rows of qkv_proj: (n, heads*hd), (n, kv*hd) x2
//!     q, k = rope(q, k) on the first rotary_dim dimensions of each head
//!     k_cache, v_cache[pos..pos+n] = k, v          (kv, capacity, hd)  [one fused rope_kv]
//!     a = attention(q, caches; window)             (n, heads*hd)
//!     x += a Wo^T                                  (n, hidden)
//!     xn = rms_norm(x) * ffn_norm
//!     x += (silu(xn Wg^T) * xn Wu^T) Wd^T          rows of gate_up_proj, via (n, inter)
//! logits = rms_norm(x[n-1]) * norm  W_out^T        (vocab)
//! ```

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use infer_kernels::Kernels;
use infer_tensor::reference::rope_table;
use infer_tensor::{Device, Tensor};

use crate::config::{LongRope, ModelConfig};
use crate::error::{ModelError, Result};
use crate::graph::Acts;
use crate::llama::{Layer, Llama, LlamaModel, LongRopeTables};
use crate::options::LoadOptions;
use crate::runner::Runner;
use crate::source::Source;
use crate::weights::WeightLoader;

/// The LongRoPE (cos, sin) table for `positions` positions with per-dimension `factors`:
/// inv_freq[i] = 1 / (factor[i] * theta^(2i / rotary_dim)) in f32, as transformers does.
fn longrope_table(cfg: &ModelConfig, factors: &[f32], lr: &LongRope, positions: usize) -> Vec<f32> {
    let d = cfg.rotary_dim;
    let inv_freq: Vec<f32> = factors
        .iter()
        .enumerate()
        .map(|(i, &f)| 1.0 / (f * cfg.rope_theta.powf((2 * i) as f32 / d as f32)))
        .collect();
    rope_table(&inv_freq, positions, lr.attention_factor)
}

/// Loads a Phi-3 model ready to run.
pub fn load_model(
    src: &Source,
    cfg: ModelConfig,
    kernels: Arc<Kernels>,
    opts: &LoadOptions,
) -> Result<LlamaModel> {
    let graph = load(src, cfg, &kernels.dev, opts)?;
    Runner::new(kernels, graph, opts)
}

/// Loads Phi-3's weights into the Llama graph: the fused q/k/v projection as it is, gate/up
/// split by rows, and
/// the LongRoPE tables when the config has them.
pub fn load(
    src: &Source,
    cfg: ModelConfig,
    dev: &Arc<Device>,
    opts: &LoadOptions,
) -> Result<Llama> {
    let (h, hd, nh, nkv, inter) = cfg.dims();
    let capacity = opts.capacity(&cfg);
    let w = WeightLoader::new(src, dev.clone(), &cfg, opts, 3 + cfg.n_layers * 6);
    let (embed, lm_head, norm) = w.ends(&cfg)?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for i in 0..cfg.n_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let qkv = w.qkv_stacked(
            &p("self_attn.qkv_proj.weight"),
            [nh * hd, nkv * hd, nkv * hd],
            h,
            false,
        )?;
        let gate_up = w.matrix_split(&p("mlp.gate_up_proj.weight"), &[inter, inter], h, false)?;
        let [gate, up]: [Tensor; 2] = gate_up.try_into().expect("two parts");
        layers.push(Layer {
            attn_norm: w.vector(&p("input_layernorm.weight"), h)?,
            qkv,
            wo: w.matrix(&p("self_attn.o_proj.weight"), &[h, nh * hd])?,
            bq: None,
            bk: None,
            bv: None,
            bo: None,
            q_norm: None,
            k_norm: None,
            ffn_norm: w.vector(&p("post_attention_layernorm.weight"), h)?,
            gate,
            up,
            down: w.matrix(&p("mlp.down_proj.weight"), &[h, inter])?,
        });
    }
    w.finish();
    let (rope_cs, longrope) = match &cfg.ext.longrope {
        None => (w.rope_table(&cfg, capacity)?, None),
        Some(lr) => {
            let half = cfg.rotary_dim / 2;
            if lr.short_factor.len() != half || lr.long_factor.len() != half {
                return Err(ModelError::Invalid(format!(
                    "LongRoPE factors have {} (short) and {} (long) entries; rotary \
                     dimension {} needs {half}",
                    lr.short_factor.len(),
                    lr.long_factor.len(),
                    cfg.rotary_dim
                )));
            }
            let short = longrope_table(&cfg, &lr.short_factor, lr, capacity);
            let long = longrope_table(&cfg, &lr.long_factor, lr, capacity);
            let t = Tensor::from_f32(dev, "rope_cs", &[capacity, cfg.rotary_dim], &short)?;
            let tables = LongRopeTables {
                short,
                long,
                original_max_position: lr.original_max_position,
                using_long: AtomicBool::new(false),
            };
            (t, Some(tables))
        }
    };
    let acts = Acts::new(dev, &cfg, opts.rows(&cfg))?;
    Ok(Llama {
        cfg,
        embed,
        norm,
        lm_head,
        layers,
        rope_cs,
        longrope,
        acts,
    })
}
