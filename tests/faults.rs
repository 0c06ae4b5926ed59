//! Fault injection against the real binary: upstream faults (through the mock), hostile and
//! slow clients, the in-flight limits and panics inside the filters, on an Anthropic and an
//! OpenAI client, native and translated. Every case checks the client's native answer (status
//! and envelope, or the error event that ends a stream), that usage was settled (a record
//! with that status in GET /v1/usage), that /metrics counted it, and that the process keeps
//! serving. Then stderr and /metrics are searched for every secret. Each test has a gateway
//! of its own (so a limit held by one never refuses another's requests) and prints a table:
//! case | expected | observed.

mod common;

use common::*;
use futures_util::StreamExt;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDLE_MS: u64 = 1500;

#[derive(Clone, Copy)]
struct Route {
    name: &'static str,
    path: &'static str,
    model: &'static str,
    /// The model on an unreachable provider of the same kind.
    dead: &'static str,
    anthropic: bool,
}

const ROUTES: [Route; 4] = [
    Route {
        name: "anthropic",
        path: "/v1/messages",
        model: "claude-x",
        dead: "deadant:claude-x",
        anthropic: true,
    },
    Route {
        name: "openai",
        path: "/v1/chat/completions",
        model: "gpt-4o-mini",
        dead: "dead:gpt-4o-mini",
        anthropic: false,
    },
    Route {
        name: "anthropic→openai",
        path: "/v1/messages",
        model: "openai:gpt-4o-mini",
        dead: "dead:gpt-4o-mini",
        anthropic: true,
    },
    Route {
        name: "openai→anthropic",
        path: "/v1/chat/completions",
        model: "anthropic:claude-x",
        dead: "deadant:claude-x",
        anthropic: false,
    },
];

