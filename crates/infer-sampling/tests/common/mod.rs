//! What the tests that run real models share: the adapter's kernels (made once), and the
//! model paths, which SKIP loudly when missing, or fail under CI=true.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use infer_kernels::Kernels;
use infer_tensor::device::test_device;

pub fn kernels() -> Option<Arc<Kernels>> {
    static K: OnceLock<Option<Arc<Kernels>>> = OnceLock::new();
    K.get_or_init(|| {
        test_device().map(|d| {
            eprintln!("adapter: {}", d.describe());
            Arc::new(Kernels::new(Arc::new(d)))
        })
    })
    .clone()
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require(p: PathBuf, how: &str) -> Option<PathBuf> {
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {} is missing ({how})", p.display());
    }
    eprintln!(
        "SKIP: {} is missing ({how}); this test did NOT run",
        p.display()
    );
    None
}

pub fn stories() -> Option<PathBuf> {
    require(
        repo().join("tests/fixtures/stories260K"),
        "the committed fixture tests/fixtures/stories260K",
    )
}

pub fn smollm2() -> Option<PathBuf> {
    require(
        repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "run `cargo xtask model`",
    )
}
