// Reads of 16- and 32-bit values at 2-aligned byte offsets of `w: array<u32>`.
fn rd_u16(o: u32) -> u32 {
    let v = w[o >> 2u];
    return select(v & 0xffffu, v >> 16u, (o & 2u) != 0u);
}

fn rd_u32(o: u32) -> u32 {
    let i = o >> 2u;
    if ((o & 3u) == 0u) {
        return w[i];
    }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}

fn f16_at(o: u32) -> f32 {
    return unpack2x16float(rd_u16(o)).x;
}
