// Weight access, Q4_K (weight layout): a unit is one 32-element sub-block of a 256-element
// super-block: its 16 bytes of nibbles in one word, in Q4_1's order (re-ordered at packing,
// infer_tensor's unit_pack); in the scale region at word p.soff, 8 bytes per unit: the f32
// pair (d sc, -(dmin m)) computed at packing as the reference does. Value = a q + b.
// Needs `w: array<vec4<u32>>`, `p.k`, `p.soff`; nibbles.wgsl.
// matvec's zero value of w_scales8's result (its type differs between snippets).
const W_SCALES8_ZERO = array<vec2<f32>, 8>();
const WB: u32 = 32u;
const WV: u32 = 8u;

fn w_nb() -> u32 {
    return p.k / WB;
}

// The unit's (a, b).
fn w_ab(u: u32) -> vec2<f32> {
    let a = w[p.soff + u / 2u];
    if (u % 2u == 0u) {
        return bitcast<vec2<f32>>(a.xy);
    }
    return bitcast<vec2<f32>>(a.zw);
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let u = w_index(row, b, w_nb());
    let s = w_ab(u);
    return nib_unit(w[u], s.x, s.y);
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
    return w_raw_s(u, w_ab(u));
}

fn w_raw_s(u: u32, s: vec2<f32>) -> WRaw {
    return WRaw(nib_q(w[u]), s);
}

// The (a, b) of the 8 units u .. u + 7 (u a multiple of 8): 4 loads of 16 bytes.
fn w_scales8(u: u32) -> array<vec2<f32>, 8> {
    let i = p.soff + u / 2u;
    return f32_pairs8(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    return u.s.x * dot8(u.q, xs) + u.s.y * xsum;
}
