//! GGML's K-quant / I-quant / Q5 block formats: dequantization bit for bit against gguf-py on
//! random blocks, Q5_0/Q5_1 quantization byte for byte against gguf-py, all five reference
//! quantizers byte for byte against llama.cpp's C (fixtures from
//! scripts/fixtures/make_ggml_quant_fixtures.py), bad lengths and non-finite values as errors,
//! and the quantizers' round-trip error. No GPU.

use std::path::PathBuf;

use infer_tensor::reference::ggml_quants::{self, GgmlQuant, GgmlQuantError};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ggml_quants")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn lower(kind: GgmlQuant) -> String {
    kind.name().to_lowercase()
}

#[test]
fn dequantize_is_bit_exact_with_gguf_py() {
    for kind in GgmlQuant::ALL {
        let blocks = fixture(&format!("{}.blocks.bin", lower(kind)));
        let want = f32s(&fixture(&format!("{}.dequant.f32", lower(kind))));
        assert_eq!(blocks.len(), kind.bytes_for(want.len()).unwrap(), "{kind}");
        let got = ggml_quants::dequantize(kind, &blocks, want.len()).unwrap();
        let diffs: Vec<usize> = (0..want.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .collect();
        assert!(
            diffs.is_empty(),
            "{kind}: {} of {} elements differ, first at {}: {} (ours) vs {} (gguf-py)",
            diffs.len(),
            want.len(),
            diffs[0],
            got[diffs[0]],
            want[diffs[0]]
        );
    }
}

#[test]
fn q5_quantizers_are_byte_exact_with_gguf_py() {
    for kind in [GgmlQuant::Q5_0, GgmlQuant::Q5_1] {
        let x = f32s(&fixture(&format!("{}.input.f32", lower(kind))));
        let want = fixture(&format!("{}.quant.bin", lower(kind)));
        let got = ggml_quants::quantize(kind, &x).unwrap();
        assert_eq!(got.len(), want.len(), "{kind}");
        let first = (0..want.len()).find(|&i| got[i] != want[i]);
        assert_eq!(
            first,
            None,
            "{kind}: first differing byte (block {})",
            first.unwrap_or(0) / kind.block_bytes()
        );
    }
}

#[test]
fn quantizers_are_byte_exact_with_llama_cpp() {
    // llama.cpp's own quantize_row_*_ref, compiled by the fixture script (--ggml-src).
    for kind in QUANTIZABLE {
        let x = f32s(&fixture(&format!("{}.ref_input.f32", lower(kind))));
        let want = fixture(&format!("{}.ref_quant.bin", lower(kind)));
        let got = ggml_quants::quantize(kind, &x).unwrap();
        assert_eq!(got.len(), want.len(), "{kind}");
        let first = (0..want.len()).find(|&i| got[i] != want[i]);
        assert_eq!(
            first,
            None,
            "{kind}: first differing byte (block {}, byte {})",
            first.unwrap_or(0) / kind.block_bytes(),
            first.unwrap_or(0) % kind.block_bytes()
        );
    }
}

#[test]
fn type_ids_and_sizes_are_ggmls() {
    let table = [
        (6, "Q5_0", 32, 22),
        (7, "Q5_1", 32, 24),
        (10, "Q2_K", 256, 84),
        (11, "Q3_K", 256, 110),
        (12, "Q4_K", 256, 144),
        (13, "Q5_K", 256, 176),
        (14, "Q6_K", 256, 210),
        (20, "IQ4_NL", 32, 18),
        (23, "IQ4_XS", 256, 136),
    ];
    for (id, name, elems, bytes) in table {
        let kind = GgmlQuant::from_ggml_type(id).unwrap();
        assert_eq!(
            (
                kind.ggml_type(),
                kind.name(),
                kind.block_elems(),
                kind.block_bytes()
            ),
            (id, name, elems, bytes)
        );
        assert_eq!(kind.to_string(), name);
    }
    for id in [0, 1, 2, 3, 8, 9, 15, 16, 21, 22, 24, 39, u32::MAX] {
        assert_eq!(GgmlQuant::from_ggml_type(id), None, "id {id}");
    }
}

#[test]
fn bad_lengths_are_errors_naming_the_type() {
    for kind in GgmlQuant::ALL {
        let (be, bb) = (kind.block_elems(), kind.block_bytes());
        let bytes = vec![0u8; 3 * bb];
        // Not a whole number of blocks.
        for n in [1, be - 1, be + 1, 2 * be + 7] {
            let err = ggml_quants::dequantize(kind, &bytes, n).unwrap_err();
            assert!(
                matches!(err, GgmlQuantError::NotWholeBlocks { .. }),
                "{kind} n={n}: {err}"
            );
            assert!(err.to_string().contains(kind.name()), "{err}");
            let err = ggml_quants::quantize(kind, &vec![0.0; n]).unwrap_err();
            assert!(
                matches!(err, GgmlQuantError::NotWholeBlocks { .. }),
                "{err}"
            );
        }
        // Too few bytes, including none and one short of a block.
        for (n, got) in [
            (be, 0),
            (be, bb - 1),
            (4 * be, 3 * bb),
            (3 * be, 3 * bb - 1),
        ] {
            let err = ggml_quants::dequantize(kind, &bytes[..got], n).unwrap_err();
            assert_eq!(
                err,
                GgmlQuantError::TooShort {
                    kind,
                    n,
                    needed: n / be * bb,
                    block_bytes: bb,
                    got
                }
            );
            let msg = err.to_string();
            assert!(
                msg.contains(kind.name()) && msg.contains(&got.to_string()),
                "{msg}"
            );
        }
        // Zero elements and a longer buffer (a prefix is read) are fine.
        assert_eq!(
            ggml_quants::dequantize(kind, &[], 0).unwrap(),
            Vec::<f32>::new()
        );
        assert_eq!(
            ggml_quants::dequantize(kind, &bytes, 2 * be).unwrap().len(),
            2 * be
        );
        // Quantizing a type with no reference quantizer, or non-finite input, is an error.
        let x = vec![1.0f32; be];
        if kind.can_quantize() {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut y = x.clone();
                y[be / 2] = bad;
                let err = ggml_quants::quantize(kind, &y).unwrap_err();
                assert!(
                    matches!(err, GgmlQuantError::NonFinite { index, .. } if index == be / 2),
                    "{err}"
                );
            }
        } else {
            let err = ggml_quants::quantize(kind, &x).unwrap_err();
            assert_eq!(err, GgmlQuantError::NoQuantizer { kind });
        }
    }
}

