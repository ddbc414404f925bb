//! Where weights come from: memory-mapped safetensors files (one or sharded) or a GGUF file.
//! Tensors are asked for by their Hugging Face name; GGUF names are mapped.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use infer_tensor::DType;
use infer_tensor::reference::{dequantize, quantize};
use memmap2::Mmap;

use crate::arch;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// A tensor as stored: row-major shape (Hugging Face order), dtype and bytes.
pub struct RawTensor<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub bytes: Cow<'a, [u8]>,
}

impl RawTensor<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (dequantized).
    pub fn to_f32(&self) -> Vec<f32> {
        dequantize(self.dtype, &self.bytes, self.numel())
    }

    /// Re-encodes in `dtype` (through f32) unless it already is.
    pub fn convert(self, dtype: DType) -> Result<RawTensor<'static>> {
        let cols = self.shape.last().copied().unwrap_or(1);
        if dtype.bytes_for(cols).is_none() {
            return Err(ModelError::BadTensor {
                path: PathBuf::new(),
                tensor: self.name.clone(),
                reason: format!("rows of {cols} cannot be stored as {dtype}"),
            });
        }
        let bytes = if dtype == self.dtype {
            self.bytes.into_owned()
        } else {
            quantize(dtype, &self.to_f32())
        };
        Ok(RawTensor {
            name: self.name,
            shape: self.shape,
            dtype,
            bytes: Cow::Owned(bytes),
        })
    }
}

pub struct StEntry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

pub enum Source {
    Safetensors {
        files: Vec<(PathBuf, Mmap)>,
        index: HashMap<String, StEntry>,
    },
    Gguf(GgufFile),
}

fn mmap(path: &Path) -> Result<Mmap> {
    let f = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    // SAFETY: the file is opened read-only and we never write through the map; a file
    // changed underneath us by another process is outside what we can guard against.
    unsafe { Mmap::map(&f) }.map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })
}

/// The GGUF name of Hugging Face tensor `hf` in `g`, by its architecture's names
/// ([`Family::gguf_name`](crate::arch::Family::gguf_name)).
fn gguf_name(g: &GgufFile, hf: &str) -> Option<String> {
    let arch = arch::from_gguf(g.architecture().ok()?).ok()?;
    arch.family.gguf_name(hf)
}

/// The first tensor (name, end offset, data section length) of a safetensors file whose
/// data runs past the end of the file; `None` when all fit or the header does not parse
/// (the safetensors crate reports that).
fn past_the_end(bytes: &[u8]) -> Option<(String, u64, u64)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    let len = (bytes.len() - end) as u64;
    let mut tensors: Vec<(&String, u64)> = header
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(k, v)| Some((k, v.get("data_offsets")?.get(1)?.as_u64()?)))
        .collect();
    tensors.sort_by_key(|t| t.1);
    tensors
        .into_iter()
        .find(|t| t.1 > len)
        .map(|(k, e)| (k.clone(), e, len))
}

