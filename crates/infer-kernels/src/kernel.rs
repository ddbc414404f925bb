//! The kernel registry: [`Kernel`], one variant per file of `shaders/`, owning its source,
//! the `shaders/common/` snippets it shares, its parameter block and its capabilities; and
//! [`Variant`], the constants a pipeline of a kernel is specialised with. Together with the
//! weight dtype they key the pipeline cache ([`PipelineKey`]) and give the WGSL that is
//! compiled ([`Kernel::source_for`]).

use std::fmt;

use infer_tensor::DType;

use crate::params::Params;
use crate::{KernelError, Result, attention, elementwise, linear, matvec, norm, paged, rope_kv};
use crate::{select, u32s};

macro_rules! kernels {
    ($($(#[$m:meta])* $v:ident = $name:literal, $params:ty, [$($common:literal),*];)*) => {
        /// A kernel: one WGSL file of `shaders/`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kernel {
            $($(#[$m])* $v),*
        }

        impl Kernel {
            /// Every kernel, in the order of the registry.
            pub const ALL: &'static [Kernel] = &[$(Kernel::$v),*];

            /// The file stem of its shader (`shaders/<name>.wgsl`), also its label.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kernel::$v => $name),*
                }
            }

            /// Its shader file as written (without the parameter block, constants and
            /// snippets [`Kernel::source_for`] adds).
            pub fn source(self) -> &'static str {
                match self {
                    $(Kernel::$v => include_str!(concat!("../shaders/", $name, ".wgsl"))),*
                }
            }

            /// The snippets of `shaders/common/` it shares with other kernels (declarations
            /// and functions), prepended in order.
            pub fn common(self) -> &'static [&'static str] {
                match self {
                    $(Kernel::$v => &[
                        $(include_str!(concat!("../shaders/common/", $common, ".wgsl"))),*
                    ]),*
                }
            }

            /// The WGSL `struct Params` of its uniform block, generated from the Rust
            /// params struct its launcher uploads ([`crate::params::params!`]).
            pub fn params_wgsl(self) -> &'static str {
                match self {
                    $(Kernel::$v => <$params as Params>::WGSL),*
                }
            }
        }
    };
}

kernels! {
    Matvec = "matvec", matvec::MatvecParams, ["matvec_io", "split_out"];
    MatvecGlu = "matvec_glu", matvec::MatvecParams, ["matvec_io", "glu"];
    MatvecCoalesced = "matvec_coalesced", matvec::MatvecParams,
        ["matvec_io", "coalesced", "split_out"];
    MatvecGluCoalesced = "matvec_glu_coalesced", matvec::MatvecParams,
        ["matvec_io", "coalesced", "glu"];
    Matmul = "matmul", linear::MatmulParams, ["split_out"];
    Embedding = "embedding", linear::EmbeddingParams, [];
    RmsNorm = "rms_norm", norm::NormParams, [];
    LayerNorm = "layer_norm", norm::NormParams, [];
    Softmax = "softmax", elementwise::LenParams, [];
    Swiglu = "swiglu", elementwise::LenParams, [];
    Gelu = "gelu", elementwise::GeluParams, [];
    Add = "add", elementwise::BinaryParams, [];
    Mul = "mul", elementwise::BinaryParams, [];
    Rope = "rope", rope_kv::RopeParams, [];
    KvWrite = "kv_write", rope_kv::KvWriteParams, [];
    RopeKv = "rope_kv", rope_kv::RopeKvParams, ["rope_kv"];
    PagedKvWrite = "paged_kv_write", rope_kv::PagedKvWriteParams, [];
    PagedRopeKv = "paged_rope_kv", rope_kv::PagedRopeKvParams, ["rope_kv"];
    Attention = "attention", attention::AttentionGpu, ["attention_tiles"];
    AttentionLane = "attention_lane", attention::AttentionGpu, [];
    AttentionSplit = "attention_split", attention::SplitGpu,
        ["attention_split_params", "attention_tiles"];
    AttentionSplitMerge = "attention_split_merge", attention::SplitGpu,
        ["attention_split_params"];
    AttentionSplitHeads = "attention_split_heads", attention::SplitGpu,
        ["attention_split_params", "attention_heads"];
    AttentionSplitSg = "attention_split_sg", attention::SplitGpu,
        ["attention_split_params", "attention_sg"];
    PagedAttention = "paged_attention", paged::PagedAttentionGpu, ["paged_attention_params"];
    PagedAttentionSg = "paged_attention_sg", paged::PagedAttentionGpu,
        ["paged_attention_params", "attention_sg"];
    PagedAttentionHeads = "paged_attention_heads", paged::PagedAttentionGpu,
        ["paged_attention_params", "attention_heads"];
    Argmax = "argmax", select::ArgmaxParams, [];
    Topk = "topk", select::TopkParams, [];
    Softcap = "softcap", select::SoftcapParams, [];
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Which constants a kernel's pipelines are specialised with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VariantKind {
    /// None: [`Variant::Plain`] only.
    Plain,
    /// [`Variant::Matvec`] with up to this many tokens per invocation.
    Matvec { max_tokens: u32 },
    /// [`Variant::Heads`].
    Heads,
    /// [`Variant::Sg`].
    Sg,
}

