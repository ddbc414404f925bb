//! `cargo xtask bench [--backend B] [--model M] [--quick]`: end-to-end and kernel
//! benchmarks on every GPU backend the machine has, written to `BENCHMARKS.md` and
//! `bench/results.json` (generated, never edited by hand).
//!
//! Per backend: a buffer-copy GB/s and an FMA-throughput GFLOP/s measured in the same run as
//! the kernel rooflines (matvec GB/s, matmul GFLOP/s), then `infer bench` on the default
//! model (SmolLM2-135M Q4_1) and its Q8_0 and f16 forms: prefill tok/s at 128 and 512 prompt
//! tokens, decode tok/s (median of runs), time to first token cold and warm, GPU memory, and
//! decode with prompt-lookup speculation.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use infer_kernels::{AttentionIo, Kernels};
use infer_tensor::{DType, Device, DeviceOptions, Tensor, reference, wgpu};
use serde_json::{Value, json};

struct Opts {
    backend: Option<String>,
    model: Option<String>,
    infer: Option<String>,
    render: Option<String>,
    quick: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        backend: None,
        model: None,
        infer: None,
        render: None,
        quick: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backend" => o.backend = Some(it.next().context("--backend needs a value")?.clone()),
            "--model" => o.model = Some(it.next().context("--model needs a value")?.clone()),
            "--infer" => o.infer = Some(it.next().context("--infer needs a value")?.clone()),
            "--render" => o.render = Some(it.next().context("--render needs a value")?.clone()),
            "--quick" => o.quick = true,
            other => bail!(
                "cargo xtask bench: unknown argument {other}\n\nusage: cargo xtask bench [--backend vulkan|metal|dx12|gl] [--model PATH] [--infer BIN] [--quick]\n       cargo xtask bench --render RESULTS.json   (markdown of an earlier run, to stdout)"
            ),
        }
    }
    Ok(o)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Records `reps` repetitions of a benchmarked operation into an encoder (kernels: all in
/// one compute pass, so a pass boundary is not counted per repetition).
type Record<'a> = dyn Fn(&mut wgpu::CommandEncoder, usize) + 'a;

/// Repetitions of `record` one command buffer needs to last >= 20 ms (after a warm-up).
fn calibrate(dev: &Device, record: &Record) -> Result<usize> {
    sample(dev, 1, record)?;
    let mut reps = 1;
    while reps < 16384 && sample(dev, reps, record)? * (reps as f64) < 0.02 {
        reps *= 2;
    }
    Ok(reps)
}

/// Seconds per repetition of `record` over one command buffer of `reps`: wall clock from
/// submit to the end of the wait (the command buffer is finished before the clock starts).
fn sample(dev: &Device, reps: usize, record: &Record) -> Result<f64> {
    let mut enc = dev.device.create_command_encoder(&Default::default());
    record(&mut enc, reps);
    let cb = enc.finish();
    let t = Instant::now();
    dev.queue.submit([cb]);
    dev.wait()?;
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}

/// Seconds per repetition of `record` (median of `runs` command buffers, each repeating it
/// enough times to last >= 20 ms).
fn time_gpu(dev: &Device, runs: usize, record: &Record) -> Result<f64> {
    let reps = calibrate(dev, record)?;
    let v: Result<Vec<f64>> = (0..runs).map(|_| sample(dev, reps, record)).collect();
    Ok(median(v?))
}

/// A kernel timed against a baseline in alternation (`runs` pairs, the baseline sample
/// right before each kernel sample), so the host's drift over the run moves both: the
/// kernel's median seconds per repetition and the median over pairs of baseline seconds
/// over kernel seconds (the kernel's throughput relative to the baseline's, for equal
/// work).
fn time_paired(dev: &Device, runs: usize, base: &Record, kernel: &Record) -> Result<(f64, f64)> {
    let (rb, rk) = (calibrate(dev, base)?, calibrate(dev, kernel)?);
    let (mut tk, mut ratio) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let b = sample(dev, rb, base)?;
        let k = sample(dev, rk, kernel)?;
        tk.push(k);
        ratio.push(b / k);
    }
    Ok((median(tk), median(ratio)))
}

fn record_dispatches(
    d: &[infer_kernels::Dispatch],
) -> impl Fn(&mut wgpu::CommandEncoder, usize) + '_ {
    move |enc: &mut wgpu::CommandEncoder, reps: usize| {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for _ in 0..reps {
            for x in d {
                x.record(&mut pass);
            }
        }
    }
}

const COPY_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;
// Grid-stride copy, 16 bytes per load and store.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let stride = nw.x * 256u;
    for (var i = gid.x; i < arrayLength(&src); i += stride) {
        dst[i] = src[i];
    }
}
"#;

