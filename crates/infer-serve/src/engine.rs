//! The scheduler: one thread owns the [`BatchedModel`] and loops. At every step it takes
//! new requests, drops the ones whose client has gone (freeing their KV blocks at once),
//! admits waiting requests in arrival order while sequence slots and KV blocks last (a
//! request reserves the blocks of its prompt plus its `max_tokens` up front, so a running
//! sequence never runs out; the rest wait), builds one batch of rows (one decode token per
//! generating sequence first, then prompt chunks of the others up to the row budget), runs
//! one batched forward, samples, applies stop strings and tokens, and sends events back.
//!
//! Speculative decoding (prompt lookup, per request): a generating sequence whose last
//! n-gram occurred earlier in its text puts the pending token and up to k copied draft
//! tokens into the batch as consecutive rows, each producing output; the speculative
//! sampling rule (`infer_sampling::accept`) keeps the longest accepted prefix plus one
//! token of the target's own. Only the accepted positions count as cached; the rejected
//! ones are overwritten by later rows. Greedy output is token-identical to plain decoding.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use infer_models::{MAX_VERIFY, Tokenizer};
use infer_sampling::{
    BlockOut, Draft, DraftK, FinishReason, KControl, PromptLookup, Sampler, SamplingParams,
    StepCost, TextStream,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc::UnboundedSender;

use crate::batch::{BatchedModel, Row, RowOut};
use crate::kv::BlockAllocator;
use crate::metrics::Metrics;
use crate::schedule::{self, Admission, Limits, Running, Waiting};

/// A generation request handed to the engine.
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// `Some(k)`: report each chosen token's log-probability and the k most likely.
    pub logprobs: Option<usize>,
    /// Speculative decoding by prompt lookup.
    pub spec: Option<SpecOptions>,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
}

/// Prompt-lookup speculation for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpecOptions {
    /// Longest n-gram matched (>= 1).
    pub ngram: usize,
    /// Tokens drafted per step.
    pub k: DraftK,
}

/// A sequence's speculation state.
struct Spec {
    lookup: PromptLookup,
    ctl: KControl,
    rng: StdRng,
}

/// A token's log-probability, with the most likely alternatives.
#[derive(Clone, Debug)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// What the engine sends back for a request.
#[derive(Clone, Debug)]
pub enum Event {
    /// A generated token: the text it adds (possibly empty while a multi-byte character
    /// or a possible stop string is held back) and its log-probability when asked for.
    Token {
        text: String,
        logprob: Option<TokenLogprob>,
    },
    Done {
        finish_reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The request failed, `kind` says how.
    Error { message: String, kind: Failure },
}

/// How a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It does not fit the server's context or KV cache (413).
    DoesNotFit,
    /// A server fault (500).
    Internal,
    /// The server is shutting down and its drain time ran out (503).
    ShuttingDown,
}

/// The server's shutdown, shared by the HTTP side and the engine: once `draining`, new
/// requests are refused (503); once `abort`, the engine ends every waiting and running
/// request with [`Failure::ShuttingDown`].
#[derive(Debug, Default)]
pub struct Shutdown {
    pub draining: AtomicBool,
    pub abort: AtomicBool,
}

/// The HTTP side's handle on the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<GenRequest>,
    pub metrics: Arc<Metrics>,
    pub max_waiting: usize,
    /// Most positions per sequence.
    pub context: usize,
    pub vocab: usize,
    /// Most tokens one request can reserve (the whole KV cache).
    pub kv_tokens: usize,
    pub shutdown: Arc<Shutdown>,
}

/// Why a request was not queued.
#[derive(Debug)]
pub enum SubmitError {
    QueueFull,
    EngineGone,
    ShuttingDown,
}

impl EngineHandle {
    pub fn submit(&self, req: GenRequest) -> Result<(), SubmitError> {
        if self.shutdown.draining.load(Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        if self.metrics.waiting.load(Relaxed) as usize >= self.max_waiting {
            return Err(SubmitError::QueueFull);
        }
        self.metrics.waiting.fetch_add(1, Relaxed);
        self.tx.send(req).map_err(|_| {
            self.metrics.waiting.fetch_sub(1, Relaxed);
            SubmitError::EngineGone
        })
    }
}

struct Seq<'t> {
    req: GenRequest,
    slot: usize,
    blocks: Vec<u32>,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    n_prompt: usize,
    /// Tokens whose K and V are in the cache.
    cached: usize,
    max_new: usize,
    sampler: Sampler,
    /// The generated text, stop tokens and strings, the length limit.
    text: TextStream<'t>,
    last: Option<Instant>,
    spec: Option<Spec>,
    /// Prompt blocks registered in the prefix cache (or taken from it), and the chained
    /// hash of the last of them.
    registered: usize,
    parent_hash: u64,
}

