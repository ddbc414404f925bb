//! The HTTP front end: OpenAI-compatible routes on axum, errors in OpenAI's JSON shape.
//!
//! `POST /v1/chat/completions`, `POST /v1/completions` (both with `stream: true` as
//! Server-Sent Events ending in `data: [DONE]`), `GET /v1/models`, `GET /health`,
//! `GET /metrics`. Status codes: 400 malformed JSON, wrong types, invalid values; 404 an
//! unknown model; 413 an oversized body or a prompt over the context; 503 a full queue.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use infer_models::{ChatMessage, Tokenizer};
use infer_sampling::{DraftK, SamplingParams};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::{EngineHandle, Event, GenRequest, SpecOptions, SubmitError, TokenLogprob};

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// The model id clients name (`/v1/models`).
    pub model_name: String,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Prompt-lookup speculation for requests that do not say (`prompt_lookup`).
    pub prompt_lookup: Option<usize>,
    /// Draft tokens per step for requests that do not say (`draft_tokens`); None: adaptive.
    pub draft_tokens: Option<usize>,
}

struct App {
    engine: EngineHandle,
    tok: Arc<Tokenizer>,
    opts: ServeOptions,
    next_id: AtomicU64,
    created: u64,
}

/// An OpenAI error response.
struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
        }
    }

    fn bad(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (ty, code) = match self.status {
            StatusCode::NOT_FOUND => ("invalid_request_error", "model_not_found"),
            StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", "request_too_large"),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                ("server_overloaded", "queue_full")
            }
            s if s.is_server_error() => ("server_error", "internal_error"),
            _ => ("invalid_request_error", "invalid_value"),
        };
        let body = json!({"error": {
            "message": self.message, "type": ty, "param": self.param, "code": code,
        }});
        (self.status, axum::Json(body)).into_response()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves until the process is stopped. Blocks the calling thread.
pub fn serve(engine: EngineHandle, tok: Arc<Tokenizer>, opts: ServeOptions) -> crate::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| crate::ServeError::Io("starting tokio".into(), e))?;
    rt.block_on(async move {
        let addr = format!("{}:{}", opts.host, opts.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| crate::ServeError::Io(format!("binding {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| crate::ServeError::Io(addr.clone(), e))?;
        eprintln!("infer serve: listening on http://{local}");
        let app = router(engine, tok, opts);
        axum::serve(listener, app)
            .await
            .map_err(|e| crate::ServeError::Io("serving".into(), e))
    })
}

/// The routes, for embedding in another server or testing.
pub fn router(engine: EngineHandle, tok: Arc<Tokenizer>, opts: ServeOptions) -> Router {
    let max_body = opts.max_body;
    let app = Arc::new(App {
        engine,
        tok,
        opts,
        next_id: AtomicU64::new(1),
        created: now_secs(),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

async fn fallback(State(app): State<Arc<App>>) -> Response {
    app.engine.metrics.request(404);
    ApiError::new(StatusCode::NOT_FOUND, "no such route").into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.engine.metrics.render(),
    )
        .into_response()
}

async fn models(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({"object": "list", "data": [{
        "id": app.opts.model_name, "object": "model", "created": app.created, "owned_by": "infer",
    }]}))
    .into_response()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// The fields both endpoints share.
#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<i64>,
    #[serde(default)]
    min_p: Option<f32>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stop: Option<OneOrMany>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    repetition_penalty: Option<f32>,
    #[serde(default)]
    logit_bias: Option<HashMap<String, f32>>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    ignore_eos: Option<bool>,
    #[serde(default)]
    stop_token_ids: Option<Vec<u32>>,
    /// Speculative decoding by prompt lookup: the longest n-gram matched (0: off).
    #[serde(default)]
    prompt_lookup: Option<i64>,
    /// Draft tokens per speculative step (1..=15); default adaptive.
    #[serde(default)]
    draft_tokens: Option<i64>,
    /// Refused with a clear error: this server drafts by prompt lookup only.
    #[serde(default)]
    draft_model: Option<Value>,
}

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(flatten)]
    common: Common,
    messages: Vec<Message>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u32>,
}

#[derive(Deserialize)]
struct CompletionRequest {
    #[serde(flatten)]
    common: Common,
    prompt: Prompt,
    #[serde(default)]
    logprobs: Option<u32>,
    #[serde(default)]
    echo: Option<bool>,
}

fn parse<T: for<'de> Deserialize<'de>>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
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
    if !v.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_value(v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))
}

