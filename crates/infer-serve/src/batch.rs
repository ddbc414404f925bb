//! `BatchedLlama`: one forward step over rows from many sequences, each row a token at its
//! own position in its own sequence, over a paged KV cache.
//!
//! ```text
//! x = embed[ids]                                     (N, hidden)
//! for each layer:
//!     xn = rms_norm(x) * attn_norm                   (N, hidden)
//!     q, k, v = xn Wq^T (+bq), xn Wk^T, xn Wv^T      matvec_batched: row by row
//!     [q, k = rms_norm per head (Qwen3)]
//!     q, k = rope_rows(q, k) at pos[r]
//!     k_pages, v_pages[slot(seq[r], pos[r])] = k, v  (n_blocks * block_size, kv, hd)
//!     a = paged_attention(q, pages; seq[r], pos[r])  (N, heads * hd)
//!     x += a Wo^T
//!     x += (silu(xn Wg^T) * xn Wu^T) Wd^T            via (N, inter)
//! xn = rms_norm(x) * norm
//! xo[i] = xn[out_row[i]]                             buffer copies, (n_out, hidden)
//! logits = xo W_out^T                                (n_out, vocab)
//! token[i] = argmax(logits[i])                       only ids come back for greedy rows
//! ```
//!
//! Batch invariance: every kernel here computes a row with arithmetic that does not
//! depend on the other rows (matvec_batched is the single-row matvec per row; norms,
//! rope, attention and argmax work per row), so a sequence gets bit-identical logits
//! alone or beside others, and however its prompt is chunked.

use std::collections::HashMap;
use std::sync::Arc;

use infer_kernels::{Dispatch, Kernels, PagedParams};
use infer_models::llama::Llama;
use infer_models::{LlamaModel, ModelConfig};
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

struct Acts {
    x: Tensor,    // (N, hidden) residual stream
    xn: Tensor,   // (N, hidden) normed
    q: Tensor,    // (N, heads * hd)
    k: Tensor,    // (N, kv * hd)
    v: Tensor,    // (N, kv * hd)
    qn: Tensor,   // (N, heads * hd) after per-head norm (Qwen3)
    kn: Tensor,   // (N, kv * hd)
    attn: Tensor, // (N, heads * hd)
    o: Tensor,    // (N, hidden)
    gate: Tensor, // (N, inter)
    up: Tensor,   // (N, inter)
    act: Tensor,  // (N, inter)
    xo: Tensor,   // (N, hidden) the rows that produce output
}

/// A Llama-family model stepping many sequences at once over a paged KV cache.
pub struct BatchedLlama {
    model: LlamaModel,
    kernels: Arc<Kernels>,
    cfg: ModelConfig,
    pub bc: BatchConfig,
    ids: Tensor,   // (N) u32
    pos: Tensor,   // (N) u32
    seq: Tensor,   // (N) u32
    table: Tensor, // (max_seqs, max_blocks) u32
    acts: Acts,
    logits: Tensor, // (N, vocab)
    tokens: Tensor, // (N) u32
    k_pages: Vec<Tensor>,
    v_pages: Vec<Tensor>,
    staging: wgpu::Buffer,
    body: HashMap<usize, Vec<Dispatch>>,
    head: HashMap<usize, Vec<Dispatch>>,
}

