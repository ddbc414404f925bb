//! GGUF (versions 2 and 3, little-endian) reader: metadata, tensor table, memory-mapped data.
//!
//! Layout: magic `GGUF`, version u32, tensor count u64, metadata count u64, the metadata
//! key/values, the tensor infos, padding to `general.alignment` (default 32), then the data
//! section. Every length and offset is checked against the file before it is used.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use infer_tensor::DType;
use infer_tensor::reference::ggml_quants;
use memmap2::Mmap;

use crate::error::{ModelError, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are rejected (real files nest at most once).
const MAX_ARRAY_DEPTH: u32 = 8;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an integer, for any integer variant.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => v.into(),
            GgufValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a float, for float and integer variants.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The GGUF name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F32(_) => "f32",
            GgufValue::F64(_) => "f64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }
}

impl fmt::Display for GgufValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufValue::String(s) => write!(f, "{s:?}"),
            GgufValue::Array(a) => write!(f, "[{} elements]", a.len()),
            GgufValue::Bool(b) => write!(f, "{b}"),
            v => match v.as_i128() {
                Some(i) => write!(f, "{i}"),
                None => write!(f, "{}", v.as_f64().unwrap_or(f64::NAN)),
            },
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost (row length).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Relative to the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Number of elements (the product of `dims`; checked against overflow at open).
    pub fn n_elems(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// An opened, validated, memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
    mmap: Mmap,
    data_offset: usize,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates `path`: header, metadata, tensor table, and that every tensor's
    /// bytes lie inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; the file is not expected to change while it is open
        // (the same contract as every other mmap-based model loader).
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let parsed = Parser::new(path, &mmap).parse()?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            version: parsed.version,
            metadata: parsed.metadata,
            by_name: parsed
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: parsed.tensors,
            data_offset: parsed.data_offset,
            mmap,
        })
    }

    pub fn tensor(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// The tensor's element type; `UnsupportedTensorType` for GGML types this engine lacks.
    pub fn dtype(&self, t: &GgufTensorInfo) -> Result<DType> {
        DType::from_ggml_type(t.ggml_type).ok_or_else(|| ModelError::UnsupportedTensorType {
            path: self.path.clone(),
            tensor: t.name.clone(),
            ggml_type: ggml_type_name(t.ggml_type),
        })
    }

    /// The exact bytes of a tensor (`dtype.bytes_for(n_elems)` of them). Errors name the
    /// tensor: its size not whole blocks, its data outside the file, or (the types decoded by
    /// `ggml_quants`: Q5_0 / Q5_1, the K-quants, IQ4_NL / IQ4_XS) a block's scale not finite.
    pub fn tensor_data(&self, t: &GgufTensorInfo) -> Result<&[u8]> {
        let dtype = self.dtype(t)?;
        let bad = |reason: String| ModelError::BadTensor {
            path: self.path.clone(),
            tensor: t.name.clone(),
            reason,
        };
        let n = usize::try_from(t.n_elems())
            .map_err(|_| bad(format!("{} elements do not fit in memory", t.n_elems())))?;
        let len = dtype.bytes_for(n).ok_or_else(|| {
            bad(format!(
                "{n} elements is not a whole number of {dtype} blocks"
            ))
        })?;
        let start = usize::try_from(t.offset)
            .ok()
            .and_then(|o| o.checked_add(self.data_offset));
        let data = start
            .and_then(|s| self.mmap.get(s..s.checked_add(len)?))
            .ok_or_else(|| {
                bad(format!(
                    "data at offset {} ({len} bytes) lies outside the file",
                    t.offset
                ))
            })?;
        // The block types decoded by ggml_quants: their f16 scales must be finite (a file's
        // bytes can hold any bits; the kernels would spread inf / NaN over a whole row).
        if let Some(kind) = dtype.ggml_quant() {
            ggml_quants::check_scales(kind, data).map_err(|e| bad(e.to_string()))?;
        }
        Ok(data)
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.get(key).ok_or_else(|| ModelError::MissingField {
            path: self.path.clone(),
            field: key.to_string(),
        })
    }

    fn bad_field(&self, key: &str, reason: impl Into<String>) -> ModelError {
        ModelError::BadField {
            path: self.path.clone(),
            field: key.to_string(),
            reason: reason.into(),
        }
    }

    fn wrong_type(&self, key: &str, want: &str, got: &GgufValue) -> ModelError {
        self.bad_field(key, format!("expected {want}, found {}", got.type_name()))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, "string", v))
    }

    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        self.opt(key, |k| self.get_str(k))
    }

    /// Any integer type whose value fits in a u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.require(key)?;
        let i = v
            .as_i128()
            .ok_or_else(|| self.wrong_type(key, "an integer", v))?;
        u32::try_from(i).map_err(|_| self.bad_field(key, format!("{i} does not fit in u32")))
    }

    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>> {
        self.opt(key, |k| self.get_u32(k))
    }

    /// Any integer type whose value fits in a u64.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        let i = v
            .as_i128()
            .ok_or_else(|| self.wrong_type(key, "an integer", v))?;
        u64::try_from(i).map_err(|_| self.bad_field(key, format!("{i} does not fit in u64")))
    }

    /// f32, f64 or any integer type.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f64()
            .map(|f| f as f32)
            .ok_or_else(|| self.wrong_type(key, "a number", v))
    }

    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        self.opt(key, |k| self.get_f32(k))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            GgufValue::Bool(b) => Ok(*b),
            v => Err(self.wrong_type(key, "bool", v)),
        }
    }

    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.opt(key, |k| self.get_bool(k))
    }

    fn get_array(&self, key: &str) -> Result<&[GgufValue]> {
        match self.require(key)? {
            GgufValue::Array(a) => Ok(a),
            v => Err(self.wrong_type(key, "array", v)),
        }
    }

    fn map_array<'a, T>(
        &'a self,
        key: &str,
        want: &str,
        f: impl Fn(&'a GgufValue) -> Option<T>,
    ) -> Result<Vec<T>> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                f(v).ok_or_else(|| {
                    self.bad_field(key, format!("element {i}: expected {want}, found {v}"))
                })
            })
            .collect()
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.map_array(key, "string", |v| v.as_str())
    }

    /// Elements may be any float or integer type.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.map_array(key, "a number", |v| v.as_f64().map(|f| f as f32))
    }

    /// Elements may be any integer type whose values fit in i32 (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        self.map_array(key, "an i32", |v| {
            v.as_i128().and_then(|i| i32::try_from(i).ok())
        })
    }

    fn opt<T>(&self, key: &str, f: impl FnOnce(&str) -> Result<T>) -> Result<Option<T>> {
        if self.metadata.contains_key(key) {
            f(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }
}

/// The name of a GGML type id as ggml spells it (`Q4_K`), or `type <id>` when unknown.
pub fn ggml_type_name(t: u32) -> String {
    let name = match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("type {t}"),
    };
    name.to_string()
}

