// matvec: y[y_off + t * y_ld + r] = sum_c W[r, c] * x[x_off + t * k + c], for the rows r of
// one weight part and the m tokens t (gid.y). Decode's linear layer (m = 1), and prefill's
// for quantized weights on CPU adapters, where it beats the tiled matmul. W is (n, k) in the weight layout of any dtype (a `weights_*`
// snippet is prepended: w_nb, w_dot); x, y are f32. Each invocation computes ROWS
// consecutive rows, walking them one 16-byte unit at a time with f32 accumulation; the
// x values of a unit are loaded once (uniform across invocations) for all ROWS rows. No
// barriers. WG (an override constant) is 8 on CPU adapters, where more, smaller workgroups
// spread better over threads, and 64 elsewhere.
// Dispatch: (ceil(ceil(n / ROWS) / WG), m, 1).
struct Params {
    n: u32,
    k: u32,
    x_off: u32,
    y_off: u32,
    soff: u32,
    m: u32,
    y_ld: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// The same buffer as x, read 16 bytes at a time when x_off and k are multiples of 4.
@group(0) @binding(4) var<storage, read> x4: array<vec4<f32>>;

override WG: u32 = 64u;
const ROWS: u32 = 8u;

fn xv(x_off: u32, c: u32) -> vec4<f32> {
    let i = x_off + c;
    if ((x_off | p.k) % 4u == 0u) {
        return select(vec4<f32>(0.0), x4[i / 4u], c < p.k);
    }
    if (c + 3u < p.k) {
        return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
    }
    return vec4<f32>(
        select(0.0, x[i], c < p.k),
        select(0.0, x[i + 1u], c + 1u < p.k),
        select(0.0, x[i + 2u], c + 2u < p.k),
        select(0.0, x[i + 3u], c + 3u < p.k),
    );
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r0 = gid.x * ROWS;
    let t = gid.y;
    if (r0 >= p.n || t >= p.m) {
        return;
    }
    let x_off = p.x_off + t * p.k;
    var acc: array<f32, ROWS>;
    let nb = w_nb();
    for (var b = 0u; b < nb; b++) {
        var xs: array<vec4<f32>, WV>;
        var x4 = vec4<f32>(0.0);
        for (var j = 0u; j < WV; j++) {
            xs[j] = xv(x_off, b * WB + 4u * j);
            x4 += xs[j];
        }
        let xsum = x4.x + x4.y + x4.z + x4.w;
        for (var r = 0u; r < ROWS; r++) {
            acc[r] += w_dot(min(r0 + r, p.n - 1u), b, &xs, xsum);
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        if (r0 + r < p.n) {
            y[p.y_off + t * p.y_ld + r0 + r] = acc[r];
        }
    }
}
