//! Hub ids (`org/name`, `org/name:QUANT`, `org/name/file.gguf`) against a stand-in Hub on
//! 127.0.0.1 serving the endpoints hf-hub's blocking client calls: `/api/models/{repo}/
//! revision/main` (the `siblings` list) and `/{repo}/resolve/main/{file}` (ETag,
//! X-Repo-Commit, Content-Range, ranges), with the Hub's X-Error-Code on 401 and 404.
//! The files are the tiny GPT-2 fixture checkpoint (tests/fixtures/arch/gpt2), so a resolved
//! model is opened by the loader. One test, its cases in order: the environment
//! (HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE) is process-wide.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use infer_models::hub::{Hub, HubError, HubId};
use infer_models::load::{self, ModelPath};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_token";

/// A repo of the stand-in Hub: file name to bytes; a gated one wants `Bearer TOKEN`.
struct RepoFiles {
    files: BTreeMap<String, Vec<u8>>,
    gated: bool,
}

/// The ETag (and so the cache's blob name) of a file: FNV-1a of its bytes.
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

struct StandIn {
    endpoint: String,
    /// `GET path [range]`, one line per request.
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    fn start(repos: BTreeMap<String, RepoFiles>) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let repos = Arc::new(repos);
        let thread = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (repos, log) = (repos.clone(), log.clone());
                    std::thread::spawn(move || serve(conn, &repos, &log));
                }
            })
        };
        StandIn {
            endpoint,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// Closes the port: later requests fail to connect.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
    let _ = conn.flush();
}

fn serve(mut conn: TcpStream, repos: &BTreeMap<String, RepoFiles>, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    log.lock().expect("log").push(format!(
        "{method} {path}{}",
        range.as_ref().map(|r| format!(" {r}")).unwrap_or_default()
    ));
    let error = |conn: &mut TcpStream, status: &str, code: &str| {
        let body = format!("{{\"error\":\"{code}\"}}");
        respond(
            conn,
            status,
            &[("X-Error-Code", code.into())],
            body.as_bytes(),
        )
    };
    let authorised =
        |r: &RepoFiles| !r.gated || auth.as_deref() == Some(&format!("Bearer {TOKEN}"));

    if let Some(rest) = path.strip_prefix("/api/models/") {
        let repo = rest.strip_suffix("/revision/main").unwrap_or(rest);
        match repos.get(repo) {
            None => error(&mut conn, "404 Not Found", "RepoNotFound"),
            Some(r) if !authorised(r) => error(&mut conn, "401 Unauthorized", "GatedRepo"),
            Some(r) => {
                let siblings: Vec<serde_json::Value> = r
                    .files
                    .keys()
                    .map(|f| serde_json::json!({ "rfilename": f }))
                    .collect();
                let body = serde_json::json!({ "id": repo, "sha": COMMIT, "siblings": siblings });
                respond(
                    &mut conn,
                    "200 OK",
                    &[("Content-Type", "application/json".into())],
                    body.to_string().as_bytes(),
                );
            }
        }
        return;
    }
    let Some((repo, file)) = path.trim_start_matches('/').split_once("/resolve/main/") else {
        return error(&mut conn, "404 Not Found", "RepoNotFound");
    };
    let Some(r) = repos.get(repo) else {
        return error(&mut conn, "404 Not Found", "RepoNotFound");
    };
    if !authorised(r) {
        return error(&mut conn, "401 Unauthorized", "GatedRepo");
    }
    let Some(bytes) = r.files.get(file) else {
        return error(&mut conn, "404 Not Found", "EntryNotFound");
    };
    let size = bytes.len();
    let mut headers = vec![
        ("ETag", format!("\"{}\"", etag(bytes))),
        ("X-Repo-Commit", COMMIT.into()),
        ("Accept-Ranges", "bytes".into()),
    ];
    let Some(range) = range else {
        return respond(&mut conn, "200 OK", &headers, bytes);
    };
    let (a, b) = range
        .trim_start_matches("bytes=")
        .split_once('-')
        .expect("a bytes=a-b range");
    let a: usize = a.parse().expect("range start");
    let b: usize = if b.is_empty() {
        size - 1
    } else {
        b.parse::<usize>().expect("range end").min(size - 1)
    };
    if a >= size {
        return respond(&mut conn, "416 Range Not Satisfiable", &headers, b"");
    }
    headers.push(("Content-Range", format!("bytes {a}-{b}/{size}")));
    respond(&mut conn, "206 Partial Content", &headers, &bytes[a..=b]);
}

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("infer-hub-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn id(s: &str) -> HubId {
    HubId::parse(s).unwrap_or_else(|| panic!("`{s}` is a Hub id"))
}

