// softcap: in place, x[i] = cap * tanh(x[i] / cap) for i < n (Gemma 2's final-logit
// soft-capping; it keeps the order of the values, so the argmax, but the logits change).
// Bindings: 0 params, 1 x (read_write).
// Dispatch: 256-wide workgroups over n, split over x and y when > 65535.
// Params: select::SoftcapParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    // tanh(u) = (e^2u - 1) / (e^2u + 1), clamped so exp cannot overflow (tanh(15) == 1 in f32).
    let u = clamp(x[i] / p.cap, -15.0, 15.0);
    let e = exp(2.0 * u);
    x[i] = p.cap * ((e - 1.0) / (e + 1.0));
}
