//! [`Runner`] turns an architecture's [`Graph`] into a [`Model`] over one sequence:
//! chunked prefill, one command buffer per step, the graphs of short steps built once and
//! replayed, only the token id or the logits read back, and pipelined greedy decode.

use std::sync::Arc;

use infer_kernels::{Dispatch, Kernels};
use infer_tensor::tensor::{map_read, map_read_after};
use infer_tensor::wgpu;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::graph::Graph;
use crate::io::{Io, MAX_CHAIN};
use crate::model::{MAX_TOPK, MAX_VERIFY, Model, Output, StepOut};
use crate::options::LoadOptions;
use crate::step::{Kv, Step};

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
    /// [`infer_tensor::Tuning::profile`] (`INFER_PROFILE=1`): time every kernel of every
    /// step on the GPU (then run it again for real) and print a table to stderr.
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
        g.extend(
            self.io
                .head(k, &self.graph.acts().xn, n, head, softcap, out)?,
        );
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
/// compute; on GPUs a step is bound by its weight reads, which every row shares (the
/// figures: bench/notes/models.md).
pub fn row_cost(kernels: &Kernels) -> f64 {
    if kernels.tuning().cpu { 0.45 } else { 0.1 }
}

/// Greedy steps [`Model::greedy_next`] chains ahead of the host by default on `kernels`'
/// adapter ([`infer_tensor::Tuning::greedy_ahead`]: none where the "GPU" is the host's own
/// cores, since chaining only overlaps host work with the GPU's).
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
