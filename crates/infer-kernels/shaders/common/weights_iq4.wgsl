// Weight access, IQ4_NL and IQ4_XS (weight layout): a unit is 32 elements: 16 bytes of
// nibbles in Q4_0's order, each an index into the code book (nibbles.wgsl's IQ4_BOOK); in
// the scale region at word p.soff, the unit's f32 scale (IQ4_NL: d; IQ4_XS: d sc of the
// sub-block, computed at packing as the reference does; infer_tensor's unit_pack), 4 per
// word. Value = d kvalue. Needs `w: array<vec4<u32>>`, `p.k`, `p.soff`; nibbles.wgsl.
// matvec's zero value of w_scales8's result (its type differs between snippets).
const W_SCALES8_ZERO = array<vec2<f32>, 8>();
const WB: u32 = 32u;
const WV: u32 = 8u;

fn w_nb() -> u32 {
    return p.k / WB;
}

fn w_d(u: u32) -> f32 {
    return bitcast<f32>(w[p.soff + u / 4u][u % 4u]);
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let u = w_index(row, b, w_nb());
    let d = w_d(u);
    var q = iq4_q(w[u]);
    for (var k = 0u; k < WV; k++) {
        q[k] = d * q[k];
    }
    return q;
}

// A unit as matvec consumes it: `q` its code-book values (exact), `s` (d, 0).
struct WRaw {
    q: array<vec4<f32>, WV>,
    s: vec2<f32>,
}

fn w_raw(row: u32, b: u32) -> WRaw {
    return w_raw_at(w_index(row, b, w_nb()));
}

fn w_raw_at(u: u32) -> WRaw {
    return w_raw_s(u, vec2<f32>(w_d(u), 0.0));
}

fn w_raw_s(u: u32, s: vec2<f32>) -> WRaw {
    return WRaw(iq4_q(w[u]), s);
}

// The scales of the 8 units u .. u + 7 (u a multiple of 8): 2 loads of 16 bytes.
fn w_scales8(u: u32) -> array<vec2<f32>, 8> {
    let a = bitcast<vec4<f32>>(w[p.soff + u / 4u]);
    let c = bitcast<vec4<f32>>(w[p.soff + u / 4u + 1u]);
    return array<vec2<f32>, 8>(
        vec2<f32>(a.x, 0.0), vec2<f32>(a.y, 0.0), vec2<f32>(a.z, 0.0), vec2<f32>(a.w, 0.0),
        vec2<f32>(c.x, 0.0), vec2<f32>(c.y, 0.0), vec2<f32>(c.z, 0.0), vec2<f32>(c.w, 0.0),
    );
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    return u.s.x * dot8(u.q, xs);
}
