//! [`Kernels`]: the pipelines of one device, built on first use and cached (in memory by
//! [`PipelineKey`], on disk by wgpu's pipeline cache), and [`Dispatch`], one recorded launch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use infer_tensor::{DType, Device, MatvecLayout, PipelineCache, Tuning};
use wgpu::util::DeviceExt;

use crate::{Kernel, KernelError, PipelineKey, Result, Variant};

/// Default of [`Kernels::matvec_tokens`].
const MATVEC_TOKENS: u32 = 4;

/// A recorded kernel launch: replay it with [`Dispatch::record`].
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub kernel: Kernel,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid[0], self.grid[1], self.grid[2]);
    }
}

/// The kernel set of one device: pipelines built on first use and cached, in memory and,
/// where the adapter supports PIPELINE_CACHE, on disk (so a second start compiles nothing).
pub struct Kernels {
    pub dev: Arc<Device>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    disk_cache: Option<DiskCache>,
    tuning: Tuning,
    /// matvec runs as matvec_coalesced (chosen once, at creation).
    pub(crate) coalesced: bool,
    /// matvec and matvec_glu share x over subgroups ([`Variant::Matvec`]) for the dtypes
    /// it applies to.
    x_broadcast: bool,
    /// Bound as the split-output bindings y1 and y2 of a launch whose output is not split
    /// (never written; [`crate::Out`]).
    pub(crate) spare: wgpu::Buffer,
}

/// wgpu's pipeline cache and the file it is kept in.
struct DiskCache {
    cache: wgpu::PipelineCache,
    path: std::path::PathBuf,
    dirty: std::sync::atomic::AtomicBool,
}

impl DiskCache {
    fn open(dev: &Device, dir: Option<std::path::PathBuf>) -> Option<DiskCache> {
        if !dev.caps.pipeline_cache {
            return None;
        }
        let key = wgpu::util::pipeline_cache_key(&dev.info)?;
        let path = dir?.join(key);
        let data = std::fs::read(&path).ok();
        // SAFETY: the data was written by `get_data` of a cache for this adapter (the key
        // names vendor and device); wgpu and the driver validate it and, with `fallback`,
        // start empty when it does not match.
        let cache = unsafe {
            dev.device
                .create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("infer pipeline cache"),
                    data: data.as_deref(),
                    fallback: true,
                })
        };
        Some(DiskCache {
            cache,
            path,
            dirty: false.into(),
        })
    }

    /// Writes the cache if pipelines were added since it was read (atomically: temp file
    /// then rename). Failing to write a cache is not an error worth failing a run for.
    fn save(&self) {
        if !self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Some(data) = self.cache.get_data() else {
            return;
        };
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &data).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}

impl Drop for Kernels {
    fn drop(&mut self) {
        if let Some(c) = &self.disk_cache {
            c.save();
        }
    }
}

/// Compiles one of our kernels with wgpu's runtime checks, except the loop bound naga adds
/// to every loop (a counter decremented and tested each iteration, guarding drivers against
/// infinite loops). Every loop in `shaders/` ends by construction: counted `for` loops over
/// bounds from the parameters or constants, and topk's insertion loop, whose index falls to
/// 0. The guard kept llvmpipe from unrolling the small constant loops (rows, vec4s of a
/// unit), so their arrays lived in memory (bench/notes/kernels.md). Bounds checks (reads past a binding) and the
/// integer-division guards stay.
fn shader_module(device: &wgpu::Device, label: &str, source: String) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    checks.force_loop_bounding = false;
    // SAFETY: the one check turned off is loop bounding, and every loop of our kernels
    // terminates (see above); all other checks are on.
    unsafe { device.create_shader_module_trusted(desc, checks) }
}

/// A binding of a dispatch: a whole buffer.
pub(crate) type Binding<'a> = &'a wgpu::Buffer;

impl Kernels {
    /// The kernels of `dev` with the device's tuning ([`Device::tuning`]).
    pub fn new(dev: Arc<Device>) -> Kernels {
        let tuning = dev.tuning.clone();
        Self::build(dev, tuning)
    }

    /// The kernels of `dev` choosing code paths by `tuning` instead of the device's (tests
    /// run the GPU choices on any adapter this way). An error where `tuning` asks for what
    /// the adapter cannot run, or a weight layout other than the one the device's weights
    /// were packed with.
    pub fn with_tuning(dev: Arc<Device>, tuning: Tuning) -> Result<Kernels> {
        if tuning.weight_group != dev.tuning.weight_group {
            return Err(KernelError::Shape {
                kernel: Kernel::Matvec,
                reason: format!(
                    "tuning.weight_group {} differs from the device's {} (weights are packed at upload)",
                    tuning.weight_group, dev.tuning.weight_group
                ),
            });
        }
        let mut k = Self::build(dev, tuning.clone());
        k.set_matvec_x_broadcast(tuning.x_broadcast)?;
        Ok(k)
    }

