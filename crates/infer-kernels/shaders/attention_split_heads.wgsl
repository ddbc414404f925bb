// attention_split_heads: phase 1 of split-KV decode attention made for GPUs. The maths, the
// Params and the partials of attention_split.wgsl (row r = (t * n_heads + h) * n_chunks + c:
// part[2r] = running max m, part[2r + 1] = sum l of exp(s - m), part[2 R + r * head_dim + i]
// = sum of exp(s - m) v[i]; merged by attention_split_merge.wgsl), laid out so that a GPU
// waits on few loads in turn:
// - a workgroup serves a chunk for the G query heads that share a KV head (one token), and
//   loads each K and V row of the chunk once for all of them;
// - head_dim is a constant of the variant, so the loops over a row have constant trip
//   counts and a full tile's V loop too: the compiler unrolls them and keeps the loads in
//   flight together. (attention_split's invocations each walk 64 positions one load after
//   another: ~70 us per layer on an H200, whatever the context.)
// Per tile of (up to) 64 positions: invocation li scores position j0 + li for the G heads
// (its K row in vec4s against q in workgroup memory); the G tile maxima by a fixed tree in
// workgroup memory; each invocation exponentiates its own G scores once; then invocation
// li owns vec4 column li % D4 of the output (D4 = head_dim / 4) and the tile positions
// li / D4, li / D4 + PG, ... (PG = 64 / D4 position groups), and at the end the PG groups'
// sums are added in a fixed order. Needs head_dim % 4 == 0 and head_dim <= 256.
// Variant number (TOKENS block, set by the launcher): G - 1 in bits 0-2, D4 - 1 in bits 3-8.
// Dispatch: (n_chunks, n_heads / G, n_tokens).
// Params, bindings 0 (p) and 1 (pos): common/attention_split_params.wgsl.
@group(0) @binding(2) var<storage, read> q4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> kc4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> vc4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

// TOKENS begin
const TOK: u32 = 1u;
// TOKENS end
const G: u32 = ((TOK - 1u) & 7u) + 1u;
const D4: u32 = (((TOK - 1u) >> 3u) & 63u) + 1u;
const WG: u32 = 64u;
const PG: u32 = WG / D4;
const NEG: f32 = -3.0e38;

// q of the G heads.
var<workgroup> qs: array<vec4<f32>, G * D4>;
// Scores (then their tile maxima, by the tree) and exps of the tile, head g at g * WG.
var<workgroup> sc: array<f32, G * WG>;
var<workgroup> pw: array<f32, G * WG>;
// The position groups' sums of one head at the end.
var<workgroup> red: array<vec4<f32>, WG>;
var<workgroup> redl: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let c = wg.x;
    let h0 = wg.y * G;
    let t = wg.z;
    // This chunk's seen positions (the same for the whole workgroup).
    let span = chunk_span(c, t);
    let first = span.first;
    let last = span.last;
    if (first > last) {
        return;
    }
    let kvh = h0 / (p.n_heads / p.n_kv);
    let cbase = kvh * p.capacity;
    let qbase = (t * p.n_heads + h0) * D4;
    for (var i = li; i < G * D4; i += WG) {
        qs[i] = q4[qbase + i];
    }
    let cg = li % D4;
    let pg = li / D4;
    var m: array<f32, G>;
    var l: array<f32, G>;
    var acc: array<vec4<f32>, G>;
    for (var g = 0u; g < G; g++) {
        m[g] = NEG;
    }
    workgroupBarrier();
    for (var j0 = first; j0 <= last; j0 += WG) {
        let j = j0 + li;
        var s: array<f32, G>;
        if (j <= last) {
            let kb = (cbase + j) * D4;
            var d: array<vec4<f32>, G>;
            for (var u = 0u; u < D4; u++) {
                let kv = kc4[kb + u];
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
        for (var st = WG / 2u; st > 0u; st >>= 1u) {
            if (li < st) {
                for (var g = 0u; g < G; g++) {
                    sc[g * WG + li] = max(sc[g * WG + li], sc[g * WG + li + st]);
                }
            }
            workgroupBarrier();
        }
        for (var g = 0u; g < G; g++) {
            let tmax = max(m[g], sc[g * WG]);
            pw[g * WG + li] = select(0.0, exp(s[g] - tmax), j <= last);
            let corr = exp(m[g] - tmax);
            l[g] *= corr;
            acc[g] *= corr;
            m[g] = tmax;
        }
        workgroupBarrier();
        let cnt = min(WG, last + 1u - j0);
        if (pg < PG) {
            let vb = (cbase + j0) * D4 + cg;
            if (cnt == WG) {
                for (var i = 0u; i < (WG + PG - 1u) / PG; i++) {
                    let jj = pg + i * PG;
                    if (jj < WG) {
                        let v = vc4[vb + jj * D4];
                        for (var g = 0u; g < G; g++) {
                            let pj = pw[g * WG + jj];
                            l[g] += pj;
                            acc[g] += pj * v;
                        }
                    }
                }
            } else {
                for (var jj = pg; jj < cnt; jj += PG) {
                    let v = vc4[vb + jj * D4];
                    for (var g = 0u; g < G; g++) {
                        let pj = pw[g * WG + jj];
                        l[g] += pj;
                        acc[g] += pj * v;
                    }
                }
            }
        }
        workgroupBarrier();
    }
    // Each head's sums over the position groups, in group order.
    let abase = 2u * p.n_tokens * p.n_heads * p.n_chunks;
    for (var g = 0u; g < G; g++) {
        if (pg < PG) {
            red[li] = acc[g];
            if (cg == 0u) {
                redl[pg] = l[g];
            }
        }
        workgroupBarrier();
        let r = (t * p.n_heads + h0 + g) * p.n_chunks + c;
        if (li < D4) {
            var o = red[li];
            for (var k = 1u; k < PG; k++) {
                o += red[k * D4 + li];
            }
            let at4 = abase + r * D4 * 4u + li * 4u;
            part[at4] = o.x;
            part[at4 + 1u] = o.y;
            part[at4 + 2u] = o.z;
            part[at4 + 3u] = o.w;
        }
        if (li == 0u) {
            var lt = redl[0];
            for (var k = 1u; k < PG; k++) {
                lt += redl[k];
            }
            part[2u * r] = m[g];
            part[2u * r + 1u] = lt;
        }
        workgroupBarrier();
    }
}
