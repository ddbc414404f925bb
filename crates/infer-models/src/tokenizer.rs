//! Tokenizers from a Hugging Face folder (`tokenizer.json`) or from GGUF metadata, chat
//! templates rendered with minijinja, and an incremental detokenizer for streaming.
//!
//! GGUF tokenizers are rebuilt as the `tokenizer.json` Hugging Face would write for them
//! (see [`gguf_tokenizer_json`]), so both sources run through the same `tokenizers` code.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// One chat turn, as chat templates expect it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A text tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<(String, u32)>,
    eos_token: Option<String>,
    eos_ids: Vec<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos_ids", &self.eos_ids)
            .field("has_chat_template", &self.has_chat_template())
            .finish()
    }
}

fn tok_err(context: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(format!("{context}: {e}"))
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::Corrupt {
            path: path.to_path_buf(),
            what: "JSON file",
            reason: e.to_string(),
        })
}

/// A special token in `tokenizer_config.json`: `"<s>"` or `{"content": "<s>", ...}`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `eos_token_id` in `generation_config.json`/`config.json`: an integer or a list of them.
fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64()?.try_into().ok())
            .collect(),
        Some(x) => x
            .as_u64()
            .and_then(|i| i.try_into().ok())
            .into_iter()
            .collect(),
        None => Vec::new(),
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (required) plus `tokenizer_config.json`, `chat_template.jinja`
    /// and `generation_config.json` (all optional) from a Hugging Face model folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let bytes = fs::read(&tok_path).map_err(|source| ModelError::Io {
            path: tok_path.clone(),
            source,
        })?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| ModelError::Corrupt {
            path: tok_path.clone(),
            what: "tokenizer.json",
            reason: e.to_string(),
        })?;

        let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);

        let template_path = dir.join("chat_template.jinja");
        let chat_template = match fs::read_to_string(&template_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                template_from_config(config.get("chat_template"))
            }
            Err(source) => {
                return Err(ModelError::Io {
                    path: template_path,
                    source,
                });
            }
        };

        let bos_token = token_string(config.get("bos_token"));
        let bos = match bos_token {
            Some(s) => inner.token_to_id(&s).map(|id| (s, id)),
            None => token_ids(generation.get("bos_token_id"))
                .first()
                .and_then(|&id| Some((inner.id_to_token(id)?, id))),
        };
        let eos_token = token_string(config.get("eos_token"));
        let mut eos_ids: Vec<u32> = eos_token
            .as_deref()
            .and_then(|s| inner.token_to_id(s))
            .into_iter()
            .collect();
        for id in token_ids(generation.get("eos_token_id")) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let eos_token = eos_token.or_else(|| inner.id_to_token(*eos_ids.first()?));
        Ok(Tokenizer {
            inner,
            bos,
            eos_token,
            eos_ids,
            chat_template,
        })
    }

    /// Builds the tokenizer a GGUF file describes (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let spec = gguf_tokenizer_json(g)?;
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(spec.json).map_err(|e| ModelError::Corrupt {
                path: g.path.clone(),
                what: "GGUF tokenizer",
                reason: e.to_string(),
            })?;
        let name = |id: u32| inner.id_to_token(id).map(|s| (s, id));
        Ok(Tokenizer {
            bos: spec.bos_id.and_then(name),
            eos_token: spec.eos_id.and_then(|id| inner.id_to_token(id)),
            eos_ids: spec.eos_id.into_iter().collect(),
            chat_template: g
                .get_str_opt("tokenizer.chat_template")?
                .map(str::to_string),
            inner,
        })
    }

    /// Token ids of `text`. With `add_special_tokens` the tokenizer's own post-processor
    /// runs (e.g. adds BOS), as in transformers.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| tok_err("encode", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`. Ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(ModelError::Tokenizer(format!(
                "decode: token id {bad} is not in the vocabulary ({} tokens)",
                self.vocab_size()
            )));
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| tok_err("decode", e))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|b| b.1)
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|b| b.0.as_str())
    }

    /// Every id that ends generation (the EOS token plus `generation_config.json`'s list).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Renders the chat template the way transformers does (trim_blocks, lstrip_blocks,
    /// trailing newline kept, Python string methods, `raise_exception`).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let source = self.chat_template.as_deref().ok_or_else(|| {
            ModelError::ChatTemplate("the tokenizer has no chat template".to_string())
        })?;
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<minijinja::Value, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let template = env
            .template_from_str(source)
            .map_err(|e| ModelError::ChatTemplate(format!("{e:#}")))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token(),
            eos_token => self.eos_token(),
        };
        template
            .render(ctx)
            .map_err(|e| ModelError::ChatTemplate(format!("{e:#}")))
    }
}