/// Standard deviation of each 256-element super-block of [`normal`]'s data, in turn. The last
/// is small enough that the K-quants' sub-block scales fall among f16's subnormals.
const SCALES: [f64; 4] = [1.0, 0.02, 30.0, 1e-3];

/// Normal data, the deviation changing every 256 elements through [`SCALES`].
fn normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            // Box-Muller.
            let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (z * SCALES[i / 256 % 4]) as f32
        })
        .collect()
}

fn rel_rmse(x: &[f32], y: &[f32]) -> f64 {
    let err: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let sig: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (err / sig).sqrt()
}

const QUANTIZABLE: [GgmlQuant; 5] = [
    GgmlQuant::Q4K,
    GgmlQuant::Q5K,
    GgmlQuant::Q6K,
    GgmlQuant::Q5_0,
    GgmlQuant::Q5_1,
];

#[test]
fn quantizers_round_trip_within_their_error() {
    let mut rng = StdRng::seed_from_u64(19);
    let x = normal(&mut rng, 16 * 256);
    let mut errs = Vec::new();
    for kind in QUANTIZABLE {
        assert!(kind.can_quantize());
        let q = ggml_quants::quantize(kind, &x).unwrap();
        assert_eq!(q.len(), kind.bytes_for(x.len()).unwrap());
        let y = ggml_quants::dequantize(kind, &q, x.len()).unwrap();
        assert!(y.iter().all(|v| v.is_finite()), "{kind}");
        // Relative rms error per super-block, bounded per format (measured on this data:
        // Q4_K 0.07, Q5_K and Q5_1 0.037, Q5_0 0.043, Q6_K 0.018), twice that where the
        // scales are f16 subnormals (sd 1e-3).
        let bound = match kind {
            GgmlQuant::Q4K => 0.09,
            GgmlQuant::Q5K | GgmlQuant::Q5_1 => 0.05,
            GgmlQuant::Q5_0 => 0.055,
            GgmlQuant::Q6K => 0.025,
            _ => unreachable!(),
        };
        for (i, (a, b)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
            let (e, scale) = (rel_rmse(a, b), SCALES[i % 4]);
            let bound = if scale < 1e-2 { 2.0 * bound } else { bound };
            assert!(
                e < bound,
                "{kind}: super-block {i} (sd {scale}): rel rmse {e} >= {bound}"
            );
        }
        errs.push((kind, rel_rmse(&x, &y)));
        // Quantizing the dequantized values again does not drift further than one rounding.
        let q2 = ggml_quants::quantize(kind, &y).unwrap();
        let y2 = ggml_quants::dequantize(kind, &q2, x.len()).unwrap();
        let drift = rel_rmse(&y, &y2);
        assert!(drift < bound, "{kind}: re-quantizing drifted by {drift}");
    }
    // More bits, less error: Q6_K well below Q5_K, Q5_K well below Q4_K.
    let err = |k| errs.iter().find(|(e, _)| *e == k).unwrap().1;
    assert!(err(GgmlQuant::Q6K) < 0.6 * err(GgmlQuant::Q5K), "{errs:?}");
    assert!(err(GgmlQuant::Q5K) < 0.6 * err(GgmlQuant::Q4K), "{errs:?}");
}

