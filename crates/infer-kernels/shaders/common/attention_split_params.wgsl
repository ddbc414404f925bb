// What the split-KV attention kernels share (attention_split, attention_split_sg,
// attention_split_merge, attention_split_heads): their parameters, bindings 0 (them) and 1
// (pos), the first position token t sees, and the positions of a chunk it sees.
// Params: attention::SplitGpu (generated from the Rust struct, prepended by the registry).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pos: array<u32>;

// The first position token t (at position pos[0] + t) sees: 0, or past a sliding window.
fn first_seen(t: u32) -> u32 {
    let at = pos[0] + t;
    if (p.window > 0u && at + 1u > p.window) {
        return at + 1u - p.window;
    }
    return 0u;
}

// The positions of chunk c that token t sees: first ..= last (none where first > last).
struct Span {
    first: u32,
    last: u32,
}

fn chunk_span(c: u32, t: u32) -> Span {
    return Span(max(c * p.chunk, first_seen(t)), min(c * p.chunk + p.chunk - 1u, pos[0] + t));
}