/// (elements per block, bytes per block) for the GGML types whose layout is well known, so
/// that `open` can bounds-check tensors of types this engine cannot run.
fn ggml_block_layout(t: u32) -> Option<(u64, u64)> {
    if let Some(d) = DType::from_ggml_type(t) {
        return Some((d.block_elems() as u64, d.block_bytes() as u64));
    }
    Some(match t {
        9 => (32, 36),    // Q8_1
        15 => (256, 292), // Q8_K
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 | 28 => (1, 8),
        _ => return None,
    })
}

struct Parsed {
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    data_offset: usize,
}

/// A bounds-checked cursor over the file's bytes.
struct Parser<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(path: &'a Path, buf: &'a [u8]) -> Self {
        Parser { path, buf, pos: 0 }
    }

    fn corrupt(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Corrupt {
            path: self.path.to_path_buf(),
            what: "GGUF file",
            reason: reason.into(),
        }
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.corrupt(format!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {}",
                self.pos,
                self.buf.len()
            )));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N, what)?;
        Ok(b.try_into().expect("bytes() returned N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count that must be satisfiable by the bytes left (each item takes at least `min_size`).
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(self.corrupt(format!(
                "{what} is {n} but only {left} bytes remain (truncated or corrupt)"
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .map_err(|_| self.corrupt(format!("{what}: length {len} too large")))?;
        let at = self.pos;
        let b = self.bytes(len, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|e| self.corrupt(format!("{what} at offset {at} is not UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(key)?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(key)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.corrupt(format!("`{key}`: bool byte is {b}"))),
            },
            8 => GgufValue::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.corrupt(format!("`{key}`: arrays nested too deeply")));
                }
                let elem_ty = self.u32(key)?;
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => {
                        return Err(
                            self.corrupt(format!("`{key}`: unknown array element type {t}"))
                        );
                    }
                };
                let n = self.count(&format!("`{key}` array length"), min_size)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(key)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(self.corrupt(format!("`{key}`: unknown value type {t}"))),
        })
    }

    fn parse(mut self) -> Result<Parsed> {
        let magic = self.array::<4>("magic")?;
        if &magic != MAGIC {
            return Err(self.corrupt(format!("bad magic {magic:02x?} (expected \"GGUF\")")));
        }
        let version = self.u32("version")?;
        match version {
            2 | 3 => {}
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(self.corrupt("big-endian GGUF files are not supported"));
            }
            v => return Err(self.corrupt(format!("unsupported version {v} (expected 2 or 3)"))),
        }
        // Smallest tensor info: 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset).
        let n_tensors = self.count("tensor count", 24)?;
        // Smallest key/value: 8 (key len) + 4 (type) + 1.
        let n_kv = self.count("metadata count", 13)?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = self.string(&format!("metadata key {i}"))?;
            let ty = self.u32(&key)?;
            let value = self.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(self.corrupt(format!("duplicate metadata key `{key}`")));
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_i128() {
                Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= 1 << 30 => a as u64,
                _ => {
                    return Err(
                        self.corrupt(format!("general.alignment is {v}, not a power of two"))
                    );
                }
            },
        };

        let mut tensors = Vec::with_capacity(n_tensors);
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = self.string(&format!("tensor {i} name"))?;
            let n_dims = self.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(self.corrupt(format!(
                    "tensor `{name}`: {n_dims} dimensions (expected 1..={MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.u64(&name)?);
            }
            let ggml_type = self.u32(&name)?;
            let offset = self.u64(&name)?;
            if !names.insert(name.clone()) {
                return Err(self.corrupt(format!("duplicate tensor `{name}`")));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }

        let data_offset = (self.pos as u64).next_multiple_of(alignment);
        let file_len = self.buf.len() as u64;
        if data_offset > file_len && !tensors.is_empty() {
            return Err(self.corrupt(format!(
                "truncated: data section would start at {data_offset} but the file has {file_len} bytes"
            )));
        }
        let data_len = file_len.saturating_sub(data_offset);
        for t in &tensors {
            self.check_tensor(t, alignment, data_len)?;
        }
        Ok(Parsed {
            version,
            metadata,
            tensors,
            data_offset: data_offset.min(file_len) as usize,
        })
    }

    fn check_tensor(&self, t: &GgufTensorInfo, alignment: u64, data_len: u64) -> Result<()> {
        let name = &t.name;
        if !t.offset.is_multiple_of(alignment) {
            return Err(self.corrupt(format!(
                "tensor `{name}`: offset {} is not a multiple of the alignment {alignment}",
                t.offset
            )));
        }
        let n = t
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| self.corrupt(format!("tensor `{name}`: dims {:?} overflow", t.dims)))?;
        let size = match ggml_block_layout(t.ggml_type) {
            Some((block_elems, block_bytes)) => {
                if !t.dims[0].is_multiple_of(block_elems) {
                    return Err(self.corrupt(format!(
                        "tensor `{name}`: row length {} is not a multiple of the {} block size {block_elems}",
                        t.dims[0],
                        ggml_type_name(t.ggml_type)
                    )));
                }
                (n / block_elems)
                    .checked_mul(block_bytes)
                    .ok_or_else(|| self.corrupt(format!("tensor `{name}`: size overflows")))?
            }
            // Unknown layout: only the start can be checked here; `tensor_data` refuses the type.
            None => 0,
        };
        let end = t.offset.checked_add(size);
        if end.is_none_or(|e| e > data_len) {
            return Err(self.corrupt(format!(
                "truncated: tensor `{name}` needs bytes {}..{} of the data section, which has {data_len}",
                t.offset,
                t.offset.saturating_add(size)
            )));
        }
        Ok(())
    }
}

