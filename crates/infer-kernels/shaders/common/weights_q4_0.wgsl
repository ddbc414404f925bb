// Weight access for Q4_0 (GGUF layout): blocks of 32, 18 bytes: f16 d, 16 bytes of nibbles;
// byte i holds element i (low nibble) and element i + 16 (high nibble). Value = d (q - 8).
const WB: u32 = 32u;

fn w_blk(row: u32, b: u32) -> u32 {
    return (row * (p.k / 32u) + b) * 18u;
}

fn w_scale(row: u32, b: u32) -> vec2<f32> {
    return vec2<f32>(f16_at(w_blk(row, b)), 0.0);
}

fn w_q4(row: u32, b: u32, j: u32) -> vec4<f32> {
    let q = rd_u32(w_blk(row, b) + 2u + (j & 15u));
    let n = (q >> select(0u, 4u, j >= 16u)) & 0x0f0f0f0fu;
    return vec4<f32>(f32(n & 0xffu), f32((n >> 8u) & 0xffu), f32((n >> 16u) & 0xffu), f32(n >> 24u)) - 8.0;
}
