// matvec_glu: out[t * n + r] = act(Wg[r] . x[t]) * (Wu[r] . x[t]) for the rows r of one
// weight part and the m tokens t: an MLP's gate and up projections and its gated
// activation in one pass (act = silu for SwiGLU, flag 0; tanh-approximated gelu for GeGLU,
// flag 1, as the swiglu and gelu kernels compute them). Wg and Wu are (n, k) in the same
// dtype and weight layout (same parts); x and out are f32. Each invocation computes ROWS
// consecutive rows of both weights for one token, with each unit's x loaded once for the
// 2 * ROWS dot products; each row's sums are the same expression (w_raw, w_dot) as the
// matvec kernel's, so the gate and up values equal matvec's bit for bit. No barriers.
// Dispatch: (ceil(ceil(n / ROWS) / WG), m, 1).
// Params, bindings 0-4 and xv: common/matvec_io.wgsl; glu (the activation): common/glu.wgsl.
// The up projection's part (same layout as w, the gate's).
@group(0) @binding(5) var<storage, read> wu: array<vec4<u32>>;

override WG: u32 = 64u;
const ROWS: u32 = 8u;

@compute @workgroup_size(WG)
fn main(ids: Ids) {
    let r0 = ids.gid.x * ROWS;
    let t = ids.gid.y;
    // Only whole workgroups return early (unit_xs's subgroup variant needs every
    // invocation): rows past n compute row n - 1 and store nothing.
    if (t >= p.m) {
        return;
    }
    let x_off = p.x_off + t * p.k;
    var ag: array<f32, ROWS>;
    var au: array<f32, ROWS>;
    let nb = w_nb();
    // Unit b of row r0 + r (past n: row n - 1) is u0[r] + b * W_GROUP, in both weights
    // (common/weight_index.wgsl).
    var u0: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        u0[r] = w_index(min(r0 + r, p.n - 1u), 0u, nb);
    }
    for (var b = 0u; b < nb; b++) {
        let xs = unit_xs(x_off, b, ids.lane);
        var x4 = vec4<f32>(0.0);
        for (var j = 0u; j < WV; j++) {
            x4 += xs[j];
        }
        let xsum = x4.x + x4.y + x4.z + x4.w;
        if (W_GROUP == ROWS) {
            // The grouped layout: the rows' units are ub .. ub + 7, their scales loaded
            // together (w_scales8), as in matvec.
            let ub = u0[0] + b * W_GROUP;
            let sg = w_scales8(ub);
            let su = w_scales8_up(ub);
            for (var r = 0u; r < ROWS; r++) {
                ag[r] += w_dot(w_raw_s(ub + r, sg[r]), xs, xsum);
                au[r] += w_dot(w_raw_s_up(ub + r, su[r]), xs, xsum);
            }
        } else {
            for (var r = 0u; r < ROWS; r++) {
                let u = u0[r] + b * W_GROUP;
                ag[r] += w_dot(w_raw_at(u), xs, xsum);
                au[r] += w_dot(w_raw_at_up(u), xs, xsum);
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        if (r0 + r < p.n) {
            y[p.y_off + t * p.y_ld + r0 + r] = glu(ag[r], au[r]);
        }
    }
}
