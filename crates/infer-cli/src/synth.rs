//! `infer synth`: a random-weight model of a real shape, for benchmarks.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use infer_models::synth::{self, SHAPES, SynthShape};

#[derive(Args)]
pub struct SynthArgs {
    /// tiny, llama-3.2-1b, llama-3.1-8b or qwen3-8b.
    #[arg(long)]
    pub shape: String,
    /// The folder to write (config.json, tokenizer.json, f16 model.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn synth(a: SynthArgs) -> Result<()> {
    let shape = SynthShape::find(&a.shape).with_context(|| {
        let names: Vec<&str> = SHAPES.iter().map(|s| s.name).collect();
        format!("--shape {}: expected one of {}", a.shape, names.join(", "))
    })?;
    let t = std::time::Instant::now();
    synth::write(&a.out, &shape, a.seed).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "infer synth: {} ({:.2} GB of f16 weights) in {} ({:.1} s)",
        shape.name,
        shape.weight_bytes() as f64 / 1e9,
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
