// What the subgroup attention kernels share (attention_split_sg, paged_attention_sg). The
// constants of the variant (Variant::Sg): G query heads per workgroup, E vec4 units of a head
// per invocation, FULL (head_dim % 32 == 0: every invocation has all E units, so no test
// guards them), T tokens or rows per workgroup.
const NEG: f32 = -3.0e38;

