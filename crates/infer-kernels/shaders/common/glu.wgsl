// The gated activations of matvec_glu and matvec_glu_coalesced, act(gate) * up, as the
// swiglu and gelu (tanh) kernels compute act: p.flag 0 silu (SwiGLU), 1 gelu tanh (GeGLU).
fn silu_mul(gv: f32, uv: f32) -> f32 {
    return gv / (1.0 + exp(-gv)) * uv;
}

fn gelu_tanh_mul(v: f32, uv: f32) -> f32 {
    let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    let th = 1.0 - 2.0 / (exp(2.0 * clamp(u, -15.0, 15.0)) + 1.0);
    let a = 0.5 * v * (1.0 + th);
    return a * uv;
}

fn glu(gv: f32, uv: f32) -> f32 {
    if (p.flag == 0u) {
        return silu_mul(gv, uv);
    }
    return gelu_tanh_mul(gv, uv);
}
