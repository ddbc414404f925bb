//! Shared helpers of the end-to-end tests: where the repo, its fixtures, the shared models
//! and the default model are, with the SKIP / CI=true-fails rule for missing files.

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A required file or folder: returns it, or SKIPs loudly (fails under CI=true).
pub fn require(path: PathBuf, how_to_get: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {} is missing ({how_to_get})", path.display());
    }
    eprintln!(
        "SKIP: {} is missing ({how_to_get}); this test did NOT run",
        path.display()
    );
    None
}

/// The default model fetched by `cargo xtask model`.
pub fn default_model() -> Option<PathBuf> {
    require(
        repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "run `cargo xtask model`",
    )
}

/// Gemma 3 270M (Q4_K_M) fetched by `cargo xtask model gemma3-270m`.
pub fn gemma3_270m() -> Option<PathBuf> {
    require(
        repo().join("models/gemma-3-270m-q4_k_m.gguf"),
        "run `cargo xtask model gemma3-270m`",
    )
}
