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

// Eight f32 pairs packed two to 16 bytes in a, b, c, e (Q4_K's and Q3_K's w_scales8).
fn f32_pairs8(a: vec4<u32>, b: vec4<u32>, c: vec4<u32>, e: vec4<u32>) -> array<vec2<f32>, 8> {
    return array<vec2<f32>, 8>(
        bitcast<vec2<f32>>(a.xy), bitcast<vec2<f32>>(a.zw),
        bitcast<vec2<f32>>(b.xy), bitcast<vec2<f32>>(b.zw),
        bitcast<vec2<f32>>(c.xy), bitcast<vec2<f32>>(c.zw),
        bitcast<vec2<f32>>(e.xy), bitcast<vec2<f32>>(e.zw),
    );
}

// (sum_j q_j x_j over elements 0..16, the same over 16..32) of a 32-element unit: the
// dot products of the K-quants whose scale changes every 16 elements.
fn dot_halves(q: array<vec4<f32>, 8>, xs: array<vec4<f32>, 8>) -> vec2<f32> {
    return vec2<f32>(
        dot(q[0], xs[0]) + dot(q[1], xs[1]) + dot(q[2], xs[2]) + dot(q[3], xs[3]),
        dot(q[4], xs[4]) + dot(q[5], xs[5]) + dot(q[6], xs[6]) + dot(q[7], xs[7]),
    );
}

// The 32 6-bit quants of a Q6_K unit minus 32, as floats in element order: `q` its low
// nibbles (as nib_q), `h0` / `h1` the top two bits of elements 0..16 / 16..32 (bits 2i, 2i + 1).
fn q6_q(q: vec4<u32>, h0: u32, h1: u32) -> array<vec4<f32>, 8> {
    let lo = nib_q(q);
    var r: array<vec4<f32>, 8>;
    for (var k = 0u; k < 8u; k++) {
        let hw = select(h1, h0, k < 4u) >> (8u * (k % 4u));
        let h = (vec4<u32>(hw) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u);
        r[k] = lo[k] + 16.0 * vec4<f32>(h) - 32.0;
    }
    return r;
}

// IQ4_NL's non-linear code book (kvalues_iq4nl), 16 i8 packed little-endian in 4 words.
const IQ4_BOOK = vec4<u32>(0xbfad9881u, 0xf6eaddcfu, 0x26190d01u, 0x71594535u);

// The code book's value for the 4 nibbles at bit `s` of the bytes of `q`.
fn iq4_4(q: u32, s: u32) -> vec4<f32> {
    let n = (q >> s) & 0x0f0f0f0fu;
    var r: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        let i = (n >> (8u * j)) & 0xfu;
        r[j] = f32(extractBits(i32(IQ4_BOOK[i / 4u]), 8u * (i % 4u), 8u));
    }
    return r;
}

// The 32 code-book values of an IQ4 unit in element order (nib_q's order).
fn iq4_q(q: vec4<u32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        iq4_4(q.x, 0u), iq4_4(q.y, 0u), iq4_4(q.z, 0u), iq4_4(q.w, 0u),
        iq4_4(q.x, 4u), iq4_4(q.y, 4u), iq4_4(q.z, 4u), iq4_4(q.w, 4u),
    );
}
