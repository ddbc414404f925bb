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
    /// Settings only some architectures have (Phi-3, Gemma, Gemma 2, GPT-2).
    pub ext: ArchParams,
}

/// Settings only some architectures have; the defaults are "off".
#[derive(Clone, Debug, Default)]
pub struct ArchParams {
    /// `s -> c * tanh(s / c)` on attention scores (Gemma 2 `attn_logit_softcapping`).
    pub attn_softcap: Option<f32>,
    /// `l -> c * tanh(l / c)` on the output logits (Gemma 2 `final_logit_softcapping`).
    pub final_softcap: Option<f32>,
    /// Attention scale `query_pre_attn_scalar^-0.5` instead of `head_dim^-0.5` (Gemma 2).
    pub query_pre_attn_scalar: Option<f32>,
    /// Per layer, whether it attends within `sliding_window` only (Gemma 2 `layer_types`);
    /// empty: every layer does when `sliding_window` is set.
    pub sliding_layers: Vec<bool>,
    /// The rope base of sliding-window layers, unscaled (Gemma 3 `rope_local_base_freq`,
    /// or `rope_parameters.sliding_attention`); None: every layer uses `rope_theta`.
    pub sliding_rope_theta: Option<f32>,
    /// LongRoPE frequency scaling (Phi-3 `rope_type: longrope` / `su`).
    pub longrope: Option<LongRope>,
    /// The MLP activation as config.json names it (`hidden_activation`, `hidden_act`,
    /// `activation_function`).
    pub activation: Option<String>,
    /// GPT-2's `scale_attn_by_inverse_layer_idx` (unsupported when true).
    pub scale_attn_by_layer: bool,
    /// Gemma 3's `use_bidirectional_attention` (unsupported when true).
    pub bidirectional: bool,
}

/// LongRoPE (Phi-3): inverse frequencies divided per dimension by `short_factor`, or by
/// `long_factor` once a step reaches past `original_max_position`; cos and sin times
/// `attention_factor`.
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    pub short_factor: Vec<f32>,
    pub long_factor: Vec<f32>,
    pub original_max_position: usize,
    pub attention_factor: f32,
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
        // LongRoPE (Phi-3) is step-dependent; it lives in `ArchParams::longrope`.
        "default" | "longrope" | "su" => Ok(RopeScaling::None),
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

/// GPT-2's config.json names (`n_embd`, `n_layer`, ...) as the common ones, where missing.
fn with_aliases(mut v: Value) -> Value {
    let Some(o) = v.as_object_mut() else {
        return v;
    };
    for (alias, key) in [
        ("n_embd", "hidden_size"),
        ("n_layer", "num_hidden_layers"),
        ("n_head", "num_attention_heads"),
        ("n_positions", "max_position_embeddings"),
        ("n_inner", "intermediate_size"),
        ("layer_norm_epsilon", "rms_norm_eps"),
    ] {
        if o.get(key).is_none_or(Value::is_null)
            && let Some(x) = o.get(alias).filter(|x| !x.is_null()).cloned()
        {
            o.insert(key.into(), x);
        }
    }
    // GPT-2: n_inner null means 4 * n_embd.
    if o.get("intermediate_size").is_none_or(Value::is_null)
        && o.contains_key("n_embd")
        && let Some(h) = o.get("n_embd").and_then(Value::as_u64)
    {
        o.insert("intermediate_size".into(), (4 * h).into());
    }
    v
}

fn f32_list(j: &Json, key: &str) -> Result<Vec<f32>> {
    j.get(key)
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect())
        .ok_or_else(|| j.bad(key, "expected a list of numbers"))
}

