// softmax over each row of n: y = exp(x - max) / sum(exp(x - max)).
// One workgroup of 64 per row. Dispatch: (rows, 1, 1).
// Params: elementwise::LenParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let base = wg.x * p.n;
    var m = -3.0e38;
    for (var i = li; i < p.n; i += 64u) {
        m = max(m, x[base + i]);
    }
    red[li] = m;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st >>= 1u) {
        if (li < st) {
            red[li] = max(red[li], red[li + st]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    var s = 0.0;
    for (var i = li; i < p.n; i += 64u) {
        s += exp(x[base + i] - mx);
    }
    red[li] = s;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st >>= 1u) {
        if (li < st) {
            red[li] += red[li + st];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    for (var i = li; i < p.n; i += 64u) {
        y[base + i] = exp(x[base + i] - mx) * inv;
    }
}
