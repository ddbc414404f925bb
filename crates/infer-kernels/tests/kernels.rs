//! Every kernel against its CPU reference on a real wgpu adapter, over awkward shapes
//! (1, primes, non-multiples of the workgroup size and of 4, real model sizes), with a
//! seeded RNG and stated tolerances. Without an adapter these tests print SKIP; under
//! CI=true they fail instead.

use std::sync::{Arc, OnceLock};

use infer_kernels::{
    AttentionIo, AttentionParams, GeluMode, Glu, Kernels, KvCache, Norm, Out, PagedCache, RopeMode,
    RopeTable,
};
use infer_tensor::reference::{self as r, AttentionShape, RopeScaling};
use infer_tensor::{DType, Tensor, device::test_device};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn kernels() -> Option<&'static Kernels> {
    static K: OnceLock<Option<Kernels>> = OnceLock::new();
    K.get_or_init(|| {
        test_device().map(|d| {
            eprintln!("adapter: {}", d.describe());
            Kernels::new(Arc::new(d))
        })
    })
    .as_ref()
}

fn rand_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Asserts |got - want| <= atol + rtol |want| everywhere, reporting the worst element.
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let excess = err - (atol + rtol * w.abs());
        if excess > worst.2 || !g.is_finite() && w.is_finite() {
            worst = (i, err, excess.max(f32::MIN_POSITIVE));
        }
    }
    assert!(
        worst.2 <= 0.0,
        "{what}: worst at index {} got {} want {} (abs err {}, rel err {}; atol {atol}, rtol {rtol})",
        worst.0,
        got[worst.0],
        want[worst.0],
        worst.1,
        worst.1 / want[worst.0].abs().max(f32::MIN_POSITIVE)
    );
}

fn f32_tensor(k: &Kernels, name: &str, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(&k.dev, name, shape, data).expect("upload")
}

fn zeros(k: &Kernels, name: &str, shape: &[usize]) -> Tensor {
    Tensor::zeros(&k.dev, name, shape, DType::F32).expect("zeros")
}

fn ids_tensor(k: &Kernels, name: &str, ids: &[u32]) -> Tensor {
    Tensor::upload(
        &k.dev,
        name,
        &[ids.len()],
        DType::U32,
        bytemuck::cast_slice(ids),
    )
    .expect("ids")
}

/// Weights of `dtype` (n, k), split into parts of at most `part_rows` rows when given;
/// returns the tensor and its dequantized values (what the GPU must compute with).
fn weights(
    k: &Kernels,
    rng: &mut StdRng,
    dtype: DType,
    n: usize,
    cols: usize,
    part_rows: Option<usize>,
) -> (Tensor, Vec<f32>) {
    let w = rand_vec(rng, n * cols, 1.0);
    let bytes = r::quantize(dtype, &w);
    let deq = r::dequantize(dtype, &bytes, n * cols);
    let t = match part_rows {
        None => Tensor::upload_weights(&k.dev, "w", &[n, cols], dtype, &bytes),
        Some(rows) => {
            let max = (dtype.bytes_for(cols).unwrap() * rows) as u64;
            Tensor::upload_weights_with_max_part(&k.dev, "w", &[n, cols], dtype, &bytes, max)
        }
    }
    .expect("upload weights");
    (t, deq)
}

/// Tolerance of a dot product of length k: relative to sum |w x|.
fn dot_tol(w: &[f32], x: &[f32], n: usize, cols: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            w[i * cols..(i + 1) * cols]
                .iter()
                .zip(x)
                .map(|(a, b)| (a * b).abs())
                .sum::<f32>()
        })
        .collect()
}

fn check_dot(what: &str, got: &[f32], want: &[f32], mag: &[f32]) {
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = 2e-5 * m + 1e-6;
        assert!(
            (g - w).abs() <= tol,
            "{what}: index {i}: got {g} want {w} (err {}, tol {tol})",
            (g - w).abs()
        );
    }
}

/// `cols` rounded up to whole blocks of `dtype` (the K-quants' 256-element super-blocks; the
/// other quantized shapes are multiples of 32 already).
fn qcols(dtype: DType, cols: usize) -> usize {
    cols.next_multiple_of(dtype.block_elems())
}

fn float_and_quant_shapes(dtype: DType) -> Vec<(usize, usize)> {
    float_and_quant_shapes_32(dtype)
        .into_iter()
        .map(|(n, c)| (n, qcols(dtype, c)))
        .collect()
}

fn float_and_quant_shapes_32(dtype: DType) -> Vec<(usize, usize)> {
    if dtype.is_quantized() {
        vec![
            (1, 32),
            (7, 64),
            (13, 96),
            (67, 160),
            (576, 1536),
            (1536, 576),
        ]
    } else {
        vec![(1, 1), (3, 7), (5, 37), (13, 96), (67, 129), (576, 1536)]
    }
}

#[test]
fn matvec_every_dtype_and_awkward_shapes() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(1);
    for dtype in DType::ALL {
        for (n, cols) in float_and_quant_shapes(dtype) {
            let (w, deq) = weights(k, &mut rng, dtype, n, cols, None);
            let x = rand_vec(&mut rng, cols + 3, 1.0);
            let xt = f32_tensor(k, "x", &[cols + 3], &x);
            let y = zeros(k, "y", &[n + 2]);
            k.run(&k.matvec(&w, &xt, 3, &y, 2).unwrap()).unwrap();
            let got = y.read_f32(&k.dev).unwrap();
            let want = r::matvec(&deq, &x[3..], n, cols);
            let mag = dot_tol(&deq, &x[3..], n, cols);
            check_dot(
                &format!("matvec {dtype} {n}x{cols}"),
                &got[2..],
                &want,
                &mag,
            );
            assert_eq!(&got[..2], &[0.0, 0.0], "matvec wrote before y_off");
        }
    }
}

/// The GPU layout of matvec (a workgroup per 4 rows, lanes across the row, tree reduction)
/// against the reference for every dtype and awkward shapes, split weights, offsets and the
/// accumulate flag; and batch invariant: a token's outputs are the same bits whatever m is
/// and wherever the token sits.
#[test]
fn matvec_coalesced_every_dtype_awkward_shapes_and_batch_invariant() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(31);
    for dtype in DType::ALL {
        for (n, cols) in float_and_quant_shapes(dtype) {
            let (w, deq) = weights(k, &mut rng, dtype, n, cols, (n > 40).then_some(29));
            let x = rand_vec(&mut rng, cols + 3, 1.0);
            let xt = f32_tensor(k, "x", &[cols + 3], &x);
            let y = zeros(k, "y", &[n + 2]);
            k.run(&k.matvec_coalesced(&w, (&xt, 3), 1, (&y, 2), false).unwrap())
                .unwrap();
            let got = y.read_f32(&k.dev).unwrap();
            let want = r::matvec(&deq, &x[3..], n, cols);
            let mag = dot_tol(&deq, &x[3..], n, cols);
            let what = format!("matvec_coalesced {dtype} {n}x{cols}");
            check_dot(&what, &got[2..], &want, &mag);
            assert_eq!(&got[..2], &[0.0, 0.0], "{what}: wrote before y_off");
            // Accumulate: y + W x, the same bits as the add kernel's sum.
            let base = rand_vec(&mut rng, n, 2.0);
            let (a, b) = (
                f32_tensor(k, "a", &[n], &base),
                f32_tensor(k, "b", &[n], &base),
            );
            let o = zeros(k, "o", &[n]);
            let mut d = k.matvec_coalesced(&w, (&xt, 3), 1, (&o, 0), false).unwrap();
            d.extend(k.add(&a, &o, n, n).unwrap());
            d.extend(k.matvec_coalesced(&w, (&xt, 3), 1, (&b, 0), true).unwrap());
            k.run(&d).unwrap();
            assert_eq!(bits(k, &b), bits(k, &a), "{what}: accumulate");
        }
        let (n, cols) = if dtype.is_quantized() {
            (67, qcols(dtype, 160))
        } else {
            (67, 37)
        };
        let (w, _) = weights(k, &mut rng, dtype, n, cols, Some(29));
        let x0 = rand_vec(&mut rng, cols, 1.0);
        let y1 = zeros(k, "y", &[n]);
        k.run(
            &k.matvec_coalesced(
                &w,
                (&f32_tensor(k, "x", &[cols], &x0), 0),
                1,
                (&y1, 0),
                false,
            )
            .unwrap(),
        )
        .unwrap();
        let want = bits(k, &y1);
        for m in [2, 3, 5, 8] {
            for t in [0, m / 2, m - 1] {
                let mut x = rand_vec(&mut rng, m * cols, 1.0);
                x[t * cols..(t + 1) * cols].copy_from_slice(&x0);
                let y = zeros(k, "y", &[m, n]);
                let xt = f32_tensor(k, "x", &[m, cols], &x);
                k.run(&k.matvec_coalesced(&w, (&xt, 0), m, (&y, 0), false).unwrap())
                    .unwrap();
                assert_eq!(
                    &bits(k, &y)[t * n..(t + 1) * n],
                    &want[..],
                    "matvec_coalesced {dtype}: token {t} of {m} vs alone"
                );
            }
        }
    }
}

#[test]
fn matvec_vocab_sized_and_split_weights() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(2);
    for dtype in [DType::Q4_1, DType::Q8_0, DType::F16] {
        // 49152 x 576 is SmolLM2's output layer; the split into parts of 10007 rows
        // exercises weights spread over several buffers.
        for part in [None, Some(10007)] {
            let (n, cols) = (49152, 576);
            let (w, deq) = weights(k, &mut rng, dtype, n, cols, part);
            let x = rand_vec(&mut rng, cols, 1.0);
            let xt = f32_tensor(k, "x", &[cols], &x);
            let y = zeros(k, "y", &[n]);
            k.run(&k.matvec(&w, &xt, 0, &y, 0).unwrap()).unwrap();
            let got = y.read_f32(&k.dev).unwrap();
            let mag = dot_tol(&deq, &x, n, cols);
            check_dot(
                &format!("matvec {dtype} {n}x{cols} parts {part:?}"),
                &got,
                &r::matvec(&deq, &x, n, cols),
                &mag,
            );
        }
    }
}

#[test]
fn matvec_batched_over_tokens_every_dtype() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(11);
    let tile = k.matvec_tokens() as usize;
    for dtype in DType::ALL {
        // k: an odd number of blocks, or not a multiple of 4 (scalar x loads) or of a unit.
        let cols_list: &[usize] = if dtype.is_quantized() {
            &[96, 576]
        } else {
            &[37, 44]
        };
        for cols in cols_list.iter().map(|&c| qcols(dtype, c)) {
            // m: 1, below one tile, a tile and a tail, several tiles and a tail.
            for (m, n) in [(1, 5), (2, 1), (3, 13), (tile + 1, 67), (2 * tile + 3, 29)] {
                let (w, deq) = weights(k, &mut rng, dtype, n, cols, (n > 20).then_some(29));
                let x = rand_vec(&mut rng, m * cols, 1.0);
                let xt = f32_tensor(k, "x", &[m, cols], &x);
                let y = zeros(k, "y", &[m, n]);
                k.run(&k.matvec_batched(&w, &xt, m, &y).unwrap()).unwrap();
                let got = y.read_f32(&k.dev).unwrap();
                let want = r::matmul(&x, &deq, m, n, cols);
                for i in 0..m {
                    let mag = dot_tol(&deq, &x[i * cols..(i + 1) * cols], n, cols);
                    check_dot(
                        &format!("matvec batched {dtype} m{m} n{n} k{cols} row {i}"),
                        &got[i * n..(i + 1) * n],
                        &want[i * n..(i + 1) * n],
                        &mag,
                    );
                }
            }
        }
    }
}

/// Batch invariance: one row of x gives bit-identical outputs whatever the number of
/// tokens m, wherever it sits among them (first, middle, last; in a full or a tail tile)
/// and whatever its random neighbours are, and the same bits as the single-token matvec.
#[test]
fn matvec_batched_is_batch_invariant_every_dtype() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(12);
    for dtype in DType::ALL {
        let (n, cols) = if dtype.is_quantized() {
            (67, qcols(dtype, 160))
        } else {
            (67, 37)
        };
        let (w, _) = weights(k, &mut rng, dtype, n, cols, Some(29));
        let x0 = rand_vec(&mut rng, cols, 1.0);
        let y1 = zeros(k, "y", &[n]);
        k.run(
            &k.matvec(&w, &f32_tensor(k, "x", &[cols], &x0), 0, &y1, 0)
                .unwrap(),
        )
        .unwrap();
        let want: Vec<u32> = y1
            .read_f32(&k.dev)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        for m in 1..=17 {
            for t in 0..m {
                let mut x = rand_vec(&mut rng, m * cols, 1.0);
                x[t * cols..(t + 1) * cols].copy_from_slice(&x0);
                let xt = f32_tensor(k, "x", &[m, cols], &x);
                let y = zeros(k, "y", &[m, n]);
                k.run(&k.matvec_batched(&w, &xt, m, &y).unwrap()).unwrap();
                let got = y.read_f32(&k.dev).unwrap();
                let got: Vec<u32> = got[t * n..(t + 1) * n]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                if let Some(r) = (0..n).find(|&r| got[r] != want[r]) {
                    panic!(
                        "matvec batched {dtype} {n}x{cols}: token {t} of {m}, row {r}: {} != \
                         single-token {}",
                        f32::from_bits(got[r]),
                        f32::from_bits(want[r])
                    );
                }
            }
        }
    }
}

