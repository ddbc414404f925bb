//! GPT-2 (`GPT2LMHeadModel`): learned absolute position embeddings, pre-LayerNorm with bias,
//! multi-head attention from a fused `c_attn`, a gelu (tanh) MLP, and the head tied to the
//! token embeddings. Hugging Face stores the projections as Conv1D, `(in, out)`: transposed
//! relative to Linear, so they are transposed on load (llama.cpp's GGUF already stores them
//! `(out, in)`). The fused q/k/v weight stays fused (one dispatch writes q, k and v); its
//! bias is split by rows on load.
//!
//! ```text
//! x = wte[ids] + wpe[pos..pos+n]                   (n, hidden)
//! for each layer:
//!     xn = layer_norm(x) * ln_1.w + ln_1.b         (n, hidden)
//!     q, k, v = xn Wq^T + bq, ...                  rows of c_attn: (n, hidden) x3
//!     k_cache, v_cache[pos..pos+n] = k, v          (heads, capacity, hd)
//!     a = attention(q, caches)                     (n, hidden)
//!     x += a Wo^T + bo
//!     xn = layer_norm(x) * ln_2.w + ln_2.b
//!     x += gelu_tanh(xn Wfc^T + bfc) Wproj^T + bproj    via (n, inter)
//! logits = layer_norm(x[n-1]) * ln_f.w + ln_f.b  wte^T   (vocab)
//! ```

use std::sync::Arc;

