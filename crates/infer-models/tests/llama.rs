//! The Llama family against Hugging Face transformers: the tiny random checkpoints made by
//! scripts/fixtures/make_llama_fixtures.py (logits within tolerance at every prompt position
//! and greedy step, greedy tokens exact), the same model as GGUF, the real stories260K
//! model (256 greedy ids exact), and bad input.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use infer_kernels::Kernels;
use infer_models::load::{ModelPath, open};
use infer_models::{LlamaModel, LoadOptions, MAX_CHAIN, ModelError, Output};
use infer_tensor::{DType, reference};
use serde_json::Value;

fn fixtures() -> PathBuf {
    common::fixtures("llama")
}

/// `tests/fixtures/<name>` (committed real models); missing: SKIP, or a failure under CI=true.
fn fixture_model(name: &str) -> Option<PathBuf> {
    let p = repo().join("tests/fixtures").join(name);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {} is missing", p.display());
    }
    eprintln!("SKIP: {} is missing; this test did NOT run", p.display());
    None
}

#[test]
fn tiny_checkpoints_match_transformers() {
    let cases = [
        "llama_gqa_f32",
        "llama_mha_tied_f16",
        "llama_bf16",
        "llama3_rope_scaling",
        "qwen2_bias",
        "qwen3_qk_norm",
        "mistral",
    ];
    for (tuning, k) in tunings() {
        for case in cases {
            let dir = fixtures().join(case);
            let expected = read_json(&dir.join("expected.json"));
            // max_batch 4 makes the 7-token prompt go in two chunks.
            for max_batch in [256, 4] {
                let mut m = load(&k, ModelPath::HfDir(dir.clone()), &opts(max_batch));
                let what = format!("{case} (max_batch {max_batch}, {tuning})");
                check_against(m.as_mut(), &expected, &what);
            }
        }
    }
}

#[test]
fn gguf_and_safetensors_give_the_same_tokens() {
    let dir = fixtures().join("llama_gqa_f32");
    let expected = read_json(&dir.join("expected.json"));
    let expected_q8 = read_json(&dir.join("expected_q8_0.json"));
    for (tuning, k) in tunings() {
        let mut m = load(&k, ModelPath::Gguf(dir.join("model.gguf")), &opts(256));
        check_against(m.as_mut(), &expected, &format!("GGUF f32 ({tuning})"));
        let path = ModelPath::Gguf(dir.join("model_q8_0.gguf"));
        let mut m = load(&k, path, &opts(256));
        check_against(m.as_mut(), &expected_q8, &format!("GGUF Q8_0 ({tuning})"));
    }
}

