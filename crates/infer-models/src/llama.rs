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
use infer_tensor::reference::{rope_inv_freq, rope_table};
use infer_tensor::{DType, Tensor, tensor::map_read, wgpu};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::source::Source;

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
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            quant: None,
            context: None,
            max_batch: 256,
            progress: false,
        }
    }
}

pub use crate::model::{MAX_VERIFY, Model, Output, StepOut};

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

/// Activation buffers, sized for `max_batch` tokens, allocated once.
struct Acts {
    ids: Tensor,    // (B) u32
    pos: Tensor,    // (1) u32: position of the first new token
    x: Tensor,      // (B, hidden) residual stream
    xn: Tensor,     // (B, hidden) normed
    q: Tensor,      // (B, heads * hd)
    k: Tensor,      // (B, kv * hd)
    v: Tensor,      // (B, kv * hd)
    qn: Tensor,     // (B, heads * hd) q after per-head norm (Qwen3)
    kn: Tensor,     // (B, kv * hd)
    attn: Tensor,   // (B, heads * hd)
    o: Tensor,      // (B, hidden) output of a projection back to hidden
    gate: Tensor,   // (B, inter)
    up: Tensor,     // (B, inter)
    act: Tensor,    // (B, inter)
    logits: Tensor, // (V, vocab), V = min(MAX_VERIFY, B) rows of logits
    token: Tensor,  // (V) u32 argmax per row
}

pub struct LlamaModel {
    pub cfg: ModelConfig,
    kernels: Arc<Kernels>,
    embed: Tensor,
    norm: Tensor,
    lm_head: Option<Tensor>,
    layers: Vec<Layer>,
    rope_cs: Tensor,
    acts: Acts,
    capacity: usize,
    max_batch: usize,
    pos: usize,
    decode_graph: Option<Vec<Dispatch>>,
    staging: wgpu::Buffer,
}

