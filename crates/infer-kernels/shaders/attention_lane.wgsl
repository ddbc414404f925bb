// attention_lane: the same maths as attention.wgsl (causal grouped-query attention of q
// (n_tokens, n_heads, head_dim) over a layer's KV caches (n_kv, capacity, head_dim), token t
// at position pos[0] + t, optional sliding window and soft-capping) with one invocation per
// (token, head) walking its positions in order with an online softmax: no workgroup memory
// and no barriers, which CPU adapters execute far faster than the tiled kernel. A
// workgroup is 8 consecutive tokens of one head; they step through the positions together
// (the loop bounds come from the workgroup id), so each K and V row read is the same for
// every invocation, and each masks the positions it must not see. With fewer than 8 tokens
// (decode) a workgroup is instead 8 consecutive (token, head) pairs (`heads_in_lanes`), so
// no lanes sit idle. Needs head_dim % 4 == 0 (<= 256); q, caches and out are read and
// written 16 bytes at a time.
// Dispatch: (ceil(n_tokens / 8), n_heads, 1), or (ceil(n_tokens * n_heads / 8), 1, 1)
// with heads_in_lanes.
// Params: attention::AttentionGpu (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;

const NEG: f32 = -3.0e38;

@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    var h = wg.y;
    var t = gid.x;
    // This workgroup's tokens are t0 ..= t1: positions lo(t0) ..= pos[0] + t1 cover them all.
    var t0 = wg.x * 8u;
    var t1 = min(t0 + 7u, p.n_tokens - 1u);
    if (p.heads_in_lanes != 0u) {
        t = gid.x / p.n_heads;
        h = gid.x % p.n_heads;
        t0 = min(t, p.n_tokens - 1u);
        t1 = t0;
    }
    let d4 = p.head_dim / 4u;
    let kvh = h / (p.n_heads / p.n_kv);
    let at = pos[0] + min(t, p.n_tokens - 1u);
    var lo = 0u;
    if (p.window > 0u && at + 1u > p.window) {
        lo = at + 1u - p.window;
    }
    var lo0 = 0u;
    if (p.window > 0u && pos[0] + t0 + 1u > p.window) {
        lo0 = pos[0] + t0 + 1u - p.window;
    }
    let idx = min(t, p.n_tokens - 1u) * p.n_heads + h;
    var qv: array<vec4<f32>, 64>;
    var acc: array<vec4<f32>, 64>;
    for (var i = 0u; i < d4; i++) {
        qv[i] = q[idx * d4 + i];
        acc[i] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;
    for (var j = lo0; j <= pos[0] + t1; j++) {
        let kb = (kvh * p.capacity + j) * d4;
        var s4 = vec4<f32>(0.0);
        for (var i = 0u; i < d4; i++) {
            s4 += qv[i] * kc[kb + i];
        }
        var s = (s4.x + s4.y + s4.z + s4.w) * p.scale;
        if (p.softcap > 0.0) {
            let u = clamp(s / p.softcap, -15.0, 15.0);
            s = p.softcap * (1.0 - 2.0 / (exp(2.0 * u) + 1.0));
        }
        // Positions outside lo ..= at weigh nothing.
        let seen = j >= lo && j <= at;
        s = select(NEG, s, seen);
        if (s > m) {
            let corr = exp(m - s);
            l *= corr;
            for (var i = 0u; i < d4; i++) {
                acc[i] *= corr;
            }
            m = s;
        }
        let pj = select(0.0, exp(s - m), seen);
        l += pj;
        for (var i = 0u; i < d4; i++) {
            acc[i] += pj * vc[kb + i];
        }
    }
    if (t < p.n_tokens) {
        for (var i = 0u; i < d4; i++) {
            out[idx * d4 + i] = acc[i] / l;
        }
    }
}
