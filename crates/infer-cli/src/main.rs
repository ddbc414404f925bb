//! `infer`: run, chat with and benchmark language models on any wgpu adapter.
//!
//! One module per command: `generate.rs` (`run`, `chat`), `bench.rs`, `devices.rs`,
//! `serve.rs`, `bench_serve.rs` (the load generator), `synth.rs`; `args.rs` holds the
//! shared flags.

mod args;
mod bench;
mod bench_serve;
mod devices;
mod generate;
mod serve;
mod synth;

use anyhow::Result;
use clap::{Parser, Subcommand};

use args::DeviceArgs;
use bench::BenchArgs;
use bench_serve::BenchServeArgs;
use generate::{ChatArgs, RunArgs};
use serve::ServeArgs;

#[derive(Parser)]
#[command(
    name = "infer",
    version,
    about = "Portable GPU inference for language models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every GPU adapter with its backend, type, driver, limits and features.
    Devices(DeviceArgs),
    /// Generate a completion for one prompt, streamed to stdout.
    Run(RunArgs),
    /// An interactive conversation using the model's chat template.
    Chat(ChatArgs),
    /// Measure prefill and decode speed of a model.
    Bench(BenchArgs),
    /// An OpenAI-compatible HTTP server with continuous batching over a paged KV cache.
    Serve(ServeArgs),
    /// Load-test a running `infer serve`: aggregate tok/s and TTFT / inter-token latency
    /// at several concurrency levels.
    BenchServe(BenchServeArgs),
    /// Write a random-weight model of a real shape (Llama-3.2-1B, Llama-3.1-8B, Qwen3-8B)
    /// as a Hugging Face folder, for benchmarks without a download.
    Synth(synth::SynthArgs),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Devices(a) => devices::devices(a),
        Cmd::Run(a) => generate::run(a),
        Cmd::Chat(a) => generate::chat(a),
        Cmd::Bench(a) => bench::bench(a),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::BenchServe(a) => bench_serve::bench_serve(a),
        Cmd::Synth(a) => synth::synth(a),
    }
}
