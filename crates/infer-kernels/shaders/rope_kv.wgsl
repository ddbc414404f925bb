// rope_kv: rope on q and k and kv_write in one dispatch, with the arithmetic of rope.wgsl and
// kv_write.wgsl (bit-identical results). q: (n_tokens, n_heads, head_dim), rotated in place;
// k, v: (n_tokens, n_kv, head_dim), only read: the rotated k goes straight into the K cache
// and v into the V cache, both (n_kv, capacity, head_dim), at position pos[0] + t for token t.
// cs: the (positions, half) table of (cos, sin) pairs (row clamped to max_pos - 1, as rope);
// mode 0 rotates pairs (i, i + half) (rotate_half, NeoX), mode 1 pairs (2i, 2i + 1)
// (interleaved); dimensions past 2 * half pass through (partial rotary). Positions past
// capacity are not written (as kv_write); q is rotated whatever the position.
// Invocation j of token t: for j < n_heads * half, rotates q's pair (j / half, j % half);
// for j < n_kv * head_dim, writes cache element (h, d) = (j / head_dim, j % head_dim): v's
// copied, k's rotated (reading its pair's other element) or passed through.
// Dispatch: (ceil(max(n_heads * half, n_kv * head_dim) / 64), n_tokens, 1).
// Params: rope_kv::RopeKvParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> cs: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read_write> kc: array<f32>;
@group(0) @binding(7) var<storage, read_write> vc: array<f32>;

// rope_q, rope_k: common/rope_kv.wgsl.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let j = gid.x;
    if (t >= p.n_tokens) {
        return;
    }
    let cs_row = min(pos[0] + t, p.max_pos - 1u) * p.half;
    if (j < p.n_heads * p.half) {
        rope_q(t, j, cs_row);
    }
    let at = pos[0] + t;
    if (j >= p.n_kv * p.head_dim || at >= p.capacity) {
        return;
    }
    let h = j / p.head_dim;
    let d = j % p.head_dim;
    let base = (t * p.n_kv + h) * p.head_dim;
    let kd = rope_k(base, d, cs_row);
    let dst = (h * p.capacity + at) * p.head_dim + d;
    kc[dst] = kd;
    vc[dst] = v[base + d];
}
