//! Phi-3, Gemma, Gemma 2 and GPT-2 against Hugging Face transformers: the tiny random
//! checkpoints made by scripts/fixtures/make_arch_fixtures.py (logits within tolerance at
//! every prompt position and greedy step, greedy tokens exact, all-position outputs), the
//! GPT-2 and Gemma GGUF copies giving the same, and loading through `load()` with a tokenizer.

mod common;

use common::*;
use infer_models::LoadOptions;
use infer_models::load::{ModelPath, load_model, open};

fn fixtures() -> std::path::PathBuf {
    common::fixtures("arch")
}

fn check_case(case: &str) {
    let Some(k) = kernels() else { return };
    let dir = fixtures().join(case);
    let expected = read_json(&dir.join("expected.json"));
    // max_batch 4 makes the 7-token prompt go in two chunks.
    for max_batch in [256, 4] {
        let opts = LoadOptions {
            max_batch,
            ..Default::default()
        };
        let mut m = load(&k, ModelPath::HfDir(dir.clone()), &opts);
        check_against(
            m.as_mut(),
            &expected,
            &format!("{case} (max_batch {max_batch})"),
        );
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

#[test]
fn gpt2_matches_transformers() {
    check_case("gpt2");
}

#[test]
fn gguf_copies_give_the_same_tokens() {
    let Some(k) = kernels() else { return };
    for case in ["gpt2", "gemma"] {
        let dir = fixtures().join(case);
        let expected = read_json(&dir.join("expected.json"));
        let mut m = load(
            &k,
            ModelPath::Gguf(dir.join("model.gguf")),
            &LoadOptions::default(),
        );
        check_against(m.as_mut(), &expected, &format!("{case} GGUF"));
    }
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
    for case in ["gpt2", "phi3_partial_rotary"] {
        let opts = LoadOptions {
            quant: Some(infer_tensor::DType::Q8_0),
            ..Default::default()
        };
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
        assert!(err < 0.5, "{case} q8_0: logits off by {err}");
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
    use infer_models::source::{gguf_name, gguf_name_for};
    for (hf, mt, gg, fam) in [
        ("Phi3ForCausalLM", "phi3", "phi3", Family::Phi3),
        ("GemmaForCausalLM", "gemma", "gemma", Family::Gemma),
        ("Gemma2ForCausalLM", "gemma2", "gemma2", Family::Gemma2),
        ("GPT2LMHeadModel", "gpt2", "gpt2", Family::Gpt2),
    ] {
        assert_eq!(from_hf(&[hf.into()], None).unwrap().family, fam);
        assert_eq!(from_hf(&[], Some(mt)).unwrap().family, fam);
        assert_eq!(from_gguf(gg).unwrap().family, fam);
    }
    let e = from_hf(&["FalconForCausalLM".into()], Some("falcon")).unwrap_err();
    assert!(e.to_string().contains("GPT2LMHeadModel"), "{e}");
    let n = |hf: &str| gguf_name(hf).unwrap();
    assert_eq!(
        n("model.layers.3.self_attn.qkv_proj.weight"),
        "blk.3.attn_qkv.weight"
    );
    assert_eq!(
        n("model.layers.3.mlp.gate_up_proj.weight"),
        "blk.3.ffn_up.weight"
    );
    assert_eq!(n("transformer.h.1.attn.c_attn.bias"), "blk.1.attn_qkv.bias");
    assert_eq!(
        n("transformer.h.1.mlp.c_proj.weight"),
        "blk.1.ffn_down.weight"
    );
    assert_eq!(n("transformer.wpe.weight"), "position_embd.weight");
    assert_eq!(n("transformer.ln_f.bias"), "output_norm.bias");
    let g2 = |hf: &str| gguf_name_for("gemma2", hf).unwrap();
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
    assert_eq!(
        gguf_name_for("gemma", "model.layers.0.post_attention_layernorm.weight").unwrap(),
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
    let c = cfg("gpt2");
    assert_eq!((c.hidden, c.n_layers, c.n_heads), (64, 2, 4));
    assert_eq!((c.intermediate, c.max_position), (256, 64));
    assert_eq!(c.rms_eps, 1e-5);
    assert_eq!(c.ext.activation.as_deref(), Some("gelu_new"));
}
