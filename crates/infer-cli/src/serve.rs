//! `infer serve`: the OpenAI-compatible server.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use infer_kernels::Kernels;

use crate::args::{DeviceArgs, ModelArgs, device, model_spec, parse_quant};

#[derive(Args)]
pub struct ServeArgs {
    /// A Hugging Face folder, a .gguf file, or a Hub id (org/name, org/name:QUANT, org/name/file.gguf)
    /// (any supported architecture). Default: env INFER_MODEL, else the model `cargo xtask
    /// model` fetches.
    #[arg(long, short)]
    pub model: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The model id clients name (default: the model file or folder name).
    #[arg(long = "served-model-name")]
    pub served_model_name: Option<String>,
    /// Re-encode weights on load: q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m (llama.cpp's mix), ... (also f32, f16, bf16, q4_1, q5_0, q5_1).
    #[arg(long)]
    pub quant: Option<String>,
    /// Most positions per sequence; default min(model's, 2048).
    #[arg(long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Most sequences in the running batch.
    #[arg(long = "max-seqs", default_value_t = 64)]
    pub max_seqs: usize,
    /// Most tokens (decode tokens plus prompt chunks) in one batched step.
    #[arg(long = "max-batch-tokens", default_value_t = 128)]
    pub max_batch_tokens: usize,
    /// Positions per KV cache block.
    #[arg(long = "block-size", default_value_t = 16)]
    pub block_size: usize,
    /// Total KV cache size in tokens (all sequences together).
    #[arg(long = "kv-tokens", default_value_t = 16384)]
    pub kv_tokens: usize,
    /// Requests waiting for admission beyond which new ones get 503.
    #[arg(long = "max-waiting", default_value_t = 256)]
    pub max_waiting: usize,
    /// Largest request body in bytes (larger: 413).
    #[arg(long = "max-body-bytes", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// max_tokens of a request that gives none.
    #[arg(long = "default-max-tokens", default_value_t = 256)]
    pub default_max_tokens: usize,
    /// Speculative decoding by prompt lookup for requests that do not set `prompt_lookup`:
    /// draft what followed the last N tokens earlier in the prompt or output.
    #[arg(long = "prompt-lookup")]
    pub prompt_lookup: Option<usize>,
    /// Draft tokens per speculative step (1..=15) for requests that do not set
    /// `draft_tokens`; default: adapted from the acceptance rate.
    #[arg(long = "draft-tokens")]
    pub draft_tokens: Option<usize>,
    /// Require `Authorization: Bearer <KEY>` on every route but /health (401 otherwise).
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// With --api-key: /metrics stays open (for a scraper without the key).
    #[arg(long = "metrics-public")]
    pub metrics_public: bool,
    /// Compute every prompt in full (no sharing of cached prompt blocks).
    #[arg(long = "no-prefix-cache")]
    pub no_prefix_cache: bool,
    /// After SIGTERM / SIGINT, seconds in-flight requests may run before they are ended
    /// (new requests get 503 meanwhile).
    #[arg(long = "shutdown-timeout", default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn serve(a: ServeArgs) -> Result<()> {
    match a.prompt_lookup {
        Some(n) if !(1..=16).contains(&n) => bail!("--prompt-lookup {n}: use 1..=16"),
        None if a.draft_tokens.is_some() => bail!("--draft-tokens needs --prompt-lookup"),
        _ => {}
    }
    if let Some(k) = a.draft_tokens
        && !(1..=15).contains(&k)
    {
        bail!("--draft-tokens {k}: use 1..=15 (omit it to adapt k)");
    }
    for (flag, v) in [
        ("--max-seqs", a.max_seqs),
        ("--max-batch-tokens", a.max_batch_tokens),
        ("--block-size", a.block_size),
        ("--kv-tokens", a.kv_tokens),
        ("--max-body-bytes", a.max_body_bytes),
        ("--default-max-tokens", a.default_max_tokens),
    ] {
        if v == 0 {
            bail!("{flag} 0: a server needs at least 1");
        }
    }
    if !(a.shutdown_timeout.is_finite() && a.shutdown_timeout >= 0.0) {
        bail!("--shutdown-timeout {}: seconds, >= 0", a.shutdown_timeout);
    }
    if a.api_key.as_deref() == Some("") {
        bail!("--api-key: an empty key would let anyone in");
    }
    if a.metrics_public && a.api_key.is_none() {
        bail!("--metrics-public only means something with --api-key");
    }
    if a.ctx_size == Some(0) {
        bail!("--ctx-size 0: a sequence needs at least 1 position");
    }
    if a.kv_tokens < a.block_size {
        bail!(
            "--kv-tokens {} is less than one block of --block-size {}",
            a.kv_tokens,
            a.block_size
        );
    }
    let spec = model_spec(&ModelArgs {
        model: a.model.clone(),
        quant: None,
        ctx_size: None,
        max_batch: 1,
        device: a.device.clone(),
    })?;
    let dev = device(&a.device)?;
    eprintln!("infer serve: adapter {}", dev.describe());
    let kernels = Arc::new(Kernels::new(dev));
    let bc = infer_serve::BatchConfig {
        max_rows: a.max_batch_tokens.max(a.max_seqs),
        max_seqs: a.max_seqs,
        block_size: a.block_size,
        n_blocks: a.kv_tokens.div_ceil(a.block_size),
        context: a.ctx_size.unwrap_or(2048),
    };
    let (model, tok) = infer_serve::load_batched(&spec, kernels, parse_quant(&a.quant)?, bc)
        .with_context(|| format!("loading {spec}"))?;
    let name = a
        .served_model_name
        .clone()
        .unwrap_or_else(|| served_name(&spec));
    eprintln!(
        "infer serve: {name}, context {}, {} KV blocks of {} ({:.1} MB), up to {} sequences, {} tokens per step",
        model.bc.context,
        model.bc.n_blocks,
        model.bc.block_size,
        (model.bc.n_blocks * model.block_bytes()) as f64 / 1e6,
        model.bc.max_seqs,
        model.bc.max_rows
    );
    let tok = Arc::new(tok);
    let metrics = Arc::new(infer_serve::Metrics::default());
    let engine = infer_serve::Engine::spawn(
        model,
        tok.clone(),
        metrics,
        a.max_waiting,
        !a.no_prefix_cache,
    );
    infer_serve::serve(
        engine,
        tok,
        infer_serve::ServeOptions {
            host: a.host,
            port: a.port,
            model_name: name,
            max_body: a.max_body_bytes,
            default_max_tokens: a.default_max_tokens,
            prompt_lookup: a.prompt_lookup,
            draft_tokens: a.draft_tokens,
            shutdown_timeout: std::time::Duration::from_secs_f64(a.shutdown_timeout),
            api_key: a.api_key.clone(),
            metrics_public: a.metrics_public,
        },
    )?;
    Ok(())
}

/// The model id `/v1/models` reports when `--served-model-name` is not given: a Hub id as
/// written (`org/name:Q4_K_M`, what a client of llama-server or vLLM would send back), a
/// local file or folder by its name.
fn served_name(spec: &str) -> String {
    let p = std::path::Path::new(spec.trim_end_matches('/'));
    if !p.exists() && infer_models::hub::HubId::parse(spec).is_some() {
        return spec.to_string();
    }
    p.file_name()
        .map_or(spec.to_string(), |f| f.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::served_name;

    #[test]
    fn hub_ids_are_served_as_written_local_paths_by_name() {
        assert_eq!(served_name("org/name:Q4_K_M"), "org/name:Q4_K_M");
        assert_eq!(served_name("org/name"), "org/name");
        assert_eq!(
            served_name("org/name/m-Q4_K_M.gguf"),
            "org/name/m-Q4_K_M.gguf"
        );
        let here = env!("CARGO_MANIFEST_DIR");
        assert_eq!(served_name(&format!("{here}/src/")), "src");
    }
}