    /// [`Kernels::new`] keeping the pipeline cache in `dir` (`None`: no disk cache).
    pub fn with_cache_dir(dev: Arc<Device>, dir: Option<std::path::PathBuf>) -> Kernels {
        let mut tuning = dev.tuning.clone();
        tuning.pipeline_cache = match dir {
            Some(d) => PipelineCache::Dir(d),
            None => PipelineCache::Off,
        };
        Self::build(dev, tuning)
    }

    fn build(dev: Arc<Device>, tuning: Tuning) -> Kernels {
        let dir = match &tuning.pipeline_cache {
            PipelineCache::Dir(d) => Some(d.clone()),
            PipelineCache::Off => None,
        };
        let disk_cache = DiskCache::open(&dev, dir);
        let spare = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("split output spare"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let x_broadcast = tuning.x_broadcast && infer_tensor::tuning::subgroups_of_8(&dev.caps);
        Kernels {
            coalesced: tuning.matvec == MatvecLayout::Coalesced,
            x_broadcast,
            tuning,
            dev,
            pipelines: Mutex::default(),
            disk_cache,
            spare,
        }
    }

    /// The code-path choices these kernels make.
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Whether matvec and matvec_glu can share x over subgroups ([`Variant::Matvec`]):
    /// the adapter has subgroups of at least 8 invocations.
    pub fn matvec_x_broadcast_supported(&self) -> bool {
        let c = &self.dev.caps;
        c.subgroup && c.subgroup_min_size >= 8
    }

    /// Whether matvec and matvec_glu share x over subgroups for the dtypes it applies to
    /// ([`crate::x_broadcast_dtype`]): [`Tuning::x_broadcast`] where supported.
    pub fn matvec_x_broadcast(&self) -> bool {
        self.x_broadcast
    }

    /// Turns [`Kernels::matvec_x_broadcast`] on or off (pipelines already built are
    /// dropped). The two give the same bits; tests compare them. An error to turn on where
    /// not supported.
    pub fn set_matvec_x_broadcast(&mut self, on: bool) -> Result<()> {
        if on && !self.matvec_x_broadcast_supported() {
            return Err(KernelError::Shape {
                kernel: Kernel::Matvec,
                reason: format!(
                    "x broadcast needs subgroups of >= 8 invocations (adapter: {}..={}, feature {})",
                    self.dev.caps.subgroup_min_size,
                    self.dev.caps.subgroup_max_size,
                    self.dev.caps.subgroup
                ),
            });
        }
        self.x_broadcast = on;
        self.tuning.x_broadcast = on;
        self.pipelines
            .lock()
            .expect("pipeline cache poisoned")
            .clear();
        Ok(())
    }

    /// Writes the on-disk pipeline cache now (also done when the kernels are dropped).
    pub fn save_pipeline_cache(&self) {
        if let Some(c) = &self.disk_cache {
            c.save();
        }
    }

    /// The file the pipeline cache is kept in, when there is one.
    pub fn pipeline_cache_path(&self) -> Option<&std::path::Path> {
        self.disk_cache.as_ref().map(|c| c.path.as_path())
    }

    /// Workgroup size of the row-walking matvec ([`Tuning::matvec_wg`]).
    pub fn matvec_wg(&self) -> u32 {
        self.tuning.matvec_wg
    }

    /// Whether matvec runs as `matvec_coalesced` ([`Tuning::matvec`]).
    pub fn matvec_coalesced_default(&self) -> bool {
        self.tuning.matvec == MatvecLayout::Coalesced
    }

    /// Tokens per full tile of batched matvec (for the dtypes and token counts where tiles
    /// are used): each weight unit is decoded once per tile (see [`Variant::Matvec`]).
    pub fn matvec_tokens(&self) -> u32 {
        MATVEC_TOKENS
    }

    /// The pipeline of `key`, built (and its variant checked) on first use.
    pub(crate) fn pipeline(&self, key: PipelineKey) -> Result<wgpu::ComputePipeline> {
        let mut cache = self.pipelines.lock().expect("pipeline cache poisoned");
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let kernel = key.kernel;
        let source = kernel.source_for(key.dtype, key.variant)?;
        let label = key.label();
        let mut constants = Vec::new();
        if kernel.takes_wg() {
            constants.push(("WG", self.matvec_wg() as f64));
        }
        if kernel.reads_weights() {
            constants.push(("W_GROUP", self.tuning.weight_group as f64));
        }
        let device = &self.dev.device;
        let pipeline = self.dev.scoped(&format!("building pipeline {label}"), || {
            let module = shader_module(device, &label, source);
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    ..Default::default()
                },
                cache: self.disk_cache.as_ref().map(|c| &c.cache),
            })
        })?;
        if let Some(c) = &self.disk_cache {
            c.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// The variant of matvec (or matvec_glu) for `tokens` tokens per invocation of `dtype`
    /// weights: x shared over subgroups where [`Kernels::matvec_x_broadcast`] and the dtype
    /// allow it.
    pub(crate) fn matvec_variant(&self, dtype: DType, tokens: u32) -> Variant {
        Variant::Matvec {
            tokens,
            x_broadcast: self.x_broadcast && crate::x_broadcast_dtype(dtype),
        }
    }

    /// Builds a dispatch of `kernel` as written (no variant constants): a uniform buffer for
    /// `params`, then `buffers` at bindings 1.. .
    pub(crate) fn dispatch<P: crate::params::Params>(
        &self,
        kernel: Kernel,
        dtype: Option<DType>,
        params: &P,
        buffers: &[Binding<'_>],
        grid: [u32; 3],
    ) -> Result<Dispatch> {
        let key = PipelineKey {
            kernel,
            dtype,
            variant: Variant::Plain,
        };
        self.dispatch_key(key, params, buffers, grid)
    }

    /// [`Kernels::dispatch`] of the pipeline `key`.
    pub(crate) fn dispatch_key<P: crate::params::Params>(
        &self,
        key: PipelineKey,
        params: &P,
        buffers: &[Binding<'_>],
        grid: [u32; 3],
    ) -> Result<Dispatch> {
        let pipeline = self.pipeline(key)?;
        let name = key.kernel.name();
        let device = &self.dev.device;
        let bind_group = self.dev.scoped(&format!("binding {name}"), || {
            let ubuf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(name),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: ubuf.as_entire_binding(),
            }];
            for (i, b) in buffers.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.as_entire_binding(),
                });
            }
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(name),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        })?;
        Ok(Dispatch {
            kernel: key.kernel,
            pipeline,
            bind_group,
            grid,
        })
    }

    /// Records `dispatches` in one compute pass of one command buffer, submits it and waits.
    /// wgpu errors come back as `Err`.
    pub fn run(&self, dispatches: &[Dispatch]) -> Result<()> {
        let dev = &self.dev;
        dev.scoped("run", || {
            let mut enc = dev.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in dispatches {
                    d.record(&mut pass);
                }
            }
            dev.queue.submit([enc.finish()]);
        })?;
        dev.wait()?;
        dev.check("run")?;
        Ok(())
    }
}

