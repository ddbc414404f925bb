//! Kernel throughput against a buffer-copy baseline measured in the same run.
//!
//! `cargo bench -p infer-kernels --bench kernels [-- --quick | -- FILTER]`
//!
//! - `copy/64MiB`: `copy_buffer_to_buffer` of 64 MiB; its GB/s counts bytes read AND written
//!   (2 x 64 MiB per copy). It is the yardstick the other rows are divided by.
//! - `matvec/<dtype>/<n>x<k>`: decode-time mat-vec at SmolLM2-135M shapes; GB/s counts the
//!   weight bytes read in the dtype's own layout (Q4_1: 20 bytes per 32 weights).
//! - `matmul/<dtype>/m<m>_n<n>_k<k>`: prefill mat-mat; criterion's "elem/s" are FLOP/s
//!   (2 m n k per call).
//!
//! Criterion prints its own statistics; afterwards a summary table comes from our own
//! timing: the median of [`SAMPLES`] runs, each one command buffer of K repeated calls
//! (K chosen so one run takes at least [`MIN_SAMPLE`], amortizing the submit round trip).
//! Time is wall clock from `queue.submit` to the end of a blocking `device.poll` wait, so it
//! includes one submit-and-wait round trip per run (~0.1 ms on lavapipe) and per-dispatch
//! overhead, which is what a forward pass pays too. Without an adapter the bench prints SKIP
//! (under `CI=true` it panics).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use infer_kernels::{Dispatch, Kernels};
use infer_tensor::reference as r;
use infer_tensor::{DType, Device, Tensor, device::test_device};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Bytes of the copy baseline's buffers.
const COPY_BYTES: u64 = 64 << 20;
/// The shortest run (one command buffer) of the summary timing.
const MIN_SAMPLE: Duration = Duration::from_millis(20);
/// Runs per row of the summary table; the median is reported.
const SAMPLES: usize = 7;
/// Most repeated calls recorded into one command buffer.
const MAX_REPS_PER_BUFFER: u64 = 1024;

/// Matvec weight shapes `(n, k)`: SmolLM2-135M's MLP up/gate, MLP down, output layer.
const MATVEC_SHAPES: [(usize, usize); 3] = [(1536, 576), (576, 1536), (49152, 576)];
const MATVEC_DTYPES: [DType; 5] = [
    DType::F32,
    DType::F16,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
];
/// Matmul shapes `(m, n, k)`: 128 prompt tokens through the MLP up and down projections.
const MATMUL_SHAPES: [(usize, usize, usize); 2] = [(128, 1536, 576), (128, 576, 1536)];
const MATMUL_DTYPES: [DType; 2] = [DType::F32, DType::Q4_1];

/// What one call of a benchmark does.
enum Work {
    Compute(Vec<Dispatch>),
    Copy {
        src: wgpu::Buffer,
        dst: wgpu::Buffer,
    },
}

/// Records `reps` calls of `work`, then times submit + wait.
fn run_reps(dev: &Device, work: &Work, reps: u64) -> Duration {
    let mut buffers = Vec::new();
    let mut left = reps;
    while left > 0 {
        let n = left.min(MAX_REPS_PER_BUFFER);
        left -= n;
        let mut enc = dev.device.create_command_encoder(&Default::default());
        match work {
            Work::Compute(dispatches) => {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for _ in 0..n {
                    for d in dispatches {
                        d.record(&mut pass);
                    }
                }
            }
            Work::Copy { src, dst } => {
                for _ in 0..n {
                    enc.copy_buffer_to_buffer(src, 0, dst, 0, COPY_BYTES);
                }
            }
        }
        buffers.push(enc.finish());
    }
    // Wall clock around submit and the blocking poll: no timestamp queries needed.
    let start = Instant::now();
    dev.queue.submit(buffers);
    dev.wait().expect("device poll");
    let elapsed = start.elapsed();
    dev.check("benchmark run").expect("no wgpu errors");
    elapsed
}

