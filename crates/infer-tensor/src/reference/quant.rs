//! Conversion between f32 and each dtype's byte layout (GGML's reference quantizers).

use half::{bf16, f16};

use super::ggml_quants;
use crate::dtype::DType;

/// Encodes `x` in `dtype`'s layout. Panics when `x.len()` is not a whole number of blocks
/// (callers check with [`DType::bytes_for`]), and for the types with llama.cpp's reference
/// quantizers in [`ggml_quants::quantize`] (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) when an element is
/// not finite or a scale overflows f16; use that function directly for an error instead.
/// Q2_K, Q3_K, IQ4_NL and IQ4_XS, which have no reference quantizer here, get
/// [`simple_kquant`]'s nearest-level encoding: valid blocks for tests, not llama.cpp's
/// rounding (files carry that).
pub fn quantize(dtype: DType, x: &[f32]) -> Vec<u8> {
    assert!(
        x.len().is_multiple_of(dtype.block_elems()),
        "quantize: {} elements is not a whole number of {dtype} blocks",
        x.len()
    );
    if let Some(kind) = dtype.ggml_quant() {
        if !kind.can_quantize() {
            return x
                .chunks(dtype.block_elems())
                .flat_map(|b| simple_kquant(dtype, b))
                .collect();
        }
        return ggml_quants::quantize(kind, x).unwrap_or_else(|e| panic!("quantize: {e}"));
    }
    let mut out = Vec::with_capacity(dtype.bytes_for(x.len()).unwrap_or(0));
    match dtype {
        DType::F32 => out.extend_from_slice(bytemuck::cast_slice(x)),
        DType::U32 => out.extend(x.iter().flat_map(|&v| (v as u32).to_le_bytes())),
        DType::F16 => x
            .iter()
            .for_each(|&v| out.extend_from_slice(&f16::from_f32(v).to_le_bytes())),
        DType::BF16 => x
            .iter()
            .for_each(|&v| out.extend_from_slice(&bf16::from_f32(v).to_le_bytes())),
        DType::Q8_0 => {
            for b in x.chunks(32) {
                let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend(b.iter().map(|v| ((v * id).round() as i8) as u8));
            }
        }
        DType::Q4_0 => {
            for b in x.chunks(32) {
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in b {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
            }
        }
        DType::Q4_1 => {
            for b in x.chunks(32) {
                let min = b.iter().copied().fold(f32::INFINITY, f32::min);
                let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5) as i8).clamp(0, 15) as u8;
                out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
            }
        }
        _ => unreachable!("delegated to ggml_quants above"),
    }
    out
}

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// The largest magnitude in `x`, with its sign.
fn signed_amax(x: &[f32]) -> f32 {
    x.iter()
        .copied()
        .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m })
}

