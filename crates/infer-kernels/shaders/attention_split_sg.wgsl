// attention_split_sg: phase 1 of split-KV decode attention laid out for CPU adapters. The
// same maths, chunks, grid and partials as attention_split.wgsl (merged by
// attention_split_merge.wgsl), but a workgroup is 8 invocations spread across head_dim
// instead of across positions: invocation li owns the 16-byte units li, li + 8, ... of q,
// K, V and the output, so each keeps at most 8 vec4 of q and of its accumulator in
// registers (attention_lane.wgsl keeps the whole head_dim per invocation, which spills),
// and the loads of one K or V row are contiguous across the workgroup. A score is the
// subgroupAdd of the 8 partial dot products: needs the SUBGROUP feature with subgroups of
// at least 8 invocations (so the workgroup is one subgroup), and head_dim % 4 == 0
// (<= 256). No workgroup memory, no barriers.
// Dispatch: (n_chunks, n_heads, n_tokens), n_chunks = ceil(capacity / chunk).
// Params, bindings 0 (p) and 1 (pos): common/attention_split_params.wgsl.
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

const NEG: f32 = -3.0e38;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wg.x;
    let h = wg.y;
    let t = wg.z;
    let d4 = p.head_dim / 4u;
    let at = pos[0] + t;
    let lo = first_seen(t);
    let first = max(c * p.chunk, lo);
    let last = min(c * p.chunk + p.chunk - 1u, at);
    if (first > last) {
        return;
    }
    let kvh = h / (p.n_heads / p.n_kv);
    let qb = (t * p.n_heads + h) * d4;
    var qv: array<vec4<f32>, 8>;
    var acc: array<vec4<f32>, 8>;
    for (var e = 0u; e < 8u; e++) {
        let i = li + 8u * e;
        qv[e] = select(vec4<f32>(0.0), q[qb + min(i, d4 - 1u)], i < d4);
        acc[e] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;
    for (var j = first; j <= last; j++) {
        let kb = (kvh * p.capacity + j) * d4;
        var s4 = vec4<f32>(0.0);
        for (var e = 0u; e < 8u; e++) {
            let i = li + 8u * e;
            if (i < d4) {
                s4 += qv[e] * kc[kb + i];
            }
        }
        var s = subgroupAdd(s4.x + s4.y + s4.z + s4.w) * p.scale;
        if (p.softcap > 0.0) {
            let u = clamp(s / p.softcap, -15.0, 15.0);
            s = p.softcap * (1.0 - 2.0 / (exp(2.0 * u) + 1.0));
        }
        let mn = max(m, s);
        let corr = exp(m - mn);
        let pj = exp(s - mn);
        m = mn;
        l = l * corr + pj;
        for (var e = 0u; e < 8u; e++) {
            let i = li + 8u * e;
            if (i < d4) {
                acc[e] = acc[e] * corr + pj * vc[kb + i];
            }
        }
    }
    let r = (t * p.n_heads + h) * p.n_chunks + c;
    if (li == 0u) {
        part[2u * r] = m;
        part[2u * r + 1u] = l;
    }
    let abase = 2u * p.n_tokens * p.n_heads * p.n_chunks + r * p.head_dim;
    for (var e = 0u; e < 8u; e++) {
        let i = li + 8u * e;
        if (i < d4) {
            part[abase + 4u * i] = acc[e].x;
            part[abase + 4u * i + 1u] = acc[e].y;
            part[abase + 4u * i + 2u] = acc[e].z;
            part[abase + 4u * i + 3u] = acc[e].w;
        }
    }
}
