// Weight access, Q6_K (weight layout): a unit is one 32-element sub-block of a 256-element
// super-block: the low nibbles of its 6-bit quants in one word, in Q4_1's order (re-ordered
// at packing, infer_tensor's unit_pack); in the scale region at word p.soff, one word per
// unit: the f32 scales (d sc0, d sc1) of elements 0..16 and 16..32 (as the reference
// computes them), then the top two bits of elements 0..16 and of 16..32.
// Value = a (q - 32). Needs `w: array<vec4<u32>>`, `p.k`, `p.soff`; nibbles.wgsl.
// matvec's zero value of w_scales8's result (its type differs between snippets).
const W_SCALES8_ZERO = array<vec2<f32>, 8>();
const WB: u32 = 32u;
const WV: u32 = 8u;

fn w_nb() -> u32 {
    return p.k / WB;
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let u = w_index(row, b, w_nb());
    let s = w[p.soff + u];
    let a = bitcast<vec2<f32>>(s.xy);
    let q = q6_q(w[u], s.z, s.w);
    var r: array<vec4<f32>, WV>;
    for (var k = 0u; k < WV; k++) {
        r[k] = select(a.y, a.x, k < 4u) * q[k];
    }
    return r;
}

// A unit as matvec consumes it: `q` its quants minus 32 (exact), `s` its two scales.
struct WRaw {
    q: array<vec4<f32>, WV>,
    s: vec2<f32>,
}

fn w_raw(row: u32, b: u32) -> WRaw {
    return w_raw_at(w_index(row, b, w_nb()));
}

fn w_raw_at(u: u32) -> WRaw {
    let s = w[p.soff + u];
    return WRaw(q6_q(w[u], s.z, s.w), bitcast<vec2<f32>>(s.xy));
}

// w_raw_at with the unit's scales already loaded; its high bits are loaded here.
fn w_raw_s(u: u32, s: vec2<f32>) -> WRaw {
    let h = w[p.soff + u];
    return WRaw(q6_q(w[u], h.z, h.w), s);
}

fn w_scales8(u: u32) -> array<vec2<f32>, 8> {
    var r: array<vec2<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
        r[i] = bitcast<vec2<f32>>(w[p.soff + u + i].xy);
    }
    return r;
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    let h = dot_halves(u.q, xs);
    return u.s.x * h.x + u.s.y * h.y;
}
