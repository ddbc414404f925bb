// Weight access, Q4_0 (weight layout): a unit is a block of 32: its 16 bytes of nibbles in
// one word; its f16 scale d in the scale region at word p.soff (8 per word).
// Value = d (q - 8). Needs `w: array<vec4<u32>>`, `p.k`, `p.soff`; nibbles.wgsl.
// matvec's zero value of w_scales8's result (its type differs between snippets).
const W_SCALES8_ZERO = array<vec2<f32>, 8>();
const WB: u32 = 32u;
const WV: u32 = 8u;

fn w_nb() -> u32 {
    return p.k / WB;
}

fn w_d(u: u32) -> f32 {
    let word = w[p.soff + u / 8u][(u / 2u) % 4u];
    return unpack2x16float(word)[u % 2u];
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let u = w_index(row, b, w_nb());
    let d = w_d(u);
    return nib_unit(w[u], d, -8.0 * d);
}

// A unit as matvec consumes it, decoded once (w_raw) and applied to each token of a tile
// (w_dot): `q` holds its values before scaling (quants converted to f32, which is exact;
// float dtypes: the values) and `s` its scales. w_dot is the unit's dot product with the
// token's 4 WV elements of x, `xs` (xsum: their sum), computed with `dot()` per vec4 like
// the per-token kernel always did.
struct WRaw {
    q: array<vec4<f32>, WV>,
    s: vec2<f32>,
}

fn w_raw(row: u32, b: u32) -> WRaw {
    return w_raw_at(w_index(row, b, w_nb()));
}

// w_raw of the unit at index u of the layout (w_index).
fn w_raw_at(u: u32) -> WRaw {
    return w_raw_s(u, vec2<f32>(w_d(u), 0.0));
}

// w_raw_at with the unit's scale (w_scales8) already loaded.
fn w_raw_s(u: u32, s: vec2<f32>) -> WRaw {
    return WRaw(nib_q(w[u]), s);
}

// The scales of the 8 units u .. u + 7 (u a multiple of 8; a row group's unit b in the
// grouped layout): their 8 f16 in one load of 16 bytes, where w_d loads 4 bytes per unit
// (on lavapipe a load costs about the same whatever its width).
fn w_scales8(u: u32) -> array<vec2<f32>, 8> {
    return f16_scales8(w[p.soff + u / 8u]);
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    return u.s.x * (dot8(u.q, xs) - 8.0 * xsum);
}