impl Kernel {
    /// It reads a weight tensor (`w`, any weight dtype): its pipelines are per dtype, with
    /// the dtype's `weights_<dtype>` snippet and the W_GROUP override of the weight layout.
    pub fn reads_weights(self) -> bool {
        use Kernel::*;
        matches!(
            self,
            Matvec | MatvecGlu | MatvecCoalesced | MatvecGluCoalesced | Matmul | Embedding
        )
    }

    /// It reads a second weight `wu` of the same layout (the glu kernels' up projection):
    /// the weight snippet's functions are added again as `*_up`, reading `wu`.
    pub fn has_second_weight(self) -> bool {
        matches!(self, Kernel::MatvecGlu | Kernel::MatvecGluCoalesced)
    }

    /// Its workgroup size is the override constant WG ([`infer_tensor::Tuning::matvec_wg`]).
    pub fn takes_wg(self) -> bool {
        matches!(self, Kernel::Matvec | Kernel::MatvecGlu)
    }

    /// Its x loads can be shared over a subgroup ([`Variant::Matvec`]'s `x_broadcast`:
    /// its XUNIT block swapped for `common/unit_xs_sg.wgsl`).
    pub fn takes_x_broadcast(self) -> bool {
        matches!(self, Kernel::Matvec | Kernel::MatvecGlu)
    }

    /// The constants its pipelines take.
    pub fn variant_kind(self) -> VariantKind {
        match self {
            Kernel::Matvec => VariantKind::Matvec { max_tokens: 8 },
            Kernel::MatvecGlu => VariantKind::Matvec { max_tokens: 1 },
            Kernel::AttentionSplitHeads | Kernel::PagedAttentionHeads => VariantKind::Heads,
            Kernel::AttentionSplitSg | Kernel::PagedAttentionSg => VariantKind::Sg,
            _ => VariantKind::Plain,
        }
    }

    /// Every variant it accepts for weights of `dtype` (what tests/shaders.rs validates).
    pub fn variants(self, dtype: Option<DType>) -> Vec<Variant> {
        let xb = dtype.is_some_and(x_broadcast_dtype) && self.takes_x_broadcast();
        match self.variant_kind() {
            VariantKind::Plain => vec![Variant::Plain],
            VariantKind::Matvec { max_tokens } => (1..=max_tokens)
                .flat_map(|tokens| {
                    let both: &[bool] = if xb { &[false, true] } else { &[false] };
                    both.iter().map(move |&x_broadcast| Variant::Matvec {
                        tokens,
                        x_broadcast,
                    })
                })
                .collect(),
            VariantKind::Heads => (1..=8)
                .flat_map(|h| (1..=64).map(move |d4| Variant::heads(h, 4 * d4)))
                .collect(),
            VariantKind::Sg => (1..=8)
                .flat_map(|h| {
                    (1..=8).flat_map(move |units| {
                        [false, true].into_iter().flat_map(move |full| {
                            (1..=8).map(move |rows| Variant::Sg {
                                heads: h,
                                units,
                                full,
                                rows,
                            })
                        })
                    })
                })
                .collect(),
        }
    }

