//! Speculative decoding: a drafter proposes k tokens, the target scores all k + 1 positions
//! in one forward pass ([`Output::AllArgmax`] / [`Output::AllLogits`]) and keeps the longest
//! prefix the speculative-sampling rule accepts, plus one token of its own:
//!
//! - greedy: accept while the target's argmax equals the draft token; the target's argmax
//!   at the first mismatch (or after the last draft token: the bonus) comes next.
//! - sampling: accept draft token x with probability min(1, p(x) / q(x)) (p the target's
//!   distribution after the sampler's processing, q the drafter's; a copied token has q =
//!   1 at x); on rejection draw from max(0, p - q) normalised; when all k are accepted draw
//!   a bonus token from p at the last position. The output is distributed exactly as p.
//!
//! Both KV caches roll back past rejected tokens ([`Model::truncate`]); the draft model
//! re-syncs to the accepted text by longest common prefix.

use std::time::Instant;

use infer_models::{MAX_VERIFY, Model, ModelConfig, Output, StepOut, Tokenizer};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{
    Dist, Emitter, Generation, Result, Sampler, SamplingError, SamplingParams, Stats, draw,
    next_token, prepare,
};

/// What a drafter proposes: tokens, and for a sampled draft the distribution each was
/// drawn from (`None`: chosen deterministically, q = 1 at the token).
#[derive(Clone, Debug, Default)]
pub struct Draft {
    pub tokens: Vec<u32>,
    pub q: Option<Vec<Dist>>,
}

/// Proposes tokens to continue a context; both drafters sit behind this.
pub trait Drafter {
    fn name(&self) -> String;
    /// Up to `k` tokens to follow `context` (the prompt and every token generated so far;
    /// the last one is not yet in the target's KV cache). Fewer (or none) is fine.
    fn propose(
        &mut self,
        context: &[u32],
        k: usize,
        params: &SamplingParams,
        rng: &mut StdRng,
    ) -> Result<Draft>;
    /// What drafting one token costs relative to a one-token step of `target` (0 when
    /// drafting is free next to the model, as for prompt lookup).
    fn draft_cost(&self, _target: &ModelConfig) -> f64 {
        0.0
    }
}

/// How many tokens to draft per step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DraftK {
    /// Always k (at most `MAX_VERIFY - 1`).
    Fixed(usize),
    /// Chosen every step from the acceptance seen so far and what a step costs
    /// ([`StepCost`]): the k that maximises expected tokens per unit of time (see
    /// [`KControl`]).
    Adaptive,
}

/// What speculation costs, relative to one plain decode step of the target (a one-token
/// forward = 1): verifying k drafts runs k + 1 rows, `1 + row * k`, and drafting them
/// costs `draft * k`. Fixed per model and adapter (never timed at run time), so the k
/// sequence, and with it a seeded sampled output, is the same run after run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCost {
    /// Marginal cost of one more row in a verification step (see `Model::row_cost`).
    pub row: f64,
    /// Cost of drafting one token (0 for prompt lookup; see [`Drafter::draft_cost`]).
    pub draft: f64,
}

/// Chooses k step by step from a [`DraftK`], the acceptance seen so far and a
/// [`StepCost`].
///
/// Adaptive k: drafts are modelled as accepted one after another, each with probability p,
/// until the first rejection, so k drafts yield on average E(k) = 1 + p + ... + p^k tokens
/// (the accepted ones plus the target's own next token) for a cost of
/// 1 + (row + draft) k. k is the argmax of E(k) / cost(k) over 1..=15. p is estimated as
/// accepted drafts over drafts examined (each step examines its accepted drafts plus the
/// one rejected, if any), both decayed by 0.7 per step, with a prior of 0.8 (one examined
/// draft's worth). On a CPU adapter (row ~0.45) that drafts 1 at p = 0.7, 2 at p = 0.8 and 6
/// at p = 0.95; on a GPU (row ~0.1), 4, 6 and 15.
#[derive(Clone, Debug)]
pub struct KControl {
    mode: DraftK,
    cost: StepCost,
    accepted: f64,
    examined: f64,
}

