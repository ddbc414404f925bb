//! The flags several commands share (adapter, model, sampling, speculation) and
//! loading a model from them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use infer_kernels::Kernels;
use infer_models::{ChatMessage, LoadOptions, Model, Quant, Tokenizer};
use infer_sampling::{
    DraftK, DraftModel, Drafter, PromptLookup, SamplingParams, check_draft_tokenizer,
};
use infer_tensor::{Device, DeviceOptions};

/// The model fetched by `cargo xtask model`, used when no `--model` is given.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Args, Clone)]
pub struct DeviceArgs {
    /// vulkan, metal, dx12 or gl (default: env INFER_BACKEND, else every backend).
    #[arg(long)]
    pub backend: Option<String>,
    /// Pick the adapter whose name contains this (default: env INFER_ADAPTER, else the best).
    #[arg(long)]
    pub adapter: Option<String>,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A Hugging Face folder, a .gguf file, or a Hub id: org/name, org/name:QUANT, org/name/file.gguf.
    /// Default: env INFER_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf
    /// (fetched by `cargo xtask model`).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Re-encode weights on load: q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m (llama.cpp's mix), ... (also f32, f16, bf16, q4_1, q5_0, q5_1).
    #[arg(long)]
    pub quant: Option<String>,
    /// Context length (KV cache size); default min(model's, 4096).
    #[arg(long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Most prompt tokens per prefill step.
    #[arg(long, default_value_t = 256)]
    pub max_batch: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long = "max-tokens", short = 'n', default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 is greedy (the default, reproducible); > 0 samples.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    #[arg(long = "top-k")]
    pub top_k: Option<usize>,
    #[arg(long = "top-p", default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(
        long = "presence-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub presence_penalty: f32,
    #[arg(
        long = "frequency-penalty",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub frequency_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past the end-of-sequence token.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
}

#[derive(Args, Clone, Default)]
pub struct SpecArgs {
    /// Speculative decoding with this draft model (same tokenizer as the target, smaller).
    #[arg(long = "draft-model")]
    pub draft_model: Option<String>,
    /// Re-encode the draft's weights on load (e.g. q4_0).
    #[arg(long = "draft-quant")]
    pub draft_quant: Option<String>,
    /// Tokens drafted per step (1..=15); default: chosen each step from the acceptance rate and the adapter's cost of a verification row.
    #[arg(long = "draft-tokens")]
    pub draft_tokens: Option<usize>,
    /// Speculative decoding by prompt lookup: draft what followed the last N tokens earlier
    /// in the prompt or output (no draft model).
    #[arg(long = "prompt-lookup")]
    pub prompt_lookup: Option<usize>,
}

impl SpecArgs {
    pub fn k(&self) -> DraftK {
        self.draft_tokens.map_or(DraftK::Adaptive, DraftK::Fixed)
    }

    /// The drafter these flags ask for, if any.
    pub fn drafter(
        &self,
        model: &ModelArgs,
        kernels: &Arc<Kernels>,
        target: &dyn Model,
        tok: &Tokenizer,
    ) -> Result<Option<Box<dyn Drafter>>> {
        if let Some(k) = self.draft_tokens
            && !(1..=15).contains(&k)
        {
            bail!("--draft-tokens {k}: use 1..=15 (omit it to adapt k)");
        }
        if let Some(n) = self.prompt_lookup
            && n > 16
        {
            bail!("--prompt-lookup {n}: the n-gram length is 1..=16");
        }
        match (&self.draft_model, self.prompt_lookup) {
            (Some(_), Some(_)) => bail!("--draft-model and --prompt-lookup exclude each other"),
            (None, Some(0)) => bail!("--prompt-lookup 0: the n-gram needs at least 1 token"),
            (None, Some(n)) => Ok(Some(Box::new(PromptLookup::new(n)))),
            (Some(spec), None) => {
                let opts = LoadOptions {
                    quant: parse_quant(&self.draft_quant)?,
                    context: Some(target.capacity()),
                    max_batch: model.max_batch.max(1),
                    progress: false,
                    chain: None,
                };
                let (draft, dtok) = infer_models::load(spec, kernels.clone(), &opts)
                    .with_context(|| format!("loading the draft model {spec}"))?;
                check_draft_tokenizer(tok, &dtok)
                    .with_context(|| format!("--draft-model {spec}"))?;
                let d = DraftModel::new(draft, target.config().vocab_size)
                    .with_context(|| format!("--draft-model {spec}"))?;
                Ok(Some(Box::new(d)))
            }
            (None, None) => {
                if self.draft_tokens.is_some() {
                    bail!("--draft-tokens needs --draft-model or --prompt-lookup");
                }
                Ok(None)
            }
        }
    }
}

pub fn parse_quant(q: &Option<String>) -> Result<Option<Quant>> {
    Ok(match q {
        None => None,
        Some(q) => Some(
            Quant::parse(q)
                .with_context(|| format!("--quant {q}: expected one of {}", Quant::NAMES))?,
        ),
    })
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            ..Default::default()
        }
    }
}

pub fn device(args: &DeviceArgs) -> Result<Arc<Device>> {
    let opts = DeviceOptions {
        backend: args.backend.clone(),
        adapter: args.adapter.clone(),
    }
    .with_env();
    Ok(Arc::new(Device::new(&opts)?))
}

pub fn model_spec(args: &ModelArgs) -> Result<String> {
    if let Some(m) = &args.model {
        return Ok(m.clone());
    }
    if let Ok(m) = std::env::var("INFER_MODEL")
        && !m.is_empty()
    {
        return Ok(m);
    }
    let candidates = [
        PathBuf::from(DEFAULT_MODEL),
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(DEFAULT_MODEL),
    ];
    for c in &candidates {
        if c.exists() {
            return Ok(c.to_string_lossy().into());
        }
    }
    bail!(
        "no --model given and the default model {DEFAULT_MODEL} is missing: run `cargo xtask model` to fetch it"
    )
}

pub type Loaded = (Box<dyn Model>, Tokenizer, Arc<Device>, Arc<Kernels>);

pub fn load(args: &ModelArgs, progress: bool) -> Result<Loaded> {
    if args.ctx_size == Some(0) {
        bail!("--ctx-size 0: the KV cache needs at least 1 position");
    }
    if args.max_batch == 0 {
        bail!("--max-batch 0: a prefill step needs at least 1 token");
    }
    let dev = device(&args.device)?;
    let kernels = Arc::new(Kernels::new(dev.clone()));
    let quant = parse_quant(&args.quant)?;
    let opts = LoadOptions {
        quant,
        context: args.ctx_size,
        max_batch: args.max_batch,
        progress,
        chain: None,
    };
    let spec = model_spec(args)?;
    let (model, tok) = infer_models::load(&spec, kernels.clone(), &opts)
        .with_context(|| format!("loading {spec}"))?;
    Ok((model, tok, dev, kernels))
}

pub fn encode_prompt(
    tok: &Tokenizer,
    prompt: &str,
    chat: bool,
    system: Option<&str>,
) -> Result<Vec<u32>> {
    if chat {
        let mut msgs = Vec::new();
        if let Some(s) = system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.push(ChatMessage::new("user", prompt));
        let text = tok.apply_chat_template(&msgs, true)?;
        Ok(tok.encode(&text, false)?)
    } else {
        Ok(tok.encode(prompt, true)?)
    }
}
