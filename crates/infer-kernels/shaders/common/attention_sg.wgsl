// What the subgroup attention kernels share (attention_split_sg, paged_attention_sg): the
// variant number the launcher sets (TOK, in the TOKENS block; Kernels::sg_attention_variant)
// and what it packs: G - 1 in bits 0-2 (query heads per workgroup), 8 - E in bits 3-5 (vec4
// units of a head per invocation), FULL in bit 6 (head_dim % 32 == 0: every invocation has
// all E units, so no test guards them), T - 1 in bits 7-9 (tokens or rows per workgroup).
// TOK = 1, the source as written: G = 1, E = 8, guarded, T = 1.
const NEG: f32 = -3.0e38;

// TOKENS begin
const TOK: u32 = 1u;
// TOKENS end
const G: u32 = ((TOK - 1u) & 7u) + 1u;
const E: u32 = 8u - (((TOK - 1u) >> 3u) & 7u);
const FULL: bool = (((TOK - 1u) >> 6u) & 1u) == 1u;
const T: u32 = ((TOK - 1u) >> 7u) + 1u;
