// attention_split_merge: phase 2 of split-KV decode attention. Merges the per-chunk
// partials attention_split.wgsl wrote to `part` (same Params, same layout: for row
// r = (t * n_heads + h) * n_chunks + c, m = part[2r], l = part[2r + 1], unnormalised output
// at part[2 R + r * head_dim ..], R = n_tokens * n_heads * n_chunks) with the log-sum-exp
// rule: M = max m_c, out[i] = sum_c exp(m_c - M) acc_c[i] / sum_c exp(m_c - M) l_c, over
// exactly the chunks that hold positions token t sees (lo / chunk ..= (pos[0] + t) / chunk),
// i.e. the chunks phase 1 wrote this step.
// One workgroup of 64 per (head, token); invocation li owns dimensions li, li + 64, ...
// Dispatch: (n_heads, n_tokens, 1).
// Params, bindings 0 (p) and 1 (pos): common/attention_split_params.wgsl.
@group(0) @binding(2) var<storage, read> part: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const NEG: f32 = -3.0e38;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wg.x;
    let t = wg.y;
    let d = p.head_dim;
    let at = pos[0] + t;
    let lo = first_seen(t);
    let c0 = lo / p.chunk;
    let c1 = min(at / p.chunk, p.n_chunks - 1u);
    let r0 = (t * p.n_heads + h) * p.n_chunks;
    // The chunks 4 at a time where they can be (loads first, then the sums in chunk order:
    // a GPU keeps the 4 loads in flight together), then one at a time.
    var mx = NEG;
    var c = c0;
    for (; c + 3u <= c1; c += 4u) {
        let b = 2u * (r0 + c);
        mx = max(max(mx, part[b]), max(part[b + 2u], max(part[b + 4u], part[b + 6u])));
    }
    for (; c <= c1; c++) {
        mx = max(mx, part[2u * (r0 + c)]);
    }
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    let abase = 2u * p.n_tokens * p.n_heads * p.n_chunks;
    c = c0;
    for (; c + 3u <= c1; c += 4u) {
        let b = 2u * (r0 + c);
        let w0 = exp(part[b] - mx);
        let w1 = exp(part[b + 2u] - mx);
        let w2 = exp(part[b + 4u] - mx);
        let w3 = exp(part[b + 6u] - mx);
        let l0 = part[b + 1u];
        let l1 = part[b + 3u];
        let l2 = part[b + 5u];
        let l3 = part[b + 7u];
        l += w0 * l0;
        l += w1 * l1;
        l += w2 * l2;
        l += w3 * l3;
        let cb = abase + (r0 + c) * d;
        for (var e = 0u; e < 4u; e++) {
            let i = li + e * WG;
            if (i < d) {
                let a0 = part[cb + i];
                let a1 = part[cb + d + i];
                let a2 = part[cb + 2u * d + i];
                let a3 = part[cb + 3u * d + i];
                acc[e] += w0 * a0;
                acc[e] += w1 * a1;
                acc[e] += w2 * a2;
                acc[e] += w3 * a3;
            }
        }
    }
    for (; c <= c1; c++) {
        let w = exp(part[2u * (r0 + c)] - mx);
        l += w * part[2u * (r0 + c) + 1u];
        let cb = abase + (r0 + c) * d;
        for (var e = 0u; e < 4u; e++) {
            let i = li + e * WG;
            if (i < d) {
                acc[e] += w * part[cb + i];
            }
        }
    }
    let obase = (t * p.n_heads + h) * d;
    for (var e = 0u; e < 4u; e++) {
        let i = li + e * WG;
        if (i < d) {
            out[obase + i] = acc[e] / l;
        }
    }
}