const READ_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
// Grid-stride read of the whole buffer, 16 bytes per load, one word written per invocation
// (so the loads cannot be dropped).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let stride = nw.x * 256u;
    var acc = vec4<u32>(0u);
    for (var i = gid.x; i < arrayLength(&src); i += stride) {
        acc ^= src[i];
    }
    out[gid.x] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}
"#;

const EMPTY_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
// Next to no work: what one dispatch costs the driver and the adapter whatever the kernel
// (one workgroup; its first invocation writes a word so the dispatch cannot be dropped).
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32) {
    if (i == 0u) {
        out[0] = out[0] + 1u;
    }
}
"#;

const FMA_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
// 8 independent scalar FMA chains of 4096 steps: 65536 FLOPs per invocation. (Scalar, so a
// CPU adapter running invocations as SIMD lanes keeps every chain in one register.)
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = f32(gid.x) * 1e-7;
    var a0 = s; var a1 = s + 0.1; var a2 = s + 0.2; var a3 = s + 0.3;
    var a4 = s + 0.4; var a5 = s + 0.5; var a6 = s + 0.6; var a7 = s + 0.7;
    for (var i = 0u; i < 4096u; i++) {
        a0 = fma(a0, 0.999, 0.001); a1 = fma(a1, 0.999, 0.001);
        a2 = fma(a2, 0.999, 0.001); a3 = fma(a3, 0.999, 0.001);
        a4 = fma(a4, 0.999, 0.001); a5 = fma(a5, 0.999, 0.001);
        a6 = fma(a6, 0.999, 0.001); a7 = fma(a7, 0.999, 0.001);
    }
    out[gid.x] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}
"#;

fn pipeline(dev: &Device, label: &str, wgsl: &str) -> wgpu::ComputePipeline {
    let module = dev
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(wgsl.into()),
        });
    dev.device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        })
}

/// A bind group of `buffers` at bindings 0, 1, ... of `pipe`'s group 0.
fn bind(dev: &Device, pipe: &wgpu::ComputePipeline, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    dev.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipe.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// Repetitions of one dispatch of `groups` workgroups, in one compute pass.
fn grid<'a>(
    pipe: &'a wgpu::ComputePipeline,
    bg: &'a wgpu::BindGroup,
    groups: u32,
) -> impl Fn(&mut wgpu::CommandEncoder, usize) + 'a {
    move |enc: &mut wgpu::CommandEncoder, reps: usize| {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipe);
        pass.set_bind_group(0, bg, &[]);
        for _ in 0..reps {
            pass.dispatch_workgroups(groups, 1, 1);
        }
    }
}

