// The 4 nibbles at bit `s` (0: low, 4: high) of the bytes of `q`, as floats.
fn nib4(q: u32, s: u32) -> vec4<f32> {
    let n = (q >> s) & 0x0f0f0f0fu;
    return vec4<f32>(f32(n & 0xffu), f32((n >> 8u) & 0xffu), f32((n >> 16u) & 0xffu), f32(n >> 24u));
}

// sum_j q_j x_j over a 32-element block whose 16 bytes of nibbles are `q` (byte i holds
// element i low and element i + 16 high).
fn nib_dot(q: vec4<u32>, xs: ptr<function, array<vec4<f32>, 8>>) -> f32 {
    return dot(nib4(q.x, 0u), (*xs)[0]) + dot(nib4(q.y, 0u), (*xs)[1]) + dot(nib4(q.z, 0u), (*xs)[2])
        + dot(nib4(q.w, 0u), (*xs)[3]) + dot(nib4(q.x, 4u), (*xs)[4]) + dot(nib4(q.y, 4u), (*xs)[5])
        + dot(nib4(q.z, 4u), (*xs)[6]) + dot(nib4(q.w, 4u), (*xs)[7]);
}

fn nib_unit(q: vec4<u32>, d: f32, m: f32) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        d * nib4(q.x, 0u) + m, d * nib4(q.y, 0u) + m, d * nib4(q.z, 0u) + m, d * nib4(q.w, 0u) + m,
        d * nib4(q.x, 4u) + m, d * nib4(q.y, 4u) + m, d * nib4(q.z, 4u) + m, d * nib4(q.w, 4u) + m,
    );
}
