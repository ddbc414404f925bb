// Weight access, Q2_K (weight layout): a unit is one 32-element sub-block of a 256-element
// super-block: its 2-bit quants as nibbles in Q4_1's order (infer_tensor's unit_pack); in
// the scale region at word p.soff, one word per unit: the f32s (d sc0, -(dmin m0), d sc1,
// -(dmin m1)) of elements 0..16 and 16..32. Value = a q + b.
// Needs `w: array<vec4<u32>>`, `p.k`, `p.soff`; nibbles.wgsl.
// matvec's zero value of w_scales8's result (its type differs between snippets).
const W_SCALES8_ZERO = array<vec4<f32>, 8>();
const WB: u32 = 32u;
const WV: u32 = 8u;

fn w_nb() -> u32 {
    return p.k / WB;
}

// The unit's values from its quants and (a0, b0, a1, b1).
fn w_vals(u: u32, s: vec4<f32>) -> array<vec4<f32>, WV> {
    var q = nib_q(w[u]);
    for (var k = 0u; k < WV; k++) {
        if (k < 4u) {
            q[k] = s.x * q[k] + s.y;
        } else {
            q[k] = s.z * q[k] + s.w;
        }
    }
    return q;
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let u = w_index(row, b, w_nb());
    return w_vals(u, bitcast<vec4<f32>>(w[p.soff + u]));
}

// A unit as matvec consumes it: `q` its values (two scales and offsets per unit do not
// factor out of the dot product), `s` unused.
struct WRaw {
    q: array<vec4<f32>, WV>,
    s: vec2<f32>,
}

fn w_raw(row: u32, b: u32) -> WRaw {
    return w_raw_at(w_index(row, b, w_nb()));
}

fn w_raw_at(u: u32) -> WRaw {
    return w_raw_s(u, bitcast<vec4<f32>>(w[p.soff + u]));
}

fn w_raw_s(u: u32, s: vec4<f32>) -> WRaw {
    return WRaw(w_vals(u, s), vec2<f32>(1.0));
}

fn w_scales8(u: u32) -> array<vec4<f32>, 8> {
    var r: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
        r[i] = bitcast<vec4<f32>>(w[p.soff + u + i]);
    }
    return r;
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    return dot8(u.q, xs);
}