fn bits(k: &Kernels, t: &Tensor) -> Vec<u32> {
    t.read_f32(&k.dev)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// The fused gate/up/activation pass gives the same bits as two matvecs and the swiglu
/// (or gelu and mul) kernels of the same layout, for every dtype, activation and token
/// count, split weights included; and matches the CPU reference.
#[test]
fn matvec_glu_equals_the_unfused_kernels_every_dtype() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(21);
    for dtype in DType::ALL {
        let cols = qcols(dtype, if dtype.is_quantized() { 96 } else { 37 });
        let n = 67;
        let (wg, dg) = weights(k, &mut rng, dtype, n, cols, Some(29));
        let (wu, du) = weights(k, &mut rng, dtype, n, cols, Some(29));
        for m in [1, 2, 5] {
            let x = rand_vec(&mut rng, m * cols, 1.0);
            let xt = f32_tensor(k, "x", &[m, cols], &x);
            let (g, u) = (zeros(k, "g", &[m, n]), zeros(k, "u", &[m, n]));
            let (unfused, fused) = (zeros(k, "a", &[m, n]), zeros(k, "f", &[m, n]));
            let mut d = k.matvec_batched(&wg, &xt, m, &g).unwrap();
            d.extend(k.matvec_batched(&wu, &xt, m, &u).unwrap());
            k.run(&d).unwrap();
            let gv = r::matmul(&x, &dg, m, n, cols);
            let uv = r::matmul(&x, &du, m, n, cols);
            for act in [infer_kernels::Glu::Silu, infer_kernels::Glu::GeluTanh] {
                let mut d = match act {
                    infer_kernels::Glu::Silu => k.swiglu(&g, &u, &unfused, m * n).unwrap(),
                    infer_kernels::Glu::GeluTanh => {
                        let mut d = k.gelu(&g, &unfused, m * n, GeluMode::Tanh).unwrap();
                        d.extend(k.mul(&unfused, &u, m * n, m * n).unwrap());
                        d
                    }
                };
                d.extend(k.matvec_glu(&wg, &wu, &xt, m, &fused, act).unwrap());
                k.run(&d).unwrap();
                assert_eq!(
                    bits(k, &fused),
                    bits(k, &unfused),
                    "matvec_glu {dtype} {act:?} m={m}: fused != unfused"
                );
                let want: Vec<f32> = gv
                    .iter()
                    .zip(&uv)
                    .map(|(&g, &u)| match act {
                        infer_kernels::Glu::Silu => g / (1.0 + (-g).exp()) * u,
                        infer_kernels::Glu::GeluTanh => r::gelu(&[g], GeluMode::Tanh)[0] * u,
                    })
                    .collect();
                let got = fused.read_f32(&k.dev).unwrap();
                assert_close(
                    &format!("matvec_glu {dtype} {act:?} m={m}"),
                    &got,
                    &want,
                    1e-3,
                    1e-3,
                );
            }
        }
    }
    // Gate and up of different shapes are a clear error.
    let (wg, _) = weights(k, &mut rng, DType::F32, 8, 16, None);
    let (wu, _) = weights(k, &mut rng, DType::F32, 9, 16, None);
    let x = zeros(k, "x", &[1, 16]);
    assert!(
        k.matvec_glu(
            &wg,
            &wu,
            &x,
            1,
            &zeros(k, "o", &[9]),
            infer_kernels::Glu::Silu
        )
        .is_err()
    );
}

/// Shapes for the coalesced kernels: n not a multiple of R = 4 (and split into parts past
/// 40 rows), k below, at and past 64 units and not a multiple of 64 units (or, for floats,
/// of 4 elements), and a real model size.
fn coalesced_shapes(dtype: DType) -> Vec<(usize, usize)> {
    coalesced_shapes_32(dtype)
        .into_iter()
        .map(|(n, c)| (n, qcols(dtype, c)))
        .collect()
}

fn coalesced_shapes_32(dtype: DType) -> Vec<(usize, usize)> {
    if dtype.is_quantized() {
        vec![(1, 32), (7, 160), (67, 32 * 64), (13, 32 * 67), (1536, 576)]
    } else {
        vec![(1, 1), (5, 37), (67, 4 * 64), (13, 4 * 67 + 1), (1536, 576)]
    }
}

/// Whether `got` is within check_dot's tolerance of `want`.
fn dot_ok(got: &[f32], want: &[f32], mag: &[f32]) -> bool {
    got.iter()
        .zip(want)
        .zip(mag)
        .all(|((&g, &w), &m)| (g - w).abs() <= 2e-5 * m + 1e-6)
}

/// The RMSNorms the norm tests fold into the coalesced kernels: (x scale, eps, offset).
/// With x of scale 0.05 the mean square (~8e-4) is of the order of eps = 1e-3, so a wrong
/// eps (or offset) moves every output far past the tolerance.
const NORMS: [(f32, f32, f32); 3] = [(1.0, 1e-5, 0.0), (0.05, 1e-3, 0.0), (0.05, 1e-3, 1.0)];

/// matvec_coalesced with an RMSNorm folded into its input gives the bits of the rms_norm
/// kernel then matvec_coalesced, for every dtype, awkward shapes, m = 1..8 and Gemma's
/// weight offset; matches the reference (and would not with a wrong eps or offset); and a
/// token's outputs do not depend on the other tokens.
#[test]
fn matvec_coalesced_norm_equals_rms_norm_then_matvec_coalesced_every_dtype() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(41);
    for dtype in DType::ALL {
        for (n, cols) in coalesced_shapes(dtype) {
            let (w, deq) = weights(k, &mut rng, dtype, n, cols, (n > 40).then_some(29));
            let g = rand_vec(&mut rng, cols, 1.0);
            let gt = f32_tensor(k, "g", &[cols], &g);
            for (mi, m) in [1, 2, 5, 8].into_iter().enumerate() {
                let (scale, eps, off) = NORMS[mi % NORMS.len()];
                let x = rand_vec(&mut rng, m * cols, scale);
                let xt = f32_tensor(k, "x", &[m, cols], &x);
                let norm = Norm {
                    weight: &gt,
                    eps,
                    offset: off,
                };
                let (xn, y, fused) = (
                    zeros(k, "xn", &[m, cols]),
                    zeros(k, "y", &[m, n]),
                    zeros(k, "f", &[m, n]),
                );
                let mut d = k
                    .rms_norm(
                        &xt,
                        Norm {
                            weight: &gt,
                            eps,
                            offset: off,
                        },
                        &xn,
                        m,
                        cols,
                    )
                    .unwrap();
                d.extend(k.matvec_coalesced(&w, (&xn, 0), m, (&y, 0), false).unwrap());
                d.extend(k.matvec_coalesced_norm(&w, &xt, m, &fused, norm).unwrap());
                k.run(&d).unwrap();
                let what = format!(
                    "matvec_coalesced norm {dtype} {n}x{cols} m={m} eps={eps} offset={off}"
                );
                assert_eq!(bits(k, &fused), bits(k, &y), "{what}: fused != unfused");
                let got = fused.read_f32(&k.dev).unwrap();
                let check = |eps: f32, off: f32| {
                    let xn = r::rms_norm(&x, &g, cols, eps, off);
                    (0..m).all(|t| {
                        let xt = &xn[t * cols..(t + 1) * cols];
                        dot_ok(
                            &got[t * n..(t + 1) * n],
                            &r::matvec(&deq, xt, n, cols),
                            &dot_tol(&deq, xt, n, cols),
                        )
                    })
                };
                assert!(check(eps, off), "{what}: differs from the reference");
                if eps > 1e-4 && n > 1 {
                    assert!(!check(2.0 * eps, off), "{what}: insensitive to eps");
                    assert!(!check(eps, 1.0 - off), "{what}: insensitive to the offset");
                }
            }
        }
        // Batch invariance: token t of m gets the bits it gets alone.
        let (n, cols) = coalesced_shapes(dtype)[3];
        let (w, _) = weights(k, &mut rng, dtype, n, cols, None);
        let g = rand_vec(&mut rng, cols, 1.0);
        let gt = f32_tensor(k, "g", &[cols], &g);
        let norm = Norm {
            weight: &gt,
            eps: 1e-5,
            offset: 1.0,
        };
        let x0 = rand_vec(&mut rng, cols, 1.0);
        let y1 = zeros(k, "y", &[n]);
        let x0t = f32_tensor(k, "x", &[cols], &x0);
        k.run(&k.matvec_coalesced_norm(&w, &x0t, 1, &y1, norm).unwrap())
            .unwrap();
        let want = bits(k, &y1);
        for m in [2, 3, 5, 8] {
            for t in [0, m / 2, m - 1] {
                let mut x = rand_vec(&mut rng, m * cols, 1.0);
                x[t * cols..(t + 1) * cols].copy_from_slice(&x0);
                let y = zeros(k, "y", &[m, n]);
                let xt = f32_tensor(k, "x", &[m, cols], &x);
                k.run(&k.matvec_coalesced_norm(&w, &xt, m, &y, norm).unwrap())
                    .unwrap();
                assert_eq!(
                    &bits(k, &y)[t * n..(t + 1) * n],
                    &want[..],
                    "matvec_coalesced norm {dtype}: token {t} of {m} vs alone"
                );
            }
        }
    }
    // A norm weight shorter than k is a clear error.
    let (w, _) = weights(k, &mut rng, DType::F32, 8, 16, None);
    let short = zeros(k, "g", &[15]);
    let norm = Norm {
        weight: &short,
        eps: 1e-5,
        offset: 0.0,
    };
    let (x, y) = (zeros(k, "x", &[1, 16]), zeros(k, "y", &[8]));
    assert!(k.matvec_coalesced_norm(&w, &x, 1, &y, norm).is_err());
}

/// The GPU layout of the fused gate/up/activation pass gives the bits of matvec_coalesced
/// twice and the swiglu (or gelu and mul) kernels, with and without an RMSNorm folded into
/// its input (then: the bits of rms_norm first), for every dtype, both activations,
/// awkward shapes and m = 1..8; matches the reference; and is batch invariant.
#[test]
fn matvec_glu_coalesced_equals_the_unfused_kernels_every_dtype_with_and_without_norm() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(43);
    for dtype in DType::ALL {
        for (si, (n, cols)) in coalesced_shapes(dtype).into_iter().enumerate() {
            let parts = (n > 40).then_some(29);
            let (wg, dg) = weights(k, &mut rng, dtype, n, cols, parts);
            let (wu, du) = weights(k, &mut rng, dtype, n, cols, parts);
            let gw = rand_vec(&mut rng, cols, 1.0);
            let gt = f32_tensor(k, "g", &[cols], &gw);
            let ms: &[usize] = if si == 1 {
                &[1, 2, 3, 4, 5, 6, 7, 8]
            } else {
                &[1, 3]
            };
            for &m in ms {
                let (scale, eps, off) = NORMS[m % NORMS.len()];
                let x = rand_vec(&mut rng, m * cols, scale);
                let xt = f32_tensor(k, "x", &[m, cols], &x);
                let xn = zeros(k, "xn", &[m, cols]);
                let (g, u) = (zeros(k, "g", &[m, n]), zeros(k, "u", &[m, n]));
                for norm in [None, Some((eps, off))] {
                    let mut d = Vec::new();
                    let input = match norm {
                        None => &xt,
                        Some((eps, off)) => {
                            d.extend(
                                k.rms_norm(
                                    &xt,
                                    Norm {
                                        weight: &gt,
                                        eps,
                                        offset: off,
                                    },
                                    &xn,
                                    m,
                                    cols,
                                )
                                .unwrap(),
                            );
                            &xn
                        }
                    };
                    d.extend(
                        k.matvec_coalesced(&wg, (input, 0), m, (&g, 0), false)
                            .unwrap(),
                    );
                    d.extend(
                        k.matvec_coalesced(&wu, (input, 0), m, (&u, 0), false)
                            .unwrap(),
                    );
                    k.run(&d).unwrap();
                    let xr = match norm {
                        None => x.clone(),
                        Some((eps, off)) => r::rms_norm(&x, &gw, cols, eps, off),
                    };
                    let gv = r::matmul(&xr, &dg, m, n, cols);
                    let uv = r::matmul(&xr, &du, m, n, cols);
                    for act in [Glu::Silu, Glu::GeluTanh] {
                        let (unfused, fused) = (zeros(k, "a", &[m, n]), zeros(k, "f", &[m, n]));
                        let mut d = match act {
                            Glu::Silu => k.swiglu(&g, &u, &unfused, m * n).unwrap(),
                            Glu::GeluTanh => {
                                let mut d = k.gelu(&g, &unfused, m * n, GeluMode::Tanh).unwrap();
                                d.extend(k.mul(&unfused, &u, m * n, m * n).unwrap());
                                d
                            }
                        };
                        let nm = norm.map(|(eps, offset)| Norm {
                            weight: &gt,
                            eps,
                            offset,
                        });
                        d.extend(
                            k.matvec_glu_coalesced([&wg, &wu], &xt, m, &fused, act, nm)
                                .unwrap(),
                        );
                        k.run(&d).unwrap();
                        let what = format!(
                            "matvec_glu_coalesced {dtype} {n}x{cols} {act:?} m={m} norm={norm:?}"
                        );
                        assert_eq!(
                            bits(k, &fused),
                            bits(k, &unfused),
                            "{what}: fused != unfused"
                        );
                        if cols <= 576 {
                            let want: Vec<f32> = gv
                                .iter()
                                .zip(&uv)
                                .map(|(&g, &u)| match act {
                                    Glu::Silu => g / (1.0 + (-g).exp()) * u,
                                    Glu::GeluTanh => r::gelu(&[g], GeluMode::Tanh)[0] * u,
                                })
                                .collect();
                            let got = fused.read_f32(&k.dev).unwrap();
                            let tol = if cols > 200 { 2e-3 } else { 1e-3 };
                            assert_close(&what, &got, &want, tol, tol);
                        }
                    }
                }
            }
        }
        // Batch invariance, with a norm: token t of m gets the bits it gets alone.
        let (n, cols) = coalesced_shapes(dtype)[3];
        let (wg, _) = weights(k, &mut rng, dtype, n, cols, None);
        let (wu, _) = weights(k, &mut rng, dtype, n, cols, None);
        let gt = f32_tensor(k, "g", &[cols], &rand_vec(&mut rng, cols, 1.0));
        let norm = Some(Norm {
            weight: &gt,
            eps: 1e-5,
            offset: 0.0,
        });
        let x0 = rand_vec(&mut rng, cols, 1.0);
        let y1 = zeros(k, "y", &[n]);
        let x0t = f32_tensor(k, "x", &[cols], &x0);
        k.run(
            &k.matvec_glu_coalesced([&wg, &wu], &x0t, 1, &y1, Glu::Silu, norm)
                .unwrap(),
        )
        .unwrap();
        let want = bits(k, &y1);
        for m in [2, 5, 8] {
            for t in [0, m / 2, m - 1] {
                let mut x = rand_vec(&mut rng, m * cols, 1.0);
                x[t * cols..(t + 1) * cols].copy_from_slice(&x0);
                let y = zeros(k, "y", &[m, n]);
                let xt = f32_tensor(k, "x", &[m, cols], &x);
                k.run(
                    &k.matvec_glu_coalesced([&wg, &wu], &xt, m, &y, Glu::Silu, norm)
                        .unwrap(),
                )
                .unwrap();
                assert_eq!(
                    &bits(k, &y)[t * n..(t + 1) * n],
                    &want[..],
                    "matvec_glu_coalesced {dtype}: token {t} of {m} vs alone"
                );
            }
        }
    }
    // Gate and up of different layouts are a clear error.
    let (wg, _) = weights(k, &mut rng, DType::F32, 8, 16, None);
    let (wu, _) = weights(k, &mut rng, DType::F32, 9, 16, None);
    let x = zeros(k, "x", &[1, 16]);
    let o = zeros(k, "o", &[9]);
    assert!(
        k.matvec_glu_coalesced([&wg, &wu], &x, 1, &o, Glu::Silu, None)
            .is_err()
    );
}

