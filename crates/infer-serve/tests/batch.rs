//! Batch invariance of the batched serving step: sequences run together (staggered
//! arrivals, prompts in chunks mixed with other sequences' decode rows, different block
//! tables) give bit-identical logits and identical greedy tokens to each sequence run
//! alone; the batched step reproduces the reference greedy ids of stories260K; and every
//! architecture (the tiny Phi-3, Gemma, Gemma 2, Gemma 3 and GPT-2 checkpoints of
//! tests/fixtures/arch)
//! runs batched with transformers' logits and greedy tokens, batch-invariantly.
//! Each runs twice: with the adapter's own tuning and with the GPU choices
//! (`Tuning::gpu_choices`: plain weight layout, coalesced matvec, the heads paged kernel),
//! so lavapipe runs the paths GPUs take too.
//! Without an adapter or model these tests print SKIP; under CI=true they fail.

use std::path::PathBuf;
use std::sync::Arc;

use infer_kernels::Kernels;
use infer_serve::{BatchConfig, BatchedModel, Row, RowOut, load_batched_model};
use infer_tensor::device::test_device;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tunings every test runs under: `true` is the GPU choices.
const GPU_CHOICES: [bool; 2] = [false, true];

fn tuning_name(gpu: bool) -> &'static str {
    if gpu { "GPU choices" } else { "default tuning" }
}

fn model_or_skip(rel: &str, bc: BatchConfig, gpu: bool) -> Option<BatchedModel> {
    let mut dev = test_device()?;
    if gpu {
        // Before the weights are uploaded: they are packed in the tuning's row groups.
        dev.tuning = dev.tuning.gpu_choices();
    }
    let path = root().join(rel);
    if !path.exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and the model {rel} is missing");
        }
        eprintln!("SKIP: model {rel} not found; batch invariance test did NOT run");
        return None;
    }
    let k = Arc::new(Kernels::new(Arc::new(dev)));
    Some(load_batched_model(path.to_str().expect("utf-8 path"), k, None, bc).expect("load"))
}

/// A sequence in the toy scheduler of these tests.
struct S {
    slot: usize,
    tokens: Vec<u32>,
    cached: usize,
    n_prompt: usize,
    start_step: usize,
    logits: Vec<Vec<f32>>,
}

/// Runs greedy generation of `n_gen` tokens for each prompt; sequence i joins at step
/// `start[i]`; prompts go in chunks of at most `chunk` rows; `blocks_rev` hands out
/// physical blocks from the top. Returns (generated tokens, logits of every output).
fn run(
    m: &mut BatchedModel,
    prompts: &[Vec<u32>],
    start: &[usize],
    n_gen: usize,
    chunk: usize,
    blocks_rev: bool,
) -> Vec<(Vec<u32>, Vec<Vec<f32>>)> {
    let bc = m.bc;
    let mb = bc.max_blocks();
    let mut table = vec![0u32; bc.max_seqs * mb];
    let mut next_block = 0u32;
    let mut seqs: Vec<S> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let slot = (i * 7 + if blocks_rev { 3 } else { 0 }) % bc.max_seqs;
            let need = (p.len() + n_gen).div_ceil(bc.block_size);
            for b in 0..need {
                let id = if blocks_rev {
                    bc.n_blocks as u32 - 1 - next_block
                } else {
                    next_block
                };
                table[slot * mb + b] = id;
                next_block += 1;
            }
            S {
                slot,
                tokens: p.clone(),
                cached: 0,
                n_prompt: p.len(),
                start_step: start[i],
                logits: vec![],
            }
        })
        .collect();
    let mut step = 0;
    while seqs.iter().any(|s| s.tokens.len() - s.n_prompt < n_gen) {
        let mut rows = Vec::new();
        let mut owners = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            if step < s.start_step || s.tokens.len() - s.n_prompt >= n_gen {
                continue;
            }
            let pending = s.tokens.len() - s.cached;
            let take = pending.min(chunk).min(bc.max_rows - rows.len());
            if take == 0 {
                continue;
            }
            let done = take == pending;
            for j in 0..take {
                rows.push(Row {
                    token: s.tokens[s.cached + j],
                    pos: (s.cached + j) as u32,
                    seq: s.slot as u32,
                    out: if done && j + 1 == take {
                        RowOut::Logits
                    } else {
                        RowOut::None
                    },
                });
            }
            owners.push((i, take, done));
        }
        step += 1;
        if rows.is_empty() {
            continue;
        }
        let mut res = m.step(&rows, &table).expect("step").into_iter();
        for (i, take, done) in owners {
            let s = &mut seqs[i];
            s.cached += take;
            if done {
                let r = res.next().expect("result");
                let l = r.logits.expect("logits");
                let argmax = l
                    .iter()
                    .enumerate()
                    .fold(0, |b, (j, &v)| if v > l[b] { j } else { b });
                assert_eq!(r.token as usize, argmax, "GPU argmax = host argmax");
                s.logits.push(l);
                s.tokens.push(r.token);
            }
        }
    }
    seqs.into_iter()
        .map(|s| (s.tokens[s.n_prompt..].to_vec(), s.logits))
        .collect()
}

