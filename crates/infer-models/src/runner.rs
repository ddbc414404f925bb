//! What every architecture shares: loading weights with a progress bar, the per-step
//! inputs and outputs (`Io`), the output head, and `Runner`, which turns an architecture's
//! graph builder into a [`Model`]: chunked prefill, one command buffer per step, the decode
//! graph built once and replayed, and only the token id or the logits read back.

use std::sync::Arc;

use infer_kernels::{Dispatch, Kernels};
use infer_tensor::reference::{rope_inv_freq, rope_table};
use infer_tensor::tensor::{map_read, map_read_after};
use infer_tensor::{DType, Device, Tensor, wgpu};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::{MAX_TOPK, MAX_VERIFY, Model, Output, StepOut};
use crate::source::{RawTensor, Source};
use crate::step::{Acts, Kv, Qkv, Step};

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
    /// Most greedy steps [`Model::greedy_next`] chains ahead of the host (at most
    /// [`MAX_CHAIN`] - 1); `None`: by adapter type ([`chain_ahead`]).
    pub chain: Option<usize>,
}

impl LoadOptions {
    /// Positions the KV cache and the rope table cover.
    pub fn capacity(&self, cfg: &ModelConfig) -> usize {
        self.context.unwrap_or(cfg.max_position.min(4096)).max(1)
    }

    /// Most rows of one step: what the activation buffers hold.
    pub fn rows(&self, cfg: &ModelConfig) -> usize {
        self.max_batch.clamp(1, self.capacity(cfg))
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            quant: None,
            context: None,
            max_batch: 256,
            progress: false,
            chain: None,
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
        let raw = self.raw_matrix(name, shape)?;
        Ok(Tensor::upload_weights(
            &self.dev, name, shape, raw.dtype, &raw.bytes,
        )?)
    }