    /// That `variant` is one of this kernel's for weights of `dtype`.
    pub fn check(self, dtype: Option<DType>, variant: Variant) -> Result<()> {
        let bad = |reason: String| {
            Err(KernelError::Variant {
                kernel: self,
                variant,
                reason,
            })
        };
        if self.reads_weights() != dtype.is_some() || dtype == Some(DType::U32) {
            return bad(format!("weight dtype {dtype:?}"));
        }
        let ok = match (self.variant_kind(), variant) {
            (VariantKind::Plain, Variant::Plain) => true,
            (
                VariantKind::Matvec { max_tokens },
                Variant::Matvec {
                    tokens,
                    x_broadcast,
                },
            ) => {
                (1..=max_tokens).contains(&tokens)
                    && (!x_broadcast || dtype.is_some_and(x_broadcast_dtype))
            }
            (VariantKind::Heads, Variant::Heads { heads, d4 }) => {
                (1..=8).contains(&heads) && (1..=64).contains(&d4)
            }
            (
                VariantKind::Sg,
                Variant::Sg {
                    heads, units, rows, ..
                },
            ) => [heads, units, rows].iter().all(|v| (1..=8).contains(v)),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            bad(format!(
                "not a variant of {self} ({:?})",
                self.variant_kind()
            ))
        }
    }

    /// The full WGSL of a pipeline: the parameter block, the variant's constants, for weight
    /// kernels the weight layout's index, the dtype's snippet (again for a second weight)
    /// and `common/nibbles.wgsl`, then the kernel's common snippets and its source.
    pub fn source_for(self, dtype: Option<DType>, variant: Variant) -> Result<String> {
        self.check(dtype, variant)?;
        let mut s = format!("{}{}", self.params_wgsl(), variant.constants());
        if let Some(d) = dtype {
            let snippet = weights_snippet(d).expect("checked: a weight dtype");
            s.push_str(WEIGHT_INDEX);
            s.push('\n');
            s.push_str(snippet);
            s.push('\n');
            if self.has_second_weight() {
                s.push_str(&second_weight(snippet));
            }
            s.push('\n');
            s.push_str(NIBBLES);
            s.push('\n');
        }
        s.push_str(&self.common().join("\n"));
        s.push('\n');
        s.push_str(self.source());
        if let Variant::Matvec {
            x_broadcast: true, ..
        } = variant
        {
            s = swap_block(&s, "XUNIT", X_UNIT_SG).expect("matvec_io.wgsl has an XUNIT block");
        }
        Ok(s)
    }
}

/// The constants a pipeline is specialised with, checked against its kernel when the
/// pipeline is built ([`Kernel::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The kernel as written.
    Plain,
    /// matvec (and matvec_glu, one token): `tokens` tokens per invocation (TOK), each weight
    /// unit decoded once for them; `x_broadcast`: each unit's x loaded once per subgroup and
    /// broadcast (block-quantized dtypes, subgroups of >= 8). Every variant gives the same
    /// bits.
    Matvec { tokens: u32, x_broadcast: bool },
    /// The grouped-heads attention kernels (common/attention_heads.wgsl): `heads` query
    /// heads per workgroup (G, 1..=8), head_dim / 4 (D4, 1..=64).
    Heads { heads: u32, d4: u32 },
    /// The subgroup attention kernels (common/attention_sg.wgsl): `heads` query heads (G),
    /// `units` vec4s of a head per invocation (E), whether head_dim fills them all (FULL),
    /// and `rows` tokens or rows (T) per workgroup; each 1..=8.
    Sg {
        heads: u32,
        units: u32,
        full: bool,
        rows: u32,
    },
}

impl Variant {
    /// [`Variant::Heads`] for `heads` query heads per workgroup at `head_dim` (a multiple of
    /// 4, 4..=256; others give a variant [`Kernel::check`] rejects).
    pub fn heads(heads: usize, head_dim: usize) -> Variant {
        let d4 = if head_dim.is_multiple_of(4) {
            head_dim / 4
        } else {
            0
        };
        Variant::Heads {
            heads: u32s(heads),
            d4: u32s(d4.min(65)),
        }
    }

    /// [`Variant::Sg`] for `heads` query heads and `rows` tokens or rows per workgroup at
    /// `head_dim` (<= 256).
    pub fn sg(heads: usize, head_dim: usize, rows: usize) -> Variant {
        Variant::Sg {
            heads: u32s(heads),
            units: u32s(head_dim.div_ceil(32).clamp(1, 9)),
            full: head_dim.is_multiple_of(32),
            rows: u32s(rows),
        }
    }