#[test]
fn sharded_safetensors_give_the_same_tokens() {
    // model.safetensors split in two shards with a model.safetensors.index.json, as
    // transformers writes large checkpoints.
    let Some(k) = kernels() else { return };
    let src = fixtures().join("llama_gqa_f32");
    let d = tempdir::Dir::new("sharded");
    for f in ["config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), d.0.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.to_string(), st.tensor(n).unwrap()))
            .collect();
        std::fs::write(
            d.0.join(&file),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        for n in part {
            weight_map.insert(n.to_string(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(d.0.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let expected = read_json(&src.join("expected.json"));
    let mut m = load(&k, ModelPath::HfDir(d.0.clone()), &LoadOptions::default());
    check_against(m.as_mut(), &expected, "llama_gqa_f32 in two shards");
}

/// `llama_gqa_f32` with every `v_proj` weight rounded to f16, stored as f16 (`v_f16`) or as
/// the same values in f32, in a scratch folder.
fn with_f16_v(tag: &str, v_f16: bool) -> tempdir::Dir {
    let src = fixtures().join("llama_gqa_f32");
    let d = tempdir::Dir::new(tag);
    for f in ["config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), d.0.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            if !name.ends_with("v_proj.weight") {
                return (name, t.dtype(), t.shape().to_vec(), t.data().to_vec());
            }
            let w: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
            let h = reference::quantize(DType::F16, &w);
            let (dtype, data) = if v_f16 {
                (safetensors::Dtype::F16, h)
            } else {
                let r = reference::dequantize(DType::F16, &h, w.len());
                (safetensors::Dtype::F32, bytemuck::cast_slice(&r).to_vec())
            };
            (name, dtype, t.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, dt, shape, b)| {
            let v = safetensors::tensor::TensorView::new(*dt, shape.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    std::fs::write(
        d.0.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    d
}

#[test]
fn qkv_of_different_dtypes_run_as_three_projections() {
    // With v stored as f16 and q, k as f32 the projections cannot be one weight, so they
    // run as three (Qkv::Separate); with the same values all in f32 they run as one
    // (Qkv::Fused). Only the order of each row's float sum may differ between the two.
    let (mixed, fused) = (with_f16_v("v-f16", true), with_f16_v("v-f32", false));
    for (tuning, k) in tunings() {
        f16_v_as_three_projections(&k, tuning, [&mixed, &fused]);
    }
}

fn f16_v_as_three_projections(k: &Arc<Kernels>, tuning: &str, [mixed, fused]: [&tempdir::Dir; 2]) {
    let opts = LoadOptions::default();
    let mut a = load(k, ModelPath::HfDir(mixed.0.clone()), &opts);
    let mut b = load(k, ModelPath::HfDir(fused.0.clone()), &opts);
    let expected = read_json(&fixtures().join("llama_gqa_f32/expected.json"));
    let prompt = ids(&expected["prompt_ids"]);
    let (la, lb) = (logits(a.as_mut(), &prompt), logits(b.as_mut(), &prompt));
    assert_logits(
        &format!("f16 v as three projections vs one ({tuning})"),
        &la,
        &lb,
    );
    let (mut ta, mut tb) = (argmax(&la), argmax(&lb));
    assert_eq!(ta, tb, "{tuning}");
    for step in 0..8 {
        (ta, tb) = (token(a.as_mut(), &[ta]), token(b.as_mut(), &[tb]));
        assert_eq!(ta, tb, "greedy step {step} ({tuning})");
    }
    // The f16 rounding of v is visible: not a run of the f32 fixture twice.
    let mut f = load(k, ModelPath::HfDir(fixtures().join("llama_gqa_f32")), &opts);
    let lf = logits(f.as_mut(), &prompt);
    assert!(
        lf.iter().zip(&lb).any(|(x, y)| x != y),
        "v was not rounded ({tuning})"
    );
}

#[test]
fn quantize_on_load_keeps_greedy_tokens_close() {
    // --quant q8_0 on an f32 checkpoint: the same quantizer llama.cpp uses, so the result
    // equals the Q8_0 GGUF's tokens.
    let dir = fixtures().join("llama_gqa_f32");
    let expected_q8 = read_json(&dir.join("expected_q8_0.json"));
    let opts = LoadOptions {
        quant: Some(infer_tensor::DType::Q8_0.into()),
        ..Default::default()
    };
    for (tuning, k) in tunings() {
        let mut m = load(&k, ModelPath::HfDir(dir.clone()), &opts);
        let prompt = ids(&expected_q8["prompt_ids"]);
        let greedy = ids(&expected_q8["greedy_ids"]);
        let mut got = vec![token(m.as_mut(), &prompt)];
        while got.len() < greedy.len() {
            let last = *got.last().unwrap();
            got.push(token(m.as_mut(), &[last]));
        }
        assert_eq!(got, greedy, "{tuning}");
    }
}

#[test]
fn stories260k_greedy_from_bos_matches_all_256_ids() {
    let Some(dir) = fixture_model("stories260K") else {
        return;
    };
    let expected = ids(&read_json(&dir.join("greedy_ids.json"))["greedy_ids"]);
    assert_eq!(expected.len(), 256);
    for (tuning, k) in tunings() {
        let mut m = load(&k, ModelPath::HfDir(dir.clone()), &opts(256));
        let mut got = vec![expected[0]];
        let mut next = token(m.as_mut(), &[expected[0]]);
        while got.len() < expected.len() {
            got.push(next);
            if got.len() < expected.len() {
                next = token(m.as_mut(), &[next]);
            }
        }
        assert_eq!(got, expected, "{tuning}");
        // The same through steps chained on the GPU.
        m.truncate(0);
        let mut got = vec![expected[0]];
        while got.len() < expected.len() {
            let t = m.greedy_next(*got.last().unwrap(), MAX_CHAIN - 1).unwrap();
            got.push(t);
        }
        assert_eq!(got, expected, "{tuning}: greedy_next");
    }
}

fn copy_fixture(case: &str) -> tempdir::Dir {
    let d = tempdir::Dir::new(case);
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(fixtures().join(case).join(f), d.0.join(f)).unwrap();
    }
    d
}

mod tempdir {
    use std::path::PathBuf;
    /// A scratch folder removed on drop.
    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "infer-test-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn load_err(k: &Arc<Kernels>, path: ModelPath) -> ModelError {
    match open(&path)
        .and_then(|(src, cfg)| LlamaModel::load(&src, cfg, k.clone(), &LoadOptions::default()))
    {
        Ok(_) => panic!("{path:?} loaded but should not"),
        Err(e) => e,
    }
}

#[test]
fn bad_model_files_are_clear_errors() {
    let Some(k) = kernels() else { return };
    // Truncated safetensors: the error names the file.
    let d = copy_fixture("llama_gqa_f32");
    let st = d.0.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&k, ModelPath::HfDir(d.0.clone())).to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    // ... and the first tensor whose data lies past the end.
    assert!(e.contains("tensor `") && e.contains("truncated"), "{e}");
    // Garbage header.
    std::fs::write(&st, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let e = load_err(&k, ModelPath::HfDir(d.0.clone())).to_string();
    assert!(e.contains("model.safetensors"), "{e}");

    // A missing tensor and a wrong shape: named.
    let d = copy_fixture("llama_gqa_f32");
    let cfg_path = d.0.join("config.json");
    let mut cfg: Value = read_json(&cfg_path);
    cfg["num_hidden_layers"] = 3.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(&k, ModelPath::HfDir(d.0.clone())).to_string();
    assert!(
        e.contains("model.layers.2."),
        "missing tensor not named: {e}"
    );
    cfg["num_hidden_layers"] = 2.into();
    cfg["intermediate_size"] = 100.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(&k, ModelPath::HfDir(d.0.clone())).to_string();
    assert!(
        e.contains("mlp") && e.contains("shape"),
        "wrong shape not named: {e}"
    );

    // An unsupported architecture names the field and lists the supported ones.
    cfg["architectures"] = serde_json::json!(["MambaForCausalLM"]);
    cfg["model_type"] = "mamba".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(&k, ModelPath::HfDir(d.0.clone())).to_string();
    assert!(
        e.contains("MambaForCausalLM") && e.contains("Qwen3ForCausalLM"),
        "{e}"
    );

    // A missing field.
    cfg = read_json(&fixtures().join("llama_gqa_f32/config.json"));
    cfg.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(&k, ModelPath::HfDir(d.0.clone())).to_string();
    assert!(
        e.contains("hidden_size") && e.contains("config.json"),
        "{e}"
    );

    // A truncated GGUF.
    let g = d.0.join("model.gguf");
    let bytes = std::fs::read(fixtures().join("llama_gqa_f32/model.gguf")).unwrap();
    std::fs::write(&g, &bytes[..bytes.len() - 1000]).unwrap();
    let e = load_err(&k, ModelPath::Gguf(g.clone())).to_string();
    assert!(e.contains("model.gguf"), "{e}");
}

#[test]
fn prompts_over_the_context_and_bad_ids_are_errors() {
    let Some(k) = kernels() else { return };
    let opts = LoadOptions {
        context: Some(8),
        ..Default::default()
    };
    let mut m = load(
        &k,
        ModelPath::HfDir(fixtures().join("llama_gqa_f32")),
        &opts,
    );
    let e = m.forward(&[1; 9], Output::Argmax).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::PromptTooLong {
                tokens: 9,
                context: 8
            }
        ),
        "{e}"
    );
    m.forward(&[1; 8], Output::Argmax).unwrap();
    assert!(matches!(
        m.forward(&[1], Output::Argmax).unwrap_err(),
        ModelError::PromptTooLong { .. }
    ));
    m.truncate(0);
    let e = m.forward(&[5000], Output::Argmax).unwrap_err().to_string();
    assert!(e.contains("5000"), "{e}");
}

/// A Llama checkpoint whose matrices' rows are whole 256-element super-blocks (hidden 256,
/// MLP 512, 2 layers, untied head), random f32 weights, written to a scratch folder; with
/// `replace`, each matrix is first replaced by what it returns for it (name, cols, values).
fn k_quant_checkpoint(
    tag: &str,
    replace: impl Fn(&str, usize, Vec<f32>) -> Vec<f32>,
) -> tempdir::Dir {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let d = tempdir::Dir::new(tag);
    let mut cfg = read_json(&fixtures().join("llama_gqa_f32/config.json"));
    cfg["hidden_size"] = 256.into();
    cfg["intermediate_size"] = 512.into();
    cfg["head_dim"] = 64.into();
    std::fs::write(d.0.join("config.json"), cfg.to_string()).unwrap();
    let (h, inter, vocab) = (256usize, 512usize, 256usize);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, h]),
        ("lm_head.weight".into(), vec![vocab, h]),
        ("model.norm.weight".into(), vec![h]),
    ];
    for l in 0..2 {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        for (s, shape) in [
            ("self_attn.q_proj.weight", vec![4 * 64, h]),
            ("self_attn.k_proj.weight", vec![2 * 64, h]),
            ("self_attn.v_proj.weight", vec![2 * 64, h]),
            ("self_attn.o_proj.weight", vec![h, 4 * 64]),
            ("mlp.gate_proj.weight", vec![inter, h]),
            ("mlp.up_proj.weight", vec![inter, h]),
            ("mlp.down_proj.weight", vec![h, inter]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            shapes.push((p(s), shape));
        }
    }
    let mut rng = StdRng::seed_from_u64(5);
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let mut v: Vec<f32> = if shape.len() == 1 {
                (0..n).map(|_| 1.0 + rng.random_range(-0.1..0.1)).collect()
            } else {
                let s = 1.0 / (shape[1] as f32).sqrt();
                (0..n).map(|_| rng.random_range(-2.0..2.0) * s).collect()
            };
            if shape.len() == 2 {
                v = replace(&name, shape[1], v);
            }
            (name, shape, bytemuck::cast_slice(&v).to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (n.clone(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &d.0.join("model.safetensors")).unwrap();
    d
}

/// `--quant q4_k`, `q5_k`, `q6_k` and `q4_k_m` (and Q2_K, Q3_K, IQ4_NL, IQ4_XS weights) on an
/// f32 checkpoint run the same model as
/// loading the f32 checkpoint whose matrices are the reference dequantization of those
/// encodings (llama.cpp's rounding, the type `Quant::dtype_for` picks per matrix): the
/// logits of a prompt agree to float rounding, under each tuning.
#[test]
fn quantize_on_load_k_quants_equal_their_reference_dequantization() {
    use infer_models::arch::Family;
    use infer_models::{Quant, WeightRole};
    if kernels().is_none() {
        return;
    }
    let prompt = [1u32, 17, 99, 200, 3, 45];
    // Q2_K, Q3_K, IQ4_NL and IQ4_XS are not offered by `--quant` (no llama.cpp quantizer
    // here), but a model of them runs the same way: through the library, with the simple
    // encoder's blocks.
    for quant in [
        "q4_k", "q5_k", "q6_k", "q4_k_m", "q2_k", "q3_k", "iq4_nl", "iq4_xs",
    ] {
        let q = Quant::parse(quant).unwrap_or_else(|| Quant::To(DType::parse(quant).unwrap()));
        let mut used = Vec::new();
        let plain = k_quant_checkpoint(&format!("kq-{quant}"), |_, _, v| v);
        let deq = k_quant_checkpoint(&format!("kq-{quant}-deq"), |name, cols, v| {
            let gguf = Family::Llama.gguf_name(name).unwrap();
            let dt = q
                .dtype_for(WeightRole::of_gguf_name(&gguf, false), cols, 2)
                .unwrap();
            let bytes = reference::quantize(dt, &v);
            reference::dequantize(dt, &bytes, v.len())
        });
        for (i, name) in [
            "blk.0.attn_v.weight",
            "blk.1.ffn_down.weight",
            "output.weight",
        ]
        .iter()
        .enumerate()
        {
            let cols = if i == 1 { 512 } else { 256 };
            used.push(q.dtype_for(WeightRole::of_gguf_name(name, false), cols, 2));
        }
        if quant == "q4_k_m" {
            // Layer 0's v keeps Q4_K, layer 1's down and the head get Q6_K.
            assert_eq!(
                used,
                [Some(DType::Q4_K), Some(DType::Q6_K), Some(DType::Q6_K)]
            );
        }
        let opts = LoadOptions {
            quant: Some(q),
            ..Default::default()
        };
        for (tuning, k) in tunings() {
            let mut a = load(&k, ModelPath::HfDir(plain.0.clone()), &opts);
            let mut b = load(&k, ModelPath::HfDir(deq.0.clone()), &LoadOptions::default());
            let (la, lb) = (logits(a.as_mut(), &prompt), logits(b.as_mut(), &prompt));
            let scale = lb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = la
                .iter()
                .zip(&lb)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                err <= 1e-4 * scale.max(1.0),
                "{quant} ({tuning}): logits off by {err} (scale {scale})"
            );
            // And the encoding did change the model.
            let mut f = load(
                &k,
                ModelPath::HfDir(plain.0.clone()),
                &LoadOptions::default(),
            );
            let lf = logits(f.as_mut(), &prompt);
            assert!(lf != la, "{quant} ({tuning}): --quant changed nothing");
        }
    }
}

/// config.json numbers are checked like GGUF keys: a negative rope base, zero positions, a
/// BOS id outside the vocabulary or absurdly many layers are errors naming the field.
#[test]
fn absurd_config_json_numbers_are_errors_naming_the_field() {
    for (field, value, says) in [
        ("rope_theta", serde_json::json!(-1.0), "positive"),
        (
            "max_position_embeddings",
            serde_json::json!(0),
            "at least 1",
        ),
        (
            "bos_token_id",
            serde_json::json!(1_000_000_000u64),
            "vocabulary",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(4_294_967_295u64),
            "layers",
        ),
        ("num_hidden_layers", serde_json::json!(0), "at least 1"),
    ] {
        let d = copy_fixture("llama_gqa_f32");
        let p = d.0.join("config.json");
        let mut cfg = read_json(&p);
        if field == "rope_theta" {
            cfg["rope_parameters"]["rope_theta"] = value;
        } else {
            cfg[field] = value;
        }
        std::fs::write(&p, cfg.to_string()).unwrap();
        let msg = match open(&ModelPath::HfDir(d.0.clone())) {
            Ok(_) => panic!("{field}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(field) && msg.contains(says), "{field}: {msg}");
    }
}

/// A sharded checkpoint's index names files inside its folder only: `../..` paths, absolute
/// paths and non-string entries are errors naming the index entry, and nothing outside the
/// folder is opened.
#[test]
fn shard_paths_outside_the_folder_are_refused() {
    for (shard, says) in [
        (
            serde_json::json!("../../../../../../etc/passwd"),
            "inside the model folder",
        ),
        (serde_json::json!("/etc/passwd"), "inside the model folder"),
        (serde_json::json!(""), "inside the model folder"),
        (serde_json::json!(7), "not a file name"),
    ] {
        let d = copy_fixture("llama_gqa_f32");
        let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": shard}});
        std::fs::write(d.0.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let msg = match open(&ModelPath::HfDir(d.0.clone())) {
            Ok(_) => panic!("{shard}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains("weight_map.model.embed_tokens.weight") && msg.contains(says),
            "{shard}: {msg}"
        );
    }
}
