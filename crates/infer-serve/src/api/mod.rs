//! The HTTP front end: OpenAI-compatible routes on axum, errors in OpenAI's JSON shape.
//!
//! `POST /v1/chat/completions`, `POST /v1/completions` (both with `stream: true` as
//! Server-Sent Events ending in `data: [DONE]`), `GET /v1/models`, `GET /health`,
//! `GET /metrics`. Status codes: 400 malformed JSON, wrong types, invalid values; 404 an
//! unknown model; 413 an oversized body or a prompt over the context; 503 a full queue.

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
use infer_models::Tokenizer;
use infer_sampling::{FinishReason, SamplingParams};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::{EngineHandle, Event, Failure, GenRequest, Shutdown, SpecOptions, SubmitError};
use request::{
    ChatRequest, CompletionRequest, DetokenizeRequest, Prompt, TokenizeRequest, chat_messages,
    parse,
};
use response::{
    ApiError, ChatChoice, ChatDelta, Delta, ErrorBody, ErrorDetail, Health, Kind, Logprobs,
    ModelCard, ModelList, TextChoice, Usage,
};

mod request;
mod response;

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
    /// After SIGTERM / SIGINT, how long in-flight requests may run before they are ended.
    pub shutdown_timeout: std::time::Duration,
    /// Requests must carry `Authorization: Bearer <key>` (401 otherwise); `/health` never
    /// needs it, `/metrics` unless `metrics_public`.
    pub api_key: Option<String>,
    pub metrics_public: bool,
}

struct App {
    engine: EngineHandle,
    tok: Arc<Tokenizer>,
    opts: ServeOptions,
    next_id: AtomicU64,
    /// The ids given to requests that bring no `x-request-id`.
    request_ids: AtomicU64,
    created: u64,
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
        let shutdown = engine.shutdown.clone();
        let timeout = opts.shutdown_timeout;
        let app = router(engine, tok, opts);
        axum::serve(listener, app)
            .with_graceful_shutdown(drain_on_signal(shutdown, timeout))
            .await
            .map_err(|e| crate::ServeError::Io("serving".into(), e))?;
        eprintln!("infer serve: shut down");
        Ok(())
    })
}

/// SIGTERM (where there is one).
#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await
}

/// Resolves at SIGTERM or SIGINT, which stops the listener; in-flight requests keep running
/// (new ones get 503) until they finish or `timeout` passes, when the engine ends them with
/// a final error chunk saying why, and the server returns.
async fn drain_on_signal(shutdown: Arc<Shutdown>, timeout: std::time::Duration) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
    }
    eprintln!(
        "infer serve: shutting down; in-flight requests have {:.0} s to finish",
        timeout.as_secs_f64()
    );
    shutdown.draining.store(true, Relaxed);
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        shutdown.abort.store(true, Relaxed);
    });
}

/// The routes, for embedding in another server or testing.
pub fn router(engine: EngineHandle, tok: Arc<Tokenizer>, opts: ServeOptions) -> Router {
    let max_body = opts.max_body;
    let app = Arc::new(App {
        engine,
        tok,
        opts,
        next_id: AtomicU64::new(1),
        request_ids: AtomicU64::new(1),
        created: now_secs(),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(app.clone(), gate))
        .with_state(app)
}

/// Every request: the API key where one is set, its `x-request-id` (the client's, if it
/// sends a sane one, else a new one) echoed on the response, and one access-log line (the
/// time is to the response's headers: a stream's first chunk).
async fn gate(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("req-{:x}", app.request_ids.fetch_add(1, Relaxed)));
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let open = path == "/health" || (path == "/metrics" && app.opts.metrics_public);
    let mut resp = match &app.opts.api_key {
        Some(key) if !open && !bearer_matches(req.headers(), key) => {
            app.engine.metrics.request(401);
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a valid API key is required (Authorization: Bearer <key>)",
            )
            .with_code("invalid_api_key")
            .into_response()
        }
        _ => next.run(req).await,
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    eprintln!(
        "infer serve: {id} {method} {path} {} {:.1} ms",
        resp.status().as_u16(),
        started.elapsed().as_secs_f64() * 1e3
    );
    resp
}

/// Whether the request's `Authorization: Bearer` token is `key`, compared in constant time.
fn bearer_matches(headers: &axum::http::HeaderMap, key: &str) -> bool {
    use subtle::ConstantTimeEq;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(key.as_bytes()))
}

async fn fallback(State(app): State<Arc<App>>) -> Response {
    app.engine.metrics.request(404);
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
        .with_code("not_found")
        .into_response()
}

