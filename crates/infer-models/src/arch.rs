//! The architecture table: every architecture we run, by its Hugging Face `architectures`
//! name, its `model_type` and its GGUF `general.architecture`, with the features that set
//! it apart, and the quirks of reading each family's files: its GGUF tensor names and the
//! settings llama.cpp assumes where a GGUF file has no key for them ([`Family`]'s methods).
//! A new architecture is a row here (and, for a new forward pass, a `Family` variant with
//! its arms in those methods) plus one file; ARCHITECTURE.md lists every file it touches.

use infer_tensor::reference::RopeMode;

use crate::error::{ModelError, Result};

/// Which forward pass runs an architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Pre-norm decoder with RMSNorm, rotary attention (GQA) and a SwiGLU MLP: `llama.rs`.
    Llama,
    /// Llama-like with fused `qkv_proj` / `gate_up_proj`, partial rotary, LongRoPE: `phi3.rs`.
    Phi3,
    /// Scaled embeddings, (1 + w) RMSNorm, GeGLU, tied head: `gemma.rs`.
    Gemma,
    /// Gemma plus sandwich norms, soft-capping, alternating sliding window: `gemma.rs`.
    Gemma2,
    /// Gemma 2 plus (1 + w) q/k norms, a sliding/full layer pattern (five to one in the
    /// released models) with a rope base of its own for sliding layers: `gemma.rs`.
    Gemma3,
    /// Learned positions, LayerNorm with bias, Conv1D weights, GELU MLP: `gpt2.rs`.
    Gpt2,
}

#[derive(Clone, Copy, Debug)]
pub struct ArchInfo {
    /// `architectures[0]` in config.json.
    pub hf_name: &'static str,
    /// `model_type` in config.json.
    pub model_type: &'static str,
    /// `general.architecture` in GGUF.
    pub gguf_name: &'static str,
    pub family: Family,
    /// RMSNorm on each head's q and k before rotary (Qwen3).
    pub qk_norm: bool,
    /// How a GGUF file's q and k rows pair rotary dimensions: llama.cpp permutes Llama's and
    /// Mistral's for interleaved rotary; other models keep Hugging Face's rotate-half layout
    /// (llama.cpp's NEOX rope).
    pub gguf_rope: RopeMode,
}

pub const ARCHS: &[ArchInfo] = &[
    ArchInfo {
        hf_name: "LlamaForCausalLM",
        model_type: "llama",
        gguf_name: "llama",
        family: Family::Llama,
        qk_norm: false,
        gguf_rope: RopeMode::Interleaved,
    },
    ArchInfo {
        hf_name: "MistralForCausalLM",
        model_type: "mistral",
        gguf_name: "mistral",
        family: Family::Llama,
        qk_norm: false,
        gguf_rope: RopeMode::Interleaved,
    },
    ArchInfo {
        hf_name: "Qwen2ForCausalLM",
        model_type: "qwen2",
        gguf_name: "qwen2",
        family: Family::Llama,
        qk_norm: false,
        gguf_rope: RopeMode::RotateHalf,
    },
    ArchInfo {
        hf_name: "Qwen3ForCausalLM",
        model_type: "qwen3",
        gguf_name: "qwen3",
        family: Family::Llama,
        qk_norm: true,
        gguf_rope: RopeMode::RotateHalf,
    },
    ArchInfo {
        hf_name: "Phi3ForCausalLM",
        model_type: "phi3",
        gguf_name: "phi3",
        family: Family::Phi3,
        qk_norm: false,
        gguf_rope: RopeMode::RotateHalf,
    },
    ArchInfo {
        hf_name: "GemmaForCausalLM",
        model_type: "gemma",
        gguf_name: "gemma",
        family: Family::Gemma,
        qk_norm: false,
        gguf_rope: RopeMode::RotateHalf,
    },
    ArchInfo {
        hf_name: "Gemma2ForCausalLM",
        model_type: "gemma2",
        gguf_name: "gemma2",
        family: Family::Gemma2,
        qk_norm: false,
        gguf_rope: RopeMode::RotateHalf,
    },
    ArchInfo {
        hf_name: "Gemma3ForCausalLM",
        model_type: "gemma3_text",
        gguf_name: "gemma3",
        family: Family::Gemma3,
        qk_norm: true,
        gguf_rope: RopeMode::RotateHalf,
    },
    ArchInfo {
        hf_name: "GPT2LMHeadModel",
        model_type: "gpt2",
        gguf_name: "gpt2",
        family: Family::Gpt2,
        qk_norm: false,
        gguf_rope: RopeMode::RotateHalf,
    },
];

/// The settings llama.cpp assumes for a family where a GGUF file has no key for them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GgufDefaults {
    /// `<arch>.attention.sliding_window`.
    pub sliding_window: Option<usize>,
    /// `<arch>.attn_logit_softcapping`, `<arch>.final_logit_softcapping`.
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Sliding-window attention on even layers only (global on odd ones).
    pub sliding_even_layers: bool,
    /// Sliding-window attention on every layer but each `n`-th (layer i slides unless
    /// `(i + 1) % n == 0`: llama.cpp's `set_swa_pattern(n)`).
    pub sliding_pattern: Option<usize>,
    /// The rope base of sliding layers (`rope_freq_base_train_swa`), with no scaling; full
    /// layers keep `<arch>.rope.freq_base` and its scaling.
    pub sliding_rope_base: Option<f32>,
}

