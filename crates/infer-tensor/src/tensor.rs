//! GPU tensors: a shape, a dtype and one or more buffers.
//!
//! A tensor is row-major; its rows are all dimensions but the last. A tensor whose bytes
//! exceed the adapter's largest binding is split by whole rows into several buffers
//! (`parts`); kernels that take weights dispatch once per part.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

static CREATED_BYTES: AtomicU64 = AtomicU64::new(0);
static WEIGHT_BYTES: AtomicU64 = AtomicU64::new(0);
static WEIGHT_ELEMS: AtomicU64 = AtomicU64::new(0);

/// Bytes (in their own dtype's layout) and elements of the weight matrices uploaded with
/// [`Tensor::upload_weights`] in this process: what a decode step streams through.
pub fn uploaded_weights() -> (u64, u64) {
    (
        WEIGHT_BYTES.load(Ordering::Relaxed),
        WEIGHT_ELEMS.load(Ordering::Relaxed),
    )
}

/// Bytes of GPU buffers created for tensors in this process so far (weights, caches,
/// activations). Buffers are only ever created at load time, so after a model is loaded
/// this is its peak tensor memory on the GPU.
pub fn created_bytes() -> u64 {
    CREATED_BYTES.load(Ordering::Relaxed)
}

use wgpu::util::DeviceExt;

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Result, TensorError};
use crate::unit_pack;

/// One buffer of a tensor holding rows `row_start .. row_start + rows`.
#[derive(Clone, Debug)]
pub struct Part {
    pub buffer: wgpu::Buffer,
    pub row_start: usize,
    pub rows: usize,
    /// Weight layout only: where the scale region starts, in 16-byte units.
    pub scale_offset: usize,
}

/// How a tensor's elements sit in its buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Row-major in the dtype's own byte layout (activations, caches, ids).
    Plain,
    /// The GPU weight layout of [`pack_weights`], read by the weight kernels
    /// (matvec, matmul, embedding) in 16-byte units.
    Weights,
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub layout: Layout,
    pub parts: Vec<Part>,
}

/// Elements in one 16-byte load unit of the weight layout: 4 f32, 8 f16 / bf16, or a whole
/// 32-element block of a quantized type.
pub fn weight_unit(dtype: DType) -> usize {
    match dtype {
        DType::F32 | DType::U32 => 4,
        DType::F16 | DType::BF16 => 8,
        _ => 32,
    }
}

/// Units per row of `cols` elements (float rows are zero-padded to whole units).
pub fn weight_units_per_row(dtype: DType, cols: usize) -> usize {
    cols.div_ceil(weight_unit(dtype))
}

/// Bytes of the scale region per unit (quantized types).
fn scale_bytes(dtype: DType) -> usize {
    match dtype {
        DType::Q8_0 | DType::Q4_0 => 2,
        DType::Q4_1 => 4,
        DType::Q5_0 | DType::Q5_1 => 8,
        _ => unit_pack::scale_bytes(dtype),
    }
}

/// Bytes of the value region per unit.
fn value_bytes(dtype: DType) -> usize {
    match dtype {
        DType::Q8_0 => 32,
        _ => 16,
    }
}