impl LlamaModel {
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
        let capacity = opts.context.unwrap_or(cfg.max_position.min(4096)).max(1);
        let n_tensors = 3 + cfg.n_layers * 9;
        let bar = if opts.progress {
            indicatif::ProgressBar::new(n_tensors as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "loading {bar:40} {pos}/{len} tensors {elapsed}",
                )
                .expect("valid template"),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let matrix = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let mut raw = src.get(name, shape)?;
            if let Some(q) = opts.quant
                && raw.dtype != q
                && q.bytes_for(shape[1]).is_some()
            {
                raw = raw.convert(q)?;
            }
            bar.inc(1);
            Ok(Tensor::upload(&dev, name, shape, raw.dtype, &raw.bytes)?)
        };
        let vector = |name: &str, len: usize| -> Result<Tensor> {
            let raw = src.get(name, &[len])?;
            Ok(Tensor::from_f32(&dev, name, &[len], &raw.to_f32())?)
        };
        let opt_vector = |name: &str, len: usize| -> Result<Option<Tensor>> {
            if src.has(name) {
                vector(name, len).map(Some)
            } else {
                Ok(None)
            }
        };
        let embed = matrix("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let lm_head = if cfg.tie_embeddings || !src.has("lm_head.weight") {
            None
        } else {
            Some(matrix("lm_head.weight", &[cfg.vocab_size, h])?)
        };
        let norm = vector("model.norm.weight", h)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let (q_norm, k_norm) = if cfg.arch.qk_norm {
                (
                    Some(vector(&p("self_attn.q_norm.weight"), hd)?),
                    Some(vector(&p("self_attn.k_norm.weight"), hd)?),
                )
            } else {
                (None, None)
            };
            let cache = |what: &str| {
                Tensor::zeros(
                    &dev,
                    &format!("{what}_cache.{i}"),
                    &[nkv, capacity, hd],
                    DType::F32,
                )
            };
            layers.push(Layer {
                attn_norm: vector(&p("input_layernorm.weight"), h)?,
                wq: matrix(&p("self_attn.q_proj.weight"), &[nh * hd, h])?,
                wk: matrix(&p("self_attn.k_proj.weight"), &[nkv * hd, h])?,
                wv: matrix(&p("self_attn.v_proj.weight"), &[nkv * hd, h])?,
                wo: matrix(&p("self_attn.o_proj.weight"), &[h, nh * hd])?,
                bq: opt_vector(&p("self_attn.q_proj.bias"), nh * hd)?,
                bk: opt_vector(&p("self_attn.k_proj.bias"), nkv * hd)?,
                bv: opt_vector(&p("self_attn.v_proj.bias"), nkv * hd)?,
                bo: opt_vector(&p("self_attn.o_proj.bias"), h)?,
                q_norm,
                k_norm,
                ffn_norm: vector(&p("post_attention_layernorm.weight"), h)?,
                gate: matrix(&p("mlp.gate_proj.weight"), &[inter, h])?,
                up: matrix(&p("mlp.up_proj.weight"), &[inter, h])?,
                down: matrix(&p("mlp.down_proj.weight"), &[h, inter])?,
                k_cache: cache("k")?,
                v_cache: cache("v")?,
            });
        }
        bar.finish_and_clear();

        let mut inv_freq = rope_inv_freq(cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling);
        if let Source::Gguf(g) = src
            && let Ok(info) = g.tensor("rope_freqs.weight")
        {
            // llama.cpp stores Llama 3.1 frequency scaling as per-dimension divisors.
            let raw = src_vector_f32(g, info)?;
            if raw.len() == inv_freq.len() {
                inv_freq.iter_mut().zip(raw).for_each(|(f, d)| *f /= d);
            }
        }
        let cs = rope_table(&inv_freq, capacity, 1.0);
        let rope_cs = Tensor::from_f32(&dev, "rope_cs", &[capacity, cfg.rotary_dim], &cs)?;

        let b = opts.max_batch.clamp(1, capacity);
        let z = |name: &str, shape: &[usize]| Tensor::zeros(&dev, name, shape, DType::F32);
        let acts = Acts {
            ids: Tensor::zeros(&dev, "ids", &[b], DType::U32)?,
            pos: Tensor::zeros(&dev, "pos", &[1], DType::U32)?,
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
            logits: z("logits", &[b.min(MAX_VERIFY), cfg.vocab_size])?,
            token: Tensor::zeros(&dev, "token", &[b.min(MAX_VERIFY)], DType::U32)?,
        };
        let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: (b.min(MAX_VERIFY) * cfg.vocab_size * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        dev.check("loading weights")?;
        Ok(LlamaModel {
            cfg,
            kernels,
            embed,
            norm,
            lm_head,
            layers,
            rope_cs,
            acts,
            capacity,
            max_batch: b,
            pos: 0,
            decode_graph: None,
            staging,
        })
    }

    /// The dispatches of one step over `n` tokens (whose ids and position are in `acts`).
    fn build(&self, n: usize, out: Output) -> Result<Vec<Dispatch>> {
        let k = &self.kernels;
        let a = &self.acts;
        let c = &self.cfg;
        let (h, hd, nh, nkv) = (c.hidden, c.head_dim, c.n_heads, c.n_kv_heads);
        let mut g = Vec::new();
        g.extend(k.embedding(&self.embed, &a.ids, n, &a.x)?);
        let attn = AttentionParams {
            n_tokens: n,
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            capacity: self.capacity,
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
            g.extend(k.rope(q, &self.rope_cs, &a.pos, n, nh, hd, c.rope_mode)?);
            g.extend(k.rope(kk, &self.rope_cs, &a.pos, n, nkv, hd, c.rope_mode)?);
            g.extend(k.kv_write(
                kk,
                &a.v,
                &l.k_cache,
                &l.v_cache,
                &a.pos,
                n,
                nkv,
                hd,
                self.capacity,
            )?);
            g.extend(k.attention(q, &l.k_cache, &l.v_cache, &a.attn, &a.pos, &attn)?);
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
        let v = c.vocab_size;
        match out {
            Output::Argmax | Output::Logits => {
                g.extend(k.matvec(head, &a.xn, (n - 1) * h, &a.logits, 0)?);
                if out == Output::Argmax {
                    g.extend(k.argmax(&a.logits, 0, v, &a.token, 0)?);
                }
            }
            Output::AllArgmax | Output::AllLogits => {
                g.extend(k.linear(&a.xn, n, head, &a.logits)?);
                if out == Output::AllArgmax {
                    for i in 0..n {
                        g.extend(k.argmax(&a.logits, i * v, v, &a.token, i)?);
                    }
                }
            }
        }
        Ok(g)
    }

    fn step(&mut self, tokens: &[u32], out: Output, read: bool) -> Result<StepOut> {
        let n = tokens.len();
        let dev = self.kernels.dev.clone();
        dev.queue
            .write_buffer(self.acts.ids.buffer(), 0, bytemuck::cast_slice(tokens));
        dev.queue.write_buffer(
            self.acts.pos.buffer(),
            0,
            bytemuck::bytes_of(&(self.pos as u32)),
        );
        let built;
        let graph: &[Dispatch] = if n == 1 && out == Output::Argmax {
            if self.decode_graph.is_none() {
                self.decode_graph = Some(self.build(1, Output::Argmax)?);
            }
            self.decode_graph.as_deref().expect("just built")
        } else {
            built = self.build(n, out)?;
            &built
        };
        let read_bytes = match out {
            Output::Argmax => 4,
            Output::Logits => (self.cfg.vocab_size * 4) as u64,
            Output::AllArgmax => (n * 4) as u64,
            Output::AllLogits => (n * self.cfg.vocab_size * 4) as u64,
        };
        dev.scoped("forward step", || {
            let mut enc = dev.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in graph {
                    d.record(&mut pass);
                }
            }
            if read {
                let src = match out {
                    Output::Argmax | Output::AllArgmax => self.acts.token.buffer(),
                    Output::Logits | Output::AllLogits => self.acts.logits.buffer(),
                };
                enc.copy_buffer_to_buffer(src, 0, &self.staging, 0, read_bytes);
            }
            dev.queue.submit([enc.finish()]);
        })?;
        self.pos += n;
        if !read {
            dev.wait()?;
            return Ok(StepOut::Logits(vec![]));
        }
        let bytes = map_read(&dev, &self.staging, read_bytes)?;
        dev.check("forward step")?;
        Ok(match out {
            Output::Argmax => {
                StepOut::Token(u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")))
            }
            Output::AllArgmax => StepOut::Tokens(bytemuck::pod_collect_to_vec(&bytes)),
            Output::Logits | Output::AllLogits => {
                StepOut::Logits(bytemuck::pod_collect_to_vec(&bytes))
            }
        })
    }
}

