//! The response bodies, typed: completions and chat completions (whole and as stream
//! chunks), logprobs in each endpoint's format, the model list and errors.
//!
//! Fields are declared in alphabetical order, the order serde_json's default map gives
//! a `json!` object, so a body is the same bytes as when it was built as a `json!` value.
//! Log-probabilities are f32 values written as f64 (as a `json!` value holds them).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::TokenLogprob;

/// Which endpoint: it decides the response's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Chat,
    Completion,
}

impl Kind {
    pub fn object(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }
}

/// An OpenAI error response.
pub(super) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    /// The error code where the status alone does not say it.
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// This error with the code `code` (e.g. `not_found` for an unknown route).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// A 400 naming the request field at fault.
    pub fn bad(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (kind, code) = match self.status {
            StatusCode::NOT_FOUND => ("invalid_request_error", "model_not_found"),
            StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", "request_too_large"),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                ("server_overloaded", "queue_full")
            }
            s if s.is_server_error() => ("server_error", "internal_error"),
            _ => ("invalid_request_error", "invalid_value"),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: Some(self.code.unwrap_or(code)),
                message: &self.message,
                param: self.param.as_deref(),
                kind,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Overload and shutdown are both worth a retry, after a moment.
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                "1".parse().expect("a header value"),
            );
        }
        resp
    }
}

/// `{"error": {...}}`, OpenAI's error shape.
#[derive(Serialize)]
pub(super) struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub(super) struct ErrorDetail<'a> {
    pub code: Option<&'a str>,
    pub message: &'a str,
    pub param: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: &'a str,
}

#[derive(Serialize)]
pub(super) struct Health {
    pub status: &'static str,
}

#[derive(Serialize)]
pub(super) struct ModelList<'a> {
    pub data: [ModelCard<'a>; 1],
    pub object: &'static str,
}

#[derive(Serialize)]
pub(super) struct ModelCard<'a> {
    pub created: u64,
    pub id: &'a str,
    pub object: &'static str,
    pub owned_by: &'static str,
}

#[derive(Clone, Copy, Serialize)]
pub(super) struct Usage {
    pub completion_tokens: usize,
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Usage {
        Usage {
            completion_tokens,
            prompt_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// A whole response or one stream chunk: `usage` only on whole responses and on the
/// last chunk.
#[derive(Serialize)]
pub(super) struct Completion<'a, C> {
    pub choices: [C; 1],
    pub created: u64,
    pub id: &'a str,
    pub model: &'a str,
    pub object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A chat completion's choice.
#[derive(Serialize)]
pub(super) struct ChatChoice<'a> {
    pub finish_reason: &'static str,
    pub index: u32,
    pub logprobs: Option<Logprobs>,
    pub message: ChatMessage<'a>,
}

#[derive(Serialize)]
pub(super) struct ChatMessage<'a> {
    pub content: &'a str,
    pub role: &'static str,
}

/// A chat stream chunk's choice.
#[derive(Serialize)]
pub(super) struct ChatDelta<'a> {
    pub delta: Delta<'a>,
    pub finish_reason: Option<&'static str>,
    pub index: u32,
    pub logprobs: Option<Logprobs>,
}

/// What a chat chunk adds: the role first, then content, then nothing (the last chunk).
#[derive(Default, Serialize)]
pub(super) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
}

/// A completion's choice, whole or a stream chunk's.
#[derive(Serialize)]
pub(super) struct TextChoice<'a> {
    pub finish_reason: Option<&'static str>,
    pub index: u32,
    pub logprobs: Option<Logprobs>,
    pub text: &'a str,
}

/// Log-probabilities in the endpoint's format.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Logprobs {
    Chat {
        content: Vec<ChatLogprob>,
    },
    Completion {
        text_offset: Vec<usize>,
        token_logprobs: Vec<f64>,
        tokens: Vec<String>,
        top_logprobs: Vec<BTreeMap<String, f64>>,
    },
}

#[derive(Serialize)]
pub(super) struct ChatLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f64,
    pub token: String,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Serialize)]
pub(super) struct TopLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f64,
    pub token: String,
}