/// matvec_add (the residual add fused into a projection) gives the bits of matvec then add.
/// matvec and matvec_glu sharing x over subgroups (one load per invocation, the unit's
/// vec4s broadcast; `Kernels::matvec_x_broadcast`, the default where supported) give the
/// bits of every invocation loading x itself: for the block-quantized dtypes it applies
/// to, rows past the last workgroup's (n not a multiple of 8), split weights, an
/// unaligned x offset (scalar x loads), token tiles and tails, the accumulate flag and both
/// activations. Where subgroups of >= 8 are missing, turning it on is an error.
#[test]
fn matvec_and_matvec_glu_x_broadcast_equals_x_loads() {
    let Some(k) = kernels() else { return };
    let mut load = Kernels::new(k.dev.clone());
    load.set_matvec_x_broadcast(false).unwrap();
    let mut bcast = Kernels::new(k.dev.clone());
    if !bcast.matvec_x_broadcast_supported() {
        assert!(bcast.set_matvec_x_broadcast(true).is_err());
        eprintln!("adapter without subgroups of >= 8: only the loading variant exists");
        return;
    }
    let defaults = infer_tensor::Tuning::for_adapter(k.dev.info.device_type, &k.dev.caps);
    assert!(defaults.x_broadcast, "supported but not the default");
    assert_eq!(k.matvec_x_broadcast(), k.tuning().x_broadcast);
    bcast.set_matvec_x_broadcast(true).unwrap();
    let mut rng = StdRng::seed_from_u64(23);
    for dtype in DType::ALL.into_iter().filter(|d| d.is_quantized()) {
        for (n, cols, part) in [(13, 96, None), (67, 160, Some(29)), (1536, 576, None)] {
            let cols = qcols(dtype, cols);
            let (w, _) = weights(k, &mut rng, dtype, n, cols, part);
            let (wu, _) = weights(k, &mut rng, dtype, n, cols, part);
            for m in [1, 2, 7] {
                let what = format!("{dtype} {n}x{cols} m={m}");
                let x = rand_vec(&mut rng, m * cols + 3, 1.0);
                let xt = f32_tensor(k, "x", &[m * cols + 3], &x);
                let xa = f32_tensor(k, "x", &[m, cols], &x[..m * cols]);
                let res = rand_vec(&mut rng, m * n, 2.0);
                let mut outs = Vec::new();
                for kk in [&load, &bcast] {
                    let one = zeros(k, "one", &[n]);
                    let y = zeros(k, "y", &[m, n]);
                    let acc = f32_tensor(k, "acc", &[m, n], &res);
                    let glu = [zeros(k, "silu", &[m, n]), zeros(k, "gelu", &[m, n])];
                    let mut d = kk.matvec(&w, &xt, 3, &one, 0).unwrap();
                    d.extend(kk.matvec_batched(&w, &xa, m, &y).unwrap());
                    d.extend(kk.matvec_add(&w, &xa, m, &acc).unwrap());
                    d.extend(kk.matvec_glu(&w, &wu, &xa, m, &glu[0], Glu::Silu).unwrap());
                    d.extend(
                        kk.matvec_glu(&w, &wu, &xa, m, &glu[1], Glu::GeluTanh)
                            .unwrap(),
                    );
                    kk.run(&d).unwrap();
                    outs.push([&one, &y, &acc, &glu[0], &glu[1]].map(|t| bits(k, t)));
                }
                for (i, name) in ["matvec x_off 3", "batched", "add", "glu silu", "glu gelu"]
                    .iter()
                    .enumerate()
                {
                    assert!(
                        outs[0][i].iter().any(|&b| b != 0),
                        "{what} {name}: all zero"
                    );
                    assert_eq!(outs[1][i], outs[0][i], "{what} {name}: broadcast != loads");
                }
            }
        }
    }
}

#[test]
fn matvec_add_equals_matvec_then_add_every_dtype() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(22);
    for dtype in DType::ALL {
        let cols = qcols(dtype, if dtype.is_quantized() { 64 } else { 37 });
        let n = 45;
        let (w, _) = weights(k, &mut rng, dtype, n, cols, Some(16));
        for m in [1, 3, 4, 9] {
            let x = f32_tensor(k, "x", &[m, cols], &rand_vec(&mut rng, m * cols, 1.0));
            let res = rand_vec(&mut rng, m * n, 2.0);
            let (a, b) = (
                f32_tensor(k, "a", &[m, n], &res),
                f32_tensor(k, "b", &[m, n], &res),
            );
            let o = zeros(k, "o", &[m, n]);
            let mut d = k.matvec_batched(&w, &x, m, &o).unwrap();
            d.extend(k.add(&a, &o, m * n, m * n).unwrap());
            d.extend(k.matvec_add(&w, &x, m, &b).unwrap());
            k.run(&d).unwrap();
            assert_eq!(bits(k, &b), bits(k, &a), "matvec_add {dtype} m={m}");
        }
    }
}

#[test]
fn matmul_every_dtype_and_awkward_shapes() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(3);
    for dtype in DType::ALL {
        let shapes: Vec<(usize, usize, usize)> = if dtype.is_quantized() {
            vec![(2, 1, 32), (5, 33, 64), (70, 130, 96), (128, 576, 576)]
        } else {
            vec![
                (2, 1, 1),
                (2, 3, 5),
                (7, 13, 37),
                (65, 67, 96),
                (128, 576, 576),
            ]
        };
        for (m, n, cols) in shapes.into_iter().map(|(m, n, c)| (m, n, qcols(dtype, c))) {
            let part = (n > 64).then_some(37);
            let (w, deq) = weights(k, &mut rng, dtype, n, cols, part);
            let x = rand_vec(&mut rng, m * cols, 1.0);
            let xt = f32_tensor(k, "x", &[m, cols], &x);
            let y = zeros(k, "y", &[m, n]);
            k.run(&k.matmul(&xt, m, &w, &y).unwrap()).unwrap();
            let got = y.read_f32(&k.dev).unwrap();
            let want = r::matmul(&x, &deq, m, n, cols);
            for i in 0..m {
                let mag = dot_tol(&deq, &x[i * cols..(i + 1) * cols], n, cols);
                check_dot(
                    &format!("matmul {dtype} m{m} n{n} k{cols} row {i}"),
                    &got[i * n..(i + 1) * n],
                    &want[i * n..(i + 1) * n],
                    &mag,
                );
            }
        }
    }
}

#[test]
fn embedding_every_dtype_and_split_tables() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(4);
    for dtype in DType::ALL {
        let cols = qcols(dtype, if dtype.is_quantized() { 96 } else { 37 });
        for part in [None, Some(7)] {
            let (w, deq) = weights(k, &mut rng, dtype, 61, cols, part);
            let ids: Vec<u32> = vec![0, 60, 7, 7, 33, 1, 59, 14];
            let idt = ids_tensor(k, "ids", &ids);
            let out = zeros(k, "out", &[ids.len(), cols]);
            k.run(&k.embedding(&w, &idt, ids.len(), &out).unwrap())
                .unwrap();
            assert_close(
                &format!("embedding {dtype} parts {part:?}"),
                &out.read_f32(&k.dev).unwrap(),
                &r::embedding(&deq, cols, &ids),
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn embedding_and_matvec_larger_than_one_binding() {
    // A 151936 x 896 f32 table is 545 MB: over lavapipe's 128 MiB binding limit.
    let Some(k) = kernels() else { return };
    let (n, cols) = (151936usize, 896usize);
    let w: Vec<f32> = (0..n * cols)
        .map(|i| ((i % 1013) as f32 - 506.0) / 512.0 + (i / cols) as f32 * 1e-6)
        .collect();
    let t = Tensor::upload_weights(
        &k.dev,
        "embed",
        &[n, cols],
        DType::F32,
        bytemuck::cast_slice(&w),
    )
    .unwrap();
    assert!(
        (n * cols * 4) as u64 <= k.dev.max_binding() || t.parts.len() > 1,
        "a tensor over the binding limit must be split"
    );
    let ids = [0u32, 151935, 75000, 42, 131072];
    let out = zeros(k, "out", &[ids.len(), cols]);
    let idt = ids_tensor(k, "ids", &ids);
    k.run(&k.embedding(&t, &idt, ids.len(), &out).unwrap())
        .unwrap();
    assert_close(
        "embedding 151936x896",
        &out.read_f32(&k.dev).unwrap(),
        &r::embedding(&w, cols, &ids),
        0.0,
        0.0,
    );
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let xt = f32_tensor(k, "x", &[cols], &x);
    let y = zeros(k, "y", &[n]);
    k.run(&k.matvec(&t, &xt, 0, &y, 0).unwrap()).unwrap();
    let got = y.read_f32(&k.dev).unwrap();
    let mag = dot_tol(&w, &x, n, cols);
    check_dot(
        "matvec 151936x896 f32",
        &got,
        &r::matvec(&w, &x, n, cols),
        &mag,
    );
}

#[test]
fn rms_norm_and_layer_norm_shapes() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(5);
    for (rows, d) in [(1, 1), (3, 7), (17, 64), (2, 576), (5, 1000), (1, 4099)] {
        let x = rand_vec(&mut rng, rows * d, 3.0);
        let w = rand_vec(&mut rng, d, 1.0);
        let b = rand_vec(&mut rng, d, 1.0);
        let (xt, wt, bt) = (
            f32_tensor(k, "x", &[rows, d], &x),
            f32_tensor(k, "w", &[d], &w),
            f32_tensor(k, "b", &[d], &b),
        );
        let y = zeros(k, "y", &[rows, d]);
        for off in [0.0, 1.0] {
            k.run(
                &k.rms_norm(
                    &xt,
                    Norm {
                        weight: &wt,
                        eps: 1e-5,
                        offset: off,
                    },
                    &y,
                    rows,
                    d,
                )
                .unwrap(),
            )
            .unwrap();
            assert_close(
                &format!("rms_norm {rows}x{d} offset {off}"),
                &y.read_f32(&k.dev).unwrap(),
                &r::rms_norm(&x, &w, d, 1e-5, off),
                1e-5,
                1e-4,
            );
        }
        k.run(&k.layer_norm(&xt, [&wt, &bt], &y, rows, d, 1e-5).unwrap())
            .unwrap();
        assert_close(
            &format!("layer_norm {rows}x{d}"),
            &y.read_f32(&k.dev).unwrap(),
            &r::layer_norm(&x, &w, &b, d, 1e-5),
            1e-4,
            1e-4,
        );
    }
}

#[test]
fn softmax_shapes() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(6);
    for (rows, n) in [(1, 1), (3, 7), (5, 100), (2, 49152)] {
        let x = rand_vec(&mut rng, rows * n, 20.0);
        let xt = f32_tensor(k, "x", &[rows, n], &x);
        let y = zeros(k, "y", &[rows, n]);
        k.run(&k.softmax(&xt, &y, rows, n).unwrap()).unwrap();
        assert_close(
            &format!("softmax {rows}x{n}"),
            &y.read_f32(&k.dev).unwrap(),
            &r::softmax(&x, n),
            1e-7,
            1e-4,
        );
    }
}

#[test]
fn swiglu_gelu_add_mul_elementwise() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(7);
    for n in [1usize, 255, 257, 100_003] {
        let a = rand_vec(&mut rng, n, 8.0);
        let b = rand_vec(&mut rng, n, 2.0);
        let (at, bt) = (f32_tensor(k, "a", &[n], &a), f32_tensor(k, "b", &[n], &b));
        let y = zeros(k, "y", &[n]);
        k.run(&k.swiglu(&at, &bt, &y, n).unwrap()).unwrap();
        assert_close(
            &format!("swiglu {n}"),
            &y.read_f32(&k.dev).unwrap(),
            &r::swiglu(&a, &b),
            1e-6,
            1e-5,
        );
        for mode in [GeluMode::Tanh, GeluMode::Erf] {
            k.run(&k.gelu(&at, &y, n, mode).unwrap()).unwrap();
            assert_close(
                &format!("gelu {mode:?} {n}"),
                &y.read_f32(&k.dev).unwrap(),
                &r::gelu(&a, mode),
                2e-6,
                1e-5,
            );
        }
        // Residual (same size) and broadcast (a bias row of 1, or of a divisor of n).
        let b_len = if n % 7 == 0 {
            7
        } else if n == 100_003 {
            1
        } else {
            n
        };
        for (kernel, want) in [
            ("add", r::add(&a, &b[..b_len])),
            ("mul", r::mul(&a, &b[..b_len])),
        ] {
            let at = f32_tensor(k, "a", &[n], &a);
            let bt = f32_tensor(k, "b", &[b_len], &b[..b_len]);
            let d = if kernel == "add" {
                k.add(&at, &bt, n, b_len)
            } else {
                k.mul(&at, &bt, n, b_len)
            };
            k.run(&d.unwrap()).unwrap();
            assert_close(
                &format!("{kernel} {n} b_len {b_len}"),
                &at.read_f32(&k.dev).unwrap(),
                &want,
                0.0,
                1e-6,
            );
        }
    }
    let a = zeros(k, "a", &[10]);
    let b = zeros(k, "b", &[3]);
    assert!(
        k.add(&a, &b, 10, 3).is_err(),
        "a b_len that does not divide n is an error"
    );
}

