// Weight access, f32 (the weight layout of infer_tensor::tensor::pack_weights): a unit is
// 4 elements in one 16-byte word; rows are zero-padded to whole units.
// Needs `w: array<vec4<u32>>` and `p.k` (row length in elements).
// matvec's zero value of w_scales8's result (its type differs between snippets).
const W_SCALES8_ZERO = array<vec2<f32>, 8>();
const WB: u32 = 4u;
const WV: u32 = 1u;

fn w_nb() -> u32 {
    return (p.k + WB - 1u) / WB;
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    return w_unit_at(w_index(row, b, w_nb()));
}

// The unit at index u of the layout (w_index).
fn w_unit_at(u: u32) -> array<vec4<f32>, WV> {
    return array<vec4<f32>, WV>(bitcast<vec4<f32>>(w[u]));
}

// A unit as matvec consumes it, decoded once (w_raw) and applied to each token of a tile
// (w_dot): `q` holds its values before scaling (quants converted to f32, which is exact;
// float dtypes: the values) and `s` its scales. w_dot is the unit's dot product with the
// token's 4 WV elements of x, `xs` (xsum: their sum), computed with `dot()` per vec4 like
// the per-token kernel always did.
struct WRaw {
    q: array<vec4<f32>, WV>,
    s: vec2<f32>,
}

fn w_raw(row: u32, b: u32) -> WRaw {
    return w_raw_at(w_index(row, b, w_nb()));
}

// w_raw_at with the unit's scales (w_scales8) already loaded: float units have none.
fn w_raw_s(u: u32, s: vec2<f32>) -> WRaw {
    return w_raw_at(u);
}

// The scales of units u .. u + 7 (see the quantized snippets): none for float weights.
fn w_scales8(u: u32) -> array<vec2<f32>, 8> {
    return array<vec2<f32>, 8>();
}

fn w_raw_at(u: u32) -> WRaw {
    return WRaw(w_unit_at(u), vec2<f32>(1.0));
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    return dot(u.q[0], xs[0]);
}
