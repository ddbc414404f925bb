//! Uploading an architecture's weights by Hugging Face name, once, with a progress bar:
//! matrices in their stored dtype or re-encoded for `--quant`, fused q/k/v weights, split
//! fused weights, vectors, and the rope table.

use std::sync::Arc;

use infer_tensor::reference::{rope_inv_freq, rope_table};
use infer_tensor::{DType, Device, Tensor};

use crate::arch::Family;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::options::{LoadOptions, Quant, WeightRole};
use crate::source::{RawTensor, Source};
use crate::step::Qkv;

/// Uploads weights by Hugging Face name, once, with a progress bar.
pub(crate) struct WeightLoader<'a> {
    pub src: &'a Source,
    pub dev: Arc<Device>,
    quant: Option<Quant>,
    family: Family,
    n_layers: usize,
    /// The token embeddings serve as the output head.
    tied: bool,
    bar: indicatif::ProgressBar,
}

impl<'a> WeightLoader<'a> {
    pub fn new(
        src: &'a Source,
        dev: Arc<Device>,
        cfg: &ModelConfig,
        opts: &LoadOptions,
        n_tensors: usize,
    ) -> Self {
        let bar = if opts.progress {
            indicatif::ProgressBar::new(n_tensors as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "loading {bar:40} {pos}/{len} tensors {elapsed}",
                )
                .expect("valid template"),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        WeightLoader {
            src,
            dev,
            quant: opts.quant,
            family: cfg.arch.family,
            n_layers: cfg.n_layers,
            tied: cfg.tie_embeddings || !src.has("lm_head.weight"),
            bar,
        }
    }

    /// The dtype `--quant` asks for the matrix `name` with rows of `cols`, if any.
    fn quant_for(&self, name: &str, cols: usize) -> Option<DType> {
        let gguf = self.family.gguf_name(name).unwrap_or_default();
        let role = WeightRole::of_gguf_name(&gguf, self.tied);
        self.quant?.dtype_for(role, cols, self.n_layers)
    }

    /// A weight matrix `(rows, cols)`, kept in its stored dtype unless `--quant` asks
    /// otherwise (and its rows are whole blocks of that dtype).
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let raw = self.raw_matrix(name, shape)?;
        Ok(Tensor::upload_weights(
            &self.dev, name, shape, raw.dtype, &raw.bytes,
        )?)
    }

