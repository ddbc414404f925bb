//! `infer bench-serve`: a bounded load generator for `infer serve`. For each concurrency
//! level, `c` client threads each run streaming completions back to back until `requests`
//! have finished; it reports aggregate generated tok/s and p50/p99 time-to-first-token and
//! inter-token latency. Also the prefill tok/s of one long prompt (a non-streaming request
//! with max_tokens 1), measured in the same run. `cargo xtask bench serve` reads `--json`.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

/// One concurrency level's figures.
#[derive(Clone, Debug)]
pub struct LevelResult {
    pub concurrency: usize,
    pub requests: usize,
    pub failed: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub tok_s: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub itl_p50_ms: f64,
    pub itl_p99_ms: f64,
}

/// Settings of a load run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// `host:port` of the server.
    pub addr: String,
    pub model: String,
    pub levels: Vec<usize>,
    /// Requests per level (at least the concurrency).
    pub requests: usize,
    pub max_tokens: usize,
    pub prompt: String,
    /// Words in the long prompt of the prefill figure (0 = skip).
    pub long_prompt_words: usize,
}

/// Prompt tokens and tok/s of the long-prompt prefill.
pub type Prefill = Option<(usize, f64)>;

/// POSTs `body` to `path`; returns the body and, streaming, the arrival time of each SSE
/// `data: {` event (taken when the read that brought its bytes returned).
fn post(
    agent: &ureq::Agent,
    addr: &str,
    path: &str,
    body: &serde_json::Value,
    stream: bool,
) -> Result<(Vec<Instant>, Vec<u8>), ureq::Error> {
    let resp = agent
        .post(format!("http://{addr}{path}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())?;
    let mut reader = resp.into_body().into_reader();
    let mut all = Vec::new();
    let mut times = Vec::new();
    let mut buf = vec![0u8; 16384];
    let mut scanned = 0usize;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        all.extend_from_slice(&buf[..n]);
        if stream {
            let seen = all[scanned..]
                .windows(7)
                .filter(|w| w == b"data: {")
                .count();
            times.extend(std::iter::repeat_n(now, seen));
            scanned = all.len().saturating_sub(6);
        }
    }
    Ok((times, all))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// One client's figures: TTFTs, inter-token latencies, tokens, failed and done requests.
#[derive(Default)]
struct Client {
    ttft: Vec<f64>,
    itl: Vec<f64>,
    tokens: usize,
    failed: usize,
    done: usize,
}

/// Runs one concurrency level.
pub fn level(o: &BenchOptions, c: usize) -> LevelResult {
    let total = o.requests.max(c);
    let next = AtomicUsize::new(0);
    let t0 = Instant::now();
    let clients: Vec<Client> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..c)
            .map(|_| s.spawn(|| client(o, &next, total)))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut all = Client::default();
    for cl in clients {
        all.ttft.extend(cl.ttft);
        all.itl.extend(cl.itl);
        all.tokens += cl.tokens;
        all.failed += cl.failed;
        all.done += cl.done;
    }
    let seconds = t0.elapsed().as_secs_f64();
    LevelResult {
        concurrency: c,
        requests: all.done,
        failed: all.failed,
        tokens: all.tokens,
        seconds,
        tok_s: all.tokens as f64 / seconds.max(1e-9),
        ttft_p50_ms: pct(&mut all.ttft, 0.5),
        ttft_p99_ms: pct(&mut all.ttft, 0.99),
        itl_p50_ms: pct(&mut all.itl, 0.5),
        itl_p99_ms: pct(&mut all.itl, 0.99),
    }
}

/// A client: streaming requests back to back while the level has requests left.
fn client(o: &BenchOptions, next: &AtomicUsize, total: usize) -> Client {
    let agent = ureq::Agent::new_with_defaults();
    let mut cl = Client::default();
    while next.fetch_add(1, Relaxed) < total {
        let body = json!({"model": o.model, "prompt": o.prompt, "max_tokens": o.max_tokens,
            "temperature": 0, "stream": true, "ignore_eos": true});
        let start = Instant::now();
        match post(&agent, &o.addr, "/v1/completions", &body, true) {
            Ok((times, bytes)) if bytes.windows(12).any(|w| w == b"data: [DONE]") => {
                // The last data chunk carries finish_reason and usage, no token.
                let tok_times = &times[..times.len().saturating_sub(1)];
                if let Some(f) = tok_times.first() {
                    cl.ttft.push(f.duration_since(start).as_secs_f64() * 1e3);
                }
                for w in tok_times.windows(2) {
                    cl.itl.push(w[1].duration_since(w[0]).as_secs_f64() * 1e3);
                }
                cl.tokens += tok_times.len();
                cl.done += 1;
            }
            _ => cl.failed += 1,
        }
    }
    cl
}

/// Prefill tok/s of one long prompt: prompt tokens (from `usage`) over the time of a
/// request that generates one token.
pub fn prefill(o: &BenchOptions) -> Prefill {
    if o.long_prompt_words == 0 {
        return None;
    }
    let words: Vec<&str> =
        "the quick brown fox jumps over a lazy dog while seven wizards quietly hum"
            .split(' ')
            .cycle()
            .take(o.long_prompt_words)
            .collect();
    let body =
        json!({"model": o.model, "prompt": words.join(" "), "max_tokens": 1, "temperature": 0});
    let agent = ureq::Agent::new_with_defaults();
    let t = Instant::now();
    let (_, bytes) = post(&agent, &o.addr, "/v1/completions", &body, false).ok()?;
    let secs = t.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let n = v["usage"]["prompt_tokens"].as_u64()? as usize;
    Some((n, n as f64 / secs))
}

/// Waits until `GET /health` answers 200 (or the timeout passes).
pub fn wait_healthy(addr: &str, timeout: Duration) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let t = Instant::now();
    while t.elapsed() < timeout {
        if agent
            .get(format!("http://{addr}/health"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[derive(Args)]
pub struct BenchServeArgs {
    /// host:port of a running `infer serve` (ignored with --spawn).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// The model id the server serves (see GET /v1/models); with --spawn, the model's
    /// file or folder name.
    #[arg(long)]
    pub model: Option<String>,
    /// Start `infer serve --model PATH` on a free port on 127.0.0.1 for the run (stopped
    /// by its process id afterwards). Default without --addr: the default model.
    #[arg(long)]
    pub spawn: Option<String>,
    /// Concurrent streams per level.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16, 64])]
    pub concurrency: Vec<usize>,
    /// Requests per level (at least the concurrency).
    #[arg(long, default_value_t = 64)]
    pub requests: usize,
    /// Tokens generated per request (EOS ignored).
    #[arg(long = "max-tokens", default_value_t = 32)]
    pub max_tokens: usize,
    #[arg(long, default_value = "Once upon a time")]
    pub prompt: String,
    /// Words in the long prompt whose prefill tok/s is measured (0 skips it).
    #[arg(long = "long-prompt-words", default_value_t = 400)]
    pub long_prompt_words: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A child `infer serve` for `bench-serve --spawn`, killed by its pid on drop.
pub struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn bench_serve(a: BenchServeArgs) -> Result<()> {
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
        if !wait_healthy(&addr, Duration::from_secs(120)) {
            bail!("infer serve --model {path} did not become healthy");
        }
    }
    let Some(model) = model else {
        bail!("--model NAME (the served model id) or --spawn PATH is needed");
    };
    let o = BenchOptions {
        addr,
        model,
        levels: a.concurrency.clone(),
        requests: a.requests,
        max_tokens: a.max_tokens,
        prompt: a.prompt.clone(),
        long_prompt_words: a.long_prompt_words,
    };
    let prefill = prefill(&o);
    let levels: Vec<LevelResult> = o.levels.iter().map(|&c| level(&o, c)).collect();
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
