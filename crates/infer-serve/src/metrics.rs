//! Server metrics in the Prometheus text format: requests by status, running and waiting
//! sequences, time-to-first-token and inter-token latency histograms, generated tokens,
//! KV cache blocks used and free.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    n: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (c, &b) in self.counts.iter_mut().zip(BUCKETS) {
            if v <= b {
                *c += 1;
            }
        }
        self.sum += v;
        self.n += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.n);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.n);
    }
}

/// Shared between the HTTP handlers and the engine thread.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<u16, u64>>,
    pub running: AtomicU64,
    pub waiting: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_free: AtomicU64,
    pub cancelled: AtomicU64,
    pub draft_tokens: AtomicU64,
    pub accepted_tokens: AtomicU64,
    /// Prompt tokens whose K and V came from the prefix cache.
    pub prefix_cache_hit_tokens: AtomicU64,
    ttft: Mutex<Histogram>,
    itl: Mutex<Histogram>,
}

impl Metrics {
    pub fn request(&self, status: u16) {
        *self
            .requests
            .lock()
            .expect("metrics poisoned")
            .entry(status)
            .or_default() += 1;
    }

    pub fn ttft(&self, secs: f64) {
        self.ttft.lock().expect("metrics poisoned").observe(secs);
    }

    pub fn itl(&self, secs: f64) {
        self.itl.lock().expect("metrics poisoned").observe(secs);
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP infer_requests_total Requests answered, by HTTP status.\n");
        s.push_str("# TYPE infer_requests_total counter\n");
        for (code, n) in self.requests.lock().expect("metrics poisoned").iter() {
            let _ = writeln!(s, "infer_requests_total{{status=\"{code}\"}} {n}");
        }
        for (name, kind, help, v) in [
            (
                "infer_running_sequences",
                "gauge",
                "Sequences in the running batch.",
                &self.running,
            ),
            (
                "infer_waiting_sequences",
                "gauge",
                "Requests waiting for admission.",
                &self.waiting,
            ),
            (
                "infer_generated_tokens_total",
                "counter",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "infer_prompt_tokens_total",
                "counter",
                "Prompt tokens of admitted requests (prefix-cache hits included).",
                &self.prompt_tokens,
            ),
            (
                "infer_kv_cache_blocks_used",
                "gauge",
                "KV cache blocks held by sequences.",
                &self.kv_blocks_used,
            ),
            (
                "infer_kv_cache_blocks_free",
                "gauge",
                "KV cache blocks free.",
                &self.kv_blocks_free,
            ),
            (
                "infer_cancelled_requests_total",
                "counter",
                "Requests cancelled (client gone) before finishing.",
                &self.cancelled,
            ),
            (
                "infer_draft_tokens_total",
                "counter",
                "Speculative draft tokens proposed (prompt lookup).",
                &self.draft_tokens,
            ),
            (
                "infer_accepted_draft_tokens_total",
                "counter",
                "Speculative draft tokens accepted.",
                &self.accepted_tokens,
            ),
            (
                "infer_prefix_cache_hit_tokens_total",
                "counter",
                "Prompt tokens whose K and V came from the prefix cache (not computed).",
                &self.prefix_cache_hit_tokens,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.ttft.lock().expect("metrics poisoned").render(
            &mut s,
            "infer_time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
        );
        self.itl.lock().expect("metrics poisoned").render(
            &mut s,
            "infer_inter_token_latency_seconds",
            "Time between consecutive generated tokens of a request.",
        );
        s
    }
}
