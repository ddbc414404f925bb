//! The main job end to end through the libraries: SmolLM2-135M-Instruct (Q4_1 GGUF)
//! answers the chat prompt with the reference tokens, streaming text that adds up; Gemma 3
//! 270M (Q4_K_M GGUF) greedy-decodes transformers' tokens.

use std::sync::Arc;

use infer_e2e::{default_model, gemma3_270m, repo};
use infer_kernels::Kernels;
use infer_models::{ChatMessage, LoadOptions, Output, StepOut};
use infer_sampling::{FinishReason, SamplingParams, generate};
use infer_tensor::device::test_device;
use serde_json::Value;

#[test]
fn smollm2_answers_the_capital_of_france() {
    let Some(dev) = test_device() else { return };
    let Some(model_path) = default_model() else {
        return;
    };
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/smollm2/expected.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let k = Arc::new(Kernels::new(Arc::new(dev)));
    let (mut model, tok) =
        infer_models::load(model_path.to_str().unwrap(), k, &LoadOptions::default()).unwrap();
    let text = tok
        .apply_chat_template(
            &[ChatMessage::new("user", "What is the capital of France?")],
            true,
        )
        .unwrap();
    assert_eq!(text, expected["prompt_text"].as_str().unwrap());
    let prompt = tok.encode(&text, false).unwrap();
    assert_eq!(prompt, ids(&expected["prompt_ids"]));
    let mut streamed = String::new();
    let g = generate(
        model.as_mut(),
        &tok,
        &prompt,
        &SamplingParams {
            max_tokens: 32,
            ..Default::default()
        },
        |s| streamed.push_str(s),
    )
    .unwrap();
    assert_eq!(g.token_ids, ids(&expected["greedy_ids"]));
    assert_eq!(g.text, "The capital of France is Paris.");
    assert_eq!(
        expected["text"].as_str().unwrap(),
        "The capital of France is Paris.<|im_end|>"
    );
    assert_eq!(streamed, g.text);
    assert_eq!(g.finish_reason, FinishReason::Stop);

    // A second conversation in the same model: the cache restarts cleanly.
    model.truncate(0);
    let again = generate(
        model.as_mut(),
        &tok,
        &prompt,
        &SamplingParams {
            max_tokens: 32,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(again.token_ids, g.token_ids);

    // max_tokens ends with "length".
    model.truncate(0);
    let short = generate(
        model.as_mut(),
        &tok,
        &prompt,
        &SamplingParams {
            max_tokens: 3,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(short.token_ids, g.token_ids[..3]);
    assert_eq!(short.finish_reason, FinishReason::Length);

    // A stop string ends early and is not part of the text.
    model.truncate(0);
    let stopped = generate(
        model.as_mut(),
        &tok,
        &prompt,
        &SamplingParams {
            max_tokens: 32,
            stop: vec![" is".into()],
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(stopped.text, "The capital of France");
    assert_eq!(stopped.finish_reason, FinishReason::Stop);

    // Seeded sampling repeats itself.
    let sample = |model: &mut dyn infer_models::Model, seed| {
        model.truncate(0);
        generate(
            model,
            &tok,
            &prompt,
            &SamplingParams {
                temperature: 0.8,
                top_p: 0.95,
                seed,
                max_tokens: 12,
                ..Default::default()
            },
            |_| {},
        )
        .unwrap()
        .token_ids
    };
    assert_eq!(sample(model.as_mut(), 7), sample(model.as_mut(), 7));
}

/// Gemma 3 270M, a real Q4_K_M file (Q4_K, Q6_K, Q5_0, Q8_0 and F32 tensors): greedy tokens
/// of each prompt of tests/fixtures/gemma3_270m/expected.json (made by transformers on the
/// same file, every step's top-1/top-2 margin >= 0.1) through the plain step and the chained
/// greedy steps, and the tokenizer gives the prompt's ids.
#[test]
fn gemma3_270m_greedy_matches_transformers() {
    let Some(dev) = test_device() else { return };
    let Some(model_path) = gemma3_270m() else {
        return;
    };
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/gemma3_270m/expected.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let k = Arc::new(Kernels::new(Arc::new(dev)));
    let spec = model_path.to_str().unwrap();
    let (mut model, tok) = infer_models::load(spec, k, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {spec}: {e}"));
    let cases = expected["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 2,
        "expected.json holds {} prompts",
        cases.len()
    );
    for case in cases {
        let text = case["prompt"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["greedy_ids"]);
        assert_eq!(
            tok.encode(text, true).unwrap(),
            prompt,
            "{text:?}: prompt ids"
        );
        // Plain steps: the prompt, then one token at a time.
        model.truncate(0);
        let mut got = Vec::new();
        let mut input = prompt.clone();
        while got.len() < want.len() {
            let t = match model.forward(&input, Output::Argmax) {
                Ok(StepOut::Token(t)) => t,
                other => panic!("{text:?}: step {}: {other:?}", got.len()),
            };
            got.push(t);
            input = vec![t];
        }
        assert_eq!(got, want, "{text:?}: greedy tokens (plain steps)");
        // Chained greedy steps give the same.
        model.truncate(0);
        let mut t = match model.forward(&prompt, Output::Argmax) {
            Ok(StepOut::Token(t)) => t,
            other => panic!("{text:?}: prompt step: {other:?}"),
        };
        let mut chained = vec![t];
        while chained.len() < want.len() {
            let ahead = want.len() - chained.len() - 1;
            t = model
                .greedy_next(t, ahead)
                .unwrap_or_else(|e| panic!("{text:?}: greedy_next: {e}"));
            chained.push(t);
        }
        assert_eq!(chained, want, "{text:?}: greedy tokens (chained steps)");
    }
}
