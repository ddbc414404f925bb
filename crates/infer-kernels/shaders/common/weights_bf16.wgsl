// Weight access for bf16 weights packed two to a u32; a bf16 is the high half of an f32.
const WB: u32 = 4u;

fn w_scale(row: u32, b: u32) -> vec2<f32> {
    return vec2<f32>(1.0, 0.0);
}

fn w_h(e: u32) -> f32 {
    let v = w[e >> 1u];
    return bitcast<f32>(select(v << 16u, v & 0xffff0000u, (e & 1u) == 1u));
}

fn w_q4(row: u32, b: u32, j: u32) -> vec4<f32> {
    let e = row * p.k + b * 4u + j;
    if ((e & 1u) == 0u) {
        let v0 = w[e >> 1u];
        let v1 = w[(e >> 1u) + 1u];
        return vec4<f32>(bitcast<f32>(v0 << 16u), bitcast<f32>(v0 & 0xffff0000u), bitcast<f32>(v1 << 16u), bitcast<f32>(v1 & 0xffff0000u));
    }
    return vec4<f32>(w_h(e), w_h(e + 1u), w_h(e + 2u), w_h(e + 3u));
}
