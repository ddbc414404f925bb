//! Top-k selection: the specification of the `topk` kernel.

/// The `k` largest of `x` as (index, value), best first: larger value first, then the
/// lower index; NaN is never chosen, so fewer than `k` come back when `x` has fewer
/// non-NaN values.
pub fn topk(x: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = x
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (i as u32, v))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lower_index_and_nan_is_skipped() {
        let x = [1.0, f32::NAN, 3.0, 3.0, -1.0];
        assert_eq!(topk(&x, 3), vec![(2, 3.0), (3, 3.0), (0, 1.0)]);
        assert_eq!(topk(&x, 10).len(), 4);
    }
}