/// Our own timing for the summary: the median time of one call.
fn median_call(dev: &Device, work: &Work) -> (Duration, u64) {
    run_reps(dev, work, 1); // warm-up: first use compiles pipelines and clears buffers
    let mut reps = 1u64;
    loop {
        let t = run_reps(dev, work, reps);
        if t >= MIN_SAMPLE || reps >= 1 << 16 {
            break;
        }
        let scale = 1.25 * MIN_SAMPLE.as_secs_f64() / t.as_secs_f64().max(1e-6);
        reps = ((reps as f64 * scale).ceil() as u64).clamp(reps + 1, reps * 64);
    }
    let mut per_call: Vec<f64> = (0..SAMPLES)
        .map(|_| run_reps(dev, work, reps).as_secs_f64() / reps as f64)
        .collect();
    per_call.sort_by(f64::total_cmp);
    (Duration::from_secs_f64(per_call[SAMPLES / 2]), reps)
}

/// One row of the summary table.
struct Row {
    kernel: &'static str,
    dtype: String,
    shape: String,
    reps: u64,
    time: Duration,
    /// Bytes per call that the GB/s column counts (none for matmul).
    bytes: Option<u64>,
    flops: u64,
}

impl Row {
    fn gbps(&self) -> Option<f64> {
        self.bytes.map(|b| b as f64 / self.time.as_secs_f64() / 1e9)
    }
}

fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn weights(dev: &Device, rng: &mut StdRng, dtype: DType, n: usize, k: usize) -> Tensor {
    let bytes = r::quantize(dtype, &rand_vec(rng, n * k));
    Tensor::upload_weights(dev, "w", &[n, k], dtype, &bytes).expect("upload weights")
}

fn f32_tensor(dev: &Device, rng: &mut StdRng, name: &str, n: usize) -> Tensor {
    Tensor::from_f32(dev, name, &[n], &rand_vec(rng, n)).expect("upload")
}

/// Runs one criterion benchmark; its inputs are built on first call, so benchmarks a
/// filter excludes build nothing. Returns the work when the benchmark ran.
fn bench(
    c: &mut Criterion,
    group: &str,
    id: &str,
    throughput: Throughput,
    dev: &Device,
    mut setup: impl FnMut() -> Work,
) -> Option<Work> {
    let mut work: Option<Work> = None;
    let mut g = c.benchmark_group(group);
    g.sampling_mode(SamplingMode::Flat).throughput(throughput);
    g.bench_function(id, |b| {
        let w = work.get_or_insert_with(|| {
            let w = setup();
            run_reps(dev, &w, 1); // first use: pipeline compile, lazy buffer clears
            w
        });
        b.iter_custom(|iters| run_reps(dev, w, iters));
    });
    g.finish();
    work
}

