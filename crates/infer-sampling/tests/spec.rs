//! Speculative decoding and GPU top-k on a real adapter: greedy output with either drafter
//! is token-identical to plain greedy decoding (stories260K, SmolLM2); the KV cache after a
//! rollback gives the logits a plain run gives; GPU top-k sampling picks what the full
//! logits read-back picks; seeded sampling repeats; a draft with another tokenizer is an
//! error. Missing models: SKIP loudly, or fail under CI=true.

use std::path::Path;
use std::sync::Arc;

use infer_kernels::Kernels;
use infer_models::load::{ModelPath, open};
use infer_models::{LlamaModel, LoadOptions, Model, Output, StepOut, Tokenizer};
use infer_sampling::{
    DraftK, DraftModel, PromptLookup, SamplingError, SamplingParams, check_draft_tokenizer,
    generate, generate_speculative,
};
use infer_tensor::DType;

mod common;
use common::{kernels, repo, smollm2, stories};

fn load(k: &Arc<Kernels>, p: &Path, quant: Option<DType>) -> (Box<dyn Model>, Tokenizer) {
    let opts = LoadOptions {
        quant: quant.map(Into::into),
        context: Some(512),
        ..Default::default()
    };
    infer_models::load(&p.to_string_lossy(), k.clone(), &opts).expect("load")
}

/// Greedy ids: plain, with prompt lookup, with a draft model (the target quantized to Q4_0).
fn greedy_identical(path: &Path, prompt: &str, n: usize) {
    let Some(k) = kernels() else { return };
    let (mut target, tok) = load(&k, path, None);
    let (draft, _) = load(&k, path, Some(DType::Q4_0));
    let ids = tok.encode(prompt, true).expect("encode");
    let params = SamplingParams {
        max_tokens: n,
        ignore_eos: true,
        ..Default::default()
    };
    target.truncate(0);
    let plain = generate(target.as_mut(), &tok, &ids, &params, |_| {}).expect("plain");
    let pos = target.position();
    let mut lookup = PromptLookup::new(3);
    let mut dm = DraftModel::new(draft, target.config().vocab_size).expect("draft");
    for (name, drafter, kk) in [
        (
            "prompt lookup",
            &mut lookup as &mut dyn infer_sampling::Drafter,
            DraftK::Fixed(4),
        ),
        ("draft model", &mut dm, DraftK::Adaptive),
    ] {
        target.truncate(0);
        let g = generate_speculative(target.as_mut(), drafter, kk, &tok, &ids, &params, |_| {})
            .expect("speculative");
        eprintln!(
            "{}: {name}: drafted {}, accepted {} ({:.0}%)",
            path.display(),
            g.stats.draft_tokens,
            g.stats.accepted_tokens,
            100.0 * g.stats.acceptance_rate()
        );
        assert_eq!(g.token_ids, plain.token_ids, "{name} on {}", path.display());
        assert_eq!(g.text, plain.text, "{name}");
        assert!(g.stats.draft_tokens > 0, "{name} drafted nothing");
        assert_eq!(
            target.position(),
            pos,
            "{name}: the cache ends where a plain run's does"
        );
    }
}

#[test]
fn greedy_speculative_matches_plain_greedy_stories260k() {
    let Some(p) = stories() else { return };
    greedy_identical(
        &p,
        "Once upon a time, there was a little girl named Lily. Lily",
        96,
    );
}

#[test]
fn greedy_speculative_matches_plain_greedy_smollm2() {
    let Some(p) = smollm2() else { return };
    greedy_identical(
        &p,
        "Repeat this: the cat sat on the mat, and the dog sat on the log. The cat sat on",
        24,
    );
}

fn fixture(k: &Arc<Kernels>) -> LlamaModel {
    let path = ModelPath::HfDir(repo().join("tests/fixtures/llama/llama_gqa_f32"));
    let (src, cfg) = open(&path).expect("open");
    LlamaModel::load(&src, cfg, k.clone(), &LoadOptions::default()).expect("load")
}

fn logits(m: &mut dyn Model, t: &[u32]) -> Vec<f32> {
    match m.forward(t, Output::Logits).expect("forward") {
        StepOut::Logits(l) => l,
        o => panic!("{o:?}"),
    }
}

