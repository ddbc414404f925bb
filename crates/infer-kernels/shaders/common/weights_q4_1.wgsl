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
    let u = row * w_nb() + b;
    let dm = w_dm(u);
    return nib_unit(w[u], dm.x, dm.y);
}

fn w_dot(row: u32, b: u32, xs: ptr<function, array<vec4<f32>, WV>>, xsum: f32) -> f32 {
    let u = row * w_nb() + b;
    let dm = w_dm(u);
    return dm.x * nib_dot(w[u], xs) + dm.y * xsum;
}
