//! The Llama family (Llama 2/3/3.1/3.2, Mistral, Qwen2/2.5, Qwen3, SmolLM2, TinyLlama):
//! a pre-norm decoder with RMSNorm, rotary grouped-query attention and a SwiGLU MLP.
//! Variants are config: q/k/v biases (present tensors), q/k RMSNorm (Qwen3), tied or untied
//! embeddings, rope scaling, interleaved rotary for GGUF's permuted q/k.
//!
//! A forward step over n new tokens is one command buffer built from prebuilt dispatches:
//!
//! ```text
//! x = embed[ids]                                   (n, hidden)
//! for each layer:
//!     xn = rms_norm(x) * attn_norm                 (n, hidden)
//!     q, k, v = xn Wq^T (+bq), xn Wk^T, xn Wv^T    (n, heads*hd), (n, kv*hd), (n, kv*hd)
//!     [q, k = rms_norm per head (Qwen3)]
//!     q, k = rope(q, k) at positions pos..pos+n
//!     k_cache, v_cache[pos..pos+n] = k, v          (kv, capacity, hd)
//!     a = attention(q, k_cache, v_cache)           (n, heads*hd)
//!     x += a Wo^T                                  (n, hidden)
//!     xn = rms_norm(x) * ffn_norm
//!     x += (silu(xn Wg^T) * xn Wu^T) Wd^T          via (n, inter)
//! logits = rms_norm(x[n-1]) * norm  W_out^T        (vocab)
//! token = argmax(logits)                           only 4 bytes come back
//! ```

use std::sync::Arc;

use infer_kernels::{AttentionParams, Dispatch, Kernels};
use infer_tensor::{DType, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::model::Output;
use crate::runner::{Graph, Io, LoadOptions, Runner, WeightLoader};
use crate::source::Source;

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    bo: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
}

/// Activation buffers, sized for B = `max_batch` tokens, allocated once.
struct Acts {
    x: Tensor,    // (B, hidden) residual stream
    xn: Tensor,   // (B, hidden) normed
    q: Tensor,    // (B, heads * hd)
    k: Tensor,    // (B, kv * hd)
    v: Tensor,    // (B, kv * hd)
    qn: Tensor,   // (B, heads * hd) q after per-head norm (Qwen3)
    kn: Tensor,   // (B, kv * hd)
    attn: Tensor, // (B, heads * hd)
    o: Tensor,    // (B, hidden) output of a projection back to hidden
    gate: Tensor, // (B, inter)
    up: Tensor,   // (B, inter)
    act: Tensor,  // (B, inter)
}

/// The Llama family's weights, caches and activations.
pub struct Llama {
    cfg: ModelConfig,
    embed: Tensor,
    norm: Tensor,
    lm_head: Option<Tensor>,
    layers: Vec<Layer>,
    rope_cs: Tensor,
    acts: Acts,
}

/// A Llama-family model ready to run.
pub type LlamaModel = Runner<Llama>;