impl KControl {
    pub fn new(mode: DraftK, cost: StepCost) -> KControl {
        KControl {
            mode,
            cost,
            accepted: 0.0,
            examined: 0.0,
        }
    }

    /// The estimated probability that a draft token is accepted.
    pub fn acceptance(&self) -> f64 {
        ((self.accepted + 0.8) / (self.examined + 1.0)).min(0.99)
    }

    /// Tokens to draft next (1..=`MAX_VERIFY - 1`, or the fixed k capped there).
    pub fn k(&self) -> usize {
        let max = MAX_VERIFY - 1;
        match self.mode {
            DraftK::Fixed(k) => k.min(max),
            DraftK::Adaptive => {
                let p = self.acceptance();
                let per = self.cost.row.max(0.0) + self.cost.draft.max(0.0);
                let (mut best, mut best_k) = (0.0, 1);
                let (mut expected, mut pk) = (1.0, 1.0);
                for k in 1..=max {
                    pk *= p;
                    expected += pk;
                    let rate = expected / (1.0 + per * k as f64);
                    if rate > best {
                        (best, best_k) = (rate, k);
                    }
                }
                best_k
            }
        }
    }

    /// Records a step that accepted `accepted` of `proposed` draft tokens.
    pub fn update(&mut self, proposed: usize, accepted: usize) {
        if proposed > 0 {
            let examined = accepted + usize::from(accepted < proposed);
            self.accepted = 0.7 * self.accepted + accepted as f64;
            self.examined = 0.7 * self.examined + examined as f64;
        }
    }
}

/// A smaller model with the target's tokenizer, drafting autoregressively.
pub struct DraftModel {
    model: Box<dyn Model>,
    /// The ids in the draft's KV cache (`model.position()` of them).
    fed: Vec<u32>,
    sampler: Option<Sampler>,
}

impl DraftModel {
    /// A draft for a target with `target_vocab` logits (the vocabularies must agree; check
    /// the tokenizers with [`check_draft_tokenizer`] too when both have one).
    pub fn new(mut model: Box<dyn Model>, target_vocab: usize) -> Result<DraftModel> {
        let v = model.config().vocab_size;
        if v != target_vocab {
            return Err(SamplingError::DraftMismatch(format!(
                "the draft has a vocabulary of {v}, the target {target_vocab}"
            )));
        }
        model.truncate(0);
        Ok(DraftModel {
            model,
            fed: Vec::new(),
            sampler: None,
        })
    }

    pub fn model(&mut self) -> &mut dyn Model {
        self.model.as_mut()
    }

    /// Forgets the draft's KV cache (a new context).
    pub fn reset(&mut self) {
        self.model.truncate(0);
        self.fed.clear();
    }
}

/// Weights a token's forward pass multiplies by (projections, MLP, output head): the
/// measure of a step's cost [`DraftModel::draft_cost`] compares across models.
fn weights_per_token(c: &ModelConfig) -> f64 {
    let attn = c.hidden * c.head_dim * 2 * (c.n_heads + c.n_kv_heads);
    let mlp = 3 * c.hidden * c.intermediate;
    (c.n_layers * (attn + mlp) + c.vocab_size * c.hidden) as f64
}

impl Drafter for DraftModel {
    fn name(&self) -> String {
        "draft-model".into()
    }

    /// The draft's weights per token over the target's (a draft step reads its weights as
    /// a target step does; dtypes are not weighed).
    fn draft_cost(&self, target: &ModelConfig) -> f64 {
        weights_per_token(self.model.config()) / weights_per_token(target).max(1.0)
    }

