//! The request bodies (typed serde structs: the fields accepted today; any other field is
//! refused, never ignored) and their checks into [`SamplingParams`], speculation options
//! and prompt ids.
//! Every refusal is an [`ApiError`] naming the field (400), the model (404) or the size
//! (413).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use infer_models::ChatMessage;
use infer_sampling::{DraftK, SamplingParams};
use serde::Deserialize;
use serde_json::Value;

use super::App;
use super::response::ApiError;
use crate::engine::SpecOptions;

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// A request body's top-level fields: the ones it reads.
pub(super) trait Fields {
    /// The fields beside [`COMMON_FIELDS`].
    const FIELDS: &'static [&'static str];
    /// Whether the body also takes [`COMMON_FIELDS`] (the generation endpoints do).
    const COMMON: bool = true;

    fn accepts(k: &str) -> bool {
        Self::FIELDS.contains(&k) || (Self::COMMON && COMMON_FIELDS.contains(&k))
    }
}

/// [`Common`]'s fields, and `user` (an end-user id for the caller's own bookkeeping, which
/// changes nothing in the output).
const COMMON_FIELDS: [&str; 21] = [
    "model",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "n",
    "ignore_eos",
    "stop_token_ids",
    "prompt_lookup",
    "draft_tokens",
    "draft_model",
    "user",
];

impl Fields for ChatRequest {
    const FIELDS: &'static [&'static str] = &["messages", "logprobs", "top_logprobs"];
}

impl Fields for CompletionRequest {
    const FIELDS: &'static [&'static str] = &["prompt", "logprobs", "echo"];
}

impl Fields for TokenizeRequest {
    const FIELDS: &'static [&'static str] = &[
        "model",
        "prompt",
        "messages",
        "add_special_tokens",
        "add_generation_prompt",
    ];
    const COMMON: bool = false;
}

impl Fields for DetokenizeRequest {
    const FIELDS: &'static [&'static str] = &["model", "tokens"];
    const COMMON: bool = false;
}

/// `POST /tokenize` (vLLM's shape): a `prompt`, or chat `messages` rendered by the template.
#[derive(Deserialize)]
pub(super) struct TokenizeRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// Prompt only: add the tokenizer's special tokens (BOS); default true.
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    /// Messages only: end with the assistant turn's opening; default true.
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
}

/// `POST /detokenize`.
#[derive(Deserialize)]
pub(super) struct DetokenizeRequest {
    pub model: String,
    pub tokens: Vec<u32>,
}

/// The fields both endpoints share.
#[derive(Deserialize)]
pub(super) struct Common {
    pub model: String,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub logit_bias: Option<HashMap<String, f32>>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    #[serde(default)]
    pub stop_token_ids: Option<Vec<u32>>,
    /// Speculative decoding by prompt lookup: the longest n-gram matched (0: off).
    #[serde(default)]
    pub prompt_lookup: Option<i64>,
    /// Draft tokens per speculative step (1..=15); default adaptive.
    #[serde(default)]
    pub draft_tokens: Option<i64>,
    /// Refused with a clear error: this server drafts by prompt lookup only.
    #[serde(default)]
    pub draft_model: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct ChatRequest {
    #[serde(flatten)]
    pub common: Common,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
}

#[derive(Deserialize)]
pub(super) struct CompletionRequest {
    #[serde(flatten)]
    pub common: Common,
    pub prompt: Prompt,
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: Option<bool>,
}

pub(super) fn parse<T: for<'de> Deserialize<'de> + Fields>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("could not read the request body: {e}"))
    })?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object",
        ));
    };
    if let Some(k) = obj.keys().find(|k| !T::accepts(k)) {
        return Err(ApiError::bad(
            k.clone(),
            format!(
                "`{k}` is not supported by this server (see the README's list of accepted fields)"
            ),
        ));
    }
    serde_json::from_value(v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))
}

