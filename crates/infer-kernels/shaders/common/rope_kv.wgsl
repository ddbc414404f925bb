// What rope_kv and paged_rope_kv share: the rotation, with rope.wgsl's arithmetic. Needs
// `p.half`, `p.mode`, `p.n_heads`, `p.head_dim` and the bindings `cs`, `q` (read-write)
// and `k`.

// Rotates q's pair (j / half, j % half) of token t in place (cs_row: the token's first
// (cos, sin) pair).
fn rope_q(t: u32, j: u32, cs_row: u32) {
    let i = j % p.half;
    let c = cs[cs_row + i];
    let base = (t * p.n_heads + j / p.half) * p.head_dim;
    var ia = base + i;
    var ib = base + i + p.half;
    if (p.mode == 1u) {
        ia = base + 2u * i;
        ib = ia + 1u;
    }
    let xa = q[ia];
    let xb = q[ib];
    q[ia] = xa * c.x - xb * c.y;
    q[ib] = xb * c.x + xa * c.y;
}

// Element d of the k head at k[base ..], rotated (reading its pair's other element) when
// d < 2 half, else passed through.
fn rope_k(base: u32, d: u32, cs_row: u32) -> f32 {
    if (d >= 2u * p.half) {
        return k[base + d];
    }
    // The pair (ia, ib) holding d, and whether d is its second element.
    var i = d % p.half;
    var second = d >= p.half;
    var ia = base + i;
    var ib = base + i + p.half;
    if (p.mode == 1u) {
        i = d / 2u;
        second = (d & 1u) == 1u;
        ia = base + 2u * i;
        ib = ia + 1u;
    }
    let c = cs[cs_row + i];
    let xa = k[ia];
    let xb = k[ib];
    if (second) {
        return xb * c.x + xa * c.y;
    }
    return xa * c.x - xb * c.y;
}
