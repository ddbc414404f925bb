//! Models named by Hugging Face Hub id, fetched through `hf-hub` into the standard cache.
//!
//! Three forms (a path that exists locally is never read as one; `load::resolve` checks that
//! first):
//! - `org/name`: a safetensors repo. config.json, tokenizer.json, the optional
//!   tokenizer_config.json, generation_config.json and chat_template.jinja, and either
//!   model.safetensors or model.safetensors.index.json with every shard it lists.
//! - `org/name:Q4_K_M`: a GGUF repo; the `.gguf` file whose name carries that quant (case
//!   does not matter; the quant must stand alone in the name, so `Q4_K` does not pick
//!   `Q4_K_M`). Several matching files, or a quant only stored as split GGUF shards
//!   (`-00001-of-00003.gguf`; infer reads single files), are errors listing the files.
//! - `org/name/path/file.gguf`: that file of the repo.
//!
//! The cache comes first: a model whose files are all in the cache (`refs/main`'s snapshot)
//! loads without a request. Otherwise the files are downloaded with hf-hub's progress bar
//! (drawn only on a terminal), resuming a partial `blobs/<etag>.part` left by an interrupted
//! run. With HF_HUB_OFFLINE set nothing is requested. The environment is read in one place,
//! [`Hub::from_env`]; tests pass the endpoint, cache and token to [`Hub::new`].

use std::fmt;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo};

use crate::error::ModelError;
use crate::load::ModelPath;

/// The Hub when HF_ENDPOINT is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Files of a safetensors repo fetched when the repo has them (config.json, tokenizer.json and
/// the weights are required and handled on their own).
const OPTIONAL_FILES: [&str; 3] = [
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// A `--model` argument read as a Hub id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubId {
    /// `org/name`: a safetensors repo.
    Repo { repo: String },
    /// `org/name:QUANT`: the GGUF file of a repo chosen by quant name.
    Quant { repo: String, quant: String },
    /// `org/name/file.gguf`: one GGUF file of a repo.
    File { repo: String, file: String },
}

impl HubId {
    /// Reads `spec` as a Hub id, or `None` if it does not have one of the three forms.
    pub fn parse(spec: &str) -> Option<HubId> {
        let (path, quant) = match spec.split_once(':') {
            Some((p, q)) => (p, Some(q)),
            None => (spec, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 2 || !valid_repo_part(parts[0]) || !valid_repo_part(parts[1]) {
            return None;
        }
        let repo = format!("{}/{}", parts[0], parts[1]);
        let is_gguf = |s: &str| s.to_ascii_lowercase().ends_with(".gguf");
        match (parts.len(), quant) {
            (2, None) if !is_gguf(parts[1]) => Some(HubId::Repo { repo }),
            (2, Some(q)) if valid_quant(q) => Some(HubId::Quant {
                repo,
                quant: q.into(),
            }),
            (n, None)
                if n > 2
                    && is_gguf(path)
                    && parts[2..]
                        .iter()
                        .all(|p| !p.is_empty() && *p != "." && *p != "..") =>
            {
                Some(HubId::File {
                    repo,
                    file: parts[2..].join("/"),
                })
            }
            _ => None,
        }
    }

    /// The repo, `org/name`.
    pub fn repo(&self) -> &str {
        match self {
            HubId::Repo { repo } | HubId::Quant { repo, .. } | HubId::File { repo, .. } => repo,
        }
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubId::Repo { repo } => write!(f, "{repo}"),
            HubId::Quant { repo, quant } => write!(f, "{repo}:{quant}"),
            HubId::File { repo, file } => write!(f, "{repo}/{file}"),
        }
    }
}

/// An org or repo name: letters, digits, `-`, `_`, `.`, not starting or ending with `-` or
/// `.`, at most 96 characters (the Hub's rule).
fn valid_repo_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
        && !s.contains("..")
}

