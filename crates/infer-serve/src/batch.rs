//! `BatchedModel`: one forward step over rows from many sequences, each row a token at its
//! own position in its own sequence, over a paged KV cache. Any architecture runs this way:
//! its graph (`infer_models::Graph`) is written against `infer_models::step::Step`, which
//! here picks the paged kernels.
//!
//! ```text
//! x = the architecture's body over the rows          (N, hidden), final normed
//!     (linear layers: matvec_batched, row by row; one paged_rope_kv: q, k rotated at
//!      pos[r], k, v written to slot(seq[r], pos[r]) of the layer's pages; paged attention)
//! xo[i] = xn[out_row[i]]                             buffer copies, (n_out, hidden)
//! logits = xo W_out^T  [soft-capped]                 (n_out, vocab)
//! token[i] = argmax(logits[i])                       only ids come back for greedy rows
//! ```
//!
//! Batch invariance: every kernel here computes a row with arithmetic that does not
//! depend on the other rows (matvec_batched is the single-row matvec per row; norms,
//! rope, attention and argmax work per row), so a sequence gets bit-identical logits
//! alone or beside others, and however its prompt is chunked.

use std::collections::HashMap;
use std::sync::Arc;

use infer_kernels::{Dispatch, Kernels};
use infer_models::step::{Kv, PagedKv, Step};
use infer_models::{Graph, ModelConfig};
use infer_tensor::{DType, Tensor, tensor::map_read, wgpu};

use crate::{Result, ServeError};

/// Sizes of the batched step and the paged cache.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// Most rows (tokens) per step.
    pub max_rows: usize,
    /// Most sequences in the running batch (rows of the block table).
    pub max_seqs: usize,
    /// Positions per KV block.
    pub block_size: usize,
    /// KV blocks in the cache.
    pub n_blocks: usize,
    /// Most positions per sequence.
    pub context: usize,
}

impl BatchConfig {
    /// Columns of the block table.
    pub fn max_blocks(&self) -> usize {
        self.context.div_ceil(self.block_size)
    }
}

/// What a row of a step hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOut {
    None,
    /// The argmax token.
    Token,
    /// The argmax token and the row's logits.
    Logits,
}

/// One row of a step: `token` at position `pos` of the sequence in block-table row `seq`.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub token: u32,
    pub pos: u32,
    pub seq: u32,
    pub out: RowOut,
}

/// The result of a row that asked for output.
#[derive(Clone, Debug)]
pub struct RowResult {
    pub token: u32,
    pub logits: Option<Vec<f32>>,
}

/// A model stepping many sequences at once over a paged KV cache.
pub struct BatchedModel {
    graph: Box<dyn Graph>,
    kernels: Arc<Kernels>,
    cfg: ModelConfig,
    pub bc: BatchConfig,
    paged: PagedKv,
    xo: Tensor,     // (N, hidden) the rows that produce output
    logits: Tensor, // (N, vocab)
    tokens: Tensor, // (N) u32
    staging: wgpu::Buffer,
    body: HashMap<usize, Vec<Dispatch>>,
    head: HashMap<usize, Vec<Dispatch>>,
}

impl BatchedModel {
    /// The marginal cost of a row, as [`infer_models::Model::row_cost`] (for the
    /// speculative k controller).
    pub fn row_cost(&self) -> f64 {
        infer_models::row_cost(&self.kernels)
    }