#[test]
fn quantizers_handle_zero_and_constant_blocks() {
    for kind in QUANTIZABLE {
        let be = kind.block_elems();
        for c in [0.0f32, -0.0, 1.0, -2.5, 1e-20, 6e4] {
            let x = vec![c; 2 * be];
            let q = ggml_quants::quantize(kind, &x).unwrap();
            let y = ggml_quants::dequantize(kind, &q, x.len()).unwrap();
            assert!(y.iter().all(|v| v.is_finite()), "{kind} c={c}: {y:?}");
            let worst = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Zero stays zero; a constant comes back within a few f16 ulps (the f16 scale),
            // or as zero when below f16's range.
            let tol = if c.abs() < 1e-7 { 1e-7 } else { c.abs() * 4e-3 };
            assert!(worst <= tol, "{kind} c={c}: worst error {worst}, {y:?}");
        }
        // A block of zeros next to a block of data: the zeros stay exactly zero.
        let mut x = vec![0.0f32; 2 * be];
        for (i, v) in x[be..].iter_mut().enumerate() {
            *v = (i as f32 * 0.37).sin();
        }
        let y = ggml_quants::dequantize(kind, &ggml_quants::quantize(kind, &x).unwrap(), 2 * be)
            .unwrap();
        assert!(y[..be].iter().all(|v| *v == 0.0), "{kind}: {:?}", &y[..be]);
    }
}

#[test]
fn non_finite_scales_are_reported() {
    for kind in GgmlQuant::ALL {
        let mut bytes = vec![0u8; 2 * kind.block_bytes()];
        assert_eq!(ggml_quants::check_scales(kind, &bytes), Ok(()));
        let offset = *kind.scale_fields().last().unwrap();
        // f16 +inf in block 1's last scale field.
        bytes[kind.block_bytes() + offset + 1] = 0x7c;
        let err = ggml_quants::check_scales(kind, &bytes).unwrap_err();
        assert!(
            matches!(err, GgmlQuantError::NonFiniteScale { block: 1, offset: o, .. } if o == offset),
            "{err}"
        );
        assert!(err.to_string().contains(kind.name()), "{err}");
    }
    // A Q5_1 block whose minimum does not fit f16 is refused rather than stored as inf.
    let err = ggml_quants::quantize(GgmlQuant::Q5_1, &[-1e6; 32]).unwrap_err();
    assert!(
        matches!(err, GgmlQuantError::NonFiniteScale { block: 0, .. }),
        "{err}"
    );
    // Huge finite inputs never panic; whatever comes back has finite scales.
    for kind in QUANTIZABLE {
        let x: Vec<f32> = (0..kind.block_elems())
            .map(|i| f32::MAX / (1.0 + i as f32))
            .collect();
        if let Ok(q) = ggml_quants::quantize(kind, &x) {
            assert_eq!(ggml_quants::check_scales(kind, &q), Ok(()), "{kind}");
        }
    }
}

#[test]
fn dequantize_never_panics_on_random_bytes() {
    // Any bytes decode (scales may be inf / NaN); only the length is checked.
    let mut rng = StdRng::seed_from_u64(7);
    for kind in GgmlQuant::ALL {
        let bytes: Vec<u8> = (0..3 * kind.block_bytes()).map(|_| rng.random()).collect();
        let y = ggml_quants::dequantize(kind, &bytes, 3 * kind.block_elems()).unwrap();
        assert_eq!(y.len(), 3 * kind.block_elems());
    }
}
