//! Phi-3, Gemma, Gemma 2, Gemma 3 and GPT-2 against Hugging Face transformers: the tiny random
//! checkpoints made by scripts/fixtures/make_arch_fixtures.py (logits within tolerance at
//! every prompt position and greedy step, greedy tokens exact, all-position outputs), the
//! GGUF copies of all six giving the same, and loading through `load()` with a tokenizer.

mod common;

use common::*;
use infer_models::LoadOptions;
use infer_models::load::{ModelPath, load_model, open};
use infer_tensor::reference::RopeScaling;

fn fixtures() -> std::path::PathBuf {
    common::fixtures("arch")
}

fn check_case(case: &str) {
    let dir = fixtures().join(case);
    let expected = read_json(&dir.join("expected.json"));
    for (tuning, k) in tunings() {
        // max_batch 4 makes the 7-token prompt go in two chunks.
        for max_batch in [256, 4] {
            let mut m = load(&k, ModelPath::HfDir(dir.clone()), &opts(max_batch));
            let what = format!("{case} (max_batch {max_batch}, {tuning})");
            check_against(m.as_mut(), &expected, &what);
        }
    }
}

#[test]
fn phi3_partial_rotary_matches_transformers() {
    check_case("phi3_partial_rotary");
}

#[test]
fn phi3_longrope_matches_transformers() {
    // 7 + 16 positions cross original_max_position_embeddings (16): the steps from position
    // 16 on use the long factors, as generate() does.
    check_case("phi3_longrope");
}

#[test]
fn gemma_matches_transformers() {
    check_case("gemma");
}

#[test]
fn gemma2_matches_transformers() {
    check_case("gemma2");
}

/// Five sliding layers (window 4 < 23 positions, rope base 10000) and a full one (base 1e5,
/// linear scaling 2), q/k norms.
#[test]
fn gemma3_matches_transformers() {
    check_case("gemma3");
}

#[test]
fn gpt2_matches_transformers() {
    check_case("gpt2");
}

/// The GGUF copies (llama.cpp's convert_hf_to_gguf.py layout, scripts/fixtures/
/// make_arch_fixtures.py and make_arch_ggufs.py) against transformers. Phi-3 LongRoPE crosses
/// original_max_position_embeddings as the Hugging Face folder does (the factors come from the
/// `rope_factors_long` / `rope_factors_short` tensors). Gemma 2's GGUF has no
/// query_pre_attn_scalar (llama.cpp scales by 1/sqrt(head_dim)), so it is checked against
/// transformers run with query_pre_attn_scalar = head_dim (expected_gguf.json).
#[test]
fn gguf_copies_give_the_same_tokens() {
    for (case, reference) in [
        ("gpt2", "expected.json"),
        ("gemma", "expected.json"),
        ("phi3_partial_rotary", "expected.json"),
        ("phi3_longrope", "expected.json"),
        ("gemma2", "expected_gguf.json"),
        ("gemma3", "expected.json"),
    ] {
        let dir = fixtures().join(case);
        let expected = read_json(&dir.join(reference));
        for (tuning, k) in tunings() {
            // max_batch 4 makes the 7-token prompt go in two chunks.
            for max_batch in [256, 4] {
                let path = ModelPath::Gguf(dir.join("model.gguf"));
                let mut m = load(&k, path, &opts(max_batch));
                let what = format!("{case} GGUF (max_batch {max_batch}, {tuning})");
                check_against(m.as_mut(), &expected, &what);
            }
        }
    }
}

