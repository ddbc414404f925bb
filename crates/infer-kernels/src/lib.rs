//! One launcher per WGSL kernel in `shaders/`, usable on its own.
//!
//! A launcher checks shapes and dtypes and returns [`Dispatch`]es: a pipeline (built once per
//! kernel and weight dtype, then cached), a bind group and a grid. Building dispatches
//! allocates their parameter buffers once; recording them allocates nothing, so a forward
//! pass is built once and replayed every step. Dynamic per-step values (the position of the
//! first new token) live in a small `pos` buffer the caller overwrites.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use infer_tensor::{Device, DeviceOptions, DType, Tensor};
//! let dev = Arc::new(Device::new(&DeviceOptions::default())?);
//! let k = infer_kernels::Kernels::new(dev.clone());
//! let w = Tensor::upload_weights(&dev, "w", &[2, 3], DType::F32,
//!     bytemuck::cast_slice(&[1f32, 2., 3., 4., 5., 6.]))?;
//! let x = Tensor::from_f32(&dev, "x", &[3], &[1., 1., 1.])?;
//! let y = Tensor::zeros(&dev, "y", &[2], DType::F32)?;
//! k.run(&k.matvec(&w, &x, 0, &y, 0)?)?;
//! assert_eq!(y.read_f32(&dev)?, vec![6., 15.]);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use infer_tensor::{DType, Device, MatvecLayout, PipelineCache, Tensor, Tuning};
use wgpu::util::DeviceExt;

mod launchers;

pub use launchers::{
    AttentionKernel, AttentionParams, GeluMode, Glu, Norm, Out, PagedParams, RopeMode,
};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{kernel}: {reason}")]
    Shape {
        kernel: &'static str,
        reason: String,
    },
    #[error("{kernel}: unsupported dtype {dtype} for `{tensor}`")]
    DType {
        kernel: &'static str,
        tensor: String,
        dtype: DType,
    },
    #[error(transparent)]
    Tensor(#[from] infer_tensor::TensorError),
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// A shader file: its name (file stem) and source.
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
    /// Whether a `weights_<dtype>` snippet is prepended (the kernel reads weights).
    pub weights: bool,
    /// Snippets of `shaders/common/` the kernel shares with others (declarations and
    /// functions), prepended in order.
    pub common: &'static [&'static str],
}

macro_rules! shader {
    ($name:literal, $weights:expr) => {
        shader!($name, $weights, [])
    };
    ($name:literal, $weights:expr, [$($common:literal),*]) => {
        Shader {
            name: $name,
            source: include_str!(concat!("../shaders/", $name, ".wgsl")),
            weights: $weights,
            common: &[$(include_str!(concat!("../shaders/common/", $common, ".wgsl"))),*],
        }
    };
}

/// Every kernel in `shaders/`.
pub const SHADERS: &[Shader] = &[
    shader!("matvec", true, ["matvec_io", "split_out"]),
    shader!("matvec_glu", true, ["matvec_io", "glu"]),
    shader!(
        "matvec_coalesced",
        true,
        ["matvec_io", "coalesced", "split_out"]
    ),
    shader!(
        "matvec_glu_coalesced",
        true,
        ["matvec_io", "coalesced", "glu"]
    ),
    shader!("matmul", true, ["split_out"]),
    shader!("embedding", true),
    shader!("rms_norm", false),
    shader!("layer_norm", false),
    shader!("softmax", false),
    shader!("swiglu", false),
    shader!("gelu", false),
    shader!("add", false),
    shader!("mul", false),
    shader!("rope", false),
    shader!("kv_write", false),
    shader!("attention", false, ["attention_tiles"]),
    shader!("attention_lane", false),
    shader!(
        "attention_split",
        false,
        ["attention_split_params", "attention_tiles"]
    ),
    shader!("attention_split_merge", false, ["attention_split_params"]),
    shader!(
        "attention_split_heads",
        false,
        ["attention_split_params", "attention_heads"]
    ),
    shader!(
        "attention_split_sg",
        false,
        ["attention_split_params", "attention_sg"]
    ),
    shader!("argmax", false),
    shader!("softcap", false),
    shader!("topk", false),
    shader!("rope_rows", false),
    shader!("paged_kv_write", false),
    shader!("paged_attention", false, ["paged_attention_params"]),
    shader!(
        "paged_attention_sg",
        false,
        ["paged_attention_params", "attention_sg"]
    ),
    shader!(
        "paged_attention_heads",
        false,
        ["paged_attention_params", "attention_heads"]
    ),
    shader!("rope_kv", false, ["rope_kv"]),
    shader!("paged_rope_kv", false, ["rope_kv"]),
];

