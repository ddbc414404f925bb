//! Gemma, Gemma 2 and Gemma 3. One file for all three: Gemma 2 is Gemma plus four switches
//! read from the config (sandwich norms around attention and MLP, attention-score and
//! final-logit soft-capping, `query_pre_attn_scalar`, sliding-window attention on alternate
//! layers); Gemma 3 is Gemma 2 with (1 + w) RMSNorms on each head's q and k, its sliding and
//! full layers per `layer_types` (five to one in the released models), a rope table of their
//! own for sliding layers (`rope_local_base_freq`, unscaled), and no soft-capping unless the
//! config asks for it. Every other line of the forward pass is the same.
//!
//! Against Llama: embeddings times sqrt(hidden); RMSNorm weights used as (1 + w) (GGUF stores
//! them with the 1 already added, so there the offset is 0); GeGLU MLP with tanh-approximated
//! gelu; `head_dim` independent of hidden / heads; tied output head.
//!
//! ```text
//! x = embed[ids] * sqrt(hidden)                             (n, hidden)
//! for each layer:
//!     xn = rms_norm(x) * (1 + attn_norm)                    (n, hidden) [in the matvecs on GPUs]
//!     q, k, v = xn Wq^T, xn Wk^T, xn Wv^T                   (n, heads*hd), (n, kv*hd) x2
//!     [q, k = rms_norm(q) * (1 + q_norm), rms_norm(k) * (1 + k_norm)]   per head, Gemma 3
//!     q, k = rope(q, k) at positions pos..pos+n             (sliding layers' table: Gemma 3)
//!     k_cache, v_cache[pos..pos+n] = k, v                   (kv, capacity, hd) [fused rope_kv]
//!     a = attention(q, caches; scale, softcap, window)      (n, heads*hd)
//!     o = a Wo^T                                            (n, hidden)
//!     [o = rms_norm(o) * (1 + post_attn_norm)]              Gemma 2, 3
//!     x += o
//!     xn = rms_norm(x) * (1 + ffn_norm)                     (pre_feedforward_layernorm in Gemma 2, 3)
//!     o = (gelu_tanh(xn Wg^T) * xn Wu^T) Wd^T               via (n, inter) [fused glu]
//!     [o = rms_norm(o) * (1 + post_ffn_norm)]               Gemma 2, 3
//!     x += o
//! logits = rms_norm(x) * (1 + norm)  E^T                    (vocab)
//! [logits = c * tanh(logits / c)]                           Gemma 2 (Gemma 3 where configured)
//! ```

use std::sync::Arc;

use infer_kernels::{Dispatch, Glu, Kernels, Norm};
use infer_tensor::reference::RopeScaling;
use infer_tensor::{Device, Tensor};

use crate::arch::Family;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::graph::{Acts, Graph};
use crate::options::LoadOptions;
use crate::runner::Runner;
use crate::source::Source;
use crate::step::{AttnSpec, Qkv, Rope, Step};
use crate::weights::WeightLoader;

struct Layer {
    attn_norm: Tensor,
    /// q, k and v projections (one weight where their dtypes agree).
    qkv: Qkv,
    /// Gemma 3: (head_dim) norms of each head's q and k before rotary.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    wo: Tensor,
    /// Gemma 2: norm of the attention output before the residual add.
    post_attn_norm: Option<Tensor>,
    /// Gemma: `post_attention_layernorm`; Gemma 2: `pre_feedforward_layernorm`.
    ffn_norm: Tensor,
    /// Gemma 2: norm of the MLP output before the residual add.
    post_ffn_norm: Option<Tensor>,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    /// Sliding window of this layer (0: global attention).
    window: usize,
    /// A sliding layer (`layer_types`), which takes the sliding rope table where there is one.
    sliding: bool,
}

/// Gemma's, Gemma 2's and Gemma 3's weights and activations.
pub struct Gemma {
    cfg: ModelConfig,
    embed: Tensor,
    /// (1): sqrt(hidden), the embedding scale.
    embed_scale: Tensor,
    norm: Tensor,
    lm_head: Option<Tensor>,
    layers: Vec<Layer>,
    rope_cs: Tensor,
    /// Gemma 3: the sliding layers' rope table (base `sliding_rope_theta`, unscaled).
    rope_sliding_cs: Option<Tensor>,
    acts: Acts,
    /// Added to every norm weight: 1 for Hugging Face files, 0 for GGUF (stored +1).
    norm_offset: f32,
}