    fn propose(
        &mut self,
        context: &[u32],
        k: usize,
        params: &SamplingParams,
        rng: &mut StdRng,
    ) -> Result<Draft> {
        // Roll back to the longest prefix of the context the cache holds (at least the
        // last token is fed again so there is something to run).
        let common = self
            .fed
            .iter()
            .zip(context)
            .take_while(|(a, b)| a == b)
            .count()
            .min(context.len() - 1);
        self.model.truncate(common);
        self.fed.truncate(common);
        let room = self.model.capacity().saturating_sub(context.len() - 1);
        let k = k.min(room);
        let greedy = params.is_greedy();
        if !greedy {
            let s = self
                .sampler
                .get_or_insert_with(|| Sampler::new(params.clone()));
            s.set_history(context);
        }
        let mut input = context[common..].to_vec();
        let mut draft = Draft {
            tokens: Vec::with_capacity(k),
            q: (!greedy).then(Vec::new),
        };
        for _ in 0..k {
            let mode = match self.sampler.as_ref().and_then(Sampler::gpu_topk) {
                _ if greedy => Output::Argmax,
                Some(k) => Output::TopK(k.min(self.model.config().vocab_size)),
                None => Output::Logits,
            };
            let out = self.model.forward(&input, mode)?;
            self.fed.extend(&input);
            let t = match out {
                StepOut::Token(t) => t,
                StepOut::Logits(mut l) => {
                    let s = self.sampler.as_mut().expect("set above when sampling");
                    let d = s.distribution(&mut l);
                    let t = draw(&d, rng);
                    s.observe(t);
                    draft.q.as_mut().expect("sampling").push(d);
                    t
                }
                StepOut::TopK(c) => {
                    let s = self.sampler.as_mut().expect("set above when sampling");
                    let d = s.distribution_topk(c);
                    let t = draw(&d, rng);
                    s.observe(t);
                    draft.q.as_mut().expect("sampling").push(d);
                    t
                }
                other => {
                    return Err(infer_models::ModelError::Invalid(format!(
                        "draft step returned {other:?}"
                    ))
                    .into());
                }
            };
            draft.tokens.push(t);
            input = vec![t];
        }
        Ok(draft)
    }
}

/// A draft must share the target's tokenizer: same size and the same token at every id.
pub fn check_draft_tokenizer(target: &Tokenizer, draft: &Tokenizer) -> Result<()> {
    let (a, b) = (target.vocab_size(), draft.vocab_size());
    if a != b {
        return Err(SamplingError::DraftMismatch(format!(
            "the draft's tokenizer has {b} tokens, the target's {a}"
        )));
    }
    for id in 0..a as u32 {
        let (x, y) = (target.id_to_token(id), draft.id_to_token(id));
        if x != y {
            return Err(SamplingError::DraftMismatch(format!(
                "token {id} is {x:?} in the target's tokenizer but {y:?} in the draft's"
            )));
        }
    }
    if target.eos_ids() != draft.eos_ids() {
        return Err(SamplingError::DraftMismatch(format!(
            "end-of-sequence ids differ: target {:?}, draft {:?}",
            target.eos_ids(),
            draft.eos_ids()
        )));
    }
    Ok(())
}

/// A distribution as a dense vector over `vocab` ids.
fn dense(d: &[(u32, f64)], vocab: usize) -> Vec<f64> {
    let mut v = vec![0.0; vocab];
    for &(id, x) in d {
        if let Some(slot) = v.get_mut(id as usize) {
            *slot += x;
        }
    }
    v
}

/// Draws from max(0, p - q) normalised (p itself where that is all zero).
fn draw_residual(p: &[f64], q: &[f64], rng: &mut StdRng) -> u32 {
    let r: Vec<(u32, f64)> = p
        .iter()
        .zip(q)
        .enumerate()
        .filter_map(|(i, (&p, &q))| (p > q).then_some((i as u32, p - q)))
        .collect();
    if r.is_empty() {
        let p: Vec<(u32, f64)> = p
            .iter()
            .enumerate()
            .filter(|x| *x.1 > 0.0)
            .map(|(i, &x)| (i as u32, x))
            .collect();
        return draw(&p, rng);
    }
    draw(&r, rng)
}

