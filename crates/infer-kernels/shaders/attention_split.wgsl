// attention_split: phase 1 of split-KV decode attention (flash-decoding). The same maths as
// attention.wgsl (causal grouped-query attention of q (n_tokens, n_heads, head_dim) over a
// layer's KV caches (n_kv, capacity, head_dim); token t at position pos[0] + t sees
// positions lo..=pos[0] + t, lo > 0 with a sliding window; scores scaled and optionally
// soft-capped; query head h reads KV head h / (n_heads / n_kv)), but the positions are cut
// into chunks of `chunk` and each (chunk, head, token) gets its own
// workgroup, so a long context spreads over many workgroups instead of one per head.
// A workgroup runs attention.wgsl's online softmax over tiles of (up to) 64 positions of
// its chunk and writes the chunk's partial result to `part`, row r = (t * n_heads + h) *
// n_chunks + c: part[2r] = running max m, part[2r + 1] = sum l of exp(s - m), and
// part[2 R + r * head_dim + i] = sum of exp(s - m) v[i] (unnormalised), R = n_tokens *
// n_heads * n_chunks. A chunk wholly outside lo..=pos[0] + t writes nothing and returns at
// once (the grid covers the capacity; the position is only known on the GPU):
// attention_split_merge.wgsl reads only the chunks that hold seen positions.
// Each invocation scores one position of a tile (K read 16 bytes at a time when
// head_dim % 4 == 0) and owns output dimensions li, li + 64, li + 128, li + 192
// (head_dim <= 256).
// Dispatch: (n_chunks, n_heads, n_tokens), n_chunks = ceil(capacity / chunk).
// Params, bindings 0 (p) and 1 (pos): common/attention_split_params.wgsl.
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<f32>;
@group(0) @binding(4) var<storage, read> vc: array<f32>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
// The same buffers as q and kc, read 16 bytes at a time.
@group(0) @binding(6) var<storage, read> q4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> kc4: array<vec4<f32>>;

// WG, attend_tiles: common/attention_tiles.wgsl.

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wg.x;
    let h = wg.y;
    let t = wg.z;
    let d = p.head_dim;
    // This chunk's seen positions (the same for the whole workgroup).
    let span = chunk_span(c, t);
    let first = span.first;
    let last = span.last;
    if (first > last) {
        return;
    }
    let kvh = h / (p.n_heads / p.n_kv);
    let qbase = (t * p.n_heads + h) * d;
    let o = attend_tiles(li, qbase, kvh * p.capacity, first, last);
    let m = o.m;
    let l = o.l;
    let acc = o.acc;
    let r = (t * p.n_heads + h) * p.n_chunks + c;
    if (li == 0u) {
        part[2u * r] = m;
        part[2u * r + 1u] = l;
    }
    let abase = 2u * p.n_tokens * p.n_heads * p.n_chunks + r * d;
    for (var e = 0u; e < 4u; e++) {
        let i = li + e * WG;
        if (i < d) {
            part[abase + i] = acc[e];
        }
    }
}
