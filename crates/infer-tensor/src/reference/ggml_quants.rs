//! GGUF's K-quant and I-quant block formats (and Q5_0/Q5_1): the CPU reference.
//!
//! Dequantization is bit-identical to the `gguf` Python package's
//! `gguf.quants.dequantize` (which llama.cpp's `dequantize_row_*` also computes): each block's
//! f16 scales are widened to f32 and every product and difference is one f32 operation in the
//! same order as there (`d * sc` first, then `(d * sc) * q - dmin * m`; never fused).
//! [`quantize`] is llama.cpp's reference rounding (`quantize_row_*_ref` in `ggml-quants.c`)
//! for Q4_K, Q5_K, Q6_K, Q5_0 and Q5_1; it lives in `ggml_quantize.rs`.
//!
//! Layouts, one block each (little-endian; `d`, `dmin` are f16):
//! - Q5_0 (32 elems, 22 B): `d`, `qh: u32` (bit j = high bit of element j), `qs[16]`
//!   (element j < 16 in the low nibble of `qs[j]`, element j + 16 in its high nibble);
//!   value `d * (q - 16)`.
//! - Q5_1 (32, 24 B): `d`, `m`, `qh`, `qs[16]` as Q5_0; value `d * q + m`.
//! - IQ4_NL (32, 18 B): `d`, `qs[16]` nibbles as Q4_0, each an index into [`IQ4_NL_VALUES`];
//!   value `d * kvalue`.
//! - Q2_K (256, 84 B): `scales[16]` (low nibble scale, high nibble min of each 16 elements),
//!   `qs[64]`, `d`, `dmin`. Element `128 h + 32 s + l` is bits `2s..2s+2` of `qs[32 h + l]`;
//!   value `(d * sc) * q - dmin * m`.
//! - Q3_K (256, 110 B): `hmask[32]`, `qs[64]`, `scales[12]` (16 six-bit scales, offset 32),
//!   `d`. Low two bits as Q2_K; element `32 b + l` has its high bit at bit b of `hmask[l]`,
//!   and a clear high bit subtracts 4; value `(d * sc) * q`.
//! - Q4_K (256, 144 B): `d`, `dmin`, `scales[12]` (8 six-bit scales and 8 six-bit mins,
//!   [`scale_min_k4`]), `qs[128]`. Element `64 c + 32 s + l` is nibble s of `qs[32 c + l]`;
//!   value `(d * sc) * q - dmin * m` per 32 elements.
//! - Q5_K (256, 176 B): `d`, `dmin`, `scales[12]`, `qh[32]`, `qs[128]`: Q4_K plus a fifth bit,
//!   bit b of `qh[l]` for element `32 b + l`.
//! - Q6_K (256, 210 B): `ql[128]`, `qh[64]`, `scales[16]: i8`, `d`. Element `128 h + 64 s + m`
//!   has its low nibble s of `ql[64 h + m]`; element `128 h + 32 s + l` its two high bits at
//!   bits `2s..2s+2` of `qh[32 h + l]`; value `(d * sc) * (q - 32)` per 16 elements.
//! - IQ4_XS (256, 136 B): `d`, `scales_h: u16`, `scales_l[4]`, `qs[128]`. Sub-block j's
//!   six-bit scale is nibble `j % 2` of `scales_l[j / 2]` plus bits `2j..2j+2` of `scales_h`
//!   as its top two bits, offset 32; element `32 j + 16 s + l` is nibble s of `qs[16 j + l]`,
//!   an index into [`IQ4_NL_VALUES`]; value `(d * sc) * kvalue`.

use std::fmt;

use half::f16;

use super::ggml_quantize;

/// The non-linear 4-bit code book of IQ4_NL and IQ4_XS (`kvalues_iq4nl` in ggml).
pub const IQ4_NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// A GGML block-quantized weight type this module can decode.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlQuant {
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q5_0,
    Q5_1,
    IQ4NL,
    IQ4XS,
}

/// Why a block-quantized buffer could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgmlQuantError {
    #[error("{kind}: {n} elements is not a whole number of {block}-element blocks")]
    NotWholeBlocks {
        kind: GgmlQuant,
        n: usize,
        block: usize,
    },
    #[error("{kind}: {n} elements need {needed} bytes ({block_bytes} per block), got {got}")]
    TooShort {
        kind: GgmlQuant,
        n: usize,
        needed: usize,
        block_bytes: usize,
        got: usize,
    },
    #[error("{kind}: no reference quantizer (decode only)")]
    NoQuantizer { kind: GgmlQuant },
    #[error("{kind}: input element {index} is not finite ({value})")]
    NonFinite {
        kind: GgmlQuant,
        index: usize,
        value: f32,
    },
    #[error("{kind}: block {block}'s f16 scale at byte {offset} is not finite ({value})")]
    NonFiniteScale {
        kind: GgmlQuant,
        block: usize,
        offset: usize,
        value: f32,
    },
}

