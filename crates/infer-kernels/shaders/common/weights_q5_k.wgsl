// Weight access, Q5_K (weight layout): Q4_K's units (infer_tensor's unit_pack) with the
// fifth bits: in the scale region at word p.soff, one word per unit: (d sc, -(dmin m)) as
// f32 bits, then `qh` (bit i: element i's fifth bit), then 0. Value = a q + b.
// Needs `w: array<vec4<u32>>`, `p.k`, `p.soff`; nibbles.wgsl.
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
    let ab = bitcast<vec2<f32>>(s.xy);
    let q = q5_q(w[u], s.z);
    var r: array<vec4<f32>, WV>;
    for (var k = 0u; k < WV; k++) {
        r[k] = ab.x * q[k] + ab.y;
    }
    return r;
}

// A unit as matvec consumes it (see weights_q4_1.wgsl): `q` its quants, `s` its (a, b).
struct WRaw {
    q: array<vec4<f32>, WV>,
    s: vec2<f32>,
}

fn w_raw(row: u32, b: u32) -> WRaw {
    return w_raw_at(w_index(row, b, w_nb()));
}

fn w_raw_at(u: u32) -> WRaw {
    let s = w[p.soff + u];
    return WRaw(q5_q(w[u], s.z), bitcast<vec2<f32>>(s.xy));
}

// w_raw_at with the unit's (a, b) already loaded; its qh is loaded here.
fn w_raw_s(u: u32, s: vec2<f32>) -> WRaw {
    return WRaw(q5_q(w[u], w[p.soff + u].z), s);
}

fn w_scales8(u: u32) -> array<vec2<f32>, 8> {
    var r: array<vec2<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
        r[i] = bitcast<vec2<f32>>(w[p.soff + u + i].xy);
    }
    return r;
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    return u.s.x * dot8(u.q, xs) + u.s.y * xsum;
}