    /// A weight matrix's bytes as [`WeightLoader::matrix`] uploads them.
    fn raw_matrix(&self, name: &str, shape: &[usize]) -> Result<RawTensor<'a>> {
        let mut raw = self.src.get(name, shape)?;
        if let Some(q) = self.quant_for(name, shape[shape.len() - 1])
            && raw.dtype != q
        {
            raw = raw.convert(q)?;
        }
        self.bar.inc(1);
        Ok(raw)
    }

    /// The q, k and v projections `names` (`(rows[i], cols)` each) as one weight stacking
    /// their rows (uploaded once, run as one dispatch), or as three where their dtypes
    /// differ (a file may store v at a higher precision).
    pub fn qkv(&self, names: [&str; 3], rows: [usize; 3], cols: usize) -> Result<Qkv> {
        let raws = [0, 1, 2].map(|i| self.raw_matrix(names[i], &[rows[i], cols]));
        let [q, k, v] = raws;
        let raws = [q?, k?, v?];
        if raws.iter().all(|r| r.dtype == raws[0].dtype) {
            let bytes: Vec<u8> = raws.iter().flat_map(|r| r.bytes.iter().copied()).collect();
            let n = rows.iter().sum();
            let name = format!("{}+k+v", names[0]);
            let w = Tensor::upload_weights(&self.dev, &name, &[n, cols], raws[0].dtype, &bytes)?;
            return Ok(Qkv::Fused { w, rows });
        }
        let up = |i: usize| -> Result<Tensor> {
            let r = &raws[i];
            Ok(Tensor::upload_weights(
                &self.dev,
                names[i],
                &[rows[i], cols],
                r.dtype,
                &r.bytes,
            )?)
        };
        Ok(Qkv::Separate([up(0)?, up(1)?, up(2)?]))
    }

    /// A checkpoint's fused q/k/v weight (`rows`: q's, k's, v's; see
    /// [`WeightLoader::matrix_split`] for `transposed`), uploaded as it is.
    pub fn qkv_stacked(
        &self,
        name: &str,
        rows: [usize; 3],
        cols: usize,
        transposed: bool,
    ) -> Result<Qkv> {
        let raw = self.stacked_raw(name, &rows, cols, transposed)?;
        let n = rows.iter().sum();
        let w = Tensor::upload_weights(&self.dev, name, &[n, cols], raw.dtype, &raw.bytes)?;
        self.bar.inc(1);
        Ok(Qkv::Fused { w, rows })
    }

    /// The token embeddings, the untied output head (see [`WeightLoader::lm_head`]) and the
    /// final norm of a `model.`-prefixed decoder (Llama, Phi-3, Gemma).
    pub fn ends(&self, cfg: &ModelConfig) -> Result<(Tensor, Option<Tensor>, Tensor)> {
        let embed = self.matrix("model.embed_tokens.weight", &[cfg.vocab_size, cfg.hidden])?;
        let lm_head = self.lm_head(cfg)?;
        let norm = self.vector("model.norm.weight", cfg.hidden)?;
        Ok((embed, lm_head, norm))
    }

    /// The untied output head `lm_head.weight`, or None when the model ties it to the
    /// token embeddings (or the file has none).
    pub fn lm_head(&self, cfg: &ModelConfig) -> Result<Option<Tensor>> {
        if cfg.tie_embeddings || !self.src.has("lm_head.weight") {
            Ok(None)
        } else {
            self.matrix("lm_head.weight", &[cfg.vocab_size, cfg.hidden])
                .map(Some)
        }
    }

    /// A vector (norm weight, bias) as f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        let raw = self.src.get(name, &[len])?;
        Ok(Tensor::from_f32(&self.dev, name, &[len], &raw.to_f32())?)
    }

    /// A vector that only some checkpoints have (biases).
    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Tensor>> {
        if self.src.has(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The `(capacity, rotary_dim)` table of (cos, sin) pairs for the rope kernel.
    pub fn rope_table(&self, cfg: &ModelConfig, capacity: usize) -> Result<Tensor> {
        let mut inv_freq = rope_inv_freq(cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling);
        if let Source::Gguf(g) = self.src
            && let Ok(info) = g.tensor("rope_freqs.weight")
        {
            // llama.cpp stores Llama 3.1 frequency scaling as per-dimension divisors.
            let d = infer_tensor::reference::dequantize(
                g.dtype(info)?,
                g.tensor_data(info)?,
                info.n_elems() as usize,
            );
            if d.len() == inv_freq.len() {
                inv_freq.iter_mut().zip(d).for_each(|(f, d)| *f /= d);
            }
        }
        let cs = rope_table(&inv_freq, capacity, 1.0);
        Ok(Tensor::from_f32(
            &self.dev,
            "rope_cs",
            &[capacity, cfg.rotary_dim],
            &cs,
        )?)
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// A fused weight matrix split by rows into parts of `rows[i]` rows (q/k/v or gate/up
    /// projections), each kept in its stored dtype unless `--quant` asks otherwise. With
    /// `transposed` the stored tensor is `(cols, sum rows)` (GPT-2's Conv1D layout); it is
    /// transposed on load (float dtypes only).
    pub fn matrix_split(
        &self,
        name: &str,
        rows: &[usize],
        cols: usize,
        transposed: bool,
    ) -> Result<Vec<Tensor>> {
        let raw = self.stacked_raw(name, rows, cols, transposed)?;
        let row_bytes = raw.dtype.bytes_for(cols).expect("checked by stacked_raw");
        let mut out = Vec::with_capacity(rows.len());
        let mut start = 0;
        for (i, &n) in rows.iter().enumerate() {
            let bytes = &raw.bytes[start * row_bytes..(start + n) * row_bytes];
            out.push(Tensor::upload_weights(
                &self.dev,
                &format!("{name}[{i}]"),
                &[n, cols],
                raw.dtype,
                bytes,
            )?);
            start += n;
        }
        self.bar.inc(1);
        Ok(out)
    }

    /// A fused weight of `rows` (summed) x `cols` as [`WeightLoader::matrix_split`] loads
    /// it (transposed, converted for `--quant`), its rows whole blocks of its dtype.
    fn stacked_raw(
        &self,
        name: &str,
        rows: &[usize],
        cols: usize,
        transposed: bool,
    ) -> Result<RawTensor<'a>> {
        let total: usize = rows.iter().sum();
        let mut raw = if transposed {
            let raw = self.src.get(name, &[cols, total])?;
            if raw.dtype.is_quantized() {
                return Err(ModelError::BadTensor {
                    path: self.src.path(),
                    tensor: name.into(),
                    reason: format!("a transposed {} matrix is not supported", raw.dtype),
                });
            }
            let (dtype, x) = (raw.dtype, raw.to_f32());
            let mut t = vec![0f32; x.len()];
            for r in 0..cols {
                for c in 0..total {
                    t[c * cols + r] = x[r * total + c];
                }
            }
            RawTensor {
                name: name.into(),
                shape: vec![total, cols],
                dtype: DType::F32,
                bytes: std::borrow::Cow::Owned(bytemuck::cast_slice(&t).to_vec()),
            }
            .convert(dtype)?
        } else {
            let raw = self.src.get(name, &[total, cols])?;
            let dtype = raw.dtype;
            raw.convert(dtype)?
        };
        if let Some(q) = self.quant_for(name, cols)
            && raw.dtype != q
        {
            raw = raw.convert(q)?;
        }
        if raw.dtype.bytes_for(cols).is_none() {
            return Err(ModelError::BadTensor {
                path: self.src.path(),
                tensor: name.into(),
                reason: format!("rows of {cols} are not whole {} blocks", raw.dtype),
            });
        }
        Ok(raw)
    }

    /// A fused vector (bias) split into parts of `lens[i]` values, as f32.
    pub fn vector_split(&self, name: &str, lens: &[usize]) -> Result<Vec<Tensor>> {
        let total: usize = lens.iter().sum();
        let v = self.src.get(name, &[total])?.to_f32();
        let mut start = 0;
        lens.iter()
            .enumerate()
            .map(|(i, &n)| {
                let t = Tensor::from_f32(
                    &self.dev,
                    &format!("{name}[{i}]"),
                    &[n],
                    &v[start..start + n],
                );
                start += n;
                Ok(t?)
            })
            .collect()
    }
}