#[test]
fn rope_both_pairings_partial_and_scaled() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(8);
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64.0,
    };
    for (n_tokens, heads, hd, rot, pos0, scaling) in [
        (1, 1, 2, 2, 0, RopeScaling::None),
        (3, 5, 64, 64, 37, RopeScaling::None),
        (7, 3, 96, 32, 5, RopeScaling::Linear { factor: 4.0 }),
        (2, 2, 128, 128, 1000, llama3),
    ] {
        for mode in [RopeMode::RotateHalf, RopeMode::Interleaved] {
            let x = rand_vec(&mut rng, n_tokens * heads * hd, 2.0);
            let inv = r::rope_inv_freq(rot, 10000.0, scaling);
            let max_pos = pos0 + n_tokens + 3;
            let cs = r::rope_table(&inv, max_pos, 1.0);
            let cst = f32_tensor(k, "cs", &[max_pos, rot], &cs);
            let pos = ids_tensor(k, "pos", &[pos0 as u32]);
            let xt = f32_tensor(k, "x", &[n_tokens, heads, hd], &x);
            k.run(
                &k.rope(&xt, RopeTable { cs: &cst, mode }, &pos, n_tokens, heads, hd)
                    .unwrap(),
            )
            .unwrap();
            let mut want = x.clone();
            r::rope(&mut want, n_tokens, heads, hd, pos0, &inv, mode, 1.0);
            assert_close(
                &format!("rope {mode:?} t{n_tokens} h{heads} d{hd} rot{rot} pos{pos0}"),
                &xt.read_f32(&k.dev).unwrap(),
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn kv_write_then_attention_and_attention_lane_prefill_and_decode() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(9);
    // (n_heads, n_kv, head_dim, capacity, pos0, n_tokens, softcap, window)
    for (nh, nkv, hd, cap, pos0, nt, softcap, window) in [
        (1, 1, 1, 4, 0, 1, 0.0, 0),
        (4, 2, 16, 80, 0, 70, 0.0, 0),
        (9, 3, 64, 300, 5, 67, 0.0, 0),
        (8, 1, 128, 300, 200, 1, 0.0, 0),
        (2, 2, 256, 140, 130, 3, 0.0, 0),
        (6, 2, 32, 200, 100, 9, 30.0, 0),
        (4, 4, 48, 200, 70, 5, 0.0, 16),
    ] {
        let kc0 = rand_vec(&mut rng, nkv * cap * hd, 1.0);
        let vc0 = rand_vec(&mut rng, nkv * cap * hd, 1.0);
        let knew = rand_vec(&mut rng, nt * nkv * hd, 1.0);
        let vnew = rand_vec(&mut rng, nt * nkv * hd, 1.0);
        let q = rand_vec(&mut rng, nt * nh * hd, 1.0);
        let kct = f32_tensor(k, "kc", &[nkv, cap, hd], &kc0);
        let vct = f32_tensor(k, "vc", &[nkv, cap, hd], &vc0);
        let (kt, vt, qt) = (
            f32_tensor(k, "k", &[nt, nkv, hd], &knew),
            f32_tensor(k, "v", &[nt, nkv, hd], &vnew),
            f32_tensor(k, "q", &[nt, nh, hd], &q),
        );
        let pos = ids_tensor(k, "pos", &[pos0 as u32]);
        let out = zeros(k, "out", &[nt, nh, hd]);
        let scale = 1.0 / (hd as f32).sqrt();
        let ap = AttentionParams {
            n_tokens: nt,
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            capacity: cap,
            scale,
            softcap,
            window,
        };
        k.run(
            &k.kv_write(
                &kt,
                &vt,
                &KvCache {
                    k_cache: &kct,
                    v_cache: &vct,
                    pos: &pos,
                    capacity: cap,
                },
                nt,
                nkv,
                hd,
            )
            .unwrap(),
        )
        .unwrap();
        let (mut kc, mut vc) = (kc0.clone(), vc0.clone());
        r::kv_write(&mut kc, &mut vc, &knew, &vnew, nt, nkv, hd, cap, pos0);
        let what =
            format!("h{nh} kv{nkv} d{hd} pos{pos0} t{nt} cap{cap} softcap{softcap} window{window}");
        assert_close(
            &format!("kv_write K {what}"),
            &kct.read_f32(&k.dev).unwrap(),
            &kc,
            0.0,
            0.0,
        );
        assert_close(
            &format!("kv_write V {what}"),
            &vct.read_f32(&k.dev).unwrap(),
            &vc,
            0.0,
            0.0,
        );
        let shape = AttentionShape {
            n_tokens: nt,
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            capacity: cap,
            pos0,
            scale,
            softcap,
            window,
        };
        let want = r::attention(&q, &kc, &vc, &shape);
        k.run(
            &k.attention_tiled(
                AttentionIo {
                    q: &qt,
                    k_cache: &kct,
                    v_cache: &vct,
                    out: &out,
                    pos: &pos,
                },
                &ap,
            )
            .unwrap(),
        )
        .unwrap();
        assert_close(
            &format!("attention (tiled) {what}"),
            &out.read_f32(&k.dev).unwrap(),
            &want,
            2e-5,
            1e-4,
        );
        if hd % 4 == 0 {
            let out2 = zeros(k, "out2", &[nt, nh, hd]);
            k.run(
                &k.attention_lane(
                    AttentionIo {
                        q: &qt,
                        k_cache: &kct,
                        v_cache: &vct,
                        out: &out2,
                        pos: &pos,
                    },
                    &ap,
                )
                .unwrap(),
            )
            .unwrap();
            assert_close(
                &format!("attention_lane {what}"),
                &out2.read_f32(&k.dev).unwrap(),
                &want,
                2e-5,
                1e-4,
            );
        } else {
            assert!(
                k.attention_lane(
                    AttentionIo {
                        q: &qt,
                        k_cache: &kct,
                        v_cache: &vct,
                        out: &out,
                        pos: &pos
                    },
                    &ap
                )
                .is_err(),
                "head_dim % 4 != 0"
            );
        }
    }
}

/// A split-attention case: random q and K/V caches on the host and the adapter, and its
/// parameters (scale 1 / sqrt(head_dim)).
struct SplitCase {
    q: Vec<f32>,
    kc: Vec<f32>,
    vc: Vec<f32>,
    qt: Tensor,
    kct: Tensor,
    vct: Tensor,
    ap: AttentionParams,
}

impl SplitCase {
    /// (n_heads, n_kv, head_dim, capacity, n_tokens, softcap, window).
    fn new(
        k: &Kernels,
        rng: &mut StdRng,
        (nh, nkv, hd, cap, nt, softcap, window): (usize, usize, usize, usize, usize, f32, usize),
    ) -> SplitCase {
        let kc = rand_vec(rng, nkv * cap * hd, 1.0);
        let vc = rand_vec(rng, nkv * cap * hd, 1.0);
        let q = rand_vec(rng, nt * nh * hd, 2.0);
        SplitCase {
            qt: f32_tensor(k, "q", &[nt, nh, hd], &q),
            kct: f32_tensor(k, "kc", &[nkv, cap, hd], &kc),
            vct: f32_tensor(k, "vc", &[nkv, cap, hd], &vc),
            q,
            kc,
            vc,
            ap: AttentionParams {
                n_tokens: nt,
                n_heads: nh,
                n_kv: nkv,
                head_dim: hd,
                capacity: cap,
                scale: 1.0 / (hd as f32).sqrt(),
                softcap,
                window,
            },
        }
    }

    /// The reference output with the first token at position `pos0`.
    fn reference(&self, pos0: usize) -> Vec<f32> {
        let a = &self.ap;
        let shape = AttentionShape {
            n_tokens: a.n_tokens,
            n_heads: a.n_heads,
            n_kv: a.n_kv,
            head_dim: a.head_dim,
            capacity: a.capacity,
            pos0,
            scale: a.scale,
            softcap: a.softcap,
            window: a.window,
        };
        r::attention(&self.q, &self.kc, &self.vc, &shape)
    }
}

#[test]
fn attention_split_attention_split_sg_attention_split_heads_and_attention_split_merge_over_chunk_edges()
 {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(19);
    // (n_heads, n_kv, head_dim, capacity, chunk, contexts (positions seen by the last
    // token), n_tokens, softcap, window). One dispatch per case, built once for the
    // capacity and replayed at every context, longest first, so stale partials of longer
    // contexts sit in the scratch.
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        &'static [usize],
        usize,
        f32,
        usize,
    );
    let cases: &[Case] = &[
        (9, 3, 64, 512, 64, &[512, 200, 65, 64, 63, 1], 1, 0.0, 0),
        (8, 1, 128, 300, 64, &[300, 129, 128, 127, 4], 4, 0.0, 0),
        (
            2,
            2,
            256,
            260,
            128,
            &[260, 256, 129, 128, 127, 3],
            3,
            0.0,
            0,
        ),
        (5, 1, 80, 700, 128, &[700, 257, 2], 2, 30.0, 0),
        (4, 2, 20, 200, 64, &[200, 66, 1], 1, 0.0, 0),
        (6, 3, 6, 150, 64, &[150, 64, 3], 3, 0.0, 0),
        (4, 4, 64, 400, 64, &[400, 130, 65, 20], 2, 0.0, 70),
        (4, 2, 64, 400, 128, &[400, 129, 2], 4, 50.0, 64),
        (3, 1, 32, 64, 64, &[64, 63, 1], 1, 0.0, 0),
        (9, 3, 64, 1000, 96, &[1000, 193, 97, 96, 95], 8, 0.0, 0),
        (8, 2, 256, 600, 256, &[600, 513, 512, 257, 1], 1, 20.0, 300),
        // One chunk (prefill on CPU adapters): attention_split_sg writes the output itself.
        (9, 3, 64, 300, 300, &[300, 170, 41], 40, 0.0, 0),
        (5, 1, 80, 200, 256, &[200, 57, 33], 33, 30.0, 0),
        (4, 2, 64, 400, 400, &[400, 130, 20], 20, 50.0, 64),
        (6, 2, 32, 128, 128, &[128, 100, 9], 9, 0.0, 0),
    ];
    for &(nh, nkv, hd, cap, chunk, contexts, nt, softcap, window) in cases {
        let c = SplitCase::new(k, &mut rng, (nh, nkv, hd, cap, nt, softcap, window));
        let pos = ids_tensor(k, "pos", &[0]);
        let out = zeros(k, "out", &[nt, nh, hd]);
        let mut variants = vec![(
            "attention_split",
            k.attention_split(
                AttentionIo {
                    q: &c.qt,
                    k_cache: &c.kct,
                    v_cache: &c.vct,
                    out: &out,
                    pos: &pos,
                },
                &c.ap,
                chunk,
            )
            .unwrap(),
        )];
        let heads = k.attention_split_heads(
            AttentionIo {
                q: &c.qt,
                k_cache: &c.kct,
                v_cache: &c.vct,
                out: &out,
                pos: &pos,
            },
            &c.ap,
            chunk,
        );
        if hd % 4 == 0 && hd <= 256 {
            variants.push(("attention_split_heads", heads.unwrap()));
        } else {
            assert!(heads.is_err(), "attention_split_heads with hd % 4");
        }
        let sg = k.attention_split_sg(
            AttentionIo {
                q: &c.qt,
                k_cache: &c.kct,
                v_cache: &c.vct,
                out: &out,
                pos: &pos,
            },
            &c.ap,
            chunk,
        );
        if k.attention_split_sg_supported() && hd % 4 == 0 {
            variants.push(("attention_split_sg", sg.unwrap()));
        } else {
            assert!(
                sg.is_err(),
                "attention_split_sg without subgroups or hd % 4"
            );
        }
        for (name, d) in &variants {
            // attention_split_sg over one chunk has no merge.
            let one_chunk = *name == "attention_split_sg" && cap <= chunk;
            assert_eq!(d.len(), if one_chunk { 1 } else { 2 }, "{name} dispatches");
            for &ctx in contexts {
                let pos0 = ctx.saturating_sub(nt);
                k.dev
                    .queue
                    .write_buffer(pos.buffer(), 0, bytemuck::bytes_of(&(pos0 as u32)));
                k.run(d).unwrap();
                let want = c.reference(pos0);
                assert_close(
                    &format!(
                        "{name} h{nh} kv{nkv} d{hd} cap{cap} chunk{chunk} pos{pos0} t{nt} \
                         softcap{softcap} window{window}"
                    ),
                    &out.read_f32(&k.dev).unwrap(),
                    &want,
                    2e-5,
                    1e-4,
                );
            }
        }
    }
    // attention_split_heads with every number of query heads per workgroup (each divisor
    // of the heads per KV head up to 8) matches the reference. On CPU adapters it also
    // gives the bits of one head per workgroup; a GPU's compiler may contract a variant's
    // multiply-adds differently (on the H200 3 heads differed from 1 in the last bits).
    for &(nh, nkv, hd, cap, chunk, contexts, nt, softcap, window) in cases {
        if hd % 4 != 0 || nt > Kernels::SPLIT_MAX_TOKENS {
            continue;
        }
        let c = SplitCase::new(k, &mut rng, (nh, nkv, hd, cap, nt, softcap, window));
        let pos = ids_tensor(k, "pos", &[0]);
        let per_kv = nh / nkv;
        let auto = Kernels::attention_split_heads_group(&c.ap);
        assert!(
            per_kv % auto == 0 && auto <= 8 && (auto == per_kv || per_kv > 8),
            "h{nh} kv{nkv}: {auto} heads"
        );
        let one = zeros(k, "one", &[nt, nh, hd]);
        let d1 = k
            .attention_split_heads_grouped(
                AttentionIo {
                    q: &c.qt,
                    k_cache: &c.kct,
                    v_cache: &c.vct,
                    out: &one,
                    pos: &pos,
                },
                &c.ap,
                chunk,
                1,
            )
            .unwrap();
        for g in (2..=per_kv.min(8)).filter(|g| per_kv % g == 0) {
            let out = zeros(k, "out", &[nt, nh, hd]);
            let d = k
                .attention_split_heads_grouped(
                    AttentionIo {
                        q: &c.qt,
                        k_cache: &c.kct,
                        v_cache: &c.vct,
                        out: &out,
                        pos: &pos,
                    },
                    &c.ap,
                    chunk,
                    g,
                )
                .unwrap();
            for &ctx in contexts {
                let pos0 = ctx.saturating_sub(nt);
                k.dev
                    .queue
                    .write_buffer(pos.buffer(), 0, bytemuck::bytes_of(&(pos0 as u32)));
                k.run(&d1).unwrap();
                k.run(&d).unwrap();
                let (a, b) = (one.read_f32(&k.dev).unwrap(), out.read_f32(&k.dev).unwrap());
                let want = c.reference(pos0);
                let what = format!(
                    "attention_split_heads h{nh} kv{nkv} d{hd} pos{pos0} t{nt}: {g} heads per \
                     workgroup"
                );
                assert_close(&what, &b, &want, 2e-5, 1e-4);
                if k.tuning().cpu {
                    assert!(
                        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{what} differ from 1"
                    );
                }
            }
        }
        for g in [0, per_kv + 1, 9] {
            if g == 0 || per_kv % g != 0 || g > 8 {
                assert!(
                    k.attention_split_heads_grouped(
                        AttentionIo {
                            q: &c.qt,
                            k_cache: &c.kct,
                            v_cache: &c.vct,
                            out: &one,
                            pos: &pos
                        },
                        &c.ap,
                        chunk,
                        g
                    )
                    .is_err(),
                    "h{nh} kv{nkv}: {g} heads per workgroup accepted"
                );
            }
        }
    }
    // attention_split_sg with every number of query heads per workgroup (each divisor of
    // the heads per KV head up to 8) gives the bits of one head per workgroup.
    for &(nh, nkv, hd, cap, chunk, contexts, nt, softcap, window) in cases {
        if !k.attention_split_sg_supported() || hd % 4 != 0 {
            continue;
        }
        let c = SplitCase::new(k, &mut rng, (nh, nkv, hd, cap, nt, softcap, window));
        let pos = ids_tensor(k, "pos", &[0]);
        let per_kv = nh / nkv;
        let auto = Kernels::attention_split_sg_heads(&c.ap);
        assert!(
            per_kv % auto == 0 && auto <= 8,
            "h{nh} kv{nkv}: {auto} heads"
        );
        let one = zeros(k, "one", &[nt, nh, hd]);
        let d1 = k
            .attention_split_sg_grouped(
                AttentionIo {
                    q: &c.qt,
                    k_cache: &c.kct,
                    v_cache: &c.vct,
                    out: &one,
                    pos: &pos,
                },
                &c.ap,
                chunk,
                1,
                1,
            )
            .unwrap();
        for g in (2..=per_kv.min(8)).filter(|g| per_kv % g == 0) {
            let out = zeros(k, "out", &[nt, nh, hd]);
            let d = k
                .attention_split_sg_grouped(
                    AttentionIo {
                        q: &c.qt,
                        k_cache: &c.kct,
                        v_cache: &c.vct,
                        out: &out,
                        pos: &pos,
                    },
                    &c.ap,
                    chunk,
                    g,
                    1,
                )
                .unwrap();
            for &ctx in contexts {
                let pos0 = ctx.saturating_sub(nt);
                k.dev
                    .queue
                    .write_buffer(pos.buffer(), 0, bytemuck::bytes_of(&(pos0 as u32)));
                k.run(&d1).unwrap();
                k.run(&d).unwrap();
                let (a, b) = (one.read_f32(&k.dev).unwrap(), out.read_f32(&k.dev).unwrap());
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "attention_split_sg h{nh} kv{nkv} d{hd} pos{pos0} t{nt}: {g} heads per \
                     workgroup differ from 1"
                );
            }
        }
        // Over one chunk, 2..=8 tokens per workgroup give the same values as 1 (a position
        // a token does not see leaves its state as it was; the sign of a zero may differ).
        if cap <= chunk {
            for tokens in [2, 3, 4, 8] {
                for g in [1, auto] {
                    let out = zeros(k, "out", &[nt, nh, hd]);
                    let d = k
                        .attention_split_sg_grouped(
                            AttentionIo {
                                q: &c.qt,
                                k_cache: &c.kct,
                                v_cache: &c.vct,
                                out: &out,
                                pos: &pos,
                            },
                            &c.ap,
                            chunk,
                            g,
                            tokens,
                        )
                        .unwrap();
                    assert_eq!(d.len(), 1);
                    for &ctx in contexts {
                        let pos0 = ctx.saturating_sub(nt);
                        k.dev.queue.write_buffer(
                            pos.buffer(),
                            0,
                            bytemuck::bytes_of(&(pos0 as u32)),
                        );
                        k.run(&d1).unwrap();
                        k.run(&d).unwrap();
                        let (a, b) = (one.read_f32(&k.dev).unwrap(), out.read_f32(&k.dev).unwrap());
                        assert!(
                            a.iter().zip(&b).all(|(x, y)| x == y),
                            "attention_split_sg h{nh} kv{nkv} d{hd} pos{pos0} t{nt} window{window}: \
                             {tokens} tokens x {g} heads per workgroup differ from 1 x 1"
                        );
                    }
                }
            }
        } else {
            assert!(
                k.attention_split_sg_grouped(
                    AttentionIo {
                        q: &c.qt,
                        k_cache: &c.kct,
                        v_cache: &c.vct,
                        out: &one,
                        pos: &pos
                    },
                    &c.ap,
                    chunk,
                    1,
                    2
                )
                .is_err(),
                "2 tokens per workgroup over several chunks accepted"
            );
        }
        for tokens in [0, 9] {
            assert!(
                k.attention_split_sg_grouped(
                    AttentionIo {
                        q: &c.qt,
                        k_cache: &c.kct,
                        v_cache: &c.vct,
                        out: &one,
                        pos: &pos
                    },
                    &c.ap,
                    cap,
                    1,
                    tokens
                )
                .is_err(),
                "{tokens} tokens per workgroup accepted"
            );
        }
        // Counts that do not divide the heads per KV head, or past 8, are errors.
        for g in [0, per_kv + 1, 9] {
            if g == 0 || per_kv % g != 0 || g > 8 {
                assert!(
                    k.attention_split_sg_grouped(
                        AttentionIo {
                            q: &c.qt,
                            k_cache: &c.kct,
                            v_cache: &c.vct,
                            out: &one,
                            pos: &pos
                        },
                        &c.ap,
                        chunk,
                        g,
                        1
                    )
                    .is_err(),
                    "h{nh} kv{nkv}: {g} heads per workgroup accepted"
                );
            }
        }
    }
    // A chunk holds at least one position.
    let t = zeros(k, "t", &[4 * 64]);
    let pos = ids_tensor(k, "pos", &[0]);
    let ap = AttentionParams {
        n_tokens: 1,
        n_heads: 1,
        n_kv: 1,
        head_dim: 64,
        capacity: 4,
        scale: 1.0,
        softcap: 0.0,
        window: 0,
    };
    assert!(
        k.attention_split(
            AttentionIo {
                q: &t,
                k_cache: &t,
                v_cache: &t,
                out: &t,
                pos: &pos
            },
            &ap,
            0
        )
        .is_err()
    );
}