/// Default of [`Kernels::matvec_tokens`].
const MATVEC_TOKENS: u32 = 4;

/// Most rows [`Kernels::linear`] runs through the coalesced (GPU layout) matvec rather
/// than the tiled matmul: speculative verification steps (at most 16 rows) included.
pub const COALESCED_LINEAR_ROWS: usize = 16;

const NIBBLES: &str = include_str!("../shaders/common/nibbles.wgsl");
/// Prepended to every weight kernel: the weight layout's unit index (`w_index`, W_GROUP).
const WEIGHT_INDEX: &str = include_str!("../shaders/common/weight_index.wgsl");

/// The snippet giving weight access for `dtype`.
pub fn weights_snippet(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => include_str!("../shaders/common/weights_f32.wgsl"),
        DType::F16 => include_str!("../shaders/common/weights_f16.wgsl"),
        DType::BF16 => include_str!("../shaders/common/weights_bf16.wgsl"),
        DType::Q8_0 => include_str!("../shaders/common/weights_q8_0.wgsl"),
        DType::Q4_0 => include_str!("../shaders/common/weights_q4_0.wgsl"),
        DType::Q4_1 => include_str!("../shaders/common/weights_q4_1.wgsl"),
        DType::U32 => return None,
    })
}

/// The full WGSL of a kernel: its `common` snippets prepended, and before them, for weight
/// kernels, the dtype's snippet and `common/nibbles.wgsl` (the glu kernels, which read a
/// second weight `wu`, also get the snippet's functions renamed `*_up` and reading `wu`).
pub fn shader_source(shader: &Shader, dtype: Option<DType>) -> Option<String> {
    let common = shader.common.join("\n");
    match (shader.weights, dtype) {
        (false, None) => Some(format!("{common}\n{}", shader.source)),
        (true, Some(d)) => {
            let snippet = weights_snippet(d)?;
            let up = if shader.name.starts_with("matvec_glu") {
                second_weight(snippet)
            } else {
                String::new()
            };
            Some(format!(
                "{WEIGHT_INDEX}\n{snippet}\n{up}\n{NIBBLES}\n{common}\n{}",
                shader.source
            ))
        }
        _ => None,
    }
}

