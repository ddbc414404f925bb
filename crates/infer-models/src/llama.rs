//! The Llama family (Llama 2/3/3.1/3.2, Mistral, Qwen2/2.5, Qwen3, SmolLM2, TinyLlama):
//! a pre-norm decoder with RMSNorm, rotary grouped-query attention and a SwiGLU MLP.
//! Variants are config: q/k/v biases (present tensors), q/k RMSNorm (Qwen3), tied or untied
//! embeddings, rope scaling, interleaved rotary for GGUF's permuted q/k. Phi-3 is this graph
//! too, loaded from fused weights with partial rotary and LongRoPE (`phi3.rs`).
//!
//! A forward step over n new tokens is one command buffer built from prebuilt dispatches:
//!
//! ```text
//! x = embed[ids]                                   (n, hidden)
//! for each layer:
//!     xn = rms_norm(x) * attn_norm                 (n, hidden)  [in the matvecs on GPUs]
//!     q, k, v = xn Wq^T (+bq), xn Wk^T, xn Wv^T    (n, heads*hd), (n, kv*hd), (n, kv*hd)
//!     [q, k = rms_norm per head (Qwen3)]
//!     q, k = rope(q, k) at positions pos..pos+n
//!     k_cache, v_cache[pos..pos+n] = k, v          (kv, capacity, hd)  [one fused rope_kv]
//!     a = attention(q, k_cache, v_cache)           (n, heads*hd)
//!     x += a Wo^T                                  (n, hidden)  [fused add]
//!     xn = rms_norm(x) * ffn_norm                               [in the glu on GPUs]
//!     x += (silu(xn Wg^T) * xn Wu^T) Wd^T          via (n, inter) [fused glu, add]
//! logits = rms_norm(x[n-1]) * norm  W_out^T        (vocab)
//! token = argmax(logits)                           only 4 bytes come back
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use infer_kernels::{Dispatch, Glu, Kernels, Norm};
use infer_tensor::{Device, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::graph::{Acts, Graph};
use crate::options::LoadOptions;
use crate::runner::Runner;
use crate::source::Source;
use crate::step::{AttnSpec, Qkv, Rope, Step};
use crate::weights::WeightLoader;

pub(crate) struct Layer {
    pub attn_norm: Tensor,
    /// q, k and v projections (one weight where their dtypes agree).
    pub qkv: Qkv,
    pub wo: Tensor,
    pub bq: Option<Tensor>,
    pub bk: Option<Tensor>,
    pub bv: Option<Tensor>,
    pub bo: Option<Tensor>,
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    pub ffn_norm: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

/// Phi-3's two LongRoPE (cos, sin) tables and which one `rope_cs` holds now.
pub(crate) struct LongRopeTables {
    /// (capacity, rotary_dim) each.
    pub short: Vec<f32>,
    pub long: Vec<f32>,
    pub original_max_position: usize,
    pub using_long: AtomicBool,
}

/// The Llama family's weights and activations.
pub struct Llama {
    pub(crate) cfg: ModelConfig,
    pub(crate) embed: Tensor,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: Option<Tensor>,
    pub(crate) layers: Vec<Layer>,
    /// (capacity, rotary_dim) (cos, sin) pairs.
    pub(crate) rope_cs: Tensor,
    pub(crate) longrope: Option<LongRopeTables>,
    pub(crate) acts: Acts,
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
        let graph = Llama::load(src, cfg, &kernels.dev, opts)?;
        Runner::new(kernels, graph, opts)
    }
}

impl Llama {
    /// Uploads the weights and allocates activations for `opts.rows()` rows and a rope
    /// table of `opts.capacity()` positions.
    pub fn load(
        src: &Source,
        cfg: ModelConfig,
        dev: &Arc<Device>,
        opts: &LoadOptions,
    ) -> Result<Llama> {
        let (h, hd, nh, nkv, inter) = cfg.dims();
        let w = WeightLoader::new(src, dev.clone(), &cfg, opts, 3 + cfg.n_layers * 9);
        let (embed, lm_head, norm) = w.ends(&cfg)?;
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
                qkv: w.qkv(
                    [
                        &p("self_attn.q_proj.weight"),
                        &p("self_attn.k_proj.weight"),
                        &p("self_attn.v_proj.weight"),
                    ],
                    [nh * hd, nkv * hd, nkv * hd],
                    h,
                )?,
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
            });
        }
        w.finish();
        let rope_cs = w.rope_table(&cfg, opts.capacity(&cfg))?;
        let acts = Acts::new(dev, &cfg, opts.rows(&cfg))?;
        Ok(Llama {
            cfg,
            embed,
            norm,
            lm_head,
            layers,
            rope_cs,
            longrope: None,
            acts,
        })
    }
}

