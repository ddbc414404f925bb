//! Random-weight models of real shapes, for benchmarks (`infer synth`): a Hugging Face folder
//! (config.json, f16 model.safetensors, a word-level tokenizer.json) that loads and runs like
//! the model it imitates, with no download. The weights are uniform in
//! `[-1, 1) / sqrt(fan_in)` from a seeded generator, norms near 1, so activations stay
//! finite; the text it writes is meaningless.

use std::io::{BufWriter, Write};
use std::path::Path;

use half::f16;
use serde_json::json;

use crate::error::{ModelError, Result};

/// A model shape `infer synth` writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SynthShape {
    pub name: &'static str,
    /// `llama` or `qwen3` (q/k norms).
    pub model_type: &'static str,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub tied: bool,
    pub rope_theta: f64,
}

/// The shapes `infer synth --shape` knows.
pub const SHAPES: [SynthShape; 4] = [
    SynthShape {
        name: "tiny",
        model_type: "llama",
        hidden: 256,
        intermediate: 512,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        vocab: 1000,
        tied: false,
        rope_theta: 10000.0,
    },
    SynthShape {
        name: "llama-3.2-1b",
        model_type: "llama",
        hidden: 2048,
        intermediate: 8192,
        layers: 16,
        heads: 32,
        kv_heads: 8,
        head_dim: 64,
        vocab: 128256,
        tied: true,
        rope_theta: 500000.0,
    },
    SynthShape {
        name: "llama-3.1-8b",
        model_type: "llama",
        hidden: 4096,
        intermediate: 14336,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        vocab: 128256,
        tied: false,
        rope_theta: 500000.0,
    },
    SynthShape {
        name: "qwen3-8b",
        model_type: "qwen3",
        hidden: 4096,
        intermediate: 12288,
        layers: 36,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        vocab: 151936,
        tied: false,
        rope_theta: 1000000.0,
    },
];

impl SynthShape {
    /// The shape named `name`.
    pub fn find(name: &str) -> Option<SynthShape> {
        SHAPES.into_iter().find(|s| s.name == name)
    }

    /// Every tensor: (Hugging Face name, shape).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, hd) = (self.hidden, self.head_dim);
        let mut t = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for l in 0..self.layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            t.push((p("input_layernorm.weight"), vec![h]));
            t.push((p("self_attn.q_proj.weight"), vec![self.heads * hd, h]));
            t.push((p("self_attn.k_proj.weight"), vec![self.kv_heads * hd, h]));
            t.push((p("self_attn.v_proj.weight"), vec![self.kv_heads * hd, h]));
            t.push((p("self_attn.o_proj.weight"), vec![h, self.heads * hd]));
            if self.model_type == "qwen3" {
                t.push((p("self_attn.q_norm.weight"), vec![hd]));
                t.push((p("self_attn.k_norm.weight"), vec![hd]));
            }
            t.push((p("post_attention_layernorm.weight"), vec![h]));
            t.push((p("mlp.gate_proj.weight"), vec![self.intermediate, h]));
            t.push((p("mlp.up_proj.weight"), vec![self.intermediate, h]));
            t.push((p("mlp.down_proj.weight"), vec![h, self.intermediate]));
        }
        t.push(("model.norm.weight".into(), vec![h]));
        if !self.tied {
            t.push(("lm_head.weight".into(), vec![self.vocab, h]));
        }
        t
    }

    /// Bytes of model.safetensors' tensor data (f16).
    pub fn weight_bytes(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|(_, s)| 2 * s.iter().product::<usize>() as u64)
            .sum()
    }

    fn config(&self) -> serde_json::Value {
        let arch = if self.model_type == "qwen3" {
            "Qwen3ForCausalLM"
        } else {
            "LlamaForCausalLM"
        };
        json!({
            "architectures": [arch],
            "model_type": self.model_type,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "tie_word_embeddings": self.tied,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 131072,
            "hidden_act": "silu",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float16",
            "infer_synth": "random weights of this shape, written by `infer synth`",
        })
    }
}

/// xorshift64*: a fast seeded generator (the weights need no better).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.into(),
        source,
    }
}

/// A word-level tokenizer.json of `vocab` tokens (`<unk>`, `<s>`, `</s>`, then `w3`, `w4`,
/// ...), split on whitespace, decoded with spaces between tokens.
fn tokenizer_json(vocab: usize) -> String {
    let mut v = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        v.insert(t.to_string(), i.into());
    }
    for i in 3..vocab {
        v.insert(format!("w{i}"), i.into());
    }
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": v, "unk_token": "<unk>"}
    })
    .to_string()
}

/// Writes the model of `shape` into folder `dir` (created): config.json,
/// tokenizer.json, tokenizer_config.json and model.safetensors (f16, streamed to disk
/// tensor by tensor, so memory stays small whatever the size). Same `seed`, same bytes.
pub fn write(dir: &Path, shape: &SynthShape, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, shape.config().to_string()).map_err(io(&cfg))?;
    let tok = dir.join("tokenizer.json");
    std::fs::write(&tok, tokenizer_json(shape.vocab)).map_err(io(&tok))?;
    let tc = dir.join("tokenizer_config.json");
    let tc_json = json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true});
    std::fs::write(&tc, tc_json.to_string()).map_err(io(&tc))?;

    let tensors = shape.tensors();
    let mut header = serde_json::Map::new();
    let mut at = 0u64;
    for (name, s) in &tensors {
        let n = 2 * s.iter().product::<usize>() as u64;
        header.insert(
            name.clone(),
            json!({"dtype": "F16", "shape": s, "data_offsets": [at, at + n]}),
        );
        at += n;
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    h.resize(h.len().next_multiple_of(8), b' ');
    let path = dir.join("model.safetensors");
    let f = std::fs::File::create(&path).map_err(io(&path))?;
    let mut w = BufWriter::with_capacity(1 << 22, f);
    w.write_all(&(h.len() as u64).to_le_bytes())
        .map_err(io(&path))?;
    w.write_all(&h).map_err(io(&path))?;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut buf = Vec::with_capacity(1 << 20);
    for (_, s) in &tensors {
        let n: usize = s.iter().product();
        let norm = s.len() == 1;
        let scale = if norm {
            0.1
        } else {
            1.0 / (s[1] as f32).sqrt()
        };
        let mut left = n;
        while left > 0 {
            let k = left.min(1 << 19);
            buf.clear();
            for _ in 0..k {
                let v = rng.unit() * scale + if norm { 1.0 } else { 0.0 };
                buf.extend_from_slice(&f16::from_f32(v).to_le_bytes());
            }
            w.write_all(&buf).map_err(io(&path))?;
            left -= k;
        }
    }
    w.flush().map_err(io(&path))?;
    Ok(())
}