impl Source {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open_safetensors(dir: &Path) -> Result<Source> {
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| ModelError::Io {
                path: index_path.clone(),
                source,
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Corrupt {
                    path: index_path.clone(),
                    what: "safetensors index",
                    reason: e.to_string(),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::MissingField {
                    path: index_path.clone(),
                    field: "weight_map".into(),
                })?;
            // Shard names come from the folder's own index: each must be a file name inside
            // the folder (no absolute path, no `..`), never a path elsewhere on the machine.
            let mut files = Vec::new();
            for (tensor, f) in map {
                let bad = |reason: String| ModelError::BadField {
                    path: index_path.clone(),
                    field: format!("weight_map.{tensor}"),
                    reason,
                };
                let name = f
                    .as_str()
                    .ok_or_else(|| bad(format!("{f} is not a file name")))?;
                let inside = Path::new(name)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !inside || name.is_empty() {
                    return Err(bad(format!(
                        "`{name}` is not a file inside the model folder"
                    )));
                }
                files.push(dir.join(name));
            }
            files.sort();
            files.dedup();
            files
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (fi, path) in names.into_iter().enumerate() {
            let map = mmap(&path)?;
            let corrupt = |reason: String| ModelError::Corrupt {
                path: path.clone(),
                what: "safetensors file",
                reason,
            };
            // A tensor whose data runs past the end of the file is named (the safetensors
            // crate only says the buffer is not covered).
            if let Some((tensor, end, len)) = past_the_end(&map) {
                return Err(ModelError::BadTensor {
                    path: path.clone(),
                    tensor,
                    reason: format!(
                        "its data ends at byte {end} of a {len}-byte data section (the file \
                         is truncated or its header is wrong)"
                    ),
                });
            }
            // deserialize validates the header and that every tensor lies inside the file.
            safetensors::SafeTensors::deserialize(&map).map_err(|e| corrupt(e.to_string()))?;
            let (header, meta) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|e| corrupt(e.to_string()))?;
            for (name, info) in meta.tensors() {
                let dtype = match info.dtype {
                    safetensors::Dtype::F32 => DType::F32,
                    safetensors::Dtype::F16 => DType::F16,
                    safetensors::Dtype::BF16 => DType::BF16,
                    other => {
                        return Err(ModelError::UnsupportedTensorType {
                            path: path.clone(),
                            tensor: name,
                            ggml_type: format!("{other:?}"),
                        });
                    }
                };
                index.insert(
                    name,
                    StEntry {
                        file: fi,
                        dtype,
                        shape: info.shape.clone(),
                        start: 8 + header + info.data_offsets.0,
                        end: 8 + header + info.data_offsets.1,
                    },
                );
            }
            files.push((path, map));
        }
        Ok(Source::Safetensors { files, index })
    }

    pub fn path(&self) -> PathBuf {
        match self {
            Source::Safetensors { files, .. } => {
                files.first().map(|f| f.0.clone()).unwrap_or_default()
            }
            Source::Gguf(g) => g.path.clone(),
        }
    }

    pub fn has(&self, hf_name: &str) -> bool {
        match self {
            Source::Safetensors { index, .. } => index.contains_key(hf_name),
            Source::Gguf(g) => gguf_name(g, hf_name).is_some_and(|n| g.tensor(&n).is_ok()),
        }
    }

    /// The tensor named `hf_name` (a Hugging Face name), checked against `shape`.
    pub fn get(&self, hf_name: &str, shape: &[usize]) -> Result<RawTensor<'_>> {
        let t = match self {
            Source::Safetensors { files, index } => {
                let e = index
                    .get(hf_name)
                    .ok_or_else(|| ModelError::MissingTensor {
                        path: self.path(),
                        tensor: hf_name.into(),
                    })?;
                RawTensor {
                    name: hf_name.into(),
                    shape: e.shape.clone(),
                    dtype: e.dtype,
                    bytes: Cow::Borrowed(&files[e.file].1[e.start..e.end]),
                }
            }
            Source::Gguf(g) => {
                let name = gguf_name(g, hf_name).ok_or_else(|| ModelError::MissingTensor {
                    path: g.path.clone(),
                    tensor: hf_name.into(),
                })?;
                let info = g.tensor(&name)?;
                RawTensor {
                    name: name.clone(),
                    // GGUF lists dimensions innermost first.
                    shape: info.dims.iter().rev().map(|&d| d as usize).collect(),
                    dtype: g.dtype(info)?,
                    bytes: Cow::Borrowed(g.tensor_data(info)?),
                }
            }
        };
        if t.shape != shape {
            return Err(ModelError::BadTensor {
                path: self.path(),
                tensor: t.name,
                reason: format!("expected shape {shape:?}, found {:?}", t.shape),
            });
        }
        let need = t.dtype.bytes_for(t.numel());
        if need != Some(t.bytes.len()) {
            return Err(ModelError::BadTensor {
                path: self.path(),
                tensor: t.name,
                reason: format!(
                    "{} bytes of data for {:?} {}",
                    t.bytes.len(),
                    t.shape,
                    t.dtype
                ),
            });
        }
        Ok(t)
    }
}