#[test]
fn rollback_gives_the_logits_of_a_plain_run() {
    let Some(k) = kernels() else { return };
    let mut m = fixture(&k);
    let prompt = [1u32, 17, 42, 99, 7];
    // Plain: prompt, then 5 and 6 one at a time.
    m.truncate(0);
    logits(&mut m, &prompt);
    logits(&mut m, &[5]);
    let plain = logits(&mut m, &[6]);
    // Speculative: the block [5, 200, 201, 202] verified, 3 rejected, rolled back to keep 5.
    for junk in [[200u32, 201, 202], [3, 3, 3]] {
        m.truncate(0);
        logits(&mut m, &prompt);
        let mut block = vec![5];
        block.extend(junk);
        m.forward(&block, Output::AllLogits).expect("verify");
        m.truncate(prompt.len() + 1);
        assert_eq!(m.position(), prompt.len() + 1);
        let after = logits(&mut m, &[6]);
        // The batched step computes 5's keys and values with the mat-mul kernel instead of
        // the mat-vec, so a different summation order: equal within f32 rounding.
        let worst = after
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "rollback after {junk:?}: worst |diff| {worst}"
        );
    }
    // And exactly the same whatever the rejected tokens were.
    let run = |m: &mut LlamaModel, junk: &[u32]| {
        m.truncate(0);
        logits(m, &prompt);
        let mut block = vec![5];
        block.extend(junk);
        m.forward(&block, Output::AllLogits).expect("verify");
        m.truncate(prompt.len() + 1);
        logits(m, &[6])
    };
    assert_eq!(run(&mut m, &[200, 201, 202]), run(&mut m, &[3, 3, 3]));
}

#[test]
fn gpu_topk_sampling_picks_what_the_full_readback_picks() {
    let Some(p) = stories() else { return };
    let Some(k) = kernels() else { return };
    let (mut m, tok) = load(&k, &p, None);
    let ids = tok.encode("Once upon a time", true).expect("encode");
    let run = |m: &mut dyn Model, gpu: bool, seed: u64| {
        let params = SamplingParams {
            temperature: 0.9,
            top_k: Some(40),
            top_p: 0.95,
            seed,
            max_tokens: 48,
            ignore_eos: true,
            gpu_topk: gpu,
            ..Default::default()
        };
        m.truncate(0);
        generate(m, &tok, &ids, &params, |_| {})
            .expect("generate")
            .token_ids
    };
    let a = run(m.as_mut(), true, 5);
    assert_eq!(a, run(m.as_mut(), false, 5), "GPU top-k vs full read-back");
    assert_eq!(a, run(m.as_mut(), true, 5), "same seed, same tokens");
    assert_ne!(a, run(m.as_mut(), true, 6), "another seed, other tokens");
}

#[test]
fn seeded_speculative_sampling_repeats() {
    let Some(p) = stories() else { return };
    let Some(k) = kernels() else { return };
    let (mut m, tok) = load(&k, &p, None);
    let (draft, _) = load(&k, &p, Some(DType::Q4_0));
    let mut dm = DraftModel::new(draft, m.config().vocab_size).expect("draft");
    let ids = tok.encode("Once upon a time", true).expect("encode");
    let params = SamplingParams {
        temperature: 0.8,
        top_p: 0.9,
        seed: 11,
        max_tokens: 40,
        ignore_eos: true,
        ..Default::default()
    };
    let mut run = || {
        m.truncate(0);
        dm.reset();
        generate_speculative(
            m.as_mut(),
            &mut dm,
            DraftK::Fixed(4),
            &tok,
            &ids,
            &params,
            |_| {},
        )
        .expect("speculative")
    };
    let a = run();
    assert!(a.stats.accepted_tokens > 0, "{:?}", a.stats);
    assert_eq!(a.token_ids, run().token_ids);
}

#[test]
fn a_draft_with_another_tokenizer_is_an_error() {
    let (Some(s), Some(g)) = (stories(), smollm2()) else {
        return;
    };
    let Some(k) = kernels() else { return };
    let (target, ttok) = load(&k, &g, None);
    let (draft, dtok) = load(&k, &s, None);
    let e = check_draft_tokenizer(&ttok, &dtok).unwrap_err();
    assert!(matches!(e, SamplingError::DraftMismatch(_)), "{e}");
    assert!(e.to_string().contains("tokenizer"), "{e}");
    let e = DraftModel::new(draft, target.config().vocab_size)
        .err()
        .expect("error");
    assert!(e.to_string().contains("vocabulary"), "{e}");
    check_draft_tokenizer(&ttok, &ttok).expect("the same tokenizer matches");
}

#[test]
fn bad_draft_settings_are_errors() {
    let Some(p) = stories() else { return };
    let Some(k) = kernels() else { return };
    let (mut m, tok) = load(&k, &p, None);
    let ids = tok.encode("Once", true).expect("encode");
    let e = generate_speculative(
        m.as_mut(),
        &mut PromptLookup::new(2),
        DraftK::Fixed(0),
        &tok,
        &ids,
        &SamplingParams::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("draft_tokens"), "{e}");
    let e = generate_speculative(
        m.as_mut(),
        &mut PromptLookup::new(2),
        DraftK::Adaptive,
        &tok,
        &ids,
        &SamplingParams {
            top_p: 0.0,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("top_p"), "{e}");
}