/// The target's outputs over a verification block (the pending token, then the draft).
pub enum BlockOut<'a> {
    /// The argmax at each of the `m + 1` positions (greedy).
    Argmax(&'a [u32]),
    /// The logits at each of the `m + 1` positions, row after row.
    Logits(&'a mut [f32]),
}

/// The speculative-sampling rule over one verified block: returns the accepted draft count
/// and the tokens to emit (the accepted ones, then the target's correction or bonus token).
/// The caller observes every emitted token with the sampler.
pub fn accept(
    draft: &Draft,
    out: BlockOut,
    vocab: usize,
    sampler: &mut Sampler,
    rng: &mut StdRng,
) -> (usize, Vec<u32>) {
    let d = &draft.tokens;
    let m = d.len();
    let mut emit = Vec::with_capacity(m + 1);
    match out {
        BlockOut::Argmax(a) => {
            let n = a.iter().zip(d).take_while(|(a, d)| a == d).count();
            emit.extend(&d[..n]);
            emit.push(a[n]);
            (n, emit)
        }
        BlockOut::Logits(l) => {
            let mut next = None;
            for (i, &x) in d.iter().enumerate() {
                let p = dense(
                    &sampler.distribution(&mut l[i * vocab..(i + 1) * vocab]),
                    vocab,
                );
                let q = match &draft.q {
                    Some(q) => dense(&q[i], vocab),
                    None => dense(&[(x, 1.0)], vocab),
                };
                let (px, qx) = (p[x as usize], q[x as usize]);
                if qx > 0.0 && rng.random::<f64>() * qx < px {
                    sampler.observe(x);
                    emit.push(x);
                } else {
                    next = Some(draw_residual(&p, &q, rng));
                    break;
                }
            }
            let n = emit.len();
            let t = match next {
                Some(t) => t,
                None => {
                    let row = &mut l[m * vocab..(m + 1) * vocab];
                    draw(&sampler.distribution(row), rng)
                }
            };
            emit.iter().for_each(|&x| sampler.forget(x));
            emit.push(t);
            (n, emit)
        }
    }
}

/// One speculative step: verifies `draft` after the pending token `last` in one forward
/// pass of the target and applies [`accept`]. The target's cache ends holding `last` and
/// the accepted tokens.
pub fn verify(
    target: &mut dyn Model,
    last: u32,
    draft: &Draft,
    sampler: &mut Sampler,
    rng: &mut StdRng,
) -> Result<(usize, Vec<u32>)> {
    let p0 = target.position();
    let mut block = Vec::with_capacity(draft.tokens.len() + 1);
    block.push(last);
    block.extend(&draft.tokens);
    let vocab = target.config().vocab_size;
    let (n, out) = if sampler.params().is_greedy() {
        let StepOut::Tokens(a) = target.forward(&block, Output::AllArgmax)? else {
            return Err(infer_models::ModelError::Invalid("verify: expected tokens".into()).into());
        };
        accept(draft, BlockOut::Argmax(&a), vocab, sampler, rng)
    } else {
        let StepOut::Logits(mut l) = target.forward(&block, Output::AllLogits)? else {
            return Err(infer_models::ModelError::Invalid("verify: expected logits".into()).into());
        };
        accept(draft, BlockOut::Logits(&mut l), vocab, sampler, rng)
    };
    target.truncate(p0 + 1 + n);
    Ok((n, out))
}

/// [`crate::generate`] with a drafter: the same output for greedy decoding, the same
/// distribution when sampling, in fewer target steps when drafts are accepted.
/// `stats.draft_tokens` / `accepted_tokens` count proposed and accepted draft tokens.
pub fn generate_speculative(
    target: &mut dyn Model,
    drafter: &mut dyn Drafter,
    k: DraftK,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    on_text: impl FnMut(&str),
) -> Result<Generation> {
    let eos = prepare(target, tok, prompt_ids, params)?;
    if let DraftK::Fixed(0) = k {
        return Err(crate::invalid(
            "draft_tokens",
            "0 drafts nothing (omit it to adapt k)",
        ));
    }
    let mut sampler = Sampler::new(params.clone());
    for &t in prompt_ids {
        sampler.observe(t);
    }
    // Drafting and acceptance draws use their own stream, seeded from the same seed.
    let mut rng = StdRng::seed_from_u64(params.seed ^ 0x9e37_79b9_7f4a_7c15);
    let cost = StepCost {
        row: target.row_cost(),
        draft: drafter.draft_cost(target.config()),
    };
    let mut ctl = KControl::new(k, cost);
    let mut stats = Stats {
        prompt_tokens: prompt_ids.len(),
        ..Default::default()
    };
    let start = target.position();
    let mut context = prompt_ids.to_vec();
    let mut em = Emitter::new(tok, prompt_ids, params, &eos, on_text);
    let t0 = Instant::now();
    let first = if params.max_tokens == 0 {
        None
    } else {
        Some(next_token(target, prompt_ids, &mut sampler)?)
    };
    stats.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    stats.ttft_ms = stats.prefill_ms;
    let t1 = Instant::now();
    let mut pending = first.into_iter().collect::<Vec<u32>>();
    'outer: while !pending.is_empty() {
        for t in std::mem::take(&mut pending) {
            sampler.observe(t);
            context.push(t);
            if em.push(t)? {
                break 'outer;
            }
        }
        if target.position() >= target.capacity() {
            break;
        }
        let last = *context.last().expect("a token was emitted");
        let k = ctl
            .k()
            .min(params.max_tokens.saturating_sub(em.ids.len() + 1))
            .min(target.capacity() - target.position() - 1);
        let draft = if k > 0 {
            drafter.propose(&context, k, params, &mut rng)?
        } else {
            Draft::default()
        };
        if draft.tokens.is_empty() {
            pending.push(next_token(target, &[last], &mut sampler)?);
            continue;
        }
        let (n, out) = verify(target, last, &draft, &mut sampler, &mut rng)?;
        stats.draft_tokens += draft.tokens.len();
        stats.accepted_tokens += n;
        ctl.update(draft.tokens.len(), n);
        pending = out;
    }
    let finish_reason = em.finish()?;
    // The cache holds the prompt and every emitted token but the last, as after a plain run.
    target.truncate(start + prompt_ids.len() + em.ids.len().saturating_sub(1));
    stats.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    stats.generated_tokens = em.ids.len();
    Ok(Generation {
        prompt_token_ids: prompt_ids.to_vec(),
        token_ids: em.ids,
        text: em.text,
        finish_reason,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_k_weighs_acceptance_against_cost() {
        let cpu = StepCost {
            row: 0.45,
            draft: 0.0,
        };
        let gpu = StepCost {
            row: 0.1,
            draft: 0.0,
        };
        // The prior (p = 0.8).
        assert_eq!(KControl::new(DraftK::Adaptive, cpu).k(), 2);
        assert_eq!(KControl::new(DraftK::Adaptive, gpu).k(), 6);
        // Every draft accepted: longer drafts, the cheaper rows are the longer.
        let (mut c, mut g) = (
            KControl::new(DraftK::Adaptive, cpu),
            KControl::new(DraftK::Adaptive, gpu),
        );
        for _ in 0..20 {
            c.update(4, 4);
            g.update(4, 4);
        }
        assert!(c.acceptance() > 0.95);
        assert!(c.k() >= 8, "cpu k {}", c.k());
        assert_eq!(g.k(), MAX_VERIFY - 1);
        // Every draft rejected: one draft.
        for _ in 0..20 {
            c.update(4, 0);
            g.update(4, 0);
        }
        assert!(c.acceptance() < 0.2, "{}", c.acceptance());
        assert_eq!((c.k(), g.k()), (1, 1));
        // Drafting that costs as much as verifying halves the k a GPU picks at p = 0.8.
        let dm = StepCost {
            row: 0.1,
            draft: 0.1,
        };
        assert_eq!(KControl::new(DraftK::Adaptive, dm).k(), 4);
        let f = KControl::new(DraftK::Fixed(40), cpu);
        assert_eq!(f.k(), MAX_VERIFY - 1);
    }

    #[test]
    fn residual_excludes_what_the_draft_overproposed() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = [0.5, 0.5, 0.0];
        let q = [1.0, 0.0, 0.0];
        for _ in 0..50 {
            assert_eq!(draw_residual(&p, &q, &mut rng), 1);
        }
    }
}
