// argmax: out[out_idx] = the index of the largest of x[x_off .. x_off + n] (the first on
// ties; NaN never wins). One workgroup of 256: strided scan, then a tree reduction.
// Greedy decoding writes the token id straight into the next step's input buffer.
// Dispatch: (1, 1, 1).
// Params: select::ArgmaxParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

// Is (v, i) better than (bvv, bii)? Larger wins, then the lower index; NaN never wins.
fn better(v: f32, i: u32, bvv: f32, bii: u32) -> bool {
    if (v != v) {
        return false;
    }
    if (bvv != bvv) {
        return true;
    }
    return v > bvv || (v == bvv && i < bii);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32) {
    var best = 0.0;
    var idx = 0xffffffffu;
    for (var i = li; i < p.n; i += 256u) {
        let v = x[p.x_off + i];
        if (idx == 0xffffffffu || better(v, i, best, idx)) {
            best = v;
            idx = i;
        }
    }
    bv[li] = best;
    bi[li] = idx;
    workgroupBarrier();
    for (var st = 128u; st > 0u; st >>= 1u) {
        if (li < st) {
            let oi = bi[li + st];
            if (oi != 0xffffffffu && (bi[li] == 0xffffffffu || better(bv[li + st], oi, bv[li], bi[li]))) {
                bv[li] = bv[li + st];
                bi[li] = oi;
            }
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        out[p.out_idx] = select(bi[0], 0u, bi[0] == 0xffffffffu);
    }
}
