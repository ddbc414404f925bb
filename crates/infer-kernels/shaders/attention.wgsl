// attention: causal grouped-query attention of q (n_tokens, n_heads, head_dim) over a
// layer's KV caches (n_kv, capacity, head_dim), which already hold the new tokens. Token t
// is at position pos[0] + t and sees positions lo..=pos[0] + t (lo > 0 with a sliding
// window). Query head h reads KV head h / (n_heads / n_kv). Scores are scaled, optionally
// soft-capped (softcap * tanh(s / softcap)), and combined with an online softmax over tiles
// of 64 positions (flash-attention style): the running max and sum rescale the output.
// One workgroup of 64 per (head, token); each invocation scores one position of a tile
// (reading K 16 bytes at a time when head_dim % 4 == 0), exponentiates its own score once,
// and owns output dimensions li, li + 64, li + 128, li + 192 (head_dim <= 256).
// Used for prefill (n_tokens > 1) and decode (n_tokens = 1).
// Dispatch: (n_heads, n_tokens, 1).
// Params: attention::AttentionGpu (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<f32>;
@group(0) @binding(4) var<storage, read> vc: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
// The same buffers as q and kc, read 16 bytes at a time.
@group(0) @binding(6) var<storage, read> q4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> kc4: array<vec4<f32>>;

// WG, attend_tiles: common/attention_tiles.wgsl.

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let h = wg.x;
    let t = wg.y;
    let d = p.head_dim;
    let at = pos[0] + t;
    let kvh = h / (p.n_heads / p.n_kv);
    let qbase = (t * p.n_heads + h) * d;
    var lo = 0u;
    if (p.window > 0u && at + 1u > p.window) {
        lo = at + 1u - p.window;
    }
    let o = attend_tiles(li, qbase, kvh * p.capacity, lo, at);
    let acc = o.acc;
    let l = o.l;
    for (var e = 0u; e < 4u; e++) {
        let i = li + e * WG;
        if (i < d) {
            out[qbase + i] = acc[e] / l;
        }
    }
}
