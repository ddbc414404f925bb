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

use infer_models::{MAX_VERIFY, Model, Output, StepOut, Tokenizer};
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
}

/// How many tokens to draft per step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DraftK {
    /// Always k (at most `MAX_VERIFY - 1`).
    Fixed(usize),
    /// From the running acceptance rate a (an exponential average of accepted / proposed):
    /// k = round(1 + 2a / (1 - a)), in 1..=15, starting at a = 0.6 (k = 4). The expected
    /// run of accepted tokens is a / (1 - a); drafting about twice that keeps the bonus
    /// token likely without wasting many positions.
    Adaptive,
}

/// Chooses k step by step from a [`DraftK`] and the acceptance seen so far.
#[derive(Clone, Debug)]
pub struct KControl {
    mode: DraftK,
    rate: f64,
}

impl KControl {
    pub fn new(mode: DraftK) -> KControl {
        KControl { mode, rate: 0.6 }
    }

    /// Tokens to draft next (1..=`MAX_VERIFY - 1`, or the fixed k capped there).
    pub fn k(&self) -> usize {
        let max = MAX_VERIFY - 1;
        match self.mode {
            DraftK::Fixed(k) => k.min(max),
            DraftK::Adaptive => {
                let a = self.rate.min(0.95);
                ((1.0 + 2.0 * a / (1.0 - a)).round() as usize).clamp(1, max)
            }
        }
    }

    /// Records a step that accepted `accepted` of `proposed` draft tokens.
    pub fn update(&mut self, proposed: usize, accepted: usize) {
        if proposed > 0 {
            self.rate = 0.7 * self.rate + 0.3 * accepted as f64 / proposed as f64;
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

impl Drafter for DraftModel {
    fn name(&self) -> String {
        "draft-model".into()
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
    let mut ctl = KControl::new(k);
    let mut stats = Stats {
        prompt_tokens: prompt_ids.len(),
        ..Default::default()
    };
    let start = target.position();
    let mut context = prompt_ids.to_vec();
    let mut em = Emitter::new(tok, prompt_ids, params, eos, on_text);
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
    em.finish()?;
    // The cache holds the prompt and every emitted token but the last, as after a plain run.
    target.truncate(start + prompt_ids.len() + em.ids.len().saturating_sub(1));
    stats.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    stats.generated_tokens = em.ids.len();
    Ok(Generation {
        prompt_token_ids: prompt_ids.to_vec(),
        token_ids: em.ids,
        text: em.text,
        finish_reason: em.finish,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_k_follows_the_acceptance_rate() {
        let mut c = KControl {
            mode: DraftK::Adaptive,
            rate: 0.6,
        };
        assert_eq!(c.k(), 4);
        for _ in 0..20 {
            c.update(4, 4);
        }
        assert_eq!(c.k(), 15);
        for _ in 0..20 {
            c.update(4, 0);
        }
        assert_eq!(c.k(), 1);
        let f = KControl {
            mode: DraftK::Fixed(40),
            rate: 0.0,
        };
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