fn check_invariance(rel: &str, prompts: Vec<Vec<u32>>, n_gen: usize) {
    let bc = BatchConfig {
        max_rows: 24,
        max_seqs: 8,
        block_size: 4,
        n_blocks: 256,
        context: 256,
    };
    for gpu in GPU_CHOICES {
        let Some(mut m) = model_or_skip(rel, bc, gpu) else {
            return;
        };
        let label = format!("{rel} ({})", tuning_name(gpu));
        check_invariance_of(&mut m, &label, prompts.clone(), n_gen);
    }
}

fn check_invariance_of(m: &mut BatchedModel, rel: &str, prompts: Vec<Vec<u32>>, n_gen: usize) {
    let alone: Vec<_> = prompts
        .iter()
        .map(|p| run(m, std::slice::from_ref(p), &[0], n_gen, 64, false).remove(0))
        .collect();
    let starts: Vec<usize> = (0..prompts.len()).map(|i| i * 2).collect();
    for (chunk, rev) in [(7, true), (3, false)] {
        let together = run(m, &prompts, &starts, n_gen, chunk, rev);
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(
                a.0, t.0,
                "{rel}: sequence {i} tokens alone vs batched (chunk {chunk})"
            );
            for (j, (la, lt)) in a.1.iter().zip(&t.1).enumerate() {
                let same = la.iter().zip(lt).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "{rel}: sequence {i} output {j}: logits differ alone vs batched (chunk {chunk})"
                );
            }
        }
    }
}

#[test]
fn batched_step_is_batch_invariant_stories260k() {
    let prompts = vec![
        vec![1],
        vec![1, 403, 407, 261, 378],
        (0..23).map(|i| 1 + (i * 37 % 500) as u32).collect(),
        (0..41).map(|i| 3 + (i * 11 % 480) as u32).collect(),
        vec![1, 42, 42, 42],
    ];
    check_invariance("tests/fixtures/stories260K", prompts, 12);
}

#[test]
fn batched_step_is_batch_invariant_smollm2_q4_1() {
    let prompts = vec![
        vec![1, 504, 3458, 282, 2104],
        (0..30).map(|i| 100 + (i * 97 % 40000) as u32).collect(),
        vec![9],
    ];
    check_invariance("models/SmolLM2-135M-Instruct.Q4_1.gguf", prompts, 6);
}

#[test]
fn batched_step_reproduces_stories260k_greedy_reference() {
    let bc = BatchConfig {
        max_rows: 8,
        max_seqs: 2,
        block_size: 16,
        n_blocks: 64,
        context: 512,
    };
    for gpu in GPU_CHOICES {
        let Some(mut m) = model_or_skip("tests/fixtures/stories260K", bc, gpu) else {
            return;
        };
        greedy_reference(&mut m, gpu);
    }
}

fn greedy_reference(m: &mut BatchedModel, gpu: bool) {
    let path = root().join("tests/fixtures/stories260K");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("greedy_ids.json")).unwrap())
            .unwrap();
    let want: Vec<u32> = v["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let n = want.len().min(64);
    let got = run(m, &[vec![want[0]]], &[0], n - 1, 8, false).remove(0).0;
    assert_eq!(
        got,
        want[1..n],
        "batched greedy vs reference ids ({})",
        tuning_name(gpu)
    );
}

fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// An architecture fixture run through the batched step: transformers' greedy tokens exact
/// and its logits within 1e-3 + 1e-3 |x| at every greedy step (the first `n_gen` steps;
/// `context` bounds the positions), then batch invariance over the fixture's prompt and
/// two others.
fn arch_case(case: &str, context: usize, n_gen: usize) {
    for gpu in GPU_CHOICES {
        arch_case_with(case, context, n_gen, gpu);
    }
}