fn body_for(r: &Route, model: &str, stream: bool) -> Value {
    if r.anthropic {
        messages(model, stream)
    } else {
        chat(model, stream)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// A JSON error in the client's envelope with this status.
    Error(u16),
    /// A 200 stream that ends with an error event in the client's dialect.
    StreamError,
    /// A 200 stream that ends properly (terminal event).
    StreamOk,
    /// A 200 stream that ends with its terminal event or an error event (never a silent cut).
    StreamEnds,
    /// A 200 JSON answer.
    Ok,
    /// A 500 in the native envelope if the header had not left yet, else a 200 stream that
    /// ends with an error event (Pingora may flush the header with the first body piece).
    ErrorOrStreamError,
}

struct Row {
    case: String,
    expected: String,
    observed: String,
    ok: bool,
}

struct Suite {
    gw: Gateway,
    key: String,
    rows: Vec<Row>,
    n: usize,
    _mock: MockServer,
}

fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Suite {
    /// A mock and a gateway on it: both mock providers with short stream timeouts, two
    /// unreachable ones, a 1 MiB body limit and small in-flight limits and deadlines.
    async fn start() -> Suite {
        // The panic cases need the debug-only trigger (see gateway::test_panic).
        std::env::set_var("TOLLGATE_TEST_PANICS", "1");
        let mock = MockServer::start().await;
        let mut cfg = TestConfig::new(&mock.url());
        for p in ["openai", "anthropic"] {
            cfg = cfg
                .provider_set(p, "stream_idle_timeout_ms", IDLE_MS)
                .provider_set(p, "first_byte_timeout_ms", 8000);
        }
        let cfg = cfg
            .provider(
                "dead",
                json!({"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": "sk-dead-provider-key-1"}),
            )
            .provider(
                "deadant",
                json!({"kind": "anthropic", "base_url": "http://127.0.0.1:1", "api_key": "sk-ant-dead-provider-key-2"}),
            )
            .set("max_body_bytes", 1048576)
            .set(
                "limits",
                json!({
                    "max_inflight": 8,
                    "max_inflight_per_key": 4,
                    "max_header_bytes": 8192,
                    "header_timeout_ms": 1000,
                    "body_timeout_ms": 1500,
                    "client_read_timeout_ms": 1000,
                }),
            );
        let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
            .await
            .unwrap();
        let key = gw.create_key("faults").await;
        Suite {
            gw,
            key,
            rows: Vec::new(),
            n: 0,
            _mock: mock,
        }
    }

    async fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.gw.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn alive(&self) -> bool {
        let ok = client()
            .get(format!("{}/health", self.gw.url()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        ok && self.gw.child.is_some()
    }

    /// The usage record of a request (sent with `x-request-id`), once written. Looked up
    /// by request id: requests refused before admission carry no session id.
    async fn usage(&self, request_id: &str) -> Option<Value> {
        usage_record(&self.gw, request_id).await
    }

    fn push(&mut self, case: String, expected: String, observed: String, ok: bool) {
        if !ok {
            eprintln!("FAILED: {case}: expected {expected}, observed {observed}");
        }
        self.rows.push(Row {
            case,
            expected,
            observed,
            ok,
        });
    }

    /// Sends one request and checks the answer, the usage record, a metric and liveness.
    #[allow(clippy::too_many_arguments)]
    async fn http_case(
        &mut self,
        case: &str,
        r: &Route,
        model: &str,
        stream: bool,
        headers: &[(&str, String)],
        expect: Expect,
        metric: Option<(&str, Vec<String>)>,
        key: Option<&str>,
    ) {
        self.n += 1;
        let session = format!("fault-{}", self.n);
        let before = self.metrics().await;
        let key = key.unwrap_or(&self.key).to_string();
        let mut req = client()
            .post(format!("{}{}", self.gw.url(), r.path))
            .timeout(Duration::from_secs(20))
            .header("x-session-id", &session)
            .header("x-request-id", &session)
            .json(&body_for(r, model, stream));
        req = if r.anthropic {
            req.header("x-api-key", &key)
        } else {
            req.bearer_auth(&key)
        };
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let t0 = Instant::now();
        let mut observed = Vec::new();
        let mut ok = true;
        match req.send().await {
            Err(e) => {
                observed.push(format!("send error {e}"));
                ok = false;
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let mut bytes = Vec::new();
                let mut st = resp.bytes_stream();
                let mut cut = false;
                while let Some(c) = st.next().await {
                    match c {
                        Ok(b) => bytes.extend_from_slice(&b),
                        Err(_) => {
                            cut = true;
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let secs = t0.elapsed().as_secs_f64();
                let err_event = if r.anthropic {
                    text.contains("event: error\ndata: {")
                } else {
                    text.contains("data: {\"error\":")
                };
                let terminal = if r.anthropic {
                    text.contains("event: message_stop")
                } else {
                    text.contains("data: [DONE]")
                };
                observed.push(format!("{status}"));
                match expect {
                    Expect::Error(want) => {
                        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        let native = if r.anthropic {
                            v["type"] == "error" && v["error"]["type"].is_string()
                        } else {
                            v["error"]["message"].is_string() && v["error"]["type"].is_string()
                        };
                        observed.push(if native {
                            format!("native {}", v["error"]["type"].as_str().unwrap_or(""))
                        } else {
                            format!("NOT native: {}", text.chars().take(120).collect::<String>())
                        });
                        ok &= status == want && native;
                        if want == 429 || want == 503 {
                            observed.push(format!(
                                "retry-after {}",
                                retry_after.clone().unwrap_or("-".into())
                            ));
                            ok &= retry_after.is_some();
                        }
                    }
                    Expect::StreamError => {
                        observed.push(
                            if err_event {
                                "error event"
                            } else {
                                "NO error event"
                            }
                            .into(),
                        );
                        ok &= status == 200 && err_event && !terminal;
                    }
                    Expect::StreamOk => {
                        observed.push(
                            if terminal {
                                "terminal event"
                            } else {
                                "NO terminal event"
                            }
                            .into(),
                        );
                        ok &= status == 200 && terminal && !cut;
                    }
                    Expect::ErrorOrStreamError => {
                        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        let native = v["error"].is_object();
                        observed.push(match (status, native, err_event) {
                            (500, true, _) => "native error".into(),
                            (200, _, true) => "error event".into(),
                            _ => "NEITHER".to_string(),
                        });
                        ok &=
                            (status == 500 && native) || (status == 200 && err_event && !terminal);
                    }
                    Expect::Ok => {
                        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        observed.push(if v.is_object() { "json" } else { "NOT json" }.into());
                        ok &= status == 200 && v.is_object();
                    }
                    Expect::StreamEnds => {
                        observed.push(
                            match (terminal, err_event) {
                                (true, false) => "terminal event",
                                (_, true) => "error event",
                                _ => "SILENT CUT",
                            }
                            .into(),
                        );
                        ok &= status == 200 && (terminal || err_event);
                    }
                }
                if case.starts_with("stall") {
                    observed.push(format!("{secs:.1}s"));
                    ok &= secs < 10.0;
                }
                let want_status = match expect {
                    Expect::Error(s) => s,
                    Expect::ErrorOrStreamError => status,
                    _ => 200,
                };
                // Usage settled with the status the client saw.
                match self.usage(&session).await {
                    Some(rec) => {
                        let st = rec["status"].as_u64().unwrap_or(0);
                        observed.push(format!(
                            "usage {st}{}",
                            if rec["error"].is_string() { "+err" } else { "" }
                        ));
                        ok &= st == want_status as u64;
                    }
                    None => {
                        observed.push("NO usage record".into());
                        ok = false;
                    }
                }
                let after = self.metrics().await;
                let st_label = format!("status=\"{want_status}\"");
                let d = metric_sum(&after, "tollgate_requests_total", &[&st_label])
                    - metric_sum(&before, "tollgate_requests_total", &[&st_label]);
                let mut counted = d >= 1.0;
                if let Some((name, filters)) = &metric {
                    let f: Vec<&str> = filters.iter().map(String::as_str).collect();
                    let d2 = metric_sum(&after, name, &f) - metric_sum(&before, name, &f);
                    counted &= d2 >= 1.0;
                }
                observed.push(if counted { "counted" } else { "NOT counted" }.into());
                ok &= counted;
            }
        }
        let alive = self.alive().await;
        observed.push(if alive { "alive" } else { "DEAD" }.into());
        ok &= alive;
        let expected = match expect {
            Expect::Error(s) => format!(
                "{s} native{}",
                if s == 429 || s == 503 {
                    " + retry-after"
                } else {
                    ""
                }
            ),
            Expect::StreamError => "200 + error event".into(),
            Expect::StreamOk => "200 + terminal event".into(),
            Expect::StreamEnds => "200 + terminal or error event".into(),
            Expect::Ok => "200 JSON".into(),
            Expect::ErrorOrStreamError => "500 native or 200 + error event".into(),
        };
        self.push(
            format!("{case} [{}]", r.name),
            format!("{expected}; usage; counted; alive"),
            observed.join(", "),
            ok,
        );
    }

    /// Searches stderr, stdout and /metrics for every secret (a row of its own), prints the
    /// table, and fails the test if any row failed.
    async fn finish(mut self) {
        let metrics = self.metrics().await;
        let stderr = self.gw.stderr_text();
        let stdout = self.gw.stdout_text();
        let mut secrets = vec![
            "sk-openai-provider-key".to_string(),
            "sk-ant-provider-key".to_string(),
            "sk-dead-provider-key-1".to_string(),
            "sk-ant-dead-provider-key-2".to_string(),
            "sk-this-must-be-redacted-123".to_string(),
            MASTER.to_string(),
            self.key.clone(),
        ];
        // Every key minted in this run.
        let listed: Value = client()
            .get(format!("{}/v1/keys", self.gw.url()))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n_keys = listed["data"].as_array().map_or(0, |a| a.len());
        secrets.push(self.key[..20].to_string());
        let leaked: Vec<&String> = secrets
            .iter()
            .filter(|k| {
                stderr.contains(k.as_str())
                    || metrics.contains(k.as_str())
                    || stdout.contains(k.as_str())
            })
            .collect();
        self.push(
            format!(
                "secrets in stderr ({} lines), stdout and /metrics",
                stderr.lines().count()
            ),
            format!("no provider key, master key or virtual key (of {n_keys})"),
            format!("leaked {leaked:?}"),
            leaked.is_empty(),
        );

        let w0 = self
            .rows
            .iter()
            .map(|r| r.case.chars().count())
            .max()
            .unwrap_or(4);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.expected.chars().count())
            .max()
            .unwrap_or(8);
        println!("\n{:<w0$} | {:<w1$} | observed", "case", "expected");
        println!(
            "{}-|-{}-|-{}",
            "-".repeat(w0),
            "-".repeat(w1),
            "-".repeat(40)
        );
        for r in &self.rows {
            println!(
                "{:<w0$} | {:<w1$} | {}{}",
                r.case,
                r.expected,
                r.observed,
                if r.ok { "" } else { "   <-- FAIL" }
            );
        }
        let failed: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.case.as_str())
            .collect();
        println!("\n{} cases, {} failed", self.rows.len(), failed.len());
        assert!(failed.is_empty(), "failed cases: {failed:?}");
    }

    /// A row saying whether a panic was logged (redacted: `finish` checks the secrets).
    fn panic_logged(&mut self) {
        let logged = self.gw.stderr_text().contains("panic at ");
        self.push(
            "panic logged".into(),
            "a `panic at` line in stderr".into(),
            format!("logged={logged}"),
            logged,
        );
    }
}

fn fault(f: &str) -> Vec<(&'static str, String)> {
    vec![("x-mock-fault", f.to_string())]
}

/// A metric of an upstream error of `kind` on `provider`.
fn up_err(provider: &str, kind: &str) -> Option<(&'static str, Vec<String>)> {
    Some((
        "tollgate_upstream_errors_total",
        vec![
            format!("provider=\"{provider}\""),
            format!("kind=\"{kind}\""),
        ],
    ))
}

/// A metric of a refusal by the limit `l`.
fn limit(l: &str) -> Option<(&'static str, Vec<String>)> {
    Some((
        "tollgate_limit_rejections_total",
        vec![format!("limit=\"{l}\"")],
    ))
}

/// The provider that serves a route's model.
fn provider_of(r: &Route) -> &'static str {
    if r.model.contains("claude") {
        "anthropic"
    } else {
        "openai"
    }
}

/// The unreachable provider of a route's `dead` model.
fn dead_provider_of(r: &Route) -> &'static str {
    if r.dead.starts_with("deadant") {
        "deadant"
    } else {
        "dead"
    }
}

async fn raw_conn(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap()
}

/// Reads until the peer closes (or `within`); returns what came and when it closed.
async fn read_until_close(
    s: &mut tokio::net::TcpStream,
    within: Duration,
) -> (String, Option<f64>) {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(t0.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into(),
                    Some(t0.elapsed().as_secs_f64()),
                )
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), None),
        }
    }
}