impl GgmlQuant {
    /// Every type, in GGML type-id order.
    pub const ALL: [GgmlQuant; 9] = [
        GgmlQuant::Q5_0,
        GgmlQuant::Q5_1,
        GgmlQuant::Q2K,
        GgmlQuant::Q3K,
        GgmlQuant::Q4K,
        GgmlQuant::Q5K,
        GgmlQuant::Q6K,
        GgmlQuant::IQ4NL,
        GgmlQuant::IQ4XS,
    ];

    /// The type for a GGUF tensor-info type id (`ggml_type`), `None` for any other id.
    pub fn from_ggml_type(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.ggml_type() == id)
    }

    /// The GGUF / `ggml_type` id.
    pub fn ggml_type(self) -> u32 {
        match self {
            GgmlQuant::Q5_0 => 6,
            GgmlQuant::Q5_1 => 7,
            GgmlQuant::Q2K => 10,
            GgmlQuant::Q3K => 11,
            GgmlQuant::Q4K => 12,
            GgmlQuant::Q5K => 13,
            GgmlQuant::Q6K => 14,
            GgmlQuant::IQ4NL => 20,
            GgmlQuant::IQ4XS => 23,
        }
    }

    /// GGML's name for the type (`Q4_K`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlQuant::Q5_0 => "Q5_0",
            GgmlQuant::Q5_1 => "Q5_1",
            GgmlQuant::Q2K => "Q2_K",
            GgmlQuant::Q3K => "Q3_K",
            GgmlQuant::Q4K => "Q4_K",
            GgmlQuant::Q5K => "Q5_K",
            GgmlQuant::Q6K => "Q6_K",
            GgmlQuant::IQ4NL => "IQ4_NL",
            GgmlQuant::IQ4XS => "IQ4_XS",
        }
    }

    /// Elements per block: 32, or a 256-element super-block for the K-quants and IQ4_XS.
    pub fn block_elems(self) -> usize {
        match self {
            GgmlQuant::Q5_0 | GgmlQuant::Q5_1 | GgmlQuant::IQ4NL => 32,
            _ => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlQuant::Q5_0 => 22,
            GgmlQuant::Q5_1 => 24,
            GgmlQuant::IQ4NL => 18,
            GgmlQuant::Q2K => 84,
            GgmlQuant::Q3K => 110,
            GgmlQuant::Q4K => 144,
            GgmlQuant::Q5K => 176,
            GgmlQuant::Q6K => 210,
            GgmlQuant::IQ4XS => 136,
        }
    }

    /// Bytes holding `n` elements; an error when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Result<usize, GgmlQuantError> {
        if !n.is_multiple_of(self.block_elems()) {
            return Err(GgmlQuantError::NotWholeBlocks {
                kind: self,
                n,
                block: self.block_elems(),
            });
        }
        Ok(n / self.block_elems() * self.block_bytes())
    }

    /// Byte offsets within a block of its f16 scale fields (`d`, and `dmin` or `m`).
    pub fn scale_fields(self) -> &'static [usize] {
        match self {
            GgmlQuant::Q5_0 | GgmlQuant::IQ4NL | GgmlQuant::IQ4XS => &[0],
            GgmlQuant::Q5_1 | GgmlQuant::Q4K | GgmlQuant::Q5K => &[0, 2],
            GgmlQuant::Q2K => &[80, 82],
            GgmlQuant::Q3K => &[108],
            GgmlQuant::Q6K => &[208],
        }
    }

    /// Whether [`quantize`] has llama.cpp's reference quantizer for this type.
    pub fn can_quantize(self) -> bool {
        matches!(
            self,
            GgmlQuant::Q4K | GgmlQuant::Q5K | GgmlQuant::Q6K | GgmlQuant::Q5_0 | GgmlQuant::Q5_1
        )
    }
}

impl fmt::Display for GgmlQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub(super) const QK_K: usize = 256;

pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Sub-block j's six-bit scale and min from Q4_K / Q5_K's 12 packed bytes
/// (`get_scale_min_k4`): j < 4 in the low six bits of bytes j and j + 4; j >= 4 split between
/// the nibbles of byte j + 4 and the top two bits of bytes j - 4 and j.
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Decodes `n` elements of `kind` from the start of `bytes` (which may be longer).
/// Errors, never panics, when `n` is not a whole number of blocks or `bytes` is too short.
pub fn dequantize(kind: GgmlQuant, bytes: &[u8], n: usize) -> Result<Vec<f32>, GgmlQuantError> {
    let needed = kind.bytes_for(n)?;
    if bytes.len() < needed {
        return Err(GgmlQuantError::TooShort {
            kind,
            n,
            needed,
            block_bytes: kind.block_bytes(),
            got: bytes.len(),
        });
    }
    let mut out = vec![0f32; n];
    let blocks = bytes[..needed].chunks_exact(kind.block_bytes());
    for (blk, y) in blocks.zip(out.chunks_exact_mut(kind.block_elems())) {
        match kind {
            GgmlQuant::Q5_0 => dequant_q5_0(blk, y),
            GgmlQuant::Q5_1 => dequant_q5_1(blk, y),
            GgmlQuant::IQ4NL => dequant_iq4_nl(blk, y),
            GgmlQuant::Q2K => dequant_q2_k(blk, y),
            GgmlQuant::Q3K => dequant_q3_k(blk, y),
            GgmlQuant::Q4K => dequant_q4_k(blk, y),
            GgmlQuant::Q5K => dequant_q5_k(blk, y),
            GgmlQuant::Q6K => dequant_q6_k(blk, y),
            GgmlQuant::IQ4XS => dequant_iq4_xs(blk, y),
        }
    }
    Ok(out)
}

/// Checks that every whole block in `bytes` has finite f16 scales (a file's blocks can hold
/// any bits; [`dequantize`] decodes inf and NaN scales as gguf-py does).
pub fn check_scales(kind: GgmlQuant, bytes: &[u8]) -> Result<(), GgmlQuantError> {
    for (block, blk) in bytes.chunks_exact(kind.block_bytes()).enumerate() {
        for &offset in kind.scale_fields() {
            let value = f16_at(blk, offset);
            if !value.is_finite() {
                return Err(GgmlQuantError::NonFiniteScale {
                    kind,
                    block,
                    offset,
                    value,
                });
            }
        }
    }
    Ok(())
}

/// Encodes `x` in `kind`'s layout with llama.cpp's reference rounding. Errors when `kind` has
/// no reference quantizer here ([`GgmlQuant::can_quantize`]), `x.len()` is not a whole number
/// of blocks, an element is not finite, or a block's scale overflows f16 (as llama.cpp would
/// silently store inf: Q5_1's `m` is the block's minimum, so |x| > 65504 does it).
pub fn quantize(kind: GgmlQuant, x: &[f32]) -> Result<Vec<u8>, GgmlQuantError> {
    let bytes = kind.bytes_for(x.len())?;
    if !kind.can_quantize() {
        return Err(GgmlQuantError::NoQuantizer { kind });
    }
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(GgmlQuantError::NonFinite {
            kind,
            index,
            value: x[index],
        });
    }
    let mut out = vec![0u8; bytes];
    let blocks = out.chunks_exact_mut(kind.block_bytes());
    for (xb, y) in x.chunks_exact(kind.block_elems()).zip(blocks) {
        match kind {
            GgmlQuant::Q5_0 => ggml_quantize::q5_0(xb, y),
            GgmlQuant::Q5_1 => ggml_quantize::q5_1(xb, y),
            GgmlQuant::Q4K => ggml_quantize::q4_k(xb, y),
            GgmlQuant::Q5K => ggml_quantize::q5_k(xb, y),
            GgmlQuant::Q6K => ggml_quantize::q6_k(xb, y),
            _ => unreachable!("can_quantize checked above"),
        }
    }
    check_scales(kind, &out)?;
    Ok(out)
}

/// The 5-bit values of a Q5_0 / Q5_1 block whose `qh` starts at `h` and `qs` at `h + 4`.
fn q5_values(blk: &[u8], h: usize) -> [u8; 32] {
    let qh = u32::from_le_bytes([blk[h], blk[h + 1], blk[h + 2], blk[h + 3]]);
    let qs = &blk[h + 4..h + 20];
    std::array::from_fn(|j| {
        let lo = (qs[j % 16] >> (4 * (j / 16))) & 0xF;
        lo | ((((qh >> j) & 1) as u8) << 4)
    })
}

fn dequant_q5_0(blk: &[u8], y: &mut [f32]) {
    let d = f16_at(blk, 0);
    for (yj, q) in y.iter_mut().zip(q5_values(blk, 2)) {
        *yj = d * (q as i8 - 16) as f32;
    }
}

fn dequant_q5_1(blk: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
    for (yj, q) in y.iter_mut().zip(q5_values(blk, 4)) {
        *yj = d * q as f32 + m;
    }
}

