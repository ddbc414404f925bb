// attention_split_sg: phase 1 of split-KV decode attention laid out for CPU adapters. The
// same maths, chunks and partials as attention_split.wgsl (merged by
// attention_split_merge.wgsl), but a workgroup is 8 invocations spread across head_dim
// instead of across positions: invocation li owns the 16-byte units li, li + 8, ... of q,
// K, V and the output, so each keeps at most 8 vec4 of q and of its accumulator per head in
// registers (attention_lane.wgsl keeps the whole head_dim per invocation, which spills),
// and the loads of one K or V row are contiguous across the workgroup. A score is the
// subgroupAdd of the 8 partial dot products: needs the SUBGROUP feature with subgroups of
// at least 8 invocations (so the workgroup is one subgroup), and head_dim % 4 == 0
// (<= 256). No workgroup memory, no barriers.
//
// A workgroup serves G query heads that share one KV head (grouped-query attention): it
// loads each K and V row once for all G of them, where a workgroup per query head loaded
// it G times (on lavapipe the loads, each split into one per invocation, are most of the
// work). Each head's values are computed by the same expressions, in the same order, as
// with G = 1, so they do not depend on G. An invocation walks E = ceil(head_dim / 32) of
// its units, not 8 (llvmpipe runs the masked-off iterations' arithmetic anyway), and with
// FULL (head_dim % 32 == 0) every invocation has all E, so no test guards them. Over one
// chunk (prefill) a workgroup also serves T consecutive tokens, which share the loads too;
// the positions one of them does not see leave its state unchanged. The four are constants of
// the variant (Variant::Sg). Sharing the K and V loads over G heads and walking only E units
// is why it beats one head per workgroup over 8 guarded units.
// With one chunk (chunk >= capacity) it is the whole attention: `part` is bound to the
// output, which gets acc / l, and the launcher records no merge.
// Dispatch: (n_chunks, n_heads / G, ceil(n_tokens / T)), n_chunks = ceil(capacity / chunk).
// Params, bindings 0 (p) and 1 (pos): common/attention_split_params.wgsl.
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

// NEG: common/attention_sg.wgsl; G, E, FULL and T: the variant's constants.

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wg.x;
    let h0 = wg.y * G;
    let t0 = wg.z * T;
    let d4 = p.head_dim / 4u;
    // Token t0 + u (u < T; past the last token: the last token again, its stores skipped)
    // sees positions lo[u] ..= at[u]; the workgroup walks their union within its chunk.
    var at: array<u32, T>;
    var lo: array<u32, T>;
    for (var u = 0u; u < T; u++) {
        let t = min(t0 + u, p.n_tokens - 1u);
        at[u] = pos[0] + t;
        lo[u] = first_seen(t);
    }
    let first = max(c * p.chunk, lo[0]);
    let last = min(c * p.chunk + p.chunk - 1u, at[T - 1u]);
    if (first > last) {
        return;
    }
    let kvh = h0 / (p.n_heads / p.n_kv);
    var qv: array<array<array<vec4<f32>, E>, G>, T>;
    var acc: array<array<array<vec4<f32>, E>, G>, T>;
    var m: array<array<f32, G>, T>;
    var l: array<array<f32, G>, T>;
    for (var u = 0u; u < T; u++) {
        for (var g = 0u; g < G; g++) {
            let qb = (min(t0 + u, p.n_tokens - 1u) * p.n_heads + h0 + g) * d4;
            for (var e = 0u; e < E; e++) {
                let i = li + 8u * e;
                qv[u][g][e] = select(vec4<f32>(0.0), q[qb + min(i, d4 - 1u)], i < d4);
                acc[u][g][e] = vec4<f32>(0.0);
            }
            m[u][g] = NEG;
            l[u][g] = 0.0;
        }
    }
    for (var j = first; j <= last; j++) {
        let kb = (kvh * p.capacity + j) * d4;
        var kr: array<vec4<f32>, E>;
        var vr: array<vec4<f32>, E>;
        for (var e = 0u; e < E; e++) {
            let i = li + 8u * e;
            if (FULL || i < d4) {
                kr[e] = kc[kb + i];
                vr[e] = vc[kb + i];
            }
        }
        for (var u = 0u; u < T; u++) {
            // A position token u does not see weighs nothing: its score is NEG, so the
            // max, the sum and the accumulator keep their values (corr = exp(0) = 1,
            // pj = 0). Seen positions take exactly the expressions of T = 1.
            let seen = j >= lo[u] && j <= at[u];
            for (var g = 0u; g < G; g++) {
                var s4 = vec4<f32>(0.0);
                for (var e = 0u; e < E; e++) {
                    let i = li + 8u * e;
                    if (FULL || i < d4) {
                        s4 += qv[u][g][e] * kr[e];
                    }
                }
                var s = subgroupAdd(s4.x + s4.y + s4.z + s4.w) * p.scale;
                if (p.softcap > 0.0) {
                    let w = clamp(s / p.softcap, -15.0, 15.0);
                    s = p.softcap * (1.0 - 2.0 / (exp(2.0 * w) + 1.0));
                }
                s = select(NEG, s, seen);
                let mn = max(m[u][g], s);
                let corr = exp(m[u][g] - mn);
                let pj = select(0.0, exp(s - mn), seen);
                m[u][g] = mn;
                l[u][g] = l[u][g] * corr + pj;
                for (var e = 0u; e < E; e++) {
                    let i = li + 8u * e;
                    if (FULL || i < d4) {
                        acc[u][g][e] = acc[u][g][e] * corr + pj * vr[e];
                    }
                }
            }
        }
    }
    // One chunk (prefill on CPU adapters: a workgroup walks all of its tokens' positions):
    // `part` is the output itself, written normalized, and there is no merge.
    if (p.n_chunks == 1u) {
        for (var u = 0u; u < T; u++) {
            if (t0 + u >= p.n_tokens) {
                break;
            }
            for (var g = 0u; g < G; g++) {
                let ob = ((t0 + u) * p.n_heads + h0 + g) * p.head_dim;
                for (var e = 0u; e < E; e++) {
                    let i = li + 8u * e;
                    if (FULL || i < d4) {
                        let o = acc[u][g][e] / l[u][g];
                        part[ob + 4u * i] = o.x;
                        part[ob + 4u * i + 1u] = o.y;
                        part[ob + 4u * i + 2u] = o.z;
                        part[ob + 4u * i + 3u] = o.w;
                    }
                }
            }
        }
        return;
    }
    // Several chunks: T is 1 (the launcher's rule), so the workgroup's one token has
    // positions in this chunk.
    for (var g = 0u; g < G; g++) {
        let r = (t0 * p.n_heads + h0 + g) * p.n_chunks + c;
        if (li == 0u) {
            part[2u * r] = m[0][g];
            part[2u * r + 1u] = l[0][g];
        }
        let abase = 2u * p.n_tokens * p.n_heads * p.n_chunks + r * p.head_dim;
        for (var e = 0u; e < E; e++) {
            let i = li + 8u * e;
            if (FULL || i < d4) {
                part[abase + 4u * i] = acc[0][g][e].x;
                part[abase + 4u * i + 1u] = acc[0][g][e].y;
                part[abase + 4u * i + 2u] = acc[0][g][e].z;
                part[abase + 4u * i + 3u] = acc[0][g][e].w;
            }
        }
    }
}
