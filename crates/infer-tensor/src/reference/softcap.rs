//! Soft-capping: `cap * tanh(x / cap)` (Gemma 2's final logits).

/// `x[i] -> cap * tanh(x[i] / cap)`, in f64.
pub fn softcap(x: &[f32], cap: f32) -> Vec<f32> {
    x.iter()
        .map(|&v| (cap as f64 * (v as f64 / cap as f64).tanh()) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn softcap_bounds_and_keeps_order() {
        let y = super::softcap(&[-100.0, -1.0, 0.0, 1.0, 100.0], 5.0);
        // |y| <= cap (tanh(20) rounds to 1 in f32, so the ends reach the cap exactly).
        assert!(y[0] >= -5.0 && y[4] <= 5.0 && y[4] > 4.99);
        assert!(y.windows(2).all(|w| w[0] < w[1]));
        assert!((y[3] - 5.0 * (0.2f32).tanh()).abs() < 1e-6);
    }
}