/// One block of Q2_K, Q3_K, IQ4_NL or IQ4_XS from finite `x`: each group's scale from its
/// range, the block's f16 scale from the largest group scale, every element the nearest
/// level the stored scales can reach. A valid encoding for tests and round trips; llama.cpp
/// searches for better scales.
pub fn simple_kquant(dtype: DType, x: &[f32]) -> Vec<u8> {
    let mut y = vec![0u8; dtype.block_bytes()];
    let inv = |d: f32| if d != 0.0 { 1.0 / d } else { 0.0 };
    match dtype {
        DType::IQ4_NL | DType::IQ4_XS => {
            let values = ggml_quants::IQ4_NL_VALUES.map(|v| v as f32);
            let nearest = |v: f32| {
                (0..16)
                    .min_by(|&a, &b| (values[a] - v).abs().total_cmp(&(values[b] - v).abs()))
                    .unwrap() as u8
            };
            let put_nibbles = |xs: &[f32], dl: f32, out: &mut [u8]| {
                let id = inv(dl);
                for j in 0..16 {
                    out[j] = nearest(xs[j] * id) | (nearest(xs[j + 16] * id) << 4);
                }
            };
            if dtype == DType::IQ4_NL {
                let d = f16::from_f32(signed_amax(x) / -127.0).to_f32();
                y[..2].copy_from_slice(&f16_bytes(d));
                put_nibbles(x, d, &mut y[2..18]);
            } else {
                let dls: Vec<f32> = x.chunks(32).map(|b| signed_amax(b) / -127.0).collect();
                let d = f16::from_f32(dls.iter().fold(0f32, |m, v| m.max(v.abs())) / 31.0);
                let d = d.to_f32();
                y[..2].copy_from_slice(&f16_bytes(d));
                let mut scales_h = 0u16;
                for (j, b) in x.chunks(32).enumerate() {
                    let sc = (dls[j] * inv(d)).round().clamp(-32.0, 31.0) as i32;
                    let v = (sc + 32) as u8;
                    y[4 + j / 2] |= (v & 0xF) << (4 * (j % 2));
                    scales_h |= ((v >> 4) as u16) << (2 * j);
                    put_nibbles(b, d * sc as f32, &mut y[8 + 16 * j..24 + 16 * j]);
                }
                y[2..4].copy_from_slice(&scales_h.to_le_bytes());
            }
        }
        DType::Q3_K => {
            // 16 groups of 16: q in -4..=3, scales in -32..=31.
            let dls: Vec<f32> = x.chunks(16).map(|b| signed_amax(b) / -4.0).collect();
            let d = f16::from_f32(dls.iter().fold(0f32, |m, v| m.max(v.abs())) / 31.0).to_f32();
            y[108..110].copy_from_slice(&f16_bytes(d));
            for (j, b) in x.chunks(16).enumerate() {
                let sc = (dls[j] * inv(d)).round().clamp(-32.0, 31.0) as i32;
                let v = (sc + 32) as u8;
                y[96 + j % 8] |= (v & 0xF) << (4 * (j / 8));
                y[104 + j % 4] |= (v >> 4) << (2 * (j / 4));
                let id = inv(d * sc as f32);
                for (i, &xv) in b.iter().enumerate() {
                    let e = 16 * j + i;
                    let q = (xv * id).round().clamp(-4.0, 3.0) as i32;
                    let (low, high) = if q >= 0 { (q, 1) } else { (q + 4, 0) };
                    let (h, sh, l) = (e / 128, e % 128 / 32, e % 32);
                    y[32 + 32 * h + l] |= (low as u8) << (2 * sh);
                    y[l] |= (high as u8) << (e / 32);
                }
            }
        }
        DType::Q2_K => {
            // 16 groups of 16: value (d sc) q - dmin m, q in 0..=3, sc and m in 0..=15.
            let mins: Vec<f32> = x
                .chunks(16)
                .map(|b| b.iter().fold(0f32, |m, &v| m.min(v)))
                .collect();
            let ranges: Vec<f32> = x
                .chunks(16)
                .zip(&mins)
                .map(|(b, mn)| (b.iter().fold(f32::MIN, |m, &v| m.max(v)) - mn) / 3.0)
                .collect();
            let d = f16::from_f32(ranges.iter().fold(0f32, |m, &v| m.max(v)) / 15.0).to_f32();
            let dmin = f16::from_f32(mins.iter().fold(0f32, |m, &v| m.max(-v)) / 15.0).to_f32();
            y[80..82].copy_from_slice(&f16_bytes(d));
            y[82..84].copy_from_slice(&f16_bytes(dmin));
            for (j, b) in x.chunks(16).enumerate() {
                let sc = (ranges[j] * inv(d)).round().clamp(0.0, 15.0) as u8;
                let m = (-mins[j] * inv(dmin)).round().clamp(0.0, 15.0) as u8;
                y[j] = sc | (m << 4);
                let (a, off) = (d * sc as f32, dmin * m as f32);
                for (i, &xv) in b.iter().enumerate() {
                    let e = 16 * j + i;
                    let q = ((xv + off) * inv(a)).round().clamp(0.0, 3.0) as u8;
                    y[16 + 32 * (e / 128) + e % 32] |= q << (2 * (e % 128 / 32));
                }
            }
        }
        _ => unreachable!("simple_kquant: {dtype} has a reference quantizer"),
    }
    y
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes `n` elements of `dtype` from `bytes`. Panics when `bytes` is too short.
pub fn dequantize(dtype: DType, bytes: &[u8], n: usize) -> Vec<f32> {
    let need = dtype.bytes_for(n).expect("whole blocks");
    assert!(
        bytes.len() >= need,
        "dequantize: {} bytes < {need}",
        bytes.len()
    );
    if let Some(kind) = dtype.ggml_quant() {
        return ggml_quants::dequantize(kind, &bytes[..need], n)
            .unwrap_or_else(|e| panic!("dequantize: {e}"));
    }
    let bs = dtype.block_bytes();
    match dtype {
        DType::F32 => bytemuck::pod_collect_to_vec(&bytes[..need]),
        DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(&bytes[..need])
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        DType::F16 => (0..n).map(|i| f16_at(bytes, 2 * i)).collect(),
        DType::BF16 => (0..n)
            .map(|i| bf16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32())
            .collect(),
        DType::Q8_0 => (0..n)
            .map(|i| {
                let blk = &bytes[i / 32 * bs..];
                f16_at(blk, 0) * (blk[2 + i % 32] as i8) as f32
            })
            .collect(),
        DType::Q4_0 | DType::Q4_1 => (0..n)
            .map(|i| {
                let blk = &bytes[i / 32 * bs..];
                let j = i % 32;
                let qs = if dtype == DType::Q4_0 { 2 } else { 4 };
                let byte = blk[qs + j % 16];
                let q = if j < 16 { byte & 15 } else { byte >> 4 } as f32;
                if dtype == DType::Q4_0 {
                    f16_at(blk, 0) * (q - 8.0)
                } else {
                    f16_at(blk, 0) * q + f16_at(blk, 2)
                }
            })
            .collect(),
        _ => unreachable!("delegated to ggml_quants above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_each_format_error() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for (dt, tol) in [
            (DType::F32, 0.0),
            (DType::F16, 1e-2),
            (DType::BF16, 6e-2),
            (DType::Q8_0, 0.06),
            (DType::Q4_0, 0.95),
            (DType::Q4_1, 0.5),
            (DType::Q5_0, 0.5),
            (DType::Q5_1, 0.25),
            (DType::Q2_K, 2.6),
            (DType::Q3_K, 1.9),
            (DType::Q4_K, 0.5),
            (DType::Q5_K, 0.25),
            (DType::Q6_K, 0.12),
            (DType::IQ4_NL, 0.8),
            (DType::IQ4_XS, 0.9),
        ] {
            let y = dequantize(dt, &quantize(dt, &x), x.len());
            let worst = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= tol, "{dt}: worst error {worst} > {tol}");
        }
    }

    #[test]
    fn q4_1_matches_ggml_layout() {
        // Block 0..31 ascending: min 0, max 31 -> d = 31/15, first byte packs q[0] | q[16] << 4.
        let x: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let b = quantize(DType::Q4_1, &x);
        assert_eq!(b.len(), 20);
        assert_eq!(f16_at(&b, 2), 0.0);
        assert_eq!(b[4] & 15, 0);
        assert_eq!(b[4] >> 4, ((16.0f32 * 15.0 / 31.0) + 0.5) as u8);
    }
}