use infer_kernels::{Dispatch, GeluMode, Kernels};
use infer_tensor::{Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::graph::{Acts, Graph};
use crate::options::LoadOptions;
use crate::runner::Runner;
use crate::source::Source;
use crate::step::{AttnSpec, Qkv, Step};
use crate::weights::WeightLoader;

struct Layer {
    ln1_w: Tensor,
    ln1_b: Tensor,
    /// c_attn: the q, k and v projections in one weight.
    qkv: Qkv,
    bq: Tensor,
    bk: Tensor,
    bv: Tensor,
    wo: Tensor,
    bo: Tensor,
    ln2_w: Tensor,
    ln2_b: Tensor,
    fc: Tensor,
    b_fc: Tensor,
    proj: Tensor,
    b_proj: Tensor,
}

/// GPT-2's weights and activations.
pub struct Gpt2 {
    cfg: ModelConfig,
    wte: Tensor,
    wpe: Tensor,
    ln_f_w: Tensor,
    ln_f_b: Tensor,
    lm_head: Option<Tensor>,
    layers: Vec<Layer>,
    gelu: GeluMode,
    acts: Acts,
}

/// A GPT-2 model ready to run.
pub type Gpt2Model = Runner<Gpt2>;

impl Runner<Gpt2> {
    pub fn load(
        src: &Source,
        cfg: ModelConfig,
        kernels: Arc<Kernels>,
        opts: &LoadOptions,
    ) -> Result<Gpt2Model> {
        let graph = Gpt2::load(src, cfg, &kernels.dev, opts)?;
        Runner::new(kernels, graph, opts)
    }
}

impl Gpt2 {
    pub fn load(
        src: &Source,
        cfg: ModelConfig,
        dev: &Arc<Device>,
        opts: &LoadOptions,
    ) -> Result<Gpt2> {
        let (h, nh, inter) = (cfg.hidden, cfg.n_heads, cfg.intermediate);
        if cfg.n_kv_heads != nh || cfg.head_dim * nh != h {
            return Err(ModelError::Invalid(format!(
                "GPT-2 needs head_dim * heads == hidden and no grouped KV heads (got {} x {} \
                 for {h}, {} KV heads)",
                cfg.head_dim, nh, cfg.n_kv_heads
            )));
        }
        if cfg.ext.scale_attn_by_layer {
            return Err(ModelError::Invalid(
                "GPT-2 `scale_attn_by_inverse_layer_idx: true` is not supported".into(),
            ));
        }
        let gelu = match cfg.ext.activation.as_deref() {
            None | Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") => GeluMode::Tanh,
            Some("gelu") => GeluMode::Erf,
            Some(other) => {
                return Err(ModelError::Invalid(format!(
                    "GPT-2 activation_function `{other}` is not supported (gelu_new, gelu)"
                )));
            }
        };
        let capacity = opts.capacity(&cfg);
        if capacity > cfg.max_position {
            return Err(ModelError::Invalid(format!(
                "context {capacity} is longer than GPT-2's {} learned positions (n_positions)",
                cfg.max_position
            )));
        }
        // Hugging Face GPT2LMHeadModel files say `transformer.`; the original GPT2Model
        // checkpoints (openai-community/gpt2) have no prefix. GGUF names map from the former.
        let pre = if !src.has("transformer.wte.weight") && src.has("wte.weight") {
            ""
        } else {
            "transformer."
        };
        // Conv1D weights are (in, out) in Hugging Face files, (out, in) in GGUF.
        let conv_t = !matches!(src, Source::Gguf(_));
        let w = WeightLoader::new(src, dev.clone(), &cfg, opts, 4 + cfg.n_layers * 12);
        let wte = w.matrix(&format!("{pre}wte.weight"), &[cfg.vocab_size, h])?;
        let wpe = w.matrix(&format!("{pre}wpe.weight"), &[cfg.max_position, h])?;
        let lm_head = if cfg.tie_embeddings || !src.has("lm_head.weight") {
            None
        } else {
            Some(w.matrix("lm_head.weight", &[cfg.vocab_size, h])?)
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = |s: &str| format!("{pre}h.{i}.{s}");
            let one = |name: &str, rows: usize, cols: usize| -> Result<Tensor> {
                let mut v = w.matrix_split(&p(name), &[rows], cols, conv_t)?;
                Ok(v.pop().expect("one part"))
            };
            let qkv = w.qkv_stacked(&p("attn.c_attn.weight"), [h, h, h], h, conv_t)?;
            let [bq, bk, bv]: [Tensor; 3] = w
                .vector_split(&p("attn.c_attn.bias"), &[h, h, h])?
                .try_into()
                .expect("three parts");
            layers.push(Layer {
                ln1_w: w.vector(&p("ln_1.weight"), h)?,
                ln1_b: w.vector(&p("ln_1.bias"), h)?,
                qkv,
                bq,
                bk,
                bv,
                wo: one("attn.c_proj.weight", h, h)?,
                bo: w.vector(&p("attn.c_proj.bias"), h)?,
                ln2_w: w.vector(&p("ln_2.weight"), h)?,
                ln2_b: w.vector(&p("ln_2.bias"), h)?,
                fc: one("mlp.c_fc.weight", inter, h)?,
                b_fc: w.vector(&p("mlp.c_fc.bias"), inter)?,
                proj: one("mlp.c_proj.weight", h, inter)?,
                b_proj: w.vector(&p("mlp.c_proj.bias"), h)?,
            });
        }
        let ln_f_w = w.vector(&format!("{pre}ln_f.weight"), h)?;
        let ln_f_b = w.vector(&format!("{pre}ln_f.bias"), h)?;
        w.finish();
        let acts = Acts::new(dev, &cfg, opts.rows(&cfg))?;
        Ok(Gpt2 {
            cfg,
            wte,
            wpe,
            ln_f_w,
            ln_f_b,
            lm_head,
            layers,
            gelu,
            acts,
        })
    }
}

impl Graph for Gpt2 {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn acts(&self) -> &Acts {
        &self.acts
    }

    fn head(&self) -> (&Tensor, Option<f32>) {
        (self.lm_head.as_ref().unwrap_or(&self.wte), None)
    }

    fn body(&self, s: &Step) -> Result<Vec<Dispatch>> {
        let (k, n) = (s.k, s.n);
        let a = &self.acts;
        let c = &self.cfg;
        let (h, inter, eps) = (c.hidden, c.intermediate, c.rms_eps);
        let mut spec = AttnSpec::of(c);
        spec.window = 0;
        let mut g = Vec::new();
        g.extend(k.embedding(&self.wte, s.ids(), n, &a.x)?);
        g.extend(k.embedding(&self.wpe, s.positions(), n, &a.o)?);
        g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
        for (i, l) in self.layers.iter().enumerate() {
            g.extend(k.layer_norm(&a.x, [&l.ln1_w, &l.ln1_b], &a.xn, n, h, eps)?);
            g.extend(s.qkv(&a.xn, &l.qkv, &a.q, &a.k, &a.v)?);
            for (b, t) in [(&l.bq, &a.q), (&l.bk, &a.k), (&l.bv, &a.v)] {
                g.extend(k.add(t, b, n * h, h)?);
            }
            g.extend(s.attention(i, [&a.q, &a.k, &a.v], &a.attn, &spec)?);
            g.extend(s.linear(&a.attn, &l.wo, &a.o)?);
            g.extend(k.add(&a.o, &l.bo, n * h, h)?);
            g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
            g.extend(k.layer_norm(&a.x, [&l.ln2_w, &l.ln2_b], &a.xn, n, h, eps)?);
            g.extend(s.linear(&a.xn, &l.fc, &a.up)?);
            g.extend(k.add(&a.up, &l.b_fc, n * inter, inter)?);
            g.extend(k.gelu(&a.up, &a.act, n * inter, self.gelu)?);
            g.extend(s.linear(&a.act, &l.proj, &a.o)?);
            g.extend(k.add(&a.o, &l.b_proj, n * h, h)?);
            g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
        }
        g.extend(k.layer_norm(&a.x, [&self.ln_f_w, &self.ln_f_b], &a.xn, n, h, eps)?);
        Ok(g)
    }
}