/// Re-lays `rows` rows of `cols` elements (in `dtype`'s GGUF / plain byte layout) for the
/// GPU: every unit's values in 16-byte-aligned slots (float rows zero-padded to whole
/// units; quantized blocks' quants: 16 bytes for Q4_0 / Q4_1, 32 for Q8_0), then, for the
/// quantized types, a region of per-block scales (f16 `d` for Q8_0 / Q4_0, f16 pairs
/// `(d, m)` for Q4_1; for Q5_0 / Q5_1 8 bytes per block: the f16 pair `(d, m)` (Q5_0: `d`
/// and 0, its kernels use `m = -16 d`) then the block's `qh` word of high bits, so a
/// unit's scales and high bits are one aligned 8-byte read and its low nibbles are laid out
/// as Q4_1's; the K- and I-quants' 32-element sub-blocks as `unit_pack` describes) starting
/// at a 16-byte boundary. Returns the bytes and the scale
/// region's offset in 16-byte units. Kernels then load a whole unit with one aligned
/// 16-byte read instead of byte-level gathers.
///
/// Rows go in groups of `group` (the device's `Tuning::weight_group`; the last group
/// zero-padded), and within a group the units are interleaved: unit `b` of row `r` is unit
/// number `(r / group) * group * nb + b * group + r % group` of the value region and of the
/// scale region (`nb` units per row). With `group` 1 that is plain row-major order.
pub fn pack_weights(
    dtype: DType,
    rows: usize,
    cols: usize,
    group: usize,
    bytes: &[u8],
) -> (Vec<u8>, usize) {
    let nb = weight_units_per_row(dtype, cols);
    let units = rows.div_ceil(group) * group * nb;
    let vb = value_bytes(dtype);
    let sb = scale_bytes(dtype);
    let mut out = vec![0u8; units * vb];
    let mut scales = vec![0u8; units * sb];
    let row_bytes = dtype.bytes_for(cols).expect("whole blocks");
    for r in 0..rows {
        let row = &bytes[r * row_bytes..(r + 1) * row_bytes];
        for b in 0..nb {
            let u = (r / group) * group * nb + b * group + r % group;
            let dst = &mut out[u * vb..(u + 1) * vb];
            let scale = &mut scales[u * sb..(u + 1) * sb];
            match dtype {
                DType::F32 | DType::U32 | DType::F16 | DType::BF16 => {
                    let esz = dtype.block_bytes();
                    let start = b * 16;
                    let end = (start + 16).min(cols * esz);
                    dst[..end - start].copy_from_slice(&row[start..end]);
                }
                DType::Q8_0 => {
                    let blk = &row[b * 34..(b + 1) * 34];
                    scale.copy_from_slice(&blk[..2]);
                    dst.copy_from_slice(&blk[2..]);
                }
                DType::Q4_0 => {
                    let blk = &row[b * 18..(b + 1) * 18];
                    scale.copy_from_slice(&blk[..2]);
                    dst.copy_from_slice(&blk[2..]);
                }
                DType::Q4_1 => {
                    let blk = &row[b * 20..(b + 1) * 20];
                    scale.copy_from_slice(&blk[..4]);
                    dst.copy_from_slice(&blk[4..]);
                }
                DType::Q5_0 => {
                    let blk = &row[b * 22..(b + 1) * 22];
                    scale[..2].copy_from_slice(&blk[..2]);
                    scale[4..].copy_from_slice(&blk[2..6]);
                    dst.copy_from_slice(&blk[6..]);
                }
                DType::Q5_1 => {
                    let blk = &row[b * 24..(b + 1) * 24];
                    scale.copy_from_slice(&blk[..8]);
                    dst.copy_from_slice(&blk[8..]);
                }
                _ => {
                    let per = dtype.block_elems() / 32;
                    let bb = dtype.block_bytes();
                    let blk = &row[b / per * bb..(b / per + 1) * bb];
                    unit_pack::pack_unit(dtype, blk, b % per, dst, scale);
                }
            }
        }
    }
    let scale_offset = out.len() / 16;
    out.extend_from_slice(&scales);
    out.resize(out.len().div_ceil(16).max(1) * 16, 0);
    (out, scale_offset)
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

fn pad4(n: u64) -> u64 {
    n.div_ceil(4).max(1) * 4
}

/// Buffer sizes are whole 16-byte units, so any buffer can be bound as `array<vec4<..>>`.
fn pad16(n: u64) -> u64 {
    n.div_ceil(16).max(1) * 16
}

impl Tensor {
    /// Elements in the last dimension.
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Product of all dimensions but the last.
    pub fn rows(&self) -> usize {
        let n = self.shape.len();
        if n == 0 {
            1
        } else {
            self.shape[..n - 1].iter().product()
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of one row in this dtype.
    pub fn row_bytes(&self) -> usize {
        self.dtype
            .bytes_for(self.cols())
            .expect("row length checked at creation")
    }

    /// The single buffer of a one-part tensor (activations are always one part).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.parts[0].buffer
    }

    fn check_layout(name: &str, shape: &[usize], dtype: DType) -> Result<usize> {
        let cols = shape.last().copied().unwrap_or(1);
        dtype.bytes_for(cols).ok_or_else(|| TensorError::Shape {
            name: name.to_string(),
            reason: format!(
                "{dtype} needs rows that are a multiple of {} elements, got {cols}",
                dtype.block_elems()
            ),
        })
    }

    /// Uploads `bytes` (row-major, in `dtype`'s layout), splitting by rows when the tensor
    /// exceeds the largest binding.
    pub fn upload(
        dev: &Device,
        name: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
    ) -> Result<Tensor> {
        Self::upload_with_max_part(dev, name, shape, dtype, bytes, dev.max_binding())
    }

    /// [`Tensor::upload`] with parts of at most `max_part_bytes` (tests use it to split
    /// small tensors).
    pub fn upload_with_max_part(
        dev: &Device,
        name: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
        max_part_bytes: u64,
    ) -> Result<Tensor> {
        Self::upload_impl(
            dev,
            name,
            shape,
            dtype,
            bytes,
            max_part_bytes,
            Layout::Plain,
        )
    }

    /// Uploads a weight matrix `(rows, cols)` given in `dtype`'s plain / GGUF byte layout
    /// into the GPU weight layout ([`pack_weights`]), split by rows when it exceeds the
    /// largest binding. The weight kernels (matvec, matmul, embedding) take only these.
    pub fn upload_weights(
        dev: &Device,
        name: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
    ) -> Result<Tensor> {
        Self::upload_weights_with_max_part(dev, name, shape, dtype, bytes, dev.max_binding())
    }

    /// [`Tensor::upload_weights`] with parts of at most `max_part_bytes`.
    pub fn upload_weights_with_max_part(
        dev: &Device,
        name: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
        max_part_bytes: u64,
    ) -> Result<Tensor> {
        if dtype == DType::U32 {
            return Err(TensorError::Shape {
                name: name.into(),
                reason: "u32 is not a weight dtype".into(),
            });
        }
        let t = Self::upload_impl(
            dev,
            name,
            shape,
            dtype,
            bytes,
            max_part_bytes,
            Layout::Weights,
        )?;
        WEIGHT_BYTES.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        WEIGHT_ELEMS.fetch_add(t.numel() as u64, Ordering::Relaxed);
        Ok(t)
    }

    fn upload_impl(
        dev: &Device,
        name: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
        max_part_bytes: u64,
        layout: Layout,
    ) -> Result<Tensor> {
        let row_bytes = Self::check_layout(name, shape, dtype)?;
        let rows: usize = shape[..shape.len().saturating_sub(1)].iter().product();
        if bytes.len() != rows * row_bytes {
            return Err(TensorError::Shape {
                name: name.into(),
                reason: format!(
                    "shape {shape:?} in {dtype} is {} bytes, got {}",
                    rows * row_bytes,
                    bytes.len()
                ),
            });
        }
        let max = max_part_bytes.min(dev.max_binding());
        let cols = shape.last().copied().unwrap_or(1);
        // Bytes one row takes in the buffer (plus 16 for the scale region's alignment).
        let stored_row = match layout {
            Layout::Plain => row_bytes,
            Layout::Weights => {
                weight_units_per_row(dtype, cols) * (value_bytes(dtype) + scale_bytes(dtype))
            }
        };
        let budget = if layout == Layout::Weights {
            max.saturating_sub(16)
        } else {
            max
        };
        let mut rows_per_part = ((budget / stored_row.max(1) as u64) as usize).max(1);
        if layout == Layout::Weights {
            // Parts start on whole row groups, so each part's groups are the tensor's. A
            // part holds at least one group, past `max_part_bytes` if need be (it only has
            // to fit the adapter's binding).
            let g = dev.tuning.weight_group as usize;
            rows_per_part = (rows_per_part / g * g).max(g);
            let group_bytes = (g * stored_row) as u64;
            if group_bytes + 16 > dev.max_binding() {
                return Err(TensorError::TooLarge {
                    name: name.into(),
                    needed: group_bytes + 16,
                    limit: dev.max_binding(),
                });
            }
        }
        if stored_row as u64 > budget {
            return Err(TensorError::TooLarge {
                name: name.into(),
                needed: row_bytes as u64,
                limit: max,
            });
        }
        let mut parts = Vec::new();
        let mut r = 0;
        while r < rows.max(1) {
            let n = rows_per_part.min(rows.max(1) - r);
            let chunk =
                &bytes[(r * row_bytes).min(bytes.len())..((r + n) * row_bytes).min(bytes.len())];
            let (packed, scale_offset) = match layout {
                Layout::Weights => {
                    pack_weights(dtype, n, cols, dev.tuning.weight_group as usize, chunk)
                }
                Layout::Plain => (Vec::new(), 0),
            };
            let chunk = if layout == Layout::Weights {
                &packed[..]
            } else {
                chunk
            };
            let buffer = if chunk.len().is_multiple_of(16) && !chunk.is_empty() {
                dev.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(name),
                        contents: chunk,
                        usage: USAGE,
                    })
            } else {
                let mut padded = chunk.to_vec();
                padded.resize(pad16(chunk.len() as u64) as usize, 0);
                dev.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(name),
                        contents: &padded,
                        usage: USAGE,
                    })
            };
            CREATED_BYTES.fetch_add(buffer.size(), Ordering::Relaxed);
            parts.push(Part {
                buffer,
                row_start: r,
                rows: n,
                scale_offset,
            });
            r += n;
        }
        Ok(Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            layout,
            parts,
        })
    }

    pub fn from_f32(dev: &Device, name: &str, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Self::upload(dev, name, shape, DType::F32, bytemuck::cast_slice(data))
    }

    /// A zero-filled single-buffer tensor (activations, caches); errors when it exceeds one
    /// binding.
    pub fn zeros(dev: &Device, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let row_bytes = Self::check_layout(name, shape, dtype)?;
        let rows: usize = shape[..shape.len().saturating_sub(1)].iter().product();
        let size = pad16((rows * row_bytes) as u64);
        if size > dev.max_binding() {
            return Err(TensorError::TooLarge {
                name: name.into(),
                needed: size,
                limit: dev.max_binding(),
            });
        }
        let buffer = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size,
            usage: USAGE,
            mapped_at_creation: false,
        });
        CREATED_BYTES.fetch_add(size, Ordering::Relaxed);
        Ok(Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            layout: Layout::Plain,
            parts: vec![Part {
                buffer,
                row_start: 0,
                rows,
                scale_offset: 0,
            }],
        })
    }

    /// Overwrites a one-part tensor's contents from the host.
    pub fn write(&self, dev: &Device, bytes: &[u8]) -> Result<()> {
        let size = self.buffer().size();
        if bytes.len() as u64 > size {
            return Err(TensorError::Shape {
                name: self.name.clone(),
                reason: format!("write of {} bytes into {} bytes", bytes.len(), size),
            });
        }
        dev.queue.write_buffer(self.buffer(), 0, bytes);
        Ok(())
    }

    /// Reads all bytes back (every part, concatenated, without padding). Plain layout only.
    pub fn read_bytes(&self, dev: &Device) -> Result<Vec<u8>> {
        if self.layout != Layout::Plain {
            return Err(TensorError::Shape {
                name: self.name.clone(),
                reason: "reading back a tensor in the weight layout".into(),
            });
        }
        let mut out = Vec::new();
        for p in &self.parts {
            let len = (p.rows * self.row_bytes()) as u64;
            out.extend_from_slice(&read_buffer(dev, &p.buffer, 0, len)?);
        }
        Ok(out)
    }

    /// Reads an f32 tensor back.
    pub fn read_f32(&self, dev: &Device) -> Result<Vec<f32>> {
        if self.dtype != DType::F32 {
            return Err(TensorError::Shape {
                name: self.name.clone(),
                reason: format!("read_f32 on a {} tensor", self.dtype),
            });
        }
        Ok(bytemuck::cast_slice(&self.read_bytes(dev)?).to_vec())
    }
}

