//! The per-step inputs and outputs of one sequence, shared by every architecture: token
//! ids, positions, the contiguous KV cache, logits and their read-back, and the output
//! head appended to a step's graph.

use infer_kernels::{Dispatch, Kernels};
use infer_tensor::{DType, Device, Tensor, wgpu};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::model::{MAX_TOPK, MAX_VERIFY, Output};
use crate::options::LoadOptions;

/// Most greedy steps a [`Runner`](crate::Runner) keeps in flight
/// ([`Model::greedy_next`](crate::Model::greedy_next)): the number of read-back buffers in
/// its ring.
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
    pub(crate) staging: wgpu::Buffer,
    /// [`MAX_CHAIN`] 4-byte read-back buffers, one per chained greedy step in flight.
    pub(crate) ring: Vec<wgpu::Buffer>,
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

    /// The output head over `xn` (`(n, hidden)`, already normed): `head` applied to the
    /// last row (or every row), the logits soft-capped (`c * tanh(l / c)`, Gemma 2) when
    /// `softcap` is set, then the argmax or top k when `out` asks for tokens.
    pub fn head(
        &self,
        k: &Kernels,
        xn: &Tensor,
        n: usize,
        head: &Tensor,
        softcap: Option<f32>,
        out: Output,
    ) -> Result<Vec<Dispatch>> {
        let mut g = Vec::new();
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
            g.extend(k.matvec(head, xn, (n - 1) * xn.cols(), &self.logits, 0)?);
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
        Ok(g)
    }
}
