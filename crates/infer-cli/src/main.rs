//! `infer`: run, chat with and benchmark language models on any wgpu adapter.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use infer_kernels::Kernels;
use infer_models::{ChatMessage, LoadOptions, MAX_TOPK, Model, Output, StepOut, Tokenizer};
use infer_sampling::{
    DraftK, DraftModel, Drafter, Generation, PromptLookup, SamplingParams, check_draft_tokenizer,
    generate, generate_speculative, top_k_candidates,
};
use infer_tensor::{DType, Device, DeviceOptions, Tensor};

/// The model fetched by `cargo xtask model`, used when no `--model` is given.
const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

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
}

#[derive(Args, Clone)]
struct DeviceArgs {
    /// vulkan, metal, dx12 or gl (default: env INFER_BACKEND, else every backend).
    #[arg(long)]
    backend: Option<String>,
    /// Pick the adapter whose name contains this (default: env INFER_ADAPTER, else the best).
    #[arg(long)]
    adapter: Option<String>,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A Hugging Face folder, a .gguf file, or a repo id in the local Hugging Face cache.
    /// Default: env INFER_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf
    /// (fetched by `cargo xtask model`).
    #[arg(long, short)]
    model: Option<String>,
    /// Re-encode weights on load: q8_0 or q4_0 (also f16, q4_1).
    #[arg(long)]
    quant: Option<String>,
    /// Context length (KV cache size); default min(model's, 4096).
    #[arg(long = "ctx-size")]
    ctx_size: Option<usize>,
    /// Most prompt tokens per prefill step.
    #[arg(long, default_value_t = 256)]
    max_batch: usize,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long = "max-tokens", short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// 0 is greedy (the default, reproducible); > 0 samples.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long = "top-k")]
    top_k: Option<usize>,
    #[arg(long = "top-p", default_value_t = 1.0)]
    top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.0)]
    min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    frequency_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past the end-of-sequence token.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
}

#[derive(Args, Clone, Default)]
struct SpecArgs {
    /// Speculative decoding with this draft model (same tokenizer as the target, smaller).
    #[arg(long = "draft-model")]
    draft_model: Option<String>,
    /// Re-encode the draft's weights on load (e.g. q4_0).
    #[arg(long = "draft-quant")]
    draft_quant: Option<String>,
    /// Tokens drafted per step (1..=15); default: chosen each step from the acceptance rate and the adapter's cost of a verification row.
    #[arg(long = "draft-tokens")]
    draft_tokens: Option<usize>,
    /// Speculative decoding by prompt lookup: draft what followed the last N tokens earlier
    /// in the prompt or output (no draft model).
    #[arg(long = "prompt-lookup")]
    prompt_lookup: Option<usize>,
}

impl SpecArgs {
    fn k(&self) -> DraftK {
        self.draft_tokens.map_or(DraftK::Adaptive, DraftK::Fixed)
    }