// --- upstream faults, on every route ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_refused() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        let dead = dead_provider_of(&r);
        s.http_case(
            "connection refused",
            &r,
            r.dead,
            false,
            &[],
            Expect::Error(502),
            up_err(dead, "connect"),
            None,
        )
        .await;
        s.http_case(
            "connection refused (stream)",
            &r,
            r.dead,
            true,
            &[],
            Expect::Error(502),
            up_err(dead, "connect"),
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_before_response() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        s.http_case(
            "closed before response",
            &r,
            r.model,
            false,
            &fault("close-before-response"),
            Expect::Error(502),
            None,
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_mid_stream() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        let mut h = fault("reset-mid-stream");
        h.push(("x-mock-pieces", "10".into()));
        s.http_case(
            "reset mid-stream",
            &r,
            r.model,
            true,
            &h,
            Expect::StreamError,
            up_err(provider_of(&r), "stream_incomplete"),
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_stream_hits_the_idle_timeout() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        s.http_case(
            "stalled stream (idle timeout)",
            &r,
            r.model,
            true,
            &fault("stall"),
            Expect::StreamError,
            up_err(provider_of(&r), "stream_incomplete"),
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_sse() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        s.http_case(
            "garbage SSE",
            &r,
            r.model,
            true,
            &fault("garbage-sse"),
            Expect::StreamEnds,
            None,
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_event_mid_stream() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        s.http_case(
            "error event mid-stream",
            &r,
            r.model,
            true,
            &fault("event-error"),
            Expect::StreamError,
            None,
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncated_stream() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        s.http_case(
            "truncated stream",
            &r,
            r.model,
            true,
            &fault("truncate"),
            Expect::StreamError,
            up_err(provider_of(&r), "stream_incomplete"),
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ok_status_with_invalid_json() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        s.http_case(
            "200 with invalid JSON",
            &r,
            r.model,
            false,
            &fault("invalid-json-200"),
            Expect::Error(502),
            None,
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_429() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        let h = vec![
            ("x-mock-status", "429".to_string()),
            ("x-mock-retry-after", "7".to_string()),
        ];
        s.http_case(
            "upstream 429",
            &r,
            r.model,
            false,
            &h,
            Expect::Error(429),
            None,
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_503() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        let h = vec![
            ("x-mock-status", "503".to_string()),
            ("x-mock-retry-after", "2".to_string()),
        ];
        s.http_case(
            "upstream 503",
            &r,
            r.model,
            false,
            &h,
            Expect::Error(503),
            None,
            None,
        )
        .await;
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_500() {
    let mut s = Suite::start().await;
    for r in ROUTES {
        let h = vec![("x-mock-status", "500".to_string())];
        s.http_case(
            "upstream 500",
            &r,
            r.model,
            false,
            &h,
            Expect::Error(500),
            None,
            None,
        )
        .await;
        s.http_case(
            "upstream 500 (stream)",
            &r,
            r.model,
            true,
            &h,
            Expect::Error(500),
            None,
            None,
        )
        .await;
    }
    s.finish().await;
}

/// Slow drip: one byte every 5 ms; a native and a translated route.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_drip() {
    let mut s = Suite::start().await;
    for r in [ROUTES[0], ROUTES[3]] {
        let mut h = fault("slow-drip");
        h.push(("x-mock-pieces", "1".into()));
        s.http_case(
            "slow drip",
            &r,
            r.model,
            true,
            &h,
            Expect::StreamOk,
            None,
            None,
        )
        .await;
    }
    s.finish().await;
}

// --- hostile clients, Anthropic and OpenAI clients -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_body() {
    let mut s = Suite::start().await;
    for r in [ROUTES[0], ROUTES[1]] {
        s.n += 1;
        let session = format!("fault-{}", s.n);
        let before = s.metrics().await;
        let mut b = body_for(&r, r.model, false);
        b["padding"] = json!("x".repeat(1_200_000));
        let req = client()
            .post(format!("{}{}", s.gw.url(), r.path))
            .header("x-session-id", &session)
            .header("x-request-id", &session)
            .bearer_auth(&s.key)
            .json(&b);
        let resp = req.send().await.unwrap();
        let st = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let native = if r.anthropic {
            v["type"] == "error"
        } else {
            v["error"]["message"].is_string()
        };
        let rec = s.usage(&session).await;
        let after = s.metrics().await;
        let counted = metric_sum(&after, "tollgate_requests_total", &["status=\"413\""])
            > metric_sum(&before, "tollgate_requests_total", &["status=\"413\""]);
        let alive = s.alive().await;
        let rs = rec
            .as_ref()
            .map_or(0, |r| r["status"].as_u64().unwrap_or(0));
        let ok = st == 413 && native && rs == 413 && counted && alive;
        s.push(
            format!("oversized body (1.2 MB > 1 MiB) [{}]", r.name),
            "413 native; usage; counted; alive".into(),
            format!("{st}, native={native}, usage {rs}, counted={counted}, alive={alive}"),
            ok,
        );
    }
    s.finish().await;
}

/// A header block over max_header_bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_header_block() {
    let mut s = Suite::start().await;
    for r in [ROUTES[0], ROUTES[1]] {
        let before = s.metrics().await;
        let resp = client()
            .post(format!("{}{}", s.gw.url(), r.path))
            .bearer_auth(&s.key)
            .header("x-big", "h".repeat(10_000))
            .json(&body_for(&r, r.model, false))
            .send()
            .await
            .unwrap();
        let st = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let native = if r.anthropic {
            v["type"] == "error"
        } else {
            v["error"]["message"].is_string()
        };
        let after = s.metrics().await;
        let counted = metric_sum(&after, "tollgate_limit_rejections_total", &["header_size"])
            > metric_sum(&before, "tollgate_limit_rejections_total", &["header_size"]);
        let alive = s.alive().await;
        s.push(
            format!("header block 10 KB > 8 KiB [{}]", r.name),
            "431 native; counted; alive (no key read: no usage)".into(),
            format!("{st}, native={native}, counted={counted}, alive={alive}"),
            st == 431 && native && counted && alive,
        );
    }
    s.finish().await;
}

/// Slowloris body: complete headers, then a byte every 300 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_body() {
    let mut s = Suite::start().await;
    for r in [ROUTES[0], ROUTES[1]] {
        s.n += 1;
        let session = format!("fault-{}", s.n);
        let before = s.metrics().await;
        let mut c = raw_conn(s.gw.port).await;
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nx-api-key: {}\r\nx-session-id: {session}\r\nx-request-id: {session}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{",
            r.path, s.key, s.key
        );
        c.write_all(head.as_bytes()).await.unwrap();
        let t0 = Instant::now();
        let (mut rd, mut wr) = c.into_split();
        let drip = tokio::spawn(async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if wr.write_all(b" ").await.is_err() {
                    break;
                }
            }
        });
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(8), rd.read_to_end(&mut out)).await;
        let secs = t0.elapsed().as_secs_f64();
        drip.abort();
        let text = String::from_utf8_lossy(&out).into_owned();
        let st = text.split_whitespace().nth(1).unwrap_or("-").to_string();
        let native = if r.anthropic {
            text.contains("\"type\":\"error\"")
        } else {
            text.contains("{\"error\":{")
        };
        let rec = s.usage(&session).await;
        let rs = rec
            .as_ref()
            .map_or(0, |r| r["status"].as_u64().unwrap_or(0));
        let after = s.metrics().await;
        let counted = metric_sum(&after, "tollgate_limit_rejections_total", &["body_timeout"])
            > metric_sum(
                &before,
                "tollgate_limit_rejections_total",
                &["body_timeout"],
            );
        let alive = s.alive().await;
        s.push(
            format!("slowloris body (1 B / 300 ms, body deadline 1.5 s) [{}]", r.name),
            "408 native within ~1.5 s; usage; counted; alive".into(),
            format!("{st} after {secs:.1}s, native={native}, usage {rs}, counted={counted}, alive={alive}"),
            st == "408" && native && secs < 4.0 && rs == 408 && counted && alive,
        );
    }
    s.finish().await;
}

/// A panic inside request handling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panic_in_request_filter() {
    let mut s = Suite::start().await;
    for r in [ROUTES[0], ROUTES[1]] {
        let h = vec![("x-tollgate-test-panic", "request".to_string())];
        s.http_case(
            "panic in request filter",
            &r,
            r.model,
            false,
            &h,
            Expect::Error(500),
            Some(("tollgate_panics_total", vec!["where=\"request\"".into()])),
            None,
        )
        .await;
    }
    s.panic_logged();
    s.finish().await;
}

/// A panic in a response filter: mid-stream, on the proxy path and the direct path. The proxy
/// path calls the body filter before the response header leaves: a 500; the direct path has
/// sent the header: an error event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panic_in_response_filter() {
    let mut s = Suite::start().await;
    for (r, want) in [
        (ROUTES[0], Expect::ErrorOrStreamError),
        (ROUTES[3], Expect::StreamError),
    ] {
        let h = vec![("x-tollgate-test-panic", "response".to_string())];
        s.http_case(
            "panic in response filter",
            &r,
            r.model,
            true,
            &h,
            want,
            Some(("tollgate_panics_total", vec!["where=\"response\"".into()])),
            None,
        )
        .await;
    }
    s.panic_logged();
    s.finish().await;
}

