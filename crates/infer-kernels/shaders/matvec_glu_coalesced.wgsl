// matvec_glu_coalesced: out[t * n + r] = act(Wg[r] . xn[t]) * (Wu[r] . xn[t]), matvec_glu
// laid out for GPUs like matvec_coalesced: a workgroup of 64 lanes owns R = 4 consecutive
// rows of the gate and the same R rows of up for one token; lane l walks the rows' 16-byte
// units l, l + 64, ..., each unit's x loaded once for the 2 R dot products; the partial
// sums are added by matvec_coalesced's fixed tree, so the gate and up values are
// matvec_coalesced's bits, and act is the swiglu / gelu kernels' expression (flag 0 silu,
// 1 gelu tanh). xn is x, or with norm = 1 the RMSNorm of x's row t computed here, as in
// matvec_coalesced. Wg and Wu are (n, k) in the same dtype and weight layout (same parts).
// A token's result does not depend on the other tokens.
// Dispatch: (ceil(n / R), m, 1); at most 65535 workgroups per dimension.
// Params, bindings 0-4 and xv: common/matvec_io.wgsl; binding 5 (the norm weight), the
// layout, x_unit and reduce_lanes: common/coalesced.wgsl; glu: common/glu.wgsl.
// The up projection's part (same layout as w, the gate's).
@group(0) @binding(6) var<storage, read> wu: array<vec4<u32>>;

const NACC: u32 = 2u * R;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let r0 = wg.x * R;
    let t = wg.y;
    let x_off = p.x_off + t * p.k;
    var inv = 1.0;
    if (p.norm != 0u) {
        inv = norm_inv(x_off, l);
    }
    // Gate rows in acc[0..R], up rows in acc[R..2R].
    var acc: array<f32, NACC>;
    let nb = w_nb();
    for (var b = l; b < nb; b += LANES) {
        let xu = x_unit(x_off, b, inv);
        for (var r = 0u; r < R; r++) {
            let row = min(r0 + r, p.n - 1u);
            acc[r] += w_dot(w_raw(row, b), xu.xs, xu.sum);
            acc[R + r] += w_dot(w_raw_up(row, b), xu.xs, xu.sum);
        }
    }
    reduce_lanes(acc, l);
    if (l < R && r0 + l < p.n) {
        y[p.y_off + t * p.y_ld + r0 + l] = glu(part[l * LANES], part[(R + l) * LANES]);
    }
}
