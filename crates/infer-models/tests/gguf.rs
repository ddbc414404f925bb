//! GGUF reader tests on small files written here, plus the real SmolLM2 file when present.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use infer_models::ModelError;
use infer_models::gguf::{GgufFile, GgufValue, to_gguf_bytes};
use infer_tensor::DType;

/// Tensors and metadata for a small test file.
struct Writer {
    version: u32,
    kv: Vec<(String, GgufValue)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl Writer {
    fn new(version: u32) -> Self {
        Writer {
            version,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }

    fn kv(mut self, key: &str, v: GgufValue) -> Self {
        self.kv.push((key.to_string(), v));
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_string(), dims.to_vec(), ggml_type, data));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let kv: Vec<(&str, GgufValue)> = self
            .kv
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let tensors: Vec<(&str, &[u64], u32, &[u8])> = self
            .tensors
            .iter()
            .map(|(n, d, t, b)| (n.as_str(), d.as_slice(), *t, b.as_slice()))
            .collect();
        to_gguf_bytes(self.version, &kv, &tensors)
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh file path in the system temp dir (removed at the end of the test).
struct TempFile(PathBuf);

impl TempFile {
    fn with(bytes: &[u8]) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("infer-gguf-test-{}-{n}.gguf", std::process::id()));
        std::fs::write(&path, bytes).expect("writing a temp file");
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn sample(version: u32) -> Writer {
    let q4_1 = vec![7u8; 2 * 20]; // 64 elements = 2 blocks of 20 bytes
    Writer::new(version)
        .kv("general.architecture", GgufValue::String("llama".into()))
        .kv("llama.block_count", GgufValue::U32(2))
        .kv("llama.context_length", GgufValue::U64(128))
        .kv("llama.rope.freq_base", GgufValue::F32(10000.0))
        .kv("small.signed", GgufValue::I8(-3))
        .kv("flag", GgufValue::Bool(true))
        .kv(
            "tokenizer.ggml.tokens",
            GgufValue::Array(vec![
                GgufValue::String("a".into()),
                GgufValue::String("日本".into()),
            ]),
        )
        .kv(
            "tokenizer.ggml.scores",
            GgufValue::Array(vec![GgufValue::F32(-1.5), GgufValue::F32(0.25)]),
        )
        .kv(
            "tokenizer.ggml.token_type",
            GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(3)]),
        )
        .tensor("w.f32", &[3, 2], 0, f32_bytes(&[1., 2., 3., 4., 5., 6.]))
        .tensor("w.q4_1", &[64], 3, q4_1)
}

fn roundtrip(version: u32) {
    let file = TempFile::with(&sample(version).bytes());
    let g = GgufFile::open(file.path()).expect("open");
    assert_eq!(g.version, version);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(g.get_u32("llama.context_length").unwrap(), 128);
    assert_eq!(g.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(g.get_f32("llama.block_count").unwrap(), 2.0);
    assert!(g.get_bool("flag").unwrap());
    assert_eq!(g.get_u32_opt("absent").unwrap(), None);
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["a", "日本"]
    );
    assert_eq!(
        g.get_f32_array("tokenizer.ggml.scores").unwrap(),
        [-1.5, 0.25]
    );
    assert_eq!(
        g.get_i32_array("tokenizer.ggml.token_type").unwrap(),
        [1, 3]
    );

    let t = g.tensor("w.f32").unwrap();
    assert_eq!(t.dims, [3, 2]);
    assert_eq!(g.dtype(t).unwrap(), DType::F32);
    assert_eq!(
        g.tensor_data(t).unwrap(),
        f32_bytes(&[1., 2., 3., 4., 5., 6.])
    );
    let q = g.tensor("w.q4_1").unwrap();
    assert_eq!(g.dtype(q).unwrap(), DType::Q4_1);
    assert_eq!(q.offset % 32, 0);
    assert_eq!(g.tensor_data(q).unwrap(), vec![7u8; 40]);
}

#[test]
fn reads_v3() {
    roundtrip(3);
}

#[test]
fn reads_v2() {
    roundtrip(2);
}

#[test]
fn custom_alignment() {
    let w = Writer::new(3)
        .kv("general.alignment", GgufValue::U32(64))
        .tensor("a", &[3], 0, f32_bytes(&[1., 2., 3.]))
        .tensor("b", &[2], 0, f32_bytes(&[4., 5.]));
    let file = TempFile::with(&w.bytes());
    let g = GgufFile::open(file.path()).unwrap();
    let b = g.tensor("b").unwrap();
    assert_eq!(b.offset, 64);
    assert_eq!(g.tensor_data(b).unwrap(), f32_bytes(&[4., 5.]));
}

#[test]
fn missing_and_mistyped_fields_name_the_field() {
    let file = TempFile::with(&sample(3).bytes());
    let g = GgufFile::open(file.path()).unwrap();
    let err = g.get_u32("llama.nope").unwrap_err();
    assert!(matches!(err, ModelError::MissingField { ref field, .. } if field == "llama.nope"));
    assert!(err.to_string().contains(&file.path().display().to_string()));
    let err = g.get_str("llama.block_count").unwrap_err().to_string();
    assert!(
        err.contains("llama.block_count") && err.contains("string"),
        "{err}"
    );
    let err = g.get_u32("small.signed").unwrap_err().to_string();
    assert!(err.contains("-3"), "{err}");
    let err = g.tensor("nope").unwrap_err();
    assert!(matches!(err, ModelError::MissingTensor { ref tensor, .. } if tensor == "nope"));
}

