//! Conversion between f32 and each dtype's byte layout (GGML's reference quantizers).

use half::{bf16, f16};

use super::ggml_quants;
use crate::dtype::DType;

/// Encodes `x` in `dtype`'s layout. Panics when `x.len()` is not a whole number of blocks
/// (callers check with [`DType::bytes_for`]), and for Q5_0 / Q5_1 (llama.cpp's reference
/// quantizers in [`ggml_quants::quantize`]) when an element is not finite or a scale
/// overflows f16; use that function directly for an error instead.
pub fn quantize(dtype: DType, x: &[f32]) -> Vec<u8> {
    assert!(
        x.len().is_multiple_of(dtype.block_elems()),
        "quantize: {} elements is not a whole number of {dtype} blocks",
        x.len()
    );
    if let Some(kind) = dtype.ggml_quant() {
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
        DType::Q5_0 | DType::Q5_1 => unreachable!("delegated to ggml_quants above"),
    }
    out
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
        DType::Q5_0 | DType::Q5_1 => unreachable!("delegated to ggml_quants above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_each_format_error() {
        let x: Vec<f32> = (0..96)
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