    /// Its WGSL `const` declarations (what the kernel's source leaves undeclared).
    pub fn constants(self) -> String {
        match self {
            Variant::Plain => String::new(),
            Variant::Matvec { tokens, .. } => format!("const TOK: u32 = {tokens}u;\n"),
            Variant::Heads { heads, d4 } => {
                format!("const G: u32 = {heads}u;\nconst D4: u32 = {d4}u;\n")
            }
            Variant::Sg {
                heads,
                units,
                full,
                rows,
            } => format!(
                "const G: u32 = {heads}u;\nconst E: u32 = {units}u;\n\
                 const FULL: bool = {full};\nconst T: u32 = {rows}u;\n"
            ),
        }
    }

    /// Its suffix of a pipeline's label (`matvec_q4_1_xsg_tok4`).
    pub fn label(self) -> String {
        match self {
            Variant::Plain => String::new(),
            Variant::Matvec {
                tokens,
                x_broadcast,
            } => {
                let xsg = if x_broadcast { "_xsg" } else { "" };
                let tok = if tokens > 1 {
                    format!("_tok{tokens}")
                } else {
                    String::new()
                };
                format!("{xsg}{tok}")
            }
            Variant::Heads { heads, d4 } => format!("_g{heads}_d{}", 4 * d4),
            Variant::Sg {
                heads,
                units,
                full,
                rows,
            } => format!(
                "_g{heads}_e{units}{}_t{rows}",
                if full { "_full" } else { "" }
            ),
        }
    }
}

/// A pipeline: kernel, weight dtype (weight kernels) and variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub kernel: Kernel,
    pub dtype: Option<DType>,
    pub variant: Variant,
}

impl PipelineKey {
    pub fn new(kernel: Kernel, dtype: Option<DType>, variant: Variant) -> Self {
        PipelineKey {
            kernel,
            dtype,
            variant,
        }
    }

    /// `matvec_q4_1_xsg_tok4`.
    pub fn label(&self) -> String {
        let dtype = self.dtype.map(|d| format!("_{d}")).unwrap_or_default();
        format!("{}{dtype}{}", self.kernel, self.variant.label())
    }
}

const NIBBLES: &str = include_str!("../shaders/common/nibbles.wgsl");
/// Prepended to every weight kernel: the weight layout's unit index (`w_index`, W_GROUP).
const WEIGHT_INDEX: &str = include_str!("../shaders/common/weight_index.wgsl");
/// matvec's and matvec_glu's x loads for adapters with subgroups.
const X_UNIT_SG: &str = include_str!("../shaders/common/unit_xs_sg.wgsl");

/// The snippet giving weight access for `dtype`.
pub fn weights_snippet(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => include_str!("../shaders/common/weights_f32.wgsl"),
        DType::F16 => include_str!("../shaders/common/weights_f16.wgsl"),
        DType::BF16 => include_str!("../shaders/common/weights_bf16.wgsl"),
        DType::Q8_0 => include_str!("../shaders/common/weights_q8_0.wgsl"),
        DType::Q4_0 => include_str!("../shaders/common/weights_q4_0.wgsl"),
        DType::Q4_1 => include_str!("../shaders/common/weights_q4_1.wgsl"),
        DType::Q5_0 => include_str!("../shaders/common/weights_q5_0.wgsl"),
        DType::Q5_1 => include_str!("../shaders/common/weights_q5_1.wgsl"),
        DType::Q2_K => include_str!("../shaders/common/weights_q2_k.wgsl"),
        DType::Q3_K => include_str!("../shaders/common/weights_q3_k.wgsl"),
        DType::Q4_K => include_str!("../shaders/common/weights_q4_k.wgsl"),
        DType::Q5_K => include_str!("../shaders/common/weights_q5_k.wgsl"),
        DType::Q6_K => include_str!("../shaders/common/weights_q6_k.wgsl"),
        DType::IQ4_NL | DType::IQ4_XS => include_str!("../shaders/common/weights_iq4.wgsl"),
        DType::U32 => return None,
    })
}

