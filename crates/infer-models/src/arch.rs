//! The architecture table: every architecture we run, by its Hugging Face `architectures`
//! name, its `model_type` and its GGUF `general.architecture`, with the features that set
//! it apart. A new architecture is a row here plus one file.

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
}

pub const ARCHS: &[ArchInfo] = &[
    ArchInfo {
        hf_name: "LlamaForCausalLM",
        model_type: "llama",
        gguf_name: "llama",
        family: Family::Llama,
        qk_norm: false,
    },
    ArchInfo {
        hf_name: "MistralForCausalLM",
        model_type: "mistral",
        gguf_name: "mistral",
        family: Family::Llama,
        qk_norm: false,
    },
    ArchInfo {
        hf_name: "Qwen2ForCausalLM",
        model_type: "qwen2",
        gguf_name: "qwen2",
        family: Family::Llama,
        qk_norm: false,
    },
    ArchInfo {
        hf_name: "Qwen3ForCausalLM",
        model_type: "qwen3",
        gguf_name: "qwen3",
        family: Family::Llama,
        qk_norm: true,
    },
    ArchInfo {
        hf_name: "Phi3ForCausalLM",
        model_type: "phi3",
        gguf_name: "phi3",
        family: Family::Phi3,
        qk_norm: false,
    },
    ArchInfo {
        hf_name: "GemmaForCausalLM",
        model_type: "gemma",
        gguf_name: "gemma",
        family: Family::Gemma,
        qk_norm: false,
    },
    ArchInfo {
        hf_name: "Gemma2ForCausalLM",
        model_type: "gemma2",
        gguf_name: "gemma2",
        family: Family::Gemma2,
        qk_norm: false,
    },
    ArchInfo {
        hf_name: "GPT2LMHeadModel",
        model_type: "gpt2",
        gguf_name: "gpt2",
        family: Family::Gpt2,
        qk_norm: false,
    },
];

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