#[test]
fn argmax_ties_offsets_and_vocab_sizes() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(10);
    for n in [1usize, 7, 257, 49152, 151936] {
        let mut x = rand_vec(&mut rng, n + 5, 10.0);
        if n > 10 {
            // Two equal maxima: the first wins.
            x[5 + n / 3] = 50.0;
            x[5 + n / 2] = 50.0;
            x[5 + n / 4] = f32::NAN;
        }
        let xt = f32_tensor(k, "x", &[n + 5], &x);
        let out = ids_tensor(k, "out", &[7, 7, 7]);
        k.run(&k.argmax(&xt, 5, n, &out, 1).unwrap()).unwrap();
        let got: Vec<u32> = bytemuck::cast_slice(&out.read_bytes(&k.dev).unwrap()).to_vec();
        assert_eq!(got, vec![7, r::argmax(&x[5..]), 7], "argmax n={n}");
    }
}

#[test]
fn pipeline_cache_is_written_and_reused() {
    let Some(k) = kernels() else { return };
    let dir = std::env::temp_dir().join(format!("infer-pipeline-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let x: Vec<f32> = (0..100).map(|i| i as f32 / 10.0).collect();
    let want = r::softmax(&x, 100);
    let run_softmax = |kk: &Kernels| {
        let xt = Tensor::from_f32(&kk.dev, "x", &[100], &x).unwrap();
        let y = Tensor::zeros(&kk.dev, "y", &[100], DType::F32).unwrap();
        kk.run(&kk.softmax(&xt, &y, 1, 100).unwrap()).unwrap();
        assert_close(
            "softmax via cached pipeline",
            &y.read_f32(&kk.dev).unwrap(),
            &want,
            1e-7,
            1e-4,
        );
    };
    let first = Kernels::with_cache_dir(k.dev.clone(), Some(dir.clone()));
    run_softmax(&first);
    let path = first.pipeline_cache_path().map(|p| p.to_path_buf());
    drop(first);
    if k.dev.caps.pipeline_cache {
        let path = path.expect("a cache file for an adapter with PIPELINE_CACHE");
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "pipeline cache {} was not written", path.display());
        // A second start reads it back and builds working pipelines from it.
        let second = Kernels::with_cache_dir(k.dev.clone(), Some(dir.clone()));
        run_softmax(&second);
    } else {
        assert!(path.is_none());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn launchers_reject_bad_shapes_and_dtypes() {
    let Some(k) = kernels() else { return };
    let w = zeros(k, "w", &[4, 8]);
    let x = zeros(k, "x", &[7]);
    let y = zeros(k, "y", &[4]);
    assert!(k.matvec(&w, &x, 0, &y, 0).is_err(), "x shorter than k");
    let ids = ids_tensor(k, "ids", &[1]);
    assert!(k.matvec(&w, &ids, 0, &y, 0).is_err(), "u32 x");
    assert!(k.matvec(&ids, &x, 0, &y, 0).is_err(), "u32 weights");
    assert!(
        k.matvec(&w, &x, 0, &y, 0).is_err(),
        "weights not in the weight layout"
    );
    let bad = Tensor::upload_weights(&k.dev, "q", &[2, 33], DType::Q4_1, &[0u8; 40]);
    assert!(bad.is_err(), "Q4_1 rows must be whole blocks");
}

#[test]
fn topk_matches_reference_over_vocab_sizes_ties_and_nan() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(11);
    for (n, kk) in [
        (1usize, 1usize),
        (7, 3),
        (7, 10),
        (257, 40),
        (2049, 5),
        (49152, 40),
        (49152, 256),
        (151936, 50),
    ] {
        let mut x = rand_vec(&mut rng, n + 3, 10.0);
        if n > 10 {
            // Ties (the lower index first) and a NaN that must never be chosen.
            x[3 + n / 3] = 50.0;
            x[3 + n / 2] = 50.0;
            x[3 + n / 5] = f32::NAN;
            x[3 + n - 1] = 50.0;
        }
        let xt = f32_tensor(k, "x", &[n + 3], &x);
        let scratch = ids_tensor(k, "scratch", &vec![0; Kernels::topk_scratch_len(n, kk)]);
        let out = ids_tensor(k, "out", &vec![0; 2 * kk]);
        k.run(&k.topk(&xt, 3, n, kk, &scratch, &out).unwrap())
            .unwrap();
        let got: Vec<u32> = bytemuck::cast_slice(&out.read_bytes(&k.dev).unwrap()).to_vec();
        let want = r::topk(&x[3..], kk);
        for (r, pair) in got.chunks(2).enumerate() {
            match want.get(r) {
                Some(&(i, v)) => assert_eq!(
                    (pair[1], f32::from_bits(pair[0])),
                    (i, v),
                    "topk n={n} k={kk} rank {r}"
                ),
                None => assert_eq!(pair[1], u32::MAX, "topk n={n} k={kk} empty rank {r}"),
            }
        }
    }
    let x = f32_tensor(k, "x", &[8], &[0.0; 8]);
    let s = ids_tensor(k, "s", &[0; 4]);
    assert!(k.topk(&x, 0, 8, 0, &s, &s).is_err(), "k = 0");
    assert!(k.topk(&x, 0, 8, 4, &s, &s).is_err(), "scratch too small");
}

/// Runs `topk` over `x[off .. off + n]` and checks every rank against the reference, the
/// missing slots included; also through `topk_read`.
fn check_topk(k: &Kernels, what: &str, x: &[f32], off: usize, n: usize, kk: usize) {
    let xt = f32_tensor(k, "x", &[x.len()], x);
    let scratch = ids_tensor(k, "scratch", &vec![7; Kernels::topk_scratch_len(n, kk)]);
    let out = ids_tensor(k, "out", &vec![7; 2 * kk]);
    let d = k.topk(&xt, off, n, kk, &scratch, &out).unwrap();
    k.run(&d).unwrap();
    let got: Vec<u32> = bytemuck::cast_slice(&out.read_bytes(&k.dev).unwrap()).to_vec();
    let want = r::topk(&x[off..off + n], kk);
    for (r, pair) in got.chunks(2).enumerate() {
        let g = (pair[1], pair[0]);
        match want.get(r) {
            Some(&(i, v)) => assert_eq!(g, (i, v.to_bits()), "{what} n={n} k={kk} rank {r}"),
            None => assert_eq!(
                g,
                (u32::MAX, (-f32::MAX).to_bits()),
                "{what} n={n} k={kk} empty rank {r}"
            ),
        }
    }
    let read = k.topk_read(&d, &out, kk).unwrap();
    let want_bits: Vec<(u32, u32)> = want.iter().map(|&(i, v)| (i, v.to_bits())).collect();
    let read_bits: Vec<(u32, u32)> = read.iter().map(|&(i, v)| (i, v.to_bits())).collect();
    assert_eq!(read_bits, want_bits, "{what} n={n} k={kk} topk_read");
}

#[test]
fn topk_awkward_shapes_ties_infinities_and_nan() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(12);
    let ks = [1usize, 40, 64, 256];
    // n < k, n around the workgroup and per-invocation sizes, primes, the vocabulary.
    for n in [
        1usize, 3, 39, 63, 65, 255, 257, 1023, 1025, 4099, 65537, 49152,
    ] {
        for &kk in &ks {
            let off = n % 5;
            let x = rand_vec(&mut rng, n + off + 2, 10.0);
            check_topk(k, "random", &x, off, n, kk);
        }
    }
    for &kk in &ks {
        let n = 20011;
        // Few distinct values: ties everywhere (the lower index wins).
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(0..5) as f32).collect();
        check_topk(k, "ties", &x, 0, n, kk);
        // All equal, and ascending (every item beats the previous ones).
        check_topk(k, "equal", &vec![1.5; n], 0, n, kk);
        let up: Vec<f32> = (0..n).map(|i| i as f32 * 1e-3).collect();
        check_topk(k, "ascending", &up, 1, n - 1, kk);
        // +-inf, NaN (both signs), +-0 (total_cmp puts -0 below +0) and -f32::MAX.
        let mut x = rand_vec(&mut rng, n, 1.0);
        for (i, v) in [
            (5, f32::INFINITY),
            (6, f32::NAN),
            (7, -f32::NAN),
            (n / 2, f32::INFINITY),
            (n - 1, f32::NAN),
            (100, -0.0),
            (101, 0.0),
            (102, -f32::MAX),
        ] {
            x[i] = v;
        }
        for v in x.iter_mut().skip(200).take(3000) {
            *v = f32::NEG_INFINITY;
        }
        check_topk(k, "inf-nan", &x, 0, n, kk);
        // Mostly NaN and -inf: fewer than k real items.
        let mut x = vec![f32::NAN; n];
        for i in (0..n).step_by(997) {
            x[i] = if i % 2 == 0 { f32::NEG_INFINITY } else { -0.0 };
        }
        check_topk(k, "sparse", &x, 0, n, kk);
        check_topk(k, "all-nan", &vec![f32::NAN; 300], 0, 300, kk);
    }
}

