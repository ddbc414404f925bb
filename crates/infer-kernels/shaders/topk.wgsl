// topk: the k largest of x[off .. off + n] as (value bits, index) pairs, best first
// (larger value first, then the lower index; NaN never selected; missing slots are
// (bits(-f32::MAX), 0xffffffff)). Two stages, one launcher:
//   stage 0: workgroup g scans items [g*chunk, min((g+1)*chunk, n)) of x (f32 bits) and
//            writes its own top k to dst[2*(g*k + r)], dst[2*(g*k + r) + 1].
//   stage 1: one workgroup merges the n = groups*k candidate pairs of src into dst[0..2k].
// Each round r picks the best item strictly after the previous winner in that order: each
// thread scans its strided slice of the chunk, then a tree reduction of 256 (k scans of a
// chunk of 2048 are 8k reads a thread).
// Bindings: 0 params, 1 src (u32: f32 bits in stage 0, pairs in stage 1), 2 dst (u32 pairs).
// Workgroup size 256. Dispatch: stage 0 (ceil(n / chunk), 1, 1); stage 1 (1, 1, 1).
struct Params {
    n: u32,
    off: u32,
    k: u32,
    chunk: u32,
    stage: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

const NONE: u32 = 0xffffffffu;

var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;
var<workgroup> win_v: u32;
var<workgroup> win_i: u32;

// Does (v, i) come before (w, j)? Larger value first, then the lower index.
fn before(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

// Item t of this stage's input: (value, index); index NONE for an empty candidate or NaN.
fn item(t: u32) -> vec2<u32> {
    if (p.stage == 0u) {
        let bits = src[p.off + t];
        let v = bitcast<f32>(bits);
        if (v != v) {
            return vec2<u32>(bits, NONE);
        }
        return vec2<u32>(bits, t);
    }
    return vec2<u32>(src[2u * t], src[2u * t + 1u]);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let start = wg.x * p.chunk;
    let end = min(start + p.chunk, p.n);
    var out_base = 0u;
    if (p.stage == 0u) {
        out_base = wg.x * p.k;
    }
    // The previous winner (nothing yet: any item comes after it).
    var pv = 0.0;
    var pi = NONE;
    var have_prev = false;
    for (var r = 0u; r < p.k; r++) {
        // This thread's best item after the previous winner.
        var mv = 0.0;
        var mi = NONE;
        for (var t = start + li; t < end; t += 256u) {
            let it = item(t);
            let v = bitcast<f32>(it.x);
            let after = !have_prev || before(pv, pi, v, it.y);
            if (it.y != NONE && after && (mi == NONE || before(v, it.y, mv, mi))) {
                mv = v;
                mi = it.y;
            }
        }
        bv[li] = mv;
        bi[li] = mi;
        workgroupBarrier();
        for (var st = 128u; st > 0u; st >>= 1u) {
            if (li < st) {
                let oi = bi[li + st];
                if (oi != NONE && (bi[li] == NONE || before(bv[li + st], oi, bv[li], bi[li]))) {
                    bv[li] = bv[li + st];
                    bi[li] = oi;
                }
            }
            workgroupBarrier();
        }
        if (li == 0u) {
            win_v = bitcast<u32>(bv[0]);
            win_i = bi[0];
            let o = 2u * (out_base + r);
            if (bi[0] == NONE) {
                dst[o] = bitcast<u32>(-3.4028235e38);
                dst[o + 1u] = NONE;
            } else {
                dst[o] = bitcast<u32>(bv[0]);
                dst[o + 1u] = bi[0];
            }
        }
        // workgroupUniformLoad: a barrier, then a value every thread agrees on.
        let wv = bitcast<f32>(workgroupUniformLoad(&win_v));
        let wi = workgroupUniformLoad(&win_i);
        if (wi == NONE) {
            // Fewer than k items: fill the remaining slots (thread 0 does it).
            if (li == 0u) {
                for (var q = r + 1u; q < p.k; q++) {
                    dst[2u * (out_base + q)] = bitcast<u32>(-3.4028235e38);
                    dst[2u * (out_base + q) + 1u] = NONE;
                }
            }
            break;
        }
        pv = wv;
        pi = wi;
        have_prev = true;
    }
}
