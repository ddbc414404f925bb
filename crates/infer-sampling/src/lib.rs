//! Logits processing, samplers, the generation loop and speculative decoding.
//!
//! Greedy decoding (temperature 0, no penalties or bias) keeps the argmax on the GPU so only
//! a token id comes back, and chains up to [`GREEDY_DEPTH`] steps on the GPU (each fed the
//! previous step's argmax) so the host never waits for a token before submitting the next
//! step; top-k sampling without penalties or bias selects the k best on the
//! GPU ([`Output::TopK`]) so only k (id, logit) pairs come back; any other setting reads the
//! last position's logits and samples on the host. Sampling uses a seeded RNG (same seed +
//! same inputs = same output on the same adapter). [`spec`] adds speculative decoding with
//! a draft model or prompt lookup ([`lookup`]).

use std::time::Instant;

use infer_models::{MAX_TOPK, Model, ModelError, Output, StepOut, Tokenizer};

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Largest top-k selected on the GPU ([`Output::TopK`]); larger k read the logits back.
/// For small k the GPU's selection plus reading k pairs beats reading every logit and
/// selecting on the host; for large k the selection costs more than the read it saves
/// (`infer bench --sampling` times both; figures in bench/notes/serve.md).
pub const GPU_TOPK_MAX_K: usize = 64;

/// Greedy decode steps [`generate`] keeps in flight (`ahead + 1` of
/// [`Model::greedy_next`]): the host records and submits the next steps while the GPU runs
/// the current one instead of waiting for each token's read-back. Two would hide the host's
/// work when it takes less than a step's GPU time; three leaves slack for jitter. Tokens
/// are exactly the plain loop's; steps past a stop are discarded. The model may chain fewer
/// (CPU adapters chain none by default: [`infer_models::chain_ahead`]).
pub const GREEDY_DEPTH: usize = 3;

pub mod lookup;
pub mod spec;
pub mod text;

pub use lookup::PromptLookup;
pub use spec::{
    BlockOut, Draft, DraftK, DraftModel, Drafter, KControl, StepCost, accept,
    check_draft_tokenizer, generate_speculative, verify,
};
pub(crate) use text::Emitter;
pub use text::{FinishReason, Piece, StopFilter, TextStream};

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("invalid sampling parameter `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A draft model that cannot draft for this target (another tokenizer or vocabulary).
    #[error("the draft model does not match the target: {0}")]
    DraftMismatch(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

pub type Result<T, E = SamplingError> = std::result::Result<T, E>;

/// Sampling and stopping settings (the OpenAI / llama.cpp set).
#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; `None` = all.
    pub top_k: Option<usize>,
    /// Nucleus sampling mass in (0, 1].
    pub top_p: f32,
    /// Drop tokens below `min_p` x the top probability; 0 = off.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of tokens seen before; 1 = off.
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every token generated so far.
    pub presence_penalty: f32,
    /// Subtracted per occurrence from the logit of every token generated so far.
    pub frequency_penalty: f32,
    /// Added to the logits of the named tokens.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
    pub max_tokens: usize,
    /// Text that ends generation (not included in the output).
    pub stop: Vec<String>,
    /// Token ids that end generation, besides the model's EOS ids.
    pub stop_token_ids: Vec<u32>,
    /// Keep going past EOS.
    pub ignore_eos: bool,
    /// Select the top k on the GPU when that gives the same result (top-k set, no
    /// penalties or bias); `false` reads the whole logits vector back instead.
    pub gpu_topk: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: vec![],
            seed: 0,
            max_tokens: 256,
            stop: vec![],
            stop_token_ids: vec![],
            ignore_eos: false,
            gpu_topk: true,
        }
    }
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> SamplingError {
    SamplingError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl SamplingParams {
    /// Checks every parameter; `vocab` bounds token ids in biases and stop ids.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(invalid(
                "temperature",
                format!("{} is not >= 0", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid("top_p", format!("{} is not in (0, 1]", self.top_p)));
        }
        if self.top_k == Some(0) {
            return Err(invalid("top_k", "0 keeps no token (omit it to keep all)"));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(invalid("min_p", format!("{} is not in [0, 1]", self.min_p)));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(invalid(
                "repeat_penalty",
                format!("{} is not > 0", self.repeat_penalty),
            ));
        }
        for (f, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !v.is_finite() {
                return Err(invalid(f, format!("{v} is not finite")));
            }
        }
        for &(id, b) in &self.logit_bias {
            if id as usize >= vocab {
                return Err(invalid(
                    "logit_bias",
                    format!("token id {id} is not in the vocabulary of {vocab}"),
                ));
            }
            if b.is_nan() {
                return Err(invalid("logit_bias", format!("bias for {id} is NaN")));
            }
        }
        if let Some(&id) = self.stop_token_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(invalid(
                "stop_token_ids",
                format!("token id {id} is not in the vocabulary of {vocab}"),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(invalid("stop", "an empty stop string"));
        }
        if self.max_tokens == 0 {
            return Err(invalid("max_tokens", "0 generates nothing (at least 1)"));
        }
        Ok(())
    }

    /// Whether the GPU argmax gives exactly this sampler's choice.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
            && self.repeat_penalty == 1.0
            && self.presence_penalty == 0.0
            && self.frequency_penalty == 0.0
            && self.logit_bias.is_empty()
    }
}

