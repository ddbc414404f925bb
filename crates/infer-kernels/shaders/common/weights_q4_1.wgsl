// Weight access for Q4_1 (GGUF layout): blocks of 32, 20 bytes (5 words): f16 d, f16 m,
// 16 bytes of nibbles as in Q4_0. Value = d q + m.
const WB: u32 = 32u;

fn w_blk(row: u32, b: u32) -> u32 {
    return (row * (p.k / 32u) + b) * 5u;
}

fn w_scale(row: u32, b: u32) -> vec2<f32> {
    return unpack2x16float(w[w_blk(row, b)]);
}

fn w_q4(row: u32, b: u32, j: u32) -> vec4<f32> {
    let q = w[w_blk(row, b) + 1u + ((j & 15u) >> 2u)];
    let n = (q >> select(0u, 4u, j >= 16u)) & 0x0f0f0f0fu;
    return vec4<f32>(f32(n & 0xffu), f32((n >> 8u) & 0xffu), f32((n >> 16u) & 0xffu), f32(n >> 24u));
}