/// `chat_template` in `tokenizer_config.json`: a string, or a list of `{name, template}`
/// (the one named "default", else the first).
fn template_from_config(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |n: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(n))
            };
            named("default")
                .or_else(|| list.first())?
                .get("template")?
                .as_str()
                .map(str::to_string)
        }
        _ => None,
    }
}

/// llama.cpp's `tokenizer.ggml.token_type` values.
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Llama 3 style split (also used by several later byte-level vocabularies).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2 split: like Llama 3 but one digit at a time.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.json` content for a GGUF tokenizer, with the special ids it names.
pub struct GgufTokenizerSpec {
    pub json: Value,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
}

/// Translates `tokenizer.ggml.*` into the `tokenizer.json` transformers would build:
/// `gpt2` = byte-level BPE (pre-tokenizer picked by `tokenizer.ggml.pre`), `llama` =
/// SentencePiece BPE with byte fallback (merges recovered from the scores if absent).
pub fn gguf_tokenizer_json(g: &GgufFile) -> Result<GgufTokenizerSpec> {
    let model_key = "tokenizer.ggml.model";
    let model = g.get_str(model_key)?;
    let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
    let n = tokens.len();
    let token_types = match g.get("tokenizer.ggml.token_type") {
        Some(_) => g.get_i32_array("tokenizer.ggml.token_type")?,
        None => Vec::new(),
    };
    if !token_types.is_empty() && token_types.len() != n {
        return Err(ModelError::BadField {
            path: g.path.clone(),
            field: "tokenizer.ggml.token_type".into(),
            reason: format!("{} entries for {n} tokens", token_types.len()),
        });
    }
    let id_field = |key: &str| -> Result<Option<u32>> {
        match g.get_u32_opt(key)? {
            Some(id) if id as usize >= n => Err(ModelError::BadField {
                path: g.path.clone(),
                field: key.into(),
                reason: format!("token id {id} is outside the {n}-token vocabulary"),
            }),
            id => Ok(id),
        }
    };
    let bos_id = id_field("tokenizer.ggml.bos_token_id")?;
    let eos_id = id_field("tokenizer.ggml.eos_token_id")?;
    let unk_id = id_field("tokenizer.ggml.unknown_token_id")?;

    let merges = match g.get("tokenizer.ggml.merges") {
        Some(_) => Some(
            g.get_str_array("tokenizer.ggml.merges")?
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    m.split_once(' ').ok_or_else(|| ModelError::BadField {
                        path: g.path.clone(),
                        field: "tokenizer.ggml.merges".into(),
                        reason: format!("merge {i} ({m:?}) is not two tokens separated by a space"),
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };

    let mut vocab = serde_json::Map::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert((*t).to_string(), json!(i));
    }

    // Control tokens (and the unknown/bos/eos tokens) are special; user-defined ones are
    // plain added tokens, as transformers does.
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let ty = token_types.get(i).copied().unwrap_or(1);
        let id = Some(i as u32);
        let special = ty == TOKEN_TYPE_CONTROL
            || (model == "llama" && ty == TOKEN_TYPE_UNKNOWN)
            || id == bos_id
            || id == eos_id
            || id == unk_id;
        if special || ty == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            }));
        }
    }

    let add_bos_default = model == "llama";
    let add_bos = g
        .get_bool_opt("tokenizer.ggml.add_bos_token")?
        .unwrap_or(add_bos_default);
    let add_eos = g
        .get_bool_opt("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let name = |id: Option<u32>| id.map(|i| tokens[i as usize]);
    let bos = if add_bos { name(bos_id) } else { None };
    let eos = if add_eos { name(eos_id) } else { None };

    let byte_level = json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
    });
    let (normalizer, pre_tokenizer, decoder, model_json, default_post) = match model {
        "gpt2" => {
            let pre = g.get_str_opt("tokenizer.ggml.pre")?.unwrap_or("default");
            let split = |regex: &str| {
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
                ]})
            };
            let (normalizer, pre_tokenizer) = match pre {
                "smollm" => (
                    Value::Null,
                    json!({"type": "Sequence", "pretokenizers": [
                        {"type": "Digits", "individual_digits": true},
                        byte_level.clone(),
                    ]}),
                ),
                "llama-bpe" | "llama3" | "llama-v3" | "dbrx" | "smaug-bpe" | "falcon3" => {
                    (Value::Null, split(LLAMA3_SPLIT))
                }
                "qwen2" | "deepseek-r1-qwen" => (json!({"type": "NFC"}), split(QWEN2_SPLIT)),
                // "default", "gpt2" and anything unknown: GPT-2's own regex.
                _ => (Value::Null, byte_level.clone()),
            };
            let merges = merges.ok_or_else(|| ModelError::MissingField {
                path: g.path.clone(),
                field: "tokenizer.ggml.merges".into(),
            })?;
            let model_json = json!({
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            });
            let post = json!({
                "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true,
            });
            (
                normalizer,
                pre_tokenizer,
                byte_level.clone(),
                model_json,
                post,
            )
        }
        "llama" => {
            let merges = match merges {
                Some(m) => m,
                None => {
                    let scores = g.get_f32_array("tokenizer.ggml.scores")?;
                    if scores.len() != n {
                        return Err(ModelError::BadField {
                            path: g.path.clone(),
                            field: "tokenizer.ggml.scores".into(),
                            reason: format!("{} scores for {n} tokens", scores.len()),
                        });
                    }
                    merges_from_scores(&tokens, &scores)
                }
            };
            let mut normalizers = Vec::new();
            if g.get_bool_opt("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true)
            {
                normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
            }
            normalizers.push(
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            );
            let decoder = json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ]});
            let model_json = json!({
                "type": "BPE", "dropout": null, "unk_token": name(unk_id).unwrap_or("<unk>"),
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            });
            (
                json!({"type": "Sequence", "normalizers": normalizers}),
                Value::Null,
                decoder,
                model_json,
                Value::Null,
            )
        }
        other => {
            return Err(ModelError::BadField {
                path: g.path.clone(),
                field: model_key.into(),
                reason: format!("unsupported tokenizer model `{other}` (supported: gpt2, llama)"),
            });
        }
    };

    let post_processor = if bos.is_some() || eos.is_some() {
        template_processing(bos.zip(bos_id), eos.zip(eos_id))
    } else {
        default_post
    };

    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": model_json,
    });
    Ok(GgufTokenizerSpec {
        json,
        bos_id,
        eos_id,
    })
}

/// A `TemplateProcessing` that wraps each sequence in optional BOS/EOS (like HF's Llama).
fn template_processing(bos: Option<(&str, u32)>, eos: Option<(&str, u32)>) -> Value {
    let special = |t: Option<(&str, u32)>, type_id: u32| {
        t.map(|(s, _)| json!({"SpecialToken": {"id": s, "type_id": type_id}}))
    };
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let single: Vec<Value> = [special(bos, 0), Some(seq("A", 0)), special(eos, 0)]
        .into_iter()
        .flatten()
        .collect();
    let mut pair = single.clone();
    pair.extend(
        [special(bos, 1), Some(seq("B", 1)), special(eos, 1)]
            .into_iter()
            .flatten(),
    );
    let mut specials = serde_json::Map::new();
    for (s, id) in [bos, eos].into_iter().flatten() {
        specials.insert(s.to_string(), json!({"id": s, "ids": [id], "tokens": [s]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// SentencePiece merges recovered from the vocabulary, as HF's `SentencePieceExtractor` does:
/// every split of a token into two tokens is a merge, ranked by the merged token's score
/// (highest first; ties keep vocabulary order, splits ordered by the pieces' ids).
pub fn merges_from_scores<'a>(tokens: &[&'a str], scores: &[f32]) -> Vec<(&'a str, &'a str)> {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        ids.insert(t, i);
    }
    let mut merges: Vec<(f32, &str, &str)> = Vec::new();
    for (i, &merged) in tokens.iter().enumerate() {
        if ids.get(merged) != Some(&i) {
            continue; // a duplicate spelling; its last occurrence stands for it
        }
        let mut local: Vec<(usize, usize, &str, &str)> = merged
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = merged.split_at(at);
                Some((*ids.get(l)?, *ids.get(r)?, l, r))
            })
            .collect();
        local.sort_by_key(|&(li, ri, ..)| (li, ri));
        merges.extend(local.into_iter().map(|(.., l, r)| (scores[i], l, r)));
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges.into_iter().map(|(_, l, r)| (l, r)).collect()
}

/// Incremental detokenizer: feeds ids one at a time and returns text once it is complete.
///
/// It decodes a short window of recent ids and emits the text beyond what the window's
/// prefix already produced, holding back while the text ends in U+FFFD (a UTF-8 character
/// split across tokens). Concatenating every chunk and [`StreamDecoder::finish`] gives
/// `decode(all ids)`.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// `ids[prefix..read]` has been emitted and is decoded again only as context.
    prefix: usize,
    read: usize,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer, skip_special_tokens: bool) -> Self {
        Self::with_context(tok, &[], skip_special_tokens)
    }

    /// Starts after `context` (e.g. the last few prompt ids), which is never emitted but
    /// gives the first generated token its leading space where the decoder depends on it.
    pub fn with_context(tok: &'a Tokenizer, context: &[u32], skip_special_tokens: bool) -> Self {
        StreamDecoder {
            tok,
            skip_special_tokens,
            ids: context.to_vec(),
            prefix: 0,
            read: context.len(),
        }
    }

    /// Adds one id; returns the newly completed text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let (prefix_text, new_text) = self.window()?;
        if new_text.len() <= prefix_text.len() || new_text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let chunk = suffix_after(&new_text, &prefix_text);
        self.ids.drain(..self.read);
        self.prefix = 0;
        self.read = self.ids.len();
        Ok(Some(chunk))
    }

    /// Returns whatever text is still held back (possibly ending in U+FFFD) and resets.
    pub fn finish(&mut self) -> Result<String> {
        let (prefix_text, new_text) = self.window()?;
        let rest = suffix_after(&new_text, &prefix_text);
        self.ids.clear();
        self.prefix = 0;
        self.read = 0;
        Ok(rest)
    }

    fn window(&self) -> Result<(String, String)> {
        let skip = self.skip_special_tokens;
        let prefix_text = self.tok.decode(&self.ids[self.prefix..self.read], skip)?;
        let new_text = self.tok.decode(&self.ids[self.prefix..], skip)?;
        Ok((prefix_text, new_text))
    }
}

/// `new` without its leading `old`; if the decoder rewrote the shared part, everything after
/// the longest common prefix.
fn suffix_after(new: &str, old: &str) -> String {
    if let Some(rest) = new.strip_prefix(old) {
        return rest.to_string();
    }
    let common = new
        .char_indices()
        .zip(old.chars())
        .find(|((_, a), b)| a != b)
        .map_or(new.len().min(old.len()), |((i, _), _)| i);
    let start = (0..=common)
        .rev()
        .find(|&i| new.is_char_boundary(i))
        .unwrap_or(0);
    new[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_scores_then_ids() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        let scores = [0.0, 0.0, 0.0, -1.0, -0.5, -2.0];
        let m = merges_from_scores(&tokens, &scores);
        assert_eq!(m, vec![("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]);
    }

    #[test]
    fn template_from_config_forms() {
        assert_eq!(
            template_from_config(Some(&json!("x"))).as_deref(),
            Some("x")
        );
        let list =
            json!([{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}]);
        assert_eq!(template_from_config(Some(&list)).as_deref(), Some("d"));
        assert_eq!(template_from_config(Some(&json!(3))), None);
    }

    #[test]
    fn suffix_after_handles_rewrites() {
        assert_eq!(suffix_after("hello world", "hello"), " world");
        assert_eq!(suffix_after("héllo", "hx"), "éllo");
    }
}
