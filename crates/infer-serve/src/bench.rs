//! A bounded load generator for `infer serve` (`infer bench-serve`): for each concurrency
//! level, `c` client tasks each run streaming completions back to back over plain HTTP/1.1
//! until `requests` have finished; it reports aggregate generated tok/s and p50/p99
//! time-to-first-token and inter-token latency. Also the prefill tok/s of one long prompt
//! (a non-streaming request with max_tokens 1), measured in the same run.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

async fn post(
    addr: &str,
    path: &str,
    body: &serde_json::Value,
    stream: bool,
) -> std::io::Result<(Vec<Instant>, Vec<u8>)> {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut all = Vec::new();
    let mut times = Vec::new();
    let mut buf = vec![0u8; 16384];
    let mut scanned = 0usize;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        all.extend_from_slice(&buf[..n]);
        if stream {
            // One timestamp per SSE `data: {` event, when its bytes arrived.
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

/// Runs one concurrency level.
pub async fn level(o: &BenchOptions, c: usize) -> LevelResult {
    let total = o.requests.max(c);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (o, next) = (o.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ttft = Vec::new();
            let mut itl = Vec::new();
            let (mut tokens, mut failed, mut done) = (0usize, 0usize, 0usize);
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let body = json!({"model": o.model, "prompt": o.prompt, "max_tokens": o.max_tokens,
                    "temperature": 0, "stream": true, "ignore_eos": true});
                let start = Instant::now();
                match post(&o.addr, "/v1/completions", &body, true).await {
                    Ok((times, bytes)) if bytes.windows(12).any(|w| w == b"data: [DONE]") => {
                        // The last data chunk carries finish_reason and usage, no token.
                        let tok_times = &times[..times.len().saturating_sub(1)];
                        if let Some(f) = tok_times.first() {
                            ttft.push(f.duration_since(start).as_secs_f64() * 1e3);
                        }
                        for w in tok_times.windows(2) {
                            itl.push(w[1].duration_since(w[0]).as_secs_f64() * 1e3);
                        }
                        tokens += tok_times.len();
                        done += 1;
                    }
                    _ => failed += 1,
                }
            }
            (ttft, itl, tokens, failed, done)
        }));
    }
    let (mut ttft, mut itl) = (Vec::new(), Vec::new());
    let (mut tokens, mut failed, mut done) = (0, 0, 0);
    for t in tasks {
        if let Ok((a, b, n, f, d)) = t.await {
            ttft.extend(a);
            itl.extend(b);
            tokens += n;
            failed += f;
            done += d;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    LevelResult {
        concurrency: c,
        requests: done,
        failed,
        tokens,
        seconds,
        tok_s: tokens as f64 / seconds.max(1e-9),
        ttft_p50_ms: pct(&mut ttft, 0.5),
        ttft_p99_ms: pct(&mut ttft, 0.99),
        itl_p50_ms: pct(&mut itl, 0.5),
        itl_p99_ms: pct(&mut itl, 0.99),
    }
}

/// Prefill tok/s of one long prompt: prompt tokens (from `usage`) over the time of a
/// request that generates one token.
pub async fn prefill(o: &BenchOptions) -> Option<(usize, f64)> {
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
    let t = Instant::now();
    let (_, bytes) = post(&o.addr, "/v1/completions", &body, false).await.ok()?;
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&bytes);
    let json_at = text.find("\r\n\r\n")? + 4;
    let v: serde_json::Value = serde_json::from_str(text[json_at..].trim()).ok()?;
    let n = v["usage"]["prompt_tokens"].as_u64()? as usize;
    Some((n, n as f64 / secs))
}

/// Waits until `GET /health` answers 200 (or the timeout passes).
pub async fn wait_healthy(addr: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut v = Vec::new();
                if s.read_to_end(&mut v).await.is_ok() && v.starts_with(b"HTTP/1.1 200") {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Prompt tokens and tok/s of the long-prompt prefill.
pub type Prefill = Option<(usize, f64)>;

/// Runs every level and the prefill figure; returns them.
pub fn run(o: &BenchOptions) -> std::io::Result<(Vec<LevelResult>, Prefill)> {
    runtime()?.block_on(async {
        let pre = prefill(o).await;
        let mut out = Vec::new();
        for &c in &o.levels {
            out.push(level(o, c).await);
        }
        Ok((out, pre))
    })
}

pub use tokio::runtime::Runtime;

/// The runtime the load generator runs on.
pub fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
