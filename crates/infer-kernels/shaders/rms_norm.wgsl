// rms_norm: y[r, i] = x[r, i] / sqrt(mean_i(x[r, i]^2) + eps) * (w_offset + w[i]).
// One workgroup of 64 per row; a tree reduction in workgroup memory.
// Dispatch: (rows, 1, 1).
// Params: norm::NormParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let base = wg.x * p.d;
    var s = 0.0;
    for (var i = li; i < p.d; i += 64u) {
        let v = x[base + i];
        s += v * v;
    }
    red[li] = s;
    workgroupBarrier();
    for (var st = 32u; st > 0u; st >>= 1u) {
        if (li < st) {
            red[li] += red[li + st];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(red[0] / f32(p.d) + p.eps);
    for (var i = li; i < p.d; i += 64u) {
        y[base + i] = x[base + i] * inv * (p.w_offset + w[i]);
    }
}
