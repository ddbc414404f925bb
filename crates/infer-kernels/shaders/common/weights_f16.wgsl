// Weight access, f16 (weight layout): a unit is 8 halves in one 16-byte word.
// Needs `w: array<vec4<u32>>` and `p.k`.
const WB: u32 = 8u;
const WV: u32 = 2u;

fn w_nb() -> u32 {
    return (p.k + WB - 1u) / WB;
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let q = w[row * w_nb() + b];
    return array<vec4<f32>, WV>(
        vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)),
        vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)),
    );
}

fn w_dot(row: u32, b: u32, xs: ptr<function, array<vec4<f32>, WV>>, xsum: f32) -> f32 {
    let v = w_unit(row, b);
    return dot(v[0], (*xs)[0]) + dot(v[1], (*xs)[1]);
}
