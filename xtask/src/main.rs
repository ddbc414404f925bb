//! `cargo xtask <command>`: project chores.
//!
//! - `model`: fetch the default model (SmolLM2-135M-Instruct Q4_1 GGUF) into `models/`;
//!   `model gemma3-270m`: Gemma 3 270M (Q4_K_M GGUF).
//! - `bench`: kernel rooflines and end-to-end speed on every backend, into BENCHMARKS.md;
//!   `bench serve`: the serving load test, into BENCHMARKS-serve.md.

mod bench;
mod model;

use std::path::PathBuf;

use anyhow::{Result, bail};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repo root")
        .to_path_buf()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("model") => {
            let path = match args.get(1).map(String::as_str) {
                None => model::fetch_default_model(&repo_root())?,
                Some("gemma3-270m") => model::fetch_gemma3(&repo_root())?,
                Some(other) => bail!("unknown model {other:?} (known: gemma3-270m)"),
            };
            println!("{}", path.display());
            Ok(())
        }
        Some("bench") => bench::bench(&repo_root(), &args[1..]),
        other => bail!(
            "unknown xtask command {other:?}\n\nusage: cargo xtask <command>\n  model [gemma3-270m]   fetch the default model (or Gemma 3 270M) into models/\n  bench   benchmarks on every backend, written to BENCHMARKS.md [--backend B] [--model M] [--quick]\n  bench serve   the serving load test (infer bench-serve options), written to BENCHMARKS-serve.md"
        ),
    }
}
