//! `infer synth`'s models: the tiny shape written twice gives the same bytes, loads through
//! the ordinary loader (tokenizer included), and decodes finite logits; the real shapes
//! have the sizes of the models they imitate.

mod common;

use common::*;
use infer_models::LoadOptions;
use infer_models::synth::{self, SynthShape};

#[test]
fn tiny_synth_model_is_deterministic_loads_and_runs() {
    let shape = SynthShape::find("tiny").unwrap();
    let dir = |i: u32| std::env::temp_dir().join(format!("infer-synth-{}-{i}", std::process::id()));
    synth::write(&dir(0), &shape, 7).unwrap();
    synth::write(&dir(1), &shape, 7).unwrap();
    let read = |i: u32| std::fs::read(dir(i).join("model.safetensors")).unwrap();
    let bytes = read(0);
    assert_eq!(bytes, read(1), "same seed, same bytes");
    assert!(bytes.len() as u64 > shape.weight_bytes());
    let _ = std::fs::remove_dir_all(dir(1));
    if let Some(k) = kernels() {
        let spec = dir(0).to_string_lossy().into_owned();
        let (mut m, tok) = infer_models::load(&spec, k, &LoadOptions::default()).unwrap();
        let ids = tok.encode("w5 w17 w900", true).unwrap();
        assert_eq!(ids, [1, 5, 17, 900]);
        let l = logits(m.as_mut(), &ids);
        assert_eq!(l.len(), 1000);
        assert!(l.iter().all(|x| x.is_finite()));
        assert_eq!(tok.decode(&[5, 17], false).unwrap(), "w5 w17");
    }
    let _ = std::fs::remove_dir_all(dir(0));
    // Llama-3.1-8B: 8.03 billion parameters.
    let b8 = SynthShape::find("llama-3.1-8b").unwrap().weight_bytes() / 2;
    assert!((8_000_000_000..8_100_000_000).contains(&b8), "{b8}");
    let b1 = SynthShape::find("llama-3.2-1b").unwrap().weight_bytes() / 2;
    assert!((1_200_000_000..1_300_000_000).contains(&b1), "{b1}");
}
