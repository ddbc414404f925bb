//! Phi-3 / Phi-3.5 (`Phi3ForCausalLM`): the Llama block with fused projections
//! (`qkv_proj` rows = q, k, v; `gate_up_proj` rows = gate, up; split by rows on load, GGUF's
//! `attn_qkv` / `ffn_up` alike), partial or full rotary, an optional sliding window, and
//! LongRoPE (`rope_type: longrope`, formerly `su`).
//!
//! LongRoPE as transformers runs it: the inverse frequencies are divided by `short_factor`
//! while the sequence is at most `original_max_position_embeddings` long, by `long_factor`
//! beyond; cos and sin are multiplied by the attention factor. When generation crosses over,
//! transformers drops the cache and recomputes the whole sequence with the long factors; so
//! here `begin()` rewrites the rope table and asks the runner to replay the cached tokens.
//!
//! ```text
//! x = embed[ids]                                   (n, hidden)
//! for each layer:
//!     xn = rms_norm(x) * attn_norm                 (n, hidden)
//!     q, k, v = xn Wq^T, xn Wk^T, xn Wv^T          rows of qkv_proj: (n, heads*hd), (n, kv*hd) x2
//!     q, k = rope(q, k) on the first rotary_dim dimensions of each head
//!     k_cache, v_cache[pos..pos+n] = k, v          (kv, capacity, hd)
//!     a = attention(q, caches; window)             (n, heads*hd)
//!     x += a Wo^T                                  (n, hidden)
//!     xn = rms_norm(x) * ffn_norm
//!     x += (silu(xn Wg^T) * xn Wu^T) Wd^T          rows of gate_up_proj, via (n, inter)
//! logits = rms_norm(x[n-1]) * norm  W_out^T        (vocab)
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use infer_kernels::{AttentionParams, Dispatch, Kernels};
use infer_tensor::reference::rope_table;
use infer_tensor::{DType, Device, Tensor};

use crate::config::{LongRope, ModelConfig};
use crate::error::{ModelError, Result};
use crate::model::Output;
use crate::runner::{Graph, Io, LoadOptions, Runner, WeightLoader};
use crate::source::Source;

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
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
    attn: Tensor, // (B, heads * hd)
    o: Tensor,    // (B, hidden)
    gate: Tensor, // (B, inter)
    up: Tensor,   // (B, inter)
    act: Tensor,  // (B, inter)
}

/// The two LongRoPE tables and which one `rope_cs` holds now.
struct LongRopeTables {
    /// (capacity, rotary_dim) each.
    short: Vec<f32>,
    long: Vec<f32>,
    original_max_position: usize,
    using_long: AtomicBool,
}

/// Phi-3's weights, caches and activations.
pub struct Phi3 {
    cfg: ModelConfig,
    embed: Tensor,
    norm: Tensor,
    lm_head: Option<Tensor>,
    layers: Vec<Layer>,
    /// (capacity, rotary_dim) (cos, sin) pairs.
    rope_cs: Tensor,
    longrope: Option<LongRopeTables>,
    acts: Acts,
}

/// A Phi-3 model ready to run.
pub type Phi3Model = Runner<Phi3>;

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

impl Runner<Phi3> {
    pub fn load(
        src: &Source,
        cfg: ModelConfig,
        kernels: Arc<Kernels>,
        opts: &LoadOptions,
    ) -> Result<Phi3Model> {
        let dev = kernels.dev.clone();
        let (h, hd, nh, nkv, inter) = (
            cfg.hidden,
            cfg.head_dim,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.intermediate,
        );
        let io = Io::new(&dev, &cfg, opts)?;
        let w = WeightLoader::new(src, dev.clone(), opts, 3 + cfg.n_layers * 6);
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
            let qkv = w.matrix_split(
                &p("self_attn.qkv_proj.weight"),
                &[nh * hd, nkv * hd, nkv * hd],
                h,
                false,
            )?;
            let gate_up =
                w.matrix_split(&p("mlp.gate_up_proj.weight"), &[inter, inter], h, false)?;
            let [wq, wk, wv]: [Tensor; 3] = qkv.try_into().expect("three parts");
            let [gate, up]: [Tensor; 2] = gate_up.try_into().expect("two parts");
            layers.push(Layer {
                attn_norm: w.vector(&p("input_layernorm.weight"), h)?,
                wq,
                wk,
                wv,
                wo: w.matrix(&p("self_attn.o_proj.weight"), &[h, nh * hd])?,
                ffn_norm: w.vector(&p("post_attention_layernorm.weight"), h)?,
                gate,
                up,
                down: w.matrix(&p("mlp.down_proj.weight"), &[h, inter])?,
                k_cache: w.kv_cache("k", i, &cfg, io.capacity)?,
                v_cache: w.kv_cache("v", i, &cfg, io.capacity)?,
            });
        }
        w.finish();
        let (rope_cs, longrope) = match &cfg.ext.longrope {
            None => (w.rope_table(&cfg, io.capacity)?, None),
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
                let short = longrope_table(&cfg, &lr.short_factor, lr, io.capacity);
                let long = longrope_table(&cfg, &lr.long_factor, lr, io.capacity);
                let t = Tensor::from_f32(&dev, "rope_cs", &[io.capacity, cfg.rotary_dim], &short)?;
                let tables = LongRopeTables {
                    short,
                    long,
                    original_max_position: lr.original_max_position,
                    using_long: AtomicBool::new(false),
                };
                (t, Some(tables))
            }
        };
        let b = io.max_batch;
        let z = |name: &str, shape: &[usize]| Tensor::zeros(&dev, name, shape, DType::F32);
        let acts = Acts {
            x: z("x", &[b, h])?,
            xn: z("xn", &[b, h])?,
            q: z("q", &[b, nh * hd])?,
            k: z("k", &[b, nkv * hd])?,
            v: z("v", &[b, nkv * hd])?,
            attn: z("attn", &[b, nh * hd])?,
            o: z("o", &[b, h])?,
            gate: z("gate", &[b, inter])?,
            up: z("up", &[b, inter])?,
            act: z("act", &[b, inter])?,
        };
        let graph = Phi3 {
            cfg,
            embed,
            norm,
            lm_head,
            layers,
            rope_cs,
            longrope,
            acts,
        };
        Runner::new(kernels, io, graph)
    }
}

impl Graph for Phi3 {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// LongRoPE: a forward call that ends past original_max_position_embeddings uses the
    /// long factors, else the short ones. On a switch with tokens already cached, the cache
    /// is recomputed with the new table (transformers' Phi-3 generate() does the same).
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
            g.extend(k.rope(&a.q, &self.rope_cs, &io.pos, n, nh, hd, c.rope_mode)?);
            g.extend(k.rope(&a.k, &self.rope_cs, &io.pos, n, nkv, hd, c.rope_mode)?);
            g.extend(k.kv_write(
                &a.k,
                &a.v,
                &l.k_cache,
                &l.v_cache,
                &io.pos,
                n,
                nkv,
                hd,
                io.capacity,
            )?);
            g.extend(k.attention(&a.q, &l.k_cache, &l.v_cache, &a.attn, &io.pos, &attn)?);
            g.extend(k.linear(&a.attn, n, &l.wo, &a.o)?);
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
