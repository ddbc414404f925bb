//! GPT-2 (`GPT2LMHeadModel`): learned absolute position embeddings, pre-LayerNorm with bias,
//! multi-head attention from a fused `c_attn`, a gelu (tanh) MLP, and the head tied to the
//! token embeddings. Hugging Face stores the projections as Conv1D, `(in, out)`: transposed
//! relative to Linear, so they are transposed on load (llama.cpp's GGUF already stores them
//! `(out, in)`). The fused q/k/v weight and bias are split by rows on load.
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

use infer_kernels::{AttentionParams, Dispatch, GeluMode, Kernels};
use infer_tensor::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::Output;
use crate::runner::{Graph, Io, LoadOptions, Runner, WeightLoader};
use crate::source::Source;

struct Layer {
    ln1_w: Tensor,
    ln1_b: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
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
    k_cache: Tensor,
    v_cache: Tensor,
}

/// Activation buffers, sized for B = `max_batch` tokens, allocated once.
struct Acts {
    x: Tensor,    // (B, hidden) residual stream
    xn: Tensor,   // (B, hidden) normed
    q: Tensor,    // (B, hidden)
    k: Tensor,    // (B, hidden)
    v: Tensor,    // (B, hidden)
    attn: Tensor, // (B, hidden)
    o: Tensor,    // (B, hidden) projection outputs, position embeddings
    up: Tensor,   // (B, inter)
    act: Tensor,  // (B, inter)
}

/// GPT-2's weights, caches and activations.
pub struct Gpt2 {
    cfg: ModelConfig,
    wte: Tensor,
    wpe: Tensor,
    ln_f_w: Tensor,
    ln_f_b: Tensor,
    lm_head: Option<Tensor>,
    layers: Vec<Layer>,
    /// (B) u32: the positions of the step's tokens, written by `prepare()`.
    pos_ids: Tensor,
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
        let dev = kernels.dev.clone();
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
        let io = Io::new(&dev, &cfg, opts)?;
        if io.capacity > cfg.max_position {
            return Err(ModelError::Invalid(format!(
                "context {} is longer than GPT-2's {} learned positions (n_positions)",
                io.capacity, cfg.max_position
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
        let w = WeightLoader::new(src, dev.clone(), opts, 4 + cfg.n_layers * 12);
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
            let [wq, wk, wv]: [Tensor; 3] = w
                .matrix_split(&p("attn.c_attn.weight"), &[h, h, h], h, conv_t)?
                .try_into()
                .expect("three parts");
            let [bq, bk, bv]: [Tensor; 3] = w
                .vector_split(&p("attn.c_attn.bias"), &[h, h, h])?
                .try_into()
                .expect("three parts");
            layers.push(Layer {
                ln1_w: w.vector(&p("ln_1.weight"), h)?,
                ln1_b: w.vector(&p("ln_1.bias"), h)?,
                wq,
                wk,
                wv,
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
                k_cache: w.kv_cache("k", i, &cfg, io.capacity)?,
                v_cache: w.kv_cache("v", i, &cfg, io.capacity)?,
            });
        }
        let ln_f_w = w.vector(&format!("{pre}ln_f.weight"), h)?;
        let ln_f_b = w.vector(&format!("{pre}ln_f.bias"), h)?;
        w.finish();
        let b = io.max_batch;
        let z = |name: &str, shape: &[usize]| Tensor::zeros(&dev, name, shape, DType::F32);
        let acts = Acts {
            x: z("x", &[b, h])?,
            xn: z("xn", &[b, h])?,
            q: z("q", &[b, h])?,
            k: z("k", &[b, h])?,
            v: z("v", &[b, h])?,
            attn: z("attn", &[b, h])?,
            o: z("o", &[b, h])?,
            up: z("up", &[b, inter])?,
            act: z("act", &[b, inter])?,
        };
        let pos_ids = Tensor::zeros(&dev, "pos_ids", &[b], DType::U32)?;
        let graph = Gpt2 {
            cfg,
            wte,
            wpe,
            ln_f_w,
            ln_f_b,
            lm_head,
            layers,
            pos_ids,
            gelu,
            acts,
        };
        Runner::new(kernels, io, graph)
    }
}

impl Graph for Gpt2 {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The learned position embedding reads positions pos..pos+n from `pos_ids`.
    fn prepare(&self, dev: &Device, pos: usize, n: usize) -> Result<()> {
        let ids: Vec<u32> = (pos..pos + n).map(|p| p as u32).collect();
        dev.queue
            .write_buffer(self.pos_ids.buffer(), 0, bytemuck::cast_slice(&ids));
        Ok(())
    }

    fn build(&self, k: &Kernels, io: &Io, n: usize, out: Output) -> Result<Vec<Dispatch>> {
        let a = &self.acts;
        let c = &self.cfg;
        let (h, hd, nh, inter, eps) = (c.hidden, c.head_dim, c.n_heads, c.intermediate, c.rms_eps);
        let mut g = Vec::new();
        g.extend(k.embedding(&self.wte, &io.ids, n, &a.x)?);
        g.extend(k.embedding(&self.wpe, &self.pos_ids, n, &a.o)?);
        g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
        let attn = AttentionParams {
            n_tokens: n,
            n_heads: nh,
            n_kv: nh,
            head_dim: hd,
            capacity: io.capacity,
            scale: 1.0 / (hd as f32).sqrt(),
            softcap: 0.0,
            window: 0,
        };
        for l in &self.layers {
            g.extend(k.layer_norm(&a.x, &l.ln1_w, &l.ln1_b, &a.xn, n, h, eps)?);
            for (wt, b, t) in [
                (&l.wq, &l.bq, &a.q),
                (&l.wk, &l.bk, &a.k),
                (&l.wv, &l.bv, &a.v),
            ] {
                g.extend(k.linear(&a.xn, n, wt, t)?);
                g.extend(k.add(t, b, n * h, h)?);
            }
            g.extend(k.kv_write(
                &a.k,
                &a.v,
                &l.k_cache,
                &l.v_cache,
                &io.pos,
                n,
                nh,
                hd,
                io.capacity,
            )?);
            g.extend(k.attention(&a.q, &l.k_cache, &l.v_cache, &a.attn, &io.pos, &attn)?);
            g.extend(k.linear(&a.attn, n, &l.wo, &a.o)?);
            g.extend(k.add(&a.o, &l.bo, n * h, h)?);
            g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
            g.extend(k.layer_norm(&a.x, &l.ln2_w, &l.ln2_b, &a.xn, n, h, eps)?);
            g.extend(k.linear(&a.xn, n, &l.fc, &a.up)?);
            g.extend(k.add(&a.up, &l.b_fc, n * inter, inter)?);
            g.extend(k.gelu(&a.up, &a.act, n * inter, self.gelu)?);
            g.extend(k.linear(&a.act, n, &l.proj, &a.o)?);
            g.extend(k.add(&a.o, &l.b_proj, n * h, h)?);
            g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
        }
        g.extend(k.layer_norm(&a.x, &self.ln_f_w, &self.ln_f_b, &a.xn, n, h, eps)?);
        let head = self.lm_head.as_ref().unwrap_or(&self.wte);
        io.head(k, &mut g, &a.xn, h, n, head, out)?;
        Ok(g)
    }
}