impl Model for LlamaModel {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Tokens held in the KV cache.
    fn position(&self) -> usize {
        self.pos
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything after the first `pos` tokens (a new conversation at 0, or a
    /// rollback past rejected draft tokens).
    fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Runs `tokens` (appended at the current position) through the model and returns the
    /// last position's argmax or logits. Prompts longer than `max_batch` go in chunks.
    fn forward(&mut self, tokens: &[u32], out: Output) -> Result<StepOut> {
        if tokens.is_empty() {
            return Err(ModelError::Invalid("forward on zero tokens".into()));
        }
        if self.pos + tokens.len() > self.capacity {
            return Err(ModelError::PromptTooLong {
                tokens: self.pos + tokens.len(),
                context: self.capacity,
            });
        }
        if out.all_positions() && tokens.len() > self.max_batch.min(MAX_VERIFY) {
            return Err(ModelError::Invalid(format!(
                "outputs at every position are limited to {} tokens, got {}",
                self.max_batch.min(MAX_VERIFY),
                tokens.len()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(ModelError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        let chunks: Vec<&[u32]> = tokens.chunks(self.max_batch).collect();
        let last = chunks.len() - 1;
        let mut result = None;
        for (ci, chunk) in chunks.into_iter().enumerate() {
            let mode = if ci == last { out } else { Output::Logits };
            result = Some(self.step(chunk, mode, ci == last)?);
        }
        Ok(result.expect("at least one chunk"))
    }
}

fn src_vector_f32(
    g: &crate::gguf::GgufFile,
    info: &crate::gguf::GgufTensorInfo,
) -> Result<Vec<f32>> {
    let dt = g.dtype(info)?;
    let n = info.n_elems() as usize;
    Ok(infer_tensor::reference::dequantize(
        dt,
        g.tensor_data(info)?,
        n,
    ))
}