async fn method_not_allowed(State(app): State<Arc<App>>) -> Response {
    app.engine.metrics.request(405);
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method",
    )
    .with_code("method_not_allowed")
    .into_response()
}

async fn health() -> Response {
    axum::Json(Health { status: "ok" }).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.engine.metrics.render(),
    )
        .into_response()
}

async fn models(State(app): State<Arc<App>>) -> Response {
    axum::Json(ModelList {
        data: [ModelCard {
            created: app.created,
            id: &app.opts.model_name,
            object: "model",
            owned_by: "infer",
        }],
        object: "list",
    })
    .into_response()
}

async fn chat(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = match parse(body) {
        Ok(req) => chat_inner(&app, req).await,
        Err(e) => Err(e),
    };
    finish(&app, r)
}

async fn completions(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = match parse(body) {
        Ok(req) => completions_inner(&app, req).await,
        Err(e) => Err(e),
    };
    finish(&app, r)
}

async fn tokenize(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = parse::<TokenizeRequest>(body).and_then(|req| {
        app.check_model(&req.model)?;
        let ids = match (&req.prompt, &req.messages) {
            (Some(p), None) => {
                if req.add_generation_prompt.is_some() {
                    return Err(ApiError::bad(
                        "add_generation_prompt",
                        "applies to `messages`, not `prompt`",
                    ));
                }
                app.tok
                    .encode(p, req.add_special_tokens.unwrap_or(true))
                    .map_err(|e| ApiError::bad("prompt", e.to_string()))?
            }
            (None, Some(m)) => {
                if req.add_special_tokens.is_some() {
                    return Err(ApiError::bad(
                        "add_special_tokens",
                        "applies to `prompt`; the chat template places the special tokens",
                    ));
                }
                let msgs = chat_messages(m)?;
                let text = app
                    .tok
                    .apply_chat_template(&msgs, req.add_generation_prompt.unwrap_or(true))
                    .map_err(|e| ApiError::bad("messages", format!("chat template: {e}")))?;
                app.tok
                    .encode(&text, false)
                    .map_err(|e| ApiError::bad("messages", e.to_string()))?
            }
            _ => {
                return Err(ApiError::bad(
                    "prompt",
                    "give exactly one of `prompt` and `messages`",
                ));
            }
        };
        Ok(axum::Json(serde_json::json!({
            "tokens": ids,
            "count": ids.len(),
            "max_model_len": app.engine.context,
        }))
        .into_response())
    });
    finish(&app, r)
}

async fn detokenize(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = parse::<DetokenizeRequest>(body).and_then(|req| {
        app.check_model(&req.model)?;
        if let Some(&bad) = req.tokens.iter().find(|&&t| t as usize >= app.engine.vocab) {
            return Err(ApiError::bad(
                "tokens",
                format!("token id {bad} is not in the vocabulary"),
            ));
        }
        let text = app
            .tok
            .decode(&req.tokens, false)
            .map_err(|e| ApiError::bad("tokens", e.to_string()))?;
        Ok(axum::Json(serde_json::json!({ "prompt": text })).into_response())
    });
    finish(&app, r)
}

fn finish(app: &App, r: Result<Response, ApiError>) -> Response {
    let resp = r.unwrap_or_else(IntoResponse::into_response);
    app.engine.metrics.request(resp.status().as_u16());
    resp
}

async fn chat_inner(app: &Arc<App>, req: ChatRequest) -> Result<Response, ApiError> {
    let (params, spec) = app.settings(&req.common)?;
    let msgs = chat_messages(&req.messages)?;
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
        Job {
            kind: Kind::Chat,
            ids,
            params,
            logprobs: top,
            spec,
            stream: req.common.stream.unwrap_or(false),
            echo: String::new(),
        },
    )
    .await
}

async fn completions_inner(app: &Arc<App>, req: CompletionRequest) -> Result<Response, ApiError> {
    let (params, spec) = app.settings(&req.common)?;
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
        Job {
            kind: Kind::Completion,
            ids,
            params,
            logprobs: top,
            spec,
            stream: req.common.stream.unwrap_or(false),
            echo,
        },
    )
    .await
}

/// A checked request, ready for the engine.
struct Job {
    kind: Kind,
    ids: Vec<u32>,
    params: SamplingParams,
    /// `Some(k)`: logprobs with the k most likely alternatives.
    logprobs: Option<usize>,
    spec: Option<SpecOptions>,
    stream: bool,
    /// Text put before the completion (`echo`).
    echo: String,
}

