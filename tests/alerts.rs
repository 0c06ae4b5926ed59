//! Budget alerts end to end: the real gateway on the mock upstream, and a webhook receiver in
//! the test that verifies every signature. Exactly one webhook per threshold under 50
//! concurrent requests; an alert still pending when the gateway is killed (SIGKILL) is sent
//! once after the restart; a crossing whose claim was never written is found at start; and
//! two instances on one PostgreSQL send each threshold once (needs `TOLLGATE_TEST_PG_URL`).

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// $1 per million input tokens, $2 per million output tokens: each request is 500 input and
/// 100 output tokens, reserved and billed: 700 micro-dollars.
const INPUT: u64 = 500;
const OUTPUT: u64 = 100;
const COST: u64 = INPUT + 2 * OUTPUT;
const SECRET: &str = "whsec-test-0123456789abcdef";

/// One webhook call the receiver saw.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    alert_id: String,
    body: Value,
    signature_ok: bool,
    accepted: bool,
}

/// A webhook receiver on loopback: answers 200, or 500 while `refuse` is set, and records
/// every call with whether its signature verified.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    refuse: Arc<AtomicBool>,
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // Written here from RFC 2104 rather than taken from the gateway.
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn verify(sig: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = sig.strip_prefix("t=").and_then(|s| s.split_once(",v1=")) else {
        return false;
    };
    let mut msg = t.as_bytes().to_vec();
    msg.push(b'.');
    msg.extend_from_slice(body);
    let want: String = hmac(SECRET.as_bytes(), &msg)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

impl Receiver {
    fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(AtomicBool::new(false));
        let (h, r) = (hits.clone(), refuse.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let (h, r) = (h.clone(), r.clone());
                std::thread::spawn(move || serve(s, h, r));
            }
        });
        Receiver { port, hits, refuse }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Accepted calls to `path`.
    fn accepted(&self, path: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.accepted && h.path == path)
            .collect()
    }
}

fn serve(s: std::net::TcpStream, hits: Arc<Mutex<Vec<Hit>>>, refuse: Arc<AtomicBool>) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let len: usize = get("content-length").parse().unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let accepted = !refuse.load(Ordering::SeqCst);
        hits.lock().unwrap().push(Hit {
            path,
            alert_id: get("x-tollgate-alert-id"),
            signature_ok: verify(&get("x-tollgate-signature"), &body),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            accepted,
        });
        let status = if accepted {
            "200 OK"
        } else {
            "500 Internal Server Error"
        };
        let _ = write!(
            w,
            "HTTP/1.1 {status}\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
        );
        let _ = w.flush();
    }
}

/// A priced gateway on the mock with two webhook targets on `rx` (JSON and Slack), short
/// retries and scans.
fn config(mock: &str, rx: &Receiver) -> TestConfig {
    TestConfig::new(mock)
        .pricing("openai:gpt-4o-mini", 1, 2)
        .set(
            "alerts",
            json!({
                "targets": [
                    {"name": "ops", "url": rx.url("/hook"), "secret": SECRET},
                    {"name": "slack", "url": rx.url("/slack"), "format": "slack", "secret": SECRET},
                ],
                "initial_backoff_ms": 100,
                "max_backoff_ms": 400,
                "max_attempts": 1000,
                "scan_interval_ms": 200,
            }),
        )
}

/// A chat body whose token estimate is exactly INPUT tokens, with max_tokens = OUTPUT.
fn body() -> Vec<u8> {
    let head = format!("{{\"model\":\"gpt-4o-mini\",\"max_tokens\":{OUTPUT},\"messages\":[{{\"role\":\"user\",\"content\":\"");
    let tail = "\"}]}";
    let pad = (INPUT * 4) as usize - head.len() - tail.len();
    format!("{head}{}{tail}", "a".repeat(pad)).into_bytes()
}

