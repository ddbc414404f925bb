//! Selection over logits: `argmax`, `topk` (the k largest, sorted) and `softcap` (the
//! logit soft-capping applied before them).

use infer_tensor::{DType, Tensor, wgpu};

use crate::params::params;
use crate::{Dispatch, Kernel, KernelError, Kernels, Result, grid1, need_f32, need_len, u32s};

params! {
    pub(crate) struct ArgmaxParams {
        n: u32,
        x_off: u32,
        out_idx: u32,
        _pad0: u32,
    }
}

params! {
    pub(crate) struct TopkParams {
        n: u32,
        off: u32,
        k: u32,
        threads: u32,
        stage: u32,
        /// Items per invocation in stage 0.
        m: u32,
        /// Items per invocation (a prefix of the m) the threshold is taken from.
        sample: u32,
        _pad0: u32,
    }
}

params! {
    pub(crate) struct SoftcapParams {
        n: u32,
        cap: f32,
        _pad0: u32,
        _pad1: u32,
    }
}

impl Kernels {
    /// `out[out_idx] = argmax(x[x_off .. x_off + n])` (u32 `out`).
    pub fn argmax(
        &self,
        x: &Tensor,
        x_off: usize,
        n: usize,
        out: &Tensor,
        out_idx: usize,
    ) -> Result<Vec<Dispatch>> {
        need_f32(Kernel::Argmax, x, x_off + n)?;
        if out.dtype != DType::U32 {
            return Err(KernelError::DType {
                kernel: Kernel::Argmax,
                tensor: out.name.clone(),
                dtype: out.dtype,
            });
        }
        need_len(Kernel::Argmax, out, out_idx + 1)?;
        let params = ArgmaxParams {
            n: u32s(n),
            x_off: u32s(x_off),
            out_idx: u32s(out_idx),
            ..Default::default()
        };
        Ok(vec![self.dispatch(
            Kernel::Argmax,
            None,
            &params,
            &[x.buffer(), out.buffer()],
            [1, 1, 1],
        )?])
    }

    /// Largest k [`Kernels::topk`] takes.
    pub const TOPK_MAX: usize = 256;

    /// Fewest items one stage-0 invocation of `topk` scans on any adapter (what
    /// [`Kernels::topk_scratch_len`] is sized for).
    const TOPK_LEAST_ITEMS: usize = 16;

    /// Items one stage-0 invocation of `topk` scans: at least k (so the scratch stays
    /// within 2n + 128k words) and at least `least` ([`infer_tensor::Tuning::topk_items`]).
    fn topk_items(k: usize, least: usize) -> usize {
        k.max(least).max(Self::TOPK_LEAST_ITEMS)
    }

    /// Stage-0 invocations of `topk` over `n` items, a multiple of the workgroup size 64.
    fn topk_threads(n: usize, items: usize) -> usize {
        64 * n.div_ceil(64 * items).max(1)
    }

    /// u32 elements of the scratch tensor [`Kernels::topk`] needs for `n` items and `k`
    /// (on any adapter).
    pub fn topk_scratch_len(n: usize, k: usize) -> usize {
        let threads = Self::topk_threads(n, Self::topk_items(k, Self::TOPK_LEAST_ITEMS));
        2 * k * (threads + 72)
    }

