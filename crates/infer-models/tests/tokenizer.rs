//! Tokenizer tests on real tokenizers: stories260K (`tokenizer.json`, SentencePiece-style BPE
//! with byte fallback) and SmolLM2's GGUF (byte-level BPE), checked against ids made by
//! transformers (`scripts/fixtures/make_tokenizer_cases.py`).

use std::path::{Path, PathBuf};

use infer_models::gguf::GgufFile;
use infer_models::tokenizer::{ChatMessage, StreamDecoder, Tokenizer};
use serde_json::Value;

const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `Some(path)` if it exists; otherwise fails under CI=true and says SKIP loudly elsewhere.
fn require(path: PathBuf, how: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let msg = format!("{} is missing ({how})", path.display());
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {msg}");
    }
    eprintln!("\n!!!!! SKIP: {msg} !!!!!\n");
    None
}

fn stories() -> Option<Tokenizer> {
    let dir = require(
        repo_root().join("tests/fixtures/stories260K"),
        "the committed fixture tests/fixtures/stories260K",
    )?;
    Some(Tokenizer::from_hf_dir(&dir).expect("loading stories260K tokenizer"))
}

fn smollm2() -> Option<Tokenizer> {
    let path = require(
        repo_root().join("models").join(SMOLLM2_FILE),
        "run `cargo xtask model`",
    )?;
    let g = GgufFile::open(&path).expect("opening the SmolLM2 GGUF");
    Some(Tokenizer::from_gguf(&g).expect("building the SmolLM2 tokenizer"))
}

/// The transformers fixtures: `expected.json` (made by make_smollm2_reference.py) and, when
/// present, the wider `tokenizer_cases.json` (make_tokenizer_cases.py). Each has `prompt_ids`
/// and `tokenizer_cases`; the first one found is returned first.
fn smollm2_fixtures() -> Option<Vec<Value>> {
    let dir = repo_root().join("tests/fixtures/smollm2");
    let mut found = Vec::new();
    for name in ["expected.json", "tokenizer_cases.json"] {
        let path = dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
        assert!(
            v.get("tokenizer_cases").is_some() && v.get("prompt_ids").is_some(),
            "{}: needs `tokenizer_cases` and `prompt_ids`",
            path.display()
        );
        found.push(v);
    }
    if found.is_empty() {
        require(
            dir.join("expected.json"),
            "run scripts/fixtures/make_smollm2_reference.py",
        )?;
    }
    Some(found)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// Streams `ids` one at a time; checks chunks concatenate to `decode` and never hold U+FFFD.
fn check_stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) {
    let mut stream = StreamDecoder::new(tok, skip_special);
    let mut text = String::new();
    for &id in ids {
        if let Some(chunk) = stream.push(id).unwrap() {
            assert!(
                !chunk.contains('\u{FFFD}'),
                "chunk {chunk:?} splits a character"
            );
            text.push_str(&chunk);
        }
    }
    text.push_str(&stream.finish().unwrap());
    assert_eq!(text, tok.decode(ids, skip_special).unwrap());
}

#[test]
fn stories260k_round_trip_and_bos() {
    let Some(tok) = stories() else { return };
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), [2]);
    assert_eq!(tok.token_to_id("<s>"), Some(1));
    assert!(!tok.has_chat_template());

    let text = "Once upon a time, there was a little girl named Lily.";
    let with = tok.encode(text, true).unwrap();
    let without = tok.encode(text, false).unwrap();
    assert_eq!(with[0], 1, "its post-processor adds BOS");
    assert_eq!(&with[1..], &without[..]);
    assert_ne!(without[0], 1);
    assert_eq!(tok.decode(&without, false).unwrap(), text);
    assert_eq!(tok.decode(&with, true).unwrap(), text);
    // As transformers: the decoder strips one leading space after `<s>` only at the start.
    assert_eq!(tok.decode(&with, false).unwrap(), format!("<s> {text}"));

    let err = tok.decode(&[100_000], false).unwrap_err().to_string();
    assert!(err.contains("100000"), "{err}");
    let err = tok
        .apply_chat_template(&[ChatMessage::new("user", "hi")], true)
        .unwrap_err();
    assert!(matches!(err, infer_models::ModelError::ChatTemplate(_)));
}

#[test]
fn stories260k_stream_multibyte() {
    let Some(tok) = stories() else { return };
    // Tiny vocabulary: everything non-ASCII falls back to single bytes.
    let text = "héllo wörld 日本語 🦀";
    let ids = tok.encode(text, true).unwrap();
    assert!(ids.len() > text.chars().count(), "expects byte fallback");
    assert_eq!(tok.decode(&ids, true).unwrap(), text);
    check_stream(&tok, &ids, true);
    check_stream(&tok, &ids, false);
}

#[test]
fn smollm2_matches_transformers() {
    let Some(tok) = smollm2() else { return };
    let Some(fixtures) = smollm2_fixtures() else {
        return;
    };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.eos_ids(), [2]);

    let cases = fixtures
        .iter()
        .flat_map(|f| f["tokenizer_cases"].as_array().unwrap());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let special = case["add_special_tokens"].as_bool().unwrap();
        let got = tok.encode(text, special).unwrap();
        assert_eq!(
            got,
            ids(&case["ids"]),
            "text {text:?}, add_special_tokens {special}"
        );
        assert_eq!(tok.decode(&got, false).unwrap(), text, "round trip");
        check_stream(&tok, &got, false);
        check_stream(&tok, &got, true);
    }
}

