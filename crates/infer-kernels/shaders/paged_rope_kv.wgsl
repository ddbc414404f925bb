// paged_rope_kv: rope_rows on q and k and paged_kv_write in one dispatch, with their
// arithmetic (bit-identical results). q: (n_rows, n_heads, head_dim), rotated in place;
// k, v: (n_rows, n_kv, head_dim), only read: the rotated k goes straight into the paged K
// cache and v into the V cache. Row r belongs to sequence seq[r] at position pos[r]; the
// caches are n_slots slots of (n_kv, head_dim), slot-major, and row r's slot is
// table[seq[r] * max_blocks + pos[r] / block_size] * block_size + pos[r] % block_size
// (rows outside the table or the cache are not written, as paged_kv_write; q is rotated
// regardless). cs: the (positions, half) table of (cos, sin) pairs, row pos[r] clamped to
// max_pos - 1; mode 0 rotates pairs (i, i + half), mode 1 pairs (2i, 2i + 1); dimensions
// past 2 * half pass through. One invocation per (row, index), independent of other rows.
// Invocation j of row t: for j < n_heads * half, rotates q's pair (j / half, j % half);
// for j < n_kv * head_dim, writes cache element (h, d) = (j / head_dim, j % head_dim): v's
// copied, k's rotated (reading its pair's other element) or passed through.
// Dispatch: (ceil(max(n_heads * half, n_kv * head_dim) / 64), n_rows, 1).
// Params: rope_kv::PagedRopeKvParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> seq: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read> cs: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> q: array<f32>;
@group(0) @binding(6) var<storage, read> k: array<f32>;
@group(0) @binding(7) var<storage, read> v: array<f32>;
@group(0) @binding(8) var<storage, read_write> kc: array<f32>;
@group(0) @binding(9) var<storage, read_write> vc: array<f32>;

// rope_q, rope_k: common/rope_kv.wgsl.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let j = gid.x;
    if (t >= p.n_rows) {
        return;
    }
    let cs_row = min(pos[t], p.max_pos - 1u) * p.half;
    if (j < p.n_heads * p.half) {
        rope_q(t, j, cs_row);
    }
    if (j >= p.n_kv * p.head_dim) {
        return;
    }
    let s = seq[t];
    let b = pos[t] / p.block_size;
    if (s >= p.n_seqs || b >= p.max_blocks) {
        return;
    }
    let slot = table[s * p.max_blocks + b] * p.block_size + pos[t] % p.block_size;
    if (slot >= p.n_slots) {
        return;
    }
    let h = j / p.head_dim;
    let d = j % p.head_dim;
    let base = (t * p.n_kv + h) * p.head_dim;
    let kd = rope_k(base, d, cs_row);
    let dst = (slot * p.n_kv + h) * p.head_dim + d;
    kc[dst] = kd;
    vc[dst] = v[base + d];
}
