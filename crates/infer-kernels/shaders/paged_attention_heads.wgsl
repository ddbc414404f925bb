// paged_attention_heads: paged_attention.wgsl's maths (row r at position pos[r] of
// sequence seq[r] attends to that sequence's positions lo..=pos[r] in the paged caches)
// laid out for GPUs as attention_split_heads is (common/attention_heads.wgsl): a workgroup
// of 64 per (group of G query heads sharing a KV head, row) walks the row's positions in
// tiles of 64, loading each K and V row once for the G heads, with unrolled row loops.
// (paged_attention's invocations each walk every position one load after another, the
// design a GPU serves slowest.) A row's arithmetic does not depend on the other rows (batch invariance).
// Dispatch: (n_heads / G, n_rows, 1).
// Params, bindings 0-7 and paged_first_seen: common/paged_attention_params.wgsl; G, D4,
// the tiles and heads_sum: common/attention_heads.wgsl.

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h0 = wg.x * G;
    let t = wg.y;
    let s = min(seq[t], p.n_seqs - 1u);
    let at = min(pos[t], p.max_blocks * p.block_size - 1u);
    let kvh = h0 / (p.n_heads / p.n_kv);
    var st = heads_start(li, (t * p.n_heads + h0) * D4);
    for (var j0 = paged_first_seen(at); j0 <= at; j0 += WG) {
        let j = min(j0 + li, at);
        let slot = min(
            table[s * p.max_blocks + j / p.block_size] * p.block_size + j % p.block_size,
            p.n_slots - 1u,
        );
        heads_tile(li, j0, at, (slot * p.n_kv + kvh) * D4, &st);
    }
    for (var g = 0u; g < G; g++) {
        let r = heads_sum(li, g, &st);
        if (li < D4) {
            out[(t * p.n_heads + h0 + g) * D4 + li] = r.o / r.l;
        }
    }
}