/// The architecture-specific settings of config.json (`rope` is `rope_parameters` or the
/// older `rope_scaling`).
fn arch_params_from(j: &Json, rope: Option<&Value>, cfg: &ModelConfig) -> Result<ArchParams> {
    let v = j.v;
    let layer_types: Vec<bool> = v
        .get("layer_types")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| t.as_str() == Some("sliding_attention"))
                .collect()
        })
        .unwrap_or_default();
    if !layer_types.is_empty() && layer_types.len() != cfg.n_layers {
        return Err(j.bad("layer_types", "needs one entry per layer"));
    }
    // Older Gemma 3 configs: every `sliding_window_pattern`-th layer is full.
    let layer_types = match j.usize_opt("sliding_window_pattern")? {
        Some(0) => return Err(j.bad("sliding_window_pattern", "must be positive")),
        Some(n) if layer_types.is_empty() => (0..cfg.n_layers).map(|i| (i + 1) % n != 0).collect(),
        _ => layer_types,
    };
    // Gemma 3: sliding layers' rope, from transformers 5's per-layer-type `rope_parameters`
    // or the older `rope_local_base_freq`; unscaled either way.
    let sliding_rope_theta = match v
        .get("rope_parameters")
        .and_then(|r| r.get("sliding_attention"))
    {
        Some(sr) => {
            let sj = Json {
                path: j.path,
                v: sr,
            };
            if !matches!(rope_scaling_from(&sj, Some(sr))?, RopeScaling::None) {
                return Err(j.bad(
                    "rope_parameters.sliding_attention.rope_type",
                    "only unscaled rope is supported on sliding layers",
                ));
            }
            sj.f32_opt("rope_theta")?
        }
        None => None,
    }
    .or(j.f32_opt("rope_local_base_freq")?);
    let mut longrope = None;
    if let Some(r) = rope.filter(|r| r.is_object()) {
        let ty = r
            .get("rope_type")
            .or_else(|| r.get("type"))
            .and_then(Value::as_str);
        if matches!(ty, Some("longrope" | "su")) {
            let rj = Json { path: j.path, v: r };
            let original = match rj.usize_opt("original_max_position_embeddings")? {
                Some(o) => o,
                None => j.usize("original_max_position_embeddings")?,
            };
            let max = j.usize_opt("max_position_embeddings")?.unwrap_or(original);
            let factor = rj
                .f32_opt("factor")?
                .map(f64::from)
                .unwrap_or(max as f64 / original as f64);
            // transformers' default: sqrt(1 + ln(factor) / ln(original)), 1 when factor <= 1.
            let attention_factor = match rj.f32_opt("attention_factor")? {
                Some(a) => a,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (original as f64).ln()).sqrt() as f32,
            };
            let lr = LongRope {
                short_factor: f32_list(&rj, "short_factor")?,
                long_factor: f32_list(&rj, "long_factor")?,
                original_max_position: original,
                attention_factor,
            };
            let half = cfg.rotary_dim / 2;
            if lr.short_factor.len() != half || lr.long_factor.len() != half {
                return Err(j.bad(
                    "rope_parameters.short_factor / long_factor",
                    &format!("need {half} entries each (rotary dimensions / 2)"),
                ));
            }
            longrope = Some(lr);
        }
    }
    let activation = ["hidden_activation", "hidden_act", "activation_function"]
        .iter()
        .find_map(|k| j.get(k).and_then(Value::as_str))
        .map(String::from);
    Ok(ArchParams {
        attn_softcap: j.f32_opt("attn_logit_softcapping")?,
        final_softcap: j.f32_opt("final_logit_softcapping")?,
        query_pre_attn_scalar: j.f32_opt("query_pre_attn_scalar")?,
        sliding_layers: layer_types,
        sliding_rope_theta,
        longrope,
        activation,
        scale_attn_by_layer: v
            .get("scale_attn_by_inverse_layer_idx")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        bidirectional: v
            .get("use_bidirectional_attention")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// The most layers a config may declare: far above any released model, and a bound on
/// what a header number can make the loader allocate before the tensors are read.
const MAX_LAYERS: usize = 1 << 16;

impl ModelConfig {
    /// Checks the hyperparameters against their meaning before anything is sized from
    /// them: counts at least 1 (layers at most [`MAX_LAYERS`]), the rope base positive and
    /// finite, eps finite and not negative, BOS / EOS ids inside the vocabulary. `gguf`: the
    /// file's architecture name, so errors use its keys (`llama.block_count`); `None`:
    /// config.json's names.
    pub fn check(&self, path: &Path, gguf: Option<&str>) -> Result<()> {
        let field = |hf: &str, gg: &str| match gguf {
            Some(_) if gg.starts_with("tokenizer.") => gg.to_string(),
            Some(a) => format!("{a}.{gg}"),
            None => hf.to_string(),
        };
        let bad = |hf: &str, gg: &str, reason: String| ModelError::BadField {
            path: path.into(),
            field: field(hf, gg),
            reason,
        };
        for (hf, gg, v) in [
            ("vocab_size", "vocab_size", self.vocab_size),
            ("hidden_size", "embedding_length", self.hidden),
            ("num_hidden_layers", "block_count", self.n_layers),
            ("num_attention_heads", "attention.head_count", self.n_heads),
            (
                "num_key_value_heads",
                "attention.head_count_kv",
                self.n_kv_heads,
            ),
            ("head_dim", "attention.key_length", self.head_dim),
            (
                "intermediate_size",
                "feed_forward_length",
                self.intermediate,
            ),
            (
                "max_position_embeddings",
                "context_length",
                self.max_position,
            ),
        ] {
            if v == 0 {
                return Err(bad(hf, gg, "must be at least 1".into()));
            }
        }
        if self.n_layers > MAX_LAYERS {
            return Err(bad(
                "num_hidden_layers",
                "block_count",
                format!("{} layers (at most {MAX_LAYERS})", self.n_layers),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(bad(
                "rope_theta",
                "rope.freq_base",
                format!("{} is not a positive finite number", self.rope_theta),
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps >= 0.0) {
            return Err(bad(
                "rms_norm_eps",
                "attention.layer_norm_rms_epsilon",
                format!("{} is not a finite number >= 0", self.rms_eps),
            ));
        }
        if self.rotary_dim > self.head_dim {
            return Err(bad(
                "partial_rotary_factor",
                "rope.dimension_count",
                format!(
                    "{} rotary dimensions exceed the head dimension {}",
                    self.rotary_dim, self.head_dim
                ),
            ));
        }
        let vocab = self.vocab_size;
        if let Some(b) = self.bos_id.filter(|&b| b as usize >= vocab) {
            return Err(bad(
                "bos_token_id",
                "tokenizer.ggml.bos_token_id",
                format!("{b} is outside the vocabulary of {vocab}"),
            ));
        }
        if let Some(&e) = self.eos_ids.iter().find(|&&e| e as usize >= vocab) {
            return Err(bad(
                "eos_token_id",
                "tokenizer.ggml.eos_token_id",
                format!("{e} is outside the vocabulary of {vocab}"),
            ));
        }
        Ok(())
    }

    /// The sizes a layer is built from: (hidden, head_dim, n_heads, n_kv_heads,
    /// intermediate).
    pub fn dims(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.hidden,
            self.head_dim,
            self.n_heads,
            self.n_kv_heads,
            self.intermediate,
        )
    }

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
        let v = with_aliases(v);
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
        // Gemma 3 under transformers 5 keeps one set per layer type; the full layers' set is
        // the model's `rope_theta` and scaling (the sliding one is `sliding_rope_theta`).
        let rp = v.get("rope_parameters").filter(|x| x.is_object());
        let rp = rp
            .and_then(|r| r.get("full_attention"))
            .filter(|x| x.is_object())
            .or(rp);
        let rope_theta = match rp {
            Some(rp) => Json { path: &path, v: rp }.f32_opt("rope_theta")?,
            None => None,
        }
        .or(j.f32_opt("rope_theta")?)
        .unwrap_or(10000.0);
        let rope_scaling = rope_scaling_from(&j, rp.or(v.get("rope_scaling")))?;
        let partial = match rp {
            Some(rp) => Json { path: &path, v: rp }.f32_opt("partial_rotary_factor")?,
            None => None,
        }
        .or(j.f32_opt("partial_rotary_factor")?)
        .unwrap_or(1.0);
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
            ext: ArchParams::default(),
        };
        cfg.check(&path, None)?;
        let mut cfg = cfg;
        cfg.ext = arch_params_from(&j, rp.or(v.get("rope_scaling")), &cfg)?;
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
        if n_heads == 0 {
            return Err(ModelError::BadField {
                path: g.path.clone(),
                field: k("attention.head_count"),
                reason: "must be at least 1".into(),
            });
        }
        if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
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
            // LayerNorm models (GPT-2) store `layer_norm_epsilon` instead.
            rms_eps: match g.get_f32_opt(&k("attention.layer_norm_epsilon"))? {
                Some(eps)
                    if g.get_f32_opt(&k("attention.layer_norm_rms_epsilon"))?
                        .is_none() =>
                {
                    eps
                }
                _ => g.get_f32(&k("attention.layer_norm_rms_epsilon"))?,
            },
            rope_theta: g.get_f32_opt(&k("rope.freq_base"))?.unwrap_or(10000.0),
            rope_scaling: scaling,
            rotary_dim,
            rope_mode: arch.gguf_rope,
            tie_embeddings: g.tensor("output.weight").is_err(),
            max_position: g
                .get_u32_opt(&k("context_length"))?
                .map_or(4096, |x| x as usize),
            sliding_window: match g.get_u32_opt(&k("attention.sliding_window"))? {
                Some(x) => Some(x as usize),
                None => arch.family.gguf_defaults().sliding_window,
            }
            .filter(|&x| x > 0),
            eos_ids: g
                .get_u32_opt("tokenizer.ggml.eos_token_id")?
                .into_iter()
                .collect(),
            bos_id: g.get_u32_opt("tokenizer.ggml.bos_token_id")?,
            ext: ArchParams::default(),
        })
        .and_then(|mut cfg| {
            cfg.check(&g.path, Some(name))?;
            cfg.ext = arch_params_from_gguf(g, &cfg)?;
            Ok(cfg)
        })
    }
}

/// The architecture-specific settings of a GGUF file, as llama.cpp reads them.
fn arch_params_from_gguf(g: &GgufFile, cfg: &ModelConfig) -> Result<ArchParams> {
    let name = cfg.arch.gguf_name;
    let k = |s: &str| format!("{name}.{s}");
    let (family, defaults) = (cfg.arch.family, cfg.arch.family.gguf_defaults());
    let mut p = ArchParams {
        attn_softcap: g
            .get_f32_opt(&k("attn_logit_softcapping"))?
            .or(defaults.attn_softcap),
        final_softcap: g
            .get_f32_opt(&k("final_logit_softcapping"))?
            .or(defaults.final_softcap),
        query_pre_attn_scalar: family.gguf_query_pre_attn_scalar(
            cfg.n_layers,
            cfg.hidden,
            cfg.n_heads,
        ),
        ..Default::default()
    };
    if defaults.sliding_even_layers {
        p.sliding_layers = (0..cfg.n_layers).map(|i| i % 2 == 0).collect();
    }
    if let Some(n) = defaults.sliding_pattern {
        p.sliding_layers = (0..cfg.n_layers).map(|i| (i + 1) % n != 0).collect();
    }
    p.sliding_rope_theta = g
        .get_f32_opt(&k("rope.freq_base_swa"))?
        .or(defaults.sliding_rope_base);
    // Phi-3 LongRoPE: llama.cpp keeps the per-dimension factors as tensors.
    if let (Ok(long), Ok(short)) = (
        g.tensor("rope_factors_long.weight"),
        g.tensor("rope_factors_short.weight"),
    ) {
        let read = |t| -> Result<Vec<f32>> {
            Ok(infer_tensor::reference::dequantize(
                g.dtype(t)?,
                g.tensor_data(t)?,
                t.n_elems() as usize,
            ))
        };
        let original = g
            .get_u32_opt(&k("rope.scaling.original_context_length"))?
            .map_or(cfg.max_position, |x| x as usize);
        let attention_factor = match g.get_f32_opt(&k("rope.scaling.attn_factor"))? {
            Some(a) => a,
            None => {
                let f = cfg.max_position as f64 / original as f64;
                if f <= 1.0 {
                    1.0
                } else {
                    (1.0 + f.ln() / (original as f64).ln()).sqrt() as f32
                }
            }
        };
        p.longrope = Some(LongRope {
            short_factor: read(short)?,
            long_factor: read(long)?,
            original_max_position: original,
            attention_factor,
        });
    }
    Ok(p)
}