impl Runner<Llama> {
    pub fn load(
        src: &Source,
        cfg: ModelConfig,
        kernels: Arc<Kernels>,
        opts: &LoadOptions,
    ) -> Result<LlamaModel> {
        let dev = kernels.dev.clone();
        let (h, hd, nh, nkv, inter) = (
            cfg.hidden,
            cfg.head_dim,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.intermediate,
        );
        let io = Io::new(&dev, &cfg, opts)?;
        let w = WeightLoader::new(src, dev.clone(), opts, 3 + cfg.n_layers * 9);
        let embed = w.matrix("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let lm_head = if cfg.tie_embeddings || !src.has("lm_head.weight") {
            None
        } else {
            Some(w.matrix("lm_head.weight", &[cfg.vocab_size, h])?)
        };
        let norm = w.vector("model.norm.weight", h)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let (q_norm, k_norm) = if cfg.arch.qk_norm {
                (
                    Some(w.vector(&p("self_attn.q_norm.weight"), hd)?),
                    Some(w.vector(&p("self_attn.k_norm.weight"), hd)?),
                )
            } else {
                (None, None)
            };
            layers.push(Layer {
                attn_norm: w.vector(&p("input_layernorm.weight"), h)?,
                wq: w.matrix(&p("self_attn.q_proj.weight"), &[nh * hd, h])?,
                wk: w.matrix(&p("self_attn.k_proj.weight"), &[nkv * hd, h])?,
                wv: w.matrix(&p("self_attn.v_proj.weight"), &[nkv * hd, h])?,
                wo: w.matrix(&p("self_attn.o_proj.weight"), &[h, nh * hd])?,
                bq: w.opt_vector(&p("self_attn.q_proj.bias"), nh * hd)?,
                bk: w.opt_vector(&p("self_attn.k_proj.bias"), nkv * hd)?,
                bv: w.opt_vector(&p("self_attn.v_proj.bias"), nkv * hd)?,
                bo: w.opt_vector(&p("self_attn.o_proj.bias"), h)?,
                q_norm,
                k_norm,
                ffn_norm: w.vector(&p("post_attention_layernorm.weight"), h)?,
                gate: w.matrix(&p("mlp.gate_proj.weight"), &[inter, h])?,
                up: w.matrix(&p("mlp.up_proj.weight"), &[inter, h])?,
                down: w.matrix(&p("mlp.down_proj.weight"), &[h, inter])?,
                k_cache: w.kv_cache("k", i, &cfg, io.capacity)?,
                v_cache: w.kv_cache("v", i, &cfg, io.capacity)?,
            });
        }
        w.finish();
        let rope_cs = w.rope_table(&cfg, io.capacity)?;
        let b = io.max_batch;
        let z = |name: &str, shape: &[usize]| Tensor::zeros(&dev, name, shape, DType::F32);
        let acts = Acts {
            x: z("x", &[b, h])?,
            xn: z("xn", &[b, h])?,
            q: z("q", &[b, nh * hd])?,
            k: z("k", &[b, nkv * hd])?,
            v: z("v", &[b, nkv * hd])?,
            qn: z("qn", &[b, nh * hd])?,
            kn: z("kn", &[b, nkv * hd])?,
            attn: z("attn", &[b, nh * hd])?,
            o: z("o", &[b, h])?,
            gate: z("gate", &[b, inter])?,
            up: z("up", &[b, inter])?,
            act: z("act", &[b, inter])?,
        };
        let graph = Llama {
            cfg,
            embed,
            norm,
            lm_head,
            layers,
            rope_cs,
            acts,
        };
        Runner::new(kernels, io, graph)
    }
}