fn valid_quant(q: &str) -> bool {
    !q.is_empty() && q.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why a Hub id did not give a model. Each names the repo and, where there is one, the file.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("Hugging Face repo `{repo}` not found at {endpoint}{hint}")]
    RepoNotFound {
        repo: String,
        endpoint: String,
        hint: &'static str,
    },
    #[error("`{file}` not found in the Hugging Face repo `{repo}`")]
    FileNotFound { repo: String, file: String },
    #[error("no GGUF file for quant `{quant}` in `{repo}`; quants available: {available}")]
    NoQuant {
        repo: String,
        quant: String,
        available: String,
    },
    #[error(
        "quant `{quant}` matches several files in `{repo}`: {files}; name one as `{repo}/<file>`"
    )]
    SeveralFiles {
        repo: String,
        quant: String,
        files: String,
    },
    #[error(
        "quant `{quant}` of `{repo}` is a split GGUF ({files}); infer reads single-file GGUFs, \
         so pick another quant"
    )]
    SplitGguf {
        repo: String,
        quant: String,
        files: String,
    },
    #[error(
        "`{repo}` has no config.json, so it is not a safetensors model repo; for its GGUF files \
         name a quant (`{repo}:<QUANT>`), available: {available}"
    )]
    NotSafetensors { repo: String, available: String },
    #[error(
        "`{repo}` has neither model.safetensors nor model.safetensors.index.json (safetensors \
         files: {found})"
    )]
    NoWeights { repo: String, found: String },
    #[error("access to `{repo}` denied (HTTP {status}{gated}): {hint}")]
    Unauthorized {
        repo: String,
        status: u16,
        gated: &'static str,
        hint: &'static str,
    },
    #[error(
        "cannot reach {endpoint} to fetch `{id}` ({reason}), and it is not in the cache {}",
        cache.display()
    )]
    Unreachable {
        endpoint: String,
        id: String,
        cache: PathBuf,
        reason: String,
    },
    #[error("HF_HUB_OFFLINE is set and `{id}` is not in the cache {}", cache.display())]
    NotCached { id: String, cache: PathBuf },
    #[error("fetching `{file}` from `{repo}`: HTTP {status}")]
    Http {
        repo: String,
        file: String,
        status: u16,
    },
    #[error("fetching `{file}` from `{repo}`: {reason}")]
    Download {
        repo: String,
        file: String,
        reason: String,
    },
    #[error("{}: not a valid model.safetensors.index.json: {reason}", path.display())]
    BadIndex { path: PathBuf, reason: String },
}

impl From<HubError> for ModelError {
    fn from(e: HubError) -> Self {
        ModelError::Invalid(format!(
            "not a local file or folder, and as a Hugging Face Hub id: {e}"
        ))
    }
}

/// Where and how Hub ids are fetched.
#[derive(Clone, Debug)]
pub struct Hub {
    endpoint: String,
    cache_dir: PathBuf,
    token: Option<String>,
    offline: bool,
    progress: bool,
}

impl Hub {
    /// A Hub at `endpoint` (`https://huggingface.co`) caching into `cache_dir` (the `hub`
    /// folder: `models--org--name/...`), online, with a progress bar.
    pub fn new(endpoint: &str, cache_dir: impl Into<PathBuf>, token: Option<String>) -> Hub {
        Hub {
            endpoint: endpoint.trim_end_matches('/').into(),
            cache_dir: cache_dir.into(),
            token,
            offline: false,
            progress: true,
        }
    }

    /// With `offline`, only the cache is read.
    pub fn offline(mut self, offline: bool) -> Hub {
        self.offline = offline;
        self
    }

    /// Whether downloads draw a progress bar (on stderr, when it is a terminal).
    pub fn progress(mut self, progress: bool) -> Hub {
        self.progress = progress;
        self
    }

