//! Helpers shared by the model tests: the kernels of the test adapter (under each tuning the
//! model checks run with), fixture paths, and the checks of a model against an
//! expected.json written by scripts/fixtures/*.py.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use infer_kernels::Kernels;
use infer_models::load::{ModelPath, load_model, open};
use infer_models::{LoadOptions, MAX_CHAIN, Model, ModelError, Output, StepOut};
use infer_tensor::device::test_device;
use serde_json::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tests/fixtures/<group>` in the repo.
pub fn fixtures(group: &str) -> PathBuf {
    repo().join("tests/fixtures").join(group)
}

/// Loads any architecture's model from `path`.
pub fn load(k: &Arc<Kernels>, path: ModelPath, opts: &LoadOptions) -> Box<dyn Model> {
    let (src, cfg) = open(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    load_model(&src, cfg, k.clone(), opts).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

pub fn kernels() -> Option<Arc<Kernels>> {
    static K: OnceLock<Option<Arc<Kernels>>> = OnceLock::new();
    K.get_or_init(|| test_device().map(|d| Arc::new(Kernels::new(Arc::new(d)))))
        .clone()
}

/// The kernels the model checks run under, each over a device of its own (weights are
/// packed in the device's layout when uploaded): the adapter's own tuning ([`kernels`]),
/// then [`infer_tensor::Tuning::gpu_choices`] (what discrete and integrated GPUs run: the
/// plain weight layout, the coalesced matvec, split_heads decode attention), so a CPU
/// adapter such as lavapipe runs the GPU paths too. Empty without an adapter (SKIP).
pub fn tunings() -> Vec<(&'static str, Arc<Kernels>)> {
    static T: OnceLock<Vec<(&'static str, Arc<Kernels>)>> = OnceLock::new();
    T.get_or_init(|| {
        let Some(k) = kernels() else {
            return vec![];
        };
        let gpu = k.tuning().gpu_choices();
        if *k.tuning() == gpu {
            return vec![("adapter tuning", k)];
        }
        let mut dev = test_device().expect("the adapter opened once already");
        dev.tuning = gpu;
        let g = Arc::new(Kernels::new(Arc::new(dev)));
        vec![("adapter tuning", k), ("GPU choices", g)]
    })
    .clone()
}

/// Load options with `max_batch` and greedy steps chained as far as they go (the chained
/// path of `greedy_next`, which [`check_against`] checks).
pub fn opts(max_batch: usize) -> LoadOptions {
    LoadOptions {
        max_batch,
        chain: Some(MAX_CHAIN - 1),
        ..Default::default()
    }
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

pub fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().expect("array").iter().map(floats).collect()
}

pub fn logits(m: &mut dyn Model, tokens: &[u32]) -> Vec<f32> {
    match m.forward(tokens, Output::Logits).expect("forward") {
        StepOut::Logits(l) => l,
        other => panic!("expected logits, got {other:?}"),
    }
}

pub fn token(m: &mut dyn Model, tokens: &[u32]) -> u32 {
    match m.forward(tokens, Output::Argmax).expect("forward") {
        StepOut::Token(t) => t,
        other => panic!("expected a token, got {other:?}"),
    }
}

/// Logits agree when |got - want| <= 1e-3 + 1e-3 |want| (transformers runs f32 too; the
/// difference is accumulation order; the fixtures keep top-1/top-2 margins >= 0.1).
pub fn assert_logits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: vocab");
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (1e-3 + 1e-3 * w.abs());
        if excess > worst || !g.is_finite() {
            (worst, at) = (excess.max(f32::MIN_POSITIVE), i);
        }
    }
    assert!(
        worst <= 0.0,
        "{what}: logit {at}: got {} want {} (abs err {})",
        got[at],
        want[at],
        (got[at] - want[at]).abs()
    );
}

pub fn argmax(x: &[f32]) -> u32 {
    infer_tensor::reference::argmax(x)
}

/// Prefill, token-by-token, GPU-argmax greedy, chained greedy and all-position checks of
/// one model.
pub fn check_against(m: &mut dyn Model, expected: &Value, what: &str) {
    let prompt = ids(&expected["prompt_ids"]);
    let prompt_logits = rows(&expected["prompt_logits"]);
    let greedy = ids(&expected["greedy_ids"]);
    let step_logits = rows(&expected["greedy_step_logits"]);

    // 1. The whole prompt in one batched prefill, then greedy steps, logits at each.
    m.truncate(0);
    let mut l = logits(m, &prompt);
    for (i, &want) in greedy.iter().enumerate() {
        assert_logits(&format!("{what}: greedy step {i}"), &l, &step_logits[i]);
        assert_eq!(argmax(&l), want, "{what}: greedy token {i}");
        l = logits(m, &[want]);
    }
    // 2. The prompt one token at a time (decode path): logits at every position.
    m.truncate(0);
    for (i, &t) in prompt.iter().enumerate() {
        let l = logits(m, &[t]);
        assert_logits(
            &format!("{what}: prompt position {i}"),
            &l,
            &prompt_logits[i],
        );
    }
    // 3. Greedy with the argmax on the GPU: exact tokens.
    m.truncate(0);
    let mut got = vec![token(m, &prompt)];
    while got.len() < greedy.len() {
        let last = *got.last().unwrap();
        got.push(token(m, &[last]));
    }
    assert_eq!(got, greedy, "{what}: greedy ids (argmax on the GPU)");
    // 3b. The same through `greedy_next`: steps chained on the GPU where the model was
    // loaded to chain them (the last ones left in flight are discarded by the truncate).
    m.truncate(0);
    let (last, head) = prompt.split_last().expect("a prompt");
    if !head.is_empty() {
        logits(m, head);
    }
    let mut got = vec![m.greedy_next(*last, MAX_CHAIN - 1).expect("greedy_next")];
    while got.len() < greedy.len() {
        let t = *got.last().unwrap();
        got.push(m.greedy_next(t, MAX_CHAIN - 1).expect("greedy_next"));
    }
    assert_eq!(got, greedy, "{what}: greedy ids (greedy_next)");
    assert_eq!(
        m.position(),
        prompt.len() + greedy.len() - 1,
        "{what}: position"
    );
    // 4. Outputs at every position of one batched step (speculative verification).
    m.truncate(0);
    match m.forward(&prompt, Output::AllLogits) {
        Ok(StepOut::Logits(all)) => {
            let v = prompt_logits[0].len();
            assert_eq!(all.len(), prompt.len() * v, "{what}: all-position logits");
            for (i, want) in prompt_logits.iter().enumerate() {
                let row = &all[i * v..(i + 1) * v];
                assert_logits(&format!("{what}: all-position row {i}"), row, want);
            }
            m.truncate(0);
            let Ok(StepOut::Tokens(t)) = m.forward(&prompt, Output::AllArgmax) else {
                panic!("{what}: AllArgmax gives tokens")
            };
            let want: Vec<u32> = prompt_logits.iter().map(|l| argmax(l)).collect();
            assert_eq!(t, want, "{what}: all-position argmax");
        }
        Err(ModelError::Invalid(_)) if prompt.len() > 4 => {} // max_batch 4 is below the prompt
        other => panic!("{what}: AllLogits gave {other:?}"),
    }
}

pub fn read_json(p: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}