    /// A weight matrix's bytes as [`WeightLoader::matrix`] uploads them.
    fn raw_matrix(&self, name: &str, shape: &[usize]) -> Result<RawTensor<'a>> {
        let mut raw = self.src.get(name, shape)?;
        if let Some(q) = self.quant
            && raw.dtype != q
            && q.bytes_for(shape[shape.len() - 1]).is_some()
        {
            raw = raw.convert(q)?;
        }
        self.bar.inc(1);
        Ok(raw)
    }

    /// The q, k and v projections `names` (`(rows[i], cols)` each) as one weight stacking
    /// their rows (uploaded once, run as one dispatch), or as three where their dtypes
    /// differ (a file may store v at a higher precision).
    pub fn qkv(&self, names: [&str; 3], rows: [usize; 3], cols: usize) -> Result<Qkv> {
        let raws = [0, 1, 2].map(|i| self.raw_matrix(names[i], &[rows[i], cols]));
        let [q, k, v] = raws;
        let raws = [q?, k?, v?];
        if raws.iter().all(|r| r.dtype == raws[0].dtype) {
            let bytes: Vec<u8> = raws.iter().flat_map(|r| r.bytes.iter().copied()).collect();
            let n = rows.iter().sum();
            let name = format!("{}+k+v", names[0]);
            let w = Tensor::upload_weights(&self.dev, &name, &[n, cols], raws[0].dtype, &bytes)?;
            return Ok(Qkv::Fused { w, rows });
        }
        let up = |i: usize| -> Result<Tensor> {
            let r = &raws[i];
            Ok(Tensor::upload_weights(
                &self.dev,
                names[i],
                &[rows[i], cols],
                r.dtype,
                &r.bytes,
            )?)
        };
        Ok(Qkv::Separate([up(0)?, up(1)?, up(2)?]))
    }

    /// A checkpoint's fused q/k/v weight (`rows`: q's, k's, v's; see
    /// [`WeightLoader::matrix_split`] for `transposed`), uploaded as it is.
    pub fn qkv_stacked(
        &self,
        name: &str,
        rows: [usize; 3],
        cols: usize,
        transposed: bool,
    ) -> Result<Qkv> {
        let raw = self.stacked_raw(name, &rows, cols, transposed)?;
        let n = rows.iter().sum();
        let w = Tensor::upload_weights(&self.dev, name, &[n, cols], raw.dtype, &raw.bytes)?;
        self.bar.inc(1);
        Ok(Qkv::Fused { w, rows })
    }

    /// The token embeddings, the untied output head (see [`WeightLoader::lm_head`]) and the
    /// final norm of a `model.`-prefixed decoder (Llama, Phi-3, Gemma).
    pub fn ends(&self, cfg: &ModelConfig) -> Result<(Tensor, Option<Tensor>, Tensor)> {
        let embed = self.matrix("model.embed_tokens.weight", &[cfg.vocab_size, cfg.hidden])?;
        let lm_head = self.lm_head(cfg)?;
        let norm = self.vector("model.norm.weight", cfg.hidden)?;
        Ok((embed, lm_head, norm))
    }

    /// The untied output head `lm_head.weight`, or None when the model ties it to the
    /// token embeddings (or the file has none).
    pub fn lm_head(&self, cfg: &ModelConfig) -> Result<Option<Tensor>> {
        if cfg.tie_embeddings || !self.src.has("lm_head.weight") {
            Ok(None)
        } else {
            self.matrix("lm_head.weight", &[cfg.vocab_size, cfg.hidden])
                .map(Some)
        }
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

    /// A fused weight matrix split by rows into parts of `rows[i]` rows (q/k/v or gate/up
    /// projections), each kept in its stored dtype unless `--quant` asks otherwise. With
    /// `transposed` the stored tensor is `(cols, sum rows)` (GPT-2's Conv1D layout); it is
    /// transposed on load (float dtypes only).
    pub fn matrix_split(
        &self,
        name: &str,
        rows: &[usize],
        cols: usize,
        transposed: bool,
    ) -> Result<Vec<Tensor>> {
        let raw = self.stacked_raw(name, rows, cols, transposed)?;
        let row_bytes = raw.dtype.bytes_for(cols).expect("checked by stacked_raw");
        let mut out = Vec::with_capacity(rows.len());
        let mut start = 0;
        for (i, &n) in rows.iter().enumerate() {
            let bytes = &raw.bytes[start * row_bytes..(start + n) * row_bytes];
            out.push(Tensor::upload_weights(
                &self.dev,
                &format!("{name}[{i}]"),
                &[n, cols],
                raw.dtype,
                bytes,
            )?);
            start += n;
        }
        self.bar.inc(1);
        Ok(out)
    }

    /// A fused weight of `rows` (summed) x `cols` as [`WeightLoader::matrix_split`] loads
    /// it (transposed, converted for `--quant`), its rows whole blocks of its dtype.
    fn stacked_raw(
        &self,
        name: &str,
        rows: &[usize],
        cols: usize,
        transposed: bool,
    ) -> Result<RawTensor<'a>> {
        let total: usize = rows.iter().sum();
        let mut raw = if transposed {
            let raw = self.src.get(name, &[cols, total])?;
            if raw.dtype.is_quantized() {
                return Err(ModelError::BadTensor {
                    path: self.src.path(),
                    tensor: name.into(),
                    reason: format!("a transposed {} matrix is not supported", raw.dtype),
                });
            }
            let (dtype, x) = (raw.dtype, raw.to_f32());
            let mut t = vec![0f32; x.len()];
            for r in 0..cols {
                for c in 0..total {
                    t[c * cols + r] = x[r * total + c];
                }
            }
            RawTensor {
                name: name.into(),
                shape: vec![total, cols],
                dtype: DType::F32,
                bytes: std::borrow::Cow::Owned(bytemuck::cast_slice(&t).to_vec()),
            }
            .convert(dtype)?
        } else {
            let raw = self.src.get(name, &[total, cols])?;
            let dtype = raw.dtype;
            raw.convert(dtype)?
        };
        if let Some(q) = self.quant
            && raw.dtype != q
            && q.bytes_for(cols).is_some()
        {
            raw = raw.convert(q)?;
        }
        if raw.dtype.bytes_for(cols).is_none() {
            return Err(ModelError::BadTensor {
                path: self.src.path(),
                tensor: name.into(),
                reason: format!("rows of {cols} are not whole {} blocks", raw.dtype),
            });
        }
        Ok(raw)
    }

    /// A fused vector (bias) split into parts of `lens[i]` values, as f32.
    pub fn vector_split(&self, name: &str, lens: &[usize]) -> Result<Vec<Tensor>> {
        let total: usize = lens.iter().sum();
        let v = self.src.get(name, &[total])?.to_f32();
        let mut start = 0;
        lens.iter()
            .enumerate()
            .map(|(i, &n)| {
                let t = Tensor::from_f32(
                    &self.dev,
                    &format!("{name}[{i}]"),
                    &[n],
                    &v[start..start + n],
                );
                start += n;
                Ok(t?)
            })
            .collect()
    }
}