fn repos() -> BTreeMap<String, RepoFiles> {
    let gpt2 = common::fixtures("arch/gpt2");
    let mut st = BTreeMap::new();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        st.insert(f.to_string(), read(&gpt2.join(f)));
    }
    st.insert("README.md".into(), b"# tiny gpt2\n".to_vec());
    st.insert("onnx/model.onnx".into(), b"not fetched".to_vec());

    let gguf = read(&gpt2.join("model.gguf"));
    let mut gg = BTreeMap::new();
    gg.insert("tiny-Q4_K_M.gguf".to_string(), gguf.clone());
    gg.insert("tiny-Q4_K_S.gguf".into(), b"GGUF q4_k_s".to_vec());
    gg.insert("tiny.Q8_0.gguf".into(), b"GGUF q8_0".to_vec());
    gg.insert(
        "split/tiny-Q6_K-00001-of-00002.gguf".into(),
        b"GGUF 1".to_vec(),
    );
    gg.insert(
        "split/tiny-Q6_K-00002-of-00002.gguf".into(),
        b"GGUF 2".to_vec(),
    );
    gg.insert("README.md".into(), b"# tiny gguf\n".to_vec());

    let mut gated = BTreeMap::new();
    gated.insert("m-Q8_0.gguf".to_string(), gguf);

    // The same weights as two shards with an index, and a repo without loadable weights.
    let st_bytes = read(&gpt2.join("model.safetensors"));
    let parsed = safetensors::SafeTensors::deserialize(&st_bytes).expect("fixture safetensors");
    let mut tensors = parsed.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let mut sharded = BTreeMap::new();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [first, second].into_iter().enumerate() {
        let name = format!("model-0000{}-of-00002.safetensors", i + 1);
        for (t, _) in part {
            weight_map.insert(t.clone(), name.clone().into());
        }
        let bytes = safetensors::serialize(part.iter().map(|(n, v)| (n, v)), None)
            .expect("serialize a shard");
        sharded.insert(name, bytes);
    }
    sharded.insert(
        "model.safetensors.index.json".to_string(),
        serde_json::json!({ "metadata": {}, "weight_map": weight_map })
            .to_string()
            .into_bytes(),
    );
    let mut no_weights = BTreeMap::new();
    for f in ["config.json", "tokenizer.json"] {
        sharded.insert(f.to_string(), read(&gpt2.join(f)));
        no_weights.insert(f.to_string(), read(&gpt2.join(f)));
    }
    sharded.insert("consolidated.safetensors".into(), b"not fetched".to_vec());
    no_weights.insert("consolidated.safetensors".into(), st_bytes.clone());

    let mut r = BTreeMap::new();
    r.insert(
        "tiny/sharded".to_string(),
        RepoFiles {
            files: sharded,
            gated: false,
        },
    );
    r.insert(
        "tiny/noweights".to_string(),
        RepoFiles {
            files: no_weights,
            gated: false,
        },
    );
    r.insert(
        "tiny/gpt2".to_string(),
        RepoFiles {
            files: st,
            gated: false,
        },
    );
    r.insert(
        "tiny/gguf".into(),
        RepoFiles {
            files: gg,
            gated: false,
        },
    );
    r.insert(
        "tiny/gated".into(),
        RepoFiles {
            files: gated,
            gated: true,
        },
    );
    r
}

