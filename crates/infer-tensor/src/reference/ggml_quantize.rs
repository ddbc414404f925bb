//! llama.cpp's reference quantizers (`quantize_row_*_ref` in `ggml-quants.c`), one block at a
//! time, ported statement for statement: the same f32 operations in the same order (C's
//! `w*l*l` is `(w * l as f32) * l as f32`), `nearest_int`'s round-half-to-even trick, and the
//! same ties in the max searches, so the bytes match llama.cpp's. Inputs are finite (checked by
//! [`super::ggml_quants::quantize`]); `x` is one block and `y` its bytes.

use half::f16;

use super::ggml_quants::{QK_K, f16_at, scale_min_k4};

/// Smallest magnitude treated as non-zero (`GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Rounds to the nearest integer, ties to even, for |f| < 2^22 (`nearest_int`: adding
/// 1.5 * 2^23 leaves the integer in the mantissa's low bits).
fn nearest_int(f: f32) -> i32 {
    let i = (f + 12582912.0).to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

fn put_f16(y: &mut [u8], at: usize, v: f32) {
    y[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Q5_0: `d = max / -16` from the element of largest magnitude (first on ties),
/// `q = min(31, trunc(x / d + 16.5))`.
pub(super) fn q5_0(x: &[f32], y: &mut [u8]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d);
    let q = |v: f32| ((v * id + 16.5) as i8).min(31) as u8;
    pack_q5(x, q, &mut y[2..22]);
}

/// Q5_1: `d = (max - min) / 31`, `m = min`, `q = trunc((x - min) / d + 0.5)`.
pub(super) fn q5_1(x: &[f32], y: &mut [u8]) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d);
    put_f16(y, 2, min);
    let q = |v: f32| ((v - min) * id + 0.5) as u8;
    pack_q5(x, q, &mut y[4..24]);
}

/// Writes `qh` (4 bytes) then `qs` (16 bytes) of a Q5_0 / Q5_1 block.
fn pack_q5(x: &[f32], q: impl Fn(f32) -> u8, out: &mut [u8]) {
    let mut qh = 0u32;
    for j in 0..16 {
        let (xi0, xi1) = (q(x[j]), q(x[j + 16]));
        out[4 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) >> 4) as u32) << j;
        qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
    }
    out[0..4].copy_from_slice(&qh.to_le_bytes());
}

