// Weight access, Q4_1 (weight layout): a unit is a block of 32: its 16 bytes of nibbles in
// one word; its f16 pair (d, m) in the scale region at word p.soff (4 pairs per word).
// Value = d q + m. Needs `w: array<vec4<u32>>`, `p.k`, `p.soff`; nibbles.wgsl.
// matvec's zero value of w_scales8's result (its type differs between snippets).
const W_SCALES8_ZERO = array<vec2<f32>, 8>();
const WB: u32 = 32u;
const WV: u32 = 8u;

fn w_nb() -> u32 {
    return p.k / WB;
}

fn w_dm(u: u32) -> vec2<f32> {
    return unpack2x16float(w[p.soff + u / 4u][u % 4u]);
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let u = w_index(row, b, w_nb());
    let dm = w_dm(u);
    return nib_unit(w[u], dm.x, dm.y);
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
    return w_raw_s(u, w_dm(u));
}

// w_raw_at with the unit's scales `s` (w_scales8) already loaded.
fn w_raw_s(u: u32, s: vec2<f32>) -> WRaw {
    return WRaw(nib_q(w[u]), s);
}

// The scales of the 8 units u .. u + 7 (u a multiple of 8; a row group's unit b in the
// grouped layout): their 8 pairs in 2 loads of 16 bytes, where w_dm loads 4 bytes per unit
// (on lavapipe a load costs about the same whatever its width).
fn w_scales8(u: u32) -> array<vec2<f32>, 8> {
    let a = w[p.soff + u / 4u];
    let c = w[p.soff + u / 4u + 1u];
    return array<vec2<f32>, 8>(
        unpack2x16float(a.x), unpack2x16float(a.y), unpack2x16float(a.z), unpack2x16float(a.w),
        unpack2x16float(c.x), unpack2x16float(c.y), unpack2x16float(c.z), unpack2x16float(c.w),
    );
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    return u.s.x * dot8(u.q, xs) + u.s.y * xsum;
}
