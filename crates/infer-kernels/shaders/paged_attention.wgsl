// paged_attention: causal grouped-query attention for rows of many sequences in one
// dispatch. Row r (query q[r], (n_heads, head_dim)) belongs to sequence seq[r] at position
// pos[r] and attends to that sequence's positions lo..=pos[r] in the paged caches (layout
// of paged_kv_write.wgsl: slot-major (n_slots, n_kv, head_dim), slot of position j =
// table[seq * max_blocks + j / block_size] * block_size + j % block_size). lo is 0, or
// pos + 1 - window with a sliding window; scores are optionally soft-capped.
// One invocation per (row, head) walks the positions in order with an online softmax, as
// attention_lane.wgsl does: no workgroup memory, no barriers, and a row's arithmetic does
// not depend on which other rows share the dispatch (batch invariance). Needs
// head_dim % 4 == 0 (<= 256); q, caches and out are read 16 bytes at a time.
// Dispatch: (ceil(n_rows * n_heads / 8), 1, 1).
// Params, bindings 0-7 and paged_first_seen: common/paged_attention_params.wgsl.

const NEG: f32 = -3.0e38;

@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x;
    if (idx >= p.n_rows * p.n_heads) {
        return;
    }
    let t = idx / p.n_heads;
    let h = idx % p.n_heads;
    let d4 = p.head_dim / 4u;
    let s = min(seq[t], p.n_seqs - 1u);
    let at = min(pos[t], p.max_blocks * p.block_size - 1u);
    let kvh = h / (p.n_heads / p.n_kv);
    let lo = paged_first_seen(at);
    var qv: array<vec4<f32>, 64>;
    var acc: array<vec4<f32>, 64>;
    for (var i = 0u; i < d4; i++) {
        qv[i] = q[idx * d4 + i];
        acc[i] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;
    for (var j = lo; j <= at; j++) {
        let slot = min(
            table[s * p.max_blocks + j / p.block_size] * p.block_size + j % p.block_size,
            p.n_slots - 1u,
        );
        let kb = (slot * p.n_kv + kvh) * d4;
        var s4 = vec4<f32>(0.0);
        for (var i = 0u; i < d4; i++) {
            s4 += qv[i] * kc[kb + i];
        }
        var sc = (s4.x + s4.y + s4.z + s4.w) * p.scale;
        if (p.softcap > 0.0) {
            let u = clamp(sc / p.softcap, -15.0, 15.0);
            sc = p.softcap * (1.0 - 2.0 / (exp(2.0 * u) + 1.0));
        }
        if (sc > m) {
            let corr = exp(m - sc);
            l *= corr;
            for (var i = 0u; i < d4; i++) {
                acc[i] *= corr;
            }
            m = sc;
        }
        let pj = exp(sc - m);
        l += pj;
        for (var i = 0u; i < d4; i++) {
            acc[i] += pj * vc[kb + i];
        }
    }
    for (var i = 0u; i < d4; i++) {
        out[idx * d4 + i] = acc[i] / l;
    }
}