impl Graph for Llama {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The dispatches of one step over `n` tokens (whose ids and position are in `acts`).
    fn build(&self, k: &Kernels, io: &Io, n: usize, out: Output) -> Result<Vec<Dispatch>> {
        let a = &self.acts;
        let c = &self.cfg;
        let (h, hd, nh, nkv) = (c.hidden, c.head_dim, c.n_heads, c.n_kv_heads);
        let mut g = Vec::new();
        g.extend(k.embedding(&self.embed, &io.ids, n, &a.x)?);
        let attn = AttentionParams {
            n_tokens: n,
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            capacity: io.capacity,
            scale: 1.0 / (hd as f32).sqrt(),
            softcap: 0.0,
            window: c.sliding_window.unwrap_or(0),
        };
        for l in &self.layers {
            g.extend(k.rms_norm(&a.x, &l.attn_norm, &a.xn, n, h, c.rms_eps, 0.0)?);
            g.extend(k.linear(&a.xn, n, &l.wq, &a.q)?);
            g.extend(k.linear(&a.xn, n, &l.wk, &a.k)?);
            g.extend(k.linear(&a.xn, n, &l.wv, &a.v)?);
            for (bias, t, len) in [
                (&l.bq, &a.q, nh * hd),
                (&l.bk, &a.k, nkv * hd),
                (&l.bv, &a.v, nkv * hd),
            ] {
                if let Some(b) = bias {
                    g.extend(k.add(t, b, n * len, len)?);
                }
            }
            let (q, kk) = match (&l.q_norm, &l.k_norm) {
                (Some(qn), Some(kn)) => {
                    g.extend(k.rms_norm(&a.q, qn, &a.qn, n * nh, hd, c.rms_eps, 0.0)?);
                    g.extend(k.rms_norm(&a.k, kn, &a.kn, n * nkv, hd, c.rms_eps, 0.0)?);
                    (&a.qn, &a.kn)
                }
                _ => (&a.q, &a.k),
            };
            g.extend(k.rope(q, &self.rope_cs, &io.pos, n, nh, hd, c.rope_mode)?);
            g.extend(k.rope(kk, &self.rope_cs, &io.pos, n, nkv, hd, c.rope_mode)?);
            g.extend(k.kv_write(
                kk,
                &a.v,
                &l.k_cache,
                &l.v_cache,
                &io.pos,
                n,
                nkv,
                hd,
                io.capacity,
            )?);
            g.extend(k.attention(q, &l.k_cache, &l.v_cache, &a.attn, &io.pos, &attn)?);
            g.extend(k.linear(&a.attn, n, &l.wo, &a.o)?);
            if let Some(b) = &l.bo {
                g.extend(k.add(&a.o, b, n * h, h)?);
            }
            g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
            g.extend(k.rms_norm(&a.x, &l.ffn_norm, &a.xn, n, h, c.rms_eps, 0.0)?);
            g.extend(k.linear(&a.xn, n, &l.gate, &a.gate)?);
            g.extend(k.linear(&a.xn, n, &l.up, &a.up)?);
            g.extend(k.swiglu(&a.gate, &a.up, &a.act, n * c.intermediate)?);
            g.extend(k.linear(&a.act, n, &l.down, &a.o)?);
            g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
        }
        g.extend(k.rms_norm(&a.x, &self.norm, &a.xn, n, h, c.rms_eps, 0.0)?);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        io.head(k, &mut g, &a.xn, h, n, head, out)?;
        Ok(g)
    }
}

/// One layer's weights, borrowed, for other forward passes over the same uploaded weights
/// (the batched serving step of `infer-serve`).
pub struct LayerWeights<'a> {
    pub attn_norm: &'a Tensor,
    pub wq: &'a Tensor,
    pub wk: &'a Tensor,
    pub wv: &'a Tensor,
    pub wo: &'a Tensor,
    pub bq: Option<&'a Tensor>,
    pub bk: Option<&'a Tensor>,
    pub bv: Option<&'a Tensor>,
    pub bo: Option<&'a Tensor>,
    pub q_norm: Option<&'a Tensor>,
    pub k_norm: Option<&'a Tensor>,
    pub ffn_norm: &'a Tensor,
    pub gate: &'a Tensor,
    pub up: &'a Tensor,
    pub down: &'a Tensor,
}

impl Llama {
    pub fn model_config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// `(vocab, hidden)` token embeddings.
    pub fn embed(&self) -> &Tensor {
        &self.embed
    }

    /// `(hidden)` final norm weight.
    pub fn final_norm(&self) -> &Tensor {
        &self.norm
    }

    /// `(vocab, hidden)` output head (the embeddings when tied).
    pub fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// `(capacity, rotary_dim)` (cos, sin) table of the rope kernels.
    pub fn rope_table(&self) -> &Tensor {
        &self.rope_cs
    }

    pub fn layer_weights(&self) -> Vec<LayerWeights<'_>> {
        self.layers
            .iter()
            .map(|l| LayerWeights {
                attn_norm: &l.attn_norm,
                wq: &l.wq,
                wk: &l.wk,
                wv: &l.wv,
                wo: &l.wo,
                bq: l.bq.as_ref(),
                bk: l.bk.as_ref(),
                bv: l.bv.as_ref(),
                bo: l.bo.as_ref(),
                q_norm: l.q_norm.as_ref(),
                k_norm: l.k_norm.as_ref(),
                ffn_norm: &l.ffn_norm,
                gate: &l.gate,
                up: &l.up,
                down: &l.down,
            })
            .collect()
    }
}