impl App {
    fn sampling(&self, c: &Common) -> Result<SamplingParams, ApiError> {
        if c.model != self.opts.model_name {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "the model `{}` does not exist (this server serves `{}`)",
                    c.model, self.opts.model_name
                ),
            ));
        }
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

    fn check_prompt(&self, ids: &[u32]) -> Result<(), ApiError> {
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

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

async fn chat(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = chat_inner(&app, body).await;
    finish(&app, r)
}

async fn completions(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = completions_inner(&app, body).await;
    finish(&app, r)
}

fn finish(app: &App, r: Result<Response, ApiError>) -> Response {
    let resp = r.unwrap_or_else(IntoResponse::into_response);
    app.engine.metrics.request(resp.status().as_u16());
    resp
}

async fn chat_inner(
    app: &Arc<App>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(body)?;
    let params = app.sampling(&req.common)?;
    let spec = app.spec(&req.common)?;
    if req.messages.is_empty() {
        return Err(ApiError::bad("messages", "at least one message is needed"));
    }
    let mut msgs = Vec::new();
    for m in &req.messages {
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
    let rendered = app
        .tok
        .apply_chat_template(&msgs, true)
        .map_err(|e| ApiError::bad("messages", format!("chat template: {e}")))?;
    let ids = app
        .tok
        .encode(&rendered, false)
        .map_err(|e| ApiError::bad("messages", e.to_string()))?;
    app.check_prompt(&ids)?;
    let top = match (req.logprobs, req.top_logprobs) {
        (_, Some(k)) if k > 20 => return Err(ApiError::bad("top_logprobs", "at most 20")),
        (Some(true), k) => Some(k.unwrap_or(0) as usize),
        (_, Some(_)) => {
            return Err(ApiError::bad(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            ));
        }
        _ => None,
    };
    run(
        app,
        Kind::Chat,
        ids,
        params,
        top,
        spec,
        req.common.stream.unwrap_or(false),
        String::new(),
    )
    .await
}

async fn completions_inner(
    app: &Arc<App>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(body)?;
    let params = app.sampling(&req.common)?;
    let spec = app.spec(&req.common)?;
    let text = |s: &str| {
        app.tok
            .encode(s, true)
            .map_err(|e| ApiError::bad("prompt", e.to_string()))
    };
    let (ids, prompt_text) = match &req.prompt {
        Prompt::Text(s) => (text(s)?, s.clone()),
        Prompt::Texts(v) if v.len() == 1 => (text(&v[0])?, v[0].clone()),
        Prompt::Texts(_) => return Err(ApiError::bad("prompt", "exactly one prompt is supported")),
        Prompt::Ids(ids) => (ids.clone(), app.tok.decode(ids, false).unwrap_or_default()),
    };
    app.check_prompt(&ids)?;
    if req.logprobs.is_some_and(|k| k > 20) {
        return Err(ApiError::bad("logprobs", "at most 20"));
    }
    let echo = if req.echo.unwrap_or(false) {
        prompt_text
    } else {
        String::new()
    };
    let top = req.logprobs.map(|k| k as usize);
    run(
        app,
        Kind::Completion,
        ids,
        params,
        top,
        spec,
        req.common.stream.unwrap_or(false),
        echo,
    )
    .await
}

fn usage(p: usize, c: usize) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

/// Logprobs in the endpoint's format, for a list of tokens.
fn logprobs_json(kind: Kind, lps: &[TokenLogprob], offset0: usize) -> Value {
    match kind {
        Kind::Chat => json!({"content": lps.iter().map(|l| json!({
            "token": l.token, "logprob": l.logprob, "bytes": l.token.as_bytes(),
            "top_logprobs": l.top.iter().map(|(t, p)| json!({
                "token": t, "logprob": p, "bytes": t.as_bytes(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()}),
        Kind::Completion => {
            let mut off = offset0;
            let mut offsets = Vec::new();
            for l in lps {
                offsets.push(off);
                off += l.token.len();
            }
            json!({
                "tokens": lps.iter().map(|l| &l.token).collect::<Vec<_>>(),
                "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
                "top_logprobs": lps.iter().map(|l| l.top.iter().map(|(t, p)| (t.clone(), json!(p))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
                "text_offset": offsets,
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    app: &Arc<App>,
    kind: Kind,
    ids: Vec<u32>,
    params: SamplingParams,
    logprobs: Option<usize>,
    spec: Option<SpecOptions>,
    stream: bool,
    echo: String,
) -> Result<Response, ApiError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let n = app.next_id.fetch_add(1, Relaxed);
    let id = match kind {
        Kind::Chat => format!("chatcmpl-{n}"),
        Kind::Completion => format!("cmpl-{n}"),
    };
    app.engine
        .submit(GenRequest {
            prompt: ids,
            params,
            logprobs,
            spec,
            events: tx,
            arrived: Instant::now(),
        })
        .map_err(|e| match e {
            SubmitError::QueueFull => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request queue is full; retry later",
            ),
            SubmitError::EngineGone => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the engine has stopped")
            }
        })?;
    let created = now_secs();
    let model = app.opts.model_name.clone();
    if !stream {
        let mut text = echo;
        let mut lps = Vec::new();
        loop {
            match rx.recv().await {
                Some(Event::Token { text: t, logprob }) => {
                    text.push_str(&t);
                    lps.extend(logprob);
                }
                Some(Event::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    let lp = logprobs.map(|_| logprobs_json(kind, &lps, 0));
                    let choice = match kind {
                        Kind::Chat => json!({"index": 0, "finish_reason": finish_reason,
                            "message": {"role": "assistant", "content": text}, "logprobs": lp}),
                        Kind::Completion => json!({"index": 0, "finish_reason": finish_reason,
                            "text": text, "logprobs": lp}),
                    };
                    let object = match kind {
                        Kind::Chat => "chat.completion",
                        Kind::Completion => "text_completion",
                    };
                    return Ok(axum::Json(json!({
                        "id": id, "object": object, "created": created, "model": model,
                        "choices": [choice], "usage": usage(prompt_tokens, completion_tokens),
                    }))
                    .into_response());
                }
                Some(Event::Error { message, internal }) => {
                    let status = if internal {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::PAYLOAD_TOO_LARGE
                    };
                    return Err(ApiError::new(status, message));
                }
                None => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the engine dropped the request",
                    ));
                }
            }
        }
    }
    // Streaming: a task turns engine events into SSE chunks; when the client goes, the
    // chunk channel closes, the task ends and drops the engine receiver, and the engine
    // frees the sequence's KV blocks at its next step.
    let (sse_tx, sse_rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let object = match kind {
        Kind::Chat => "chat.completion.chunk",
        Kind::Completion => "text_completion",
    };
    let chunk = move |choice: Value, usage: Option<Value>| {
        let mut v = json!({"id": id, "object": object, "created": created, "model": model,
            "choices": [choice]});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        SseEvent::default().data(v.to_string())
    };
    tokio::spawn(async move {
        let mut first = match kind {
            Kind::Chat => Some(chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
                None,
            )),
            Kind::Completion if !echo.is_empty() => Some(chunk(
                json!({"index": 0, "text": echo, "logprobs": null, "finish_reason": null}),
                None,
            )),
            Kind::Completion => None,
        };
        if let Some(f) = first.take()
            && sse_tx.send(Ok(f)).await.is_err()
        {
            return;
        }
        let mut offset = 0;
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = sse_tx.closed() => return,
            };
            let (out, end) = match ev {
                Some(Event::Token { text, logprob }) => {
                    if text.is_empty() && logprob.is_none() {
                        continue;
                    }
                    let lp = logprob.map(|l| {
                        let v = logprobs_json(kind, std::slice::from_ref(&l), offset);
                        offset += l.token.len();
                        v
                    });
                    let choice = match kind {
                        Kind::Chat => json!({"index": 0, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}),
                        Kind::Completion => json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": null}),
                    };
                    (vec![chunk(choice, None)], false)
                }
                Some(Event::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    let choice = match kind {
                        Kind::Chat => json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason}),
                        Kind::Completion => json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish_reason}),
                    };
                    (
                        vec![
                            chunk(choice, Some(usage(prompt_tokens, completion_tokens))),
                            SseEvent::default().data("[DONE]"),
                        ],
                        true,
                    )
                }
                Some(Event::Error { message: e, .. }) => (
                    vec![
                        SseEvent::default().data(
                            json!({"error": {"message": e, "type": "invalid_request_error", "param": null, "code": null}})
                                .to_string(),
                        ),
                        SseEvent::default().data("[DONE]"),
                    ],
                    true,
                ),
                None => return,
            };
            for e in out {
                if sse_tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if end {
                return;
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(sse_rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}
