//! What every architecture shares: loading weights with a progress bar, the per-step
//! inputs and outputs (`Io`), the output head, and `Runner`, which turns an architecture's
//! graph builder into a [`Model`]: chunked prefill, one command buffer per step, the decode
//! graph built once and replayed, and only the token id or the logits read back.

use std::sync::Arc;

use infer_kernels::{Dispatch, Kernels};
use infer_tensor::reference::{rope_inv_freq, rope_table};
use infer_tensor::{DType, Device, Tensor, tensor::map_read, wgpu};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::{MAX_VERIFY, Model, Output, StepOut};
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

/// Uploads weights by Hugging Face name, once, with a progress bar.
pub(crate) struct WeightLoader<'a> {
    pub src: &'a Source,
    pub dev: Arc<Device>,
    quant: Option<DType>,
    bar: indicatif::ProgressBar,
}

impl<'a> WeightLoader<'a> {
    pub fn new(src: &'a Source, dev: Arc<Device>, opts: &LoadOptions, n_tensors: usize) -> Self {
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
        WeightLoader {
            src,
            dev,
            quant: opts.quant,
            bar,
        }
    }

    /// A weight matrix `(rows, cols)`, kept in its stored dtype unless `--quant` asks
    /// otherwise (and its rows are whole blocks of that dtype).
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let mut raw = self.src.get(name, shape)?;
        if let Some(q) = self.quant
            && raw.dtype != q
            && q.bytes_for(shape[shape.len() - 1]).is_some()
        {
            raw = raw.convert(q)?;
        }
        self.bar.inc(1);
        Ok(Tensor::upload(
            &self.dev, name, shape, raw.dtype, &raw.bytes,
        )?)
    }

    /// A vector (norm weight, bias) as f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        let raw = self.src.get(name, &[len])?;
        Ok(Tensor::from_f32(&self.dev, name, &[len], &raw.to_f32())?)
    }

    /// A vector that only some checkpoints have (biases).
    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Tensor>> {
        if self.src.has(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// One layer's K or V cache: `(n_kv, capacity, head_dim)` f32.
    pub fn kv_cache(
        &self,
        what: &str,
        layer: usize,
        cfg: &ModelConfig,
        capacity: usize,
    ) -> Result<Tensor> {
        Ok(Tensor::zeros(
            &self.dev,
            &format!("{what}_cache.{layer}"),
            &[cfg.n_kv_heads, capacity, cfg.head_dim],
            DType::F32,
        )?)
    }

    /// The `(capacity, rotary_dim)` table of (cos, sin) pairs for the rope kernel.
    pub fn rope_table(&self, cfg: &ModelConfig, capacity: usize) -> Result<Tensor> {
        let mut inv_freq = rope_inv_freq(cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling);
        if let Source::Gguf(g) = self.src
            && let Ok(info) = g.tensor("rope_freqs.weight")
        {
            // llama.cpp stores Llama 3.1 frequency scaling as per-dimension divisors.
            let d = infer_tensor::reference::dequantize(
                g.dtype(info)?,
                g.tensor_data(info)?,
                info.n_elems() as usize,
            );
            if d.len() == inv_freq.len() {
                inv_freq.iter_mut().zip(d).for_each(|(f, d)| *f /= d);
            }
        }
        let cs = rope_table(&inv_freq, capacity, 1.0);
        Ok(Tensor::from_f32(
            &self.dev,
            "rope_cs",
            &[capacity, cfg.rotary_dim],
            &cs,
        )?)
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The inputs and outputs of a step, shared by every architecture.
pub struct Io {
    /// (B) u32: the new tokens.
    pub ids: Tensor,
    /// (1) u32: the position of the first new token.
    pub pos: Tensor,
    /// (V, vocab): V = min(MAX_VERIFY, B) rows of logits.
    pub logits: Tensor,
    /// (V) u32: argmax per row.
    pub token: Tensor,
    staging: wgpu::Buffer,
    pub capacity: usize,
    /// B: most tokens per step.
    pub max_batch: usize,
    pub vocab: usize,
}

impl Io {
    pub fn new(dev: &Device, cfg: &ModelConfig, opts: &LoadOptions) -> Result<Io> {
        let capacity = Self::capacity(cfg, opts);
        let b = opts.max_batch.clamp(1, capacity);
        let v = b.min(MAX_VERIFY);
        Ok(Io {
            ids: Tensor::zeros(dev, "ids", &[b], DType::U32)?,
            pos: Tensor::zeros(dev, "pos", &[1], DType::U32)?,
            logits: Tensor::zeros(dev, "logits", &[v, cfg.vocab_size], DType::F32)?,
            token: Tensor::zeros(dev, "token", &[v], DType::U32)?,
            staging: dev.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: (v * cfg.vocab_size * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            capacity,
            max_batch: b,
            vocab: cfg.vocab_size,
        })
    }

    pub fn capacity(cfg: &ModelConfig, opts: &LoadOptions) -> usize {
        opts.context.unwrap_or(cfg.max_position.min(4096)).max(1)
    }

    /// Appends the output head over `xn` (`(n, hidden)`, already normed): `head` applied to
    /// the last row (or every row), then the argmax when `out` asks for tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn head(
        &self,
        k: &Kernels,
        g: &mut Vec<Dispatch>,
        xn: &Tensor,
        hidden: usize,
        n: usize,
        head: &Tensor,
        out: Output,
    ) -> Result<()> {
        let v = self.vocab;
        if out.all_positions() {
            g.extend(k.linear(xn, n, head, &self.logits)?);
            if out == Output::AllArgmax {
                for i in 0..n {
                    g.extend(k.argmax(&self.logits, i * v, v, &self.token, i)?);
                }
            }
        } else {
            g.extend(k.matvec(head, xn, (n - 1) * hidden, &self.logits, 0)?);
            if out == Output::Argmax {
                g.extend(k.argmax(&self.logits, 0, v, &self.token, 0)?);
            }
        }
        Ok(())
    }
}

/// An architecture's forward pass as a list of dispatches.
pub trait Graph: Send {
    fn config(&self) -> &ModelConfig;
    /// The dispatches of one step over `n` tokens whose ids and position are in `io`.
    fn build(&self, k: &Kernels, io: &Io, n: usize, out: Output) -> Result<Vec<Dispatch>>;
    /// Writes any per-step inputs of the architecture's own (e.g. position ids for learned
    /// position embeddings) before a step over `n` tokens starting at position `pos`.
    fn prepare(&self, _dev: &Device, _pos: usize, _n: usize) -> Result<()> {
        Ok(())
    }
}

/// Runs an architecture's [`Graph`] as a [`Model`].
pub struct Runner<G> {
    kernels: Arc<Kernels>,
    pub(crate) io: Io,
    pub(crate) graph: G,
    pos: usize,
    decode_graph: Option<Vec<Dispatch>>,
}

impl<G: Graph> Runner<G> {
    pub(crate) fn new(kernels: Arc<Kernels>, io: Io, graph: G) -> Result<Self> {
        kernels.dev.check("loading weights")?;
        Ok(Runner {
            kernels,
            io,
            graph,
            pos: 0,
            decode_graph: None,
        })
    }

    fn step(&mut self, tokens: &[u32], out: Output, read: bool) -> Result<StepOut> {
        let n = tokens.len();
        let dev = self.kernels.dev.clone();
        let io = &self.io;
        dev.queue
            .write_buffer(io.ids.buffer(), 0, bytemuck::cast_slice(tokens));
        dev.queue
            .write_buffer(io.pos.buffer(), 0, bytemuck::bytes_of(&(self.pos as u32)));
        self.graph.prepare(&dev, self.pos, n)?;
        let built;
        let graph: &[Dispatch] = if n == 1 && out == Output::Argmax {
            if self.decode_graph.is_none() {
                self.decode_graph = Some(self.graph.build(&self.kernels, io, 1, out)?);
            }
            self.decode_graph.as_deref().expect("just built")
        } else {
            built = self.graph.build(&self.kernels, io, n, out)?;
            &built
        };
        let read_bytes = match out {
            Output::Argmax => 4,
            Output::Logits => (io.vocab * 4) as u64,
            Output::AllArgmax => (n * 4) as u64,
            Output::AllLogits => (n * io.vocab * 4) as u64,
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
                    Output::Argmax | Output::AllArgmax => io.token.buffer(),
                    Output::Logits | Output::AllLogits => io.logits.buffer(),
                };
                enc.copy_buffer_to_buffer(src, 0, &io.staging, 0, read_bytes);
            }
            dev.queue.submit([enc.finish()]);
        })?;
        self.pos += n;
        if !read {
            dev.wait()?;
            return Ok(StepOut::Logits(vec![]));
        }
        let bytes = map_read(&dev, &io.staging, read_bytes)?;
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

impl<G: Graph> Model for Runner<G> {
    fn config(&self) -> &ModelConfig {
        self.graph.config()
    }

    fn position(&self) -> usize {
        self.pos
    }

    fn capacity(&self) -> usize {
        self.io.capacity
    }

    fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Prompts longer than the batch size go in chunks; all-position outputs are limited
    /// to one step of at most [`MAX_VERIFY`] tokens.
    fn forward(&mut self, tokens: &[u32], out: Output) -> Result<StepOut> {
        if tokens.is_empty() {
            return Err(ModelError::Invalid("forward on zero tokens".into()));
        }
        if self.pos + tokens.len() > self.io.capacity {
            return Err(ModelError::PromptTooLong {
                tokens: self.pos + tokens.len(),
                context: self.io.capacity,
            });
        }
        let limit = self.io.max_batch.min(MAX_VERIFY);
        if out.all_positions() && tokens.len() > limit {
            return Err(ModelError::Invalid(format!(
                "outputs at every position are limited to {limit} tokens, got {}",
                tokens.len()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.io.vocab) {
            return Err(ModelError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.io.vocab
            )));
        }
        let chunks: Vec<&[u32]> = tokens.chunks(self.io.max_batch).collect();
        let last = chunks.len() - 1;
        let mut result = None;
        for (ci, chunk) in chunks.into_iter().enumerate() {
            let mode = if ci == last { out } else { Output::Logits };
            result = Some(self.step(chunk, mode, ci == last)?);
        }
        Ok(result.expect("at least one chunk"))
    }
}
