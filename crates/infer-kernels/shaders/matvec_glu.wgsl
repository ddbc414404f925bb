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
    // Rows r and r + 1's gate and up sums in one vec4 (gate r, up r, gate r + 1, up r + 1):
    // llvmpipe writes an element of a private array at a loop-variable index lane by lane,
    // so one write per two rows instead of four (as matvec's one_token). The adds are the
    // same, per element.
    var acc: array<vec4<f32>, ROWS / 2u>;
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
            for (var r = 0u; r < ROWS; r += 2u) {
                let g0 = w_dot(w_raw_s(ub + r, sg[r]), xs, xsum);
                let up0 = w_dot(w_raw_s_up(ub + r, su[r]), xs, xsum);
                let g1 = w_dot(w_raw_s(ub + r + 1u, sg[r + 1u]), xs, xsum);
                let up1 = w_dot(w_raw_s_up(ub + r + 1u, su[r + 1u]), xs, xsum);
                acc[r / 2u] += vec4<f32>(g0, up0, g1, up1);
            }
        } else {
            for (var r = 0u; r < ROWS; r += 2u) {
                let u = u0[r] + b * W_GROUP;
                let v = u0[r + 1u] + b * W_GROUP;
                let g0 = w_dot(w_raw_at(u), xs, xsum);
                let up0 = w_dot(w_raw_at_up(u), xs, xsum);
                let g1 = w_dot(w_raw_at(v), xs, xsum);
                let up1 = w_dot(w_raw_at_up(v), xs, xsum);
                acc[r / 2u] += vec4<f32>(g0, up0, g1, up1);
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        if (r0 + r < p.n) {
            let a = acc[r / 2u];
            var gu = a.xy;
            if (r % 2u == 1u) {
                gu = a.zw;
            }
            y[p.y_off + t * p.y_ld + r0 + r] = glu(gu.x, gu.y);
        }
    }
}