#[test]
fn hub_ids_download_resolve_from_cache_and_fail_clearly() {
    // ureq 2 (hf-hub's client) takes a proxy from the environment and has no NO_PROXY: the
    // stand-in on 127.0.0.1 is reached directly.
    // SAFETY: this is the only test of this binary and no thread has started yet.
    unsafe {
        for k in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY"] {
            std::env::remove_var(k);
            std::env::remove_var(k.to_ascii_lowercase());
        }
    }
    let mut server = StandIn::start(repos());
    let tmp = TempDir::new("cache");
    let cache = tmp.0.join("hub");
    let hub = Hub::new(&server.endpoint, &cache, None).progress(false);
    let snapshot = cache.join("models--tiny--gpt2/snapshots").join(COMMIT);
    let gpt2 = common::fixtures("arch/gpt2");

    // org/name, resuming a partial blob of model.safetensors left by an interrupted run.
    let weights = read(&gpt2.join("model.safetensors"));
    let blobs = cache.join("models--tiny--gpt2/blobs");
    std::fs::create_dir_all(&blobs).expect("blobs dir");
    let half = weights.len() / 2;
    std::fs::write(
        blobs.join(format!("{}.part", etag(&weights))),
        &weights[..half],
    )
    .expect("write part");
    let path = hub.resolve(&id("tiny/gpt2")).expect("tiny/gpt2 resolves");
    assert_eq!(path, ModelPath::HfDir(snapshot.clone()));
    assert_eq!(read(&snapshot.join("model.safetensors")), weights);
    let reqs = server.requests();
    assert!(
        reqs.iter()
            .any(|r| r == &format!("GET /tiny/gpt2/resolve/main/model.safetensors bytes={half}-")),
        "the download resumes at byte {half}: {reqs:#?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.contains("README.md") || r.contains("onnx")),
        "only the model's files are fetched: {reqs:#?}"
    );
    let (src, cfg) = load::open(&path).expect("the loader opens the snapshot");
    load::tokenizer(&path, &src).expect("its tokenizer loads");
    let want = infer_models::ModelConfig::from_hf_dir(&gpt2).expect("fixture config");
    assert_eq!(format!("{cfg:?}"), format!("{want:?}"));

    // A sharded repo: the index and every shard it names, nothing else.
    let sh = hub
        .resolve(&id("tiny/sharded"))
        .expect("tiny/sharded resolves");
    let sh_snap = cache.join("models--tiny--sharded/snapshots").join(COMMIT);
    assert_eq!(sh, ModelPath::HfDir(sh_snap.clone()));
    for f in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(sh_snap.join(f).is_file(), "{f} fetched");
    }
    assert!(!sh_snap.join("consolidated.safetensors").exists());
    let (sh_src, _) = load::open(&sh).expect("the loader opens the shards");
    load::tokenizer(&sh, &sh_src).expect("its tokenizer loads");

    // org/name:QUANT picks the one file that carries the quant, case ignored.
    let q = hub
        .resolve(&id("tiny/gguf:q4_k_m"))
        .expect("tiny/gguf:q4_k_m");
    let gguf_snap = cache.join("models--tiny--gguf/snapshots").join(COMMIT);
    assert_eq!(q, ModelPath::Gguf(gguf_snap.join("tiny-Q4_K_M.gguf")));
    load::open(&q).expect("the loader opens the GGUF");

    // org/name/file.gguf
    let f = hub
        .resolve(&id("tiny/gguf/tiny.Q8_0.gguf"))
        .expect("tiny/gguf/tiny.Q8_0.gguf");
    assert_eq!(f, ModelPath::Gguf(gguf_snap.join("tiny.Q8_0.gguf")));
    assert_eq!(read(&gguf_snap.join("tiny.Q8_0.gguf")), b"GGUF q8_0");

    // Errors name the repo and file.
    let err = |spec: &str, hub: &Hub| match hub.resolve(&id(spec)) {
        Ok(p) => panic!("{spec} resolved to {p:?}"),
        Err(e) => {
            eprintln!("{spec}: {e}");
            e
        }
    };
    let e = err("tiny/missing", &hub);
    assert!(matches!(e, HubError::RepoNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("`tiny/missing` not found"), "{e}");
    let e = err("tiny/missing:Q4_K_M", &hub);
    assert!(matches!(e, HubError::RepoNotFound { .. }), "{e:?}");
    let e = err("tiny/gguf/nope.gguf", &hub);
    assert!(matches!(e, HubError::FileNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("`nope.gguf`"), "{e}");
    let e = err("tiny/gguf:Q3_K_L", &hub);
    assert!(matches!(e, HubError::NoQuant { .. }), "{e:?}");
    assert!(
        e.to_string()
            .ends_with("quants available: Q4_K_M, Q4_K_S, Q6_K, Q8_0"),
        "{e}"
    );
    let e = err("tiny/gguf:Q6_K", &hub);
    assert!(matches!(e, HubError::SplitGguf { .. }), "{e:?}");
    let e = err("tiny/noweights", &hub);
    assert!(matches!(e, HubError::NoWeights { .. }), "{e:?}");
    assert!(e.to_string().contains("consolidated.safetensors"), "{e}");
    let e = err("tiny/gguf", &hub);
    assert!(matches!(e, HubError::NotSafetensors { .. }), "{e:?}");
    assert!(e.to_string().contains("`tiny/gguf:<QUANT>`"), "{e}");
    for spec in ["tiny/gated:Q8_0", "tiny/gated/m-Q8_0.gguf"] {
        let e = err(spec, &hub);
        assert!(
            matches!(e, HubError::Unauthorized { status: 401, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("set HF_TOKEN"), "{e}");
    }
    let wrong = Hub::new(&server.endpoint, &cache, Some("hf_wrong".into())).progress(false);
    let e = err("tiny/gated:Q8_0", &wrong);
    assert!(
        e.to_string()
            .contains("the token in HF_TOKEN cannot read it"),
        "{e}"
    );
    // With the token, the gated repo downloads.
    let authed = Hub::new(&server.endpoint, &cache, Some(TOKEN.into())).progress(false);
    let g = authed
        .resolve(&id("tiny/gated:Q8_0"))
        .expect("with the token");
    assert!(matches!(g, ModelPath::Gguf(_)), "{g:?}");

    // Everything in the cache resolves without a request.
    let before = server.requests().len();
    for (spec, want) in [
        ("tiny/gpt2", &path),
        ("tiny/sharded", &sh),
        ("tiny/gguf:Q4_K_M", &q),
        ("tiny/gguf/tiny.Q8_0.gguf", &f),
    ] {
        assert_eq!(&hub.resolve(&id(spec)).expect(spec), want, "{spec}");
    }
    assert_eq!(
        server.requests().len(),
        before,
        "no request for a cached model"
    );

    // Through `load::resolve`, the environment naming the Hub; a local path wins.
    let home = TempDir::new("home");
    // SAFETY: this is the only test of this binary, so no other thread reads the environment.
    unsafe {
        std::env::set_var("HF_ENDPOINT", &server.endpoint);
        std::env::set_var("HF_HOME", &home.0);
        for k in [
            "HF_HUB_CACHE",
            "HF_TOKEN",
            "HF_TOKEN_PATH",
            "HF_HUB_OFFLINE",
        ] {
            std::env::remove_var(k);
        }
    }
    let p = load::resolve("tiny/gguf:Q4_K_M").expect("load::resolve downloads");
    let env_snap = home.0.join("hub/models--tiny--gguf/snapshots").join(COMMIT);
    assert_eq!(p, ModelPath::Gguf(env_snap.join("tiny-Q4_K_M.gguf")));
    let local = gpt2.to_str().expect("utf-8 path");
    assert_eq!(
        load::resolve(local).expect("local folder"),
        ModelPath::HfDir(gpt2.clone())
    );
    let e = load::resolve("tiny/missing").expect_err("a missing repo");
    assert!(
        e.to_string()
            .starts_with("not a local file or folder, and as a Hugging Face Hub id:"),
        "{e}"
    );
    // SAFETY: as above.
    unsafe { std::env::set_var("HF_HUB_OFFLINE", "1") };
    let before = server.requests().len();
    assert_eq!(
        load::resolve("tiny/gguf:Q4_K_M").expect("offline, from the cache"),
        p
    );
    let e = load::resolve("tiny/gpt2").expect_err("offline and not cached");
    assert!(e.to_string().contains("HF_HUB_OFFLINE is set"), "{e}");
    assert_eq!(
        server.requests().len(),
        before,
        "HF_HUB_OFFLINE: no request"
    );
    // HF_TOKEN is sent; HF_HUB_CACHE overrides HF_HOME/hub.
    let alt = home.0.join("alt-cache");
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("HF_HUB_OFFLINE");
        std::env::set_var("HF_TOKEN", TOKEN);
        std::env::set_var("HF_HUB_CACHE", &alt);
    }
    let g = load::resolve("tiny/gated:Q8_0").expect("HF_TOKEN opens the gated repo");
    let gated_snap = alt.join("models--tiny--gated/snapshots").join(COMMIT);
    assert_eq!(g, ModelPath::Gguf(gated_snap.join("m-Q8_0.gguf")));
    // SAFETY: as above.
    unsafe {
        for k in ["HF_TOKEN", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_HOME"] {
            std::env::remove_var(k);
        }
    }

    // With the stand-in gone: cached models still resolve, others fail as unreachable.
    server.stop();
    let offline = hub.clone().offline(true);
    for h in [&hub, &offline] {
        assert_eq!(h.resolve(&id("tiny/gpt2")).expect("cached"), path);
        assert_eq!(h.resolve(&id("tiny/gguf:Q4_K_M")).expect("cached"), q);
    }
    let e = err("tiny/gguf:Q4_K_S", &hub);
    assert!(matches!(e, HubError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("`tiny/gguf:Q4_K_S`"), "{e}");
    let e = err("tiny/gguf:Q4_K_S", &offline);
    assert!(matches!(e, HubError::NotCached { .. }), "{e:?}");
}
