//! The `infer` binary as a user meets it: devices, run (streaming and --json), and clear
//! errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn infer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infer"))
        .args(args)
        .output()
        .expect("run infer")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// A required path: SKIP loudly when missing, fail under CI=true.
fn require(p: PathBuf, how: &str) -> Option<String> {
    if p.exists() {
        return Some(p.to_string_lossy().into());
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

/// Whether an adapter exists, found once. With a device created and dropped per test, from
/// parallel test threads, this test process ended with SIGSEGV on an NVIDIA H200 (Vulkan,
/// driver 580.159); every other test binary there keeps one device.
fn has_adapter() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| infer_tensor::device::test_device().is_some())
}

#[test]
fn devices_lists_an_adapter_with_limits() {
    if !has_adapter() {
        return;
    }
    let o = infer(&["devices"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("max_storage_buffer_binding_size"), "{out}");
    assert!(
        out.contains("backend:") && out.contains("(default)"),
        "{out}"
    );
}

#[test]
fn run_json_on_the_default_model_answers() {
    if !has_adapter() {
        return;
    }
    let Some(model) = require(
        repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        "run `cargo xtask model`",
    ) else {
        return;
    };
    let o = infer(&[
        "run",
        "--model",
        &model,
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let last = out.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON on the last line");
    assert_eq!(v["text"], "The capital of France is Paris.");
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(
        v["token_ids"],
        serde_json::json!([504, 3575, 282, 4649, 314, 7042, 30, 2])
    );
    assert_eq!(v["prompt_token_ids"].as_array().unwrap().len(), 37);
    for key in [
        "prompt_tokens",
        "generated_tokens",
        "prefill_ms",
        "decode_ms",
        "ttft_ms",
        "prefill_tok_s",
        "decode_tok_s",
    ] {
        assert!(v["stats"][key].is_number(), "stats.{key} missing: {v}");
    }
}

#[test]
fn run_streams_stories260k_and_stops_at_max_tokens() {
    if !has_adapter() {
        return;
    }
    let Some(model) = require(
        repo().join("tests/fixtures/stories260K"),
        "the committed fixture tests/fixtures/stories260K",
    ) else {
        return;
    };
    let o = infer(&[
        "run",
        "--model",
        &model,
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "20",
        "--json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["token_ids"].as_array().unwrap().len(), 20);
    assert_eq!(v["finish_reason"], "length");
    assert_eq!(
        v["prompt_token_ids"][0], 1,
        "BOS added by the tokenizer's post-processor"
    );
    // Streaming mode prints the same text.
    let o = infer(&[
        "run",
        "--model",
        &model,
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "20",
    ]);
    let (streamed, _) = text(&o);
    assert_eq!(streamed.trim_end_matches('\n'), v["text"].as_str().unwrap());
}

#[test]
fn bad_input_is_a_clear_error() {
    if !has_adapter() {
        return;
    }
    let o = infer(&["run", "--model", "/no/such/model.gguf", "--prompt", "hi"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("/no/such/model.gguf"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let Some(model) = require(
        repo().join("tests/fixtures/stories260K"),
        "the committed fixture tests/fixtures/stories260K",
    ) else {
        return;
    };
    let o = infer(&[
        "run",
        "--model",
        &model,
        "--prompt",
        "hi",
        "--temperature=-1",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("temperature"), "{err}");
    let o = infer(&[
        "run",
        "--model",
        &model,
        "--prompt",
        "hi",
        "--temperature",
        "-1",
    ]);
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("temperature") && err.contains("-1"),
        "{err}"
    );
    let o = infer(&["run", "--model", "/dev/null", "--prompt", "hi"]);
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("neither a model file nor a folder"),
        "{err}"
    );
    let o = infer(&["run", "--model", &model, "--prompt", "hi", "--top-p", "0"]);
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("top_p"), "{err}");
    let long = "Once upon a time there was a little dog. ".repeat(10);
    let o = infer(&[
        "run",
        "--model",
        &model,
        "--prompt",
        &long,
        "--ctx-size",
        "16",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("context"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = infer(&[
        "run", "--model", &model, "--prompt", "hi", "--quant", "q9_9",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("q9_9"), "{err}");
}

/// Flags that make no sense are errors naming the flag, never clamped or run: a context of
/// 0 or a billion positions (which once aborted on a 256 GB allocation), `--max-tokens 0`,
/// `--max-batch 0`, out-of-range speculation, and a server that could serve nothing.
#[test]
fn nonsense_flags_are_errors_naming_the_flag() {
    if !has_adapter() {
        return;
    }
    let Some(model) = require(
        repo().join("tests/fixtures/stories260K"),
        "the committed fixture tests/fixtures/stories260K",
    ) else {
        return;
    };
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "--model", &model, "--prompt", "hi"];
        a.extend(extra);
        infer(&a)
    };
    for (flags, says) in [
        (&["--ctx-size", "0"][..], "--ctx-size"),
        (&["--ctx-size", "1000000000"][..], "context"),
        (&["--max-tokens", "0"][..], "max_tokens"),
        (&["--max-batch", "0"][..], "--max-batch"),
        (
            &["--prompt-lookup", "2", "--draft-tokens", "100"][..],
            "--draft-tokens",
        ),
        (&["--prompt-lookup", "1000"][..], "--prompt-lookup"),
    ] {
        let o = run(flags);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {err}");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{flags:?}: {err}"
        );
    }
    for (flag, v) in [
        ("--kv-tokens", "0"),
        ("--block-size", "0"),
        ("--max-seqs", "0"),
        ("--max-batch-tokens", "0"),
    ] {
        let o = infer(&["serve", "--model", &model, "--port", "0", flag, v]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{flag}: {err}");
        assert!(err.contains(flag), "{flag}: {err}");
    }
}
