//! Soak: mixed traffic with injected faults against the real binary, reporting the gateway's
//! RSS and open file descriptors (from /proc/PID) after a warm-up and at the end. Memory must
//! stay flat and descriptors must not leak.
//!
//! 30 s by default; `TOLLGATE_LONG_TESTS=1` runs 5 minutes (`TOLLGATE_SOAK_SECS` overrides).

mod common;

use common::*;
use futures_util::StreamExt;
use mock_upstream::MockServer;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// One request of kind `n % 10`; returns a label for the tally.
async fn one(base: &str, key: &str, n: u64) -> &'static str {
    let c = client();
    let post = |path: &str| {
        c.post(format!("{base}{path}"))
            .header("x-api-key", key)
            .timeout(Duration::from_secs(20))
    };
    let (label, req) = match n % 10 {
        0 | 1 => (
            "chat",
            post("/v1/chat/completions").json(&chat("gpt-4o-mini", false)),
        ),
        2 => (
            "anthropic stream",
            post("/v1/messages").json(&messages("claude-x", true)),
        ),
        3 => (
            "translated stream",
            post("/v1/messages").json(&messages("openai:gpt-4o-mini", true)),
        ),
        4 => (
            "reset mid-stream",
            post("/v1/chat/completions")
                .header("x-mock-fault", "reset-mid-stream")
                .json(&chat("gpt-4o-mini", true)),
        ),
        5 => (
            "stall",
            post("/v1/messages")
                .header("x-mock-fault", "stall")
                .json(&messages("claude-x", true)),
        ),
        6 => (
            "upstream 429",
            post("/v1/chat/completions")
                .header("x-mock-status", "429")
                .json(&chat("gpt-4o-mini", false)),
        ),
        7 => (
            "refused",
            post("/v1/chat/completions").json(&chat("dead:m", false)),
        ),
        8 => (
            "100 KB body",
            post("/v1/messages").json(
                &json!({"model": "claude-x", "stream": true, "max_tokens": 5,
                "messages": [{"role": "user", "content": "z".repeat(100_000)}]}),
            ),
        ),
        _ => (
            "client leaves mid-stream",
            post("/v1/messages")
                .header("x-mock-chunk-delay-ms", "100")
                .json(&messages("claude-x", true)),
        ),
    };
    let Ok(r) = req.send().await else {
        return "send error";
    };
    let mut s = r.bytes_stream();
    let mut got = 0;
    while let Some(ch) = s.next().await {
        if ch.is_err() {
            break;
        }
        got += 1;
        if label == "client leaves mid-stream" && got == 2 {
            break; // drop the response: the client goes away
        }
    }
    label
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_mixed_traffic_with_faults_keeps_memory_and_fds_flat() {
    let secs: u64 = std::env::var("TOLLGATE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var_os("TOLLGATE_LONG_TESTS").is_some() {
            300
        } else {
            30
        });
    let mock = MockServer::start().await;
    let url = mock.url();
    let cfg = TestConfig::new(&url)
        .provider_set("anthropic", "stream_idle_timeout_ms", 500)
        .provider(
            "dead",
            serde_json::json!({"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": "sk-dead"}),
        )
        .set("access_log", false);
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("soak").await;
    let pid = gw.pid();
    let base = gw.url();
    let tally = Arc::new(parking_lot::Mutex::new(BTreeMap::<&'static str, u64>::new()));
    let total = Arc::new(AtomicU64::new(0));
    let run = |until: Instant| {
        let mut ws = Vec::new();
        for w in 0..6u64 {
            let (base, key, tally, total) =
                (base.clone(), key.clone(), tally.clone(), total.clone());
            ws.push(tokio::spawn(async move {
                let mut n = w;
                while Instant::now() < until {
                    let l = one(&base, &key, n).await;
                    *tally.lock().entry(l).or_default() += 1;
                    total.fetch_add(1, Ordering::Relaxed);
                    n += 7;
                }
            }));
        }
        ws
    };
    // Warm-up: pools, caches and allocator arenas fill; then the baseline.
    let warm = (secs / 6).clamp(5, 30);
    for w in run(Instant::now() + Duration::from_secs(warm)) {
        w.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rss0, fd0) = (rss_kb(pid), fds(pid));
    let t0 = Instant::now();
    let before = total.load(Ordering::Relaxed);
    let mut samples = Vec::new();
    let ws = run(Instant::now() + Duration::from_secs(secs));
    while t0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs((secs / 6).max(5))).await;
        samples.push((t0.elapsed().as_secs(), rss_kb(pid), fds(pid)));
    }
    for w in ws {
        w.await.unwrap();
    }
    // Streams that ended by timeout or disconnect have settled; pooled connections idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rss1, fd1) = (rss_kb(pid), fds(pid));
    let n = total.load(Ordering::Relaxed) - before;
    let health = client()
        .get(format!("{base}/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    println!(
        "\nsoak: {secs} s after a {warm} s warm-up, 6 workers, {n} requests ({:.0}/s)",
        n as f64 / secs as f64
    );
    println!("  mix: {:?}", tally.lock());
    println!(
        "  RSS  start {rss0} kB, end {rss1} kB ({:+} kB)",
        rss1 as i64 - rss0 as i64
    );
    println!("  fds  start {fd0}, end {fd1}");
    println!("  samples (s, RSS kB, fds): {samples:?}");
    assert_eq!(health, 200, "the gateway keeps serving");
    assert!(fd1 <= fd0 + 16, "file descriptors leak: {fd0} -> {fd1}");
    assert!(
        rss1 < rss0 + rss0 / 2 + 16 * 1024,
        "RSS grew: {rss0} -> {rss1} kB"
    );
    let _ = mock;
}