impl Kernels {
    /// Runs `dispatches` one compute pass each with GPU timestamps around every pass and
    /// returns the total nanoseconds per kernel, largest first. Needs the adapter's
    /// TIMESTAMP_QUERY feature; a development tool ([`Tuning::profile`]), not a hot path.
    pub fn profile(&self, dispatches: &[Dispatch]) -> Result<Vec<(Kernel, f64, usize)>> {
        let dev = &self.dev;
        if !dev.caps.timestamp_query || dispatches.is_empty() {
            return Ok(vec![]);
        }
        let n = dispatches.len() as u32;
        let (qs, resolve, staging) = dev.scoped("profile", || {
            let qs = dev.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * n,
            });
            let size = 16 * n as u64;
            let resolve = dev.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile staging"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = dev.device.create_command_encoder(&Default::default());
            for (i, d) in dispatches.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(d.kernel.name()),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &qs,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                d.record(&mut pass);
            }
            enc.resolve_query_set(&qs, 0..2 * n, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, size);
            dev.queue.submit([enc.finish()]);
            (qs, resolve, staging)
        })?;
        let bytes = infer_tensor::tensor::map_read(dev, &staging, 16 * n as u64)?;
        drop((qs, resolve));
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period = dev.queue.get_timestamp_period() as f64;
        let mut totals: Vec<(Kernel, f64, usize)> = Vec::new();
        for (i, d) in dispatches.iter().enumerate() {
            let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period;
            match totals.iter_mut().find(|t| t.0 == d.kernel) {
                Some(t) => {
                    t.1 += ns;
                    t.2 += 1;
                }
                None => totals.push((d.kernel, ns, 1)),
            }
        }
        totals.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(totals)
    }
}