    /// The drafter these flags ask for, if any.
    fn drafter(
        &self,
        model: &ModelArgs,
        kernels: &Arc<Kernels>,
        target: &dyn Model,
        tok: &Tokenizer,
    ) -> Result<Option<Box<dyn Drafter>>> {
        if self.draft_tokens == Some(0) {
            bail!("--draft-tokens 0 drafts nothing (omit it to adapt k)");
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

/// Plain or speculative generation.
fn gen_with(
    model: &mut dyn Model,
    drafter: Option<&mut (dyn Drafter + '_)>,
    k: DraftK,
    tok: &Tokenizer,
    ids: &[u32],
    params: &SamplingParams,
    on_text: impl FnMut(&str),
) -> Result<Generation> {
    Ok(match drafter {
        Some(d) => generate_speculative(model, d, k, tok, ids, params, on_text)?,
        None => generate(model, tok, ids, params, on_text)?,
    })
}

fn parse_quant(q: &Option<String>) -> Result<Option<DType>> {
    Ok(match q {
        None => None,
        Some(q) => Some(DType::parse(q).with_context(|| {
            format!("--quant {q}: expected one of q8_0, q4_0, q4_1, f16, bf16, f32")
        })?),
    })
}

impl SamplingArgs {
    fn params(&self) -> SamplingParams {
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

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    spec: SpecArgs,
    /// The prompt.
    #[arg(long, short)]
    prompt: String,
    /// Wrap the prompt as a user message with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message (with --chat).
    #[arg(long)]
    system: Option<String>,
    /// Print one JSON object (ids, text, stats) on the last line instead of streaming.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    spec: SpecArgs,
    /// A system message.
    #[arg(long)]
    system: Option<String>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt lengths to measure prefill at.
    #[arg(long = "prompt-tokens", default_values_t = [128usize, 512])]
    prompt_tokens: Vec<usize>,
    /// Tokens to decode per run.
    #[arg(long = "gen-tokens", default_value_t = 64)]
    gen_tokens: usize,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// With --draft-model / --prompt-lookup: decode tok/s with and without the drafter on
    /// one prompt (this file's text, default a built-in "repeat this paragraph" request),
    /// greedy, with the acceptance rate.
    #[command(flatten)]
    spec: SpecArgs,
    #[arg(long = "prompt-file")]
    prompt_file: Option<PathBuf>,
    /// Also compare top-k sampling with the top k selected on the GPU against reading the
    /// whole logits vector back (decode tok/s, temperature 0.8, top-k 40).
    #[arg(long)]
    sampling: bool,
}

fn device(args: &DeviceArgs) -> Result<Arc<Device>> {
    let opts = DeviceOptions {
        backend: args.backend.clone(),
        adapter: args.adapter.clone(),
    }
    .with_env();
    Ok(Arc::new(Device::new(&opts)?))
}

fn model_spec(args: &ModelArgs) -> Result<String> {
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

type Loaded = (Box<dyn Model>, Tokenizer, Arc<Device>, Arc<Kernels>);

fn load(args: &ModelArgs, progress: bool) -> Result<Loaded> {
    let dev = device(&args.device)?;
    let kernels = Arc::new(Kernels::new(dev.clone()));
    let quant = parse_quant(&args.quant)?;
    let opts = LoadOptions {
        quant,
        context: args.ctx_size,
        max_batch: args.max_batch.max(1),
        progress,
        chain: None,
    };
    let spec = model_spec(args)?;
    let (model, tok) = infer_models::load(&spec, kernels.clone(), &opts)
        .with_context(|| format!("loading {spec}"))?;
    Ok((model, tok, dev, kernels))
}

fn encode_prompt(
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

fn json_line(g: &Generation) -> serde_json::Value {
    let s = &g.stats;
    serde_json::json!({
        "prompt_token_ids": g.prompt_token_ids,
        "token_ids": g.token_ids,
        "text": g.text,
        "finish_reason": g.finish_reason.as_str(),
        "stats": {
            "prompt_tokens": s.prompt_tokens,
            "generated_tokens": s.generated_tokens,
            "prefill_ms": s.prefill_ms,
            "decode_ms": s.decode_ms,
            "ttft_ms": s.ttft_ms,
            "prefill_tok_s": s.prefill_tok_s(),
            "decode_tok_s": s.decode_tok_s(),
            "draft_tokens": s.draft_tokens,
            "accepted_tokens": s.accepted_tokens,
            "acceptance_rate": s.acceptance_rate(),
        }
    })
}

fn run(args: RunArgs) -> Result<()> {
    let params = args.sampling.params();
    let (mut model, tok, _dev, kernels) = load(&args.model, !args.json)?;
    params
        .validate(model.config().vocab_size)
        .context("sampling parameters")?;
    let mut drafter = args
        .spec
        .drafter(&args.model, &kernels, model.as_ref(), &tok)?;
    let ids = encode_prompt(&tok, &args.prompt, args.chat, args.system.as_deref())?;
    let mut out = std::io::stdout().lock();
    let json = args.json;
    let g = gen_with(
        model.as_mut(),
        drafter.as_deref_mut(),
        args.spec.k(),
        &tok,
        &ids,
        &params,
        |s| {
            if !json {
                let _ = out.write_all(s.as_bytes());
                let _ = out.flush();
            }
        },
    )?;
    if json {
        writeln!(out, "{}", json_line(&g))?;
    } else {
        writeln!(out)?;
        eprintln!(
            "[{} prompt tokens, {:.1} tok/s prefill; {} generated, {:.1} tok/s decode; {}]",
            g.stats.prompt_tokens,
            g.stats.prefill_tok_s(),
            g.stats.generated_tokens,
            g.stats.decode_tok_s(),
            g.finish_reason.as_str()
        );
        if g.stats.draft_tokens > 0 {
            eprintln!(
                "[drafted {}, accepted {} ({:.0}%)]",
                g.stats.draft_tokens,
                g.stats.accepted_tokens,
                100.0 * g.stats.acceptance_rate()
            );
        }
    }
    Ok(())
}

fn chat(args: ChatArgs) -> Result<()> {
    let params = args.sampling.params();
    let (mut model, tok, dev, kernels) = load(&args.model, true)?;
    params.validate(model.config().vocab_size)?;
    let mut drafter = args
        .spec
        .drafter(&args.model, &kernels, model.as_ref(), &tok)?;
    eprintln!(
        "infer chat on {} — an empty line or /exit quits",
        dev.describe()
    );
    let mut history: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &args.system {
        history.push(ChatMessage::new("system", s));
    }
    // Ids held in the KV cache; a new turn reuses the common prefix.
    let mut cached: Vec<u32> = Vec::new();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() || line == "/exit" {
            break;
        }
        history.push(ChatMessage::new("user", line));
        let text = tok.apply_chat_template(&history, true)?;
        let ids = tok.encode(&text, false)?;
        let common = cached.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        let mut common = common.min(ids.len() - 1);
        if drafter.is_some() {
            // Speculative generation syncs the draft from the whole context.
            common = 0;
        }
        model.truncate(common);
        let g = match gen_with(
            model.as_mut(),
            drafter.as_deref_mut(),
            args.spec.k(),
            &tok,
            &ids[common..],
            &params,
            |s| {
                let _ = out.write_all(s.as_bytes());
                let _ = out.flush();
            },
        ) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("\nerror: {e}");
                history.pop();
                model.truncate(0);
                cached.clear();
                continue;
            }
        };
        writeln!(out)?;
        cached = ids;
        cached.extend(&g.token_ids);
        cached.truncate(model.position());
        history.push(ChatMessage::new("assistant", g.text.trim()));
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(args: BenchArgs) -> Result<()> {
    let t_load = Instant::now();
    let (mut model, tok, dev, kernels) = load(&args.model, false)?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;
    let runs = args.runs.max(1);
    let mut results = serde_json::Map::new();
    results.insert("adapter".into(), dev.describe().into());
    results.insert("backend".into(), format!("{:?}", dev.info.backend).into());
    let vocab = model.config().vocab_size as u32;
    // Deterministic filler prompt tokens (avoiding special ids at the start of the vocabulary).
    let filler = |n: usize| -> Vec<u32> {
        (0..n as u32)
            .map(|i| 100 + (i * 7919) % (vocab - 200))
            .collect()
    };
    let params = SamplingParams {
        max_tokens: args.gen_tokens,
        ignore_eos: true,
        ..Default::default()
    };
    results.insert("load_ms".into(), load_ms.into());
    results.insert(
        "gpu_tensor_bytes".into(),
        infer_tensor::tensor::created_bytes().into(),
    );
    let (wbytes, welems) = infer_tensor::tensor::uploaded_weights();
    let cfg = model.config();
    let embed = (cfg.vocab_size * cfg.hidden) as u64;
    // Embedding rows are gathered, not multiplied; an untied output layer is a matrix too.
    let non_embedding = welems.saturating_sub(embed * if cfg.tie_embeddings { 1 } else { 2 });
    results.insert("weight_bytes".into(), wbytes.into());
    results.insert("non_embedding_params".into(), non_embedding.into());
    // Cold: the first prompt in this process, so its time to first token includes building
    // every pipeline (Mesa or the driver may still have them in their own disk caches).
    let cold_n = args
        .prompt_tokens
        .first()
        .copied()
        .unwrap_or(128)
        .min(model.capacity() - 2);
    model.truncate(0);
    let cold = generate(
        model.as_mut(),
        &tok,
        &filler(cold_n),
        &SamplingParams {
            max_tokens: 2,
            ignore_eos: true,
            ..Default::default()
        },
        |_| {},
    )?;
    results.insert("cold_ttft_ms".into(), cold.stats.ttft_ms.into());
    results.insert("cold_prompt_tokens".into(), cold_n.into());
    if !args.json {
        println!(
            "load {load_ms:.0} ms; cold TTFT {:.1} ms ({cold_n} prompt tokens, pipelines built); {:.1} MiB of GPU tensors",
            cold.stats.ttft_ms,
            infer_tensor::tensor::created_bytes() as f64 / (1 << 20) as f64
        );
    }
    for &n in &args.prompt_tokens {
        if n + args.gen_tokens > model.capacity() {
            eprintln!(
                "skipping {n} prompt tokens: over the context of {}",
                model.capacity()
            );
            continue;
        }
        let (mut pre, mut dec, mut ttft) = (vec![], vec![], vec![]);
        for _ in 0..runs {
            model.truncate(0);
            let g = generate(model.as_mut(), &tok, &filler(n), &params, |_| {})?;
            pre.push(g.stats.prefill_tok_s());
            dec.push(g.stats.decode_tok_s());
            ttft.push(g.stats.ttft_ms);
        }
        let (p, d, t) = (median(&mut pre), median(&mut dec), median(&mut ttft));
        if !args.json {
            println!(
                "{:>5} prompt tokens: prefill {p:8.1} tok/s, warm TTFT {t:8.1} ms, decode {d:7.1} tok/s (median of {runs})",
                n
            );
        }
        results.insert(
            format!("prompt_{n}"),
            serde_json::json!({"prefill_tok_s": p, "decode_tok_s": d, "ttft_ms": t, "runs": runs}),
        );
    }
    if args.sampling {
        bench_sampling(
            model.as_mut(),
            &tok,
            &kernels,
            &args,
            &filler(16),
            &mut results,
        )?;
    }
    let mut drafter = args
        .spec
        .drafter(&args.model, &kernels, model.as_ref(), &tok)?;
    if let Some(d) = drafter.as_deref_mut() {
        bench_spec(model.as_mut(), d, &tok, &args, &mut results)?;
    }
    if args.json {
        println!("{}", serde_json::Value::Object(results));
    } else {
        println!("adapter: {}", dev.describe());
    }
    Ok(())
}

/// A prompt grounded in its input: the model is asked to repeat a paragraph.
const REPEAT_PROMPT: &str = "Repeat the following paragraph exactly, word for word.\n\n\
The lighthouse keeper climbed the spiral stairs every evening at dusk. He wound the great \
clockwork, polished the brass lamp and lit the wick, then sat by the window with a cup of \
tea, watching the beam sweep across the dark water. Ships passed safely through the narrow \
channel, and the keeper wrote their names in a worn leather book that his grandfather had \
started sixty years before.";

/// Top-k sampling: the k best selected on the GPU vs the whole logits vector read back.
/// First the selection step alone on one real logits vector (GPU top-k and a read of the k
/// pairs, in one submission, vs a read of every logit and a host partial selection), then
/// seeded decode tok/s through each path in the same run, with the tokens compared.
fn bench_sampling(
    model: &mut dyn Model,
    tok: &Tokenizer,
    kernels: &Kernels,
    args: &BenchArgs,
    prompt: &[u32],
    results: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let mut out = serde_json::Map::new();
    let dev = &kernels.dev;
    let v = model.config().vocab_size;
    model.truncate(0);
    let StepOut::Logits(logits) = model.forward(prompt, Output::Logits)? else {
        bail!("a logits step returned no logits");
    };
    model.truncate(0);
    let x = Tensor::from_f32(dev, "bench_logits", &[v], &logits)?;
    let reps = 20 * args.runs.max(1);
    for k in [40, 256].map(|k: usize| k.min(v).min(MAX_TOPK)) {
        let scratch = Tensor::zeros(
            dev,
            "bench_topk_scratch",
            &[Kernels::topk_scratch_len(v, k)],
            DType::U32,
        )?;
        let pairs = Tensor::zeros(dev, "bench_topk", &[2 * k], DType::U32)?;
        let select = kernels.topk(&x, 0, v, k, &scratch, &pairs)?;
        let (mut gpu, mut read, mut host) = (vec![], vec![], vec![]);
        let (mut a, mut b) = (vec![], vec![]);
        // One untimed round builds the pipeline and warms the pool's staging buffers.
        for rep in 0..=reps {
            let t = Instant::now();
            a = kernels.topk_read(&select, &pairs, k)?;
            let t_gpu = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let all = x.read_f32(dev)?;
            let t_read = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            b = top_k_candidates(&all, k);
            let t_host = t.elapsed().as_secs_f64() * 1e3;
            if rep > 0 {
                gpu.push(t_gpu);
                read.push(t_read);
                host.push(t_host);
            }
        }
        let (g, r, h) = (median(&mut gpu), median(&mut read), median(&mut host));
        let same = a == b;
        if !args.json {
            println!(
                "select top-{k} of {v} logits (median of {reps}): GPU top-k + read {k} pairs \
                 {g:.3} ms; read all logits + host select {:.3} ms ({r:.3} + {h:.3}); \
                 GPU {:.2}x faster; same candidates: {same}",
                r + h,
                (r + h) / g.max(1e-9),
            );
        }
        out.insert(
            format!("select_top{k}"),
            serde_json::json!({
                "gpu_topk_read_ms": g,
                "read_all_ms": r,
                "host_select_ms": h,
                "readback_select_ms": r + h,
                "speedup": (r + h) / g.max(1e-9),
                "same_candidates": same,
            }),
        );
    }
    let mut ids = vec![];
    let mut tok_s = [0.0; 2];
    for (i, (name, gpu)) in [("gpu_topk", true), ("full_readback", false)]
        .into_iter()
        .enumerate()
    {
        let params = SamplingParams {
            temperature: 0.8,
            top_k: Some(40),
            seed: 1,
            max_tokens: args.gen_tokens,
            ignore_eos: true,
            gpu_topk: gpu,
            ..Default::default()
        };
        let mut dec = vec![];
        for _ in 0..args.runs.max(1) {
            model.truncate(0);
            let g = generate(model, tok, prompt, &params, |_| {})?;
            dec.push(g.stats.decode_tok_s());
            ids = g.token_ids;
        }
        tok_s[i] = median(&mut dec);
        if !args.json {
            println!(
                "sampling (temperature 0.8, top-k 40), {name:>13}: decode {:7.1} tok/s",
                tok_s[i]
            );
        }
        out.insert(format!("{name}_decode_tok_s"), tok_s[i].into());
        out.insert(format!("{name}_token_ids"), ids.clone().into());
    }
    let same = out["gpu_topk_token_ids"] == out["full_readback_token_ids"];
    let speedup = tok_s[0] / tok_s[1].max(1e-9);
    if !args.json {
        println!(
            "sampling: GPU top-k {speedup:.2}x the full read-back; same tokens from both paths: {same}"
        );
    }
    out.insert("decode_speedup".into(), speedup.into());
    out.insert("same_tokens".into(), same.into());
    results.insert("sampling_topk".into(), out.into());
    Ok(())
}

/// Greedy decode tok/s without and with the drafter on one prompt, with the acceptance rate.
fn bench_spec(
    model: &mut dyn Model,
    drafter: &mut dyn Drafter,
    tok: &Tokenizer,
    args: &BenchArgs,
    results: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let text = match &args.prompt_file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => REPEAT_PROMPT.to_string(),
    };
    let ids = encode_prompt(tok, &text, tok.has_chat_template(), None)?;
    let params = SamplingParams {
        max_tokens: args.gen_tokens,
        ..Default::default()
    };
    let k = args.spec.k();
    let (mut plain, mut spec) = (vec![], vec![]);
    let (mut plain_ids, mut spec_ids) = (vec![], vec![]);
    let mut last = None;
    for _ in 0..args.runs.max(1) {
        model.truncate(0);
        let g = generate(model, tok, &ids, &params, |_| {})?;
        plain.push(g.stats.decode_tok_s());
        plain_ids = g.token_ids;
        model.truncate(0);
        let g = generate_speculative(model, drafter, k, tok, &ids, &params, |_| {})?;
        spec.push(g.stats.decode_tok_s());
        spec_ids = g.token_ids.clone();
        last = Some(g);
    }
    let g = last.expect("at least one run");
    let (p, s) = (median(&mut plain), median(&mut spec));
    let same = plain_ids == spec_ids;
    let name = drafter.name();
    if !args.json {
        println!(
            "speculative ({name}, k {k:?}), {} prompt tokens, {} generated: plain {p:.1} tok/s, \
             speculative {s:.1} tok/s ({:.2}x); drafted {}, accepted {} ({:.0}%); same tokens: {same}",
            ids.len(),
            g.stats.generated_tokens,
            s / p.max(1e-9),
            g.stats.draft_tokens,
            g.stats.accepted_tokens,
            100.0 * g.stats.acceptance_rate(),
        );
    }
    results.insert(
        "speculative".into(),
        serde_json::json!({
            "drafter": name,
            "draft_k": format!("{k:?}"),
            "prompt_tokens": ids.len(),
            "generated_tokens": g.stats.generated_tokens,
            "plain_decode_tok_s": p,
            "speculative_decode_tok_s": s,
            "speedup": s / p.max(1e-9),
            "draft_tokens": g.stats.draft_tokens,
            "accepted_tokens": g.stats.accepted_tokens,
            "acceptance_rate": g.stats.acceptance_rate(),
            "same_tokens": same,
        }),
    );
    Ok(())
}

fn devices(args: DeviceArgs) -> Result<()> {
    let opts = DeviceOptions {
        backend: args.backend.clone(),
        adapter: args.adapter.clone(),
    }
    .with_env();
    let list = infer_tensor::device::enumerate(&opts)?;
    if list.is_empty() {
        bail!(
            "no GPU adapter found (on a machine without a GPU, install Mesa's lavapipe: mesa-vulkan-drivers)"
        );
    }
    let chosen = Device::new(&opts).ok().map(|d| d.info.clone());
    for (i, a) in list.iter().enumerate() {
        let info = &a.info;
        let mark = if chosen
            .as_ref()
            .is_some_and(|c| c.name == info.name && c.backend == info.backend)
        {
            " (default)"
        } else {
            ""
        };
        println!("[{i}] {}{mark}", info.name);
        println!(
            "    backend: {:?}   type: {:?}",
            info.backend, info.device_type
        );
        println!("    driver: {} {}", info.driver, info.driver_info);
        let l = &a.limits;
        println!(
            "    limits: max_storage_buffer_binding_size {} MiB, max_buffer_size {} MiB, \
             workgroup storage {} KiB, invocations/workgroup {}, workgroups/dim {}, \
             storage buffers/stage {}",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
        );
        let f = a.features;
        let names: Vec<&str> = [
            (wgpu_features::SHADER_F16, "SHADER_F16"),
            (wgpu_features::SUBGROUP, "SUBGROUP"),
            (wgpu_features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
            (wgpu_features::PIPELINE_CACHE, "PIPELINE_CACHE"),
            (wgpu_features::SHADER_INT64, "SHADER_INT64"),
        ]
        .iter()
        .filter(|(bit, _)| f.contains(*bit))
        .map(|(_, n)| *n)
        .collect();
        println!(
            "    features: {}   subgroup size {}..{}",
            names.join(" "),
            info.subgroup_min_size,
            info.subgroup_max_size
        );
    }
    Ok(())
}

use infer_tensor::wgpu::Features as wgpu_features;

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Devices(a) => devices(a),
        Cmd::Run(a) => run(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Serve(a) => serve(a),
        Cmd::BenchServe(a) => bench_serve(a),
    }
}

#[derive(Args)]
struct ServeArgs {
    /// A Hugging Face folder, a .gguf file, or a repo id in the local Hugging Face cache
    /// (any supported architecture). Default: env INFER_MODEL, else the model `cargo xtask
    /// model` fetches.
    #[arg(long, short)]
    model: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model id clients name (default: the model file or folder name).
    #[arg(long = "served-model-name")]
    served_model_name: Option<String>,
    /// Re-encode weights on load: q8_0 or q4_0 (also f16, q4_1).
    #[arg(long)]
    quant: Option<String>,
    /// Most positions per sequence; default min(model's, 2048).
    #[arg(long = "ctx-size")]
    ctx_size: Option<usize>,
    /// Most sequences in the running batch.
    #[arg(long = "max-seqs", default_value_t = 64)]
    max_seqs: usize,
    /// Most tokens (decode tokens plus prompt chunks) in one batched step.
    #[arg(long = "max-batch-tokens", default_value_t = 128)]
    max_batch_tokens: usize,
    /// Positions per KV cache block.
    #[arg(long = "block-size", default_value_t = 16)]
    block_size: usize,
    /// Total KV cache size in tokens (all sequences together).
    #[arg(long = "kv-tokens", default_value_t = 16384)]
    kv_tokens: usize,
    /// Requests waiting for admission beyond which new ones get 503.
    #[arg(long = "max-waiting", default_value_t = 256)]
    max_waiting: usize,
    /// Largest request body in bytes (larger: 413).
    #[arg(long = "max-body-bytes", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// max_tokens of a request that gives none.
    #[arg(long = "default-max-tokens", default_value_t = 256)]
    default_max_tokens: usize,
    /// Speculative decoding by prompt lookup for requests that do not set `prompt_lookup`:
    /// draft what followed the last N tokens earlier in the prompt or output.
    #[arg(long = "prompt-lookup")]
    prompt_lookup: Option<usize>,
    /// Draft tokens per speculative step (1..=15) for requests that do not set
    /// `draft_tokens`; default: adapted from the acceptance rate.
    #[arg(long = "draft-tokens")]
    draft_tokens: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

fn serve(a: ServeArgs) -> Result<()> {
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
        max_seqs: a.max_seqs.max(1),
        block_size: a.block_size.max(1),
        n_blocks: a.kv_tokens.div_ceil(a.block_size.max(1)).max(1),
        context: a.ctx_size.unwrap_or(2048),
    };
    let (model, tok) = infer_serve::load_batched(&spec, kernels, parse_quant(&a.quant)?, bc)
        .with_context(|| format!("loading {spec}"))?;
    let name = a.served_model_name.clone().unwrap_or_else(|| {
        let p = std::path::Path::new(spec.trim_end_matches('/'));
        p.file_name()
            .map_or(spec.clone(), |f| f.to_string_lossy().into_owned())
    });
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
    let engine = infer_serve::Engine::spawn(model, tok.clone(), metrics, a.max_waiting);
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
        },
    )?;
    Ok(())
}

#[derive(Args)]
struct BenchServeArgs {
    /// host:port of a running `infer serve` (ignored with --spawn).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The model id the server serves (see GET /v1/models); with --spawn, the model's
    /// file or folder name.
    #[arg(long)]
    model: Option<String>,
    /// Start `infer serve --model PATH` on a free port on 127.0.0.1 for the run (stopped
    /// by its process id afterwards). Default without --addr: the default model.
    #[arg(long)]
    spawn: Option<String>,
    /// Concurrent streams per level.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16, 64])]
    concurrency: Vec<usize>,
    /// Requests per level (at least the concurrency).
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Tokens generated per request (EOS ignored).
    #[arg(long = "max-tokens", default_value_t = 32)]
    max_tokens: usize,
    #[arg(long, default_value = "Once upon a time")]
    prompt: String,
    /// Words in the long prompt whose prefill tok/s is measured (0 skips it).
    #[arg(long = "long-prompt-words", default_value_t = 400)]
    long_prompt_words: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A child `infer serve` for `bench-serve --spawn`, killed by its pid on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tokio_rt() -> Result<infer_serve::bench::Runtime> {
    Ok(infer_serve::bench::runtime()?)
}

fn bench_serve(a: BenchServeArgs) -> Result<()> {
    let mut addr = a.addr.clone();
    let mut model = a.model.clone();
    let mut _child = None;
    if let Some(path) = &a.spawn {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let name = std::path::Path::new(path.trim_end_matches('/'))
            .file_name()
            .map_or(path.clone(), |f| f.to_string_lossy().into_owned());
        let c = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--model", path, "--port", &port.to_string()])
            .args(["--served-model-name", &name])
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting infer serve")?;
        _child = Some(Child(c));
        addr = format!("127.0.0.1:{port}");
        model.get_or_insert(name);
        let rt = tokio_rt()?;
        if !rt.block_on(infer_serve::bench::wait_healthy(
            &addr,
            std::time::Duration::from_secs(120),
        )) {
            bail!("infer serve --model {path} did not become healthy");
        }
    }
    let Some(model) = model else {
        bail!("--model NAME (the served model id) or --spawn PATH is needed");
    };
    let o = infer_serve::bench::BenchOptions {
        addr,
        model,
        levels: a.concurrency.clone(),
        requests: a.requests,
        max_tokens: a.max_tokens,
        prompt: a.prompt.clone(),
        long_prompt_words: a.long_prompt_words,
    };
    let (levels, prefill) = infer_serve::bench::run(&o).context("load run")?;
    let at16 = levels.iter().find(|l| l.concurrency == 16).map(|l| l.tok_s);
    let ratio = match (at16, prefill) {
        (Some(t), Some((_, p))) if p > 0.0 => Some(t / p),
        _ => None,
    };
    if a.json {
        let v = serde_json::json!({
            "levels": levels.iter().map(|l| serde_json::json!({
                "concurrency": l.concurrency, "requests": l.requests, "failed": l.failed,
                "tokens": l.tokens, "seconds": l.seconds, "tok_s": l.tok_s,
                "ttft_p50_ms": l.ttft_p50_ms, "ttft_p99_ms": l.ttft_p99_ms,
                "itl_p50_ms": l.itl_p50_ms, "itl_p99_ms": l.itl_p99_ms,
            })).collect::<Vec<_>>(),
            "prefill": prefill.map(|(n, t)| serde_json::json!({"prompt_tokens": n, "tok_s": t})),
            "ratio_16_streams_to_prefill": ratio,
        });
        println!("{v}");
    } else {
        println!(
            "{:>6} {:>5} {:>5} {:>7} {:>9} {:>10} {:>10} {:>9} {:>9}",
            "conc", "reqs", "fail", "tokens", "tok/s", "ttft p50", "ttft p99", "itl p50", "itl p99"
        );
        for l in &levels {
            println!(
                "{:>6} {:>5} {:>5} {:>7} {:>9.1} {:>8.1}ms {:>8.1}ms {:>7.1}ms {:>7.1}ms",
                l.concurrency,
                l.requests,
                l.failed,
                l.tokens,
                l.tok_s,
                l.ttft_p50_ms,
                l.ttft_p99_ms,
                l.itl_p50_ms,
                l.itl_p99_ms
            );
        }
        if let Some((n, t)) = prefill {
            println!("prefill: {n}-token prompt at {t:.1} tok/s (same server, same run)");
        }
        if let Some(r) = ratio {
            println!("aggregate tok/s at 16 streams / long-prompt prefill tok/s = {r:.3}");
        }
    }
    if levels.iter().any(|l| l.failed > 0) {
        bail!("some requests failed");
    }
    Ok(())
}
