//! GPU tensors: a shape, a dtype and one or more buffers.
//!
//! A tensor is row-major; its rows are all dimensions but the last. A tensor whose bytes
//! exceed the adapter's largest binding is split by whole rows into several buffers
//! (`parts`); kernels that take weights dispatch once per part.

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Result, TensorError};

/// One buffer of a tensor holding rows `row_start .. row_start + rows`.
#[derive(Clone, Debug)]
pub struct Part {
    pub buffer: wgpu::Buffer,
    pub row_start: usize,
    pub rows: usize,
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub parts: Vec<Part>,
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

fn pad4(n: u64) -> u64 {
    n.div_ceil(4).max(1) * 4
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
        let rows_per_part = ((max / row_bytes.max(1) as u64) as usize).max(1);
        if row_bytes as u64 > max {
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
            let buffer = if chunk.len().is_multiple_of(4) && !chunk.is_empty() {
                dev.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(name),
                        contents: chunk,
                        usage: USAGE,
                    })
            } else {
                let mut padded = chunk.to_vec();
                padded.resize(pad4(chunk.len() as u64) as usize, 0);
                dev.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(name),
                        contents: &padded,
                        usage: USAGE,
                    })
            };
            parts.push(Part {
                buffer,
                row_start: r,
                rows: n,
            });
            r += n;
        }
        Ok(Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
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
        let size = pad4((rows * row_bytes) as u64);
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
        Ok(Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            parts: vec![Part {
                buffer,
                row_start: 0,
                rows,
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

    /// Reads all bytes back (every part, concatenated, without padding).
    pub fn read_bytes(&self, dev: &Device) -> Result<Vec<u8>> {
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
pub fn read_buffer(dev: &Device, buffer: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
    let padded = pad4(len);
    let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: padded,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = dev.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
    dev.queue.submit([enc.finish()]);
    map_read(dev, &staging, padded).map(|mut v| {
        v.truncate(len as usize);
        v
    })
}

/// Maps a MAP_READ buffer, copies `len` bytes out and unmaps it.
pub fn map_read(dev: &Device, staging: &wgpu::Buffer, len: u64) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, ..len, move |r| {
        let _ = tx.send(r);
    });
    dev.wait()?;
    rx.recv()
        .map_err(|e| TensorError::Map(e.to_string()))?
        .map_err(|e| TensorError::Map(e.to_string()))?;
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