/// Copy GB/s, FMA GFLOP/s, matvec GB/s and matmul GFLOP/s on one device.
fn rooflines(dev: &Arc<Device>, quick: bool) -> Result<Value> {
    let runs = if quick { 3 } else { 7 };
    let k = Kernels::new(dev.clone());
    // Copy: buffer to buffer, 64 MiB on CPU adapters (past any cache), 1 GiB on GPUs (a
    // copy of 64 MiB lasts ~30 µs on an H200: too short to fill the chip); GB/s counts bytes
    // read + written.
    let cpu = dev.info.device_type == wgpu::DeviceType::Cpu;
    let size = if cpu { 64u64 << 20 } else { 1u64 << 30 };
    let mk = |usage| {
        dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench copy"),
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let (a, b) = (
        mk(wgpu::BufferUsages::COPY_SRC),
        mk(wgpu::BufferUsages::COPY_DST),
    );
    let dma = |enc: &mut wgpu::CommandEncoder, reps: usize| {
        for _ in 0..reps {
            enc.copy_buffer_to_buffer(&a, 0, &b, 0, size);
        }
    };
    let t = time_gpu(dev, runs, &dma)?;
    let dma_gbs = 2.0 * size as f64 / t / 1e9;
    eprintln!("  buffer copy: {dma_gbs:.2} GB/s (read + write)");
    // The same copy by a compute shader (on an H200 copy_buffer_to_buffer moved ~0.85 TB/s,
    // a fifth of what the memory does, and the f32 matvec read faster than that).
    let ssize = size.min(dev.device.limits().max_storage_buffer_binding_size & !15);
    let smk = |label| {
        dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: ssize,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let (sa, sb) = (smk("bench copy src"), smk("bench copy dst"));
    let copy_pipe = pipeline(dev, "bench copy", COPY_WGSL);
    let copy_bg = bind(dev, &copy_pipe, &[&sa, &sb]);
    let copy_groups = if cpu { 64 } else { 32768 };
    let shader = grid(&copy_pipe, &copy_bg, copy_groups);
    let t = time_gpu(dev, runs, &shader)?;
    let shader_gbs = 2.0 * ssize as f64 / t / 1e9;
    eprintln!("  shader copy: {shader_gbs:.2} GB/s (read + write)");
    // The kernels are compared with the faster of the two.
    let (copy, copy_bytes): (&Record, u64) = if shader_gbs > dma_gbs {
        (&shader, ssize)
    } else {
        (&dma, size)
    };
    let copy_gbs = dma_gbs.max(shader_gbs);
    // Read bandwidth: what a kernel that only reads (a matvec's weights) can reach.
    let read_pipe = pipeline(dev, "bench read", READ_WGSL);
    let read_out = Tensor::zeros(dev, "read out", &[copy_groups as usize * 256], DType::U32)?;
    let read_bg = bind(dev, &read_pipe, &[&sa, read_out.buffer()]);
    let read = grid(&read_pipe, &read_bg, copy_groups);
    let t = time_gpu(dev, runs, &read)?;
    let read_gbs = ssize as f64 / t / 1e9;
    eprintln!("  read: {read_gbs:.2} GB/s");

    // The cost of one dispatch (a kernel that does next to nothing): what every kernel of
    // a decode step pays on top of its work.
    let empty_pipe = pipeline(dev, "bench empty", EMPTY_WGSL);
    let empty_out = Tensor::zeros(dev, "empty out", &[64], DType::U32)?;
    let empty_bg = bind(dev, &empty_pipe, &[empty_out.buffer()]);
    let t = time_gpu(dev, runs, &grid(&empty_pipe, &empty_bg, 1))?;
    let dispatch_us = t * 1e6;
    eprintln!("  empty dispatch: {dispatch_us:.1} us");

    // FMA throughput.
    let pipeline = pipeline(dev, "bench fma", FMA_WGSL);
    // Enough invocations to fill the adapter: 16384 on CPU adapters, 2^19 on GPUs (an H200
    // holds 132 x 2048 resident invocations).
    let groups = if cpu { 256u32 } else { 8192 };
    let out = Tensor::zeros(dev, "fma out", &[groups as usize * 64], DType::F32)?;
    let bg = bind(dev, &pipeline, &[out.buffer()]);
    let fma = grid(&pipeline, &bg, groups);
    let t = time_gpu(dev, runs, &fma)?;
    let fma_gflops = groups as f64 * 64.0 * 65536.0 / t / 1e9;
    eprintln!("  fma: {fma_gflops:.1} GFLOP/s");

    let mut matvec = Vec::new();
    // SmolLM2-135M's shapes, then the K-quants' nearest (their rows are whole 256-element
    // super-blocks: 576 is not) and a 7B model's 4096 x 4096; a dtype runs at the shapes its
    // blocks fit, f32 at all of them (each row's "x f32" is taken at its own shape).
    let shapes: &[(usize, usize)] = if quick {
        &[(1536, 576), (1536, 768)]
    } else {
        &[
            (1536, 576),
            (576, 1536),
            (49152, 576),
            (1536, 768),
            (49152, 768),
            (4096, 4096),
        ]
    };
    for dt in DType::ALL {
        for &(n, kk) in shapes {
            if dt.bytes_for(kk).is_none() {
                continue;
            }
            let w: Vec<f32> = (0..n * kk)
                .map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0)
                .collect();
            let bytes = reference::quantize(dt, &w);
            let wt = Tensor::upload_weights(dev, "w", &[n, kk], dt, &bytes)?;
            let x = Tensor::from_f32(dev, "x", &[kk], &w[..kk])?;
            let y = Tensor::zeros(dev, "y", &[n], DType::F32)?;
            let d = k.matvec(&wt, &x, 0, &y, 0)?;
            let (t, per_copy) = time_paired(dev, runs, copy, &record_dispatches(&d))?;
            let (_, per_read) = time_paired(dev, runs, &read, &record_dispatches(&d))?;
            let gbs = bytes.len() as f64 / t / 1e9;
            let gws = (n * kk) as f64 / t / 1e9;
            // Bytes read over the copy's bytes read + written, per unit of time; and over
            // the read kernel's bytes.
            let ratio = per_copy * bytes.len() as f64 / (2 * copy_bytes) as f64;
            let ratio_read = per_read * bytes.len() as f64 / ssize as f64;
            eprintln!(
                "  matvec {dt} {n}x{kk}: {gbs:.2} GB/s, {gws:.2} G weights/s, {ratio:.3} of copy, {ratio_read:.3} of read"
            );
            matvec.push(json!({"dtype": dt.name(), "n": n, "k": kk, "ms": t * 1e3, "gb_s": gbs, "gweights_s": gws, "ratio_to_copy": ratio, "ratio_to_read": ratio_read}));
        }
    }
    let mut matmul = Vec::new();
    let (m, n, kk) = (128usize, 1536usize, 576usize);
    for &dt in &[DType::F32, DType::Q4_1] {
        let w: Vec<f32> = (0..n * kk)
            .map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0)
            .collect();
        let bytes = reference::quantize(dt, &w);
        let wt = Tensor::upload_weights(dev, "w", &[n, kk], dt, &bytes)?;
        let xs: Vec<f32> = (0..m * kk).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::from_f32(dev, "x", &[m, kk], &xs)?;
        let y = Tensor::zeros(dev, "y", &[m, n], DType::F32)?;
        for (kernel, d) in [
            ("matmul (tiled)", k.matmul(&x, m, &wt, &y)?),
            ("linear (as chosen for prefill)", k.linear(&x, m, &wt, &y)?),
        ] {
            let (t, per_fma) = time_paired(dev, runs, &fma, &record_dispatches(&d))?;
            let gf = 2.0 * (m * n * kk) as f64 / t / 1e9;
            // FLOPs over the FMA kernel's FLOPs, per unit of time.
            let ratio = per_fma * 2.0 * (m * n * kk) as f64 / (groups as f64 * 64.0 * 65536.0);
            eprintln!("  {kernel} {dt} m{m} n{n} k{kk}: {gf:.2} GFLOP/s, {ratio:.3} of FMA");
            matmul.push(json!({"kernel": kernel, "dtype": dt.name(), "m": m, "n": n, "k": kk, "ms": t * 1e3, "gflop_s": gf, "ratio_to_fma": ratio}));
        }
    }
    let attention = attention_rows(dev, &k, runs)?;
    Ok(
        json!({"copy_gb_s": copy_gbs, "buffer_copy_gb_s": dma_gbs, "shader_copy_gb_s": shader_gbs, "read_gb_s": read_gbs, "fma_gflop_s": fma_gflops, "dispatch_us": dispatch_us, "matvec": matvec, "matmul": matmul, "attention": attention}),
    )
}

