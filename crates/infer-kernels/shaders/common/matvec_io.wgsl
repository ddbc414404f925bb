// What the matvec kernels share (prepended to matvec, matvec_glu, matvec_coalesced and
// matvec_glu_coalesced after the weight snippet): unit_xs and the entry point's ids (matvec,
// matvec_glu); their parameters (flag: matvec's
// accumulate, the glu kernels' activation; norm, eps, w_offset: the RMSNorm the coalesced
// kernels fold into x; row0 .. t0: matvec's and matvec_coalesced's split output,
// common/split_out.wgsl), the weight, x and y bindings, and xv, a unit's 4 elements of x.
// Params: matvec::MatvecParams (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// The same buffer as x, read 16 bytes at a time when x_off and k are multiples of 4.
@group(0) @binding(4) var<storage, read> x4: array<vec4<f32>>;

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

// XUNIT begin
// The ids matvec's and matvec_glu's entry points take (`lane`: unused here; the subgroup
// variant's lane, common/unit_xs_sg.wgsl).
struct Ids {
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
}

// The WV vec4s of x (from x_off) for unit b, each loaded by the invocation. (On adapters
// with subgroups of >= 8 the launcher swaps this block for common/unit_xs_sg.wgsl: the
// same values, one load per invocation.)
fn unit_xs(x_off: u32, b: u32, lane: u32) -> array<vec4<f32>, WV> {
    var xs: array<vec4<f32>, WV>;
    for (var j = 0u; j < WV; j++) {
        xs[j] = xv(x_off, b * WB + 4u * j);
    }
    return xs;
}
// XUNIT end
