// Weight access for f32 weights (one f32 per u32 word). Needs globals `w: array<u32>` and
// `p.k` (row length). A "block" is 4 consecutive elements of a row.
const WB: u32 = 4u;

fn w_scale(row: u32, b: u32) -> vec2<f32> {
    return vec2<f32>(1.0, 0.0);
}

// Elements 4b+j .. 4b+j+3 of `row` (j is always 0 here).
fn w_q4(row: u32, b: u32, j: u32) -> vec4<f32> {
    let e = row * p.k + b * 4u + j;
    return vec4<f32>(bitcast<f32>(w[e]), bitcast<f32>(w[e + 1u]), bitcast<f32>(w[e + 2u]), bitcast<f32>(w[e + 3u]));
}
