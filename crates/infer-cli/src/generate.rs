//! `infer run` and `infer chat`: generation streamed to stdout.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use clap::Args;
use infer_models::{ChatMessage, Model, Tokenizer};
use infer_sampling::{DraftK, Drafter, Generation, SamplingParams, generate, generate_speculative};

use crate::args::{ModelArgs, SamplingArgs, SpecArgs, encode_prompt, load};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The prompt.
    #[arg(long, short)]
    pub prompt: String,
    /// Wrap the prompt as a user message with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// A system message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Print one JSON object (ids, text, stats) on the last line instead of streaming.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
}

/// Plain or speculative generation.
pub fn gen_with(
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

pub fn json_line(g: &Generation) -> serde_json::Value {
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

pub fn run(args: RunArgs) -> Result<()> {
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

pub fn chat(args: ChatArgs) -> Result<()> {
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