/// A probability distribution over token ids: (id, probability), most likely first, the
/// probabilities summing to 1.
pub type Dist = Vec<(u32, f64)>;

/// Picks tokens from logits according to [`SamplingParams`].
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    counts: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = StdRng::seed_from_u64(params.seed);
        Sampler {
            params,
            rng,
            counts: Default::default(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a token as part of the context the penalties look at.
    pub fn observe(&mut self, token: u32) {
        *self.counts.entry(token).or_default() += 1;
    }

    /// Undoes one [`Sampler::observe`] (a rejected draft token).
    pub fn forget(&mut self, token: u32) {
        if let Some(n) = self.counts.get_mut(&token) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&token);
            }
        }
    }

    /// Replaces the penalty context with `tokens`.
    pub fn set_history(&mut self, tokens: &[u32]) {
        self.counts.clear();
        tokens.iter().for_each(|&t| self.observe(t));
    }

    /// Applies penalties and bias in place.
    pub fn process(&self, logits: &mut [f32]) {
        let p = &self.params;
        for (&tok, &n) in &self.counts {
            let Some(l) = logits.get_mut(tok as usize) else {
                continue;
            };
            if p.repeat_penalty != 1.0 {
                *l = if *l > 0.0 {
                    *l / p.repeat_penalty
                } else {
                    *l * p.repeat_penalty
                };
            }
            *l -= p.presence_penalty + p.frequency_penalty * n as f32;
        }
        for &(tok, b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(tok as usize) {
                *l += b;
            }
        }
    }

    /// The k of [`Output::TopK`] when the GPU's top k gives exactly this sampler's
    /// candidates (sampling, temperature > 0, with top-k set and nothing that moves logits:
    /// penalties, bias) and is the faster path (k <= [`GPU_TOPK_MAX_K`]).
    pub fn gpu_topk(&self) -> Option<usize> {
        let p = &self.params;
        let k = p.top_k?;
        (p.gpu_topk
            && p.temperature > 0.0
            && k <= GPU_TOPK_MAX_K.min(MAX_TOPK)
            && p.repeat_penalty == 1.0
            && p.presence_penalty == 0.0
            && p.frequency_penalty == 0.0
            && p.logit_bias.is_empty())
        .then_some(k)
    }

    /// The distribution the next token is drawn from: penalties, bias, temperature, top-k,
    /// min-p, top-p, normalised. Temperature 0 gives all the mass to the argmax.
    pub fn distribution(&self, logits: &mut [f32]) -> Dist {
        self.process(logits);
        if self.params.temperature == 0.0 {
            return vec![(infer_tensor_argmax(logits), 1.0)];
        }
        let cand = match self.params.top_k {
            // The same k candidates in the same order as the GPU's top k.
            Some(k) => top_k_candidates(logits, k),
            None => logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l))
                .collect(),
        };
        self.truncate(cand)
    }

    /// [`Sampler::distribution`] from the GPU's top k (id, logit) pairs, best first
    /// ([`Sampler::gpu_topk`] must have allowed it): the same distribution as
    /// [`Sampler::distribution`] on the whole logits vector.
    pub fn distribution_topk(&self, cand: Vec<(u32, f32)>) -> Dist {
        self.truncate(cand)
    }

    /// Temperature, top-k, min-p and top-p over (id, processed logit) candidates; the
    /// non-finite ones are dropped.
    ///
    /// The top k are chosen on the logits before the temperature divides them (dividing can
    /// round two different logits to one value and so reorder ties), and -inf / +inf count
    /// in that choice before being dropped: exactly what the GPU's top k gives.
    fn truncate(&self, mut cand: Vec<(u32, f32)>) -> Dist {
        let p = &self.params;
        cand.retain(|c| !c.1.is_nan());
        // Sorted by logit, ties by id, for determinism.
        cand.sort_by(by_logit);
        if let Some(k) = p.top_k {
            cand.truncate(k);
        }
        cand.retain(|c| c.1.is_finite());
        if cand.is_empty() {
            return vec![(0, 1.0)];
        }
        cand.iter_mut().for_each(|c| c.1 /= p.temperature);
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|c| ((c.1 - max) as f64).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.min_p > 0.0 {
            let cut = probs[0] * p.min_p as f64;
            let keep = probs.iter().take_while(|&&x| x >= cut).count().max(1);
            probs.truncate(keep);
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, &x) in probs.iter().enumerate() {
                acc += x;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        cand.iter()
            .zip(probs)
            .map(|(c, x)| (c.0, x / total))
            .collect()
    }

    /// The next token from the last position's logits.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let d = self.distribution(logits);
        draw(&d, &mut self.rng)
    }

    /// The next token from the GPU's top k (id, logit) pairs.
    pub fn sample_topk(&mut self, cand: Vec<(u32, f32)>) -> u32 {
        let d = self.distribution_topk(cand);
        draw(&d, &mut self.rng)
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}