/// A weight snippet's functions for a second weight binding `wu`: every function renamed
/// with an `_up` suffix (and its calls), every read of `w[` made a read of `wu[`; the
/// constants and the `WRaw` struct are left to the first copy.
fn second_weight(snippet: &str) -> String {
    let mut out = String::new();
    let mut in_struct = false;
    for line in snippet.lines() {
        if line.starts_with("struct ") {
            in_struct = true;
        }
        if in_struct {
            in_struct = line != "}";
            continue;
        }
        if line.starts_with("const ") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let names: Vec<&str> = snippet
        .lines()
        .filter_map(|l| l.strip_prefix("fn ")?.split('(').next())
        .collect();
    let word_start = |s: &str, i: usize| {
        i == 0 || {
            let c = s.as_bytes()[i - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        }
    };
    let replace_words = |s: &str, from: &str, to: &str| {
        let mut r = String::with_capacity(s.len());
        let mut rest = 0;
        for (i, _) in s.match_indices(from) {
            if word_start(s, i) {
                r.push_str(&s[rest..i]);
                r.push_str(to);
                rest = i + from.len();
            }
        }
        r.push_str(&s[rest..]);
        r
    };
    for n in names {
        out = replace_words(&out, &format!("{n}("), &format!("{n}_up("));
    }
    replace_words(&out, "w[", "wu[")
}

/// A kernel source (matvec's, with or without its weight snippet) computing `tok` tokens per
/// invocation (1..=8): the `TOK` constant between its `// TOKENS begin` and `// TOKENS end`
/// lines is set to `tok` (1 gives the source as written). Other kernels with the block
/// give TOK their own meaning (attention_split_sg: a variant number, 1..=1024). `None` for
/// other counts or a source without the block.
pub fn with_tokens(source: &str, tok: u32) -> Option<String> {
    if !(1..=1024).contains(&tok) {
        return None;
    }
    swap_block(source, "TOKENS", &format!("const TOK: u32 = {tok}u;\n"))
}

/// `source` with the lines between its `// NAME begin` and `// NAME end` lines replaced by
/// `body` (`None` without the block): how launchers pick a kernel's variant.
fn swap_block(source: &str, name: &str, body: &str) -> Option<String> {
    let (begin, end) = (format!("// {name} begin\n"), format!("// {name} end\n"));
    let start = source.find(&begin)? + begin.len();
    let stop = start + source[start..].find(&end)?;
    Some(format!("{}{body}{}", &source[..start], &source[stop..]))
}

/// matvec's and matvec_glu's x loads for adapters with subgroups (common/unit_xs_sg.wgsl).
const X_UNIT_SG: &str = include_str!("../shaders/common/unit_xs_sg.wgsl");

/// A matvec or matvec_glu source (with its common snippets) whose `unit_xs` shares each
/// unit's x over a subgroup: its `// XUNIT begin` .. `// XUNIT end` block replaced by
/// common/unit_xs_sg.wgsl, where lane i < 8 loads the unit's vec4 i and the 8 are broadcast
/// (one load per invocation instead of WV; the same values). Only for dtypes of 8 vec4s
/// per unit ([`x_broadcast_dtype`]) and subgroups of >= 8. `None` for a source without
/// the block.
pub fn with_x_broadcast(source: &str) -> Option<String> {
    swap_block(source, "XUNIT", X_UNIT_SG)
}

/// Whether [`with_x_broadcast`] applies to weights of `dtype`: the block-quantized dtypes,
/// whose units hold 32 elements (8 vec4s of x).
pub fn x_broadcast_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::Q4_0 | DType::Q4_1 | DType::Q8_0)
}

/// A recorded kernel launch: replay it with [`Dispatch::record`].
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub kernel: &'static str,
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

