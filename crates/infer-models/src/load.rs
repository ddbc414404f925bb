//! Resolving `--model` (a folder, a `.gguf` file or a Hugging Face repo id) and loading a
//! model with its tokenizer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use infer_kernels::Kernels;

use crate::arch::Family;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::gemma::Gemma;
use crate::gguf::GgufFile;
use crate::gpt2::Gpt2;
use crate::graph::Graph;
use crate::llama::Llama;
use crate::model::Model;
use crate::options::LoadOptions;
use crate::runner::Runner;
use crate::source::Source;
use crate::tokenizer::Tokenizer;

/// Where a model's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelPath {
    /// A Hugging Face folder: config.json, safetensors, tokenizer files.
    HfDir(PathBuf),
    /// A single GGUF file.
    Gguf(PathBuf),
}

fn hub_cache() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HF_HUB_CACHE") {
        return Some(p.into());
    }
    if let Ok(p) = std::env::var("HF_HOME") {
        return Some(Path::new(&p).join("hub"));
    }
    std::env::var("HOME")
        .ok()
        .map(|h| Path::new(&h).join(".cache/huggingface/hub"))
}

/// Resolves a `--model` argument. A repo id (`org/name`) is looked up in the standard hub
/// cache; this build does not download, so a repo missing there is a clear error.
pub fn resolve(spec: &str) -> Result<ModelPath> {
    let p = Path::new(spec);
    if p.is_dir() {
        if p.join("config.json").is_file() {
            return Ok(ModelPath::HfDir(p.into()));
        }
        return Err(ModelError::MissingField {
            path: p.join("config.json"),
            field: "config.json (a Hugging Face model folder needs one)".into(),
        });
    }
    if p.is_file() {
        return Ok(ModelPath::Gguf(p.into()));
    }
    let looks_like_repo = spec.split('/').count() == 2 && !spec.ends_with(".gguf");
    if looks_like_repo && let Some(cache) = hub_cache() {
        let snaps = cache
            .join(format!("models--{}", spec.replace('/', "--")))
            .join("snapshots");
        if let Ok(rd) = std::fs::read_dir(&snaps) {
            let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            dirs.sort();
            if let Some(d) = dirs
                .into_iter()
                .rev()
                .find(|d| d.join("config.json").exists())
            {
                return Ok(ModelPath::HfDir(d));
            }
        }
        return Err(ModelError::Invalid(format!(
            "model `{spec}` is not a local folder or file and is not in the Hugging Face cache \
             ({}); downloading is not available here: fetch it on a machine with network \
             access (e.g. `huggingface-cli download {spec}`) and pass the folder",
            snaps.display()
        )));
    }
    Err(ModelError::Io {
        path: p.into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
    })
}

/// Opens the weights and config of a model.
pub fn open(path: &ModelPath) -> Result<(Source, ModelConfig)> {
    match path {
        ModelPath::HfDir(d) => {
            let cfg = ModelConfig::from_hf_dir(d)?;
            Ok((Source::open_safetensors(d)?, cfg))
        }
        ModelPath::Gguf(f) => {
            let g = GgufFile::open(f)?;
            let cfg = ModelConfig::from_gguf(&g)?;
            Ok((Source::Gguf(g), cfg))
        }
    }
}

/// Loads the tokenizer that belongs with a model.
pub fn tokenizer(path: &ModelPath, src: &Source) -> Result<Tokenizer> {
    match (path, src) {
        (ModelPath::HfDir(d), _) => Tokenizer::from_hf_dir(d),
        (_, Source::Gguf(g)) => Tokenizer::from_gguf(g),
        (ModelPath::Gguf(f), _) => Err(ModelError::Tokenizer(format!(
            "{}: no tokenizer",
            f.display()
        ))),
    }
}

/// Loads a model (weights uploaded once) and its tokenizer.
pub fn load(
    spec: &str,
    kernels: Arc<Kernels>,
    opts: &LoadOptions,
) -> Result<(Box<dyn Model>, Tokenizer)> {
    let path = resolve(spec)?;
    let (src, cfg) = open(&path)?;
    let tok = tokenizer(&path, &src)?;
    let model = load_model(&src, cfg, kernels, opts)?;
    Ok((model, tok))
}

/// Loads the weights and forward pass of `cfg`'s architecture family, with activations for
/// `opts.rows()` rows and rope tables for `opts.capacity()` positions, but no KV cache:
/// [`load_model`] adds one sequence's cache, infer-serve a paged one.
pub fn load_graph(
    src: &Source,
    cfg: ModelConfig,
    kernels: &Kernels,
    opts: &LoadOptions,
) -> Result<Box<dyn Graph>> {
    let dev = &kernels.dev;
    Ok(match cfg.arch.family {
        Family::Llama => Box::new(Llama::load(src, cfg, dev, opts)?),
        Family::Phi3 => Box::new(crate::phi3::load(src, cfg, dev, opts)?),
        Family::Gemma | Family::Gemma2 | Family::Gemma3 => {
            Box::new(Gemma::load(src, cfg, dev, opts)?)
        }
        Family::Gpt2 => Box::new(Gpt2::load(src, cfg, dev, opts)?),
    })
}

/// Builds the forward pass of `cfg`'s architecture family with one sequence's KV cache.
pub fn load_model(
    src: &Source,
    cfg: ModelConfig,
    kernels: Arc<Kernels>,
    opts: &LoadOptions,
) -> Result<Box<dyn Model>> {
    let graph = load_graph(src, cfg, &kernels, opts)?;
    Ok(Box::new(Runner::new(kernels, graph, opts)?))
}