impl Seq<'_> {
    fn generated(&self) -> usize {
        self.tokens.len() - self.n_prompt
    }

    fn out_kind(&self) -> RowOut {
        if self.sampler.params().is_greedy() && self.req.logprobs.is_none() {
            RowOut::Token
        } else {
            RowOut::Logits
        }
    }
}

/// The scheduler loop (see the module docs), on its thread, which owns the tokenizer
/// `'t` borrows.
pub struct Engine<'t> {
    model: BatchedModel,
    tok: &'t Tokenizer,
    metrics: Arc<Metrics>,
    rx: mpsc::Receiver<GenRequest>,
    shutdown: Arc<Shutdown>,
    waiting: VecDeque<GenRequest>,
    running: Vec<Seq<'t>>,
    blocks: BlockAllocator,
    free_slots: Vec<usize>,
    table: Vec<u32>,
}

impl Engine<'_> {
    /// Starts the engine thread; requests beyond `max_waiting` queued ones are refused;
    /// `prefix_cache`: prompts share the cached K and V of the blocks they start with.
    pub fn spawn(
        model: BatchedModel,
        tok: Arc<Tokenizer>,
        metrics: Arc<Metrics>,
        max_waiting: usize,
        prefix_cache: bool,
    ) -> EngineHandle {
        let (tx, rx) = mpsc::channel();
        let bc = model.bc;
        let shutdown = Arc::new(Shutdown::default());
        let handle = EngineHandle {
            tx,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            max_waiting,
            context: bc.context,
            vocab: model.config().vocab_size,
            kv_tokens: bc.n_blocks * bc.block_size,
        };
        metrics.kv_blocks_free.store(bc.n_blocks as u64, Relaxed);
        std::thread::Builder::new()
            .name("infer-engine".into())
            .spawn(move || {
                Engine {
                    tok: &tok,
                    metrics,
                    rx,
                    shutdown,
                    waiting: VecDeque::new(),
                    running: Vec::new(),
                    blocks: BlockAllocator::with_caching(bc.n_blocks, prefix_cache),
                    free_slots: (0..bc.max_seqs).rev().collect(),
                    table: vec![0; bc.max_seqs * bc.max_blocks()],
                    model,
                }
                .run()
            })
            .expect("spawning the engine thread");
        handle
    }

    fn limits(&self) -> Limits {
        let bc = self.model.bc;
        Limits {
            context: bc.context,
            block_size: bc.block_size,
            total_blocks: self.blocks.total(),
            max_rows: bc.max_rows,
        }
    }

    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                match self.rx.recv() {
                    Ok(r) => self.waiting.push_back(r),
                    Err(_) => return,
                }
            }
            while let Ok(r) = self.rx.try_recv() {
                self.waiting.push_back(r);
            }
            self.drop_cancelled();
            if self.shutdown.abort.load(Relaxed) {
                self.abort_all();
                continue;
            }
            self.admit();
            self.gauges();
            if self.running.is_empty() {
                continue;
            }
            if let Err(e) = self.step() {
                let msg = format!("forward step failed: {e}");
                // In the server's log too: the clients may be gone.
                eprintln!(
                    "infer serve: {msg} ({} sequences dropped)",
                    self.running.len()
                );
                for mut s in std::mem::take(&mut self.running) {
                    let _ = s.req.events.send(Event::Error {
                        message: msg.clone(),
                        kind: Failure::Internal,
                    });
                    self.free(&mut s);
                }
            }
        }
    }

    /// Ends every waiting and running request: the server's drain time is over.
    fn abort_all(&mut self) {
        let message = "the server is shutting down; the request was ended".to_string();
        for r in std::mem::take(&mut self.waiting) {
            self.metrics.waiting.fetch_sub(1, Relaxed);
            let _ = r.events.send(Event::Error {
                message: message.clone(),
                kind: Failure::ShuttingDown,
            });
        }
        for mut s in std::mem::take(&mut self.running) {
            let _ = s.req.events.send(Event::Error {
                message: message.clone(),
                kind: Failure::ShuttingDown,
            });
            self.free(&mut s);
        }
        self.gauges();
    }

    fn gauges(&self) {
        let m = &self.metrics;
        m.running.store(self.running.len() as u64, Relaxed);
        m.kv_blocks_used.store(self.blocks.used() as u64, Relaxed);
        m.kv_blocks_free.store(self.blocks.free() as u64, Relaxed);
    }

    fn free(&mut self, s: &mut Seq<'_>) {
        self.blocks.release(&mut s.blocks);
        self.free_slots.push(s.slot);
    }

    fn drop_cancelled(&mut self) {
        let m = self.metrics.clone();
        self.waiting.retain(|r| {
            let gone = r.events.is_closed();
            if gone {
                m.waiting.fetch_sub(1, Relaxed);
                m.cancelled.fetch_add(1, Relaxed);
            }
            !gone
        });
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].req.events.is_closed() {
                let mut s = self.running.swap_remove(i);
                eprintln!(
                    "infer serve: a request's client went away after {} of {} tokens ({:.1} s); \
                     its sequence is dropped",
                    s.generated(),
                    s.max_new,
                    s.req.arrived.elapsed().as_secs_f64()
                );
                self.free(&mut s);
                m.cancelled.fetch_add(1, Relaxed);
            } else {
                i += 1;
            }
        }
        self.gauges();
    }

    fn admit(&mut self) {
        let lim = self.limits();
        let queue = self.waiting.iter().map(|r| Waiting {
            prompt_tokens: r.prompt.len(),
            max_tokens: r.params.max_tokens,
        });
        let decisions = schedule::admit(queue, self.free_slots.len(), self.blocks.free(), lim);
        for d in decisions {
            let req = self
                .waiting
                .pop_front()
                .expect("a decision per queued request");
            self.metrics.waiting.fetch_sub(1, Relaxed);
            match d {
                Admission::Reject {
                    prompt_tokens,
                    max_new,
                } => {
                    let _ = req.events.send(Event::Error {
                        message: format!(
                            "a prompt of {prompt_tokens} tokens with {max_new} to generate does \
                             not fit (context {}, KV cache {} tokens)",
                            lim.context,
                            lim.total_blocks * lim.block_size
                        ),
                        kind: Failure::DoesNotFit,
                    });
                }
                Admission::Start { max_new, blocks } => self.start(req, max_new, blocks),
            }
        }
    }

    /// Starts a sequence admitted with `max_new` tokens to generate in `blocks` KV blocks.
    fn start(&mut self, req: GenRequest, max_new: usize, blocks: usize) {
        // The prompt's leading blocks already in the cache (never its last token, whose
        // logits the sequence needs), then fresh ones: admission counted `blocks` free,
        // and cached blocks nobody held are among those.
        let bs = self.model.bc.block_size;
        let mut held = self
            .blocks
            .lookup(&req.prompt, bs, (req.prompt.len() - 1) / bs);
        let hits = held.len();
        held.extend(
            self.blocks
                .alloc(blocks - hits)
                .expect("admission counted the free blocks"),
        );
        let blocks = held;
        let parent_hash = crate::kv::prefix_hashes(&req.prompt[..hits * bs], bs)
            .last()
            .copied()
            .unwrap_or(0);
        self.metrics
            .prompt_tokens
            .fetch_add(req.prompt.len() as u64, Relaxed);
        self.metrics
            .prefix_cache_hit_tokens
            .fetch_add((hits * bs) as u64, Relaxed);
        let slot = self
            .free_slots
            .pop()
            .expect("admission counted the free slots");
        let mb = self.model.bc.max_blocks();
        self.table[slot * mb..slot * mb + blocks.len()].copy_from_slice(&blocks);
        let mut eos = self.tok.eos_ids().to_vec();
        eos.extend(&self.model.config().eos_ids);
        let text = TextStream::new(
            self.tok,
            &[],
            &req.params.stop,
            req.params.stop_ids(&eos),
            max_new,
        );
        let spec = req.spec.map(|o| Spec {
            lookup: PromptLookup::new(o.ngram),
            ctl: KControl::new(
                o.k,
                StepCost {
                    row: self.model.row_cost(),
                    draft: 0.0,
                },
            ),
            // Acceptance draws use their own stream, seeded from the request's seed.
            rng: StdRng::seed_from_u64(req.params.seed ^ 0x9e37_79b9_7f4a_7c15),
        });
        self.running.push(Seq {
            spec,
            slot,
            blocks,
            tokens: req.prompt.clone(),
            n_prompt: req.prompt.len(),
            cached: hits * bs,
            registered: hits,
            parent_hash,
            max_new,
            sampler: Sampler::new(req.params.clone()),
            text,
            last: None,
            req,
        });
    }

    fn step(&mut self) -> crate::Result<()> {
        // Drafts as long as the sequence may verify; the plan shortens them to the row
        // budget (a lookup with a smaller k gives a prefix of the same draft).
        let mut drafts: Vec<Vec<u32>> = self
            .running
            .iter()
            .map(|s| match &s.spec {
                Some(sp) if s.tokens.len() - s.cached == 1 => {
                    // No further than the tokens still to generate and one verification
                    // block.
                    let k = sp
                        .ctl
                        .k()
                        .min((s.max_new - s.generated()).saturating_sub(1))
                        .min(MAX_VERIFY - 1);
                    sp.lookup.lookup(&s.tokens, k)
                }
                _ => Vec::new(),
            })
            .collect();
        let state: Vec<Running> = self
            .running
            .iter()
            .zip(&drafts)
            .map(|(s, d)| Running {
                pending: s.tokens.len() - s.cached,
                draft: d.len(),
            })
            .collect();
        let plan = schedule::plan_rows(&state, self.model.bc.max_rows);
        let mut rows = Vec::new();
        // (seq index, rows taken, produces output, draft)
        let mut owners: Vec<(usize, usize, bool, Draft)> = Vec::new();
        for sh in plan {
            let s = &self.running[sh.seq];
            let mut tokens = std::mem::take(&mut drafts[sh.seq]);
            tokens.truncate(sh.draft);
            let draft = Draft {
                tokens,
                ..Default::default()
            };
            for j in 0..sh.take {
                let p = s.cached + j;
                rows.push(Row {
                    token: s.tokens[p],
                    pos: p as u32,
                    seq: s.slot as u32,
                    out: if sh.done && j + 1 == sh.take {
                        s.out_kind()
                    } else {
                        RowOut::None
                    },
                });
            }
            for (j, &t) in draft.tokens.iter().enumerate() {
                rows.push(Row {
                    token: t,
                    pos: (s.cached + 1 + j) as u32,
                    seq: s.slot as u32,
                    out: s.out_kind(),
                });
            }
            owners.push((sh.seq, sh.take, sh.done, draft));
        }
        let results = self.model.step(&rows, &self.table)?;
        let mut results = results.into_iter();
        let vocab = self.model.config().vocab_size;
        let mut finished = Vec::new();
        for (i, take, done, draft) in owners {
            let s = &mut self.running[i];
            s.cached += take;
            if !done {
                continue;
            }
            if draft.tokens.is_empty() {
                let r = results.next().expect("one result per output row");
                if emit_token(s, self.tok, &self.metrics, r.token, r.logits) {
                    finished.push(i);
                }
                continue;
            }
            let m = draft.tokens.len();
            let block: Vec<_> = results.by_ref().take(m + 1).collect();
            let sp = s
                .spec
                .as_mut()
                .expect("drafts come from speculating sequences");
            let (n, emit, logits) = if s.sampler.params().is_greedy() {
                let a: Vec<u32> = block.iter().map(|r| r.token).collect();
                let (n, e) = infer_sampling::accept(
                    &draft,
                    BlockOut::Argmax(&a),
                    vocab,
                    &mut s.sampler,
                    &mut sp.rng,
                );
                let l: Vec<Option<Vec<f32>>> = block.into_iter().map(|r| r.logits).collect();
                (n, e, l)
            } else {
                let l: Vec<Vec<f32>> = block
                    .into_iter()
                    .map(|r| r.logits.expect("sampled rows bring logits"))
                    .collect();
                let mut flat = l.concat();
                let (n, e) = infer_sampling::accept(
                    &draft,
                    BlockOut::Logits(&mut flat),
                    vocab,
                    &mut s.sampler,
                    &mut sp.rng,
                );
                (n, e, l.into_iter().map(Some).collect())
            };
            sp.ctl.update(m, n);
            self.metrics.draft_tokens.fetch_add(m as u64, Relaxed);
            self.metrics.accepted_tokens.fetch_add(n as u64, Relaxed);
            // The pending token and the accepted drafts are cached now.
            s.cached += n;
            let now = Instant::now();
            for (j, t) in emit.into_iter().enumerate() {
                let lp = match (&logits[j], s.req.logprobs) {
                    (Some(l), Some(k)) => Some(logprob(self.tok, l, t, k)),
                    _ => None,
                };
                if finish_emit(s, &self.metrics, t, lp, now) {
                    finished.push(i);
                    break;
                }
            }
        }
        let bs = self.model.bc.block_size;
        for s in &mut self.running {
            register_prompt_blocks(&mut self.blocks, s, bs);
        }
        finished.sort_unstable_by(|a, b| b.cmp(a));
        for i in finished {
            let mut s = self.running.swap_remove(i);
            self.free(&mut s);
        }
        self.gauges();
        Ok(())
    }
}

