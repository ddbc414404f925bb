//! Adapter enumeration and selection, and the `Device` every other layer runs on.
//!
//! Selection order: an explicit backend (`--backend`, else env `INFER_BACKEND`, else wgpu's
//! own `WGPU_BACKEND`), an adapter-name substring (`--adapter`, else env `INFER_ADAPTER`),
//! then the best device type: discrete > integrated > virtual > CPU > other.
//! The device is opened with the adapter's real limits and every optional feature we can use.

use std::sync::{Arc, Mutex};

use crate::error::{Result, TensorError};
use crate::tuning::Tuning;

/// The optional features kernels may pick variants by.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caps {
    pub shader_f16: bool,
    pub subgroup: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub timestamp_query: bool,
    pub pipeline_cache: bool,
}

/// How to choose an adapter.
#[derive(Clone, Debug, Default)]
pub struct DeviceOptions {
    /// `vulkan`, `metal`, `dx12` or `gl`.
    pub backend: Option<String>,
    /// A case-insensitive substring of the adapter's name.
    pub adapter: Option<String>,
}

impl DeviceOptions {
    /// Fills unset fields from `INFER_BACKEND` / `INFER_ADAPTER`.
    pub fn with_env(mut self) -> Self {
        if self.backend.is_none() {
            self.backend = std::env::var("INFER_BACKEND")
                .ok()
                .filter(|s| !s.is_empty());
        }
        if self.adapter.is_none() {
            self.adapter = std::env::var("INFER_ADAPTER")
                .ok()
                .filter(|s| !s.is_empty());
        }
        self
    }
}

/// One adapter as `infer devices` shows it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

/// Parses a backend name.
pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        other => Err(TensorError::UnknownBackend(other.to_string())),
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn backends_for(opts: &DeviceOptions) -> Result<wgpu::Backends> {
    match &opts.backend {
        Some(b) => parse_backend(b),
        None => Ok(wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all())),
    }
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

/// Every adapter on the chosen backends (all backends when none is named).
pub fn enumerate(opts: &DeviceOptions) -> Result<Vec<AdapterSummary>> {
    let inst = instance(backends_for(opts)?);
    let adapters = pollster::block_on(inst.enumerate_adapters(backends_for(opts)?));
    Ok(adapters
        .iter()
        .map(|a| AdapterSummary {
            info: a.get_info(),
            limits: a.limits(),
            features: a.features(),
        })
        .collect())
}

/// Features we request when the adapter offers them.
pub fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::PIPELINE_CACHE
}

/// A wgpu device and queue with what was granted recorded.
pub struct Device {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub caps: Caps,
    /// Reusable buffers (readback staging), so repeated reads allocate nothing new.
    pub pool: crate::tensor::BufferPool,
    /// The code-path choices for this adapter ([`crate::tuning`]), from its type, its
    /// capabilities and the `INFER_*` environment. `tuning.weight_group` is the weight
    /// layout's rows per group ([`crate::tensor::pack_weights`]) for every weight uploaded
    /// to this device; tests may change it before uploading any.
    pub tuning: Tuning,
    uncaptured: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish()
    }
}

impl Device {
    /// Chooses an adapter as the module documentation says and opens a device on it.
    pub fn new(opts: &DeviceOptions) -> Result<Device> {
        let backends = backends_for(opts)?;
        let inst = instance(backends);
        let mut adapters = pollster::block_on(inst.enumerate_adapters(backends));
        if let Some(name) = &opts.adapter {
            let needle = name.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&needle));
        }
        adapters.sort_by_key(|a| {
            let i = a.get_info();
            (type_rank(i.device_type), backend_rank(i.backend))
        });
        let Some(adapter) = adapters.into_iter().next() else {
            let mut what = String::new();
            if let Some(b) = &opts.backend {
                what += &format!(" on backend {b}");
            }
            if let Some(a) = &opts.adapter {
                what += &format!(" matching `{a}`");
            }
            return Err(TensorError::NoAdapter(what));
        };
        Self::open(&adapter)
    }

    /// Opens a device on `adapter` with its real limits and the optional features it offers.
    pub fn open(adapter: &wgpu::Adapter) -> Result<Device> {
        let info = adapter.get_info();
        let features = adapter.features() & wanted_features();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("infer"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| TensorError::RequestDevice {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        let uncaptured: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock()
                .expect("error sink poisoned")
                .push(e.to_string());
        }));
        let caps = Caps {
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroup: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            pipeline_cache: features.contains(wgpu::Features::PIPELINE_CACHE),
        };
        let tuning = Tuning::from_env(info.device_type, &caps)?;
        Ok(Device {
            device,
            queue,
            info,
            limits,
            features,
            caps,
            pool: Default::default(),
            tuning,
            uncaptured,
        })
    }

    /// The largest storage-buffer binding the device accepts.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Runs `f` inside validation and out-of-memory error scopes; a captured wgpu error, or
    /// one reported to the uncaptured handler meanwhile, becomes `Err`.
    pub fn scoped<R>(&self, context: &str, f: impl FnOnce() -> R) -> Result<R> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = v.or(o) {
            return Err(TensorError::Gpu {
                context: context.to_string(),
                message: e.to_string(),
            });
        }
        self.check(context)?;
        Ok(out)
    }

    /// Returns any error the uncaptured-error handler has seen since the last check.
    pub fn check(&self, context: &str) -> Result<()> {
        let mut errs = self.uncaptured.lock().expect("error sink poisoned");
        if errs.is_empty() {
            return Ok(());
        }
        let message = errs.join("; ");
        errs.clear();
        Err(TensorError::Gpu {
            context: context.to_string(),
            message,
        })
    }

    /// Blocks until submission `index` (and everything submitted before it) is done.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| TensorError::Gpu {
                context: "poll".into(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| TensorError::Gpu {
                context: "poll".into(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// A one-line description: name, backend, type, driver.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, {} {})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info
        )
    }
}

/// Opens the default device for tests and benchmarks. `None` (after printing a loud SKIP
/// line) when there is no adapter; under `CI=true` a missing adapter panics instead, so a
/// CI run can never pass by skipping.
pub fn test_device() -> Option<Device> {
    match Device::new(&DeviceOptions::default().with_env()) {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and no usable GPU adapter: {e}");
            }
            eprintln!("SKIP: no GPU adapter ({e}); GPU tests did NOT run");
            None
        }
    }
}