impl Graph for Llama {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn acts(&self) -> &Acts {
        &self.acts
    }

    fn head(&self) -> (&Tensor, Option<f32>) {
        (self.lm_head.as_ref().unwrap_or(&self.embed), None)
    }

    /// LongRoPE (Phi-3): a forward call that ends past original_max_position_embeddings
    /// uses the long factors, else the short ones. On a switch with tokens already cached,
    /// the cache is recomputed with the new table (transformers' Phi-3 generate() does the
    /// same).
    fn begin(&self, dev: &Device, pos: usize, end: usize) -> Result<bool> {
        let Some(t) = &self.longrope else {
            return Ok(false);
        };
        let long = end > t.original_max_position;
        if t.using_long.swap(long, Ordering::Relaxed) == long {
            return Ok(false);
        }
        let table = if long { &t.long } else { &t.short };
        dev.queue
            .write_buffer(self.rope_cs.buffer(), 0, bytemuck::cast_slice(table));
        Ok(pos > 0)
    }

    fn begin_changes(&self, end: usize) -> bool {
        self.longrope.as_ref().is_some_and(|t| {
            (end > t.original_max_position) != t.using_long.load(Ordering::Relaxed)
        })
    }

    fn body(&self, s: &Step) -> Result<Vec<Dispatch>> {
        let (k, n) = (s.k, s.n);
        let a = &self.acts;
        let c = &self.cfg;
        let (h, hd, nh, nkv) = (c.hidden, c.head_dim, c.n_heads, c.n_kv_heads);
        let spec = AttnSpec::of(c);
        let norm = |weight| Norm {
            weight,
            eps: c.rms_eps,
            offset: 0.0,
        };
        let rope = Rope {
            cs: &self.rope_cs,
            mode: c.rope_mode,
        };
        let mut g = Vec::new();
        g.extend(k.embedding(&self.embed, s.ids(), n, &a.x)?);
        for (i, l) in self.layers.iter().enumerate() {
            let xn = s.rms_norm(&mut g, &a.x, norm(&l.attn_norm), &a.xn, &l.qkv.weights())?;
            g.extend(s.qkv(xn, &l.qkv, &a.q, &a.k, &a.v)?);
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
                    g.extend(k.rms_norm(
                        &a.q,
                        Norm {
                            weight: qn,
                            eps: c.rms_eps,
                            offset: 0.0,
                        },
                        &a.qn,
                        n * nh,
                        hd,
                    )?);
                    g.extend(k.rms_norm(
                        &a.k,
                        Norm {
                            weight: kn,
                            eps: c.rms_eps,
                            offset: 0.0,
                        },
                        &a.kn,
                        n * nkv,
                        hd,
                    )?);
                    (&a.qn, &a.kn)
                }
                _ => (&a.q, &a.k),
            };
            g.extend(s.rope_attention(i, [q, kk, &a.v], &a.attn, &spec, rope)?);
            match &l.bo {
                Some(b) => {
                    g.extend(s.linear(&a.attn, &l.wo, &a.o)?);
                    g.extend(k.add(&a.o, b, n * h, h)?);
                    g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
                }
                None => g.extend(s.linear_add(&a.attn, &l.wo, &a.x, &a.o)?),
            }
            let xn = s.rms_norm(&mut g, &a.x, norm(&l.ffn_norm), &a.xn, &[&l.gate, &l.up])?;
            let (w, scratch) = ([&l.gate, &l.up], [&a.gate, &a.up]);
            g.extend(s.glu(xn, w, Glu::Silu, &a.act, scratch)?);
            g.extend(s.linear_add(&a.act, &l.down, &a.x, &a.o)?);
        }
        g.extend(k.rms_norm(
            &a.x,
            Norm {
                weight: &self.norm,
                eps: c.rms_eps,
                offset: 0.0,
            },
            &a.xn,
            n,
            h,
        )?);
        Ok(g)
    }
}
