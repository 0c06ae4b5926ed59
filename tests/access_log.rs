//! The access log on the real binary: JSON lines in a file with the documented field names and
//! the request id of every answer; the file reopened on SIGUSR1 after a logrotate-style rename;
//! the text default on stderr; `access_log: false` writes nothing.

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// The documented field names of a JSON line (README "Monitoring"), every one always present.
const FIELDS: [&str; 23] = [
    "ts",
    "request_id",
    "method",
    "path",
    "endpoint",
    "key_id",
    "user_id",
    "model",
    "provider",
    "upstream_model",
    "status",
    "latency_ms",
    "ttfb_ms",
    "bytes_out",
    "stream",
    "direct",
    "attempts",
    "tokens_in",
    "tokens_out",
    "tool_calls",
    "client_gone",
    "guardrail_blocked",
    "error",
];

/// The JSON lines of `path` once it holds at least `n` (lines are written by a thread).
fn lines_of(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn chat_call(gw: &Gateway, key: &str, rid: Option<&str>, stream: bool) -> String {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .json(&chat("gpt-4o-mini", stream));
    if let Some(r) = rid {
        req = req.header("x-request-id", r);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let _ = r.bytes().await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_in_a_file_carry_the_request_id_and_reopen_on_sigusr1() {
    let mock = MockServer::start().await;
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let cfg =
        TestConfig::new(&mock.url()).set("access_log", json!({"format": "json", "path": path}));
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("log").await;

    let mine = chat_call(&gw, &key, Some("client-rid-1"), false).await;
    assert_eq!(mine, "client-rid-1");
    let minted = chat_call(&gw, &key, None, true).await;
    let bad = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("sk-not-a-key")
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let refused = bad.headers()["x-request-id"].to_str().unwrap().to_string();

    let lines = lines_of(&path, 4);
    let by_id = |id: &str| -> Value {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id} in {lines:?}"))
            .clone()
    };
    for l in &lines {
        let o = l.as_object().unwrap();
        for f in FIELDS {
            assert!(o.contains_key(f), "{f} missing in {l}");
        }
        assert_eq!(o.len(), FIELDS.len(), "unexpected fields in {l}");
        assert!(!l["request_id"].as_str().unwrap().is_empty());
        let ts = l["ts"].as_str().unwrap();
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
    }
    let a = by_id("client-rid-1");
    assert_eq!(a["status"], 200);
    assert_eq!(a["endpoint"], "chat_completions");
    assert_eq!(a["model"], "gpt-4o-mini");
    assert_eq!(a["provider"], "openai");
    assert_eq!(a["stream"], false);
    assert_eq!(a["attempts"], 1);
    assert!(a["key_id"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(a["tokens_in"].as_u64().unwrap() > 0);
    assert!(a["error"].is_null());
    let b = by_id(&minted);
    assert_eq!(b["stream"], true);
    assert!(b["ttfb_ms"].as_u64().is_some());
    let c = by_id(&refused);
    assert_eq!(c["status"], 401);
    assert!(c["key_id"].is_null());

    // logrotate: rename, then SIGUSR1; new lines go to a new file at the configured path.
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    gw.signal("USR1");
    // The writer reopens before its next line; the signal may arrive after a first request.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let id = chat_call(&gw, &key, None, false).await;
        if lines_of(&path, 0).iter().any(|l| l["request_id"] == id) {
            break id;
        }
        assert!(Instant::now() < deadline, "no new file after SIGUSR1");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("client-rid-1") && !old.contains(&after));
    assert!(gw.child.is_some(), "SIGUSR1 must not end the process");
    chat_call(&gw, &key, None, false).await;

    let all = format!("{old}{}", std::fs::read_to_string(&path).unwrap());
    assert!(!all.contains(&key) && !all.contains(MASTER) && !all.contains("sk-openai"));
    // Access lines left stderr.
    assert!(!gw.stderr_text().contains("tollgate::access] rid="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_on_stderr_by_default_and_none_when_off() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url());
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("log").await;
    chat_call(&gw, &key, Some("text-rid-1"), false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(l) = gw
            .stderr_text()
            .lines()
            .find(|l| l.contains("rid=text-rid-1 "))
        {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no access line on stderr");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(line.contains(" INFO  tollgate::access] "), "{line}");
    assert!(
        line.contains(" status=200 ") && line.contains(" attempts=1 "),
        "{line}"
    );

    let url = mock.url();
    let off = TestConfig::new(&url).set("access_log", false);
    let mut gw2 = tokio::task::spawn_blocking(move || Gateway::start_with(off.file()))
        .await
        .unwrap();
    let key2 = gw2.create_key("quiet").await;
    chat_call(&gw2, &key2, Some("quiet-rid-1"), false).await;
    // A stopped gateway has written every queued line (the drain flushes the access log).
    let gw2 = tokio::task::spawn_blocking(move || {
        gw2.stop();
        gw2
    })
    .await
    .unwrap();
    let log = gw2.stderr_text();
    assert!(log.contains("stopped after"), "{log}");
    assert!(!log.contains("quiet-rid-1") && !log.contains("tollgate::access] rid="));
}