    /// Wraps a loaded graph (from `infer_models::load::load_graph` with `max_batch` =
    /// `bc.max_rows` and `context` = `bc.context`, so its activations hold every row and its
    /// rope table covers every position).
    pub fn new(graph: Box<dyn Graph>, kernels: Arc<Kernels>, bc: BatchConfig) -> Result<Self> {
        let cfg = graph.config().clone();
        if !cfg.head_dim.is_multiple_of(4) || cfg.head_dim > 256 {
            return Err(ServeError::Unsupported(format!(
                "head_dim {} (paged attention needs a multiple of 4, at most 256)",
                cfg.head_dim
            )));
        }
        if bc.max_rows < bc.max_seqs || bc.max_seqs == 0 || bc.block_size == 0 {
            return Err(ServeError::Unsupported(format!(
                "batch config {bc:?}: need max_rows >= max_seqs >= 1, block_size >= 1"
            )));
        }
        if graph.acts().rows < bc.max_rows {
            return Err(ServeError::Unsupported(format!(
                "the model's activations hold {} rows, the batch {}",
                graph.acts().rows,
                bc.max_rows
            )));
        }
        let dev = kernels.dev.clone();
        // Phi-3 LongRoPE: one table for every sequence, chosen by the serving context.
        graph.begin(&dev, 0, bc.context)?;
        let n = bc.max_rows;
        let (h, hd, nkv) = (cfg.hidden, cfg.head_dim, cfg.n_kv_heads);
        let z = |name: &str, shape: &[usize]| Tensor::zeros(&dev, name, shape, DType::F32);
        let u = |name: &str, len: usize| Tensor::zeros(&dev, name, &[len], DType::U32);
        let slots = bc.n_blocks * bc.block_size;
        let mut k_pages = Vec::new();
        let mut v_pages = Vec::new();
        for i in 0..cfg.n_layers {
            k_pages.push(z(&format!("k_pages.{i}"), &[slots, nkv, hd])?);
            v_pages.push(z(&format!("v_pages.{i}"), &[slots, nkv, hd])?);
        }
        let paged = PagedKv {
            ids: u("b.ids", n)?,
            pos: u("b.pos", n)?,
            seq: u("b.seq", n)?,
            table: u("b.table", bc.max_seqs * bc.max_blocks())?,
            k_pages,
            v_pages,
            block_size: bc.block_size,
            n_blocks: bc.n_blocks,
            max_seqs: bc.max_seqs,
            max_blocks: bc.max_blocks(),
        };
        let vocab = cfg.vocab_size;
        let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("batch staging"),
            size: ((n * vocab + n) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let out = BatchedModel {
            xo: z("b.xo", &[n, h])?,
            logits: z("b.logits", &[n, vocab])?,
            tokens: u("b.tokens", n)?,
            paged,
            staging,
            body: HashMap::new(),
            head: HashMap::new(),
            cfg,
            bc,
            kernels,
            graph,
        };
        dev.check("allocating the batched step")?;
        Ok(out)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Bytes of KV cache per block (all layers, K and V).
    pub fn block_bytes(&self) -> usize {
        2 * self.cfg.n_layers * self.bc.block_size * self.cfg.n_kv_heads * self.cfg.head_dim * 4
    }

    fn build_body(&self, n: usize) -> Result<Vec<Dispatch>> {
        let s = Step {
            k: &self.kernels,
            n,
            kv: Kv::Paged(&self.paged),
        };
        Ok(self.graph.body(&s)?)
    }

    fn build_head(&self, n_out: usize) -> Result<Vec<Dispatch>> {
        let k = &self.kernels;
        let (head, softcap) = self.graph.head();
        let v = self.cfg.vocab_size;
        let mut g = k.matvec_batched(head, &self.xo, n_out, &self.logits)?;
        if let Some(c) = softcap {
            g.extend(k.softcap(&self.logits, n_out * v, c)?);
        }
        for i in 0..n_out {
            g.extend(k.argmax(&self.logits, i * v, v, &self.tokens, i)?);
        }
        Ok(g)
    }

    /// Runs one step over `rows` with the block table `table` (`(max_seqs, max_blocks)`
    /// physical block ids) and returns, in row order, the results of the rows that asked
    /// for output.
    pub fn step(&mut self, rows: &[Row], table: &[u32]) -> Result<Vec<RowResult>> {
        let n = rows.len();
        if n == 0 || n > self.bc.max_rows {
            return Err(ServeError::Unsupported(format!(
                "a step of {n} rows (1..={})",
                self.bc.max_rows
            )));
        }
        let bc = self.bc;
        if table.len() != bc.max_seqs * bc.max_blocks() {
            return Err(ServeError::Unsupported("block table size".into()));
        }
        for r in rows {
            let blk = r.pos as usize / bc.block_size;
            if r.seq as usize >= bc.max_seqs
                || r.pos as usize >= bc.context
                || table[r.seq as usize * bc.max_blocks() + blk] as usize >= bc.n_blocks
                || r.token as usize >= self.cfg.vocab_size
            {
                return Err(ServeError::Unsupported(format!("bad row {r:?}")));
            }
        }
        let outs: Vec<(usize, RowOut)> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.out != RowOut::None)
            .map(|(i, r)| (i, r.out))
            .collect();
        let n_out = outs.len();
        if !self.body.contains_key(&n) {
            let g = self.build_body(n)?;
            self.body.insert(n, g);
        }
        if n_out > 0 && !self.head.contains_key(&n_out) {
            let g = self.build_head(n_out)?;
            self.head.insert(n_out, g);
        }
        let dev = self.kernels.dev.clone();
        let q = &dev.queue;
        let col = |f: fn(&Row) -> u32| rows.iter().map(f).collect::<Vec<u32>>();
        let p = &self.paged;
        q.write_buffer(p.ids.buffer(), 0, bytemuck::cast_slice(&col(|r| r.token)));
        q.write_buffer(p.pos.buffer(), 0, bytemuck::cast_slice(&col(|r| r.pos)));
        q.write_buffer(p.seq.buffer(), 0, bytemuck::cast_slice(&col(|r| r.seq)));
        q.write_buffer(p.table.buffer(), 0, bytemuck::cast_slice(table));
        let v = self.cfg.vocab_size;
        let hb = (self.cfg.hidden * 4) as u64;
        let with_logits: Vec<usize> = outs
            .iter()
            .enumerate()
            .filter(|(_, o)| o.1 == RowOut::Logits)
            .map(|(i, _)| i)
            .collect();
        let tok_bytes = (n_out * 4) as u64;
        let read_bytes = tok_bytes + (with_logits.len() * v * 4) as u64;
        let body = &self.body[&n];
        dev.scoped("batched step", || {
            let mut enc = dev.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in body {
                    d.record(&mut pass);
                }
            }
            if n_out > 0 {
                for (i, &(r, _)) in outs.iter().enumerate() {
                    enc.copy_buffer_to_buffer(
                        self.graph.acts().xn.buffer(),
                        r as u64 * hb,
                        self.xo.buffer(),
                        i as u64 * hb,
                        hb,
                    );
                }
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for d in &self.head[&n_out] {
                        d.record(&mut pass);
                    }
                }
                enc.copy_buffer_to_buffer(self.tokens.buffer(), 0, &self.staging, 0, tok_bytes);
                for (j, &i) in with_logits.iter().enumerate() {
                    enc.copy_buffer_to_buffer(
                        self.logits.buffer(),
                        (i * v * 4) as u64,
                        &self.staging,
                        tok_bytes + (j * v * 4) as u64,
                        (v * 4) as u64,
                    );
                }
            }
            dev.queue.submit([enc.finish()]);
        })?;
        if n_out == 0 {
            dev.wait()?;
            dev.check("batched step")?;
            return Ok(vec![]);
        }
        let bytes = map_read(&dev, &self.staging, read_bytes)?;
        dev.check("batched step")?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
        let mut lrows = with_logits.iter().enumerate().peekable();
        Ok((0..n_out)
            .map(|i| {
                let logits = match lrows.peek() {
                    Some(&(j, &li)) if li == i => {
                        lrows.next();
                        let at = n_out + j * v;
                        Some(
                            words[at..at + v]
                                .iter()
                                .map(|&b| f32::from_bits(b))
                                .collect(),
                        )
                    }
                    _ => None,
                };
                RowResult {
                    token: words[i],
                    logits,
                }
            })
            .collect())
    }
}

