// Weight access, Q5_0 (weight layout): a unit is a block of 32: its 16 bytes of low nibbles
// in one word (as Q4_0); in the scale region at word p.soff, 8 bytes per unit (2 per word):
// its f16 d (and an unused f16), then its qh (bit j: element j's high bit).
// Value = d (q - 16) = d q + m with m = -16 d. Needs `w: array<vec4<u32>>`, `p.k`,
// `p.soff`; nibbles.wgsl.
// matvec's zero value of w_scales8's result (its type differs between snippets).
const W_SCALES8_ZERO = array<vec2<f32>, 8>();
const WB: u32 = 32u;
const WV: u32 = 8u;

fn w_nb() -> u32 {
    return p.k / WB;
}

// (d, m) from the unit's first scale-region word.
fn w_dm_of(s: u32) -> vec2<f32> {
    let d = unpack2x16float(s).x;
    return vec2<f32>(d, -16.0 * d);
}

// The unit's scale-region words: (its (d, m) word, its qh).
fn w_sq(u: u32) -> vec2<u32> {
    let a = w[p.soff + u / 2u];
    if (u % 2u == 0u) {
        return a.xy;
    }
    return a.zw;
}

fn w_unit(row: u32, b: u32) -> array<vec4<f32>, WV> {
    let u = w_index(row, b, w_nb());
    let sq = w_sq(u);
    let dm = w_dm_of(sq.x);
    let q = q5_q(w[u], sq.y);
    var r: array<vec4<f32>, WV>;
    for (var k = 0u; k < WV; k++) {
        r[k] = dm.x * q[k] + dm.y;
    }
    return r;
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

// w_raw of the unit at index u of the layout (w_index).
fn w_raw_at(u: u32) -> WRaw {
    let sq = w_sq(u);
    return WRaw(q5_q(w[u], sq.y), w_dm_of(sq.x));
}

// w_raw_at with the unit's scales `s` (w_scales8) already loaded; its qh is loaded here.
fn w_raw_s(u: u32, s: vec2<f32>) -> WRaw {
    return WRaw(q5_q(w[u], w_sq(u).y), s);
}

// The scales of the 8 units u .. u + 7 (u a multiple of 8): 4 loads of 16 bytes, 2 units each.
fn w_scales8(u: u32) -> array<vec2<f32>, 8> {
    let a = w[p.soff + u / 2u];
    let b = w[p.soff + u / 2u + 1u];
    let c = w[p.soff + u / 2u + 2u];
    let e = w[p.soff + u / 2u + 3u];
    return array<vec2<f32>, 8>(
        w_dm_of(a.x), w_dm_of(a.z), w_dm_of(b.x), w_dm_of(b.z),
        w_dm_of(c.x), w_dm_of(c.z), w_dm_of(e.x), w_dm_of(e.z),
    );
}

fn w_dot(u: WRaw, xs: array<vec4<f32>, WV>, xsum: f32) -> f32 {
    return u.s.x * dot8(u.q, xs) + u.s.y * xsum;
}
