// A linear layer's output split by rows (prepended to matvec, matvec_coalesced and matmul,
// which declare the bindings y1 and y2 and the Params fields row0, seg1, seg2, n_all, t0):
// the weight stacks several projections' rows (a fused q/k/v projection), and row g of the
// whole weight (g = p.row0 + the part's row) of token p.t0 + t goes to y when g < p.seg1
// (at the kernel's usual index; the launcher sets y_ld = seg1), to y1 when g < p.seg2 and
// else to y2, each (tokens, its rows) row-major. Unsplit: seg1 = 0xffffffff, every row goes
// to y, and y1 and y2 are a spare buffer never written.
fn store_split(t: u32, g: u32, v: f32) -> bool {
    if (g < p.seg1) {
        return false;
    }
    if (g < p.seg2) {
        y1[(p.t0 + t) * (p.seg2 - p.seg1) + g - p.seg1] = v;
    } else {
        y2[(p.t0 + t) * (p.n_all - p.seg2) + g - p.seg2] = v;
    }
    return true;
}