fn main() {
    let Some(dev) = test_device() else {
        println!("SKIP: no GPU adapter; kernel benchmarks did NOT run");
        return;
    };
    let dev = Arc::new(dev);
    println!("adapter: {}", dev.describe());
    let k = Kernels::new(dev.clone());

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .nresamples(10_000)
        .without_plots()
        .configure_from_args();
    // `cargo bench` passes --bench; without it (`cargo test --benches`) or with --test,
    // criterion runs each benchmark once as a test; with --list it runs none. Our own
    // timing and the summary table are for real benchmark runs only.
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let timing = has("--bench") && !has("--test") && !has("--list");
    let mut rows = Vec::new();

    let copy = || {
        let buffer = |label| {
            dev.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: COPY_BYTES,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let src = buffer("copy src");
        dev.queue
            .write_buffer(&src, 0, &vec![0x5a; COPY_BYTES as usize]);
        Work::Copy {
            src,
            dst: buffer("copy dst"),
        }
    };
    // The summary's yardstick is measured even when a filter skips the criterion row.
    let copy_id = format!("{}MiB", COPY_BYTES >> 20);
    let copy_work = bench(
        &mut c,
        "copy",
        &copy_id,
        Throughput::BytesDecimal(2 * COPY_BYTES),
        &dev,
        copy,
    );
    let copy_row = timing.then(|| {
        let (time, reps) = median_call(&dev, &copy_work.unwrap_or_else(copy));
        Row {
            kernel: "copy",
            dtype: "-".into(),
            shape: format!("{copy_id} (r+w)"),
            reps,
            time,
            bytes: Some(2 * COPY_BYTES),
            flops: 0,
        }
    });

    let mut rng = StdRng::seed_from_u64(7);
    for (n, kk) in MATVEC_SHAPES {
        for dtype in MATVEC_DTYPES {
            let bytes = (dtype.bytes_for(kk).expect("whole blocks") * n) as u64;
            let shape = format!("{n}x{kk}");
            let work = bench(
                &mut c,
                "matvec",
                &format!("{dtype}/{shape}"),
                Throughput::BytesDecimal(bytes),
                &dev,
                || {
                    let w = weights(&dev, &mut rng, dtype, n, kk);
                    let x = f32_tensor(&dev, &mut rng, "x", kk);
                    let y = Tensor::zeros(&dev, "y", &[n], DType::F32).expect("y");
                    Work::Compute(k.matvec(&w, &x, 0, &y, 0).expect("matvec"))
                },
            );
            if let (Some(work), true) = (work, timing) {
                let (time, reps) = median_call(&dev, &work);
                rows.push(Row {
                    kernel: "matvec",
                    dtype: dtype.to_string(),
                    shape,
                    reps,
                    time,
                    bytes: Some(bytes),
                    flops: 2 * (n * kk) as u64,
                });
            }
        }
    }

    for (m, n, kk) in MATMUL_SHAPES {
        for dtype in MATMUL_DTYPES {
            let flops = 2 * (m * n * kk) as u64;
            let shape = format!("m{m}_n{n}_k{kk}");
            let work = bench(
                &mut c,
                "matmul",
                &format!("{dtype}/{shape}"),
                Throughput::Elements(flops),
                &dev,
                || {
                    let w = weights(&dev, &mut rng, dtype, n, kk);
                    let x = f32_tensor(&dev, &mut rng, "x", m * kk);
                    let y = Tensor::zeros(&dev, "y", &[m, n], DType::F32).expect("y");
                    Work::Compute(k.matmul(&x, m, &w, &y).expect("matmul"))
                },
            );
            if let (Some(work), true) = (work, timing) {
                let (time, reps) = median_call(&dev, &work);
                rows.push(Row {
                    kernel: "matmul",
                    dtype: dtype.to_string(),
                    shape,
                    reps,
                    time,
                    bytes: None,
                    flops,
                });
            }
        }
    }

    c.final_summary();
    if let Some(copy) = copy_row {
        print_summary(&dev, &copy, &rows);
    }
}

fn print_summary(dev: &Device, copy: &Row, rows: &[Row]) {
    let copy_gbps = copy.gbps().expect("copy counts bytes");
    println!();
    println!("== kernel summary: {} ==", dev.describe());
    println!(
        "median of {SAMPLES} runs, each one command buffer of `reps` calls, >= {} ms; wall clock \
         from submit to the end of the poll wait",
        MIN_SAMPLE.as_millis()
    );
    println!(
        "copy GB/s counts bytes read + written; matvec GB/s counts weight bytes read in the \
         dtype's layout; `x copy` = GB/s / copy GB/s"
    );
    println!(
        "{:<7} {:<5} {:<16} {:>6} {:>11} {:>8} {:>8} {:>9}",
        "kernel", "dtype", "shape", "reps", "median", "GB/s", "x copy", "GFLOP/s"
    );
    for row in std::iter::once(copy).chain(rows) {
        let (gbps, ratio) = match row.gbps() {
            Some(g) => (format!("{g:.2}"), format!("{:.3}", g / copy_gbps)),
            None => ("-".into(), "-".into()),
        };
        let gflops = if row.flops > 0 {
            format!("{:.2}", row.flops as f64 / row.time.as_secs_f64() / 1e9)
        } else {
            "-".into()
        };
        println!(
            "{:<7} {:<5} {:<16} {:>6} {:>8.3} ms {:>8} {:>8} {:>9}",
            row.kernel,
            row.dtype,
            row.shape,
            row.reps,
            row.time.as_secs_f64() * 1e3,
            gbps,
            ratio,
            gflops
        );
    }
}
