// What the GPU attention kernels with grouped heads share (attention_split_heads,
// paged_attention_heads): a workgroup of 64 invocations serves G query heads that share a
// KV head (one token or row) over tiles of (up to) 64 positions, with head_dim a constant
// of the variant so that the loops over a row have constant trip counts and a full tile's
// V loop too (the compiler unrolls them and keeps the loads in flight together).
// Per tile: invocation li scores position j0 + li for the G heads (its K row in vec4s
// against q in workgroup memory); the G tile maxima by a fixed tree in workgroup memory;
// each invocation exponentiates its own G scores once; then invocation li owns vec4 column
// li % D4 of the output (D4 = head_dim / 4) and the tile positions li / D4, li / D4 + PG,
// ... (PG = 64 / D4 position groups); at the end the PG groups' sums are added in a fixed
// order (heads_sum). Needs head_dim % 4 == 0, head_dim <= 256, and the bindings q, kc and
// vc (vec4 arrays) and p.scale, p.softcap.
// G and D4 are constants of the variant (Variant::Heads).

const WG: u32 = 64u;
const PG: u32 = WG / D4;
const NEG: f32 = -3.0e38;

// q of the G heads.
var<workgroup> qs: array<vec4<f32>, G * D4>;
// Scores (then their tile maxima, by the tree) and exps of the tile, head g at g * WG.
var<workgroup> sc: array<f32, G * WG>;
var<workgroup> pw: array<f32, G * WG>;
// The K/V row (in vec4s) of each position of the tile.
var<workgroup> rowb: array<u32, WG>;
// The position groups' sums of one head at the end.
var<workgroup> red: array<vec4<f32>, WG>;
var<workgroup> redl: array<f32, WG>;

// Each invocation's online softmax state for the G heads: running max m, sum l of
// exp(s - m) (over its position group) and unnormalised output column acc.
struct Heads {
    m: array<f32, G>,
    l: array<f32, G>,
    acc: array<vec4<f32>, G>,
}

// Loads q of the G heads from vec4 qbase on; the initial state. Every invocation calls it.
fn heads_start(li: u32, qbase: u32) -> Heads {
    for (var i = li; i < G * D4; i += WG) {
        qs[i] = q[qbase + i];
    }
    var st: Heads;
    for (var g = 0u; g < G; g++) {
        st.m[g] = NEG;
    }
    workgroupBarrier();
    return st;
}

// The tile of positions j0 ..= min(j0 + 63, last) (j0 <= last); `kb` is the K/V row (in
// vec4s) of this invocation's position j0 + li (any valid row past last). Every invocation
// calls it (it has barriers).
fn heads_tile(li: u32, j0: u32, last: u32, kb: u32, st: ptr<function, Heads>) {
    let j = j0 + li;
    rowb[li] = kb;
    var s: array<f32, G>;
    if (j <= last) {
        var d: array<vec4<f32>, G>;
        for (var u = 0u; u < D4; u++) {
            let kv = kc[kb + u];
            for (var g = 0u; g < G; g++) {
                d[g] += qs[g * D4 + u] * kv;
            }
        }
        for (var g = 0u; g < G; g++) {
            var v = (d[g].x + d[g].y + d[g].z + d[g].w) * p.scale;
            if (p.softcap > 0.0) {
                let u = clamp(v / p.softcap, -15.0, 15.0);
                v = p.softcap * (1.0 - 2.0 / (exp(2.0 * u) + 1.0));
            }
            s[g] = v;
        }
    } else {
        for (var g = 0u; g < G; g++) {
            s[g] = NEG;
        }
    }
    for (var g = 0u; g < G; g++) {
        sc[g * WG + li] = s[g];
    }
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w >>= 1u) {
        if (li < w) {
            for (var g = 0u; g < G; g++) {
                sc[g * WG + li] = max(sc[g * WG + li], sc[g * WG + li + w]);
            }
        }
        workgroupBarrier();
    }
    for (var g = 0u; g < G; g++) {
        let tmax = max((*st).m[g], sc[g * WG]);
        pw[g * WG + li] = select(0.0, exp(s[g] - tmax), j <= last);
        let corr = exp((*st).m[g] - tmax);
        (*st).l[g] *= corr;
        (*st).acc[g] *= corr;
        (*st).m[g] = tmax;
    }
    workgroupBarrier();
    let cnt = min(WG, last + 1u - j0);
    let cg = li % D4;
    let pg = li / D4;
    if (pg < PG) {
        if (cnt == WG) {
            for (var i = 0u; i < (WG + PG - 1u) / PG; i++) {
                let jj = pg + i * PG;
                if (jj < WG) {
                    let v = vc[rowb[jj] + cg];
                    for (var g = 0u; g < G; g++) {
                        let pj = pw[g * WG + jj];
                        (*st).l[g] += pj;
                        (*st).acc[g] += pj * v;
                    }
                }
            }
        } else {
            for (var jj = pg; jj < cnt; jj += PG) {
                let v = vc[rowb[jj] + cg];
                for (var g = 0u; g < G; g++) {
                    let pj = pw[g * WG + jj];
                    (*st).l[g] += pj;
                    (*st).acc[g] += pj * v;
                }
            }
        }
    }
    workgroupBarrier();
}

// Head g's unnormalised output column li (valid at li < D4) and sum l (valid at li < D4),
// added over the position groups in group order. Every invocation calls it (barriers).
struct HeadSum {
    o: vec4<f32>,
    l: f32,
}

fn heads_sum(li: u32, g: u32, st: ptr<function, Heads>) -> HeadSum {
    let cg = li % D4;
    let pg = li / D4;
    if (pg < PG) {
        red[li] = (*st).acc[g];
        if (cg == 0u) {
            redl[pg] = (*st).l[g];
        }
    }
    workgroupBarrier();
    var r: HeadSum;
    if (li < D4) {
        r.o = red[li];
        r.l = redl[0];
        for (var k = 1u; k < PG; k++) {
            r.o += red[k * D4 + li];
            r.l += redl[k];
        }
    }
    workgroupBarrier();
    return r;
}