/// Loads a model of any supported architecture for batched serving, with its tokenizer.
/// `bc.context` is clamped to the model's maximum position.
pub fn load_batched(
    spec: &str,
    kernels: Arc<Kernels>,
    quant: Option<infer_models::Quant>,
    bc: BatchConfig,
) -> Result<(BatchedModel, infer_models::Tokenizer)> {
    let path = infer_models::load::resolve(spec)?;
    let (src, cfg) = infer_models::load::open(&path)?;
    let tok = infer_models::load::tokenizer(&path, &src)?;
    Ok((batched(&src, cfg, kernels, quant, bc)?, tok))
}

/// [`load_batched`] without the tokenizer.
pub fn load_batched_model(
    spec: &str,
    kernels: Arc<Kernels>,
    quant: Option<infer_models::Quant>,
    bc: BatchConfig,
) -> Result<BatchedModel> {
    let path = infer_models::load::resolve(spec)?;
    let (src, cfg) = infer_models::load::open(&path)?;
    batched(&src, cfg, kernels, quant, bc)
}

fn batched(
    src: &infer_models::source::Source,
    cfg: ModelConfig,
    kernels: Arc<Kernels>,
    quant: Option<infer_models::Quant>,
    mut bc: BatchConfig,
) -> Result<BatchedModel> {
    bc.context = bc.context.min(cfg.max_position).max(1);
    // A step never holds more rows than the context has positions.
    bc.max_rows = bc.max_rows.min(bc.context);
    bc.max_seqs = bc.max_seqs.min(bc.max_rows);
    let opts = infer_models::LoadOptions {
        quant,
        context: Some(bc.context),
        max_batch: bc.max_rows,
        progress: false,
        chain: None,
    };
    let graph = infer_models::load::load_graph(src, cfg, &kernels, &opts)?;
    BatchedModel::new(graph, kernels, bc)
}