/// GGUF metadata read as llama.cpp reads it gives the settings config.json gives (Gemma 2's
/// attention scale aside: see above).
#[test]
fn gguf_configs_match_the_hf_configs() {
    use infer_models::ModelConfig;
    for case in [
        "phi3_partial_rotary",
        "phi3_longrope",
        "gemma",
        "gemma2",
        "gemma3",
        "gpt2",
    ] {
        let dir = fixtures().join(case);
        let hf = ModelConfig::from_hf_dir(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        let (_, g) = open(&ModelPath::Gguf(dir.join("model.gguf")))
            .unwrap_or_else(|e| panic!("{case} GGUF: {e}"));
        let shape = |c: &ModelConfig| {
            (
                c.arch.hf_name,
                c.vocab_size,
                c.hidden,
                c.n_layers,
                (c.n_heads, c.n_kv_heads, c.head_dim, c.rotary_dim),
                c.intermediate,
                c.rope_theta,
                c.tie_embeddings,
                c.max_position,
                c.sliding_window,
            )
        };
        assert_eq!(shape(&g), shape(&hf), "{case}");
        assert_eq!(g.rms_eps, hf.rms_eps, "{case}");
        assert_eq!(g.ext.longrope, hf.ext.longrope, "{case}");
        assert_eq!(g.ext.attn_softcap, hf.ext.attn_softcap, "{case}");
        assert_eq!(g.ext.final_softcap, hf.ext.final_softcap, "{case}");
        assert_eq!(g.ext.sliding_layers, hf.ext.sliding_layers, "{case}");
        assert_eq!(
            g.ext.sliding_rope_theta, hf.ext.sliding_rope_theta,
            "{case}"
        );
        assert_eq!(g.rope_scaling, hf.rope_scaling, "{case}");
    }
    let (_, g) = open(&ModelPath::Gguf(fixtures().join("gemma2/model.gguf"))).unwrap();
    assert_eq!(g.ext.query_pre_attn_scalar, None);
}

#[test]
fn load_with_tokenizer_and_quantize_on_load() {
    let Some(k) = kernels() else { return };
    let dir = fixtures().join("gpt2");
    let spec = dir.to_str().expect("utf-8 path");
    let (mut m, tok) = infer_models::load(spec, k.clone(), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
    let expected = read_json(&dir.join("expected.json"));
    let prompt = ids(&expected["prompt_ids"]);
    let greedy = ids(&expected["greedy_ids"]);
    assert_eq!(token(m.as_mut(), &prompt), greedy[0]);
    assert!(!tok.decode(&greedy, false).unwrap().is_empty());
    // --quant q8_0 re-encodes the split and transposed matrices too: it runs, and the first
    // greedy token (margin >= 0.1) survives.
    let opts = LoadOptions {
        quant: Some(infer_tensor::DType::Q8_0.into()),
        ..Default::default()
    };
    for ((tuning, k), case) in tunings()
        .into_iter()
        .flat_map(|t| [(t.clone(), "gpt2"), (t, "phi3_partial_rotary")])
    {
        let dir = fixtures().join(case);
        let expected = read_json(&dir.join("expected.json"));
        let mut m = load(&k, ModelPath::HfDir(dir), &opts);
        let prompt = ids(&expected["prompt_ids"]);
        let l = logits(m.as_mut(), &prompt);
        let want = rows(&expected["greedy_step_logits"]);
        let err = l
            .iter()
            .zip(&want[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 0.5, "{case} q8_0 ({tuning}): logits off by {err}");
    }
}

#[test]
fn gpt2_context_past_learned_positions_is_an_error() {
    let Some(k) = kernels() else { return };
    let path = ModelPath::HfDir(fixtures().join("gpt2"));
    let (src, cfg) = open(&path).unwrap();
    let opts = LoadOptions {
        context: Some(65),
        ..Default::default()
    };
    let Err(e) = load_model(&src, cfg, k.clone(), &opts) else {
        panic!("context 65 on n_positions 64 loaded");
    };
    assert!(e.to_string().contains("n_positions"), "{e}");
}

#[test]
fn table_rows_and_gguf_names() {
    use infer_models::arch::{Family, from_gguf, from_hf};
    for (hf, mt, gg, fam) in [
        ("Phi3ForCausalLM", "phi3", "phi3", Family::Phi3),
        ("GemmaForCausalLM", "gemma", "gemma", Family::Gemma),
        ("Gemma2ForCausalLM", "gemma2", "gemma2", Family::Gemma2),
        ("Gemma3ForCausalLM", "gemma3_text", "gemma3", Family::Gemma3),
        ("GPT2LMHeadModel", "gpt2", "gpt2", Family::Gpt2),
    ] {
        assert_eq!(from_hf(&[hf.into()], None).unwrap().family, fam);
        assert_eq!(from_hf(&[], Some(mt)).unwrap().family, fam);
        assert_eq!(from_gguf(gg).unwrap().family, fam);
    }
    let e = from_hf(&["FalconForCausalLM".into()], Some("falcon")).unwrap_err();
    assert!(e.to_string().contains("GPT2LMHeadModel"), "{e}");
    let n = |hf: &str| Family::Phi3.gguf_name(hf).unwrap();
    assert_eq!(
        n("model.layers.3.self_attn.qkv_proj.weight"),
        "blk.3.attn_qkv.weight"
    );
    assert_eq!(
        n("model.layers.3.mlp.gate_up_proj.weight"),
        "blk.3.ffn_up.weight"
    );
    let n = |hf: &str| Family::Gpt2.gguf_name(hf).unwrap();
    assert_eq!(n("transformer.h.1.attn.c_attn.bias"), "blk.1.attn_qkv.bias");
    assert_eq!(
        n("transformer.h.1.mlp.c_proj.weight"),
        "blk.1.ffn_down.weight"
    );
    assert_eq!(n("transformer.wpe.weight"), "position_embd.weight");
    assert_eq!(n("transformer.ln_f.bias"), "output_norm.bias");
    let g2 = |hf: &str| Family::Gemma2.gguf_name(hf).unwrap();
    assert_eq!(
        g2("model.layers.0.post_attention_layernorm.weight"),
        "blk.0.post_attention_norm.weight"
    );
    assert_eq!(
        g2("model.layers.0.pre_feedforward_layernorm.weight"),
        "blk.0.ffn_norm.weight"
    );
    assert_eq!(
        g2("model.layers.0.post_feedforward_layernorm.weight"),
        "blk.0.post_ffw_norm.weight"
    );
    let g3 = |hf: &str| Family::Gemma3.gguf_name(hf).unwrap();
    assert_eq!(
        g3("model.layers.2.post_attention_layernorm.weight"),
        "blk.2.post_attention_norm.weight"
    );
    assert_eq!(
        g3("model.layers.2.self_attn.q_norm.weight"),
        "blk.2.attn_q_norm.weight"
    );
    assert_eq!(
        g3("model.layers.2.self_attn.k_norm.weight"),
        "blk.2.attn_k_norm.weight"
    );
    assert_eq!(
        Family::Gemma
            .gguf_name("model.layers.0.post_attention_layernorm.weight")
            .unwrap(),
        "blk.0.ffn_norm.weight"
    );
}

#[test]
fn configs_read_the_architecture_settings() {
    let cfg = |case: &str| {
        infer_models::ModelConfig::from_hf_dir(&fixtures().join(case))
            .unwrap_or_else(|e| panic!("{case}: {e}"))
    };
    let c = cfg("phi3_partial_rotary");
    assert_eq!((c.head_dim, c.rotary_dim), (16, 8));
    let c = cfg("phi3_longrope");
    let lr = c.ext.longrope.as_ref().expect("longrope");
    assert_eq!(lr.original_max_position, 16);
    assert_eq!(lr.short_factor.len(), 8);
    assert!((lr.attention_factor - 1.5f32.sqrt()).abs() < 1e-6);
    let c = cfg("gemma2");
    assert_eq!(c.ext.sliding_layers, [true, false, true]);
    assert_eq!(c.sliding_window, Some(4));
    assert_eq!(c.ext.attn_softcap, Some(4.0));
    assert_eq!(c.ext.final_softcap, Some(10.0));
    assert_eq!(c.ext.query_pre_attn_scalar, Some(20.0));
    assert_eq!(c.head_dim, 24);
    assert_eq!(c.ext.sliding_rope_theta, None);
    let c = cfg("gemma3");
    assert_eq!(c.ext.sliding_layers, [true, true, true, true, true, false]);
    assert_eq!(c.sliding_window, Some(4));
    assert_eq!((c.ext.attn_softcap, c.ext.final_softcap), (None, None));
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    assert_eq!(c.ext.sliding_rope_theta, Some(10000.0));
    assert!(c.arch.qk_norm);
    let c = cfg("gpt2");
    assert_eq!((c.hidden, c.n_layers, c.n_heads), (64, 2, 4));
    assert_eq!((c.intermediate, c.max_position), (256, 64));
    assert_eq!(c.rms_eps, 1e-5);
    assert_eq!(c.ext.activation.as_deref(), Some("gelu_new"));
}

/// A minimal GGUF (v3): `kv` metadata, one F32 `token_embd.weight` of (vocab, hidden) zeros.
fn tiny_gguf(kv: &[(&str, GgufValue)], hidden: u64, vocab: u64) -> Vec<u8> {
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    };
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        s(&mut b, k);
        match v {
            GgufValue::U32(x) => {
                b.extend(4u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            GgufValue::F32(x) => {
                b.extend(6u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            GgufValue::Str(x) => {
                b.extend(8u32.to_le_bytes());
                s(&mut b, x);
            }
        }
    }
    s(&mut b, "token_embd.weight");
    b.extend(2u32.to_le_bytes());
    b.extend(hidden.to_le_bytes());
    b.extend(vocab.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // F32
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().next_multiple_of(32), 0);
    b.resize(b.len() + (hidden * vocab * 4) as usize, 0);
    b
}

enum GgufValue {
    U32(u32),
    F32(f32),
    Str(&'static str),
}

/// Gemma 2 GGUFs converted before convert_hf_to_gguf.py wrote the soft-caps and the window
/// run in llama.cpp with its defaults: attention soft-cap 50, final 30, window 4096.
#[test]
fn gemma2_gguf_without_the_keys_takes_llama_cpp_defaults() {
    use GgufValue::*;
    let mut kv = vec![
        ("general.architecture", Str("gemma2")),
        ("gemma2.embedding_length", U32(64)),
        ("gemma2.block_count", U32(2)),
        ("gemma2.feed_forward_length", U32(128)),
        ("gemma2.attention.head_count", U32(4)),
        ("gemma2.attention.layer_norm_rms_epsilon", F32(1e-6)),
    ];
    let dir = std::env::temp_dir().join(format!("infer-archs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let read = |kv: &[(&str, GgufValue)], file: &str| {
        let path = dir.join(file);
        std::fs::write(&path, tiny_gguf(kv, 64, 32)).unwrap();
        let g = infer_models::gguf::GgufFile::open(&path).unwrap();
        infer_models::ModelConfig::from_gguf(&g).unwrap()
    };
    let c = read(&kv, "old.gguf");
    assert_eq!(c.sliding_window, Some(4096));
    assert_eq!(c.ext.sliding_layers, [true, false]);
    assert_eq!(
        (c.ext.attn_softcap, c.ext.final_softcap),
        (Some(50.0), Some(30.0))
    );
    kv.extend([
        ("gemma2.attention.sliding_window", U32(8)),
        ("gemma2.attn_logit_softcapping", F32(4.0)),
        ("gemma2.final_logit_softcapping", F32(10.0)),
    ]);
    let c = read(&kv, "new.gguf");
    assert_eq!(c.sliding_window, Some(8));
    assert_eq!(
        (c.ext.attn_softcap, c.ext.final_softcap),
        (Some(4.0), Some(10.0))
    );
    // Gemma (1) has none of these.
    let gemma = [
        ("general.architecture", Str("gemma")),
        ("gemma.embedding_length", U32(64)),
        ("gemma.block_count", U32(2)),
        ("gemma.feed_forward_length", U32(128)),
        ("gemma.attention.head_count", U32(4)),
        ("gemma.attention.layer_norm_rms_epsilon", F32(1e-6)),
    ];
    let c = read(&gemma, "gemma.gguf");
    assert_eq!(c.sliding_window, None);
    assert_eq!((c.ext.attn_softcap, c.ext.final_softcap), (None, None));
    std::fs::remove_dir_all(&dir).ok();
}