#[test]
fn softcap_matches_reference_and_keeps_order() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(41);
    for (n, cap) in [
        (1, 30.0),
        (7, 5.0),
        (255, 8.0),
        (1000, 30.0),
        (70_001, 50.0),
    ] {
        let mut x = rand_vec(&mut rng, n, 3.0 * cap);
        x[0] = 1e30;
        let t = f32_tensor(k, "x", &[n], &x);
        k.run(&k.softcap(&t, n, cap).unwrap()).unwrap();
        let got = t.read_f32(&k.dev).unwrap();
        let want = r::softcap(&x, cap);
        assert_close(
            &format!("softcap n={n} cap={cap}"),
            &got,
            &want,
            1e-5 * cap,
            1e-5,
        );
        assert_eq!(r::argmax(&got), r::argmax(&want), "softcap n={n}: argmax");
    }
    let t = zeros(k, "x", &[4]);
    assert!(k.softcap(&t, 4, 0.0).is_err(), "cap 0");
    assert!(k.softcap(&t, 5, 1.0).is_err(), "too short");
}

#[test]
fn rope_rows_matches_reference_at_per_row_positions() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(21);
    for (heads, hd, rot, pos) in [
        (1usize, 2usize, 2usize, vec![0u32]),
        (5, 64, 64, vec![37, 0, 5, 5, 90]),
        (3, 96, 32, vec![7, 1, 3]),
        (2, 8, 8, (0..67).map(|i| (i * 13 % 97) as u32).collect()),
    ] {
        let n = pos.len();
        for mode in [RopeMode::RotateHalf, RopeMode::Interleaved] {
            let x = rand_vec(&mut rng, n * heads * hd, 2.0);
            let inv = r::rope_inv_freq(rot, 10000.0, RopeScaling::None);
            let max_pos = 100;
            let cs = r::rope_table(&inv, max_pos, 1.0);
            let cst = f32_tensor(k, "cs", &[max_pos, rot], &cs);
            let post = ids_tensor(k, "pos", &pos);
            let xt = f32_tensor(k, "x", &[n, heads, hd], &x);
            k.run(
                &k.rope_rows(&xt, RopeTable { cs: &cst, mode }, &post, n, heads, hd)
                    .unwrap(),
            )
            .unwrap();
            let mut want = x.clone();
            r::rope_rows(&mut want, &pos, heads, hd, &cs, rot / 2, mode);
            assert_close(
                &format!("rope_rows {mode:?} n{n} h{heads} d{hd} rot{rot}"),
                &xt.read_f32(&k.dev).unwrap(),
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn paged_kv_write_then_paged_attention_paged_attention_sg_and_paged_attention_heads_over_shuffled_blocks()
 {
    use infer_kernels::PagedParams;
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(22);
    // (n_heads, n_kv, head_dim, block_size, window, sequences' (start, new rows))
    for (nh, nkv, hd, bs, window, seqs) in [
        (
            1usize,
            1usize,
            4usize,
            1usize,
            0usize,
            vec![(0usize, 1usize)],
        ),
        (4, 2, 8, 16, 0, vec![(0, 20), (5, 1), (40, 1)]),
        (9, 3, 64, 16, 0, vec![(17, 1), (0, 33), (3, 2), (100, 1)]),
        (4, 4, 48, 7, 16, vec![(50, 3), (0, 1)]),
        (2, 1, 256, 16, 0, vec![(31, 1), (32, 1)]),
    ] {
        let n_seqs = seqs.len();
        let max_blocks = seqs.iter().map(|s| (s.0 + s.1).div_ceil(bs)).max().unwrap();
        let n_blocks = n_seqs * max_blocks + 3;
        // A shuffled assignment of physical blocks to every sequence's logical blocks.
        let mut ids: Vec<u32> = (0..n_blocks as u32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.random_range(0..=i));
        }
        let table: Vec<u32> = ids[..n_seqs * max_blocks].to_vec();
        let (mut pos, mut seq) = (vec![], vec![]);
        for (s, &(start, n)) in seqs.iter().enumerate() {
            for j in start..start + n {
                pos.push(j as u32);
                seq.push(s as u32);
            }
        }
        let rows = pos.len();
        let slots = n_blocks * bs;
        let kc0 = rand_vec(&mut rng, slots * nkv * hd, 1.0);
        let vc0 = rand_vec(&mut rng, slots * nkv * hd, 1.0);
        let knew = rand_vec(&mut rng, rows * nkv * hd, 1.0);
        let vnew = rand_vec(&mut rng, rows * nkv * hd, 1.0);
        let q = rand_vec(&mut rng, rows * nh * hd, 1.0);
        let kct = f32_tensor(k, "kc", &[slots, nkv, hd], &kc0);
        let vct = f32_tensor(k, "vc", &[slots, nkv, hd], &vc0);
        let kt = f32_tensor(k, "k", &[rows, nkv, hd], &knew);
        let vt = f32_tensor(k, "v", &[rows, nkv, hd], &vnew);
        let qt = f32_tensor(k, "q", &[rows, nh, hd], &q);
        let (post, seqt, tablet) = (
            ids_tensor(k, "pos", &pos),
            ids_tensor(k, "seq", &seq),
            ids_tensor(k, "table", &table),
        );
        let out = zeros(k, "out", &[rows, nh, hd]);
        let scale = 1.0 / (hd as f32).sqrt();
        let a = PagedParams {
            n_rows: rows,
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            block_size: bs,
            n_blocks,
            n_seqs,
            max_blocks,
            scale,
            softcap: 0.0,
            window,
        };
        k.run(
            &k.paged_kv_write(
                &kt,
                &vt,
                &PagedCache {
                    k_cache: &kct,
                    v_cache: &vct,
                    pos: &post,
                    seq: &seqt,
                    table: &tablet,
                },
                &a,
            )
            .unwrap(),
        )
        .unwrap();
        let shape = r::PagedShape {
            pos: &pos,
            seq: &seq,
            table: &table,
            max_blocks,
            block_size: bs,
            n_kv: nkv,
            head_dim: hd,
        };
        let (mut kc, mut vc) = (kc0.clone(), vc0.clone());
        r::paged_kv_write(&mut kc, &mut vc, &knew, &vnew, &shape);
        let what = format!("h{nh} kv{nkv} d{hd} bs{bs} window{window} seqs{seqs:?}");
        assert_close(
            &format!("paged_kv_write K {what}"),
            &kct.read_f32(&k.dev).unwrap(),
            &kc,
            0.0,
            0.0,
        );
        assert_close(
            &format!("paged_kv_write V {what}"),
            &vct.read_f32(&k.dev).unwrap(),
            &vc,
            0.0,
            0.0,
        );
        let want = r::paged_attention(&q, &kc, &vc, nh, scale, window, &shape);
        // The lane kernel, the default choice, the heads kernel with every number of query
        // heads per workgroup, and the subgroup kernel with every number of query heads and
        // rows per workgroup (where the adapter has subgroups of >= 8), each against the
        // reference and batch invariant. The subgroup kernel's values do not depend on its
        // heads and rows per workgroup; nor do the heads kernel's on CPU adapters (a GPU
        // compiler may contract each variant's multiply-adds its own way).
        let mut variants = vec![Paged::Lane, Paged::Default];
        for g in (1..=8).filter(|g| (nh / nkv) % g == 0) {
            variants.push(Paged::Heads(g));
            if k.attention_split_sg_supported() {
                for rows in [1, 3, 4, 8] {
                    variants.push(Paged::Sg(g, rows));
                }
            }
        }
        let (mut sg_bits, mut heads_bits): (Option<Vec<u32>>, Option<Vec<u32>>) = (None, None);
        for v in variants {
            let run = |qt: &Tensor, out: &Tensor, post: &Tensor, seqt: &Tensor, a: &PagedParams| {
                let d = match v {
                    Paged::Lane => k.paged_attention_lane(
                        qt,
                        out,
                        &PagedCache {
                            k_cache: &kct,
                            v_cache: &vct,
                            pos: post,
                            seq: seqt,
                            table: &tablet,
                        },
                        a,
                    ),
                    Paged::Default => k.paged_attention(
                        qt,
                        out,
                        &PagedCache {
                            k_cache: &kct,
                            v_cache: &vct,
                            pos: post,
                            seq: seqt,
                            table: &tablet,
                        },
                        a,
                    ),
                    Paged::Heads(g) => k.paged_attention_heads_grouped(
                        qt,
                        out,
                        &PagedCache {
                            k_cache: &kct,
                            v_cache: &vct,
                            pos: post,
                            seq: seqt,
                            table: &tablet,
                        },
                        a,
                        g,
                    ),
                    Paged::Sg(g, rows) => k.paged_attention_sg_grouped(
                        qt,
                        out,
                        &PagedCache {
                            k_cache: &kct,
                            v_cache: &vct,
                            pos: post,
                            seq: seqt,
                            table: &tablet,
                        },
                        a,
                        g,
                        rows,
                    ),
                };
                k.run(&d.unwrap()).unwrap();
            };
            let name = match v {
                Paged::Lane => "paged_attention (lane)".to_string(),
                Paged::Default => "paged_attention (default)".to_string(),
                Paged::Heads(g) => format!("paged_attention_heads {g} heads"),
                Paged::Sg(g, rows) => format!("paged_attention_sg {g} heads x {rows} rows"),
            };
            run(&qt, &out, &post, &seqt, &a);
            let got = out.read_f32(&k.dev).unwrap();
            assert_close(&format!("{name} {what}"), &got, &want, 2e-5, 1e-4);
            let b: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
            let first = match v {
                Paged::Sg(..) => Some(&mut sg_bits),
                Paged::Heads(_) if k.tuning().cpu => Some(&mut heads_bits),
                _ => None,
            };
            if let Some(first) = first {
                match first {
                    None => *first = Some(b),
                    Some(b1) => assert!(*b1 == b, "{name} {what}: differs from 1 head x 1 row"),
                }
            }
            // Batch invariance: each sequence's rows alone give bit-identical outputs.
            let mut row0 = 0;
            for (s, &(start, n)) in seqs.iter().enumerate() {
                let one = PagedParams { n_rows: n, ..a };
                let pos1: Vec<u32> = (start..start + n).map(|j| j as u32).collect();
                let out1 = zeros(k, "out1", &[n, nh, hd]);
                let (p1, s1) = (
                    ids_tensor(k, "pos1", &pos1),
                    ids_tensor(k, "seq1", &vec![s as u32; n]),
                );
                run(&qt_rows(k, &q, row0, n, nh * hd), &out1, &p1, &s1, &one);
                let alone = out1.read_f32(&k.dev).unwrap();
                assert!(
                    alone == got[row0 * nh * hd..(row0 + n) * nh * hd],
                    "{name} {what}: sequence {s} alone differs from batched"
                );
                row0 += n;
            }
        }
    }
    let bad = PagedParams {
        n_rows: 1,
        n_heads: 3,
        n_kv: 2,
        head_dim: 4,
        block_size: 4,
        n_blocks: 1,
        n_seqs: 1,
        max_blocks: 1,
        scale: 1.0,
        softcap: 0.0,
        window: 0,
    };
    let (t4, t) = (zeros(k, "t4", &[16]), ids_tensor(k, "t", &[0]));
    assert!(
        k.paged_attention(
            &t4,
            &t4,
            &PagedCache {
                k_cache: &t4,
                v_cache: &t4,
                pos: &t,
                seq: &t,
                table: &t
            },
            &bad
        )
        .is_err()
    );
    assert!(
        k.paged_attention_sg(
            &t4,
            &t4,
            &PagedCache {
                k_cache: &t4,
                v_cache: &t4,
                pos: &t,
                seq: &t,
                table: &t
            },
            &bad
        )
        .is_err()
    );
    assert!(
        k.paged_attention_heads(
            &t4,
            &t4,
            &PagedCache {
                k_cache: &t4,
                v_cache: &t4,
                pos: &t,
                seq: &t,
                table: &t
            },
            &bad
        )
        .is_err()
    );
    // Heads per workgroup that do not divide the heads per KV head are errors.
    let ok = PagedParams {
        n_heads: 4,
        n_kv: 2,
        ..bad
    };
    let q8 = zeros(k, "q8", &[32]);
    for (g, rows) in [(0, 1), (3, 1), (9, 1), (1, 0), (1, 9)] {
        assert!(
            k.paged_attention_sg_grouped(
                &q8,
                &q8,
                &PagedCache {
                    k_cache: &q8,
                    v_cache: &q8,
                    pos: &t,
                    seq: &t,
                    table: &t
                },
                &ok,
                g,
                rows
            )
            .is_err(),
            "{g} heads x {rows} rows per workgroup accepted"
        );
    }
    for g in [0, 3, 9] {
        assert!(
            k.paged_attention_heads_grouped(
                &q8,
                &q8,
                &PagedCache {
                    k_cache: &q8,
                    v_cache: &q8,
                    pos: &t,
                    seq: &t,
                    table: &t
                },
                &ok,
                g
            )
            .is_err(),
            "{g} heads per workgroup accepted"
        );
    }
    for g in [1, 2] {
        k.paged_attention_heads_grouped(
            &q8,
            &q8,
            &PagedCache {
                k_cache: &q8,
                v_cache: &q8,
                pos: &t,
                seq: &t,
                table: &t,
            },
            &ok,
            g,
        )
        .unwrap();
    }
    if k.attention_split_sg_supported() {
        for (g, rows) in [(1, 1), (2, 8)] {
            k.paged_attention_sg_grouped(
                &q8,
                &q8,
                &PagedCache {
                    k_cache: &q8,
                    v_cache: &q8,
                    pos: &t,
                    seq: &t,
                    table: &t,
                },
                &ok,
                g,
                rows,
            )
            .unwrap();
        }
    }
}

/// A paged attention launcher under test.
#[derive(Clone, Copy)]
enum Paged {
    Lane,
    Default,
    /// paged_attention_heads with this many heads per workgroup.
    Heads(usize),
    /// paged_attention_sg with (heads, rows) per workgroup.
    Sg(usize, usize),
}

fn qt_rows(k: &Kernels, q: &[f32], row0: usize, n: usize, width: usize) -> Tensor {
    f32_tensor(k, "q1", &[n, width], &q[row0 * width..(row0 + n) * width])
}

/// The positions `pos0..pos0 + n` as u32.
fn positions(pos0: usize, n: usize) -> Vec<u32> {
    (pos0..pos0 + n).map(|p| p as u32).collect()
}

/// The fused rope + kv_write gives the same bits as rope on q, rope on k and kv_write (q,
/// both caches; k is left as it was), and matches the CPU reference: both pairings, partial
/// rotary, n_kv < n_heads, head_dim not a multiple of 64, several tokens, positions past the
/// capacity (dropped) and past the table (clamped row).
#[test]
fn rope_kv_equals_rope_then_kv_write_and_the_reference() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(23);
    // (n_tokens, n_heads, n_kv, head_dim, rotary dims, pos0, capacity, table positions)
    for (nt, nh, nkv, hd, rot, pos0, cap, max_pos) in [
        (
            1usize, 1usize, 1usize, 2usize, 2usize, 0usize, 4usize, 4usize,
        ),
        (3, 9, 3, 64, 64, 37, 50, 60),
        (7, 4, 2, 96, 32, 5, 20, 20),
        (5, 6, 6, 80, 80, 0, 5, 8),
        (67, 4, 1, 48, 16, 2, 80, 80),
        (3, 8, 2, 128, 128, 48, 50, 50),
        (4, 2, 2, 8, 6, 10, 30, 12),
    ] {
        for mode in [RopeMode::RotateHalf, RopeMode::Interleaved] {
            let what = format!("{mode:?} t{nt} h{nh} kv{nkv} d{hd} rot{rot} pos{pos0} cap{cap}");
            let q = rand_vec(&mut rng, nt * nh * hd, 2.0);
            let kn = rand_vec(&mut rng, nt * nkv * hd, 2.0);
            let vn = rand_vec(&mut rng, nt * nkv * hd, 2.0);
            let kc0 = rand_vec(&mut rng, nkv * cap * hd, 1.0);
            let vc0 = rand_vec(&mut rng, nkv * cap * hd, 1.0);
            let inv = r::rope_inv_freq(rot, 10000.0, RopeScaling::None);
            let cs = r::rope_table(&inv, max_pos, 1.0);
            let cst = f32_tensor(k, "cs", &[max_pos, rot], &cs);
            let pos = ids_tensor(k, "pos", &[pos0 as u32]);
            let tensors = || {
                (
                    f32_tensor(k, "q", &[nt, nh, hd], &q),
                    f32_tensor(k, "k", &[nt, nkv, hd], &kn),
                    f32_tensor(k, "v", &[nt, nkv, hd], &vn),
                    f32_tensor(k, "kc", &[nkv, cap, hd], &kc0),
                    f32_tensor(k, "vc", &[nkv, cap, hd], &vc0),
                )
            };
            let (q1, k1, v1, kc1, vc1) = tensors();
            let g = k
                .rope_kv(
                    [&q1, &k1, &v1],
                    RopeTable { cs: &cst, mode },
                    &KvCache {
                        k_cache: &kc1,
                        v_cache: &vc1,
                        pos: &pos,
                        capacity: cap,
                    },
                    nt,
                    [nh, nkv],
                    hd,
                )
                .unwrap();
            assert_eq!(g.len(), 1, "{what}: one dispatch");
            k.run(&g).unwrap();
            let (q2, k2, v2, kc2, vc2) = tensors();
            let mut g = k
                .rope(&q2, RopeTable { cs: &cst, mode }, &pos, nt, nh, hd)
                .unwrap();
            g.extend(
                k.rope(&k2, RopeTable { cs: &cst, mode }, &pos, nt, nkv, hd)
                    .unwrap(),
            );
            g.extend(
                k.kv_write(
                    &k2,
                    &v2,
                    &KvCache {
                        k_cache: &kc2,
                        v_cache: &vc2,
                        pos: &pos,
                        capacity: cap,
                    },
                    nt,
                    nkv,
                    hd,
                )
                .unwrap(),
            );
            k.run(&g).unwrap();
            assert!(
                bits(k, &q1) == bits(k, &q2),
                "rope_kv q {what}: not bit-identical"
            );
            assert!(
                bits(k, &kc1) == bits(k, &kc2),
                "rope_kv K {what}: not bit-identical"
            );
            assert!(
                bits(k, &vc1) == bits(k, &vc2),
                "rope_kv V {what}: not bit-identical"
            );
            assert_eq!(
                k1.read_f32(&k.dev).unwrap(),
                kn,
                "rope_kv {what}: k was written"
            );
            if pos0 + nt > max_pos {
                continue; // clamped table rows: the reference has no such positions
            }
            // The reference: rope on q and k, then the rows within the capacity written.
            let p = positions(pos0, nt);
            let (mut wq, mut wk) = (q.clone(), kn.clone());
            r::rope_rows(&mut wq, &p, nh, hd, &cs, rot / 2, mode);
            r::rope_rows(&mut wk, &p, nkv, hd, &cs, rot / 2, mode);
            let (mut wkc, mut wvc) = (kc0.clone(), vc0.clone());
            let fit = nt.min(cap.saturating_sub(pos0));
            r::kv_write(&mut wkc, &mut wvc, &wk, &vn, fit, nkv, hd, cap, pos0);
            for (name, t, want) in [("q", &q1, &wq), ("K", &kc1, &wkc), ("V", &vc1, &wvc)] {
                let got = t.read_f32(&k.dev).unwrap();
                assert_close(&format!("rope_kv {name} {what}"), &got, want, 1e-5, 1e-5);
            }
        }
    }
    let t = zeros(k, "t", &[64]);
    let cs = zeros(k, "cs", &[4, 6]);
    let pos = ids_tensor(k, "pos", &[0]);
    let mode = RopeMode::RotateHalf;
    assert!(
        k.rope_kv(
            [&t, &t, &t],
            RopeTable { cs: &cs, mode },
            &KvCache {
                k_cache: &t,
                v_cache: &t,
                pos: &pos,
                capacity: 4
            },
            1,
            [1, 1],
            4
        )
        .is_err(),
        "a table wider than head_dim"
    );
    assert!(
        k.rope_kv(
            [&t, &t, &t],
            RopeTable { cs: &cs, mode },
            &KvCache {
                k_cache: &t,
                v_cache: &t,
                pos: &pos,
                capacity: 9
            },
            1,
            [1, 1],
            8
        )
        .is_err(),
        "caches too short"
    );
}

/// The fused rope_rows + paged_kv_write gives the same bits as rope_rows on q and k and
/// paged_kv_write, and matches the CPU reference, over shuffled blocks and rows of several
/// sequences at their own positions; a row's result does not depend on the other rows.
#[test]
fn paged_rope_kv_equals_rope_rows_then_paged_kv_write_and_the_reference() {
    use infer_kernels::PagedParams;
    let Some(k) = kernels() else { return };
    if !k.paged_rope_kv_fits() {
        eprintln!("SKIP paged_rope_kv: the adapter binds too few storage buffers");
        assert!(std::env::var("CI").is_err(), "CI=true: nothing is skipped");
        return;
    }
    let mut rng = StdRng::seed_from_u64(24);
    // (n_heads, n_kv, head_dim, rotary dims, block_size, sequences' (start, new rows))
    for (nh, nkv, hd, rot, bs, seqs) in [
        (
            1usize,
            1usize,
            2usize,
            2usize,
            1usize,
            vec![(0usize, 1usize)],
        ),
        (9, 3, 64, 64, 16, vec![(17, 1), (0, 33), (3, 2), (100, 1)]),
        (4, 2, 96, 32, 7, vec![(50, 3), (0, 1)]),
        (6, 6, 80, 80, 16, vec![(31, 1), (32, 1), (5, 4)]),
        (8, 1, 128, 128, 16, vec![(0, 20), (5, 1), (40, 1)]),
    ] {
        let n_seqs = seqs.len();
        let max_blocks = seqs.iter().map(|s| (s.0 + s.1).div_ceil(bs)).max().unwrap();
        let n_blocks = n_seqs * max_blocks + 3;
        let mut ids: Vec<u32> = (0..n_blocks as u32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.random_range(0..=i));
        }
        let table: Vec<u32> = ids[..n_seqs * max_blocks].to_vec();
        let (mut pos, mut seq) = (vec![], vec![]);
        for (s, &(start, n)) in seqs.iter().enumerate() {
            pos.extend(positions(start, n));
            seq.extend(std::iter::repeat_n(s as u32, n));
        }
        let rows = pos.len();
        let slots = n_blocks * bs;
        let max_pos = 160;
        let q = rand_vec(&mut rng, rows * nh * hd, 2.0);
        let kn = rand_vec(&mut rng, rows * nkv * hd, 2.0);
        let vn = rand_vec(&mut rng, rows * nkv * hd, 2.0);
        let kc0 = rand_vec(&mut rng, slots * nkv * hd, 1.0);
        let vc0 = rand_vec(&mut rng, slots * nkv * hd, 1.0);
        let inv = r::rope_inv_freq(rot, 10000.0, RopeScaling::None);
        let cs = r::rope_table(&inv, max_pos, 1.0);
        let cst = f32_tensor(k, "cs", &[max_pos, rot], &cs);
        let (post, seqt, tablet) = (
            ids_tensor(k, "pos", &pos),
            ids_tensor(k, "seq", &seq),
            ids_tensor(k, "table", &table),
        );
        let a = PagedParams {
            n_rows: rows,
            n_heads: nh,
            n_kv: nkv,
            head_dim: hd,
            block_size: bs,
            n_blocks,
            n_seqs,
            max_blocks,
            scale: 1.0,
            softcap: 0.0,
            window: 0,
        };
        for mode in [RopeMode::RotateHalf, RopeMode::Interleaved] {
            let what = format!("{mode:?} h{nh} kv{nkv} d{hd} rot{rot} bs{bs} seqs{seqs:?}");
            let tensors = || {
                (
                    f32_tensor(k, "q", &[rows, nh, hd], &q),
                    f32_tensor(k, "k", &[rows, nkv, hd], &kn),
                    f32_tensor(k, "v", &[rows, nkv, hd], &vn),
                    f32_tensor(k, "kc", &[slots, nkv, hd], &kc0),
                    f32_tensor(k, "vc", &[slots, nkv, hd], &vc0),
                )
            };
            let (q1, k1, v1, kc1, vc1) = tensors();
            let g = k
                .paged_rope_kv(
                    [&q1, &k1, &v1],
                    RopeTable { cs: &cst, mode },
                    &PagedCache {
                        k_cache: &kc1,
                        v_cache: &vc1,
                        pos: &post,
                        seq: &seqt,
                        table: &tablet,
                    },
                    &a,
                )
                .unwrap();
            assert_eq!(g.len(), 1, "{what}: one dispatch");
            k.run(&g).unwrap();
            let (q2, k2, v2, kc2, vc2) = tensors();
            let mut g = k
                .rope_rows(&q2, RopeTable { cs: &cst, mode }, &post, rows, nh, hd)
                .unwrap();
            g.extend(
                k.rope_rows(&k2, RopeTable { cs: &cst, mode }, &post, rows, nkv, hd)
                    .unwrap(),
            );
            g.extend(
                k.paged_kv_write(
                    &k2,
                    &v2,
                    &PagedCache {
                        k_cache: &kc2,
                        v_cache: &vc2,
                        pos: &post,
                        seq: &seqt,
                        table: &tablet,
                    },
                    &a,
                )
                .unwrap(),
            );
            k.run(&g).unwrap();
            let q_bits = bits(k, &q1);
            assert!(
                q_bits == bits(k, &q2),
                "paged_rope_kv q {what}: not bit-identical"
            );
            assert!(
                bits(k, &kc1) == bits(k, &kc2),
                "paged_rope_kv K {what}: not bit-identical"
            );
            assert!(
                bits(k, &vc1) == bits(k, &vc2),
                "paged_rope_kv V {what}: not bit-identical"
            );
            assert_eq!(
                k1.read_f32(&k.dev).unwrap(),
                kn,
                "paged_rope_kv {what}: k was written"
            );
            let (mut wq, mut wk) = (q.clone(), kn.clone());
            r::rope_rows(&mut wq, &pos, nh, hd, &cs, rot / 2, mode);
            r::rope_rows(&mut wk, &pos, nkv, hd, &cs, rot / 2, mode);
            let (mut wkc, mut wvc) = (kc0.clone(), vc0.clone());
            let shape = r::PagedShape {
                pos: &pos,
                seq: &seq,
                table: &table,
                max_blocks,
                block_size: bs,
                n_kv: nkv,
                head_dim: hd,
            };
            r::paged_kv_write(&mut wkc, &mut wvc, &wk, &vn, &shape);
            for (name, t, want) in [("q", &q1, &wq), ("K", &kc1, &wkc), ("V", &vc1, &wvc)] {
                let got = t.read_f32(&k.dev).unwrap();
                assert_close(
                    &format!("paged_rope_kv {name} {what}"),
                    &got,
                    want,
                    1e-5,
                    1e-5,
                );
            }
            // Batch invariance: the last sequence's rows alone rotate q to the same bits.
            let (start, n) = *seqs.last().unwrap();
            let one = PagedParams { n_rows: n, ..a };
            let row0 = rows - n;
            let q_one = qt_rows(k, &q, row0, n, nh * hd);
            let (k_one, v_one) = (
                qt_rows(k, &kn, row0, n, nkv * hd),
                qt_rows(k, &vn, row0, n, nkv * hd),
            );
            let (_, _, _, kc3, vc3) = tensors();
            let (p1, s1) = (
                ids_tensor(k, "pos1", &positions(start, n)),
                ids_tensor(k, "seq1", &vec![(n_seqs - 1) as u32; n]),
            );
            k.run(
                &k.paged_rope_kv(
                    [&q_one, &k_one, &v_one],
                    RopeTable { cs: &cst, mode },
                    &PagedCache {
                        k_cache: &kc3,
                        v_cache: &vc3,
                        pos: &p1,
                        seq: &s1,
                        table: &tablet,
                    },
                    &one,
                )
                .unwrap(),
            )
            .unwrap();
            assert!(
                bits(k, &q_one) == q_bits[row0 * nh * hd..],
                "paged_rope_kv {what}: the last sequence alone differs from batched"
            );
        }
    }
}

