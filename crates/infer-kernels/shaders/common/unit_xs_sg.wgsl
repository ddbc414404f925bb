// matvec's and matvec_glu's unit_xs for adapters with subgroups of >= 8 invocations and
// dtypes of 8 vec4s per unit (WV = 8: Q4_0, Q4_1, Q8_0); the launcher puts it in place of
// the XUNIT block of common/matvec_io.wgsl. Every invocation of a subgroup walks the same
// units of the same x (x is uniform over a workgroup), so lane i < 8 loads the unit's vec4
// i and the 8 are broadcast: one load per invocation instead of 8. On llvmpipe a storage
// load in a loop costs a per-lane sequence (exec mask, descriptor, bounds) even at a
// uniform address, so x's loads were half of the Q4_1 matvec's; a broadcast from a
// constant lane is an extract and a splat. The values are the loaded ones, so results are
// bit-identical to the block it replaces. Needs every invocation of the subgroup active
// (matvec and matvec_glu return early only per workgroup).
struct Ids {
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
}

fn unit_xs(x_off: u32, b: u32, lane: u32) -> array<vec4<f32>, 8> {
    let v = xv(x_off, b * 32u + 4u * (lane % 8u));
    return array<vec4<f32>, 8>(
        subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
        subgroupBroadcast(v, 3u), subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
        subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u),
    );
}
