// Weight access, Q4_1 (weight layout): a unit is a block of 32: its 16 bytes of nibbles in
// one word; its f16 pair (d, m) in the scale region at word p.soff (4 pairs per word).
// Value = d q + m. Needs `w: array<vec4<u32>>`, `p.k`, `p.soff`; nibbles.wgsl.
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
    return WRaw(nib_q(w[u]), w_dm(u));
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    return u.s.x * dot8(u.q, xs) + u.s.y * xsum;
}
