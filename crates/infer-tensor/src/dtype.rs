//! Element types of tensors, with GGUF's block layouts for the quantized ones.

use std::fmt;

/// The element type of a tensor.
///
/// f16 and bf16 are stored packed two to a `u32` on the GPU, so no shader feature is needed
/// to hold them. The block-quantized types keep GGUF's byte layout on the CPU: blocks of 32
/// elements, or 256-element super-blocks for the K-quants and IQ4_XS (decoded by
/// [`crate::reference::ggml_quants`] for all but Q8_0 / Q4_0 / Q4_1).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// 32 elements: f16 scale `d`, then 32 x i8. Value = d * q. 34 bytes.
    Q8_0,
    /// 32 elements: f16 scale `d`, then 16 bytes of nibbles. Value = d * (q - 8). 18 bytes.
    Q4_0,
    /// 32 elements: f16 scale `d`, f16 minimum `m`, then 16 bytes of nibbles.
    /// Value = d * q + m. 20 bytes.
    Q4_1,
    /// 32 elements: f16 scale `d`, `qh: u32` (bit j: the high bit of element j), then 16
    /// bytes of low nibbles as Q4_0. Value = d * (q - 16). 22 bytes.
    Q5_0,
    /// 32 elements: f16 `d`, f16 `m`, `qh`, then 16 bytes of nibbles as Q5_0.
    /// Value = d * q + m. 24 bytes.
    Q5_1,
    /// 256 elements: 16 bytes of 4-bit scales and mins per 16 elements, 64 bytes of 2-bit
    /// quants, f16 `d`, `dmin`. 84 bytes.
    Q2_K,
    /// 256 elements: high-bit mask, 2-bit quants, sixteen 6-bit scales, f16 `d`. 110 bytes.
    Q3_K,
    /// 256 elements: f16 `d`, `dmin`, eight 6-bit scales and mins (one per 32), nibbles.
    /// Value = (d sc) q - dmin m. 144 bytes.
    Q4_K,
    /// Q4_K plus a fifth bit per element. 176 bytes.
    Q5_K,
    /// 256 elements: 6-bit quants, an i8 scale per 16, f16 `d`. Value = (d sc) (q - 32).
    /// 210 bytes.
    Q6_K,
    /// 32 elements: f16 `d`, nibbles indexing a non-linear code book. 18 bytes.
    IQ4_NL,
    /// 256 elements: f16 `d`, a 6-bit scale per 32, nibbles as IQ4_NL. 136 bytes.
    IQ4_XS,
    /// Unsigned 32-bit integers (token ids, positions); never a weight type.
    U32,
}

impl DType {
    /// The weight dtypes (every type but `U32`).
    pub const ALL: [DType; 15] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_NL,
        DType::IQ4_XS,
    ];

    /// Elements per block (1 for the plain float types).
    pub fn block_elems(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::U32 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => 32,
            _ => self.ggml_quant().expect("a ggml_quants type").block_elems(),
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            _ => self.ggml_quant().expect("a ggml_quants type").block_bytes(),
        }
    }

    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes taken by `n` elements. `None` when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_elems()) {
            return None;
        }
        Some(n / self.block_elems() * self.block_bytes())
    }

    /// The GGML type id of this dtype (as stored in GGUF files).
    pub fn ggml_type(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q8_0 => 8,
            DType::BF16 => 30,
            DType::U32 => 26,
            _ => self.ggml_quant().expect("a ggml_quants type").ggml_type(),
        }
    }

    /// The reference decoder's type for the dtypes [`crate::reference::ggml_quants`] handles.
    pub fn ggml_quant(self) -> Option<crate::reference::ggml_quants::GgmlQuant> {
        use crate::reference::ggml_quants::GgmlQuant;
        match self {
            DType::Q5_0 => Some(GgmlQuant::Q5_0),
            DType::Q5_1 => Some(GgmlQuant::Q5_1),
            DType::Q2_K => Some(GgmlQuant::Q2K),
            DType::Q3_K => Some(GgmlQuant::Q3K),
            DType::Q4_K => Some(GgmlQuant::Q4K),
            DType::Q5_K => Some(GgmlQuant::Q5K),
            DType::Q6_K => Some(GgmlQuant::Q6K),
            DType::IQ4_NL => Some(GgmlQuant::IQ4NL),
            DType::IQ4_XS => Some(GgmlQuant::IQ4XS),
            _ => None,
        }
    }

    /// The dtype for a GGML type id, `None` for types this crate does not support.
    pub fn from_ggml_type(t: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.ggml_type() == t)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q2_K => "q2_k",
            DType::Q3_K => "q3_k",
            DType::Q4_K => "q4_k",
            DType::Q5_K => "q5_k",
            DType::Q6_K => "q6_k",
            DType::IQ4_NL => "iq4_nl",
            DType::IQ4_XS => "iq4_xs",
            DType::U32 => "u32",
        }
    }

    /// Parses a name as written by [`DType::name`] (case-insensitive).
    pub fn parse(s: &str) -> Option<DType> {
        let s = s.to_ascii_lowercase();
        DType::ALL.into_iter().find(|d| d.name() == s)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_ggml() {
        assert_eq!(DType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(DType::Q8_0.bytes_for(33), None);
        assert_eq!(DType::F16.bytes_for(3), Some(6));
        for d in DType::ALL {
            assert_eq!(DType::from_ggml_type(d.ggml_type()), Some(d));
            assert_eq!(DType::parse(d.name()), Some(d));
        }
        assert_eq!(DType::Q5_0.bytes_for(64), Some(44));
        assert_eq!(DType::from_ggml_type(7), Some(DType::Q5_1));
        assert_eq!(DType::from_ggml_type(12), Some(DType::Q4_K));
        assert_eq!(DType::Q6_K.bytes_for(512), Some(420));
        assert_eq!(DType::Q4_K.bytes_for(32), None);
        assert_eq!(DType::from_ggml_type(16), None);
    }
}
