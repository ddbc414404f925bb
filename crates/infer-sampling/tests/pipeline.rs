//! Pipelined greedy decoding ([`Model::greedy_next`] chaining steps on the GPU) against the
//! plain loop (one `forward(.., Output::Argmax)` per token, read back before the next):
//! the same tokens, text, finish reason and final `position()` for every way generation
//! stops (max_tokens 1, 2 and past the depth, a stop token, a stop string, EOS, the
//! context's capacity), and a second prompt appended at `position()` continues the same.
//! stories260K and SmolLM2; missing models: SKIP loudly, or fail under CI=true.

use std::path::Path;
use std::sync::Arc;

use infer_kernels::Kernels;
use infer_models::{LoadOptions, Model, ModelConfig, Output, StepOut, Tokenizer};
use infer_sampling::{GREEDY_DEPTH, Generation, SamplingParams, generate};

mod common;
use common::{kernels, smollm2, stories};

fn load(k: &Arc<Kernels>, p: &Path, context: usize) -> (Box<dyn Model>, Tokenizer) {
    // Chained steps even on CPU adapters, which do not chain by default.
    let opts = LoadOptions {
        context: Some(context),
        chain: Some(GREEDY_DEPTH - 1),
        ..Default::default()
    };
    infer_models::load(&p.to_string_lossy(), k.clone(), &opts).expect("load")
}

/// The plain loop: the model behind only the trait's required methods, so `greedy_next`
/// is the default, one `forward(.., Output::Argmax)` read back per token.
struct Plain<'a>(&'a mut dyn Model);

impl Model for Plain<'_> {
    fn config(&self) -> &ModelConfig {
        self.0.config()
    }
    fn position(&self) -> usize {
        self.0.position()
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    fn truncate(&mut self, pos: usize) {
        self.0.truncate(pos)
    }
    fn forward(&mut self, tokens: &[u32], out: Output) -> infer_models::Result<StepOut> {
        self.0.forward(tokens, out)
    }
}