fn arch_case_with(case: &str, context: usize, n_gen: usize, gpu: bool) {
    let rel = format!("tests/fixtures/arch/{case}");
    let case = format!("{case} ({})", tuning_name(gpu));
    let bc = BatchConfig {
        max_rows: 16,
        max_seqs: 4,
        block_size: 4,
        n_blocks: 64,
        context,
    };
    let Some(mut m) = model_or_skip(&rel, bc, gpu) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(&rel).join("expected.json")).expect("fixture"),
    )
    .expect("json");
    let prompt = json_ids(&v["prompt_ids"]);
    let greedy = json_ids(&v["greedy_ids"]);
    let (got, logits) = run(&mut m, std::slice::from_ref(&prompt), &[0], n_gen, 3, false).remove(0);
    assert_eq!(
        got,
        greedy[..n_gen],
        "{case}: batched greedy ids vs transformers"
    );
    for (i, l) in logits.iter().enumerate() {
        let want: Vec<f32> = v["greedy_step_logits"][i]
            .as_array()
            .expect("row")
            .iter()
            .map(|x| x.as_f64().expect("logit") as f32)
            .collect();
        assert_eq!(l.len(), want.len(), "{case}: vocab");
        for (j, (g, w)) in l.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-3 + 1e-3 * w.abs(),
                "{case}: greedy step {i} logit {j}: batched {g} vs transformers {w}"
            );
        }
    }
    let vocab = m.config().vocab_size as u32;
    let prompts = vec![
        prompt.clone(),
        vec![1, 2 % vocab, 3 % vocab],
        (0..11).map(|i| (5 + i * 13) % vocab).collect(),
    ];
    check_invariance_of(&mut m, &case, prompts, n_gen.min(6));
}

#[test]
fn batched_phi3_partial_rotary_matches_transformers() {
    arch_case("phi3_partial_rotary", 64, 16);
}

#[test]
fn batched_phi3_longrope_short_context_matches_transformers() {
    // The serving context (16 = original_max_position_embeddings) keeps the short factors
    // for every sequence; transformers used them for the first 16 positions.
    arch_case("phi3_longrope", 16, 9);
}

#[test]
fn batched_gemma_matches_transformers() {
    arch_case("gemma", 64, 16);
}

#[test]
fn batched_gemma2_matches_transformers() {
    // Sliding window 4 on alternate layers, soft-capping, query_pre_attn_scalar, bf16.
    arch_case("gemma2", 64, 16);
}

#[test]
fn batched_gemma3_matches_transformers() {
    // q/k norms, sliding window 4 on five layers of six, each kind with its own rope table.
    arch_case("gemma3", 64, 16);
}

#[test]
fn batched_gpt2_matches_transformers() {
    arch_case("gpt2", 64, 16);
}

/// Gemma 3 270M, the real Q4_K_M file (Q4_K, Q6_K, Q5_0 and Q8_0 weights) through the
/// batched step: all prompts of tests/fixtures/gemma3_270m/expected.json in one batch (one
/// joining two steps late) give transformers' greedy tokens, under both tunings; then batch
/// invariance over them.
#[test]
fn batched_gemma3_270m_q4_k_m_file_matches_transformers() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/gemma3_270m/expected.json"))
            .expect("fixture"),
    )
    .expect("json");
    let cases = v["cases"].as_array().expect("cases");
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| json_ids(&c["prompt_ids"])).collect();
    let want: Vec<Vec<u32>> = cases.iter().map(|c| json_ids(&c["greedy_ids"])).collect();
    let n_gen = want.iter().map(Vec::len).min().expect("a case");
    let bc = BatchConfig {
        max_rows: 32,
        max_seqs: 4,
        block_size: 16,
        n_blocks: 64,
        context: 256,
    };
    for gpu in GPU_CHOICES {
        let Some(mut m) = model_or_skip("models/gemma-3-270m-q4_k_m.gguf", bc, gpu) else {
            return;
        };
        let start: Vec<usize> = (0..prompts.len())
            .map(|i| if i == 1 { 2 } else { 0 })
            .collect();
        let got = run(&mut m, &prompts, &start, n_gen, 7, gpu);
        for (i, (g, _)) in got.iter().enumerate() {
            assert_eq!(
                g[..],
                want[i][..n_gen],
                "prompt {i} ({}): batched greedy ids vs transformers",
                tuning_name(gpu)
            );
        }
        check_invariance_of(&mut m, tuning_name(gpu), prompts.clone(), n_gen.min(4));
    }
}
