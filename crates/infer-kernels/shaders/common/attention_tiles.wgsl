// What attention and attention_split share: one workgroup of WG = 64 invocations runs the
// online softmax of query row q[qbase ..] over the cached positions first ..= last of the
// KV head at kc/vc[cbase * head_dim ..], in tiles of 64 positions: each invocation scores
// one position of a tile (K read 16 bytes at a time when head_dim % 4 == 0), exponentiates
// its own score once, and owns output dimensions li, li + 64, li + 128, li + 192
// (head_dim <= 256). Needs `p.head_dim`, `p.scale`, `p.softcap` and the bindings q, q4,
// kc, kc4 and vc. Every invocation of the workgroup must call it (it has barriers).

const WG: u32 = 64u;
const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, 256>;
var<workgroup> sc: array<f32, WG>;
var<workgroup> pw: array<f32, WG>;

// The running max m, the sum l of exp(s - m) and this invocation's unnormalised outputs.
struct Online {
    m: f32,
    l: f32,
    acc: vec4<f32>,
}

fn attend_tiles(li: u32, qbase: u32, cbase: u32, first: u32, last: u32) -> Online {
    let d = p.head_dim;
    for (var i = li; i < d; i += WG) {
        qs[i] = q[qbase + i];
    }
    var m = NEG;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    workgroupBarrier();
    for (var j0 = first; j0 <= last; j0 += WG) {
        let j = j0 + li;
        var s = NEG;
        if (j <= last) {
            let kb = (cbase + j) * d;
            var dotv = 0.0;
            if (d % 4u == 0u) {
                var acc4 = vec4<f32>(0.0);
                for (var i = 0u; i < d / 4u; i++) {
                    acc4 += q4[qbase / 4u + i] * kc4[kb / 4u + i];
                }
                dotv = acc4.x + acc4.y + acc4.z + acc4.w;
            } else {
                for (var i = 0u; i < d; i++) {
                    dotv += qs[i] * kc[kb + i];
                }
            }
            s = dotv * p.scale;
            if (p.softcap > 0.0) {
                let u = clamp(s / p.softcap, -15.0, 15.0);
                s = p.softcap * (1.0 - 2.0 / (exp(2.0 * u) + 1.0));
            }
        }
        sc[li] = s;
        workgroupBarrier();
        let cnt = min(WG, last + 1u - j0);
        var tmax = m;
        for (var jj = 0u; jj < cnt; jj++) {
            tmax = max(tmax, sc[jj]);
        }
        // Each invocation exponentiates its own score once.
        pw[li] = select(0.0, exp(s - tmax), li < cnt);
        workgroupBarrier();
        let corr = exp(m - tmax);
        l *= corr;
        acc *= corr;
        for (var jj = 0u; jj < cnt; jj++) {
            let pj = pw[jj];
            l += pj;
            let vb = (cbase + j0 + jj) * d;
            for (var e = 0u; e < 4u; e++) {
                let i = li + e * WG;
                if (i < d) {
                    acc[e] += pj * vc[vb + i];
                }
            }
        }
        m = tmax;
        workgroupBarrier();
    }
    return Online(m, l, acc);
}