impl App {
    /// A 404 unless `model` is the served model's id.
    pub(super) fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model != self.opts.model_name {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "the model `{model}` does not exist (this server serves `{}`)",
                    self.opts.model_name
                ),
            ));
        }
        Ok(())
    }

    fn sampling(&self, c: &Common) -> Result<SamplingParams, ApiError> {
        self.check_model(&c.model)?;
        if c.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad("n", "only n = 1 is supported"));
        }
        let max_tokens = c.max_completion_tokens.or(c.max_tokens);
        if max_tokens == Some(0) {
            return Err(ApiError::bad("max_tokens", "max_tokens must be at least 1"));
        }
        let mut logit_bias = Vec::new();
        for (k, &b) in c.logit_bias.iter().flatten() {
            let id: u32 = k
                .parse()
                .map_err(|_| ApiError::bad("logit_bias", format!("`{k}` is not a token id")))?;
            if !(-100.0..=100.0).contains(&b) {
                return Err(ApiError::bad(
                    "logit_bias",
                    format!("bias {b} for {id} is not in [-100, 100]"),
                ));
            }
            logit_bias.push((id, b));
        }
        logit_bias.sort_by_key(|b| b.0);
        let stop = match &c.stop {
            None => vec![],
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
        };
        if stop.len() > 16 {
            return Err(ApiError::bad("stop", "at most 16 stop strings"));
        }
        for (name, v, lo, hi) in [
            ("temperature", c.temperature, 0.0, 2.0),
            ("presence_penalty", c.presence_penalty, -2.0, 2.0),
            ("frequency_penalty", c.frequency_penalty, -2.0, 2.0),
        ] {
            if let Some(v) = v
                && !(lo..=hi).contains(&v)
            {
                return Err(ApiError::bad(name, format!("{v} is not in [{lo}, {hi}]")));
            }
        }
        let p = SamplingParams {
            temperature: c.temperature.unwrap_or(1.0),
            top_k: match c.top_k {
                None | Some(-1) | Some(0) => None,
                Some(k) if k > 0 => Some(k as usize),
                Some(k) => return Err(ApiError::bad("top_k", format!("{k} (use -1 for off)"))),
            },
            top_p: c.top_p.unwrap_or(1.0),
            min_p: c.min_p.unwrap_or(0.0),
            repeat_penalty: c.repetition_penalty.unwrap_or(1.0),
            presence_penalty: c.presence_penalty.unwrap_or(0.0),
            frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
            logit_bias,
            seed: c.seed.map_or_else(
                || {
                    self.next_id
                        .load(Relaxed)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                },
                |s| s as u64,
            ),
            max_tokens: max_tokens.map_or(self.opts.default_max_tokens, |m| {
                usize::try_from(m).unwrap_or(usize::MAX)
            }),
            stop,
            stop_token_ids: c.stop_token_ids.clone().unwrap_or_default(),
            ignore_eos: c.ignore_eos.unwrap_or(false),
            gpu_topk: false,
        };
        p.validate(self.engine.vocab).map_err(|e| match e {
            infer_sampling::SamplingError::Invalid { field, reason } => {
                ApiError::bad(field, format!("invalid `{field}`: {reason}"))
            }
            e => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
        })?;
        Ok(p)
    }

    /// The sampling parameters and speculative options of a request, checked in that
    /// order.
    pub(super) fn settings(
        &self,
        c: &Common,
    ) -> Result<(SamplingParams, Option<SpecOptions>), ApiError> {
        Ok((self.sampling(c)?, self.spec(c)?))
    }

    /// The request's speculative options (or the server's defaults).
    fn spec(&self, c: &Common) -> Result<Option<SpecOptions>, ApiError> {
        if c.draft_model.is_some() {
            return Err(ApiError::bad(
                "draft_model",
                "this server drafts by prompt lookup only (`prompt_lookup`); draft models are \
                 available in `infer run` and `infer chat`",
            ));
        }
        let ngram = match c.prompt_lookup {
            None => self.opts.prompt_lookup,
            Some(0) => None,
            Some(n @ 1..=16) => Some(n as usize),
            Some(n) => {
                return Err(ApiError::bad(
                    "prompt_lookup",
                    format!("{n}: the n-gram length must be 1..=16 (0: off)"),
                ));
            }
        };
        let k = match c.draft_tokens {
            None => self.opts.draft_tokens,
            Some(k @ 1..=15) => Some(k as usize),
            Some(k) => {
                return Err(ApiError::bad(
                    "draft_tokens",
                    format!("{k}: draft 1..=15 tokens per step (omit it to adapt k)"),
                ));
            }
        };
        match ngram {
            None if c.draft_tokens.is_some() => Err(ApiError::bad(
                "draft_tokens",
                "draft_tokens needs prompt_lookup (the n-gram length)",
            )),
            None => Ok(None),
            Some(ngram) => Ok(Some(SpecOptions {
                ngram,
                k: k.map_or(DraftK::Adaptive, DraftK::Fixed),
            })),
        }
    }

    pub(super) fn check_prompt(&self, ids: &[u32]) -> Result<(), ApiError> {
        if ids.is_empty() {
            return Err(ApiError::bad("prompt", "the prompt is empty"));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.engine.vocab) {
            return Err(ApiError::bad(
                "prompt",
                format!("token id {bad} is not in the vocabulary"),
            ));
        }
        if ids.len() >= self.engine.context.min(self.engine.kv_tokens) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the prompt has {} tokens; this server's context is {} tokens",
                    ids.len(),
                    self.engine.context.min(self.engine.kv_tokens)
                ),
            ));
        }
        Ok(())
    }
}

/// The messages as the chat template takes them (`developer` is `system`; content parts
/// must be text).
pub(super) fn chat_messages(messages: &[Message]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad("messages", "at least one message is needed"));
    }
    let mut msgs = Vec::new();
    for m in messages {
        if !["system", "user", "assistant", "developer", "tool"].contains(&m.role.as_str()) {
            return Err(ApiError::bad(
                "messages",
                format!("unknown role `{}`", m.role),
            ));
        }
        let text = match &m.content {
            None => String::new(),
            Some(Content::Text(s)) => s.clone(),
            Some(Content::Parts(parts)) => {
                let mut s = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(ApiError::bad(
                            "messages",
                            format!("content parts of type `{}` are not supported", p.kind),
                        ));
                    }
                    s.push_str(p.text.as_deref().unwrap_or(""));
                }
                s
            }
        };
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        msgs.push(ChatMessage::new(role, text));
    }
    Ok(msgs)
}