/// Larger logit first (`f32::total_cmp`), then the lower id: the order of the GPU's top k.
fn by_logit(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The `k` largest logits as (id, logit), best first (larger logit in `f32::total_cmp`
/// order, then the lower id; NaN never chosen): on the host, what the GPU's top k
/// ([`Output::TopK`]) returns. A partial selection, then a sort of the k.
pub fn top_k_candidates(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_nan())
        .map(|(i, &l)| (i as u32, l))
        .collect();
    if k == 0 {
        return vec![];
    }
    if all.len() > k {
        all.select_nth_unstable_by(k - 1, by_logit);
        all.truncate(k);
    }
    all.sort_by(by_logit);
    all
}

/// Draws from a distribution (inverse CDF with one uniform).
pub fn draw(d: &[(u32, f64)], rng: &mut StdRng) -> u32 {
    let total: f64 = d.iter().map(|x| x.1).sum();
    let mut r = rng.random::<f64>() * total;
    for &(id, x) in d {
        r -= x;
        if r <= 0.0 {
            return id;
        }
    }
    d.last().map_or(0, |x| x.0)
}

fn infer_tensor_argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best as u32
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub ttft_ms: f64,
    /// Draft tokens proposed to the target (speculative decoding; 0 otherwise).
    pub draft_tokens: usize,
    /// Draft tokens the target accepted.
    pub accepted_tokens: usize,
}

impl Stats {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / (self.prefill_ms / 1000.0).max(1e-9)
    }

    /// Tokens after the first, over the time after the first.
    pub fn decode_tok_s(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / (self.decode_ms / 1000.0).max(1e-9)
    }

    /// Accepted over proposed draft tokens (0 without drafts).
    pub fn acceptance_rate(&self) -> f64 {
        if self.draft_tokens == 0 {
            0.0
        } else {
            self.accepted_tokens as f64 / self.draft_tokens as f64
        }
    }
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_token_ids: Vec<u32>,
    /// Generated ids only (a final EOS / stop token included).
    pub token_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub stats: Stats,
}

/// Checks the parameters and that the prompt fits; returns the ids that end generation.
pub(crate) fn prepare(
    model: &dyn Model,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
) -> Result<Vec<u32>> {
    params.validate(model.config().vocab_size)?;
    if prompt_ids.is_empty() {
        return Err(invalid("prompt", "the prompt has no tokens"));
    }
    let need = model.position() + prompt_ids.len();
    if need > model.capacity() {
        return Err(ModelError::PromptTooLong {
            tokens: need,
            context: model.capacity(),
        }
        .into());
    }
    let mut eos: Vec<u32> = tok.eos_ids().to_vec();
    eos.extend(&model.config().eos_ids);
    Ok(eos)
}

