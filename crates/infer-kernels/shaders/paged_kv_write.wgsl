// paged_kv_write: copies new k, v (n_rows, n_kv, head_dim) into a layer's paged caches.
// A cache is n_slots = n_blocks * block_size slots of (n_kv, head_dim), slot-major:
// element ((slot * n_kv + h) * head_dim + d). Row r belongs to sequence seq[r] at position
// pos[r]; its slot is table[seq[r] * max_blocks + pos[r] / block_size] * block_size
// + pos[r] % block_size (table: one row of max_blocks physical block ids per sequence).
// Rows whose block index or slot falls outside the table or the cache are dropped (the
// scheduler never builds such rows).
// Dispatch: (ceil(n_kv * head_dim / 64), n_rows, 1).
// Params: rope_kv::PagedKvWriteParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> seq: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read_write> kc: array<f32>;
@group(0) @binding(7) var<storage, read_write> vc: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let h = gid.x / p.head_dim;
    let d = gid.x % p.head_dim;
    if (h >= p.n_kv || t >= p.n_rows) {
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
    let src = (t * p.n_kv + h) * p.head_dim + d;
    let dst = (slot * p.n_kv + h) * p.head_dim + d;
    kc[dst] = k[src];
    vc[dst] = v[src];
}
