// matmul: Y[i, row0 + c] = sum_k X[i, k] * W[c, k] (Y = X W^T) for the rows c of one weight
// part. Prefill's linear layer. X is (m, k) f32; W is (n, k) in the weight layout of any
// dtype (a `weights_*` snippet is prepended: w_unit), dequantized while its tile is loaded
// (64 invocations load one weight row's 32 values each); Y is (m, y_ld).
// Tiles of 64 x 64 outputs in workgroup memory, K in steps of 32; each of the 16 x 16
// invocations keeps 4 x 4 outputs in registers.
// Dispatch: (ceil(n / 64), ceil(m / 64), 1).
// Params: linear::MatmulParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> y1: array<f32>;
@group(0) @binding(5) var<storage, read_write> y2: array<f32>;

const T: u32 = 64u;
const TK: u32 = 32u;

// Row r's vec4 u of a tile sits at r * 8 + (u ^ (r % 8)) (swz): the 16 rows of ws (and
// the 2 of xs) that a GPU warp reads at once then fall in different banks of workgroup
// memory instead of all in one (rows are 128 bytes apart). The values are the same.
var<workgroup> xs: array<vec4<f32>, 512>; // (T, TK / 4)
var<workgroup> ws: array<vec4<f32>, 512>; // (T, TK / 4)

fn swz(r: u32, u: u32) -> u32 {
    return r * 8u + (u ^ (r % 8u));
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let m0 = wg.y * T;
    let n0 = wg.x * T;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var i = 0u; i < 2u; i++) {
            let idx = li + i * 256u;
            let r = idx / 8u;
            let kk = k0 + (idx % 8u) * 4u;
            let ok = vec4<bool>(kk < p.k, kk + 1u < p.k, kk + 2u < p.k, kk + 3u < p.k);
            var xv = vec4<f32>(0.0);
            let xr = m0 + r;
            if (xr < p.m) {
                let base = xr * p.k + kk;
                if (all(ok)) {
                    xv = vec4<f32>(x[base], x[base + 1u], x[base + 2u], x[base + 3u]);
                } else {
                    xv = vec4<f32>(
                        select(0.0, x[base], ok.x),
                        select(0.0, x[base + 1u], ok.y),
                        select(0.0, x[base + 2u], ok.z),
                        select(0.0, x[base + 3u], ok.w),
                    );
                }
            }
            xs[swz(r, idx % 8u)] = xv;
        }
        if (li < T) {
            let wr = n0 + li;
            for (var u = 0u; u < TK / WB; u++) {
                let b = k0 / WB + u;
                var vals: array<vec4<f32>, WV>;
                if (wr < p.n && b < w_nb()) {
                    vals = w_unit(wr, b);
                }
                for (var j = 0u; j < WV; j++) {
                    ws[swz(li, u * WV + j)] = vals[j];
                }
            }
        }
        workgroupBarrier();
        for (var k4 = 0u; k4 < TK / 4u; k4++) {
            var a: array<vec4<f32>, 4>;
            var bb: array<vec4<f32>, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[swz(lid.y + 16u * i, k4)];
                bb[i] = ws[swz(lid.x + 16u * i, k4)];
            }
            for (var i = 0u; i < 4u; i++) {
                acc[i] += vec4<f32>(dot(a[i], bb[0]), dot(a[i], bb[1]), dot(a[i], bb[2]), dot(a[i], bb[3]));
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = m0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + lid.x + 16u * j;
            if (row < p.m && col < p.n && !store_split(row, p.row0 + col, acc[i][j])) {
                y[row * p.y_ld + p.row0 + col] = acc[i][j];
            }
        }
    }
}