/// Most greedy steps a [`Runner`] keeps in flight ([`Model::greedy_next`]): the number of
/// read-back buffers in its ring.
pub const MAX_CHAIN: usize = 4;

/// The inputs and outputs of a step, shared by every architecture.
pub struct Io {
    /// (B) u32: the new tokens.
    pub ids: Tensor,
    /// (B) u32: the position of every new token (`pos..pos + n`); the kernels that take a
    /// first position (rope, kv_write, attention) read element 0.
    pub positions: Tensor,
    /// Per layer: the `(n_kv, capacity, head_dim)` f32 K and V caches.
    pub kv: Vec<(Tensor, Tensor)>,
    /// (V, vocab): V = min(MAX_VERIFY, B) rows of logits.
    pub logits: Tensor,
    /// (V) u32: argmax per row.
    pub token: Tensor,
    /// (2 * MAX_TOPK) u32: (logit bits, id) pairs of [`Output::TopK`], and its scratch.
    pub topk: Tensor,
    pub topk_scratch: Tensor,
    staging: wgpu::Buffer,
    /// [`MAX_CHAIN`] 4-byte read-back buffers, one per chained greedy step in flight.
    ring: Vec<wgpu::Buffer>,
    pub capacity: usize,
    /// B: most tokens per step.
    pub max_batch: usize,
    pub vocab: usize,
}

impl Io {
    pub fn new(dev: &Device, cfg: &ModelConfig, opts: &LoadOptions) -> Result<Io> {
        let capacity = opts.capacity(cfg);
        let b = opts.rows(cfg);
        let v = b.min(MAX_VERIFY);
        let cache = |what: &str, i: usize| {
            Tensor::zeros(
                dev,
                &format!("{what}_cache.{i}"),
                &[cfg.n_kv_heads, capacity, cfg.head_dim],
                DType::F32,
            )
        };
        let kv = (0..cfg.n_layers)
            .map(|i| Ok((cache("k", i)?, cache("v", i)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Io {
            ids: Tensor::zeros(dev, "ids", &[b], DType::U32)?,
            positions: Tensor::zeros(dev, "positions", &[b], DType::U32)?,
            kv,
            logits: Tensor::zeros(dev, "logits", &[v, cfg.vocab_size], DType::F32)?,
            token: Tensor::zeros(dev, "token", &[v], DType::U32)?,
            topk: Tensor::zeros(dev, "topk", &[2 * MAX_TOPK], DType::U32)?,
            topk_scratch: Tensor::zeros(
                dev,
                "topk_scratch",
                &[Kernels::topk_scratch_len(cfg.vocab_size, MAX_TOPK)],
                DType::U32,
            )?,
            staging: dev.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: (v * cfg.vocab_size * 4).max(8 * MAX_TOPK) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            ring: (0..MAX_CHAIN)
                .map(|i| {
                    dev.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&format!("token_ring.{i}")),
                        size: 16,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    })
                })
                .collect(),
            capacity,
            max_batch: b,
            vocab: cfg.vocab_size,
        })
    }

    /// Appends the output head over `xn` (`(n, hidden)`, already normed): `head` applied to
    /// the last row (or every row), the logits soft-capped (`c * tanh(l / c)`, Gemma 2) when
    /// `softcap` is set, then the argmax or top k when `out` asks for tokens.
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
        softcap: Option<f32>,
    ) -> Result<()> {
        let v = self.vocab;
        if out.all_positions() {
            g.extend(k.linear(xn, n, head, &self.logits)?);
            if let Some(c) = softcap {
                g.extend(k.softcap(&self.logits, n * v, c)?);
            }
            if out == Output::AllArgmax {
                for i in 0..n {
                    g.extend(k.argmax(&self.logits, i * v, v, &self.token, i)?);
                }
            }
        } else {
            g.extend(k.matvec(head, xn, (n - 1) * hidden, &self.logits, 0)?);
            if let Some(c) = softcap {
                g.extend(k.softcap(&self.logits, v, c)?);
            }
            if out == Output::Argmax {
                g.extend(k.argmax(&self.logits, 0, v, &self.token, 0)?);
            }
            if let Output::TopK(kk) = out {
                g.extend(k.topk(&self.logits, 0, v, kk, &self.topk_scratch, &self.topk)?);
            }
        }
        Ok(())
    }
}

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