#[test]
fn smollm2_chat_prompt_matches_transformers() {
    let Some(tok) = smollm2() else { return };
    let Some(fixtures) = smollm2_fixtures() else {
        return;
    };
    assert!(tok.has_chat_template());
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    let prompt = tok.apply_chat_template(&messages, true).unwrap();
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
    let got = tok.encode(&prompt, false).unwrap();
    for fixture in &fixtures {
        if let Some(expected) = fixture.get("prompt_text").and_then(Value::as_str) {
            assert_eq!(prompt, expected);
        }
        assert_eq!(got, ids(&fixture["prompt_ids"]));
    }

    let without = tok.apply_chat_template(&messages, false).unwrap();
    assert!(!without.ends_with("<|im_start|>assistant\n"));
}

#[test]
fn smollm2_stream_multibyte_and_skip_special() {
    let Some(tok) = smollm2() else { return };
    let text = "<|im_start|>héllo wörld 日本語 🦀 🎉👍🏽<|im_end|>";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(
        tok.decode(&ids, true).unwrap(),
        "héllo wörld 日本語 🦀 🎉👍🏽"
    );
    check_stream(&tok, &ids, false);
    check_stream(&tok, &ids, true);
}

#[test]
fn hf_dir_config_variants() {
    let Some(stories_dir) = require(
        repo_root().join("tests/fixtures/stories260K"),
        "the committed fixture tests/fixtures/stories260K",
    ) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("infer-tok-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        stories_dir.join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>",
            "chat_template": [{"name": "default", "template": "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}] {{ m.content.strip() }}{% endfor %}{% if add_generation_prompt %}[A]{% endif %}"}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [2, 0]}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    assert_eq!(tok.eos_ids(), [2, 0]);
    let msgs = [ChatMessage::new("user", "  hi  ")];
    assert_eq!(
        tok.apply_chat_template(&msgs, true).unwrap(),
        "<s>[USER] hi[A]"
    );

    // chat_template.jinja wins over tokenizer_config.json.
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{% if messages | length > 1 %}{{ raise_exception('one message only') }}{% endif %}{{ messages[0].content }}\n",
    )
    .unwrap();
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    assert_eq!(tok.apply_chat_template(&msgs, false).unwrap(), "  hi  \n");
    let err = tok
        .apply_chat_template(&[msgs[0].clone(), msgs[0].clone()], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("one message only"), "{err}");

    std::fs::write(dir.join("tokenizer.json"), "{ not json").unwrap();
    let err = Tokenizer::from_hf_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    let err = Tokenizer::from_hf_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

/// A SentencePiece-style GGUF (`tokenizer.ggml.model = llama`, no merges: they are recovered
/// from the scores) built from stories260K's vocabulary must tokenize like its tokenizer.json.
#[test]
fn gguf_sentencepiece_matches_tokenizer_json() {
    use infer_models::gguf::{GgufValue, to_gguf_bytes};

    let Some(reference) = stories() else { return };
    let dir = repo_root().join("tests/fixtures/stories260K");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = json["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    // Score of a merged token = minus the rank of the merge that makes it.
    let mut scores = vec![0f32; tokens.len()];
    for (rank, m) in json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let merged = match m {
            Value::String(s) => s.replacen(' ', "", 1),
            Value::Array(p) => format!("{}{}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            _ => panic!("unexpected merge {m}"),
        };
        let id = vocab[&merged].as_u64().unwrap() as usize;
        if scores[id] == 0.0 {
            scores[id] = -(rank as f32) - 1.0;
        }
    }
    let types: Vec<GgufValue> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            GgufValue::I32(match i {
                0 => 2,
                1 | 2 => 3,
                _ if t.starts_with("<0x") => 6,
                _ => 1,
            })
        })
        .collect();
    let strings =
        |v: &[String]| GgufValue::Array(v.iter().cloned().map(GgufValue::String).collect());
    let bytes = to_gguf_bytes(
        3,
        &[
            ("general.architecture", GgufValue::String("llama".into())),
            ("tokenizer.ggml.model", GgufValue::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            (
                "tokenizer.ggml.scores",
                GgufValue::Array(scores.iter().map(|&s| GgufValue::F32(s)).collect()),
            ),
            ("tokenizer.ggml.token_type", GgufValue::Array(types)),
            ("tokenizer.ggml.unknown_token_id", GgufValue::U32(0)),
            ("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
            ("tokenizer.ggml.eos_token_id", GgufValue::U32(2)),
        ],
        &[],
    );
    let path = std::env::temp_dir().join(format!("infer-spm-{}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let g = GgufFile::open(&path);
    let _ = std::fs::remove_file(&path);
    let tok = Tokenizer::from_gguf(&g.unwrap()).unwrap();

    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), [2]);
    for text in [
        "Once upon a time, there was a little girl named Lily. She loved to play outside.",
        "héllo wörld 日本語 🦀",
        "  two leading spaces\nand a newline",
        "12345 3.14159",
    ] {
        for special in [true, false] {
            let want = reference.encode(text, special).unwrap();
            assert_eq!(
                tok.encode(text, special).unwrap(),
                want,
                "{text:?} {special}"
            );
            assert_eq!(
                tok.decode(&want, true).unwrap(),
                reference.decode(&want, true).unwrap()
            );
        }
    }
}