/// What identifies a response: its id, creation time and model.
struct Header {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Header {
    fn body<C: serde::Serialize>(&self, choice: C, stream: bool, usage: Option<Usage>) -> String {
        let c = response::Completion {
            choices: [choice],
            created: self.created,
            id: &self.id,
            model: &self.model,
            object: self.kind.object(stream),
            usage,
        };
        serde_json::to_string(&c).expect("responses serialize")
    }

    /// A whole response.
    fn whole(
        &self,
        text: &str,
        finish_reason: FinishReason,
        lp: Option<Logprobs>,
        usage: Usage,
    ) -> Response {
        let finish_reason = finish_reason.as_str();
        let body = match self.kind {
            Kind::Chat => self.body(
                ChatChoice {
                    finish_reason,
                    index: 0,
                    logprobs: lp,
                    message: response::ChatMessage {
                        content: text,
                        role: "assistant",
                    },
                },
                false,
                Some(usage),
            ),
            Kind::Completion => self.body(
                TextChoice {
                    finish_reason: Some(finish_reason),
                    index: 0,
                    logprobs: lp,
                    text,
                },
                false,
                Some(usage),
            ),
        };
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    /// A stream chunk: text (a chat's first chunk also gives the role), or the end.
    fn chunk(
        &self,
        text: Option<&str>,
        role: bool,
        lp: Option<Logprobs>,
        end: Option<(FinishReason, Usage)>,
    ) -> SseEvent {
        let finish_reason = end.map(|e| e.0.as_str());
        let body = match self.kind {
            Kind::Chat => self.body(
                ChatDelta {
                    delta: Delta {
                        content: text,
                        role: role.then_some("assistant"),
                    },
                    finish_reason,
                    index: 0,
                    logprobs: lp,
                },
                true,
                end.map(|e| e.1),
            ),
            Kind::Completion => self.body(
                TextChoice {
                    finish_reason,
                    index: 0,
                    logprobs: lp,
                    text: text.unwrap_or(""),
                },
                true,
                end.map(|e| e.1),
            ),
        };
        SseEvent::default().data(body)
    }
}

async fn run(app: &Arc<App>, job: Job) -> Result<Response, ApiError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let n = app.next_id.fetch_add(1, Relaxed);
    let kind = job.kind;
    let id = match kind {
        Kind::Chat => format!("chatcmpl-{n}"),
        Kind::Completion => format!("cmpl-{n}"),
    };
    let logprobs = job.logprobs;
    app.engine
        .submit(GenRequest {
            prompt: job.ids,
            params: job.params,
            logprobs,
            spec: job.spec,
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
            SubmitError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ),
        })?;
    let head = Header {
        id,
        created: now_secs(),
        model: app.opts.model_name.clone(),
        kind,
    };
    if !job.stream {
        let mut text = job.echo;
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
                    let lp = logprobs.map(|_| Logprobs::new(kind, &lps, 0));
                    let usage = Usage::new(prompt_tokens, completion_tokens);
                    return Ok(head.whole(&text, finish_reason, lp, usage));
                }
                Some(Event::Error { message, kind }) => {
                    let status = match kind {
                        Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                        Failure::DoesNotFit => StatusCode::PAYLOAD_TOO_LARGE,
                        Failure::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
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
    let echo = job.echo;
    tokio::spawn(async move {
        let first = match kind {
            Kind::Chat => Some(head.chunk(Some(""), true, None, None)),
            Kind::Completion if !echo.is_empty() => {
                Some(head.chunk(Some(&echo), false, None, None))
            }
            Kind::Completion => None,
        };
        if let Some(f) = first
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
                        let v = Logprobs::new(kind, std::slice::from_ref(&l), offset);
                        offset += l.token.len();
                        v
                    });
                    (vec![head.chunk(Some(&text), false, lp, None)], false)
                }
                Some(Event::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    let usage = Usage::new(prompt_tokens, completion_tokens);
                    (
                        vec![
                            head.chunk(None, false, None, Some((finish_reason, usage))),
                            SseEvent::default().data("[DONE]"),
                        ],
                        true,
                    )
                }
                Some(Event::Error { message, kind }) => {
                    let body = ErrorBody {
                        error: ErrorDetail {
                            code: (kind == Failure::ShuttingDown).then_some("shutting_down"),
                            message: &message,
                            param: None,
                            kind: match kind {
                                Failure::DoesNotFit => "invalid_request_error",
                                Failure::Internal => "server_error",
                                Failure::ShuttingDown => "server_shutdown",
                            },
                        },
                    };
                    let body = serde_json::to_string(&body).expect("errors serialize");
                    (
                        vec![
                            SseEvent::default().data(body),
                            SseEvent::default().data("[DONE]"),
                        ],
                        true,
                    )
                }
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
