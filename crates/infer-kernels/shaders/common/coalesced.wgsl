// What matvec_coalesced and matvec_glu_coalesced share (prepended after matvec_io.wgsl): the
// GPU layout (a workgroup of LANES lanes owns R consecutive rows of one token; lane l walks
// the rows' 16-byte units l, l + LANES, ...), x loads with an optional RMSNorm folded in, and
// the fixed tree that adds the lanes' partial sums. The kernel defines NACC, the sums each
// lane keeps (R per weight it reads).
const LANES: u32 = 64u;
const R: u32 = 4u;

// The RMSNorm weight, read when p.norm != 0: x is then used as
// x / sqrt(mean(x^2) + p.eps) * (p.w_offset + nw), the rms_norm kernel's xn.
@group(0) @binding(5) var<storage, read> nw: array<f32>;

var<workgroup> part: array<f32, NACC * LANES>;
var<workgroup> sq: array<f32, LANES>;

// 1 / sqrt(mean(x^2) + eps) over the k elements of the token at x_off, summed exactly as
// the rms_norm kernel sums them (lane l: elements l, l + 64, ...; then the same tree), so
// the normed x are its bits. Every lane calls it (it has barriers).
fn norm_inv(x_off: u32, l: u32) -> f32 {
    var s = 0.0;
    for (var i = l; i < p.k; i += LANES) {
        let v = x[x_off + i];
        s += v * v;
    }
    sq[l] = s;
    workgroupBarrier();
    for (var st = LANES / 2u; st > 0u; st >>= 1u) {
        if (l < st) {
            sq[l] += sq[l + st];
        }
        workgroupBarrier();
    }
    return inverseSqrt(sq[0] / f32(p.k) + p.eps);
}

// 4 elements of the norm weight from element c (0 past k).
fn nwv(c: u32) -> vec4<f32> {
    return vec4<f32>(
        select(0.0, nw[c], c < p.k),
        select(0.0, nw[c + 1u], c + 1u < p.k),
        select(0.0, nw[c + 2u], c + 2u < p.k),
        select(0.0, nw[c + 3u], c + 3u < p.k),
    );
}

// Unit b's WV vec4s of the token's x (normed with `inv` when p.norm != 0) and their sum.
struct XUnit {
    xs: array<vec4<f32>, WV>,
    sum: f32,
}

fn x_unit(x_off: u32, b: u32, inv: f32) -> XUnit {
    var u: XUnit;
    var s4 = vec4<f32>(0.0);
    for (var j = 0u; j < WV; j++) {
        let c = b * WB + 4u * j;
        var v = xv(x_off, c);
        if (p.norm != 0u) {
            v = v * inv * (p.w_offset + nwv(c));
        }
        u.xs[j] = v;
        s4 += v;
    }
    u.sum = s4.x + s4.y + s4.z + s4.w;
    return u;
}

// Adds each lane's NACC sums over the workgroup by a fixed tree (the same order whatever
// m is): sum a ends in part[a * LANES]. Every lane calls it.
fn reduce_lanes(acc: array<f32, NACC>, l: u32) {
    for (var a = 0u; a < NACC; a++) {
        part[a * LANES + l] = acc[a];
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        if (l < s) {
            for (var a = 0u; a < NACC; a++) {
                part[a * LANES + l] += part[a * LANES + l + s];
            }
        }
        workgroupBarrier();
    }
}
