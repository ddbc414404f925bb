//! The GPU top k gives the sampler exactly what the full logits read-back gives: the same
//! candidates in the same order, so the same distribution and the same seeded draws, on
//! logits with ties, values the temperature rounds together, infinities and NaN.
//! No adapter: SKIP loudly, or fail under CI=true.

use std::sync::Arc;

use infer_kernels::Kernels;
use infer_sampling::{Sampler, SamplingParams, top_k_candidates};
use infer_tensor::{DType, Tensor, device::test_device};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn gpu_topk(k: &Kernels, x: &[f32], kk: usize) -> Vec<(u32, f32)> {
    let dev = &k.dev;
    let xt = Tensor::from_f32(dev, "logits", &[x.len()], x).expect("upload");
    let len = Kernels::topk_scratch_len(x.len(), kk);
    let scratch = Tensor::zeros(dev, "scratch", &[len], DType::U32).expect("scratch");
    let out = Tensor::zeros(dev, "topk", &[2 * kk], DType::U32).expect("out");
    let d = k.topk(&xt, 0, x.len(), kk, &scratch, &out).expect("topk");
    k.topk_read(&d, &out, kk).expect("read")
}

#[test]
fn gpu_top_k_and_the_full_read_back_give_the_same_distribution_and_draws() {
    let Some(dev) = test_device() else { return };
    eprintln!("adapter: {}", dev.describe());
    let k = Kernels::new(Arc::new(dev));
    let mut rng = StdRng::seed_from_u64(3);
    let v = 49152;
    let mut cases: Vec<Vec<f32>> = vec![];
    // Model-like logits.
    cases.push((0..v).map(|_| rng.random_range(-8.0..12.0f32)).collect());
    // Ties and near-ties: 1 + j * ulp divided by a temperature rounds neighbours together.
    cases.push(
        (0..v)
            .map(|i| f32::from_bits(1.0f32.to_bits() + (i as u32 * 7919) % 64))
            .collect(),
    );
    // Infinities and NaN among the best.
    let mut x: Vec<f32> = (0..v).map(|_| rng.random_range(-5.0..5.0f32)).collect();
    x[10] = f32::INFINITY;
    x[11] = f32::NAN;
    x[12] = f32::NEG_INFINITY;
    x[40000] = f32::INFINITY;
    cases.push(x);
    for (c, logits) in cases.iter().enumerate() {
        for (kk, temperature, top_p, min_p) in [
            (1, 0.8, 1.0, 0.0),
            (40, 0.8, 1.0, 0.0),
            (40, 0.7, 0.9, 0.05),
            (64, 1.3, 1.0, 0.0),
            (256, 0.9, 0.95, 0.0),
        ] {
            let what = format!("case {c} top-k {kk} T {temperature}");
            let cand = gpu_topk(&k, logits, kk);
            assert_eq!(cand, top_k_candidates(logits, kk), "{what}: candidates");
            let params = SamplingParams {
                temperature,
                top_k: Some(kk),
                top_p,
                min_p,
                seed: 9,
                ..Default::default()
            };
            let mut host = Sampler::new(params.clone());
            let mut gpu = Sampler::new(params);
            // The GPU path is taken where it is the faster one.
            let want = (kk <= infer_sampling::GPU_TOPK_MAX_K).then_some(kk);
            assert_eq!(
                gpu.gpu_topk(),
                want,
                "{what}: the GPU path is taken up to k = 64"
            );
            let d = host.distribution(&mut logits.clone());
            assert_eq!(
                gpu.distribution_topk(cand.clone()),
                d,
                "{what}: distribution"
            );
            let a: Vec<u32> = (0..64).map(|_| host.sample(&mut logits.clone())).collect();
            let b: Vec<u32> = (0..64).map(|_| gpu.sample_topk(cand.clone())).collect();
            assert_eq!(a, b, "{what}: seeded draws");
        }
    }
}
