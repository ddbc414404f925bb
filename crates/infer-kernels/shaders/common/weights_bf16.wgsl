// Weight access, bf16 (weight layout): a unit is 8 bf16 in one 16-byte word; a bf16 is
// the high half of an f32.
// Needs `w: array<vec4<u32>>` and `p.k`.
const WB: u32 = 8u;
const WV: u32 = 2u;

fn w_nb() -> u32 {
    return (p.k + WB - 1u) / WB;
}

fn bf2(v: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(v << 16u), bitcast<f32>(v & 0xffff0000u));
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let q = w[row * w_nb() + b];
    return array<vec4<f32>, WV>(vec4<f32>(bf2(q.x), bf2(q.y)), vec4<f32>(bf2(q.z), bf2(q.w)));
}

fn w_dot(row: u32, b: u32, xs: ptr<function, array<vec4<f32>, WV>>, xsum: f32) -> f32 {
    let v = w_unit(row, b);
    return dot(v[0], (*xs)[0]) + dot(v[1], (*xs)[1]);
}