/// Generates `prompt` from an empty cache, then `more` appended at `position()`, plainly
/// and pipelined; asserts both runs agree. Returns the plain runs.
fn same(
    m: &mut dyn Model,
    tok: &Tokenizer,
    prompt: &str,
    more: &str,
    params: &SamplingParams,
) -> (Generation, Generation) {
    let ids = tok.encode(prompt, true).expect("encode");
    let ids2 = tok.encode(more, false).expect("encode");
    let run = |m: &mut dyn Model| {
        m.truncate(0);
        let a = generate(m, tok, &ids, params, |_| {}).expect("generate");
        let pa = m.position();
        let b = generate(m, tok, &ids2, params, |_| {}).expect("continue");
        (a, pa, b, m.position())
    };
    let (a, pa, b, pb) = run(&mut Plain(m));
    let (c, pc, d, pd) = run(m);
    let what = format!("{prompt:?} + {more:?}, max_tokens {}", params.max_tokens);
    for (plain, piped, p, q, which) in [(&a, &c, pa, pc, "first"), (&b, &d, pb, pd, "second")] {
        assert_eq!(plain.token_ids, piped.token_ids, "{what}: {which} tokens");
        assert_eq!(plain.text, piped.text, "{what}: {which} text");
        assert_eq!(
            plain.finish_reason, piped.finish_reason,
            "{what}: {which} finish"
        );
        assert_eq!(p, q, "{what}: {which} position");
    }
    (a, b)
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

#[test]
fn pipelined_greedy_matches_the_plain_loop_stories260k() {
    let Some(p) = stories() else { return };
    let Some(k) = kernels() else { return };
    let (mut m, tok) = load(&k, &p, 512);
    let prompt = "Once upon a time, there was a little girl named Lily.";
    let more = " One day, she";
    for n in [1, 2, GREEDY_DEPTH, GREEDY_DEPTH + 1, 40] {
        let (a, _) = same(m.as_mut(), &tok, prompt, more, &greedy(n));
        assert_eq!(a.token_ids.len(), n);
    }
    // A stop token, then a stop string, each hit mid-generation.
    let (a, _) = same(m.as_mut(), &tok, prompt, more, &greedy(40));
    let stop_id = a.token_ids[7];
    let first = a.token_ids.iter().position(|&t| t == stop_id).expect("in");
    let params = SamplingParams {
        stop_token_ids: vec![stop_id],
        ..greedy(40)
    };
    let (s, _) = same(m.as_mut(), &tok, prompt, more, &params);
    assert_eq!(s.token_ids.len(), first + 1, "ends at the stop token");
    let word = a.text[a.text.len() / 2..]
        .split_whitespace()
        .find(|w| w.len() >= 3)
        .expect("a word")
        .to_string();
    let params = SamplingParams {
        stop: vec![word.clone()],
        ..greedy(40)
    };
    let (s, _) = same(m.as_mut(), &tok, prompt, more, &params);
    assert!(s.token_ids.len() < 40, "{word:?} stops generation");
    assert!(!s.text.contains(&word));
    // The context's capacity: a cache of the prompt plus 6 tokens.
    let n = tok.encode(prompt, true).expect("encode").len();
    let (mut small, _) = load(&k, &p, n + 6);
    let ids = tok.encode(prompt, true).expect("encode");
    small.truncate(0);
    let plain =
        generate(&mut Plain(small.as_mut()), &tok, &ids, &greedy(40), |_| {}).expect("plain");
    let plain_pos = small.position();
    small.truncate(0);
    let piped = generate(small.as_mut(), &tok, &ids, &greedy(40), |_| {}).expect("piped");
    assert_eq!(plain.token_ids, piped.token_ids, "at capacity");
    assert_eq!(plain_pos, small.position());
    assert_eq!(small.position(), small.capacity());
    assert_eq!(piped.token_ids.len(), 7);
}

/// `greedy_next` with an input other than the token it returned last (steps chained on
/// the GPU are then stale) is still the plain step.
#[test]
fn greedy_next_with_another_input_discards_the_chain() {
    let Some(p) = stories() else { return };
    let Some(k) = kernels() else { return };
    let (mut m, tok) = load(&k, &p, 512);
    let ids = tok.encode("Once upon a time", true).expect("encode");
    let run = |m: &mut dyn Model, plain: bool| {
        m.truncate(0);
        let StepOut::Token(mut t) = m.forward(&ids, Output::Argmax).expect("prefill") else {
            panic!("a token")
        };
        let mut out = vec![];
        for i in 0..12 {
            // Every fourth input is not the model's choice.
            let input = if i % 4 == 3 { (t + 7) % 500 } else { t };
            t = if plain {
                Plain(m).greedy_next(input, 2)
            } else {
                m.greedy_next(input, 2)
            }
            .expect("step");
            out.push(t);
        }
        (out, m.position())
    };
    let plain = run(m.as_mut(), true);
    assert_eq!(run(m.as_mut(), false), plain);
    assert_eq!(plain.1, ids.len() + 12);
}

#[test]
fn pipelined_greedy_matches_the_plain_loop_smollm2() {
    let Some(p) = smollm2() else { return };
    let Some(k) = kernels() else { return };
    let (mut m, tok) = load(&k, &p, 512);
    let prompt = "The capital of France is";
    let more = " and the capital of Italy is";
    for n in [2, 12] {
        same(m.as_mut(), &tok, prompt, more, &greedy(n));
    }
    // EOS: the instruct model ends its short answer with <|im_end|>.
    let chat = "<|im_start|>user\nSay just the word yes.<|im_end|>\n<|im_start|>assistant\n";
    let params = SamplingParams {
        max_tokens: 24,
        ..Default::default()
    };
    let (a, _) = same(
        m.as_mut(),
        &tok,
        chat,
        "<|im_start|>user\nAgain.<|im_end|>\n",
        &params,
    );
    assert_eq!(
        a.finish_reason,
        infer_sampling::FinishReason::Stop,
        "{:?}: stopped by EOS",
        a.text
    );
    assert!(a.token_ids.len() < 24);
}
