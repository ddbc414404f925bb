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

/// Resolves a `--model` argument: a local folder or file first, else a Hugging Face Hub id
/// (`org/name`, `org/name:QUANT`, `org/name/file.gguf`; see [`crate::hub`]).
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
    if p.exists() {
        return Err(ModelError::Io {
            path: p.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither a model file nor a folder",
            ),
        });
    }
    if let Some(id) = crate::hub::HubId::parse(spec) {
        return Ok(crate::hub::Hub::from_env().resolve(&id)?);
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
            // Every layer has tensors of its own: more layers than tensors is a corrupt
            // count, refused before anything is sized from it.
            if cfg.n_layers > g.tensors.len() {
                return Err(ModelError::BadField {
                    path: f.clone(),
                    field: format!("{}.block_count", cfg.arch.gguf_name),
                    reason: format!(
                        "{} layers but the file holds {} tensors",
                        cfg.n_layers,
                        g.tensors.len()
                    ),
                });
            }
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
    opts.check(&cfg, dev.max_binding())?;
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