/// Decode attention (one token) of the SmolLM2-135M shape (9 heads over 3 KV heads,
/// head_dim 64, a 4096-position cache) at contexts 512 and 4096, by every variant (the
/// split ones with the chunk `attention` would use).
fn attention_rows(dev: &Arc<Device>, k: &Kernels, runs: usize) -> Result<Vec<Value>> {
    let (nh, nkv, hd, cap) = (9usize, 3usize, 64usize, 4096usize);
    let cache: Vec<f32> = (0..nkv * cap * hd)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0)
        .collect();
    let kc = Tensor::from_f32(dev, "k cache", &[nkv, cap, hd], &cache)?;
    let vc = Tensor::from_f32(dev, "v cache", &[nkv, cap, hd], &cache)?;
    let qs: Vec<f32> = (0..nh * hd).map(|i| (i as f32 * 0.37).sin()).collect();
    let q = Tensor::from_f32(dev, "q", &[1, nh, hd], &qs)?;
    let out = Tensor::zeros(dev, "out", &[1, nh, hd], DType::F32)?;
    let a = infer_kernels::AttentionParams {
        n_tokens: 1,
        n_heads: nh,
        n_kv: nkv,
        head_dim: hd,
        capacity: cap,
        scale: 0.125,
        softcap: 0.0,
        window: 0,
    };
    let chunk = k.attention_split_chunk(cap);
    let mut rows = Vec::new();
    for ctx in [512usize, 4096] {
        let pos = Tensor::upload(
            dev,
            "pos",
            &[1],
            DType::U32,
            &(ctx as u32 - 1).to_le_bytes(),
        )?;
        for (kernel, d) in [
            (
                "attention_lane",
                k.attention_lane(
                    AttentionIo {
                        q: &q,
                        k_cache: &kc,
                        v_cache: &vc,
                        out: &out,
                        pos: &pos,
                    },
                    &a,
                )?,
            ),
            (
                "attention (tiled)",
                k.attention_tiled(
                    AttentionIo {
                        q: &q,
                        k_cache: &kc,
                        v_cache: &vc,
                        out: &out,
                        pos: &pos,
                    },
                    &a,
                )?,
            ),
            (
                "attention_split",
                k.attention_split(
                    AttentionIo {
                        q: &q,
                        k_cache: &kc,
                        v_cache: &vc,
                        out: &out,
                        pos: &pos,
                    },
                    &a,
                    chunk,
                )?,
            ),
            (
                "attention_split_heads",
                k.attention_split_heads(
                    AttentionIo {
                        q: &q,
                        k_cache: &kc,
                        v_cache: &vc,
                        out: &out,
                        pos: &pos,
                    },
                    &a,
                    chunk,
                )?,
            ),
        ]
        .into_iter()
        .chain(
            k.attention_split_sg_supported()
                .then(|| {
                    k.attention_split_sg(
                        AttentionIo {
                            q: &q,
                            k_cache: &kc,
                            v_cache: &vc,
                            out: &out,
                            pos: &pos,
                        },
                        &a,
                        chunk,
                    )
                })
                .transpose()?
                .map(|d| ("attention_split_sg", d)),
        ) {
            let t = time_gpu(dev, runs, &record_dispatches(&d))?;
            // K and V rows read once per KV head.
            let gbs = (2 * nkv * ctx * hd * 4) as f64 / t / 1e9;
            eprintln!(
                "  {kernel} h{nh} kv{nkv} d{hd} ctx{ctx}: {:.3} ms, {gbs:.2} GB/s of K+V",
                t * 1e3
            );
            rows.push(json!({"kernel": kernel, "heads": nh, "kv_heads": nkv, "head_dim": hd, "context": ctx, "chunk": chunk, "ms": t * 1e3, "gb_s": gbs}));
        }
    }
    Ok(rows)
}

