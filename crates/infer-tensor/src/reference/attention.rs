//! Rotary position embeddings, the KV cache write and causal grouped-query attention.
//!
//! Layouts: activations `q`, `k`, `v` are `(n_tokens, n_heads, head_dim)`; a layer's KV cache
//! is `(n_kv_heads, capacity, head_dim)` for K and the same for V.

/// Which dimensions rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Pairs `(i, i + rotary_dim / 2)`: Hugging Face's `rotate_half` (GPT-NeoX style).
    RotateHalf,
    /// Pairs `(2i, 2i + 1)`: the original / GGUF-permuted Llama layout.
    Interleaved,
}

/// Frequency scaling read from a model's `rope_scaling`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama 3.1's piecewise scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// Inverse frequencies `theta^(-2i/rotary_dim)`, `i < rotary_dim / 2`, after scaling,
/// computed in f32 like transformers does.
pub fn rope_inv_freq(rotary_dim: usize, theta: f32, scaling: RopeScaling) -> Vec<f32> {
    let base: Vec<f32> = (0..rotary_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / rotary_dim as f32))
        .collect();
    match scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let s = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - s) * f / factor + s * f
                    }
                })
                .collect()
        }
    }
}

/// Rotates `x` (`(n_tokens, n_heads, head_dim)`) in place; token `t` is at position
/// `pos0 + t`. Only the first `2 * inv_freq.len()` dimensions rotate; `mscale` multiplies
/// cos and sin (attention scaling of some schemes; 1 otherwise).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &mut [f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    inv_freq: &[f32],
    mode: RopeMode,
    mscale: f32,
) {
    let half = inv_freq.len();
    for t in 0..n_tokens {
        for h in 0..n_heads {
            let v = &mut x[(t * n_heads + h) * head_dim..][..head_dim];
            for (i, &f) in inv_freq.iter().enumerate() {
                let angle = (pos0 + t) as f32 * f;
                let (s, c) = ((angle.sin() * mscale) as f64, (angle.cos() * mscale) as f64);
                let (a, b) = match mode {
                    RopeMode::RotateHalf => (i, i + half),
                    RopeMode::Interleaved => (2 * i, 2 * i + 1),
                };
                let (xa, xb) = (v[a] as f64, v[b] as f64);
                v[a] = (xa * c - xb * s) as f32;
                v[b] = (xb * c + xa * s) as f32;
            }
        }
    }
}

/// Writes new `k`, `v` (`(n_tokens, n_kv, head_dim)`) into the caches at `pos0`.
#[allow(clippy::too_many_arguments)]
pub fn kv_write(
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    k: &[f32],
    v: &[f32],
    n_tokens: usize,
    n_kv: usize,
    head_dim: usize,
    capacity: usize,
    pos0: usize,
) {
    for t in 0..n_tokens {
        for h in 0..n_kv {
            let src = (t * n_kv + h) * head_dim;
            let dst = (h * capacity + pos0 + t) * head_dim;
            k_cache[dst..dst + head_dim].copy_from_slice(&k[src..src + head_dim]);
            v_cache[dst..dst + head_dim].copy_from_slice(&v[src..src + head_dim]);
        }
    }
}

/// Parameters of [`attention`].
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    pub capacity: usize,
    pub pos0: usize,
    pub scale: f32,
    /// `s -> softcap * tanh(s / softcap)` when > 0.
    pub softcap: f32,
    /// Only the last `window` positions are seen when > 0.
    pub window: usize,
}

/// Causal attention of `q` (`(n_tokens, n_heads, head_dim)`) over the caches, which already
/// hold the new tokens. Query head `h` reads KV head `h / (n_heads / n_kv)`.
pub fn attention(q: &[f32], k_cache: &[f32], v_cache: &[f32], s: &AttentionShape) -> Vec<f32> {
    let d = s.head_dim;
    let group = s.n_heads / s.n_kv;
    let mut out = vec![0f32; s.n_tokens * s.n_heads * d];
    for t in 0..s.n_tokens {
        let p = s.pos0 + t;
        let lo = if s.window > 0 {
            (p + 1).saturating_sub(s.window)
        } else {
            0
        };
        for h in 0..s.n_heads {
            let qv = &q[(t * s.n_heads + h) * d..][..d];
            let kvh = h / group;
            let scores: Vec<f64> = (lo..=p)
                .map(|j| {
                    let kv = &k_cache[(kvh * s.capacity + j) * d..][..d];
                    let mut sc = qv
                        .iter()
                        .zip(kv)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * s.scale as f64;
                    if s.softcap > 0.0 {
                        sc = s.softcap as f64 * (sc / s.softcap as f64).tanh();
                    }
                    sc
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|&x| (x - max).exp()).collect();
            let sum: f64 = w.iter().sum();
            let o = &mut out[(t * s.n_heads + h) * d..][..d];
            for (i, o) in o.iter_mut().enumerate() {
                let acc: f64 = (lo..=p)
                    .zip(&w)
                    .map(|(j, &wj)| wj * v_cache[(kvh * s.capacity + j) * d + i] as f64)
                    .sum();
                *o = (acc / sum) as f32;
            }
        }
    }
    out
}

/// The `(positions, 2 * half)` table of `(cos, sin)` pairs the rope kernel reads:
/// angle = position * inv_freq[i] in f32 (as transformers computes it), times `mscale`.
pub fn rope_table(inv_freq: &[f32], positions: usize, mscale: f32) -> Vec<f32> {
    let mut t = Vec::with_capacity(positions * inv_freq.len() * 2);
    for p in 0..positions {
        for &f in inv_freq {
            let angle = p as f32 * f;
            t.push(angle.cos() * mscale);
            t.push(angle.sin() * mscale);
        }
    }
    t
}
