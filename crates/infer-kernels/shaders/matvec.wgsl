// matvec: y[y_off + r] = sum_c W[r, c] * x[x_off + c], for the rows r of one weight part.
// Decode's linear layer. W is (n, k) in any weight dtype (a `weights_*` snippet is prepended);
// x, y are f32. Each invocation computes ROWS consecutive rows, walking the row one block
// at a time with f32 accumulation; no barriers (they are costly on CPU adapters).
// Dispatch: ceil(ceil(n / ROWS) / 64) workgroups of 64, split over x and y when > 65535.
struct Params {
    n: u32,
    k: u32,
    x_off: u32,
    y_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const ROWS: u32 = 4u;

fn xv(c: u32) -> vec4<f32> {
    let i = p.x_off + c;
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

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r0 = (gid.x + gid.y * nwg.x * 64u) * ROWS;
    if (r0 >= p.n) {
        return;
    }
    var acc = vec4<f32>(0.0);
    let nb = (p.k + WB - 1u) / WB;
    for (var b = 0u; b < nb; b++) {
        var xs: array<vec4<f32>, WB / 4u>;
        var xsum = 0.0;
        for (var j = 0u; j < WB; j += 4u) {
            let v = xv(b * WB + j);
            xs[j / 4u] = v;
            xsum += v.x + v.y + v.z + v.w;
        }
        for (var r = 0u; r < ROWS; r++) {
            let row = min(r0 + r, p.n - 1u);
            let sc = w_scale(row, b);
            var s = 0.0;
            for (var j = 0u; j < WB; j += 4u) {
                s += dot(w_q4(row, b, j), xs[j / 4u]);
            }
            acc[r] += sc.x * s + sc.y * xsum;
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        if (r0 + r < p.n) {
            y[p.y_off + r0 + r] = acc[r];
        }
    }
}