/// A weight stacking three projections' rows (a fused q/k/v projection) written to three
/// tensors by one launch ([`Out::Split`]) gives each tensor the bits that a launch over that
/// projection's own weight gives: matvec (single tokens and token tiles), the coalesced
/// matvec with and without a folded RMSNorm, the tiled matmul and `linear`, every dtype,
/// row counts that straddle the CPU layout's row groups and the parts of a split weight.
#[test]
fn split_output_equals_separate_projections_every_dtype() {
    let Some(k) = kernels() else { return };
    let mut rng = StdRng::seed_from_u64(73);
    for dtype in DType::ALL {
        let cols = qcols(dtype, if dtype.is_quantized() { 96 } else { 37 });
        for (rows, part_rows) in [
            ([20, 12, 12], None),
            ([9, 3, 5], Some(4)),
            ([64, 16, 16], Some(24)),
        ] {
            let n: usize = rows.iter().sum();
            let w = rand_vec(&mut rng, n * cols, 1.0);
            let bytes = r::quantize(dtype, &w);
            let row_bytes = dtype.bytes_for(cols).unwrap();
            let upload = |name: &str, r0: usize, r: usize, part: Option<usize>| {
                let b = &bytes[r0 * row_bytes..(r0 + r) * row_bytes];
                let max = part.map_or(k.dev.max_binding(), |p| (row_bytes * p) as u64);
                Tensor::upload_weights_with_max_part(&k.dev, name, &[r, cols], dtype, b, max)
                    .expect("upload weights")
            };
            let fused = upload("wqkv", 0, n, part_rows);
            assert!(part_rows.is_none() || fused.parts.len() > 1);
            let sep = [
                upload("wq", 0, rows[0], None),
                upload("wk", rows[0], rows[1], None),
                upload("wv", rows[0] + rows[1], rows[2], None),
            ];
            let g = rand_vec(&mut rng, cols, 1.0);
            let gt = f32_tensor(k, "g", &[cols], &g);
            let norm = Norm {
                weight: &gt,
                eps: 1e-5,
                offset: 0.0,
            };
            for m in [1usize, 3, 5] {
                let x = rand_vec(&mut rng, m * cols, 1.0);
                let xt = f32_tensor(k, "x", &[m, cols], &x);
                let outs = |tag: &str| rows.map(|r| zeros(k, tag, &[m, r]));
                type Launch<'a> = &'a dyn Fn(&Tensor, Out) -> Vec<infer_kernels::Dispatch>;
                let launches: [(&str, Launch); 4] = [
                    ("matvec_batched", &|w, o| {
                        k.matvec_batched(w, &xt, m, o).unwrap()
                    }),
                    ("linear", &|w, o| k.linear(&xt, m, w, o).unwrap()),
                    ("matmul", &|w, o| k.matmul(&xt, m, w, o).unwrap()),
                    ("matvec_coalesced_norm", &|w, o| {
                        k.matvec_coalesced_norm(w, &xt, m, o, norm).unwrap()
                    }),
                ];
                for (name, launch) in launches {
                    let (want, got) = (outs("want"), outs("got"));
                    let mut d = Vec::new();
                    for (w, y) in sep.iter().zip(&want) {
                        d.extend(launch(w, Out::One(y)));
                    }
                    let ys = [&got[0], &got[1], &got[2]];
                    d.extend(launch(&fused, Out::Split { ys, rows }));
                    k.run(&d).unwrap();
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        let what = format!(
                            "{name} {dtype} rows {rows:?} parts {part_rows:?} m={m}: output {i}"
                        );
                        let (ga, wb) = (bits(k, a), bits(k, b));
                        assert!(wb.iter().any(|&v| v != 0), "{what}: all zero");
                        assert_eq!(ga, wb, "{what}: split != separate");
                    }
                }
            }
        }
    }
    // Bad splits are errors, not garbage.
    let (w, _) = weights(k, &mut rng, DType::F32, 8, 4, None);
    let x = zeros(k, "x", &[1, 4]);
    let ys = [
        zeros(k, "a", &[4]),
        zeros(k, "b", &[2]),
        zeros(k, "c", &[2]),
    ];
    let split = |rows| Out::Split {
        ys: [&ys[0], &ys[1], &ys[2]],
        rows,
    };
    assert!(
        k.linear(&x, 1, &w, split([4, 2, 1])).is_err(),
        "rows must sum to n"
    );
    assert!(k.linear(&x, 1, &w, split([4, 2, 2])).is_ok());
    assert!(
        k.linear(&x, 2, &w, split([4, 2, 2])).is_err(),
        "outputs too small"
    );
    let same = Out::Split {
        ys: [&ys[0], &ys[1], &ys[1]],
        rows: [4, 2, 2],
    };
    assert!(
        k.linear(&x, 1, &w, same).is_err(),
        "outputs must be distinct"
    );
}