#[test]
fn truncated_file_names_path_and_tensor() {
    let bytes = sample(3).bytes();
    // Cut into the last tensor's data.
    let file = TempFile::with(&bytes[..bytes.len() - 5]);
    let err = GgufFile::open(file.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&file.path().display().to_string()), "{msg}");
    assert!(msg.contains("w.q4_1") && msg.contains("truncated"), "{msg}");

    // Cut inside the header / metadata: every prefix fails cleanly, never panics.
    for cut in [0, 3, 7, 20, 40, 100, 200] {
        let file = TempFile::with(&bytes[..cut.min(bytes.len())]);
        let err = GgufFile::open(file.path()).unwrap_err();
        assert!(
            err.to_string().contains(&file.path().display().to_string()),
            "{err}"
        );
    }
}

#[test]
fn bad_magic_and_version() {
    let mut bytes = sample(3).bytes();
    bytes[0] = b'X';
    let file = TempFile::with(&bytes);
    let msg = GgufFile::open(file.path()).unwrap_err().to_string();
    assert!(msg.contains("magic"), "{msg}");

    let mut bytes = sample(3).bytes();
    bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
    let file = TempFile::with(&bytes);
    let msg = GgufFile::open(file.path()).unwrap_err().to_string();
    assert!(msg.contains("version 7"), "{msg}");
}

#[test]
fn absurd_counts_are_rejected_without_allocating() {
    let mut bytes = sample(3).bytes();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let file = TempFile::with(&bytes);
    let msg = GgufFile::open(file.path()).unwrap_err().to_string();
    assert!(msg.contains("tensor count"), "{msg}");
}

#[test]
fn unsupported_tensor_type_is_named() {
    // Q8_K: 256 elements per 292-byte block (llama.cpp's intermediate type, never a weight).
    let w = sample(3).tensor("blk.0.attn_q.weight", &[256], 15, vec![0; 292]);
    let file = TempFile::with(&w.bytes());
    let g = GgufFile::open(file.path()).expect("unsupported types still open");
    let t = g.tensor("blk.0.attn_q.weight").unwrap();
    let err = g.dtype(t).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("unsupported tensor type"), "{msg}");
    assert!(
        msg.contains("Q8_K") && msg.contains("blk.0.attn_q.weight"),
        "{msg}"
    );
    assert!(g.tensor_data(t).is_err());
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

#[test]
fn real_smollm2_file() {
    let path = models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        let msg = format!("{} is missing; run `cargo xtask model`", path.display());
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("SKIP: {msg}");
        return;
    }
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(g.tensors.len(), 272);
    for t in &g.tensors {
        let data = g.tensor_data(t).unwrap();
        let dtype = g.dtype(t).unwrap();
        assert_eq!(Some(data.len()), dtype.bytes_for(t.n_elems() as usize));
    }
    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(emb.dims, [576, 49152]);
}

#[test]
fn q5_tensors_load_and_bad_blocks_are_named() {
    use infer_tensor::reference;
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 9.0).collect();
    let q5_0 = reference::quantize(DType::Q5_0, &x);
    let q5_1 = reference::quantize(DType::Q5_1, &x);
    // A Q5_0 block whose f16 scale is +inf (0x7c00), and a tensor of 33 elements (not
    // whole 32-element blocks).
    let mut inf = q5_0.clone();
    inf[22..24].copy_from_slice(&0x7c00u16.to_le_bytes());
    let w = sample(3)
        .tensor("a.q5_0", &[64], 6, q5_0.clone())
        .tensor("b.q5_1", &[64], 7, q5_1.clone())
        .tensor("c.inf", &[64], 6, inf);
    let file = TempFile::with(&w.bytes());
    let g = GgufFile::open(file.path()).expect("opens");
    for (name, dt, bytes) in [
        ("a.q5_0", DType::Q5_0, &q5_0),
        ("b.q5_1", DType::Q5_1, &q5_1),
    ] {
        let t = g.tensor(name).unwrap();
        assert_eq!(g.dtype(t).unwrap(), dt);
        assert_eq!(g.tensor_data(t).unwrap(), bytes.as_slice());
        let y = reference::dequantize(dt, g.tensor_data(t).unwrap(), 64);
        let worst = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 0.2, "{name}: worst error {worst}");
    }
    let msg = g
        .tensor_data(g.tensor("c.inf").unwrap())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("c.inf") && msg.contains("Q5_0"), "{msg}");
    assert!(
        msg.contains("not finite") && msg.contains("block 1"),
        "{msg}"
    );
    // Rows that are not whole blocks are refused at open.
    let w = sample(3).tensor("d.odd", &[33], 6, vec![0; 44]);
    let file = TempFile::with(&w.bytes());
    let msg = GgufFile::open(file.path()).unwrap_err().to_string();
    assert!(msg.contains("d.odd") && msg.contains("Q5_0"), "{msg}");
}

