// gelu: y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (mode 0, tanh)
//        or 0.5 x (1 + erf(x / sqrt 2)) (mode 1, erf).
// Dispatch: 256-wide workgroups over n, split over x and y when > 65535.
// Params: elementwise::GeluParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit).
fn erf_approx(v: f32) -> f32 {
    let z = abs(v);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, v >= 0.0);
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let v = x[i];
    if (p.mode == 0u) {
        let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
        // tanh(u) = 1 - 2 / (exp(2u) + 1), clamped so exp cannot overflow.
        let th = 1.0 - 2.0 / (exp(2.0 * clamp(u, -15.0, 15.0)) + 1.0);
        y[i] = 0.5 * v * (1.0 + th);
    } else {
        y[i] = 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476));
    }
}
