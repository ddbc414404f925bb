//! `infer bench`: prefill and decode speed of a model, top-k sampling on the GPU against
//! the host, and speculative decoding against plain decoding.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use infer_kernels::Kernels;
use infer_models::{MAX_TOPK, Model, Output, StepOut, Tokenizer};
use infer_sampling::{Drafter, SamplingParams, generate, generate_speculative, top_k_candidates};
use infer_tensor::{DType, Tensor};

use crate::args::{ModelArgs, SpecArgs, encode_prompt, load};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt lengths to measure prefill at.
    #[arg(long = "prompt-tokens", default_values_t = [128usize, 512])]
    pub prompt_tokens: Vec<usize>,
    /// Tokens to decode per run.
    #[arg(long = "gen-tokens", default_value_t = 64)]
    pub gen_tokens: usize,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With --draft-model / --prompt-lookup: decode tok/s with and without the drafter on
    /// one prompt (this file's text, default a built-in "repeat this paragraph" request),
    /// greedy, with the acceptance rate.
    #[command(flatten)]
    pub spec: SpecArgs,
    #[arg(long = "prompt-file")]
    pub prompt_file: Option<PathBuf>,
    /// Also compare top-k sampling with the top k selected on the GPU against reading the
    /// whole logits vector back (decode tok/s, temperature 0.8, top-k 40).
    #[arg(long)]
    pub sampling: bool,
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn bench(args: BenchArgs) -> Result<()> {
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
pub const REPEAT_PROMPT: &str = "Repeat the following paragraph exactly, word for word.\n\n\
The lighthouse keeper climbed the spiral stairs every evening at dusk. He wound the great \
clockwork, polished the brass lamp and lit the wick, then sat by the window with a cup of \
tea, watching the beam sweep across the dark water. Ships passed safely through the narrow \
channel, and the keeper wrote their names in a worn leather book that his grandfather had \
started sixty years before.";

/// Top-k sampling: the k best selected on the GPU vs the whole logits vector read back.
/// First the selection step alone on one real logits vector (GPU top-k and a read of the k
/// pairs, in one submission, vs a read of every logit and a host partial selection), then
/// seeded decode tok/s through each path in the same run, with the tokens compared.
pub fn bench_sampling(
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
pub fn bench_spec(
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