impl Logprobs {
    /// The logprobs of `lps`, the first token's text starting at `offset0` (completions'
    /// `text_offset`).
    pub fn new(kind: Kind, lps: &[TokenLogprob], offset0: usize) -> Logprobs {
        match kind {
            Kind::Chat => Logprobs::Chat {
                content: lps
                    .iter()
                    .map(|l| ChatLogprob {
                        bytes: l.token.as_bytes().to_vec(),
                        logprob: l.logprob.into(),
                        token: l.token.clone(),
                        top_logprobs: l
                            .top
                            .iter()
                            .map(|(t, p)| TopLogprob {
                                bytes: t.as_bytes().to_vec(),
                                logprob: (*p).into(),
                                token: t.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            },
            Kind::Completion => {
                let mut off = offset0;
                let mut text_offset = Vec::new();
                for l in lps {
                    text_offset.push(off);
                    off += l.token.len();
                }
                Logprobs::Completion {
                    text_offset,
                    token_logprobs: lps.iter().map(|l| l.logprob.into()).collect(),
                    tokens: lps.iter().map(|l| l.token.clone()).collect(),
                    top_logprobs: lps
                        .iter()
                        .map(|l| {
                            l.top
                                .iter()
                                .map(|(t, p)| (t.clone(), (*p).into()))
                                .collect()
                        })
                        .collect(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infer_sampling::FinishReason;
    use serde_json::json;

    /// A response body with the test's creation time and model.
    fn body<C: Serialize>(
        choice: C,
        id: &str,
        object: &'static str,
        usage: Option<Usage>,
    ) -> String {
        let c = Completion {
            choices: [choice],
            created: 7,
            id,
            model: "m",
            object,
            usage,
        };
        serde_json::to_string(&c).expect("serializes")
    }

    fn lp() -> Vec<TokenLogprob> {
        vec![
            TokenLogprob {
                token: " a".into(),
                logprob: -0.1,
                top: vec![(" a".into(), -0.1), ("é".into(), -2.5)],
            },
            TokenLogprob {
                token: "b".into(),
                logprob: f32::NAN,
                top: vec![],
            },
        ]
    }

    /// The bodies are the bytes the `json!` blocks they replace gave.
    #[test]
    fn bodies_match_the_json_values_they_replace() {
        let l = lp();
        let chat = body(
            ChatChoice {
                finish_reason: "stop",
                index: 0,
                logprobs: Some(Logprobs::new(Kind::Chat, &l, 0)),
                message: ChatMessage {
                    content: "hi",
                    role: "assistant",
                },
            },
            "chatcmpl-1",
            Kind::Chat.object(false),
            Some(Usage::new(3, 2)),
        );
        let lp_json = json!({"content": l.iter().map(|l| json!({
            "token": l.token, "logprob": l.logprob, "bytes": l.token.as_bytes(),
            "top_logprobs": l.top.iter().map(|(t, p)| json!({
                "token": t, "logprob": p, "bytes": t.as_bytes(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()});
        let old = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hi"}, "logprobs": lp_json}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        });
        assert_eq!(chat, old.to_string());

        let chunk = body(
            TextChoice {
                finish_reason: None,
                index: 0,
                logprobs: Some(Logprobs::new(Kind::Completion, &l, 4)),
                text: "x",
            },
            "cmpl-2",
            Kind::Completion.object(true),
            None,
        );
        let old = json!({"id": "cmpl-2", "object": "text_completion", "created": 7, "model": "m",
        "choices": [{"index": 0, "text": "x", "finish_reason": null, "logprobs": {
            "tokens": [" a", "b"],
            "token_logprobs": [l[0].logprob, l[1].logprob],
            "top_logprobs": l.iter().map(|l| l.top.iter().map(|(t, p)| (t.clone(), json!(p))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
            "text_offset": [4, 6],
        }}]});
        assert_eq!(chunk, old.to_string());

        let first = body(
            ChatDelta {
                delta: Delta {
                    content: Some(""),
                    role: Some("assistant"),
                },
                finish_reason: None,
                index: 0,
                logprobs: None,
            },
            "c",
            Kind::Chat.object(true),
            None,
        );
        let old = json!({"id": "c", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]});
        assert_eq!(first, old.to_string());

        let last = body(
            ChatDelta {
                delta: Delta::default(),
                finish_reason: Some(FinishReason::Length.as_str()),
                index: 0,
                logprobs: None,
            },
            "c",
            Kind::Chat.object(true),
            Some(Usage::new(1, 1)),
        );
        let old = json!({"id": "c", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
        assert_eq!(last, old.to_string());

        let err = ErrorBody {
            error: ErrorDetail {
                code: None,
                message: "m",
                param: None,
                kind: "invalid_request_error",
            },
        };
        let old = json!({"error": {"message": "m", "type": "invalid_request_error", "param": null, "code": null}});
        assert_eq!(serde_json::to_string(&err).unwrap(), old.to_string());
        let list = ModelList {
            data: [ModelCard {
                created: 5,
                id: "m",
                object: "model",
                owned_by: "infer",
            }],
            object: "list",
        };
        let old = json!({"object": "list", "data": [{
            "id": "m", "object": "model", "created": 5, "owned_by": "infer",
        }]});
        assert_eq!(serde_json::to_string(&list).unwrap(), old.to_string());
    }
}