/// A pipeline's kernel, weight dtype and matvec's tokens per invocation (1 for the others).
type PipelineKey = (&'static str, Option<DType>, u32);

/// The kernel set of one device: pipelines built on first use and cached, in memory and,
/// where the adapter supports PIPELINE_CACHE, on disk (so a second start compiles nothing).
pub struct Kernels {
    pub dev: Arc<Device>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    disk_cache: Option<DiskCache>,
    tuning: Tuning,
    /// matvec runs as matvec_coalesced (chosen once, at creation).
    pub(crate) coalesced: bool,
    /// matvec and matvec_glu share x over subgroups ([`with_x_broadcast`]) for the dtypes
    /// it applies to.
    x_broadcast: bool,
    /// Bound as the split-output bindings y1 and y2 of a launch whose output is not split
    /// (never written; launchers::Out).
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
/// unit), so their arrays lived in memory: without it the Q4_1 matvec runs ~1.2x faster on
/// lavapipe, prefill ~1.2x and decode ~1.1x. Bounds checks (reads past a binding) and the
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
                kernel: "matvec",
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

    /// Whether matvec and matvec_glu can share x over subgroups ([`with_x_broadcast`]):
    /// the adapter has subgroups of at least 8 invocations.
    pub fn matvec_x_broadcast_supported(&self) -> bool {
        let c = &self.dev.caps;
        c.subgroup && c.subgroup_min_size >= 8
    }

    /// Whether matvec and matvec_glu share x over subgroups for the dtypes it applies to
    /// ([`x_broadcast_dtype`]): where supported, unless `INFER_MATVEC_X=load`.
    pub fn matvec_x_broadcast(&self) -> bool {
        self.x_broadcast
    }

    /// Turns [`Kernels::matvec_x_broadcast`] on or off (pipelines already built are
    /// dropped). The two give the same bits; tests compare them. An error to turn on where
    /// not supported.
    pub fn set_matvec_x_broadcast(&mut self, on: bool) -> Result<()> {
        if on && !self.matvec_x_broadcast_supported() {
            return Err(KernelError::Shape {
                kernel: "matvec",
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
    /// are used): each weight unit is decoded once per tile (see [`with_tokens`]).
    pub fn matvec_tokens(&self) -> u32 {
        MATVEC_TOKENS
    }

    /// The pipeline of kernel `name` for weight dtype `dtype`; `tok` is matvec's tokens per
    /// invocation (see [`with_tokens`]) and 1 for the others.
    pub(crate) fn pipeline(
        &self,
        name: &'static str,
        dtype: Option<DType>,
        tok: u32,
    ) -> Result<wgpu::ComputePipeline> {
        let mut cache = self.pipelines.lock().expect("pipeline cache poisoned");
        if let Some(p) = cache.get(&(name, dtype, tok)) {
            return Ok(p.clone());
        }
        let shader = SHADERS
            .iter()
            .find(|s| s.name == name)
            .expect("launcher names a registered shader");
        let source = shader_source(shader, dtype).ok_or_else(|| KernelError::Shape {
            kernel: shader.name,
            reason: format!("no variant for dtype {dtype:?}"),
        })?;
        let mut label = match dtype {
            Some(d) => format!("{name}_{d}"),
            None => name.to_string(),
        };
        let mut constants = Vec::new();
        if source.contains("override WG") {
            constants.push(("WG", self.matvec_wg() as f64));
        }
        if source.contains("override W_GROUP") {
            constants.push(("W_GROUP", self.tuning.weight_group as f64));
        }
        let source = if self.x_broadcast
            && (name == "matvec" || name == "matvec_glu")
            && dtype.is_some_and(x_broadcast_dtype)
        {
            label = format!("{label}_xsg");
            with_x_broadcast(&source).expect("matvec and matvec_glu have an XUNIT block")
        } else {
            source
        };
        let source = if tok == 1 {
            source
        } else {
            label = format!("{label}_tok{tok}");
            with_tokens(&source, tok).ok_or_else(|| KernelError::Shape {
                kernel: shader.name,
                reason: format!("no variant for {tok} tokens per invocation"),
            })?
        };
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
        cache.insert((name, dtype, tok), pipeline.clone());
        Ok(pipeline)
    }

    /// Builds a dispatch: a uniform buffer for `params`, then `buffers` at bindings 1.. .
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &self,
        name: &'static str,
        dtype: Option<DType>,
        params: &P,
        buffers: &[Binding<'_>],
        grid: [u32; 3],
    ) -> Result<Dispatch> {
        self.dispatch_tok(name, dtype, 1, params, buffers, grid)
    }

    /// [`Kernels::dispatch`] with the pipeline for `tok` tokens per invocation.
    pub(crate) fn dispatch_tok<P: bytemuck::Pod>(
        &self,
        name: &'static str,
        dtype: Option<DType>,
        tok: u32,
        params: &P,
        buffers: &[Binding<'_>],
        grid: [u32; 3],
    ) -> Result<Dispatch> {
        let pipeline = self.pipeline(name, dtype, tok)?;
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
            kernel: name,
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
    /// returns the total nanoseconds per kernel name, largest first. Needs the adapter's
    /// TIMESTAMP_QUERY feature; a development tool (`INFER_PROFILE=1`), not a hot path.
    pub fn profile(&self, dispatches: &[Dispatch]) -> Result<Vec<(&'static str, f64, usize)>> {
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
                    label: Some(d.kernel),
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
        let mut totals: Vec<(&'static str, f64, usize)> = Vec::new();
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

/// Requires an f32 tensor with at least `n` elements in one buffer.
pub(crate) fn need_f32(kernel: &'static str, t: &Tensor, n: usize) -> Result<()> {
    if t.dtype != DType::F32 {
        return Err(KernelError::DType {
            kernel,
            tensor: t.name.clone(),
            dtype: t.dtype,
        });
    }
    need_len(kernel, t, n)
}

pub(crate) fn need_len(kernel: &'static str, t: &Tensor, n: usize) -> Result<()> {
    if t.parts.len() != 1 || t.numel() < n {
        return Err(KernelError::Shape {
            kernel,
            reason: format!(
                "`{}` {:?} needs {n} elements in one buffer",
                t.name, t.shape
            ),
        });
    }
    Ok(())
}

/// A grid of `n` workgroups along x, folded into y past 65535.
pub(crate) fn grid1(n: u32) -> [u32; 3] {
    if n <= 65535 {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(65535);
        [n.div_ceil(y), y, 1]
    }
}
