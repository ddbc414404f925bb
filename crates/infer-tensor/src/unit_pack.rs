//! The GPU weight layout's 32-element units for the K-quants and I-quants.
//!
//! Every quantized unit the weight kernels read is 16 bytes of nibbles in one order (element
//! `i < 16` in the low nibble of byte `i`, element `i + 16` in its high nibble: Q4_0's) plus
//! a few words in the scale region. GGUF's 256-element super-blocks are cut into their eight
//! 32-element sub-blocks here: quants are re-ordered into that nibble order, and the scales
//! every element of a sub-block shares are computed once, as f32, with the same operation
//! the reference decoder performs (`d * sc`, `dmin * m`; [`crate::reference::ggml_quants`]),
//! so a kernel that multiplies them by the quant reproduces the reference's values.
//!
//! Scale-region words per unit (all little-endian `u32`s; f32s stored by their bits):
//! - Q4_K: `[d sc, -(dmin m)]`: value = a q + b (Q4_1's form).
//! - Q5_K: `[d sc, -(dmin m), qh, 0]`: `qh` bit i = element i's fifth bit.
//! - Q6_K: `[d sc0, d sc1, h0, h1]`: sc0 for elements 0..16, sc1 for 16..32; bits `2i..2i+2`
//!   of `h0` (`h1`) the top two bits of element i (16 + i); value = a (q - 32).
//! - Q3_K: `[d sc0, d sc1]`: the nibble holds `low2 | hbit << 2`; value = a (n - 4).
//! - Q2_K: `[d sc0, -(dmin m0), d sc1, -(dmin m1)]`: value = a n + b per 16 elements.
//! - IQ4_NL, IQ4_XS: `[d]` (IQ4_XS: `d * sc` of the sub-block): value = d kvalue(n).

use half::f16;

use crate::dtype::DType;
use crate::reference::ggml_quants::scale_min_k4;

/// Bytes of the scale region per unit for the types packed here.
pub(crate) fn scale_bytes(dtype: DType) -> usize {
    match dtype {
        DType::IQ4_NL | DType::IQ4_XS => 4,
        DType::Q4_K | DType::Q3_K => 8,
        DType::Q5_K | DType::Q6_K | DType::Q2_K => 16,
        _ => 0,
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn put_words(scale: &mut [u8], words: &[u32]) {
    for (dst, w) in scale.chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
}

/// Writes sub-block `sub` of the GGUF block `blk` of `dtype` as a unit: its 16 nibble bytes
/// into `dst`, its scale words into `scale` (`scale_bytes(dtype)` long).
pub(crate) fn pack_unit(dtype: DType, blk: &[u8], sub: usize, dst: &mut [u8], scale: &mut [u8]) {
    // q[i]: the unit's element i as the 4-bit code kept in the value region.
    let mut q = [0u8; 32];
    match dtype {
        DType::Q4_K | DType::Q5_K => {
            let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
            let (sc, m) = scale_min_k4(sub, &blk[4..16]);
            let qs = if dtype == DType::Q4_K { 16 } else { 48 };
            let mut qh = 0u32;
            for (i, qi) in q.iter_mut().enumerate() {
                *qi = (blk[qs + 32 * (sub / 2) + i] >> (4 * (sub % 2))) & 0xF;
                qh |= (((blk[16 + i] >> sub) & 1) as u32) << i;
            }
            let a = (d * sc as f32).to_bits();
            let b = (-(dmin * m as f32)).to_bits();
            if dtype == DType::Q4_K {
                put_words(scale, &[a, b]);
            } else {
                put_words(scale, &[a, b, qh, 0]);
            }
        }
        DType::Q6_K => {
            let (ql, qhs, scales) = (&blk[0..128], &blk[128..192], &blk[192..208]);
            let d = f16_at(blk, 208);
            let mut h = [0u32; 2];
            for (i, qi) in q.iter_mut().enumerate() {
                let e = 32 * sub + i;
                let hb = e / 128;
                *qi = (ql[64 * hb + e % 64] >> (4 * (e % 128 / 64))) & 0xF;
                let high = (qhs[32 * hb + e % 32] >> (2 * (e % 128 / 32))) & 3;
                h[i / 16] |= (high as u32) << (2 * (i % 16));
            }
            let a0 = d * (scales[2 * sub] as i8) as f32;
            let a1 = d * (scales[2 * sub + 1] as i8) as f32;
            put_words(scale, &[a0.to_bits(), a1.to_bits(), h[0], h[1]]);
        }
        DType::Q3_K => {
            let (hmask, qs) = (&blk[0..32], &blk[32..96]);
            let s = &blk[96..108];
            let d = f16_at(blk, 108);
            for (i, qi) in q.iter_mut().enumerate() {
                let e = 32 * sub + i;
                let (hb, sh) = (e / 128, e % 128 / 32);
                let low = (qs[32 * hb + i] >> (2 * sh)) & 3;
                let high = (hmask[i] >> sub) & 1;
                *qi = low | (high << 2);
            }
            let sc = |j: usize| {
                let lo = (s[j % 8] >> (4 * (j / 8))) & 0xF;
                let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
                (lo | (hi << 4)) as i8 - 32
            };
            let a0 = d * sc(2 * sub) as f32;
            let a1 = d * sc(2 * sub + 1) as f32;
            put_words(scale, &[a0.to_bits(), a1.to_bits()]);
        }
        DType::Q2_K => {
            let (scales, qs) = (&blk[0..16], &blk[16..80]);
            let (d, dmin) = (f16_at(blk, 80), f16_at(blk, 82));
            for (i, qi) in q.iter_mut().enumerate() {
                *qi = (qs[32 * (sub / 4) + i] >> (2 * (sub % 4))) & 3;
            }
            let ab = |j: usize| {
                let sc = scales[j];
                let a = d * (sc & 0xF) as f32;
                let b = -(dmin * (sc >> 4) as f32);
                [a.to_bits(), b.to_bits()]
            };
            let (h0, h1) = (ab(2 * sub), ab(2 * sub + 1));
            put_words(scale, &[h0[0], h0[1], h1[0], h1[1]]);
        }
        DType::IQ4_NL => {
            dst.copy_from_slice(&blk[2..18]);
            put_words(scale, &[f16_at(blk, 0).to_bits()]);
            return;
        }
        DType::IQ4_XS => {
            let d = f16_at(blk, 0);
            let scales_h = u16::from_le_bytes([blk[2], blk[3]]);
            let lo = (blk[4 + sub / 2] >> (4 * (sub % 2))) & 0xF;
            let hi = ((scales_h >> (2 * sub)) & 3) as u8;
            let sc = (lo | (hi << 4)) as i8 - 32;
            dst.copy_from_slice(&blk[8 + 16 * sub..8 + 16 * sub + 16]);
            put_words(scale, &[(d * sc as f32).to_bits()]);
            return;
        }
        _ => unreachable!("pack_unit: {dtype} is not packed here"),
    }
    for (i, b) in dst.iter_mut().enumerate() {
        *b = q[i] | (q[i + 16] << 4);
    }
}
