// Weight access, f32 (the weight layout of infer_tensor::tensor::pack_weights): a unit is
// 4 elements in one 16-byte word; rows are zero-padded to whole units.
// Needs `w: array<vec4<u32>>` and `p.k` (row length in elements).
const WB: u32 = 4u;
const WV: u32 = 1u;

fn w_nb() -> u32 {
    return (p.k + WB - 1u) / WB;
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    return array<vec4<f32>, WV>(bitcast<vec4<f32>>(w[row * w_nb() + b]));
}

fn w_dot(row: u32, b: u32, xs: ptr<function, array<vec4<f32>, WV>>, xsum: f32) -> f32 {
    return dot(bitcast<vec4<f32>>(w[row * w_nb() + b]), (*xs)[0]);
}
