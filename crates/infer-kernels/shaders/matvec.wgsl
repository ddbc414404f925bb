// matvec: y[y_off + t * y_ld + r] = sum_c W[r, c] * x[x_off + t * k + c], for the rows r of
// one weight part and the m tokens t. Decode's linear layer (m = 1), and on CPU adapters
// prefill's and speculative verification's for quantized weights or few tokens, where it
// beats the tiled matmul. W is (n, k) in the weight layout of any dtype (a `weights_*`
// snippet is prepended: w_nb, w_raw, w_dot); x, y are f32.
//
// Each invocation computes ROWS consecutive rows for TOK consecutive tokens, walking the
// rows one 16-byte unit at a time with f32 accumulation: the x values of a unit are loaded
// once per token (uniform across the workgroup; unit_xs, common/matvec_io.wgsl, shared
// over the subgroup where the launcher swaps in common/unit_xs_sg.wgsl) for all ROWS rows,
// and each weight unit is decoded once (w_raw) for all TOK tokens. TOK is a constant of
// the pipeline (Variant::Matvec): 1, or 2..=4 for tiles of tokens where that is faster
// (float and Q8_0 weights, and Q4_0/Q4_1 with x shared; see Kernels::matvec_plan). Batch invariance: every token's value is the same
// per-token expression, w_dot (dot() per vec4, like the single-token kernel always was),
// whatever TOK is, so the result for (r, t) does not depend on m, TOK or t's place in its
// tile; a tile's tokens past m load the last token's x (clamped index) and only their
// stores are skipped. With flag = 1 the result is added to y (y = y + W x: the residual
// add fused into the projection, the same sum the add kernel computes). No barriers. WG (an override constant) is 8 on CPU adapters, where
// more, smaller workgroups spread better over threads, and 64 elsewhere. On CPU adapters
// the weight layout groups rows by 8 (W_GROUP, common/weight_index.wgsl), so an
// invocation's 8 rows have each unit side by side: one contiguous 128-byte run per unit.
// Dispatch: (ceil(ceil(n / ROWS) / WG), ceil(m / TOK), 1).
// Params, bindings 0-4 and xv: common/matvec_io.wgsl.

// The split output's other two tensors (common/split_out.wgsl).
@group(0) @binding(5) var<storage, read_write> y1: array<f32>;
@group(0) @binding(6) var<storage, read_write> y2: array<f32>;

override WG: u32 = 64u;
const ROWS: u32 = 8u;

// TOK, tokens per invocation, is a constant of the variant (Variant::Matvec).

// Where the invocation's rows (r0 ..; past n: row n - 1) have their unit 0: unit b of row
// r0 + r is then u0[r] + b * W_GROUP (common/weight_index.wgsl).
fn row_units(r0: u32, nb: u32) -> array<u32, ROWS> {
    var u0: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        u0[r] = w_index(min(r0 + r, p.n - 1u), 0u, nb);
    }
    return u0;
}

