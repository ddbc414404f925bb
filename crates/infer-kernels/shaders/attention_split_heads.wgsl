// attention_split_heads: phase 1 of split-KV decode attention made for GPUs. The maths, the
// Params and the partials of attention_split.wgsl (row r = (t * n_heads + h) * n_chunks + c:
// part[2r] = running max m, part[2r + 1] = sum l of exp(s - m), part[2 R + r * head_dim + i]
// = sum of exp(s - m) v[i]; merged by attention_split_merge.wgsl), laid out so that a GPU
// waits on few loads in turn (common/attention_heads.wgsl): a workgroup serves a chunk for
// the G query heads that share a KV head (one token) and loads each K and V row of the
// chunk once for all of them, with unrolled row loops. (attention_split's invocations each
// walk 64 positions one load after another, which a GPU serves slowly whatever the context.)
// Dispatch: (n_chunks, n_heads / G, n_tokens).
// Params, bindings 0 (p) and 1 (pos), chunk_span: common/attention_split_params.wgsl;
// G, D4, the tiles and heads_sum: common/attention_heads.wgsl.
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wg.x;
    let h0 = wg.y * G;
    let t = wg.z;
    // This chunk's seen positions (the same for the whole workgroup).
    let span = chunk_span(c, t);
    let first = span.first;
    let last = span.last;
    if (first > last) {
        return;
    }
    let cbase = (h0 / (p.n_heads / p.n_kv)) * p.capacity;
    var st = heads_start(li, (t * p.n_heads + h0) * D4);
    for (var j0 = first; j0 <= last; j0 += WG) {
        heads_tile(li, j0, last, (cbase + min(j0 + li, last)) * D4, &st);
    }
    let abase = 2u * p.n_tokens * p.n_heads * p.n_chunks;
    for (var g = 0u; g < G; g++) {
        let s = heads_sum(li, g, &st);
        let r = (t * p.n_heads + h0 + g) * p.n_chunks + c;
        if (li < D4) {
            let at4 = abase + r * D4 * 4u + li * 4u;
            part[at4] = s.o.x;
            part[at4 + 1u] = s.o.y;
            part[at4 + 2u] = s.o.z;
            part[at4 + 3u] = s.o.w;
        }
        if (li == 0u) {
            part[2u * r] = st.m[g];
            part[2u * r + 1u] = s.l;
        }
    }
}
