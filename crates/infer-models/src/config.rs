//! A model's hyperparameters, resolved from config.json (old and transformers-5 layouts) or
//! from GGUF metadata.

use std::path::Path;

use infer_tensor::reference::{RopeMode, RopeScaling};
use serde_json::Value;

use crate::arch::{self, ArchInfo};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: &'static ArchInfo,
    pub vocab_size: usize,
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    /// Rotary dimensions per head (== head_dim unless partial rotary).
    pub rotary_dim: usize,
    pub rope_mode: RopeMode,
    pub tie_embeddings: bool,
    pub max_position: usize,
    /// Sliding-window attention span, when the model uses one.
    pub sliding_window: Option<usize>,
    /// End-of-sequence ids named by the model's own config.
    pub eos_ids: Vec<u32>,
    pub bos_id: Option<u32>,
}

struct Json<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Json<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| ModelError::MissingField {
                path: self.path.into(),
                field: key.into(),
            })
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.bad(key, "expected a non-negative integer")),
        }
    }

    fn f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.bad(key, "expected a number")),
        }
    }

    fn bad(&self, key: &str, reason: &str) -> ModelError {
        ModelError::BadField {
            path: self.path.into(),
            field: key.into(),
            reason: reason.into(),
        }
    }
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

fn rope_scaling_from(j: &Json, v: Option<&Value>) -> Result<RopeScaling> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    let s = Json { path: j.path, v };
    let ty = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = s.f32_opt("factor")?.unwrap_or(1.0);
    match ty {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor,
            low_freq_factor: s.f32_opt("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: s.f32_opt("high_freq_factor")?.unwrap_or(4.0),
            original_max_position_embeddings: s
                .usize("original_max_position_embeddings")
                .map_err(|_| j.bad("rope_scaling.original_max_position_embeddings", "missing"))?
                as f32,
        }),
        other => Err(j.bad(
            "rope_scaling.rope_type",
            &format!("unsupported type `{other}` (supported: default, linear, llama3)"),
        )),
    }
}

impl ModelConfig {
    /// Reads `config.json` in a Hugging Face folder (plus `generation_config.json` for EOS).
    pub fn from_hf_dir(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Corrupt {
            path: path.clone(),
            what: "JSON file",
            reason: e.to_string(),
        })?;
        let j = Json { path: &path, v: &v };
        let archs: Vec<String> = v
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let arch = arch::from_hf(&archs, v.get("model_type").and_then(Value::as_str))?;
        let hidden = j.usize("hidden_size")?;
        let n_heads = j.usize("num_attention_heads")?;
        if n_heads == 0 || hidden % n_heads != 0 && j.get("head_dim").is_none() {
            return Err(j.bad("num_attention_heads", "must divide hidden_size"));
        }
        let n_kv_heads = j.usize_opt("num_key_value_heads")?.unwrap_or(n_heads);
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(j.bad("num_key_value_heads", "must divide num_attention_heads"));
        }
        let head_dim = j.usize_opt("head_dim")?.unwrap_or(hidden / n_heads);
        // transformers 5 keeps rope settings in `rope_parameters`; older files at top level.
        let rp = v.get("rope_parameters").filter(|x| x.is_object());
        let rope_theta = match rp {
            Some(rp) => Json { path: &path, v: rp }.f32_opt("rope_theta")?,
            None => None,
        }
        .or(j.f32_opt("rope_theta")?)
        .unwrap_or(10000.0);
        let rope_scaling = rope_scaling_from(&j, rp.or(v.get("rope_scaling")))?;
        let partial = j.f32_opt("partial_rotary_factor")?.unwrap_or(1.0);
        let sliding_window = if v.get("use_sliding_window").and_then(Value::as_bool) == Some(false)
        {
            None
        } else {
            j.usize_opt("sliding_window")?
        };
        let mut eos_ids = ids(v.get("eos_token_id"));
        let gen_path = dir.join("generation_config.json");
        if let Ok(t) = std::fs::read_to_string(&gen_path)
            && let Ok(g) = serde_json::from_str::<Value>(&t)
        {
            for id in ids(g.get("eos_token_id")) {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        let cfg = ModelConfig {
            arch,
            vocab_size: j.usize("vocab_size")?,
            hidden,
            n_layers: j.usize("num_hidden_layers")?,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate: j.usize("intermediate_size")?,
            rms_eps: j.f32_opt("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            rotary_dim: ((head_dim as f32 * partial) as usize) & !1,
            rope_mode: RopeMode::RotateHalf,
            tie_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            max_position: j.usize_opt("max_position_embeddings")?.unwrap_or(4096),
            sliding_window,
            eos_ids,
            bos_id: ids(v.get("bos_token_id")).first().copied(),
        };
        Ok(cfg)
    }

    /// Reads the hyperparameters from GGUF metadata (`<arch>.*` keys).
    pub fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
        let name = g.architecture()?;
        let arch = arch::from_gguf(name)?;
        let k = |s: &str| format!("{name}.{s}");
        let hidden = g.get_u32(&k("embedding_length"))? as usize;
        let n_heads = g.get_u32(&k("attention.head_count"))? as usize;
        let n_kv_heads = g
            .get_u32_opt(&k("attention.head_count_kv"))?
            .map_or(n_heads, |x| x as usize);
        if n_heads == 0 || n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(ModelError::BadField {
                path: g.path.clone(),
                field: k("attention.head_count_kv"),
                reason: "must divide attention.head_count".into(),
            });
        }
        let head_dim = g
            .get_u32_opt(&k("attention.key_length"))?
            .map_or(hidden / n_heads, |x| x as usize);
        let rotary_dim = g
            .get_u32_opt(&k("rope.dimension_count"))?
            .map_or(head_dim, |x| x as usize);
        let embd = g.tensor("token_embd.weight")?;
        let vocab_size = match g.get_u32_opt(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => embd.dims.get(1).copied().unwrap_or(0) as usize,
        };
        let scaling = match g.get_str_opt(&k("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: g.get_f32(&k("rope.scaling.factor"))?,
            },
            Some(other) => {
                return Err(ModelError::BadField {
                    path: g.path.clone(),
                    field: k("rope.scaling.type"),
                    reason: format!("unsupported rope scaling `{other}`"),
                });
            }
        };
        Ok(ModelConfig {
            arch,
            vocab_size,
            hidden,
            n_layers: g.get_u32(&k("block_count"))? as usize,
            n_heads,
            n_kv_heads,
            head_dim,
            intermediate: g.get_u32(&k("feed_forward_length"))? as usize,
            rms_eps: g.get_f32(&k("attention.layer_norm_rms_epsilon"))?,
            rope_theta: g.get_f32_opt(&k("rope.freq_base"))?.unwrap_or(10000.0),
            rope_scaling: scaling,
            rotary_dim,
            // llama.cpp permutes Llama/Mistral q and k rows for interleaved rotary; Qwen
            // models keep Hugging Face's rotate-half layout (llama.cpp's NEOX rope).
            rope_mode: if matches!(name, "llama" | "mistral") {
                RopeMode::Interleaved
            } else {
                RopeMode::RotateHalf
            },
            tie_embeddings: g.tensor("output.weight").is_err(),
            max_position: g
                .get_u32_opt(&k("context_length"))?
                .map_or(4096, |x| x as usize),
            sliding_window: None,
            eos_ids: g
                .get_u32_opt("tokenizer.ggml.eos_token_id")?
                .into_iter()
                .collect(),
            bos_id: g.get_u32_opt("tokenizer.ggml.bos_token_id")?,
        })
    }
}
