//! What a new user meets when starting tollgate: a port already taken ends the process at
//! once with one clear line and a non-zero exit; no provider configured is said plainly, at
//! start and in /health; Otari's health paths answer too.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn an_occupied_port_ends_the_process_with_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("tollgate.yaml");
    std::fs::write(
        &cfg,
        TestConfig::empty()
            .without("threads")
            .set("providers", serde_json::json!({}))
            .render(port, &tmp.path().join("data")),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tollgate kept running on an occupied port");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    eprintln!(
        "exit {:?} after {:?}: {stderr}",
        status.code(),
        t0.elapsed()
    );
    assert_eq!(status.code(), Some(1), "non-zero exit");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
    assert!(
        lines[0].contains(&format!("127.0.0.1:{port}")) && lines[0].contains("already in use"),
        "names the address and the cause: {}",
        lines[0]
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_provider_is_said_at_start_and_in_health() {
    let gw = tokio::task::spawn_blocking(|| {
        let cfg = TestConfig::empty()
            .without("threads")
            .set("grace_period_seconds", 1)
            .set("graceful_shutdown_timeout_seconds", 1)
            .set("providers", serde_json::json!({}));
        Gateway::start_with(cfg.file())
    })
    .await
    .unwrap();
    let log = gw.stderr_text();
    assert!(
        log.contains("no provider is configured") && log.contains("OPENAI_API_KEY"),
        "start-up says so and how to add one: {log}"
    );
    let h: Value = client()
        .get(format!("{}/health", gw.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["providers"], serde_json::json!([]));
    let w = h["warnings"][0].as_str().unwrap_or("");
    assert!(w.contains("no provider is configured"), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otari_health_paths_answer() {
    let mock = mock_upstream::MockServer::start().await;
    let cfg = TestConfig::new(&mock.url());
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let r = client()
        .get(format!("{}/health/liveness", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), "I'm alive!");
    let r = client()
        .get(format!("{}/health/readiness", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["database"], "connected");
    assert!(v["version"].is_string());
    assert_eq!(v["warnings"], serde_json::json!([]));
}