/// The K- and I-quants load from a file with their GGUF type ids, bytes as written; a
/// non-finite super-block scale and a row that is not whole 256-element blocks are errors
/// naming the tensor and its type.
#[test]
fn k_and_i_quant_tensors_load_and_bad_blocks_are_named() {
    use infer_tensor::reference;
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0)
        .collect();
    let types = [
        (DType::Q2_K, 10),
        (DType::Q3_K, 11),
        (DType::Q4_K, 12),
        (DType::Q5_K, 13),
        (DType::Q6_K, 14),
        (DType::IQ4_NL, 20),
        (DType::IQ4_XS, 23),
    ];
    let mut w = sample(3);
    let mut blobs = Vec::new();
    for (dt, id) in types {
        let bytes = reference::quantize(dt, &x);
        w = w.tensor(&format!("w.{dt}"), &[512], id, bytes.clone());
        blobs.push(bytes);
    }
    // Q6_K's d sits at byte 208 of its second block.
    let mut inf = blobs[4].clone();
    inf[210 + 208..210 + 210].copy_from_slice(&0xfc00u16.to_le_bytes());
    w = w.tensor("w.inf", &[512], 14, inf);
    let file = TempFile::with(&w.bytes());
    let g = GgufFile::open(file.path()).expect("opens");
    for ((dt, _), bytes) in types.iter().zip(&blobs) {
        let t = g.tensor(&format!("w.{dt}")).unwrap();
        assert_eq!(g.dtype(t).unwrap(), *dt);
        assert_eq!(g.tensor_data(t).unwrap(), bytes.as_slice(), "{dt}");
    }
    let msg = g
        .tensor_data(g.tensor("w.inf").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("w.inf") && msg.contains("Q6_K") && msg.contains("block 1"),
        "{msg}"
    );
    let w = sample(3).tensor("w.odd", &[288], 12, vec![0; 144]);
    let file = TempFile::with(&w.bytes());
    let msg = GgufFile::open(file.path()).unwrap_err().to_string();
    assert!(msg.contains("w.odd") && msg.contains("Q4_K"), "{msg}");
}

/// Header numbers are checked against their meaning before anything is sized from them: a
/// block count of 2^32 - 1 (which once made the loader ask for terabytes and abort), zero
/// counts, a non-positive or NaN rope base, a BOS id outside the vocabulary: each an error
/// naming the key; the same file with sane numbers gives a config.
#[test]
fn absurd_hyperparameters_are_errors_naming_the_key() {
    let base = |over: &[(&str, GgufValue)]| {
        let mut kv: Vec<(&str, GgufValue)> = vec![
            ("general.architecture", GgufValue::String("llama".into())),
            ("llama.embedding_length", GgufValue::U32(64)),
            ("llama.attention.head_count", GgufValue::U32(4)),
            ("llama.block_count", GgufValue::U32(2)),
            ("llama.feed_forward_length", GgufValue::U32(128)),
            ("llama.context_length", GgufValue::U32(256)),
            ("llama.rope.freq_base", GgufValue::F32(10000.0)),
            (
                "llama.attention.layer_norm_rms_epsilon",
                GgufValue::F32(1e-5),
            ),
            ("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
        ];
        for (k, v) in over {
            kv.retain(|(x, _)| x != k);
            kv.push((k, v.clone()));
        }
        let mut w = Writer::new(3);
        for (k, v) in kv {
            w = w.kv(k, v);
        }
        let w = w
            .tensor("token_embd.weight", &[64, 8], 0, vec![0; 64 * 8 * 4])
            .tensor("output_norm.weight", &[64], 0, vec![0; 64 * 4]);
        let file = TempFile::with(&w.bytes());
        let path = infer_models::load::ModelPath::Gguf(file.path().to_path_buf());
        infer_models::load::open(&path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    base(&[]).expect("the sane file");
    for (key, v, says) in [
        ("llama.block_count", GgufValue::U32(u32::MAX), "layers"),
        ("llama.block_count", GgufValue::U32(100), "tensors"),
        ("llama.block_count", GgufValue::U32(0), "at least 1"),
        ("llama.context_length", GgufValue::U32(0), "at least 1"),
        ("llama.feed_forward_length", GgufValue::U32(0), "at least 1"),
        (
            "llama.attention.head_count",
            GgufValue::U32(0),
            "at least 1",
        ),
        ("llama.rope.dimension_count", GgufValue::U32(1000), "rotary"),
        ("llama.rope.freq_base", GgufValue::F32(-1.0), "positive"),
        ("llama.rope.freq_base", GgufValue::F32(f32::NAN), "positive"),
        (
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(f32::INFINITY),
            "finite",
        ),
        (
            "tokenizer.ggml.bos_token_id",
            GgufValue::U32(1_000_000_000),
            "vocabulary",
        ),
    ] {
        let msg = base(&[(key, v)]).expect_err(key);
        assert!(msg.contains(key) && msg.contains(says), "{key}: {msg}");
    }
}