// One token per invocation (TOK = 1): the same per-token expression as the tiled loop
// below, in the single-token loop shape (no per-token arrays), which llvmpipe runs ~10%
// faster for float weights.
//
// The rows are walked two at a time with their sums in a vec2 (acc[r / 2]): llvmpipe
// writes an element of a private array at a loop-variable index lane by lane, so one
// vec2 write per two rows instead of one f32 write per row. The adds are the same, per element.
fn one_token(r0: u32, t: u32, lane: u32) {
    let x_off = p.x_off + t * p.k;
    var acc: array<vec2<f32>, ROWS / 2u>;
    let nb = w_nb();
    let u0 = row_units(r0, nb);
    for (var b = 0u; b < nb; b++) {
        let xs = unit_xs(x_off, b, lane);
        var x4 = vec4<f32>(0.0);
        for (var j = 0u; j < WV; j++) {
            x4 += xs[j];
        }
        let xsum = x4.x + x4.y + x4.z + x4.w;
        // The grouped layout (W_GROUP = ROWS): the rows' units are ub .. ub + 7 (a padded
        // last group included), and their scales are loaded together (w_scales8: 2 loads of
        // 16 bytes for Q4_1, not 8 of 4).
        if (W_GROUP == ROWS) {
            let ub = u0[0] + b * W_GROUP;
            let s8 = w_scales8(ub);
            for (var r = 0u; r < ROWS; r += 2u) {
                let a = w_dot(w_raw_s(ub + r, s8[r]), xs, xsum);
                let c = w_dot(w_raw_s(ub + r + 1u, s8[r + 1u]), xs, xsum);
                acc[r / 2u] += vec2<f32>(a, c);
            }
        } else {
            for (var r = 0u; r < ROWS; r += 2u) {
                let a = w_dot(w_raw_at(u0[r] + b * W_GROUP), xs, xsum);
                let c = w_dot(w_raw_at(u0[r + 1u] + b * W_GROUP), xs, xsum);
                acc[r / 2u] += vec2<f32>(a, c);
            }
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let v = acc[r / 2u][r % 2u];
        if (r0 + r < p.n && !store_split(t, p.row0 + r0 + r, v)) {
            let at = p.y_off + t * p.y_ld + r0 + r;
            if (p.flag != 0u) {
                y[at] = y[at] + v;
            } else {
                y[at] = v;
            }
        }
    }
}

@compute @workgroup_size(WG)
fn main(ids: Ids) {
    let r0 = ids.gid.x * ROWS;
    let t0 = ids.gid.y * TOK;
    // Only whole workgroups return early (unit_xs's subgroup variant needs every
    // invocation): rows past n compute row n - 1 and store nothing.
    if (t0 >= p.m) {
        return;
    }
    if (TOK == 1u) {
        one_token(r0, t0, ids.lane);
        return;
    }
    var x_offs: array<u32, TOK>;
    for (var i = 0u; i < TOK; i++) {
        x_offs[i] = p.x_off + min(t0 + i, p.m - 1u) * p.k;
    }
    var acc: array<array<f32, TOK>, ROWS>;
    let nb = w_nb();
    let u0 = row_units(r0, nb);
    for (var b = 0u; b < nb; b++) {
        // xs[i]: the unit's elements of x for token i; xsum[i]: their sum.
        var xs: array<array<vec4<f32>, WV>, TOK>;
        var xsum: array<f32, TOK>;
        for (var i = 0u; i < TOK; i++) {
            xs[i] = unit_xs(x_offs[i], b, ids.lane);
            var x4 = vec4<f32>(0.0);
            for (var j = 0u; j < WV; j++) {
                x4 += xs[i][j];
            }
            xsum[i] = x4.x + x4.y + x4.z + x4.w;
        }
        // The grouped layout (W_GROUP = ROWS): the rows' units are ub .. ub + 7, and their
        // scales are loaded together (w_scales8; 2 loads of 16 bytes for Q4_1, not 8 of 4).
        let ub = u0[0] + b * W_GROUP;
        var s8 = W_SCALES8_ZERO;
        if (W_GROUP == ROWS) {
            s8 = w_scales8(ub);
        }
        for (var r = 0u; r < ROWS; r++) {
            var u: WRaw;
            if (W_GROUP == ROWS) {
                u = w_raw_s(ub + r, s8[r]);
            } else {
                u = w_raw_at(u0[r] + b * W_GROUP);
            }
            for (var i = 0u; i < TOK; i++) {
                acc[r][i] += w_dot(u, xs[i], xsum[i]);
            }
        }
    }
    for (var i = 0u; i < TOK; i++) {
        for (var r = 0u; r < ROWS; r++) {
            if (r0 + r < p.n && t0 + i < p.m && !store_split(t0 + i, p.row0 + r0 + r, acc[r][i])) {
                let at = p.y_off + (t0 + i) * p.y_ld + r0 + r;
                if (p.flag != 0u) {
                    y[at] = y[at] + acc[r][i];
                } else {
                    y[at] = acc[r][i];
                }
            }
        }
    }
}