fn run_infer(infer: &Path, args: &[&str]) -> Result<Value> {
    eprintln!("  $ infer {}", args.join(" "));
    let out = Command::new(infer)
        .args(args)
        .output()
        .context("running infer")?;
    if !out.status.success() {
        bail!(
            "infer {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().context("infer printed nothing")?;
    serde_json::from_str(last).with_context(|| format!("parsing infer's JSON: {last}"))
}

/// `cargo xtask bench serve`: the load generator against a server it starts on 127.0.0.1
/// (`infer bench-serve --spawn`), aggregate tok/s at 1, 4, 16 and 64 streams with TTFT and
/// inter-token latency percentiles; written to bench/serve.json and BENCHMARKS-serve.md.
pub fn bench_serve(root: &Path, args: &[String]) -> Result<()> {
    build_infer(root)?;
    let infer = root.join("target/release/infer");
    let model = crate::model::fetch_default_model(root)?;
    let mut a: Vec<String> = vec![
        "bench-serve".into(),
        "--json".into(),
        "--spawn".into(),
        model.to_string_lossy().into_owned(),
    ];
    a.extend(args.iter().cloned());
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let v = run_infer(&infer, &refs)?;
    let doc = json!({"commit": commit(root), "date": date(), "serve": v});
    std::fs::create_dir_all(root.join("bench"))?;
    std::fs::write(
        root.join("bench/serve.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    let mut md = String::from(
        "# Serving benchmark\n\nGenerated by `cargo xtask bench serve` (do not edit by hand).\n\n",
    );
    md += &format!(
        "Commit `{}`, {}.\n\n```json\n{}\n```\n",
        doc["commit"].as_str().unwrap_or(""),
        doc["date"].as_str().unwrap_or(""),
        serde_json::to_string_pretty(&doc["serve"])?
    );
    std::fs::write(root.join("BENCHMARKS-serve.md"), md)?;
    eprintln!("wrote BENCHMARKS-serve.md and bench/serve.json");
    Ok(())
}

fn build_infer(root: &Path) -> Result<()> {
    eprintln!("building infer (release)...");
    let status = Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["build", "--release", "-p", "infer-cli"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p infer-cli failed");
    }
    Ok(())
}

/// The commit measured: env INFER_COMMIT where set (a copy of the tree on another machine,
/// whose .git may be stale), else `git rev-parse`.
fn commit(root: &Path) -> String {
    if let Ok(c) = std::env::var("INFER_COMMIT") {
        return c;
    }
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn bench(root: &Path, args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("serve") {
        return bench_serve(root, &args[1..]);
    }
    let o = parse(args)?;
    // `--render JSON`: the markdown of a results file written by an earlier run (e.g. one
    // from a lent GPU machine, after the table's format changed), to stdout; measures nothing.
    if let Some(path) = &o.render {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let doc: Value =
            serde_json::from_str(&text).with_context(|| format!("{path}: not a results file"))?;
        if doc.get("results").and_then(Value::as_array).is_none() {
            bail!("{path}: no \"results\" array (not written by cargo xtask bench)");
        }
        print!("{}", markdown(&doc));
        return Ok(());
    }
    // `--infer BIN` runs a prebuilt binary (a machine without a Rust toolchain); else build it.
    let infer = match &o.infer {
        Some(bin) => std::path::PathBuf::from(bin),
        None => {
            build_infer(root)?;
            root.join("target/release/infer")
        }
    };
    let model = match &o.model {
        Some(m) => m.clone(),
        None => crate::model::fetch_default_model(root)?
            .to_string_lossy()
            .into_owned(),
    };
    // Gemma 3 270M, a real Q4_K_M file (Q4_K, Q6_K, Q5_0, Q8_0 tensors).
    let gemma3 = crate::model::fetch_gemma3(root)?
        .to_string_lossy()
        .into_owned();
    let all = infer_tensor::device::enumerate(&DeviceOptions::default())?;
    let mut backends: Vec<String> = Vec::new();
    for a in &all {
        let name = match a.info.backend {
            wgpu::Backend::Vulkan => "vulkan",
            wgpu::Backend::Metal => "metal",
            wgpu::Backend::Dx12 => "dx12",
            wgpu::Backend::Gl => "gl",
            _ => continue,
        };
        if !backends.iter().any(|b| b == name) {
            backends.push(name.into());
        }
    }
    if let Some(b) = &o.backend {
        backends.retain(|x| x == b);
        if backends.is_empty() {
            bail!("no adapter on backend {b}");
        }
    } else if backends.iter().any(|b| b != "gl") {
        // GL (no compute features we use, minutes per shader compile on llvmpipe) only on
        // request or when it is all there is.
        if backends.iter().any(|b| b == "gl") {
            eprintln!("skipping the GL backend (ask for it with --backend gl)");
        }
        backends.retain(|b| b != "gl");
    }
    if backends.is_empty() {
        bail!("no GPU adapter found");
    }
    let commit = commit(root);
    let mut results = Vec::new();
    let runs = if o.quick { "1" } else { "3" };
    for b in &backends {
        eprintln!("== backend {b}");
        let dev = Arc::new(Device::new(&DeviceOptions {
            backend: Some(b.clone()),
            adapter: None,
        })?);
        let info = dev.info.clone();
        eprintln!("adapter: {}", dev.describe());
        let roof = rooflines(&dev, o.quick)?;
        drop(dev);
        let mut models = Vec::new();
        let forms = [
            ("q4_1", &model, None),
            ("q8_0", &model, Some("q8_0")),
            ("f16", &model, Some("f16")),
            ("q4_k_m (--quant)", &model, Some("q4_k_m")),
            ("gemma3-270m q4_k_m file", &gemma3, None),
        ];
        for (form, model, quant) in forms {
            if o.quick && form != "q4_1" && !form.starts_with("gemma3") {
                continue;
            }
            let mut a = vec![
                "bench",
                "--json",
                "--backend",
                b,
                "--model",
                model,
                "--prompt-tokens",
                "128",
                "--prompt-tokens",
                "512",
                "--gen-tokens",
                "32",
                "--runs",
                runs,
            ];
            if let Some(q) = quant {
                a.extend(["--quant", q]);
            }
            let mut v = run_infer(&infer, &a)?;
            v["form"] = form.into();
            models.push(v);
        }
        let spec = run_infer(
            &infer,
            &[
                "bench",
                "--json",
                "--backend",
                b,
                "--model",
                &model,
                "--prompt-tokens",
                "16",
                "--gen-tokens",
                "64",
                "--runs",
                runs,
                "--prompt-lookup",
                "2",
                "--sampling",
            ],
        )?;
        results.push(json!({
            "backend": b,
            "adapter": info.name,
            "device_type": format!("{:?}", info.device_type),
            "driver": format!("{} {}", info.driver, info.driver_info),
            "rooflines": roof,
            "models": models,
            "speculative": spec.get("speculative").cloned().unwrap_or(Value::Null),
            "sampling_topk": spec.get("sampling_topk").cloned().unwrap_or(Value::Null),
        }));
    }
    let doc = json!({"commit": commit, "date": date(), "model": model, "results": results});
    std::fs::create_dir_all(root.join("bench"))?;
    std::fs::write(
        root.join("bench/results.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    std::fs::write(root.join("BENCHMARKS.md"), markdown(&doc))?;
    eprintln!("wrote BENCHMARKS.md and bench/results.json");
    Ok(())
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    s += "# Benchmarks\n\nGenerated by `cargo xtask bench` (do not edit by hand).\n\n";
    s += &format!(
        "Commit `{}`, {}; model `{}`.\n",
        doc["commit"].as_str().unwrap_or(""),
        doc["date"].as_str().unwrap_or(""),
        doc["model"].as_str().unwrap_or("")
    );
    for r in doc["results"].as_array().into_iter().flatten() {
        let roof = &r["rooflines"];
        let copy = f(&roof["copy_gb_s"]);
        let copies = match (roof.get("buffer_copy_gb_s"), roof.get("shader_copy_gb_s")) {
            (Some(b), Some(c)) => format!(
                " (the faster of copy_buffer_to_buffer, {:.2}, and a compute-shader copy, {:.2})",
                f(b),
                f(c)
            ),
            _ => String::new(),
        };
        let fma = f(&roof["fma_gflop_s"]);
        s += &format!(
            "\n## {} — {} ({}, {})\n\nDriver: {}.\n\n",
            r["backend"].as_str().unwrap_or(""),
            r["adapter"].as_str().unwrap_or(""),
            r["device_type"].as_str().unwrap_or(""),
            r["backend"].as_str().unwrap_or(""),
            r["driver"].as_str().unwrap_or("")
        );
        s += &format!(
            "Baselines measured in the same run: buffer copy **{copy:.2} GB/s** (read + write){copies}, FMA throughput **{fma:.1} GFLOP/s**. \
The kernel rows' \"x copy\" and \"x FMA\" are medians over runs of the kernel's throughput over the baseline's, each \
baseline sample taken right before the kernel's, so the host's drift moves both.\n\n"
        );
        if let Some(r) = roof.get("read_gb_s") {
            let limited = if f(r) < copy / 2.0 {
                " It is below the copy's read rate: on this adapter the shader's loop, not memory, limits it."
            } else {
                ""
            };
            s += &format!(
                "Read bandwidth (a compute shader that only reads, as a matvec reads its weights): **{:.2} GB/s**; \"x read\" is paired the same way, and \"weights/s x f32\" divides a row's weights per second relative to its read baseline by the f32 row's (so drift between the rows cancels).{limited}\n\n",
                f(r)
            );
        }
        if let Some(d) = roof.get("dispatch_us") {
            s += &format!(
                "One dispatch of a kernel that does next to nothing: **{:.1} µs** (every kernel below, and each of a decode step's dispatches, pays it on top of its work).\n\n",
                f(d)
            );
        }
        s += "| kernel | dtype | shape | ms | GB/s | G weights/s | x copy | x read | weights/s x f32 |\n|---|---|---|---|---|---|---|---|---|\n";
        let rows: Vec<&Value> = roof["matvec"].as_array().into_iter().flatten().collect();
        for m in &rows {
            // Weights per second over the f32 matvec's at the same shape. The rows are
            // measured one after the other, and the host drifts between them (on a 2-vCPU
            // machine the f32 rows once ran at 0.6x their usual speed), so each rate is taken
            // relative to the read baseline it was paired with ("x read" times weights per
            // byte), which cancels the drift; the raw rates' ratio where a run has no
            // read pairing.
            let per_read = |o: &Value| {
                o.get("ratio_to_read")
                    .map(|r| f(r) * f(&o["gweights_s"]) / f(&o["gb_s"]))
            };
            let f32_row = rows
                .iter()
                .find(|o| o["dtype"] == "f32" && o["n"] == m["n"] && o["k"] == m["k"]);
            let vs_f32 = match f32_row {
                Some(o) if m["dtype"] != "f32" && f(&o["gweights_s"]) > 0.0 => {
                    let ratio = match (per_read(m), per_read(o)) {
                        (Some(a), Some(b)) if b > 0.0 => a / b,
                        _ => f(&m["gweights_s"]) / f(&o["gweights_s"]),
                    };
                    format!("{ratio:.2}x")
                }
                _ => String::new(),
            };
            s += &format!(
                "| matvec | {} | {}x{} | {:.3} | {:.2} | {:.2} | {:.3} | {} | {vs_f32} |\n",
                m["dtype"].as_str().unwrap_or(""),
                m["n"],
                m["k"],
                f(&m["ms"]),
                f(&m["gb_s"]),
                f(&m["gweights_s"]),
                f(&m["ratio_to_copy"]),
                m.get("ratio_to_read")
                    .map(|r| format!("{:.3}", f(r)))
                    .unwrap_or_default()
            );
        }
        s += "\n| kernel | dtype | m x n x k | ms | GFLOP/s | x FMA |\n|---|---|---|---|---|---|\n";
        for m in roof["matmul"].as_array().into_iter().flatten() {
            s += &format!(
                "| {} | {} | {}x{}x{} | {:.2} | {:.2} | {:.3} |\n",
                m["kernel"].as_str().unwrap_or(""),
                m["dtype"].as_str().unwrap_or(""),
                m["m"],
                m["n"],
                m["k"],
                f(&m["ms"]),
                f(&m["gflop_s"]),
                f(&m["ratio_to_fma"])
            );
        }
        let att = roof["attention"].as_array().into_iter().flatten();
        s += "\n| decode attention (1 token) | heads / kv heads x head_dim | context | ms | GB/s of K+V |\n|---|---|---|---|---|\n";
        for m in att {
            s += &format!(
                "| {} | {} / {} x {} | {} | {:.3} | {:.2} |\n",
                m["kernel"].as_str().unwrap_or(""),
                m["heads"],
                m["kv_heads"],
                m["head_dim"],
                m["context"],
                f(&m["ms"]),
                f(&m["gb_s"])
            );
        }
        s += "\n| model form | prefill 128 tok/s | prefill 512 tok/s | decode tok/s (128 ctx) | decode tok/s (512 ctx) | TTFT cold ms | TTFT warm ms (128) | GPU tensors MiB | weights MB | decode GB/s of weights (x copy) | prefill GFLOP/s at 512 (x FMA) |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
        for m in r["models"].as_array().into_iter().flatten() {
            let p128 = &m["prompt_128"];
            let p512 = &m["prompt_512"];
            let wb = f(&m["weight_bytes"]);
            let dec = f(&p128["decode_tok_s"]);
            let bw = wb * dec / 1e9;
            let pf = 2.0 * f(&m["non_embedding_params"]) * f(&p512["prefill_tok_s"]) / 1e9;
            s += &format!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {:.2} ({:.3}) | {:.2} ({:.3}) |\n",
                m["form"].as_str().unwrap_or(""),
                f(&p128["prefill_tok_s"]),
                f(&p512["prefill_tok_s"]),
                dec,
                f(&p512["decode_tok_s"]),
                f(&m["cold_ttft_ms"]),
                f(&p128["ttft_ms"]),
                f(&m["gpu_tensor_bytes"]) / (1u64 << 20) as f64,
                wb / 1e6,
                bw,
                bw / copy,
                pf,
                pf / fma
            );
        }
        let sp = &r["speculative"];
        if !sp.is_null() {
            s += &format!(
                "\nSpeculative decoding, {} (k {}), greedy, on a repeat-a-paragraph prompt \
                 ({} prompt tokens, {} generated): plain decode **{:.1} tok/s**, speculative \
                 **{:.1} tok/s** (**{:.2}x**); {} drafted, {} accepted ({:.0}%); same tokens: {}.\n",
                sp["drafter"].as_str().unwrap_or("?"),
                sp["draft_k"].as_str().unwrap_or("?"),
                sp["prompt_tokens"],
                sp["generated_tokens"],
                f(&sp["plain_decode_tok_s"]),
                f(&sp["speculative_decode_tok_s"]),
                f(&sp["speedup"]),
                sp["draft_tokens"],
                sp["accepted_tokens"],
                100.0 * f(&sp["acceptance_rate"]),
                sp["same_tokens"],
            );
        }
        let st = &r["sampling_topk"];
        if !st.is_null() {
            s += "\nTop-k selection over the vocabulary (one real logits vector; each path \
                  includes its submit and read-back):\n\n\
                  | k | GPU top-k + read k pairs, ms | read all logits, ms | host select, ms | GPU speedup |\n\
                  |---|---|---|---|---|\n";
            for k in [40, 256] {
                let x = &st[format!("select_top{k}")];
                if !x.is_null() {
                    s += &format!(
                        "| {k} | {:.3} | {:.3} | {:.3} | {:.2}x |\n",
                        f(&x["gpu_topk_read_ms"]),
                        f(&x["read_all_ms"]),
                        f(&x["host_select_ms"]),
                        f(&x["speedup"]),
                    );
                }
            }
            s += &format!(
                "\nSampled decode (temperature 0.8, top-k 40, seed 1): GPU top-k {:.1} tok/s, \
                 full read-back {:.1} tok/s ({:.2}x); same tokens: {}.\n",
                f(&st["gpu_topk_decode_tok_s"]),
                f(&st["full_readback_decode_tok_s"]),
                f(&st["decode_speedup"]),
                st["same_tokens"],
            );
        }
    }
    s += "\nMedians of several runs; the machines are noisy, so compare ratios measured in the same run. \
Decode GB/s counts the bytes of every weight matrix once per token; prefill GFLOP/s counts 2 x non-embedding parameters per token.\n";
    s
}