/// Copies `len` bytes at `offset` of `buffer` to the host (waits for the GPU).
/// The staging buffer comes from the device's [`BufferPool`] and goes back to it.
pub fn read_buffer(dev: &Device, buffer: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
    let padded = pad4(len);
    let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
    let staging = dev.pool.acquire(dev, padded, usage);
    let mut enc = dev.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
    dev.queue.submit([enc.finish()]);
    let out = map_read(dev, &staging, padded).map(|mut v| {
        v.truncate(len as usize);
        v
    });
    dev.pool.release(staging);
    out
}

/// [`map_read`] of a buffer last written by submission `after`: waits for that submission
/// only, not for the work submitted since (the pipelined greedy steps).
pub fn map_read_after(
    dev: &Device,
    staging: &wgpu::Buffer,
    len: u64,
    after: wgpu::SubmissionIndex,
) -> Result<Vec<u8>> {
    map_copy(dev, staging, len, || dev.wait_for(after))
}

/// Maps a MAP_READ buffer, copies `len` bytes out and unmaps it.
pub fn map_read(dev: &Device, staging: &wgpu::Buffer, len: u64) -> Result<Vec<u8>> {
    map_copy(dev, staging, len, || dev.wait())
}

/// Maps `staging`, runs `wait` (a poll that finishes the work writing it), copies `len`
/// bytes out and unmaps it.
fn map_copy(
    dev: &Device,
    staging: &wgpu::Buffer,
    len: u64,
    wait: impl FnOnce() -> Result<()>,
) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, ..len, move |r| {
        let _ = tx.send(r);
    });
    wait()?;
    let mapped = match rx.try_recv() {
        Ok(r) => r,
        // The callback may need one more poll after the submission is done.
        Err(_) => {
            dev.wait()?;
            rx.recv().map_err(|e| TensorError::Map(e.to_string()))?
        }
    };
    mapped.map_err(|e| TensorError::Map(e.to_string()))?;
    let data = staging
        .get_mapped_range(..len)
        .map_err(|e| TensorError::Map(e.to_string()))?
        .to_vec();
    staging.unmap();
    Ok(data)
}

/// Reuses buffers by (size, usage), so repeated work allocates nothing after warm-up.
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<HashMap<(u64, u32), Vec<wgpu::Buffer>>>,
}

impl BufferPool {
    pub fn acquire(&self, dev: &Device, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let key = (pad4(size), usage.bits());
        if let Some(b) = self
            .free
            .lock()
            .expect("pool poisoned")
            .get_mut(&key)
            .and_then(Vec::pop)
        {
            return b;
        }
        dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pooled"),
            size: key.0,
            usage,
            mapped_at_creation: false,
        })
    }

    /// Buffers waiting to be reused.
    pub fn idle(&self) -> usize {
        self.free
            .lock()
            .expect("pool poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }

    pub fn release(&self, buffer: wgpu::Buffer) {
        let key = (buffer.size(), buffer.usage().bits());
        self.free
            .lock()
            .expect("pool poisoned")
            .entry(key)
            .or_default()
            .push(buffer);
    }
}