/// Registers the sequence's prompt blocks whose K and V are all written, for later prompts
/// that start the same way (the prefix cache).
fn register_prompt_blocks(blocks: &mut BlockAllocator, s: &mut Seq<'_>, bs: usize) {
    let full = s.cached.min(s.n_prompt) / bs;
    while s.registered < full {
        let i = s.registered;
        let chunk = &s.tokens[i * bs..(i + 1) * bs];
        blocks.register(s.blocks[i], s.parent_hash, chunk);
        s.parent_hash = crate::kv::block_hash(s.parent_hash, chunk);
        s.registered += 1;
    }
}

/// Log-softmax of the logits: the chosen token's and the top `k`.
fn logprob(tok: &Tokenizer, logits: &[f32], chosen: u32, k: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    let lp = |i: u32| (logits[i as usize] as f64 - lse) as f32;
    let text = |i: u32| tok.decode(&[i], false).unwrap_or_default();
    let mut top: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(top.len());
    if k > 0 {
        top.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
    }
    top.truncate(k);
    top.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    TokenLogprob {
        token: text(chosen),
        logprob: lp(chosen),
        top: top.into_iter().map(|i| (text(i), lp(i))).collect(),
    }
}

/// Takes the model's output for a sequence: picks the token, streams its text, applies
/// stop tokens, stop strings and the length limit. Returns whether the sequence finished.
fn emit_token(
    s: &mut Seq<'_>,
    tok: &Tokenizer,
    m: &Metrics,
    argmax: u32,
    logits: Option<Vec<f32>>,
) -> bool {
    let now = Instant::now();
    let t = match &logits {
        Some(l) if !s.sampler.params().is_greedy() => s.sampler.sample(&mut l.clone()),
        _ => argmax,
    };
    let lp = match (&logits, s.req.logprobs) {
        (Some(l), Some(k)) => Some(logprob(tok, l, t, k)),
        _ => None,
    };
    finish_emit(s, m, t, lp, now)
}

