// Weight access for f16 weights packed two to a u32 (element e in half e & 1 of word e / 2).
const WB: u32 = 4u;

fn w_scale(row: u32, b: u32) -> vec2<f32> {
    return vec2<f32>(1.0, 0.0);
}

fn w_h(e: u32) -> f32 {
    let v = unpack2x16float(w[e >> 1u]);
    return select(v.x, v.y, (e & 1u) == 1u);
}

fn w_q4(row: u32, b: u32, j: u32) -> vec4<f32> {
    let e = row * p.k + b * 4u + j;
    if ((e & 1u) == 0u) {
        return vec4<f32>(unpack2x16float(w[e >> 1u]), unpack2x16float(w[(e >> 1u) + 1u]));
    }
    return vec4<f32>(w_h(e), w_h(e + 1u), w_h(e + 2u), w_h(e + 3u));
}
