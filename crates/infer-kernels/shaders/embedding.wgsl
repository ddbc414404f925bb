// embedding: out[t, c] = table[ids[t], c] for the rows of one table part (any weight dtype;
// a `weights_*` snippet is prepended). Ids outside this part are left to the other parts.
// Dispatch: (ceil(ceil(k / 4) / 64), n_tokens, 1).
struct Params {
    k: u32,
    row_start: u32,
    rows: u32,
    n_tokens: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let kk = gid.x * 4u;
    if (t >= p.n_tokens || kk >= p.k) {
        return;
    }
    let id = ids[t];
    if (id < p.row_start || id >= p.row_start + p.rows) {
        return;
    }
    let row = id - p.row_start;
    let b = kk / WB;
    let sc = w_scale(row, b);
    let v = w_q4(row, b, kk % WB) * sc.x + sc.y;
    for (var e = 0u; e < 4u; e++) {
        if (kk + e < p.k) {
            out[t * p.k + kk + e] = v[e];
        }
    }
}
