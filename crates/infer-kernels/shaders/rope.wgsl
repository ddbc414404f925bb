// rope (in place) on x: (n_tokens, n_heads, head_dim); token t sits at position pos[0] + t,
// or with p.per_row = 1 at pos[t] (rows of several sequences, each at its own position: the
// batched serving step; one invocation per (row, head, pair), independent of other rows).
// cs: (positions, half) of (cos, sin) pairs, computed on the host from the model's inverse
// frequencies (with any scaling and attention factor folded in), so the GPU does no
// transcendental maths. Mode 0 rotates pairs (i, i + half) (rotate_half, NeoX), mode 1 pairs
// (2i, 2i + 1) (interleaved, GGUF Llama). Dimensions past 2 * half pass through.
// Dispatch: (ceil(n_heads * half / 64), n_tokens, 1).
// Params: rope_kv::RopeParams (generated).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> cs: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let h = gid.x / p.half;
    let i = gid.x % p.half;
    if (h >= p.n_heads || t >= p.n_tokens) {
        return;
    }
    var at = pos[0] + t;
    if (p.per_row == 1u) {
        at = pos[t];
    }
    at = min(at, p.max_pos - 1u);
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