/// `make_qx_quants` with `qw = NULL`: a symmetric scale for `x` into `[-nmax, nmax)`,
/// levels (offset by `nmax`) in `l`; returns the scale. `rmse_type` 1 weighs by x^2 and
/// tries 18 nearby scales for the least weighted error.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], rmse_type: i32) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    if rmse_type == 0 {
        for (li, &v) in l_out.iter_mut().zip(x) {
            *li = (nmax + level(iscale, v)) as i8;
        }
        return 1.0 / iscale;
    }
    let (rmse_type, return_early) = (rmse_type.abs(), rmse_type < 0);
    let weight = |v: f32| match rmse_type {
        1 => v * v,
        2 => 1.0,
        3 => v.abs(),
        _ => v.abs().sqrt(),
    };
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (li, &v) in l_out.iter_mut().zip(x) {
        let l = level(iscale, v);
        *li = (l + nmax) as i8;
        let w = weight(v);
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let l = level(iscale, v);
            let w = weight(v);
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l_out.iter_mut().zip(x) {
                *li = (nmax + level(iscale, v)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_qkx2_quants`: an asymmetric scale and min for `x` into `[0, nmax]` minimising the
/// `weights`-weighted squared error (`use_mad = false`) over `nstep + 1` trial scales, levels
/// in `l`. Returns `(scale, -min)`, the min never positive.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Packs 8 six-bit scales and mins into Q4_K / Q5_K's 12 bytes, the inverse of
/// [`scale_min_k4`].
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut sc = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            sc[j] = ls[j];
            sc[j + 4] = lm[j];
        } else {
            sc[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            sc[j - 4] |= (ls[j] >> 4) << 6;
            sc[j] |= (lm[j] >> 4) << 6;
        }
    }
    sc
}

/// Q4_K and Q5_K's shared part: per 32 elements a `make_qkx2_quants` scale and min with
/// weights `rms + |x|`, both quantized to 6 bits against their maxima (`d = max_scale / 63`,
/// `dmin = max_min / 63`) and packed into bytes 4..16, then every element re-rounded against
/// its sub-block's decoded scale and min. Returns the levels, `0..=nmax`.
fn k4_levels(x: &[f32], y: &mut [u8], nmax: i32, rmin: f32, nstep: i32) -> [u8; QK_K] {
    let mut l = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
        );
        (scales[j], mins[j]) = (scale, min);
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        // C stores nearest_int's int in a uint8_t before MIN(63, ..).
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    y[4..16].copy_from_slice(&pack_scale_min_k4(&ls, &lm));
    put_f16(y, 0, max_scale / 63.0);
    put_f16(y, 2, max_min / 63.0);
    let (d_all, dmin_all) = (f16_at(y, 0), f16_at(y, 2));
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &y[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    l
}

/// `quantize_row_q4_K_ref`: levels 0..=15, 20 trial scales from `(15 - 1) / range` in steps of
/// 0.1; element `64 c + l` and `64 c + 32 + l` share byte `32 c + l` of `qs`.
pub(super) fn q4_k(x: &[f32], y: &mut [u8]) {
    y.fill(0);
    let l = k4_levels(x, y, 15, -1.0, 20);
    let qs = &mut y[16..144];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + i + 32] << 4);
        }
    }
}

/// `quantize_row_q5_K_ref`: levels 0..=31, 15 trial scales from `(31 - 0.5) / range`; the
/// low nibbles as Q4_K and the fifth bit of element `32 b + l` at bit b of `qh[l]`.
pub(super) fn q5_k(x: &[f32], y: &mut [u8]) {
    y.fill(0);
    let l = k4_levels(x, y, 31, -0.5, 15);
    let (qh, qs) = y[16..176].split_at_mut(32);
    let (mut m1, mut m2) = (1u8, 2u8);
    for c in 0..4 {
        for j in 0..32 {
            let mut l1 = l[64 * c + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[64 * c + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            qs[32 * c + j] = l1 | (l2 << 4);
        }
        m1 <<= 2;
        m2 <<= 2;
    }
}

/// `quantize_row_q6_K_ref`: per 16 elements a `make_qx_quants(16, 32, rmse_type 1)` scale,
/// the scales quantized to i8 against the largest in magnitude (`d = max_scale / -128`),
/// then every element re-rounded to `-32..32` against its decoded scale.
pub(super) fn q6_k(x: &[f32], y: &mut [u8]) {
    y.fill(0);
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let scale = make_qx_quants(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut l[16 * ib..16 * ib + 16],
            1,
        );
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        // All zero; C writes d = fp16(0.0) over the zeroed block.
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(y, 208, 1.0 / iscale);
    for ib in 0..16 {
        y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = f16_at(y, 208);
    for j in 0..16 {
        let d = d_all * (y[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let (ql, qh) = y[..192].split_at_mut(128);
    for h in 0..2 {
        let (j, ql, qh) = (128 * h, &mut ql[64 * h..], &mut qh[32 * h..]);
        for i in 0..32 {
            let lv = |k: usize| l[j + i + k] as u8;
            ql[i] = (lv(0) & 0xF) | ((lv(64) & 0xF) << 4);
            ql[i + 32] = (lv(32) & 0xF) | ((lv(96) & 0xF) << 4);
            qh[i] =
                (lv(0) >> 4) | ((lv(32) >> 4) << 2) | ((lv(64) >> 4) << 4) | ((lv(96) >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (0.49999997, 0),
            (3.7, 4),
            (-3.7, -4),
            (-0.0, 0),
            (4194303.0, 4194303),
            (-4194303.0, -4194303),
        ];
        for (f, want) in cases {
            assert_eq!(nearest_int(f), want, "{f}");
        }
    }

    #[test]
    fn k4_scale_packing_round_trips() {
        let ls: [u8; 8] = [0, 63, 17, 42, 1, 62, 31, 32];
        let lm: [u8; 8] = [63, 0, 5, 60, 33, 2, 48, 15];
        let sc = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &sc), (ls[j], lm[j]), "sub-block {j}");
        }
    }
}
