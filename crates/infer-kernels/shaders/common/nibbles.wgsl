// The 4 nibbles at bit `s` (0: low, 4: high) of the bytes of `q`, as floats.
fn nib4(q: u32, s: u32) -> vec4<f32> {
    let n = (q >> s) & 0x0f0f0f0fu;
    return vec4<f32>(f32(n & 0xffu), f32((n >> 8u) & 0xffu), f32((n >> 16u) & 0xffu), f32(n >> 24u));
}

// The 32 nibbles of a block as floats, in element order: its 16 bytes `q` hold element i
// in the low nibble of byte i and element i + 16 in the high one.
fn nib_q(q: vec4<u32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        nib4(q.x, 0u), nib4(q.y, 0u), nib4(q.z, 0u), nib4(q.w, 0u),
        nib4(q.x, 4u), nib4(q.y, 4u), nib4(q.z, 4u), nib4(q.w, 4u),
    );
}

fn nib_unit(q: vec4<u32>, d: f32, m: f32) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        d * nib4(q.x, 0u) + m, d * nib4(q.y, 0u) + m, d * nib4(q.z, 0u) + m, d * nib4(q.w, 0u) + m,
        d * nib4(q.x, 4u) + m, d * nib4(q.y, 4u) + m, d * nib4(q.z, 4u) + m, d * nib4(q.w, 4u) + m,
    );
}

// sum_j q_j x_j over a 32-element block (quantized matvec's w_dot): `dot()` per vec4, the
// 8 partial sums added left to right.
fn dot8(q: array<vec4<f32>, 8>, xs: array<vec4<f32>, 8>) -> f32 {
    return dot(q[0], xs[0]) + dot(q[1], xs[1]) + dot(q[2], xs[2]) + dot(q[3], xs[3])
        + dot(q[4], xs[4]) + dot(q[5], xs[5]) + dot(q[6], xs[6]) + dot(q[7], xs[7]);
}

// Eight f16 scales packed in 16 bytes (Q4_0's and Q8_0's w_scales8), each as (d, 0).
fn f16_scales8(a: vec4<u32>) -> array<vec2<f32>, 8> {
    let d0 = unpack2x16float(a.x);
    let d1 = unpack2x16float(a.y);
    let d2 = unpack2x16float(a.z);
    let d3 = unpack2x16float(a.w);
    return array<vec2<f32>, 8>(
        vec2<f32>(d0.x, 0.0), vec2<f32>(d0.y, 0.0), vec2<f32>(d1.x, 0.0), vec2<f32>(d1.y, 0.0),
        vec2<f32>(d2.x, 0.0), vec2<f32>(d2.y, 0.0), vec2<f32>(d3.x, 0.0), vec2<f32>(d3.y, 0.0),
    );
}

// The 32 5-bit quants of a Q5_0 / Q5_1 block as floats, in element order: `q` its low
// nibbles (as nib_q), `qh` its high bits (bit j: element j's), each adding 16.
fn q5_q(q: vec4<u32>, qh: u32) -> array<vec4<f32>, 8> {
    let lo = nib_q(q);
    var r: array<vec4<f32>, 8>;
    for (var k = 0u; k < 8u; k++) {
        let h = vec4<u32>(qh >> (4u * k)) >> vec4<u32>(0u, 1u, 2u, 3u);
        r[k] = lo[k] + 16.0 * vec4<f32>(h & vec4<u32>(1u));
    }
    return r;
}
