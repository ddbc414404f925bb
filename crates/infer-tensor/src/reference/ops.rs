//! Elementwise ops, normalisations, softmax, gather and argmax.

/// `a + b`, with `b` repeated over `a` (`b.len()` divides `a.len()`: a residual or a bias).
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 + b[i % b.len()] as f64) as f32)
        .collect()
}

/// `a * b`, with `b` repeated over `a`.
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * b[i % b.len()] as f64) as f32)
        .collect()
}

/// Per row of `d`: `x / sqrt(mean(x^2) + eps) * (weight_offset + w)`.
pub fn rms_norm(x: &[f32], w: &[f32], d: usize, eps: f32, weight_offset: f32) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let ms = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..d {
            yr[i] = (xr[i] as f64 * inv * (weight_offset as f64 + w[i] as f64)) as f32;
        }
    }
    y
}

/// Per row of `d`: `(x - mean) / sqrt(var + eps) * w + b`.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], d: usize, eps: f32) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for i in 0..d {
            yr[i] = ((xr[i] as f64 - mean) * inv * w[i] as f64 + b[i] as f64) as f32;
        }
    }
    y
}

/// Softmax over each row of `n`.
pub fn softmax(x: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks(n).zip(y.chunks_mut(n)) {
        let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = xr.iter().map(|&v| (v as f64 - max).exp()).sum();
        for i in 0..n {
            yr[i] = ((xr[i] as f64 - max).exp() / sum) as f32;
        }
    }
    y
}

/// `silu(gate) * up`.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = g as f64;
            (g / (1.0 + (-g).exp()) * u as f64) as f32
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluMode {
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
    Tanh,
    /// `0.5 x (1 + erf(x / sqrt 2))`
    Erf,
}

pub fn gelu(x: &[f32], mode: GeluMode) -> Vec<f32> {
    x.iter()
        .map(|&v| {
            let v = v as f64;
            let y = match mode {
                GeluMode::Tanh => {
                    let c = (2.0 / std::f64::consts::PI).sqrt();
                    0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
                }
                GeluMode::Erf => 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
            };
            y as f32
        })
        .collect()
}

/// Rows `ids` of `table` (`(vocab, d)`), as `(ids.len(), d)`.
pub fn embedding(table: &[f32], d: usize, ids: &[u32]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&i| table[i as usize * d..(i as usize + 1) * d].iter().copied())
        .collect()
}

/// Index of the largest value; the first one on ties. NaN is never the largest.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best as u32
}