/// Runs an architecture's [`Graph`] as a [`Model`].
pub struct Runner<G> {
    kernels: Arc<Kernels>,
    pub(crate) io: Io,
    pub(crate) graph: G,
    pos: usize,
    /// Graphs of short steps (decode, speculative verification), built once per shape and
    /// output and replayed; longer prefill steps are built per call.
    graphs: std::collections::HashMap<(usize, Output), Vec<Dispatch>>,
    /// The tokens in the KV cache (for [`Graph::begin`] replays).
    history: Vec<u32>,
    /// Chained greedy steps in flight ([`Model::greedy_next`]), oldest first: the ring slot
    /// its token is copied to and its submission. The oldest runs at `pos` on input
    /// `chain_input`; each later one on the argmax of the one before, copied on the GPU.
    chain: std::collections::VecDeque<(usize, wgpu::SubmissionIndex)>,
    chain_input: u32,
    /// The ring slot of the next chained step.
    next_slot: usize,
    /// Most steps chained ahead ([`LoadOptions::chain`]).
    max_ahead: usize,
    /// `INFER_PROFILE=1`: time every kernel of every step on the GPU (then run it again for
    /// real) and print a table to stderr.
    profile: bool,
}

impl<G: Graph> Runner<G> {
    /// Wraps a loaded graph with the per-step inputs, outputs and KV cache of one sequence
    /// (`opts` as the graph was loaded with).
    pub fn new(kernels: Arc<Kernels>, graph: G, opts: &LoadOptions) -> Result<Self> {
        let io = Io::new(&kernels.dev, graph.config(), opts)?;
        if graph.acts().rows < io.max_batch {
            return Err(ModelError::Invalid(format!(
                "activations hold {} rows, steps have up to {}",
                graph.acts().rows,
                io.max_batch
            )));
        }
        kernels.dev.check("loading weights")?;
        let max_ahead = opts
            .chain
            .unwrap_or_else(|| chain_ahead(&kernels))
            .min(MAX_CHAIN - 1);
        let profile = kernels.tuning().profile;
        Ok(Runner {
            kernels,
            io,
            graph,
            pos: 0,
            graphs: Default::default(),
            history: Vec::new(),
            chain: Default::default(),
            chain_input: 0,
            next_slot: 0,
            max_ahead,
            profile,
        })
    }

    /// The graph's body over `n` tokens of this sequence, then the head `out` asks for.
    fn build(&self, n: usize, out: Output) -> Result<Vec<Dispatch>> {
        let k = &self.kernels;
        let s = Step {
            k,
            n,
            kv: Kv::Contiguous(&self.io),
        };
        let mut g = self.graph.body(&s)?;
        let (head, softcap) = self.graph.head();
        let xn = &self.graph.acts().xn;
        let h = self.graph.config().hidden;
        self.io.head(k, &mut g, xn, h, n, head, out, softcap)?;
        Ok(g)
    }