/// Slowloris headers: a byte every 200 ms, never finishing the header block.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_headers() {
    let mut s = Suite::start().await;
    let before = s.metrics().await;
    let mut c = raw_conn(s.gw.port).await;
    let t0 = Instant::now();
    let trickle =
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-a: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_at = None;
    for b in trickle.iter() {
        if c.write_all(&[*b]).await.is_err() {
            closed_at = Some(t0.elapsed().as_secs_f64());
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_at = Some(t0.elapsed().as_secs_f64());
                break;
            }
            _ => {}
        }
    }
    if closed_at.is_none() {
        closed_at = read_until_close(&mut c, Duration::from_secs(3))
            .await
            .1
            .map(|x| x + t0.elapsed().as_secs_f64());
    }
    let after = s.metrics().await;
    let counted = metric_sum(
        &after,
        "tollgate_limit_rejections_total",
        &["header_timeout"],
    ) > metric_sum(
        &before,
        "tollgate_limit_rejections_total",
        &["header_timeout"],
    );
    let alive = s.alive().await;
    let ok = closed_at.is_some_and(|t| t < 3.0) && counted && alive;
    s.push(
        "slowloris headers (1 B / 200 ms, header deadline 1 s)".into(),
        "connection closed within ~1 s; counted; alive".into(),
        format!(
            "closed after {}, counted={counted}, alive={alive}",
            closed_at.map_or("never".into(), |t| format!("{t:.1}s"))
        ),
        ok,
    );
    s.finish().await;
}

