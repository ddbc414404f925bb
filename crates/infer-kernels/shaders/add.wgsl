// add (in place): a[i] = a[i] + b[i % b_len]. b is a same-sized tensor (residual) or a
// row repeated over a (bias, scale). Dispatch: 256-wide workgroups over n, split over x and y.
// Params: elementwise::BinaryParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    a[i] = a[i] + b[i % p.b_len];
}