    /// The Hub the environment names, as `huggingface_hub` reads it: HF_ENDPOINT; the cache
    /// HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
    /// ~/.cache/huggingface/hub; the token HF_TOKEN, else the file HF_TOKEN_PATH, else
    /// HF_HOME/token; HF_HUB_OFFLINE=1 (or true/yes/on) for no requests.
    pub fn from_env() -> Hub {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let home = var("HF_HOME")
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|x| Path::new(&x).join("huggingface")))
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache/huggingface")))
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface"));
        let cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token_file = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| std::fs::read_to_string(token_file).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Hub::new(&endpoint, cache, token).offline(offline)
    }

    /// The cache folder (`.../hub`).
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The model `id` names: from the cache if all its files are there, else downloaded.
    pub fn resolve(&self, id: &HubId) -> Result<ModelPath, HubError> {
        if let Some(p) = self.cached(id)? {
            return Ok(p);
        }
        if self.offline {
            return Err(HubError::NotCached {
                id: id.to_string(),
                cache: self.repo_cache(id.repo()),
            });
        }
        let f = Fetch {
            hub: self,
            id,
            repo: self.api(id)?.repo(Repo::model(id.repo().into())),
        };
        match id {
            HubId::File { file, .. } => Ok(ModelPath::Gguf(f.get(file)?)),
            HubId::Quant { quant, .. } => {
                let files = f.files()?;
                let file = pick_quant(id.repo(), &files, quant)?;
                Ok(ModelPath::Gguf(f.get(&file)?))
            }
            HubId::Repo { repo } => {
                let files = f.files()?;
                let has = |name: &str| files.iter().any(|s| s == name);
                if !has("config.json") {
                    return Err(HubError::NotSafetensors {
                        repo: repo.clone(),
                        available: quants_available(&files),
                    });
                }
                let index = "model.safetensors.index.json";
                if !has(index) && !has("model.safetensors") {
                    let found: Vec<&str> = files
                        .iter()
                        .filter(|s| s.ends_with(".safetensors"))
                        .map(String::as_str)
                        .collect();
                    return Err(HubError::NoWeights {
                        repo: repo.clone(),
                        found: list_or_none(&found),
                    });
                }
                let config = f.get("config.json")?;
                f.get("tokenizer.json")?;
                for name in OPTIONAL_FILES.into_iter().filter(|n| has(n)) {
                    f.get(name)?;
                }
                if has(index) {
                    for shard in index_shards(&f.get(index)?)? {
                        f.get(&shard)?;
                    }
                } else {
                    f.get("model.safetensors")?;
                }
                let dir = config
                    .parent()
                    .expect("a cached file sits in a snapshot folder");
                Ok(ModelPath::HfDir(dir.into()))
            }
        }
    }

    fn api(&self, id: &HubId) -> Result<Api, HubError> {
        ApiBuilder::from_cache(Cache::new(self.cache_dir.clone()))
            .with_endpoint(self.endpoint.clone())
            .with_token(self.token.clone())
            .with_progress(self.progress)
            .with_retries(2)
            .with_user_agent("infer", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| HubError::Download {
                repo: id.repo().into(),
                file: id.to_string(),
                reason: format!("building the HTTP client: {e}"),
            })
    }

    /// `cache_dir/models--org--name`.
    fn repo_cache(&self, repo: &str) -> PathBuf {
        self.cache_dir
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// The cached model, if every file it needs is in a snapshot (`refs/main`'s first).
    fn cached(&self, id: &HubId) -> Result<Option<ModelPath>, HubError> {
        let root = self.repo_cache(id.repo());
        let mut snaps: Vec<PathBuf> = Vec::new();
        if let Ok(commit) = std::fs::read_to_string(root.join("refs/main")) {
            snaps.push(root.join("snapshots").join(commit.trim()));
        }
        if let Ok(rd) = std::fs::read_dir(root.join("snapshots")) {
            let mut rest: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !snaps.contains(p))
                .collect();
            rest.sort();
            snaps.extend(rest);
        }
        for dir in snaps.into_iter().filter(|d| d.is_dir()) {
            match id {
                HubId::File { file, .. } => {
                    if dir.join(file).is_file() {
                        return Ok(Some(ModelPath::Gguf(dir.join(file))));
                    }
                }
                HubId::Quant { repo, quant } => {
                    let files = list_files(&dir);
                    if let Ok(file) = pick_quant(repo, &files, quant)
                        && dir.join(&file).is_file()
                    {
                        return Ok(Some(ModelPath::Gguf(dir.join(file))));
                    }
                }
                HubId::Repo { .. } => {
                    if safetensors_complete(&dir)? {
                        return Ok(Some(ModelPath::HfDir(dir)));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// One resolution's requests, with errors naming the repo and file.
struct Fetch<'a> {
    hub: &'a Hub,
    id: &'a HubId,
    repo: ApiRepo,
}

impl Fetch<'_> {
    /// The repo's file list (`/api/models/{repo}/revision/main`'s `siblings`).
    fn files(&self) -> Result<Vec<String>, HubError> {
        let info = self.repo.info().map_err(|e| self.error(e, None))?;
        Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
    }

    /// One file, from the cache or downloaded (resuming a partial download).
    fn get(&self, file: &str) -> Result<PathBuf, HubError> {
        self.repo.get(file).map_err(|e| self.error(e, Some(file)))
    }

    fn error(&self, e: ApiError, file: Option<&str>) -> HubError {
        let repo = self.id.repo().to_string();
        let file_name = file.unwrap_or("the file list").to_string();
        let ApiError::RequestError(e) = e else {
            return HubError::Download {
                repo,
                file: file_name,
                reason: e.to_string(),
            };
        };
        match *e {
            ureq::Error::Status(status, resp) => {
                let code = resp.header("x-error-code").unwrap_or("").to_string();
                let not_found = || HubError::RepoNotFound {
                    repo: repo.clone(),
                    endpoint: self.hub.endpoint.clone(),
                    hint: match (status, &self.hub.token) {
                        (401 | 403, None) => " (if it is private, set HF_TOKEN)",
                        _ => "",
                    },
                };
                match (code.as_str(), status, file) {
                    ("RepoNotFound", ..) => not_found(),
                    ("EntryNotFound", _, Some(f)) | (_, 404, Some(f)) => HubError::FileNotFound {
                        repo,
                        file: f.into(),
                    },
                    (_, 404, None) => not_found(),
                    ("GatedRepo", ..) | (_, 401 | 403, _) => HubError::Unauthorized {
                        repo,
                        status,
                        gated: if code == "GatedRepo" { ", gated" } else { "" },
                        hint: if self.hub.token.is_some() {
                            "the token in HF_TOKEN cannot read it; accept the repo's terms on \
                             its Hub page or use a token with access"
                        } else {
                            "set HF_TOKEN to a token with access (after accepting the repo's \
                             terms on its Hub page, if it is gated)"
                        },
                    },
                    _ => HubError::Http {
                        repo,
                        file: file_name,
                        status,
                    },
                }
            }
            ureq::Error::Transport(t) => HubError::Unreachable {
                endpoint: self.hub.endpoint.clone(),
                id: self.id.to_string(),
                cache: self.hub.repo_cache(self.id.repo()),
                reason: t.to_string(),
            },
        }
    }
}

/// A safetensors snapshot has config.json, tokenizer.json and all its weights.
fn safetensors_complete(dir: &Path) -> Result<bool, HubError> {
    if !dir.join("config.json").is_file() || !dir.join("tokenizer.json").is_file() {
        return Ok(false);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return Ok(index_shards(&index)?.iter().all(|s| dir.join(s).is_file()));
    }
    Ok(dir.join("model.safetensors").is_file())
}

/// The shard files a `model.safetensors.index.json` names, each once, in order.
fn index_shards(path: &Path) -> Result<Vec<String>, HubError> {
    let bad = |reason: String| HubError::BadIndex {
        path: path.into(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut shards: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .filter(|f| !f.is_empty() && !f.split('/').any(|c| c == ".." || c.is_empty()))
            .ok_or_else(|| bad(format!("`weight_map.{tensor}` is not a file name")))?;
        if !shards.iter().any(|s| s == file) {
            shards.push(file.into());
        }
    }
    Ok(shards)
}

/// Every file under `dir`, relative, `/`-separated.
fn list_files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("{prefix}{name}");
            let path = e.path();
            if path.is_dir() {
                if depth < 8 {
                    walk(&path, &format!("{rel}/"), depth + 1, out);
                }
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", 0, &mut out);
    out.sort();
    out
}

fn basename(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

fn is_gguf(file: &str) -> bool {
    file.to_ascii_lowercase().ends_with(".gguf")
}

/// A split GGUF shard: `...-00001-of-00003.gguf`.
fn is_split(file: &str) -> bool {
    let stem = &file[..file.len() - ".gguf".len()];
    let b = stem.as_bytes();
    b.len() >= 15
        && b[b.len() - 15] == b'-'
        && b[b.len() - 14..b.len() - 9].iter().all(u8::is_ascii_digit)
        && &b[b.len() - 9..b.len() - 5] == b"-of-"
        && b[b.len() - 5..].iter().all(u8::is_ascii_digit)
}

/// Whether `quant` stands alone in `name` (case ignored): the characters around it are not
/// letters, digits or `_`, so `Q4_K` does not match `Q4_K_M`.
fn names_quant(name: &str, quant: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let quant = quant.to_ascii_uppercase();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    name.match_indices(&quant).any(|(i, _)| {
        !word(name[..i].chars().next_back()) && !word(name[i + quant.len()..].chars().next())
    })
}

/// The GGUF file of `files` that carries `quant`.
fn pick_quant(repo: &str, files: &[String], quant: &str) -> Result<String, HubError> {
    let matches: Vec<&String> = files
        .iter()
        .filter(|f| is_gguf(f) && names_quant(basename(f), quant))
        .collect();
    let single: Vec<&String> = matches.iter().copied().filter(|f| !is_split(f)).collect();
    let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    match (single.as_slice(), matches.as_slice()) {
        ([one], _) => Ok((*one).clone()),
        ([], []) => Err(HubError::NoQuant {
            repo: repo.into(),
            quant: quant.into(),
            available: quants_available(files),
        }),
        ([], split) => Err(HubError::SplitGguf {
            repo: repo.into(),
            quant: quant.into(),
            files: list(split),
        }),
        (several, _) => Err(HubError::SeveralFiles {
            repo: repo.into(),
            quant: quant.into(),
            files: list(several),
        }),
    }
}

/// The quant names in a repo's GGUF file names (`Q4_K_M`, `IQ4_XS`, `F16`, ...), sorted;
/// a file with none is listed by name.
fn quants_available(files: &[String]) -> String {
    let mut found: Vec<String> = Vec::new();
    for f in files.iter().filter(|f| is_gguf(f)) {
        let name = basename(f);
        let stem = &name[..name.len() - ".gguf".len()];
        let stem = if is_split(name) {
            &stem[..stem.len() - 15]
        } else {
            stem
        };
        let quants: Vec<String> = stem
            .split(['-', '.'])
            .map(str::to_ascii_uppercase)
            .filter(|t| is_quant_token(t))
            .collect();
        if quants.is_empty() {
            found.push(name.into());
        }
        found.extend(quants);
    }
    found.sort();
    found.dedup();
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    list_or_none(&found)
}

fn is_quant_token(t: &str) -> bool {
    let digit_after = |p: &str| {
        t.strip_prefix(p)
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    };
    digit_after("Q")
        || digit_after("IQ")
        || digit_after("TQ")
        || matches!(t, "F16" | "BF16" | "F32" | "FP16" | "FP32" | "MXFP4")
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_three_forms_and_nothing_else() {
        let repo = |r: &str| Some(HubId::Repo { repo: r.into() });
        assert_eq!(HubId::parse("org/name"), repo("org/name"));
        assert_eq!(HubId::parse("Org-1/na.me_2"), repo("Org-1/na.me_2"));
        assert_eq!(
            HubId::parse("org/name:q4_k_m"),
            Some(HubId::Quant {
                repo: "org/name".into(),
                quant: "q4_k_m".into()
            })
        );
        assert_eq!(
            HubId::parse("org/name/sub/m-Q8_0.GGUF"),
            Some(HubId::File {
                repo: "org/name".into(),
                file: "sub/m-Q8_0.GGUF".into()
            })
        );
        for not in [
            "name",
            "/abs/path",
            "./rel/dir",
            "../x/y",
            "models/file.gguf",
            "org/name/config.json",
            "org/name:",
            "org/name:Q4-K",
            "org/name/../x.gguf",
            "org//x.gguf",
            "C:/models/x",
            "org/na me",
        ] {
            assert_eq!(HubId::parse(not), None, "{not}");
        }
        for s in ["org/name", "org/name:Q4_K_M", "org/name/a/b.gguf"] {
            assert_eq!(HubId::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn picks_the_file_by_quant() {
        let f = files(&[
            "README.md",
            "m-Q4_K_M.gguf",
            "m-Q4_K_S.gguf",
            "m.q8_0.gguf",
            "m-Q4_K_M-imat.txt",
            "big/m-Q6_K-00001-of-00002.gguf",
            "big/m-Q6_K-00002-of-00002.gguf",
            "m-IQ4_XS.gguf",
            "m-IQ4_XS-v2.gguf",
        ]);
        assert_eq!(pick_quant("o/m", &f, "q4_k_m").unwrap(), "m-Q4_K_M.gguf");
        assert_eq!(pick_quant("o/m", &f, "Q8_0").unwrap(), "m.q8_0.gguf");
        match pick_quant("o/m", &f, "Q4_K") {
            Err(HubError::NoQuant { available, .. }) => assert_eq!(
                available, "IQ4_XS, Q4_K_M, Q4_K_S, Q6_K, Q8_0",
                "every quant listed once"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pick_quant("o/m", &f, "Q6_K"),
            Err(HubError::SplitGguf { .. })
        ));
        match pick_quant("o/m", &f, "iq4_xs") {
            Err(e @ HubError::SeveralFiles { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("m-IQ4_XS.gguf, m-IQ4_XS-v2.gguf"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn split_names() {
        assert!(is_split("a-Q4_K-00001-of-00003.gguf"));
        assert!(!is_split("a-Q4_K.gguf"));
        assert!(!is_split("x.gguf"));
        assert!(!is_split("éééééééééé.gguf"));
        assert!(!is_split("a-0001-of-00003.gguf"));
    }
}