/// A Gemma, Gemma 2 or Gemma 3 model ready to run.
pub type GemmaModel = Runner<Gemma>;

impl Runner<Gemma> {
    pub fn load(
        src: &Source,
        cfg: ModelConfig,
        kernels: Arc<Kernels>,
        opts: &LoadOptions,
    ) -> Result<GemmaModel> {
        let graph = Gemma::load(src, cfg, &kernels.dev, opts)?;
        Runner::new(kernels, graph, opts)
    }
}

impl Gemma {
    pub fn load(
        src: &Source,
        cfg: ModelConfig,
        dev: &Arc<Device>,
        opts: &LoadOptions,
    ) -> Result<Gemma> {
        let v2 = matches!(cfg.arch.family, Family::Gemma2 | Family::Gemma3);
        if cfg.arch.family == Family::Gemma3 {
            check_gemma3(&cfg)?;
        }
        let (h, hd, nh, nkv, inter) = cfg.dims();
        let w = WeightLoader::new(src, dev.clone(), &cfg, opts, 3 + cfg.n_layers * 13);
        let (embed, lm_head, norm) = w.ends(&cfg)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let sliding = cfg.ext.sliding_layers.get(i).copied().unwrap_or(true);
            let (q_norm, k_norm) = if cfg.arch.qk_norm {
                (
                    Some(w.vector(&p("self_attn.q_norm.weight"), hd)?),
                    Some(w.vector(&p("self_attn.k_norm.weight"), hd)?),
                )
            } else {
                (None, None)
            };
            let window = match cfg.sliding_window {
                Some(win) if sliding => win,
                _ => 0,
            };
            let (post_attn_norm, ffn_norm, post_ffn_norm) = if v2 {
                (
                    Some(w.vector(&p("post_attention_layernorm.weight"), h)?),
                    w.vector(&p("pre_feedforward_layernorm.weight"), h)?,
                    Some(w.vector(&p("post_feedforward_layernorm.weight"), h)?),
                )
            } else {
                (
                    None,
                    w.vector(&p("post_attention_layernorm.weight"), h)?,
                    None,
                )
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
                q_norm,
                k_norm,
                wo: w.matrix(&p("self_attn.o_proj.weight"), &[h, nh * hd])?,
                post_attn_norm,
                ffn_norm,
                post_ffn_norm,
                gate: w.matrix(&p("mlp.gate_proj.weight"), &[inter, h])?,
                up: w.matrix(&p("mlp.up_proj.weight"), &[inter, h])?,
                down: w.matrix(&p("mlp.down_proj.weight"), &[h, inter])?,
                window,
                sliding,
            });
        }
        w.finish();
        let rope_cs = w.rope_table(&cfg, opts.capacity(&cfg))?;
        let rope_sliding_cs = match cfg.ext.sliding_rope_theta {
            Some(theta) => {
                let mut local = cfg.clone();
                local.rope_theta = theta;
                local.rope_scaling = RopeScaling::None;
                Some(w.rope_table(&local, opts.capacity(&cfg))?)
            }
            None => None,
        };
        // transformers multiplies by sqrt(hidden) rounded to the activation dtype (f32).
        let embed_scale = Tensor::from_f32(dev, "embed_scale", &[1], &[(h as f32).sqrt()])?;
        let acts = Acts::new(dev, &cfg, opts.rows(&cfg))?;
        let norm_offset = if matches!(src, Source::Gguf(_)) {
            0.0
        } else {
            1.0
        };
        Ok(Gemma {
            cfg,
            embed,
            embed_scale,
            norm,
            lm_head,
            layers,
            rope_cs,
            rope_sliding_cs,
            acts,
            norm_offset,
        })
    }
}

impl Graph for Gemma {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn acts(&self) -> &Acts {
        &self.acts
    }

    fn head(&self) -> (&Tensor, Option<f32>) {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        (head, self.cfg.ext.final_softcap)
    }

