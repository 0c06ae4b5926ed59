//! Zero-drop upgrades: a bounded load of streams and non-streams runs while the binary is
//! upgraded three times through Pingora's upgrade socket (what `systemctl reload` does: QUIT
//! to the old process, then `serve -u`). Every request sent must complete: counted against
//! the responses received and against the mock upstream's log.
//!
//! 20 s by default; `TOLLGATE_LONG_TESTS=1` runs 60 s.

mod common;

use common::*;
use futures_util::StreamExt;
use mock_upstream::MockServer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    streams_ok: AtomicU64,
}

async fn one(base: &str, key: &str, n: u64, c: &Counts) -> Result<(), String> {
    let stream = n.is_multiple_of(2);
    let rid = format!("up-{n}");
    let req = if stream {
        client()
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", key)
            .header("x-mock-chunk-delay-ms", "40")
            .header("x-mock-pieces", "8")
            .json(&messages("claude-x", true))
    } else {
        client()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&chat("gpt-4o-mini", false))
    };
    c.sent.fetch_add(1, Ordering::Relaxed);
    let r = req
        .header("x-request-id", &rid)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("{rid}: send: {e}"))?;
    if r.status() != 200 {
        return Err(format!("{rid}: status {}", r.status()));
    }
    let mut body = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(ch) = s.next().await {
        body.extend_from_slice(&ch.map_err(|e| format!("{rid}: body: {e}"))?);
    }
    let text = String::from_utf8_lossy(&body);
    if stream {
        if !text.contains("event: message_stop") {
            return Err(format!("{rid}: stream cut: {}", text.len()));
        }
        c.streams_ok.fetch_add(1, Ordering::Relaxed);
    } else if !text.contains("\"choices\"") {
        return Err(format!("{rid}: bad body"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_upgrades_under_load_drop_nothing() {
    let secs: u64 = if std::env::var_os("TOLLGATE_LONG_TESTS").is_some() {
        60
    } else {
        20
    };
    let mock = MockServer::start().await;
    let url = mock.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let d1 = dir.clone();
    let cfg = TestConfig::new(&url);
    let mut current = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d1, cfg.file(), &[]))
        .await
        .unwrap();
    let key = current.create_key("load").await;
    let base = current.url();
    let port = current.port;
    let cfg_path = current.config_path.clone();
    mock.clear();

    let counts = Arc::new(Counts::default());
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (base, key, c, next, errors) = (
            base.clone(),
            key.clone(),
            counts.clone(),
            next.clone(),
            errors.clone(),
        );
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                match one(&base, &key, n, &c).await {
                    Ok(()) => {
                        c.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        c.failed.fetch_add(1, Ordering::Relaxed);
                        errors.lock().push(e);
                    }
                }
            }
        }));
    }

    let mut upgrades = Vec::new();
    let mut old_ones = Vec::new();
    for i in 1..=3u64 {
        let at = deadline - Duration::from_secs(secs) + Duration::from_secs(secs * i / 4);
        tokio::time::sleep_until(at.into()).await;
        let t0 = Instant::now();
        let old_pid = current.pid();
        current.signal("QUIT");
        let (d, c) = (dir.clone(), cfg_path.clone());
        let new = tokio::task::spawn_blocking(move || {
            let g = Gateway::launch(&d, &c, port, &["-u"]);
            g.wait_ready();
            g
        })
        .await
        .unwrap();
        upgrades.push((old_pid, new.pid(), t0.elapsed().as_secs_f64()));
        old_ones.push(std::mem::replace(&mut current, new));
    }
    for w in workers {
        w.await.unwrap();
    }
    for old in old_ones.iter_mut() {
        assert!(
            old.wait_exit(Duration::from_secs(20)),
            "an old process did not exit"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let upstream = mock
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions" || r.path == "/v1/messages")
        .count() as u64;
    let (sent, ok, failed) = (
        counts.sent.load(Ordering::Relaxed),
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    println!("\nupgrade run: {secs} s, 6 workers, half streams (8 events, 40 ms apart)");
    for (i, (o, n, t)) in upgrades.iter().enumerate() {
        println!(
            "  upgrade {}: pid {o} -> {n}, serve -u ready after {t:.1} s",
            i + 1
        );
    }
    println!(
        "  requests sent {sent}, completed {ok} ({} streams), failed {failed}, seen by the upstream {upstream}",
        counts.streams_ok.load(Ordering::Relaxed)
    );
    let errs = errors.lock().clone();
    assert!(errs.is_empty(), "failed requests: {errs:?}");
    assert_eq!(sent, ok, "every request sent completed");
    assert_eq!(upstream, sent, "the upstream saw each request exactly once");
    // The last process serves.
    let r = client()
        .post(format!("{}/v1/chat/completions", current.url()))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