    /// Records and submits one greedy step at position `at` in one command buffer, without
    /// waiting: its input is `input`, or (None) the previous step's argmax copied from
    /// `io.token` to `io.ids` on the GPU; its argmax is copied to the next ring slot.
    fn submit_greedy(&mut self, at: usize, input: Option<u32>) -> Result<()> {
        let key = (1, Output::Argmax);
        if !self.graphs.contains_key(&key) {
            let g = self.build(1, Output::Argmax)?;
            self.graphs.insert(key, g);
        }
        let dev = &self.kernels.dev;
        let io = &self.io;
        if let Some(t) = input {
            dev.queue
                .write_buffer(io.ids.buffer(), 0, bytemuck::bytes_of(&t));
        }
        dev.queue
            .write_buffer(io.positions.buffer(), 0, bytemuck::bytes_of(&(at as u32)));
        let slot = self.next_slot;
        let graph = &self.graphs[&key];
        let index = dev.scoped("greedy step", || {
            let mut enc = dev.device.create_command_encoder(&Default::default());
            if input.is_none() {
                enc.copy_buffer_to_buffer(io.token.buffer(), 0, io.ids.buffer(), 0, 4);
            }
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in graph {
                    d.record(&mut pass);
                }
            }
            enc.copy_buffer_to_buffer(io.token.buffer(), 0, &io.ring[slot], 0, 4);
            dev.queue.submit([enc.finish()])
        })?;
        self.next_slot = (slot + 1) % MAX_CHAIN;
        self.chain.push_back((slot, index));
        Ok(())
    }

    /// [`Model::greedy_next`] through chained steps, or None where it must take the plain
    /// path (profiling, a bad id, the cache full, a rope-table switch).
    fn greedy_chained(&mut self, input: u32, ahead: usize) -> Result<Option<u32>> {
        let ahead = ahead.min(self.max_ahead);
        if self.chain_input != input {
            self.chain.clear();
        }
        if self.chain.is_empty() {
            if self.profile
                || input as usize >= self.io.vocab
                || self.pos >= self.io.capacity
                || self.graph.begin_changes(self.pos + 1)
            {
                return Ok(None);
            }
            self.submit_greedy(self.pos, Some(input))?;
        }
        while self.chain.len() <= ahead {
            let at = self.pos + self.chain.len();
            if at >= self.io.capacity || self.graph.begin_changes(at + 1) {
                break;
            }
            self.submit_greedy(at, None)?;
        }
        let (slot, index) = self.chain.pop_front().expect("a step in flight");
        let dev = &self.kernels.dev;
        let bytes = map_read_after(dev, &self.io.ring[slot], 4, index)?;
        dev.check("greedy step")?;
        let t = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        self.history.truncate(self.pos);
        self.history.push(input);
        self.pos += 1;
        self.chain_input = t;
        Ok(Some(t))
    }

    fn step(&mut self, tokens: &[u32], out: Output, read: bool) -> Result<StepOut> {
        let n = tokens.len();
        let dev = self.kernels.dev.clone();
        let io = &self.io;
        dev.queue
            .write_buffer(io.ids.buffer(), 0, bytemuck::cast_slice(tokens));
        let positions: Vec<u32> = (self.pos..self.pos + n).map(|p| p as u32).collect();
        dev.queue
            .write_buffer(io.positions.buffer(), 0, bytemuck::cast_slice(&positions));
        let built;
        let graph: &[Dispatch] = if n <= MAX_VERIFY {
            if !self.graphs.contains_key(&(n, out)) {
                let g = self.build(n, out)?;
                self.graphs.insert((n, out), g);
            }
            &self.graphs[&(n, out)]
        } else {
            built = self.build(n, out)?;
            &built
        };
        if self.profile {
            let table = self.kernels.profile(graph)?;
            let total: f64 = table.iter().map(|t| t.1).sum();
            eprintln!(
                "profile: step of {n} tokens, {:.2} ms on the GPU",
                total / 1e6
            );
            for (name, ns, count) in table {
                eprintln!(
                    "  {name:>12} {:9.3} ms {:5.1}% ({count} dispatches)",
                    ns / 1e6,
                    100.0 * ns / total
                );
            }
        }
        let read_bytes = match out {
            Output::Argmax => 4,
            Output::Logits => (io.vocab * 4) as u64,
            Output::AllArgmax => (n * 4) as u64,
            Output::AllLogits => (n * io.vocab * 4) as u64,
            Output::TopK(k) => (k * 8) as u64,
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
                    Output::TopK(_) => io.topk.buffer(),
                };
                enc.copy_buffer_to_buffer(src, 0, &io.staging, 0, read_bytes);
            }
            dev.queue.submit([enc.finish()]);
        })?;
        self.history.truncate(self.pos);
        self.history.extend_from_slice(tokens);
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
            Output::TopK(_) => StepOut::TopK(
                bytemuck::pod_collect_to_vec::<u8, u32>(&bytes)
                    .chunks(2)
                    .filter(|p| p[1] != u32::MAX)
                    .map(|p| (p[1], f32::from_bits(p[0])))
                    .collect(),
            ),
        })
    }
}