    fn body(&self, s: &Step) -> Result<Vec<Dispatch>> {
        let (k, n) = (s.k, s.n);
        let a = &self.acts;
        let c = &self.cfg;
        let (h, hd) = (c.hidden, c.head_dim);
        let (eps, off) = (c.rms_eps, self.norm_offset);
        let mut spec = AttnSpec::of(c);
        spec.scale = 1.0 / c.ext.query_pre_attn_scalar.unwrap_or(hd as f32).sqrt();
        spec.softcap = c.ext.attn_softcap.unwrap_or(0.0);
        let norm = |weight| Norm {
            weight,
            eps,
            offset: off,
        };
        let (nh, nkv) = (c.n_heads, c.n_kv_heads);
        let mut g = Vec::new();
        g.extend(k.embedding(&self.embed, s.ids(), n, &a.x)?);
        g.extend(k.mul(&a.x, &self.embed_scale, n * h, 1)?);
        for (i, l) in self.layers.iter().enumerate() {
            let xn = s.rms_norm(&mut g, &a.x, norm(&l.attn_norm), &a.xn, &l.qkv.weights())?;
            g.extend(s.qkv(xn, &l.qkv, &a.q, &a.k, &a.v)?);
            let (q, kk) = match (&l.q_norm, &l.k_norm) {
                (Some(qn), Some(kn)) => {
                    // (n * heads, hd) and (n * kv, hd) rows, each normed on its own.
                    g.extend(k.rms_norm(&a.q, norm(qn), &a.qn, n * nh, hd)?);
                    g.extend(k.rms_norm(&a.k, norm(kn), &a.kn, n * nkv, hd)?);
                    (&a.qn, &a.kn)
                }
                _ => (&a.q, &a.k),
            };
            spec.window = l.window;
            let cs = match (&self.rope_sliding_cs, l.sliding) {
                (Some(local), true) => local,
                _ => &self.rope_cs,
            };
            let rope = Rope {
                cs,
                mode: c.rope_mode,
            };
            g.extend(s.rope_attention(i, [q, kk, &a.v], &a.attn, &spec, rope)?);
            self.project_residual(s, &mut g, &a.attn, &l.wo, l.post_attn_norm.as_ref())?;
            let xn = s.rms_norm(&mut g, &a.x, norm(&l.ffn_norm), &a.xn, &[&l.gate, &l.up])?;
            let (w, scratch) = ([&l.gate, &l.up], [&a.gate, &a.up]);
            g.extend(s.glu(xn, w, Glu::GeluTanh, &a.act, scratch)?);
            self.project_residual(s, &mut g, &a.act, &l.down, l.post_ffn_norm.as_ref())?;
        }
        g.extend(k.rms_norm(
            &a.x,
            Norm {
                weight: &self.norm,
                eps,
                offset: off,
            },
            &a.xn,
            n,
            h,
        )?);
        Ok(g)
    }
}

/// What Gemma 3's forward pass does not implement, refused rather than ignored.
fn check_gemma3(cfg: &ModelConfig) -> Result<()> {
    match cfg.ext.activation.as_deref() {
        None | Some("gelu_pytorch_tanh" | "gelu_tanh") => {}
        Some(other) => {
            return Err(ModelError::Invalid(format!(
                "Gemma 3 activation `{other}` is not supported (gelu_pytorch_tanh)"
            )));
        }
    }
    if cfg.ext.bidirectional {
        return Err(ModelError::Invalid(
            "Gemma 3 use_bidirectional_attention is not supported (causal only)".into(),
        ));
    }
    Ok(())
}

impl Gemma {
    /// `x += inp W^T` (one fused matvec where the step allows), or with a post-norm
    /// (Gemma 2) `x += rms_norm(inp W^T) * (offset + post_norm)`.
    fn project_residual(
        &self,
        s: &Step,
        g: &mut Vec<Dispatch>,
        inp: &Tensor,
        w: &Tensor,
        post_norm: Option<&Tensor>,
    ) -> Result<()> {
        let (a, h, n, k) = (&self.acts, self.cfg.hidden, s.n, s.k);
        match post_norm {
            Some(pn) => {
                let (eps, off) = (self.cfg.rms_eps, self.norm_offset);
                g.extend(s.linear(inp, w, &a.o)?);
                g.extend(k.rms_norm(
                    &a.o,
                    Norm {
                        weight: pn,
                        eps,
                        offset: off,
                    },
                    &a.xn,
                    n,
                    h,
                )?);
                g.extend(k.add(&a.x, &a.xn, n * h, n * h)?);
            }
            None => g.extend(s.linear_add(inp, w, &a.x, &a.o)?),
        }
        Ok(())
    }
}
