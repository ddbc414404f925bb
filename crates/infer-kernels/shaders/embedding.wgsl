// embedding: out[t, c] = table[ids[t], c] for the rows of one table part (the weight layout
// of any dtype; a `weights_*` snippet is prepended: w_unit). Ids outside this part are
// left to the other parts. One invocation per (token, 16-byte unit).
// Dispatch: (ceil(units_per_row / 64), n_tokens, 1).
// Params: linear::EmbeddingParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.y;
    let b = gid.x;
    if (t >= p.n_tokens || b >= w_nb()) {
        return;
    }
    let id = ids[t];
    if (id < p.row_start || id >= p.row_start + p.rows) {
        return;
    }
    let vals = w_unit(id - p.row_start, b);
    for (var j = 0u; j < WV; j++) {
        for (var e = 0u; e < 4u; e++) {
            let c = b * WB + 4u * j + e;
            if (c < p.k) {
                out[t * p.k + c] = vals[j][e];
            }
        }
    }
}