/// The choices follow `Kernels::tuning()`, not the adapter: with the GPU choices on any
/// adapter, decode attention runs attention_split_heads, prefill the tiled kernel, paged
/// attention the heads kernel, and matvec the coalesced layout (whatever `dev.tuning` is),
/// while a weight layout other than the device's is an error.
#[test]
fn attention_and_paged_attention_follow_the_tuning() {
    let Some(k) = kernels() else { return };
    let mut gpu = k.tuning().gpu_choices();
    assert!(
        Kernels::with_tuning(k.dev.clone(), gpu.clone()).is_err()
            || gpu.weight_group == k.tuning().weight_group
    );
    gpu.weight_group = k.tuning().weight_group;
    gpu.cpu = false;
    let g = Kernels::with_tuning(k.dev.clone(), gpu).expect("the device's weight layout");
    assert!(g.matvec_coalesced_default());
    let a = |n_tokens| AttentionParams {
        n_tokens,
        n_heads: 8,
        n_kv: 2,
        head_dim: 64,
        capacity: 512,
        scale: 0.125,
        softcap: 0.0,
        window: 0,
    };
    assert_eq!(
        g.attention_kernel(&a(1)),
        infer_kernels::AttentionKernel::SplitHeads
    );
    assert_eq!(
        g.attention_kernel(&a(16)),
        infer_kernels::AttentionKernel::Tiled
    );
    let (q, out) = (zeros(k, "q", &[8, 64]), zeros(k, "out", &[8, 64]));
    let cache = zeros(k, "cache", &[4 * 16 * 2 * 64]);
    let (pos, seq, table) = (
        ids_tensor(k, "pos", &[3]),
        ids_tensor(k, "seq", &[0]),
        ids_tensor(k, "table", &[0, 1, 2, 3]),
    );
    let p = infer_kernels::PagedParams {
        n_rows: 1,
        n_heads: 8,
        n_kv: 2,
        head_dim: 64,
        block_size: 16,
        n_blocks: 4,
        n_seqs: 1,
        max_blocks: 4,
        scale: 0.125,
        softcap: 0.0,
        window: 0,
    };
    let kv = PagedCache {
        k_cache: &cache,
        v_cache: &cache,
        pos: &pos,
        seq: &seq,
        table: &table,
    };
    let d = g.paged_attention(&q, &out, &kv, &p).unwrap();
    assert_eq!(d[0].kernel, infer_kernels::Kernel::PagedAttentionHeads);
    k.run(&d).unwrap();
}