/// One plain step: runs `input` and picks the next token with the cheapest read-back that
/// gives the sampler's exact choice (GPU argmax, GPU top-k, or the logits).
pub(crate) fn next_token(
    model: &mut dyn Model,
    input: &[u32],
    sampler: &mut Sampler,
) -> Result<u32> {
    let mode = if sampler.params().is_greedy() {
        Output::Argmax
    } else if let Some(k) = sampler.gpu_topk() {
        Output::TopK(k.min(model.config().vocab_size))
    } else {
        Output::Logits
    };
    Ok(match model.forward(input, mode)? {
        StepOut::Token(t) => t,
        StepOut::Logits(mut l) => sampler.sample(&mut l),
        StepOut::TopK(c) => sampler.sample_topk(c),
        StepOut::Tokens(t) => *t.last().expect("one token per position"),
    })
}

/// Runs the prompt and picks the first token (none when max_tokens is 0); the stats with
/// the prompt's length and time.
pub(crate) fn prefill(
    model: &mut dyn Model,
    prompt_ids: &[u32],
    sampler: &mut Sampler,
) -> Result<(Option<u32>, Stats)> {
    let t0 = Instant::now();
    let first = if sampler.params().max_tokens == 0 {
        None
    } else {
        Some(next_token(model, prompt_ids, sampler)?)
    };
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let stats = Stats {
        prompt_tokens: prompt_ids.len(),
        prefill_ms,
        ttft_ms: prefill_ms,
        ..Default::default()
    };
    Ok((first, stats))
}

/// Generates from `prompt_ids` (appended at the model's current position; call
/// `model.truncate(0)` first for a fresh context), streaming text to `on_text`.
pub fn generate(
    model: &mut dyn Model,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    on_text: impl FnMut(&str),
) -> Result<Generation> {
    let eos = prepare(model, tok, prompt_ids, params)?;
    let mut sampler = Sampler::new(params.clone());
    sampler.set_history(prompt_ids);
    let mut em = Emitter::new(tok, prompt_ids, params, &eos, on_text);
    let (mut token, stats) = prefill(model, prompt_ids, &mut sampler)?;
    let t1 = Instant::now();
    let greedy = params.is_greedy();
    while let Some(t) = token {
        sampler.observe(t);
        if em.push(t)? || model.position() >= model.capacity() {
            break;
        }
        token = Some(if greedy {
            // Chain no step past max_tokens: after this step's token, `more` are wanted.
            let more = params.max_tokens.saturating_sub(em.ids.len() + 1);
            model.greedy_next(t, more.min(GREEDY_DEPTH - 1))?
        } else {
            next_token(model, &[t], &mut sampler)?
        });
    }
    // Discards greedy steps chained past the stop; the position is the plain loop's.
    model.truncate(model.position());
    em.into_generation(prompt_ids, stats, t1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_parameters_are_named() {
        let bad = [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                top_k: Some(0),
                ..Default::default()
            },
            SamplingParams {
                logit_bias: vec![(100, 1.0)],
                ..Default::default()
            },
            SamplingParams {
                min_p: 2.0,
                ..Default::default()
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
        ];
        let fields = [
            "temperature",
            "top_p",
            "top_p",
            "top_k",
            "logit_bias",
            "min_p",
            "repeat_penalty",
        ];
        for (p, f) in bad.iter().zip(fields) {
            let e = p.validate(100).unwrap_err().to_string();
            assert!(e.contains(f), "{e}");
        }
        SamplingParams::default().validate(100).unwrap();
    }

    #[test]
    fn seeded_sampling_repeats_and_respects_top_k() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.5).collect();
        let p = SamplingParams {
            temperature: 1.0,
            top_k: Some(3),
            seed: 42,
            ..Default::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..200)
                .map(|_| s.sample(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        let a = draw(&p);
        assert_eq!(a, draw(&p), "same seed, same draws");
        // The three largest logits (value 3.0) are ids 6, 13, 20.
        assert!(a.iter().all(|t| [6, 13, 20].contains(t)), "{a:?}");
        let b = draw(&SamplingParams {
            seed: 43,
            ..p.clone()
        });
        assert_ne!(a, b, "another seed, other draws");
    }

    #[test]
    fn penalties_and_bias_change_greedy_choice() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            ..Default::default()
        });
        s.observe(1);
        assert_eq!(s.sample(&mut [0.0, 4.0, 3.0]), 2);
        let mut s = Sampler::new(SamplingParams {
            logit_bias: vec![(0, 10.0)],
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.0, 4.0, 3.0]), 0);
    }
}
