// What the paged attention kernels share (paged_attention, paged_attention_sg): their
// parameters, bindings and the first position a row sees.
// Params: paged::PagedAttentionGpu (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;
@group(0) @binding(2) var<storage, read> seq: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> kc: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> vc: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> out: array<vec4<f32>>;

// The first position row t (at position `at`) sees: 0, or past a sliding window.
fn paged_first_seen(at: u32) -> u32 {
    if (p.window > 0u && at + 1u > p.window) {
        return at + 1u - p.window;
    }
    return 0u;
}
