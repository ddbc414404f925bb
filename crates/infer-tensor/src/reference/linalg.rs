//! Matrix products. Weights are `(n, k)` row-major (a Linear layer's layout).

/// `y[r] = sum_c w[r, c] * x[c]`; `w` is `(n, k)`, `x` is `(k)`, `y` is `(n)`.
pub fn matvec(w: &[f32], x: &[f32], n: usize, k: usize) -> Vec<f32> {
    (0..n)
        .map(|r| {
            let row = &w[r * k..(r + 1) * k];
            row.iter()
                .zip(x)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

/// `y = x w^T`: `x` is `(m, k)`, `w` is `(n, k)`, `y` is `(m, n)`.
pub fn matmul(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        y[i * n..(i + 1) * n].copy_from_slice(&matvec(w, &x[i * k..(i + 1) * k], n, k));
    }
    y
}