impl<G> Runner<G> {
    /// The architecture's weights and graph builder (for other forward passes over the
    /// same weights, e.g. batched serving).
    pub fn graph(&self) -> &G {
        &self.graph
    }
}

/// [`Model::row_cost`] on `kernels`' adapter: on CPU adapters every row of a step is
/// compute, on GPUs a step is bound by its weight reads (BENCHMARKS.md has the figures).
pub fn row_cost(kernels: &Kernels) -> f64 {
    if kernels.tuning().cpu { 0.45 } else { 0.1 }
}

/// Greedy steps [`Model::greedy_next`] chains ahead of the host by default on `kernels`'
/// adapter ([`infer_tensor::Tuning::greedy_ahead`]).
pub fn chain_ahead(kernels: &Kernels) -> usize {
    kernels.tuning().greedy_ahead.min(MAX_CHAIN - 1)
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
        self.chain.clear();
        self.pos = self.pos.min(pos);
    }

    /// Chained steps (one command buffer each: the position written, the previous argmax
    /// copied into the ids on the GPU, the cached one-token graph, the argmax copied to a
    /// ring slot), read back in order; the plain step where a chain cannot run.
    fn greedy_next(&mut self, input: u32, ahead: usize) -> Result<u32> {
        match self.greedy_chained(input, ahead) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => match self.forward(&[input], Output::Argmax)? {
                StepOut::Token(t) => Ok(t),
                other => unreachable!("an argmax step returned {other:?}"),
            },
            Err(e) => {
                self.chain.clear();
                Err(e)
            }
        }
    }

    fn row_cost(&self) -> f64 {
        row_cost(&self.kernels)
    }

    /// Prompts longer than the batch size go in chunks; all-position outputs are limited
    /// to one step of at most [`MAX_VERIFY`] tokens.
    fn forward(&mut self, tokens: &[u32], out: Output) -> Result<StepOut> {
        self.chain.clear();
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
        if let Output::TopK(k) = out
            && !(1..=MAX_TOPK.min(self.io.vocab)).contains(&k)
        {
            return Err(ModelError::Invalid(format!(
                "top-k output needs 1 <= k <= {}, got {k}",
                MAX_TOPK.min(self.io.vocab)
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.io.vocab) {
            return Err(ModelError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.io.vocab
            )));
        }
        let end = self.pos + tokens.len();
        if self.graph.begin(&self.kernels.dev, self.pos, end)? && self.pos > 0 {
            let past = self.history[..self.pos].to_vec();
            self.pos = 0;
            for chunk in past.chunks(self.io.max_batch) {
                self.step(chunk, Output::Logits, false)?;
            }
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