/// Records a chosen token and sends its text (and the end, if it ends the sequence).
/// Returns whether the sequence finished.
fn finish_emit(
    s: &mut Seq<'_>,
    m: &Metrics,
    t: u32,
    lp: Option<TokenLogprob>,
    now: Instant,
) -> bool {
    s.sampler.observe(t);
    m.generated_tokens.fetch_add(1, Relaxed);
    match s.last {
        None => m.ttft(now.duration_since(s.req.arrived).as_secs_f64()),
        Some(prev) => m.itl(now.duration_since(prev).as_secs_f64()),
    }
    s.last = Some(now);
    s.tokens.push(t);
    let piece = match s.text.push(t) {
        Ok(p) => p,
        // A server fault that ends this sequence only, not the batch.
        Err(e) => {
            let _ = s.req.events.send(Event::Error {
                message: format!("decoding token {t}: {e}"),
                kind: Failure::Internal,
            });
            return true;
        }
    };
    let _ = s.req.events.send(Event::Token {
        text: piece.text,
        logprob: lp,
    });
    if let Some(finish_reason) = piece.finish {
        let _ = s.req.events.send(Event::Done {
            finish_reason,
            prompt_tokens: s.n_prompt,
            completion_tokens: s.generated(),
        });
    }
    piece.finish.is_some()
}
