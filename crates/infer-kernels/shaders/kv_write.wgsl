// kv_write: copies new k, v (n_tokens, n_kv, head_dim) into a layer's caches
// (n_kv, capacity, head_dim) at positions pos[0] + t. Positions past capacity are dropped
// (the host refuses such prompts before they get here).
// Dispatch: (ceil(n_kv * head_dim / 64), n_tokens, 1).
// Params: rope_kv::KvWriteParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> kc: array<f32>;
@group(0) @binding(5) var<storage, read_write> vc: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let h = gid.x / p.head_dim;
    let d = gid.x % p.head_dim;
    let at = pos[0] + t;
    if (h >= p.n_kv || t >= p.n_tokens || at >= p.capacity) {
        return;
    }
    let src = (t * p.n_kv + h) * p.head_dim + d;
    let dst = (h * p.capacity + at) * p.head_dim + d;
    kc[dst] = k[src];
    vc[dst] = v[src];
}
