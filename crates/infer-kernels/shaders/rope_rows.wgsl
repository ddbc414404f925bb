// rope_rows (in place) on x: (n_rows, n_heads, head_dim); row r sits at position pos[r]
// (rows from several sequences, each at its own position: the batched serving step).
// Otherwise the maths of rope.wgsl: cs is the (positions, half) table of (cos, sin) pairs;
// mode 0 rotates pairs (i, i + half), mode 1 pairs (2i, 2i + 1); dimensions past 2 * half
// pass through. One invocation per (row, head, pair), independent of the other rows.
// Dispatch: (ceil(n_heads * half / 64), n_rows, 1).
struct Params {
    n_heads: u32,
    head_dim: u32,
    half: u32,
    mode: u32,
    n_rows: u32,
    max_pos: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> cs: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let h = gid.x / p.half;
    let i = gid.x % p.half;
    if (h >= p.n_heads || t >= p.n_rows) {
        return;
    }
    let at = min(pos[t], p.max_pos - 1u);
    let c = cs[at * p.half + i];
    let base = (t * p.n_heads + h) * p.head_dim;
    var ia = base + i;
    var ib = base + i + p.half;
    if (p.mode == 1u) {
        ia = base + 2u * i;
        ib = ia + 1u;
    }
    let xa = x[ia];
    let xb = x[ib];
    x[ia] = xa * c.x - xb * c.y;
    x[ib] = xb * c.x + xa * c.y;
}