    /// The `k` largest of `x[x_off .. x_off + n]`, best first (larger value in
    /// `f32::total_cmp` order, then lower index; NaN never chosen), as pairs
    /// `out[2r] = value bits`, `out[2r + 1] = index` (index `u32::MAX` and value `-f32::MAX`
    /// where fewer than `k` exist). Per-invocation sorted lists of the candidates into
    /// `scratch` (u32, [`Kernels::topk_scratch_len`]), then their merge: one dispatch when
    /// one workgroup covers `n` (vocabularies up to 65536 on CPU adapters), else two.
    pub fn topk(
        &self,
        x: &Tensor,
        x_off: usize,
        n: usize,
        k: usize,
        scratch: &Tensor,
        out: &Tensor,
    ) -> Result<Vec<Dispatch>> {
        need_f32(Kernel::Topk, x, x_off + n)?;
        if k == 0 || k > Self::TOPK_MAX || n == 0 {
            return Err(KernelError::Shape {
                kernel: Kernel::Topk,
                reason: format!(
                    "k = {k} over n = {n}: need 1 <= k <= {}, n >= 1",
                    Self::TOPK_MAX
                ),
            });
        }
        for t in [scratch, out] {
            if t.dtype != DType::U32 {
                return Err(KernelError::DType {
                    kernel: Kernel::Topk,
                    tensor: t.name.clone(),
                    dtype: t.dtype,
                });
            }
        }
        need_len(Kernel::Topk, scratch, Self::topk_scratch_len(n, k))?;
        need_len(Kernel::Topk, out, 2 * k)?;
        let items = Self::topk_items(k, self.tuning().topk_items);
        let threads = Self::topk_threads(n, items);
        let params = |stage| TopkParams {
            n: u32s(n),
            off: u32s(x_off),
            k: u32s(k),
            threads: u32s(threads),
            stage,
            m: u32s(items),
            // The threshold from a quarter of the items is loose but cheap for k <= 64;
            // k = 256 needs all of them (a loose threshold lets too many through).
            sample: u32s(if k <= 64 { items.div_ceil(4) } else { items }),
            ..Default::default()
        };
        let bind = [x.buffer(), scratch.buffer(), out.buffer(), x.buffer()];
        if threads == 64 {
            return Ok(vec![self.dispatch(
                Kernel::Topk,
                None,
                &params(2),
                &bind,
                [1, 1, 1],
            )?]);
        }
        Ok(vec![
            self.dispatch(
                Kernel::Topk,
                None,
                &params(0),
                &bind,
                [u32s(threads / 64), 1, 1],
            )?,
            self.dispatch(Kernel::Topk, None, &params(1), &bind, [1, 1, 1])?,
        ])
    }

    /// Runs `topk` (the dispatches of [`Kernels::topk`]) and reads its `k` pairs back in
    /// one submission, as (index, value) best first without the missing slots: what a
    /// step with [`Kernels::topk`] at its end reads back.
    pub fn topk_read(&self, topk: &[Dispatch], out: &Tensor, k: usize) -> Result<Vec<(u32, f32)>> {
        need_len(Kernel::Topk, out, 2 * k)?;
        let dev = &self.dev;
        let len = (8 * k) as u64;
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let staging = dev.pool.acquire(dev, len, usage);
        dev.scoped("topk_read", || {
            let mut enc = dev.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in topk {
                    d.record(&mut pass);
                }
            }
            enc.copy_buffer_to_buffer(out.buffer(), 0, &staging, 0, len);
            dev.queue.submit([enc.finish()]);
        })?;
        let bytes = infer_tensor::tensor::map_read(dev, &staging, len);
        dev.pool.release(staging);
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes?);
        Ok(words
            .chunks(2)
            .filter(|p| p[1] != u32::MAX)
            .map(|p| (p[1], f32::from_bits(p[0])))
            .collect())
    }

    /// In place: `x[i] = cap * tanh(x[i] / cap)` over `n` elements (`cap > 0`).
    pub fn softcap(&self, x: &Tensor, n: usize, cap: f32) -> Result<Vec<Dispatch>> {
        need_f32(Kernel::Softcap, x, n)?;
        if !(cap > 0.0 && cap.is_finite()) {
            return Err(KernelError::Shape {
                kernel: Kernel::Softcap,
                reason: format!("cap {cap} must be a positive number"),
            });
        }
        let params = SoftcapParams {
            n: u32s(n),
            cap,
            ..Default::default()
        };
        Ok(vec![self.dispatch(
            Kernel::Softcap,
            None,
            &params,
            &[x.buffer()],
            grid1(u32s(n.div_ceil(256))),
        )?])
    }
}
