// Weight access, Q3_K (weight layout): a unit is one 32-element sub-block of a 256-element
// super-block: each element's 3-bit code n = low2 | hbit << 2 as a nibble, in Q4_1's order
// (infer_tensor's unit_pack); in the scale region at word p.soff, 8 bytes per unit: the f32
// scales (d sc0, d sc1) of elements 0..16 and 16..32. Value = a (n - 4), the reference's
// signed quant. Needs `w: array<vec4<u32>>`, `p.k`, `p.soff`; nibbles.wgsl.
// matvec's zero value of w_scales8's result (its type differs between snippets).
const W_SCALES8_ZERO = array<vec2<f32>, 8>();
const WB: u32 = 32u;
const WV: u32 = 8u;

fn w_nb() -> u32 {
    return p.k / WB;
}

fn w_a(u: u32) -> vec2<f32> {
    let a = w[p.soff + u / 2u];
    if (u % 2u == 0u) {
        return bitcast<vec2<f32>>(a.xy);
    }
    return bitcast<vec2<f32>>(a.zw);
}

// The unit's signed quants (exact).
fn w_q3(u: u32) -> array<vec4<f32>, WV> {
    var q = nib_q(w[u]);
    for (var k = 0u; k < WV; k++) {
        q[k] = q[k] - 4.0;
    }
    return q;
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let u = w_index(row, b, w_nb());
    let a = w_a(u);
    var q = w_q3(u);
    for (var k = 0u; k < WV; k++) {
        q[k] = select(a.y, a.x, k < 4u) * q[k];
    }
    return q;
}

// A unit as matvec consumes it: `q` its signed quants, `s` its two scales.
struct WRaw {
    q: array<vec4<f32>, WV>,
    s: vec2<f32>,
}

fn w_raw(row: u32, b: u32) -> WRaw {
    return w_raw_at(w_index(row, b, w_nb()));
}

fn w_raw_at(u: u32) -> WRaw {
    return w_raw_s(u, w_a(u));
}

fn w_raw_s(u: u32, s: vec2<f32>) -> WRaw {
    return WRaw(w_q3(u), s);
}

fn w_scales8(u: u32) -> array<vec2<f32>, 8> {
    let i = p.soff + u / 2u;
    return f32_pairs8(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    let h = dot_halves(u.q, xs);
    return u.s.x * h.x + u.s.y * h.y;
}