/// Writes a little-endian GGUF file (for tests and tools): `metadata` in order, then each
/// tensor's `(name, dims, ggml_type, bytes)` laid out back to back at `general.alignment`
/// (default 32). Returns the bytes; writing them is the caller's business.
pub fn to_gguf_bytes(
    version: u32,
    metadata: &[(&str, GgufValue)],
    tensors: &[(&str, &[u64], u32, &[u8])],
) -> Vec<u8> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn type_id(v: &GgufValue) -> u32 {
        match v {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }
    fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
        match v {
            GgufValue::U8(x) => out.push(*x),
            GgufValue::I8(x) => out.extend(x.to_le_bytes()),
            GgufValue::U16(x) => out.extend(x.to_le_bytes()),
            GgufValue::I16(x) => out.extend(x.to_le_bytes()),
            GgufValue::U32(x) => out.extend(x.to_le_bytes()),
            GgufValue::I32(x) => out.extend(x.to_le_bytes()),
            GgufValue::U64(x) => out.extend(x.to_le_bytes()),
            GgufValue::I64(x) => out.extend(x.to_le_bytes()),
            GgufValue::F32(x) => out.extend(x.to_le_bytes()),
            GgufValue::F64(x) => out.extend(x.to_le_bytes()),
            GgufValue::Bool(x) => out.push(u8::from(*x)),
            GgufValue::String(s) => put_str(out, s),
            GgufValue::Array(items) => {
                // An empty array is written as an array of u32.
                out.extend(items.first().map_or(4, type_id).to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    put_value(out, item);
                }
            }
        }
    }

    let alignment = metadata
        .iter()
        .find(|(k, _)| *k == "general.alignment")
        .and_then(|(_, v)| v.as_i128())
        .map_or(DEFAULT_ALIGNMENT as usize, |a| a as usize);
    let mut out = MAGIC.to_vec();
    out.extend(version.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend(type_id(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    for (name, dims, ty, data) in tensors {
        put_str(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + data.len()).next_multiple_of(alignment);
    }
    let data_start = out.len().next_multiple_of(alignment);
    for ((.., data), offset) in tensors.iter().zip(offsets) {
        out.resize(data_start + offset, 0);
        out.extend(*data);
    }
    out.resize(out.len().max(data_start), 0);
    out
}
