//! Tensors on a real adapter: upload / download round trips, row splitting, the weight
//! layout, and the buffer pool. SKIP without an adapter; a failure under CI=true.

use infer_tensor::device::test_device;
use infer_tensor::tensor::{pack_weights, weight_units_per_row};
use infer_tensor::{DType, Layout, Tensor, reference};

#[test]
fn round_trips_split_parts_and_pool_reuse() {
    let Some(dev) = test_device() else { return };
    // f32 and u32 round trips, lengths not a multiple of 4 elements.
    let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
    let t = Tensor::from_f32(&dev, "x", &[37], &x).unwrap();
    assert_eq!(t.read_f32(&dev).unwrap(), x);
    let ids: Vec<u32> = vec![5, 0, 123456, 7];
    let u = Tensor::upload(&dev, "ids", &[4], DType::U32, bytemuck::cast_slice(&ids)).unwrap();
    assert_eq!(
        u.read_bytes(&dev).unwrap(),
        bytemuck::cast_slice::<u32, u8>(&ids)
    );
    // A plain tensor split into parts of 3 rows reads back whole and in order.
    let m: Vec<f32> = (0..10 * 6).map(|i| i as f32).collect();
    let s = Tensor::upload_with_max_part(
        &dev,
        "m",
        &[10, 6],
        DType::F32,
        bytemuck::cast_slice(&m),
        3 * 6 * 4,
    )
    .unwrap();
    assert_eq!(s.parts.len(), 4);
    assert_eq!(
        s.parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    assert_eq!(s.read_f32(&dev).unwrap(), m);
    // write() then read back.
    let y: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
    t.write(&dev, bytemuck::cast_slice(&y)).unwrap();
    assert_eq!(t.read_f32(&dev).unwrap(), y);
    // Readback staging buffers come back to the pool and are reused, not re-created.
    let before = dev.pool.idle();
    assert!(before >= 1, "a read returns its staging buffer to the pool");
    t.read_f32(&dev).unwrap();
    assert_eq!(
        dev.pool.idle(),
        before,
        "a same-sized read reuses a pooled buffer"
    );
    // Weight-layout tensors cannot be read back as plain bytes.
    let w = Tensor::upload_weights(
        &dev,
        "w",
        &[2, 6],
        DType::F32,
        bytemuck::cast_slice(&m[..12]),
    )
    .unwrap();
    assert_eq!(w.layout, Layout::Weights);
    assert!(w.read_bytes(&dev).is_err());
    // zeros() is zero.
    let z = Tensor::zeros(&dev, "z", &[5], DType::F32).unwrap();
    assert_eq!(z.read_f32(&dev).unwrap(), vec![0.0; 5]);
}

#[test]
fn weight_layout_puts_units_then_scales() {
    // Q4_1, 2 rows of 64: 4 blocks; quants in 16-byte units, then (d, m) pairs.
    let w: Vec<f32> = (0..128).map(|i| (i % 17) as f32 - 8.0).collect();
    let gguf = reference::quantize(DType::Q4_1, &w);
    let (packed, scale_off) = pack_weights(DType::Q4_1, 2, 64, 1, &gguf);
    assert_eq!(weight_units_per_row(DType::Q4_1, 64), 2);
    assert_eq!(scale_off, 4);
    for b in 0..4 {
        assert_eq!(
            &packed[b * 16..(b + 1) * 16],
            &gguf[b * 20 + 4..(b + 1) * 20],
            "quants of block {b}"
        );
        assert_eq!(
            &packed[64 + b * 4..64 + (b + 1) * 4],
            &gguf[b * 20..b * 20 + 4],
            "scales of block {b}"
        );
    }
    assert_eq!(packed.len() % 16, 0);
    // f32 rows of 5 are padded with zeros to whole units of 4.
    let x: Vec<f32> = (1..=10).map(|i| i as f32).collect();
    let (p, off) = pack_weights(DType::F32, 2, 5, 1, bytemuck::cast_slice(&x));
    let got: Vec<f32> = bytemuck::cast_slice(&p).to_vec();
    assert_eq!(off, 4);
    assert_eq!(&got[..8], &[1., 2., 3., 4., 5., 0., 0., 0.]);
    assert_eq!(&got[8..16], &[6., 7., 8., 9., 10., 0., 0., 0.]);
}

#[test]
fn weight_layout_q5_units_then_scales_and_high_bits() {
    // Q5_0 / Q5_1, 2 rows of 64: 4 blocks; low nibbles in 16-byte units, then 8 bytes per
    // block: the f16 (d, m) word (Q5_0: d and 0) and the qh word.
    let w: Vec<f32> = (0..128).map(|i| ((i * 7) % 31) as f32 - 15.0).collect();
    for (dt, bb, h) in [(DType::Q5_0, 22, 2), (DType::Q5_1, 24, 4)] {
        let gguf = reference::quantize(dt, &w);
        let (packed, scale_off) = pack_weights(dt, 2, 64, 1, &gguf);
        assert_eq!(scale_off, 4);
        assert_eq!(packed.len(), 64 + 32);
        for b in 0..4 {
            let blk = &gguf[b * bb..(b + 1) * bb];
            assert_eq!(
                &packed[b * 16..(b + 1) * 16],
                &blk[h + 4..],
                "{dt} quants {b}"
            );
            let s = &packed[64 + b * 8..64 + (b + 1) * 8];
            assert_eq!(&s[..2], &blk[..2], "{dt} d of block {b}");
            let m: &[u8] = if dt == DType::Q5_0 {
                &[0, 0]
            } else {
                &blk[2..4]
            };
            assert_eq!(&s[2..4], m, "{dt} m of block {b}");
            assert_eq!(&s[4..], &blk[h..h + 4], "{dt} qh of block {b}");
        }
    }
}

#[test]
fn weight_layout_interleaves_row_groups() {
    // Q4_1, 3 rows of 64 (2 blocks each) in groups of 2: the units (and scales) of rows 0
    // and 1 interleaved block by block, then row 2's beside a zero-padded row 3.
    let w: Vec<f32> = (0..192).map(|i| ((i * 7) % 23) as f32 - 11.0).collect();
    let gguf = reference::quantize(DType::Q4_1, &w);
    let (packed, scale_off) = pack_weights(DType::Q4_1, 3, 64, 2, &gguf);
    assert_eq!(scale_off, 8, "4 rows (one padded) x 2 units");
    let order = [
        (0, 0),
        (1, 0),
        (0, 1),
        (1, 1),
        (2, 0),
        (3, 0),
        (2, 1),
        (3, 1),
    ];
    for (u, &(r, b)) in order.iter().enumerate() {
        let (quants, scales) = (
            &packed[u * 16..(u + 1) * 16],
            &packed[128 + u * 4..128 + (u + 1) * 4],
        );
        if r == 3 {
            assert!(
                quants.iter().chain(scales).all(|&v| v == 0),
                "padding unit {u}"
            );
            continue;
        }
        let blk = (r * 2 + b) * 20;
        assert_eq!(
            quants,
            &gguf[blk + 4..blk + 20],
            "quants of row {r} block {b}"
        );
        assert_eq!(scales, &gguf[blk..blk + 4], "scales of row {r} block {b}");
    }
    // f32, 3 rows of 4 in groups of 8: one group, padded with 5 zero rows.
    let x: Vec<f32> = (1..=12).map(|i| i as f32).collect();
    let (p, off) = pack_weights(DType::F32, 3, 4, 8, bytemuck::cast_slice(&x));
    let got: Vec<f32> = bytemuck::cast_slice(&p).to_vec();
    assert_eq!(off, 8);
    assert_eq!(&got[..12], &x[..]);
    assert!(got[12..].iter().all(|&v| v == 0.0));
}

/// The K- and I-quants' packed units decoded the way their `weights_*.wgsl` snippets decode
/// them (nibbles in Q4_0's order, the scale-region words of `unit_pack`) give the reference
/// dequantization bit for bit, over random blocks of 3 rows in groups of 2.
#[test]
fn weight_layout_k_and_i_quants_decode_to_the_reference() {
    const BOOK: [i8; 16] = reference::ggml_quants::IQ4_NL_VALUES;
    let f = |w: u32| f32::from_bits(w);
    for dt in [
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_NL,
        DType::IQ4_XS,
    ] {
        let (rows, cols, group) = (3, 512, 2);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 97.0)
            .collect();
        let gguf = reference::quantize(dt, &x);
        let want = reference::dequantize(dt, &gguf, rows * cols);
        let (packed, soff) = pack_weights(dt, rows, cols, group, &gguf);
        let words: &[u32] = bytemuck::cast_slice(&packed);
        let nb = weight_units_per_row(dt, cols);
        let sb = match dt {
            DType::IQ4_NL | DType::IQ4_XS => 1,
            DType::Q4_K | DType::Q3_K => 2,
            _ => 4,
        };
        for r in 0..rows {
            for b in 0..nb {
                let u = (r / group) * group * nb + b * group + r % group;
                let q = &packed[16 * u..16 * u + 16];
                let s = &words[4 * soff + sb * u..4 * soff + sb * (u + 1)];
                for i in 0..32 {
                    let n = (q[i % 16] >> (4 * (i / 16))) & 0xF;
                    let (nf, half) = (n as f32, i / 16);
                    let got = match dt {
                        DType::Q4_K => f(s[0]) * nf + f(s[1]),
                        DType::Q5_K => f(s[0]) * (nf + 16.0 * ((s[2] >> i) & 1) as f32) + f(s[1]),
                        DType::Q6_K => {
                            let h = (s[2 + half] >> (2 * (i % 16))) & 3;
                            f(s[half]) * (nf + 16.0 * h as f32 - 32.0)
                        }
                        DType::Q3_K => f(s[half]) * (nf - 4.0),
                        DType::Q2_K => f(s[2 * half]) * nf + f(s[2 * half + 1]),
                        _ => f(s[0]) * BOOK[n as usize] as f32,
                    };
                    let e = r * cols + 32 * b + i;
                    assert_eq!(
                        got.to_bits(),
                        want[e].to_bits(),
                        "{dt} row {r} unit {b} elem {i}"
                    );
                }
            }
        }
    }
}