impl BatchedLlama {
    /// Wraps a loaded Llama-family model (its weights are shared, not copied; load it with
    /// `context` = `bc.context` so its rope table covers every position).
    pub fn new(model: LlamaModel, kernels: Arc<Kernels>, bc: BatchConfig) -> Result<Self> {
        let g: &Llama = model.graph();
        let cfg = g.model_config().clone();
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
        if g.rope_table().rows() < bc.context {
            return Err(ServeError::Unsupported(format!(
                "rope table covers {} positions, context is {}",
                g.rope_table().rows(),
                bc.context
            )));
        }
        let dev = kernels.dev.clone();
        let n = bc.max_rows;
        let (h, hd, nh, nkv, inter) = (
            cfg.hidden,
            cfg.head_dim,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.intermediate,
        );
        let z = |name: &str, shape: &[usize]| Tensor::zeros(&dev, name, shape, DType::F32);
        let u = |name: &str, len: usize| Tensor::zeros(&dev, name, &[len], DType::U32);
        let acts = Acts {
            x: z("b.x", &[n, h])?,
            xn: z("b.xn", &[n, h])?,
            q: z("b.q", &[n, nh * hd])?,
            k: z("b.k", &[n, nkv * hd])?,
            v: z("b.v", &[n, nkv * hd])?,
            qn: z("b.qn", &[n, nh * hd])?,
            kn: z("b.kn", &[n, nkv * hd])?,
            attn: z("b.attn", &[n, nh * hd])?,
            o: z("b.o", &[n, h])?,
            gate: z("b.gate", &[n, inter])?,
            up: z("b.up", &[n, inter])?,
            act: z("b.act", &[n, inter])?,
            xo: z("b.xo", &[n, h])?,
        };
        let slots = bc.n_blocks * bc.block_size;
        let mut k_pages = Vec::new();
        let mut v_pages = Vec::new();
        for i in 0..cfg.n_layers {
            k_pages.push(z(&format!("k_pages.{i}"), &[slots, nkv, hd])?);
            v_pages.push(z(&format!("v_pages.{i}"), &[slots, nkv, hd])?);
        }
        let vocab = cfg.vocab_size;
        let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("batch staging"),
            size: ((n * vocab + n) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let out = BatchedLlama {
            ids: u("b.ids", n)?,
            pos: u("b.pos", n)?,
            seq: u("b.seq", n)?,
            table: u("b.table", bc.max_seqs * bc.max_blocks())?,
            logits: z("b.logits", &[n, vocab])?,
            tokens: u("b.tokens", n)?,
            acts,
            k_pages,
            v_pages,
            staging,
            body: HashMap::new(),
            head: HashMap::new(),
            cfg,
            bc,
            kernels,
            model,
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
        let k = &self.kernels;
        let a = &self.acts;
        let c = &self.cfg;
        let w: &Llama = self.model.graph();
        let (h, hd, nh, nkv) = (c.hidden, c.head_dim, c.n_heads, c.n_kv_heads);
        let pp = PagedParams {
            n_rows: n,
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            block_size: self.bc.block_size,
            n_blocks: self.bc.n_blocks,
            n_seqs: self.bc.max_seqs,
            max_blocks: self.bc.max_blocks(),
            scale: 1.0 / (hd as f32).sqrt(),
            softcap: 0.0,
            window: c.sliding_window.unwrap_or(0),
        };
        let cs = w.rope_table();
        let mut g = Vec::new();
        g.extend(k.embedding(w.embed(), &self.ids, n, &a.x)?);
        for (i, l) in w.layer_weights().iter().enumerate() {
            g.extend(k.rms_norm(&a.x, l.attn_norm, &a.xn, n, h, c.rms_eps, 0.0)?);
            g.extend(k.matvec_batched(l.wq, &a.xn, n, &a.q)?);
            g.extend(k.matvec_batched(l.wk, &a.xn, n, &a.k)?);
            g.extend(k.matvec_batched(l.wv, &a.xn, n, &a.v)?);
            for (bias, t, len) in [
                (l.bq, &a.q, nh * hd),
                (l.bk, &a.k, nkv * hd),
                (l.bv, &a.v, nkv * hd),
            ] {
                if let Some(b) = bias {
                    g.extend(k.add(t, b, n * len, len)?);
                }
            }
            let (q, kk) = match (l.q_norm, l.k_norm) {
                (Some(qn), Some(kn)) => {
                    g.extend(k.rms_norm(&a.q, qn, &a.qn, n * nh, hd, c.rms_eps, 0.0)?);
                    g.extend(k.rms_norm(&a.k, kn, &a.kn, n * nkv, hd, c.rms_eps, 0.0)?);
                    (&a.qn, &a.kn)
                }
                _ => (&a.q, &a.k),
            };
            g.extend(k.rope_rows(q, cs, &self.pos, n, nh, hd, c.rope_mode)?);
            g.extend(k.rope_rows(kk, cs, &self.pos, n, nkv, hd, c.rope_mode)?);
            let (kp, vp) = (&self.k_pages[i], &self.v_pages[i]);
            g.extend(k.paged_kv_write(kk, &a.v, kp, vp, &self.pos, &self.seq, &self.table, &pp)?);
            g.extend(k.paged_attention(
                q,
                kp,
                vp,
                &a.attn,
                &self.pos,
                &self.seq,
                &self.table,
                &pp,
            )?);
            g.extend(k.matvec_batched(l.wo, &a.attn, n, &a.o)?);
            if let Some(b) = l.bo {
                g.extend(k.add(&a.o, b, n * h, h)?);
            }
            g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
            g.extend(k.rms_norm(&a.x, l.ffn_norm, &a.xn, n, h, c.rms_eps, 0.0)?);
            g.extend(k.matvec_batched(l.gate, &a.xn, n, &a.gate)?);
            g.extend(k.matvec_batched(l.up, &a.xn, n, &a.up)?);
            g.extend(k.swiglu(&a.gate, &a.up, &a.act, n * c.intermediate)?);
            g.extend(k.matvec_batched(l.down, &a.act, n, &a.o)?);
            g.extend(k.add(&a.x, &a.o, n * h, n * h)?);
        }
        g.extend(k.rms_norm(&a.x, w.final_norm(), &a.xn, n, h, c.rms_eps, 0.0)?);
        Ok(g)
    }

    fn build_head(&self, n_out: usize) -> Result<Vec<Dispatch>> {
        let k = &self.kernels;
        let w: &Llama = self.model.graph();
        let v = self.cfg.vocab_size;
        let mut g = k.matvec_batched(w.head(), &self.acts.xo, n_out, &self.logits)?;
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
        q.write_buffer(
            self.ids.buffer(),
            0,
            bytemuck::cast_slice(&col(|r| r.token)),
        );
        q.write_buffer(self.pos.buffer(), 0, bytemuck::cast_slice(&col(|r| r.pos)));
        q.write_buffer(self.seq.buffer(), 0, bytemuck::cast_slice(&col(|r| r.seq)));
        q.write_buffer(self.table.buffer(), 0, bytemuck::cast_slice(table));
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
                        self.acts.xn.buffer(),
                        r as u64 * hb,
                        self.acts.xo.buffer(),
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

/// Loads a Llama-family model for batched serving, with its tokenizer. `bc.context` is
/// clamped to the model's maximum position.
pub fn load_batched(
    spec: &str,
    kernels: Arc<Kernels>,
    quant: Option<DType>,
    mut bc: BatchConfig,
) -> Result<(BatchedLlama, infer_models::Tokenizer)> {
    use infer_models::arch::Family;
    let path = infer_models::load::resolve(spec)?;
    let (src, cfg) = infer_models::load::open(&path)?;
    if cfg.arch.family != Family::Llama {
        return Err(ServeError::Unsupported(format!(
            "{spec}: the batched server runs the Llama family, not {:?}",
            cfg.arch.family
        )));
    }
    bc.context = bc.context.min(cfg.max_position).max(1);
    let tok = infer_models::load::tokenizer(&path, &src)?;
    let opts = infer_models::LoadOptions {
        quant,
        // The single-sequence runner's own cache is unused here; its rope table must
        // cover the serving context.
        context: Some(bc.context),
        max_batch: 1,
        progress: false,
    };
    let model = LlamaModel::load(&src, cfg, kernels.clone(), &opts)?;
    Ok((BatchedLlama::new(model, kernels, bc)?, tok))
}
