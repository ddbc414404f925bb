// Weight access for Q8_0 (GGUF layout): blocks of 32, 34 bytes: f16 d, 32 x i8. Value = d q.
const WB: u32 = 32u;

fn w_blk(row: u32, b: u32) -> u32 {
    return (row * (p.k / 32u) + b) * 34u;
}

fn w_scale(row: u32, b: u32) -> vec2<f32> {
    return vec2<f32>(f16_at(w_blk(row, b)), 0.0);
}

fn w_q4(row: u32, b: u32, j: u32) -> vec4<f32> {
    let q = rd_u32(w_blk(row, b) + 2u + j);
    return vec4<f32>(vec4<i32>(i32(q << 24u) >> 24u, i32(q << 16u) >> 24u, i32(q << 8u) >> 24u, i32(q) >> 24u));
}