/// Whether the x broadcast ([`Variant::Matvec`]) applies to weights of `dtype`: the
/// block-quantized dtypes, whose units hold 32 elements (8 vec4s of x).
pub fn x_broadcast_dtype(dtype: DType) -> bool {
    dtype.is_quantized()
}

/// A weight snippet's functions for a second weight binding `wu`: every function renamed
/// with an `_up` suffix (and its calls), every read of `w[` made a read of `wu[`; the
/// constants and the `WRaw` struct are left to the first copy.
fn second_weight(snippet: &str) -> String {
    let mut out = String::new();
    let mut in_struct = false;
    for line in snippet.lines() {
        if line.starts_with("struct ") {
            in_struct = true;
        }
        if in_struct {
            in_struct = line != "}";
            continue;
        }
        if line.starts_with("const ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let names: Vec<&str> = snippet
        .lines()
        .filter_map(|l| l.strip_prefix("fn ")?.split('(').next())
        .collect();
    for n in names {
        out = replace_words(&out, &format!("{n}("), &format!("{n}_up("));
    }
    replace_words(&out, "w[", "wu[")
}

/// `s` with every occurrence of `from` that starts a word replaced by `to`.
fn replace_words(s: &str, from: &str, to: &str) -> String {
    let word_start = |i: usize| {
        i == 0 || {
            let c = s.as_bytes()[i - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        }
    };
    let mut r = String::with_capacity(s.len());
    let mut rest = 0;
    for (i, _) in s.match_indices(from) {
        if word_start(i) {
            r.push_str(&s[rest..i]);
            r.push_str(to);
            rest = i + from.len();
        }
    }
    r.push_str(&s[rest..]);
    r
}

/// `source` with the lines between its `// NAME begin` and `// NAME end` lines replaced by
/// `body` (`None` without the block).
fn swap_block(source: &str, name: &str, body: &str) -> Option<String> {
    let (begin, end) = (format!("// {name} begin\n"), format!("// {name} end\n"));
    let start = source.find(&begin)? + begin.len();
    let stop = start + source[start..].find(&end)?;
    Some(format!("{}{body}{}", &source[..start], &source[stop..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_checked() {
        let q = Some(DType::Q4_1);
        let mv = |tokens, x_broadcast| Variant::Matvec {
            tokens,
            x_broadcast,
        };
        assert!(Kernel::Matvec.check(q, mv(4, true)).is_ok());
        assert!(Kernel::Matvec.check(Some(DType::F32), mv(4, true)).is_err());
        assert!(Kernel::Matvec.check(q, mv(9, false)).is_err());
        assert!(Kernel::MatvecGlu.check(q, mv(2, false)).is_err());
        assert!(Kernel::Matvec.check(None, mv(1, false)).is_err());
        assert!(Kernel::Matvec.check(q, Variant::Plain).is_err());
        assert!(Kernel::Rope.check(q, Variant::Plain).is_err());
        assert!(Kernel::Rope.check(None, Variant::heads(1, 64)).is_err());
        assert!(
            Kernel::AttentionSplitHeads
                .check(None, Variant::heads(3, 64))
                .is_ok()
        );
        for bad in [
            Variant::heads(9, 64),
            Variant::heads(1, 66),
            Variant::heads(1, 260),
        ] {
            assert!(Kernel::AttentionSplitHeads.check(None, bad).is_err());
        }
        assert!(
            Kernel::PagedAttentionSg
                .check(None, Variant::sg(3, 64, 4))
                .is_ok()
        );
        assert!(
            Kernel::PagedAttentionSg
                .check(None, Variant::sg(3, 288, 4))
                .is_err()
        );
        for k in Kernel::ALL {
            let d = k.reads_weights().then_some(DType::Q8_0);
            for v in k.variants(d) {
                assert!(k.check(d, v).is_ok(), "{k} {v:?}");
            }
        }
    }

    #[test]
    fn labels_name_kernel_dtype_and_variant() {
        let key = PipelineKey {
            kernel: Kernel::Matvec,
            dtype: Some(DType::Q4_1),
            variant: Variant::Matvec {
                tokens: 4,
                x_broadcast: true,
            },
        };
        assert_eq!(key.label(), format!("matvec_{}_xsg_tok4", DType::Q4_1));
        assert_eq!(format!("{:>6}|", Kernel::Add), "   add|");
    }
}
