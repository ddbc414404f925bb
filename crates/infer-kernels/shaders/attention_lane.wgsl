// attention_lane: the same maths as attention.wgsl (causal grouped-query attention of q
// (n_tokens, n_heads, head_dim) over a layer's KV caches (n_kv, capacity, head_dim), token t
// at position pos[0] + t, optional sliding window and soft-capping) with one invocation per
// (token, head) walking its positions in order with an online softmax: no workgroup memory
// and no barriers, which CPU adapters execute far faster than the tiled kernel. Needs
// head_dim % 4 == 0 (<= 256); q, caches and out are read and written 16 bytes at a time.
// Dispatch: (ceil(n_tokens * n_heads / 8), 1, 1).
struct Params {
    n_heads: u32,
    n_kv: u32,
    head_dim: u32,
    capacity: u32,
    n_tokens: u32,
    window: u32,
    scale: f32,
    softcap: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;

const NEG: f32 = -3.0e38;

@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x;
    if (idx >= p.n_tokens * p.n_heads) {
        return;
    }
    let t = idx / p.n_heads;
    let h = idx % p.n_heads;
    let d4 = p.head_dim / 4u;
    let at = pos[0] + t;
    let kvh = h / (p.n_heads / p.n_kv);
    var lo = 0u;
    if (p.window > 0u && at + 1u > p.window) {
        lo = at + 1u - p.window;
    }
    var qv: array<vec4<f32>, 64>;
    var acc: array<vec4<f32>, 64>;
    for (var i = 0u; i < d4; i++) {
        qv[i] = q[idx * d4 + i];
        acc[i] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;
    for (var j = lo; j <= at; j++) {
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
        if (s > m) {
            let corr = exp(m - s);
            l *= corr;
            for (var i = 0u; i < d4; i++) {
                acc[i] *= corr;
            }
            m = s;
        }
        let pj = exp(s - m);
        l += pj;
        for (var i = 0u; i < d4; i++) {
            acc[i] += pj * vc[kb + i];
        }
    }
    for (var i = 0u; i < d4; i++) {
        out[idx * d4 + i] = acc[i] / l;
    }
}
