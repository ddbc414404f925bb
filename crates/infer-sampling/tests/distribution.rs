//! Speculative sampling reproduces the target's distribution, checked without a GPU on a
//! 4-token vocabulary: a mock target whose next-token distribution p depends on the last
//! token, a mock draft q that disagrees with it, and a chi-square goodness-of-fit test over
//! many seeded draws of the first two emitted tokens (16 cells, 15 degrees of freedom).
//!
//! Critical value 42.58 = the 0.9999 quantile of chi-square(15): with a fresh random seed
//! a correct sampler would fail with probability 1e-4; with the fixed seeds here the
//! outcome is deterministic. A broken rule (e.g. always accepting the draft) gives
//! statistics in the thousands.

use std::path::Path;

use infer_models::{Model, ModelConfig, Output, StepOut};
use infer_sampling::{Draft, Sampler, SamplingParams, draw, verify};
use rand::{SeedableRng, rngs::StdRng};

const V: usize = 4;
const CRITICAL_DF15: f64 = 42.58;

/// Target: p(next | last).
const P: [[f64; V]; V] = [
    [0.1, 0.2, 0.3, 0.4],
    [0.4, 0.3, 0.2, 0.1],
    [0.25, 0.25, 0.25, 0.25],
    [0.7, 0.1, 0.1, 0.1],
];
/// Draft: q(next | last), deliberately off (including a zero where p is not).
const Q: [[f64; V]; V] = [
    [0.4, 0.4, 0.2, 0.0],
    [0.1, 0.1, 0.1, 0.7],
    [0.5, 0.1, 0.2, 0.2],
    [0.25, 0.25, 0.25, 0.25],
];

struct Mock {
    cfg: ModelConfig,
    ids: Vec<u32>,
}

impl Mock {
    fn new() -> Mock {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama/llama_gqa_f32");
        let mut cfg = ModelConfig::from_hf_dir(&dir).expect("fixture config");
        cfg.vocab_size = V;
        Mock { cfg, ids: vec![] }
    }
}

fn log_row(last: u32) -> Vec<f32> {
    P[last as usize].iter().map(|&p| (p as f32).ln()).collect()
}

impl Model for Mock {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn position(&self) -> usize {
        self.ids.len()
    }
    fn capacity(&self) -> usize {
        1 << 20
    }
    fn truncate(&mut self, pos: usize) {
        self.ids.truncate(pos);
    }
    fn forward(&mut self, tokens: &[u32], out: Output) -> infer_models::Result<StepOut> {
        self.ids.extend(tokens);
        Ok(match out {
            Output::AllLogits => StepOut::Logits(tokens.iter().flat_map(|&t| log_row(t)).collect()),
            _ => StepOut::Logits(log_row(*tokens.last().expect("tokens"))),
        })
    }
}

fn dist(row: &[f64; V]) -> Vec<(u32, f64)> {
    row.iter()
        .enumerate()
        .filter(|x| *x.1 > 0.0)
        .map(|(i, &x)| (i as u32, x))
        .collect()
}

/// Chi-square statistic of the first two emitted tokens after `start` against p x p.
fn chi_square(k: usize, sampled_draft: bool, seed: u64, n: usize) -> f64 {
    let params = SamplingParams {
        temperature: 1.0,
        ..Default::default()
    };
    let mut sampler = Sampler::new(params);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut target = Mock::new();
    let start = 2u32;
    let mut counts = [[0usize; V]; V];
    for _ in 0..n {
        target.truncate(0);
        // The draft: k tokens from q (or copied deterministically: always token 1, 0, ...).
        let mut draft = Draft::default();
        let mut last = start;
        let mut qs = vec![];
        for i in 0..k {
            let t = if sampled_draft {
                let d = dist(&Q[last as usize]);
                let t = draw(&d, &mut rng);
                qs.push(d);
                t
            } else {
                [1u32, 0, 3][i % 3]
            };
            draft.tokens.push(t);
            last = t;
        }
        draft.q = sampled_draft.then_some(qs);
        let (_, out) = verify(&mut target, start, &draft, &mut sampler, &mut rng).expect("verify");
        let a = out[0];
        let b = match out.get(1) {
            Some(&b) => b,
            None => draw(&dist(&P[a as usize]), &mut rng),
        };
        counts[a as usize][b as usize] += 1;
    }
    let mut stat = 0.0;
    for a in 0..V {
        for b in 0..V {
            let e = n as f64 * P[start as usize][a] * P[a][b];
            let o = counts[a][b] as f64;
            stat += (o - e) * (o - e) / e;
        }
    }
    stat
}

#[test]
fn speculative_sampling_reproduces_the_target_distribution() {
    for (k, sampled) in [(1, true), (3, true), (2, false)] {
        let s = chi_square(k, sampled, 7 + k as u64, 20_000);
        eprintln!("k={k} sampled draft={sampled}: chi-square {s:.2} (critical {CRITICAL_DF15})");
        assert!(
            s < CRITICAL_DF15,
            "k={k}: chi-square {s:.2} >= {CRITICAL_DF15}"
        );
    }
}

#[test]
fn always_accepting_the_draft_is_detected() {
    // The same statistic on draws taken straight from q (what a wrong rule would emit) is
    // far over the critical value: the test has power.
    let mut rng = StdRng::seed_from_u64(3);
    let n = 20_000;
    let mut counts = [[0usize; V]; V];
    for _ in 0..n {
        let a = draw(&dist(&Q[2]), &mut rng);
        let b = draw(&dist(&Q[a as usize]), &mut rng);
        counts[a as usize][b as usize] += 1;
    }
    let mut stat = 0.0;
    for a in 0..V {
        for b in 0..V {
            let e = n as f64 * P[2][a] * P[a][b];
            let o = counts[a][b] as f64;
            stat += (o - e) * (o - e) / e;
        }
    }
    assert!(stat > 1000.0, "{stat}");
}
