// layer_norm: y[r, i] = (x[r, i] - mean) / sqrt(var + eps) * w[i] + b[i], per row of d.
// One workgroup of 64 per row; two tree reductions (mean, then variance).
// Dispatch: (rows, 1, 1).
// Params: norm::NormParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 64>;

fn reduce(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st >>= 1u) {
        if (li < st) {
            red[li] += red[li + st];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let base = wg.x * p.d;
    var s = 0.0;
    for (var i = li; i < p.d; i += 64u) {
        s += x[base + i];
    }
    let mean = reduce(li, s) / f32(p.d);
    var v = 0.0;
    for (var i = li; i < p.d; i += 64u) {
        let c = x[base + i] - mean;
        v += c * c;
    }
    let inv = inverseSqrt(reduce(li, v) / f32(p.d) + p.eps);
    for (var i = li; i < p.d; i += 64u) {
        y[base + i] = (x[base + i] - mean) * inv * w[i] + bias[i];
    }
}