// --- in-flight limits ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_key_inflight_limit() {
    let mut s = Suite::start().await;
    let slow = vec![("x-mock-delay-ms", "3000".to_string())];
    for r in [ROUTES[0], ROUTES[1]] {
        let k = s.gw.create_key(&format!("busy-{}", r.name)).await;
        let mut hold = Vec::new();
        for _ in 0..4 {
            let (url, k, path, body, anth) = (
                s.gw.url(),
                k.clone(),
                r.path,
                body_for(&r, r.model, false),
                r.anthropic,
            );
            let slow = slow.clone();
            hold.push(tokio::spawn(async move {
                let mut q = client().post(format!("{url}{path}")).json(&body);
                q = if anth {
                    q.header("x-api-key", k)
                } else {
                    q.bearer_auth(k)
                };
                for (h, v) in slow {
                    q = q.header(h, v);
                }
                q.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        s.http_case(
            "per-key in-flight limit (5th of 4)",
            &r,
            r.model,
            false,
            &[],
            Expect::Error(429),
            limit("key_inflight"),
            Some(&k),
        )
        .await;
        let held: Vec<u16> = futures_util::future::join_all(hold)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let ok = held.iter().all(|s| *s == 200);
        s.push(
            format!("per-key limit: the 4 admitted [{}]", r.name),
            "4 × 200, nothing queued".into(),
            format!("{held:?}"),
            ok,
        );
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_inflight_limit() {
    let mut s = Suite::start().await;
    let slow = vec![("x-mock-delay-ms", "3000".to_string())];
    let r = ROUTES[1];
    let mut hold = Vec::new();
    for i in 0..2 {
        let k = s.gw.create_key(&format!("global-{i}")).await;
        for _ in 0..4 {
            let (url, k, slow) = (s.gw.url(), k.clone(), slow.clone());
            hold.push(tokio::spawn(async move {
                let mut q = client()
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(k)
                    .json(&chat("gpt-4o-mini", false));
                for (h, v) in slow {
                    q = q.header(h, v);
                }
                q.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.http_case(
        "global in-flight limit (9th of 8)",
        &r,
        r.model,
        false,
        &[],
        Expect::Error(503),
        limit("global_inflight"),
        None,
    )
    .await;
    let a = ROUTES[0];
    s.http_case(
        "global in-flight limit (9th of 8)",
        &a,
        a.model,
        false,
        &[],
        Expect::Error(503),
        limit("global_inflight"),
        None,
    )
    .await;
    let held: Vec<u16> = futures_util::future::join_all(hold)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    s.push(
        "global limit: the 8 admitted".into(),
        "8 × 200".into(),
        format!("{held:?}"),
        held.iter().all(|s| *s == 200),
    );
    // And the slots came back.
    s.http_case(
        "after the limits: slots returned",
        &r,
        r.model,
        false,
        &[],
        Expect::Ok,
        None,
        None,
    )
    .await;
    s.finish().await;
}