async fn one(url: &str, secret: &str) -> u16 {
    client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(secret)
        .header("content-type", "application/json")
        .header("x-mock-usage", format!("{INPUT},{OUTPUT}"))
        .header("x-mock-delay-ms", "50")
        .body(body())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A key with a lifetime budget of `n` requests.
async fn key_for(url: &str, n: u64) -> (String, String) {
    let (st, v) = admin_call(
        url,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "alerts", "max_budget": format!("0.{:06}", n * COST)})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

/// Polls until `f` holds (at most `limit`).
async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The thresholds each target accepted, per alert id, checked: signatures verify, one
/// acceptance per (target, alert id), and the JSON bodies name the key.
fn delivered(rx: &Receiver, key_id: &str) -> Vec<u64> {
    let hits = rx.hits();
    assert!(
        hits.iter().all(|h| h.signature_ok),
        "a bad signature: {hits:#?}"
    );
    let mut thresholds = Vec::new();
    for path in ["/hook", "/slack"] {
        let acc = rx.accepted(path);
        let mut ids: Vec<&str> = acc.iter().map(|h| h.alert_id.as_str()).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "{path}: an alert accepted twice: {acc:#?}");
        if path == "/hook" {
            for h in &acc {
                assert_eq!(h.body["alert_id"], h.alert_id.as_str());
                assert_eq!(h.body["account_id"], key_id);
                assert_eq!(h.body["scope"], "key");
                thresholds.push(h.body["threshold_percent"].as_u64().unwrap());
            }
        } else {
            for h in &acc {
                let text = h.body["text"].as_str().unwrap();
                assert!(text.contains(key_id), "{text}");
                assert!(h.body["blocks"].as_array().is_some_and(|b| !b.is_empty()));
            }
        }
    }
    assert_eq!(
        rx.accepted("/hook").len(),
        rx.accepted("/slack").len(),
        "both targets get every alert"
    );
    thresholds.sort();
    thresholds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_webhook_per_threshold_under_concurrency() {
    let mock = MockServer::start().await;
    let rx = Receiver::start();
    let cfg = config(&mock.url(), &rx);
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    // Room for exactly 30 requests: 50 at once cross 50, 80, 95 and 100 %.
    let (key_id, secret) = key_for(&gw.url(), 30).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (u, s) = (gw.url(), secret.clone());
            tokio::spawn(async move { one(&u, &s).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(ok, 30, "{statuses:?}");
    assert!(
        until(Duration::from_secs(20), || rx.accepted("/hook").len() >= 4
            && rx.accepted("/slack").len() >= 4)
        .await,
        "{:#?}",
        rx.hits()
    );
    // Several scans later (each re-checks the spend), still one per threshold.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(delivered(&rx, &key_id), vec![50, 80, 95, 100]);
    assert_eq!(rx.hits().len(), 8, "no call was retried: {:#?}", rx.hits());
    let m = client()
        .get(format!("{}/metrics", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("tollgate_alerts_sent_total{target=\"ops\"} 4"),
        "{m}"
    );
    assert!(m.contains("tollgate_alerts_pending 0"), "{m}");
    assert!(!m.contains(SECRET) && !gw.stderr_text().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alert_pending_at_a_crash_is_sent_once_after_restart() {
    let mock = MockServer::start().await;
    let rx = Receiver::start();
    rx.refuse.store(true, Ordering::SeqCst);
    let cfg = config(&mock.url(), &rx);
    let dir = tempfile::tempdir().unwrap();
    let (d, c) = (dir.path().to_path_buf(), cfg.clone());
    let mut gw = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d, c.file(), &[]))
        .await
        .unwrap();
    let (key_id, secret) = key_for(&gw.url(), 10).await;
    // 6 of 10: 50 % crossed; the receiver refuses, so the claimed alert stays pending.
    for _ in 0..6 {
        assert_eq!(one(&gw.url(), &secret).await, 200);
    }
    assert!(
        until(Duration::from_secs(20), || rx.hits().len() >= 4).await,
        "retried while refused: {:#?}",
        rx.hits()
    );
    gw.signal("KILL");
    assert!(gw.wait_exit(Duration::from_secs(10)));
    let refused = rx.hits().len();
    assert!(rx.hits().iter().all(|h| !h.accepted));
    rx.refuse.store(false, Ordering::SeqCst);
    let (d, c) = (dir.path().to_path_buf(), cfg.clone());
    let gw = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d, c.file(), &[]))
        .await
        .unwrap();
    assert!(
        until(Duration::from_secs(20), || rx.accepted("/hook").len() == 1
            && rx.accepted("/slack").len() == 1)
        .await,
        "{:#?}",
        rx.hits()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(delivered(&rx, &key_id), vec![50]);
    let before = rx.hits().len();
    assert_eq!(before, refused + 2, "{:#?}", rx.hits());
    // And a second restart sends nothing: the alert is marked sent.
    drop(gw);
    let (d, c) = (dir.path().to_path_buf(), cfg.clone());
    let _gw = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d, c.file(), &[]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rx.hits().len(), before, "{:#?}", rx.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crossing_whose_claim_was_never_written_is_found_at_start() {
    let mock = MockServer::start().await;
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    // First without alerts: the spend reaches 80 % and no claim is ever written (as when a
    // gateway dies right after settling, before its sender ran).
    let plain = TestConfig::new(&mock.url()).pricing("openai:gpt-4o-mini", 1, 2);
    let d = dir.path().to_path_buf();
    let mut gw = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d, plain.file(), &[]))
        .await
        .unwrap();
    let (key_id, secret) = key_for(&gw.url(), 10).await;
    for _ in 0..8 {
        assert_eq!(one(&gw.url(), &secret).await, 200);
    }
    // The usage is on disk once the writer ran; SIGKILL keeps nothing else.
    let gw_url = gw.url();
    let mut n = 0;
    for _ in 0..100 {
        n = usage_rows(&gw)
            .await
            .iter()
            .filter(|r| r["key_id"] == key_id.as_str())
            .count();
        if n == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n, 8, "usage written on {gw_url}");
    gw.signal("KILL");
    assert!(gw.wait_exit(Duration::from_secs(10)));
    let cfg = config(&mock.url(), &rx);
    let d = dir.path().to_path_buf();
    let _gw = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d, cfg.file(), &[]))
        .await
        .unwrap();
    assert!(
        until(Duration::from_secs(20), || rx.accepted("/hook").len() >= 2
            && rx.accepted("/slack").len() >= 2)
        .await,
        "{:#?}",
        rx.hits()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(delivered(&rx, &key_id), vec![50, 80]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_send_each_threshold_once() {
    let Some(url) = pg_url() else { return };
    let mock = MockServer::start().await;
    let rx = Receiver::start();
    let schema = format!("t_alerts_{:x}", rand::random::<u64>());
    let cfg = config(&mock.url(), &rx).postgres(
        &url,
        &schema,
        json!({
            "lease_ttl_ms": 3000,
            "lease_idle_ms": 300,
            "sync_interval_ms": 100,
            "connect_timeout_ms": 1000,
            "statement_timeout_ms": 2000,
        }),
    );
    let mut gws = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let d = tempfile::tempdir().unwrap();
        let (p, c) = (d.path().to_path_buf(), cfg.clone());
        gws.push(
            tokio::task::spawn_blocking(move || Gateway::spawn_in(&p, c.file(), &[]))
                .await
                .unwrap(),
        );
        dirs.push(d);
    }
    let (key_id, secret) = key_for(&gws[0].url(), 30).await;
    // The key reaches the other instance through the change feed.
    let other = gws[1].url();
    let s2 = secret.clone();
    let mut seen = false;
    for _ in 0..100 {
        let st = client()
            .get(format!("{other}/v1/models"))
            .bearer_auth(&s2)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if st == 200 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the key reached the second instance");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (u, s) = (gws[i % 2].url(), secret.clone());
            tokio::spawn(async move { one(&u, &s).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let mut ok = statuses.iter().filter(|&&s| s == 200).count();
    // Leases may leave room the burst could not use: spend the rest one at a time.
    for i in 0..40 {
        if ok == 30 {
            break;
        }
        if one(&gws[i % 2].url(), &secret).await == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 30, "the budget held exactly 30 requests");
    assert!(
        until(Duration::from_secs(30), || rx.accepted("/hook").len() >= 4
            && rx.accepted("/slack").len() >= 4)
        .await,
        "{:#?}",
        rx.hits()
    );
    // Both instances scan several times more: still one per threshold.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(delivered(&rx, &key_id), vec![50, 80, 95, 100]);
}