impl Family {
    /// The GGUF name of Hugging Face tensor `hf` in this family's files, as llama.cpp's
    /// convert_hf_to_gguf.py names it.
    pub fn gguf_name(self, hf: &str) -> Option<String> {
        match self {
            Family::Gpt2 => gpt2_gguf_name(hf),
            // Gemma 2's `post_attention_layernorm` norms the attention output
            // (`post_attention_norm`), not the MLP input (`ffn_norm`, its
            // `pre_feedforward_layernorm`).
            Family::Gemma2 | Family::Gemma3 => {
                match hf.strip_prefix("model.layers.").map(|r| r.split_once('.')) {
                    Some(Some((layer, "post_attention_layernorm.weight"))) => {
                        Some(format!("blk.{layer}.post_attention_norm.weight"))
                    }
                    _ => decoder_gguf_name(hf),
                }
            }
            Family::Llama | Family::Phi3 | Family::Gemma => decoder_gguf_name(hf),
        }
    }

    /// The settings llama.cpp assumes where a GGUF file lacks their keys (files converted
    /// before convert_hf_to_gguf.py wrote them).
    pub fn gguf_defaults(self) -> GgufDefaults {
        match self {
            // Gemma 2 always soft-caps in llama.cpp (50 on scores, 30 on logits), with a
            // 4096 window on even layers.
            Family::Gemma2 => GgufDefaults {
                sliding_window: Some(4096),
                attn_softcap: Some(50.0),
                final_softcap: Some(30.0),
                sliding_even_layers: true,
                ..GgufDefaults::default()
            },
            // Gemma 3 never soft-caps in llama.cpp; five sliding layers to one full, sliding
            // ones with rope base 10000 unscaled.
            Family::Gemma3 => GgufDefaults {
                sliding_pattern: Some(6),
                sliding_rope_base: Some(10000.0),
                ..GgufDefaults::default()
            },
            Family::Llama | Family::Phi3 | Family::Gemma | Family::Gpt2 => GgufDefaults::default(),
        }
    }

    /// The attention scale's `query_pre_attn_scalar` llama.cpp uses for a GGUF file, which
    /// has no key for it: Gemma 2 scales by 1/sqrt(head_dim) except the 27B model (46
    /// layers), whose scalar is hidden / heads; Gemma 3 likewise, its 27B model having 62
    /// layers.
    pub fn gguf_query_pre_attn_scalar(
        self,
        n_layers: usize,
        hidden: usize,
        n_heads: usize,
    ) -> Option<f32> {
        match self {
            Family::Gemma2 if n_layers == 46 => Some((hidden / n_heads) as f32),
            Family::Gemma3 if n_layers == 62 => Some((hidden / n_heads) as f32),
            _ => None,
        }
    }
}

/// The GGUF name of a `model.`-prefixed decoder's tensor (Llama, Phi-3, Gemma).
fn decoder_gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.into());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let mapped = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.bias" => "attn_output.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.qkv_proj.weight" => "attn_qkv.weight",
        "mlp.gate_up_proj.weight" => "ffn_up.weight",
        "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
        "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{mapped}"))
}

/// GPT-2's names (`transformer.*`) as llama.cpp's `gpt2` GGUF names them.
fn gpt2_gguf_name(hf: &str) -> Option<String> {
    let rest = hf.strip_prefix("transformer.")?;
    let (stem, kind) = rest.rsplit_once('.')?;
    let fixed = match stem {
        "wte" => Some("token_embd"),
        "wpe" => Some("position_embd"),
        "ln_f" => Some("output_norm"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(format!("{f}.{kind}"));
    }
    let (layer, tail) = stem.strip_prefix("h.")?.split_once('.')?;
    let mapped = match tail {
        "ln_1" => "attn_norm",
        "attn.c_attn" => "attn_qkv",
        "attn.c_proj" => "attn_output",
        "ln_2" => "ffn_norm",
        "mlp.c_fc" => "ffn_up",
        "mlp.c_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{mapped}.{kind}"))
}

fn supported() -> String {
    ARCHS
        .iter()
        .map(|a| format!("{} ({})", a.hf_name, a.model_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds an architecture by config.json's `architectures` list, else its `model_type`.
pub fn from_hf(architectures: &[String], model_type: Option<&str>) -> Result<&'static ArchInfo> {
    for a in architectures {
        if let Some(info) = ARCHS.iter().find(|i| i.hf_name == a) {
            return Ok(info);
        }
    }
    if let Some(mt) = model_type
        && let Some(info) = ARCHS.iter().find(|i| i.model_type == mt)
    {
        return Ok(info);
    }
    let (name, field) = match (architectures.first(), model_type) {
        (Some(a), _) => (a.clone(), "config.json `architectures`"),
        (None, Some(m)) => (m.to_string(), "config.json `model_type`"),
        (None, None) => (
            "(none)".into(),
            "config.json `architectures` / `model_type`",
        ),
    };
    Err(ModelError::UnsupportedArchitecture {
        name,
        field: field.into(),
        supported: supported(),
    })
}

/// Finds an architecture by GGUF `general.architecture`.
pub fn from_gguf(name: &str) -> Result<&'static ArchInfo> {
    ARCHS
        .iter()
        .find(|i| i.gguf_name == name)
        .ok_or_else(|| ModelError::UnsupportedArchitecture {
            name: name.into(),
            field: "GGUF `general.architecture`".into(),
            supported: supported(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_architecture_lists_supported_ones() {
        let e = from_hf(&["GPTNeoXForCausalLM".into()], Some("gpt_neox")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("GPTNeoXForCausalLM") && msg.contains("LlamaForCausalLM"),
            "{msg}"
        );
        assert!(from_hf(&[], Some("qwen3")).unwrap().qk_norm);
        assert!(from_gguf("rwkv6").is_err());
    }
}
