// paged_attention_sg: paged_attention laid out for CPU adapters, as attention_split_sg is
// attention_lane's: the same rows, positions and online softmax, but a workgroup is 8
// invocations spread across head_dim (invocation li owns the 16-byte units li, li + 8, ...
// of q, K, V and the output: at most E = ceil(head_dim / 32) vec4 of q and of its
// accumulator per head in registers, where paged_attention keeps all of head_dim per
// invocation, which spills), a score is the subgroupAdd of the 8 partial dot products, and
// a workgroup serves G query heads that share one KV head, loading each K and V row once
// for all of them (paged_attention loads it once per query head; on lavapipe the loads,
// each split into one per invocation, are most of the work). Each head's values are the
// same expressions in the same order whatever G is, and a row's do not depend on the other
// rows of the dispatch (batch invariance). Needs the SUBGROUP feature with subgroups of at
// least 8 invocations (the workgroup is one subgroup) and head_dim % 4 == 0 (<= 256). No
// workgroup memory, no barriers.
// A workgroup also serves T consecutive rows: those of one sequence (a prompt's rows in a
// prefill step) walk its positions together and share the loads too; a run of rows of
// another sequence walks again (a decode batch's rows each walk their own).
// G, E, FULL (head_dim % 32 == 0: every invocation has all E units, so no test guards them)
// and T are constants of the variant (Variant::Sg; common/attention_sg.wgsl).
// Dispatch: (n_heads / G, ceil(n_rows / T), 1).
// Params, bindings 0-7 and paged_first_seen: common/paged_attention_params.wgsl.

// NEG: common/attention_sg.wgsl; G, E, FULL and T: the variant's constants.

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h0 = wg.x * G;
    let t0 = wg.y * T;
    if (t0 >= p.n_rows) {
        return;
    }
    let d4 = p.head_dim / 4u;
    let kvh = h0 / (p.n_heads / p.n_kv);
    // Row t0 + u (u < T; past the last row: the last row again, never written) belongs to
    // sequence sq[u] and sees its positions lo[u] ..= at[u].
    let n = min(T, p.n_rows - t0);
    var sq: array<u32, T>;
    var at: array<u32, T>;
    var lo: array<u32, T>;
    for (var u = 0u; u < T; u++) {
        let t = min(t0 + u, p.n_rows - 1u);
        sq[u] = min(seq[t], p.n_seqs - 1u);
        at[u] = min(pos[t], p.max_blocks * p.block_size - 1u);
        lo[u] = paged_first_seen(at[u]);
    }
    var qv: array<array<array<vec4<f32>, E>, G>, T>;
    var acc: array<array<array<vec4<f32>, E>, G>, T>;
    var m: array<array<f32, G>, T>;
    var l: array<array<f32, G>, T>;
    for (var u = 0u; u < T; u++) {
        for (var g = 0u; g < G; g++) {
            let qb = (min(t0 + u, p.n_rows - 1u) * p.n_heads + h0 + g) * d4;
            for (var e = 0u; e < E; e++) {
                let i = li + 8u * e;
                qv[u][g][e] = select(vec4<f32>(0.0), q[qb + min(i, d4 - 1u)], i < d4);
                acc[u][g][e] = vec4<f32>(0.0);
            }
            m[u][g] = NEG;
            l[u][g] = 0.0;
        }
    }
    // Runs of consecutive rows of one sequence (a prompt's rows) walk their positions
    // together, sharing each K and V load; a row takes only the positions it sees, in
    // order, by the expressions of T = 1, so its values do not depend on its neighbours.
    var u0 = 0u;
    loop {
        if (u0 >= n) {
            break;
        }
        var u1 = u0 + 1u;
        var first = lo[u0];
        var last = at[u0];
        for (var u = 1u; u < T; u++) {
            if (u == u1 && u < n && sq[u] == sq[u0]) {
                u1 = u + 1u;
                first = min(first, lo[u]);
                last = max(last, at[u]);
            }
        }
        let tb = sq[u0] * p.max_blocks;
        for (var j = first; j <= last; j++) {
            let slot = min(
                table[tb + j / p.block_size] * p.block_size + j % p.block_size,
                p.n_slots - 1u,
            );
            let kb = (slot * p.n_kv + kvh) * d4;
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
                if (u < u0 || u >= u1 || j < lo[u] || j > at[u]) {
                    continue;
                }
                for (var g = 0u; g < G; g++) {
                    var s4 = vec4<f32>(0.0);
                    for (var e = 0u; e < E; e++) {
                        let i = li + 8u * e;
                        if (FULL || i < d4) {
                            s4 += qv[u][g][e] * kr[e];
                        }
                    }
                    var sc = subgroupAdd(s4.x + s4.y + s4.z + s4.w) * p.scale;
                    if (p.softcap > 0.0) {
                        let w = clamp(sc / p.softcap, -15.0, 15.0);
                        sc = p.softcap * (1.0 - 2.0 / (exp(2.0 * w) + 1.0));
                    }
                    let mn = max(m[u][g], sc);
                    let corr = exp(m[u][g] - mn);
                    let pj = exp(sc - mn);
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
        u0 = u1;
    }
    for (var u = 0u; u < T; u++) {
        if (u >= n) {
            break;
        }
        for (var g = 0u; g < G; g++) {
            let ob = ((t0 + u) * p.n_heads + h0 + g) * d4;
            for (var e = 0u; e < E; e++) {
                let i = li + 8u * e;
                if (FULL || i < d4) {
                    out[ob + i] = acc[u][g][e] / l[u][g];
                }
            }
        }
    }
}
