// matvec_coalesced: y[y_off + t * y_ld + r] = sum_c W[r, c] * xn[x_off + t * k + c] (with
// flag = 1: added to y), for the rows r of one weight part and the m tokens t: the matvec
// laid out for GPUs. xn is x, or with norm = 1 the RMSNorm of x's row t computed here (each
// workgroup reduces its token's sum of squares itself, as the rms_norm kernel does, and
// scales x as it loads it), which saves the rms_norm dispatch before a projection.
// A workgroup of 64 lanes owns R = 4 consecutive rows of one token; lane l walks the rows'
// 16-byte units l, l + 64, ... so neighbouring lanes read neighbouring units (coalesced
// loads), each unit's x is loaded once for the R rows, and the 64 partial sums of a row are
// added by a fixed tree in workgroup memory. Many small workgroups (n / 4 per token) fill a
// GPU where the one-lane-per-8-rows matvec (made for CPU adapters, where barriers are
// expensive) would run a handful. Each lane's sums use the same per-unit expression (w_raw,
// w_dot) as matvec, and the reduction order does not depend on m, so a token's result is
// the same whatever else is in the batch.
// Dispatch: (ceil(n / R), m, 1); at most 65535 workgroups per dimension.
// Params, bindings 0-4 and xv: common/matvec_io.wgsl; binding 5 (the norm weight), the
// layout, x_unit and reduce_lanes: common/coalesced.wgsl.

const NACC: u32 = R;

// The split output's other two tensors (common/split_out.wgsl).
@group(0) @binding(6) var<storage, read_write> y1: array<f32>;
@group(0) @binding(7) var<storage, read_write> y2: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let r0 = wg.x * R;
    let t = wg.y;
    let x_off = p.x_off + t * p.k;
    var inv = 1.0;
    if (p.norm != 0u) {
        inv = norm_inv(x_off, l);
    }
    var acc: array<f32, R>;
    let nb = w_nb();
    for (var b = l; b < nb; b += LANES) {
        let xu = x_unit(x_off, b, inv);
        for (var r = 0u; r < R; r++) {
            acc[r] += w_dot(w_raw(min(r0 + r, p.n - 1u), b), xu.xs, xu.sum);
        }
    }
    reduce_lanes(acc, l);
    if (l < R && r0 + l < p.n && !store_split(t, p.row0 + r0 + l, part[l * LANES])) {
        let at = p.y_off + t * p.y_ld + r0 + l;
        let v = part[l * LANES];
        if (p.flag != 0u) {
            y[at] = y[at] + v;
        } else {
            y[at] = v;
        }
    }
}