fn dequant_iq4_nl(blk: &[u8], y: &mut [f32]) {
    let d = f16_at(blk, 0);
    let qs = &blk[2..18];
    for (j, yj) in y.iter_mut().enumerate() {
        let q = (qs[j % 16] >> (4 * (j / 16))) & 0xF;
        *yj = d * IQ4_NL_VALUES[q as usize] as f32;
    }
}

fn dequant_q2_k(blk: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&blk[0..16], &blk[16..80]);
    let (d, dmin) = (f16_at(blk, 80), f16_at(blk, 82));
    for (e, ye) in y.iter_mut().enumerate() {
        let (h, s, l) = (e / 128, e % 128 / 32, e % 32);
        let q = ((qs[32 * h + l] >> (2 * s)) & 3) as f32;
        let sc = scales[e / 16];
        let dl = d * (sc & 0xF) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *ye = dl * q - ml;
    }
}

/// Q3_K's sixteen 6-bit scales, each minus 32.
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    std::array::from_fn(|j| {
        let lo = (s[j % 8] >> (4 * (j / 8))) & 0xF;
        let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (lo | (hi << 4)) as i8 - 32
    })
}

fn dequant_q3_k(blk: &[u8], y: &mut [f32]) {
    let (hmask, qs) = (&blk[0..32], &blk[32..96]);
    let scales = q3_k_scales(&blk[96..108]);
    let d = f16_at(blk, 108);
    for (e, ye) in y.iter_mut().enumerate() {
        let (h, s, l) = (e / 128, e % 128 / 32, e % 32);
        let low = ((qs[32 * h + l] >> (2 * s)) & 3) as i8;
        let high_clear = ((hmask[l] >> (e / 32)) & 1) ^ 1;
        let q = (low - ((high_clear << 2) as i8)) as f32;
        let dl = d * scales[e / 16] as f32;
        *ye = dl * q;
    }
}

/// Q4_K and Q5_K: `d`, `dmin`, 12 scale bytes at 4, the nibbles at `qs`, and for Q5_K the
/// fifth bits at `qh`.
fn dequant_k4(blk: &[u8], qs: usize, qh: Option<usize>, y: &mut [f32]) {
    let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
    let scales = &blk[4..16];
    for (e, ye) in y.iter_mut().enumerate() {
        let (c, s, l) = (e / 64, e % 64 / 32, e % 32);
        let mut q = (blk[qs + 32 * c + l] >> (4 * s)) & 0xF;
        if let Some(qh) = qh {
            q |= ((blk[qh + l] >> (e / 32)) & 1) << 4;
        }
        let (sc, m) = scale_min_k4(e / 32, scales);
        let dl = d * sc as f32;
        let dm = dmin * m as f32;
        *ye = dl * q as f32 - dm;
    }
}

fn dequant_q4_k(blk: &[u8], y: &mut [f32]) {
    dequant_k4(blk, 16, None, y)
}

fn dequant_q5_k(blk: &[u8], y: &mut [f32]) {
    dequant_k4(blk, 48, Some(16), y)
}

fn dequant_q6_k(blk: &[u8], y: &mut [f32]) {
    let (ql, qh) = (&blk[0..128], &blk[128..192]);
    let scales = &blk[192..208];
    let d = f16_at(blk, 208);
    for (e, ye) in y.iter_mut().enumerate() {
        let h = e / 128;
        let low = (ql[64 * h + e % 64] >> (4 * (e % 128 / 64))) & 0xF;
        let high = (qh[32 * h + e % 32] >> (2 * (e % 128 / 32))) & 3;
        let q = (low | (high << 4)) as i8 - 32;
        let dl = d * (scales[e / 16] as i8) as f32;
        *ye = dl * q as f32;
    }
}

fn dequant_iq4_xs(blk: &[u8], y: &mut [f32]) {
    let d = f16_at(blk, 0);
    let scales_h = u16::from_le_bytes([blk[2], blk[3]]);
    let (scales_l, qs) = (&blk[4..8], &blk[8..136]);
    for (e, ye) in y.iter_mut().enumerate() {
        let (j, s, l) = (e / 32, e % 32 / 16, e % 16);
        let lo = (scales_l[j / 2] >> (4 * (j % 2))) & 0xF;
        let hi = ((scales_h >> (2 * j)) & 3) as u8;
        let sc = (lo | (hi << 4)) as i8 - 32;
        let q = (qs[16 * j + l] >> (4 * s)) & 0xF;
        let dl = d * sc as f32;
        *ye = dl * IQ4_NL_VALUES[q as usize] as f32;
    }
}
