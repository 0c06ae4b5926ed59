//! Failover against the real binary: several deployments behind one model name (weights,
//! priority), retries on connect errors, timeouts, 429 and 5xx before any byte reached the
//! client, circuit breakers (ejection, half-open probe, recovery) visible in /metrics and
//! /health, cross-model fallbacks with translation, never a retry once a stream has
//! started, retried requests metered once, and the retry budget. Each deployment is its own
//! mock upstream, so a fault on one leaves the others healthy.

mod common;

use common::*;
use mock_upstream::{Fault, MockServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Setup {
    gw: Gateway,
    key: String,
    a: MockServer,
    b: MockServer,
    az: MockServer,
    ant: MockServer,
}

fn fault(status: u16) -> Option<Fault> {
    Some(Fault {
        status: Some(status),
        ..Default::default()
    })
}

async fn setup(failover: Value) -> Setup {
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    let az = MockServer::start().await;
    let ant = MockServer::start().await;
    let dead = free_port();
    let provider = |kind: &str, base_url: String, api_key: &str| json!({"kind": kind, "base_url": base_url, "api_key": api_key});
    let cfg = TestConfig::empty()
        .provider(
            "a",
            provider("openai", format!("{}/v1", a.url()), "sk-a-provider-key"),
        )
        .provider(
            "b",
            provider("openai", format!("{}/v1", b.url()), "sk-b-provider-key"),
        )
        .provider(
            "az",
            provider(
                "azure",
                format!("{}/openai/v1", az.url()),
                "sk-az-provider-key",
            ),
        )
        .provider(
            "ant",
            provider("anthropic", ant.url(), "sk-ant-provider-key"),
        )
        .provider(
            "dead",
            provider(
                "openai",
                format!("http://127.0.0.1:{dead}/v1"),
                "sk-dead-provider-key",
            ),
        )
        .set(
            "deployments",
            json!({
                "gpt-4.1": [
                    {"provider": "a", "weight": 3},
                    {"provider": "b", "weight": 1},
                    {"provider": "az", "model": "gpt41-prod", "priority": 1},
                ],
                "spread": [{"provider": "dead"}, {"provider": "b", "priority": 1}],
                "slow": [
                    {"provider": "a", "first_byte_timeout_ms": 300},
                    {"provider": "b", "priority": 1},
                ],
                "claude-sonnet-4-6": [{"provider": "ant"}],
            }),
        )
        .set("fallbacks", json!({"claude-sonnet-4-6": ["gpt-4.1"]}))
        .set("failover", failover);
    let gw = Gateway::start_with(cfg.file());
    let key = gw.create_key("failover").await;
    Setup {
        gw,
        key,
        a,
        b,
        az,
        ant,
    }
}

/// A breaker that opens after 3 failures for 1.5 s.
fn breaker() -> Value {
    json!({"breaker": {"failures": 3, "cooldown_ms": 1500}})
}

impl Setup {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        client()
            .post(format!("{}{path}", self.gw.url()))
            .bearer_auth(&self.key)
            .json(body)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> String {
        client()
            .get(format!("{}{path}", self.gw.url()))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn clear(&self) {
        for m in [&self.a, &self.b, &self.az, &self.ant] {
            m.clear();
            m.set_default_fault(None);
        }
    }

    async fn deployment(&self, id: &str) -> Value {
        let h: Value = serde_json::from_str(&self.get("/health").await).unwrap();
        h["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no deployment {id} in /health: {h}"))
    }

    async fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        self.get("/metrics")
            .await
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| filters.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Usage rows of the test key, newest first, once `n` are written.
    async fn usage(&self, n: usize) -> Vec<Value> {
        for _ in 0..50 {
            let rows: Vec<Value> = self
                .get("/v1/usage?format=jsonl")
                .await
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {n} usage rows");
    }
}

/// One line of the case | expected | observed table (printed with --nocapture).
fn row(case: &str, expected: &str, observed: impl std::fmt::Display) {
    println!("| {case} | {expected} | {observed} |");
}

fn attempts(r: &reqwest::Response) -> u32 {
    r.headers()
        .get("x-tollgate-attempts")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[tokio::test]
async fn weights_balance_and_a_failing_deployment_is_retried_then_ejected() {
    let s = setup(breaker()).await;
    // Healthy: priority 0 shared 3:1, the standby untouched.
    for _ in 0..80 {
        let r = s
            .post("/v1/chat/completions", &chat("gpt-4.1", false))
            .await;
        assert_eq!(r.status(), 200);
    }
    let (na, nb) = (s.a.requests().len(), s.b.requests().len());
    row(
        "healthy group, weights 3:1, standby priority 1 (80 requests)",
        "≈60/20, standby 0",
        format!("a={na} b={nb} standby={}", s.az.requests().len()),
    );
    assert_eq!(na + nb, 80);
    assert!((45..=75).contains(&na), "a={na} b={nb}");
    assert!(
        s.az.requests().is_empty(),
        "the priority-1 standby is not used"
    );
    assert_eq!(
        s.a.requests()[0].header("authorization"),
        Some("Bearer sk-a-provider-key")
    );

    // `a` answers 503: every request still succeeds (on `b`), those that hit `a` first
    // say so; after 3 consecutive failures `a` is ejected and gets no more traffic.
    s.clear();
    s.a.set_default_fault(fault(503));
    let mut retried = 0;
    for _ in 0..30 {
        let r = s
            .post("/v1/chat/completions", &chat("gpt-4.1", false))
            .await;
        assert_eq!(r.status(), 200);
        if attempts(&r) == 2 {
            retried += 1;
        }
        let v: Value = r.json().await.unwrap();
        assert!(v["choices"][0]["message"]["content"].is_string());
    }
    let hits_a = s.a.requests().len();
    row(
        "deployment a answers 503 (30 requests)",
        "all 200 via b; a ejected after 3",
        format!("all 200; {hits_a} reached a, {retried} retried"),
    );
    assert_eq!(hits_a, 3, "ejected after 3 failures");
    assert_eq!(retried, 3);
    let d = s.deployment("gpt-4.1/a").await;
    assert_eq!(d["state"], "open", "{d}");
    assert!(d["retry_in_ms"].as_u64().is_some());
    assert_eq!(
        s.metric("tollgate_deployment_state", &["deployment=\"gpt-4.1/a\""])
            .await,
        2.0
    );
    assert_eq!(
        s.metric("tollgate_deployment_ejections_total", &["gpt-4.1/a"])
            .await,
        1.0
    );
    assert_eq!(
        s.metric(
            "tollgate_upstream_attempts_total",
            &["gpt-4.1/a", "status_5xx"]
        )
        .await,
        3.0
    );
    assert_eq!(
        s.metric(
            "tollgate_retries_total",
            &["kind=\"deployment\"", "status_5xx"]
        )
        .await,
        3.0
    );

    // Retried requests are metered once: one usage row per request, served by `b`.
    let rows = s.usage(110).await;
    assert_eq!(rows.len(), 110);
    assert!(rows.iter().all(|r| r["status"] == 200));
    let on_b = rows.iter().filter(|r| r["provider"] == "b").count();
    assert_eq!(
        on_b,
        nb + 30,
        "the 30 requests of the outage were all served by b"
    );

    // After the cooldown one probe goes to `a`; it has recovered, so the breaker closes.
    s.a.set_default_fault(None);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(s.deployment("gpt-4.1/a").await["state"], "open");
    for _ in 0..12 {
        let r = s
            .post("/v1/chat/completions", &chat("gpt-4.1", false))
            .await;
        assert_eq!(r.status(), 200);
    }
    assert!(s.a.requests().len() > hits_a, "the probe reached a");
    let d = s.deployment("gpt-4.1/a").await;
    assert_eq!(d["state"], "closed", "{d}");
    row(
        "a recovers; after the 1.5 s cooldown",
        "one probe, breaker closed",
        format!("state {} (gauge 0)", d["state"]),
    );
    assert_eq!(
        s.metric("tollgate_deployment_state", &["deployment=\"gpt-4.1/a\""])
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_failed_probe_keeps_the_deployment_out_for_longer() {
    let s = setup(breaker()).await;
    s.a.set_default_fault(fault(500));
    for _ in 0..10 {
        assert_eq!(
            s.post("/v1/chat/completions", &chat("gpt-4.1", false))
                .await
                .status(),
            200
        );
    }
    assert_eq!(s.a.requests().len(), 3);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for _ in 0..10 {
        assert_eq!(
            s.post("/v1/chat/completions", &chat("gpt-4.1", false))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        s.a.requests().len(),
        4,
        "exactly one probe after the cooldown"
    );
    let d = s.deployment("gpt-4.1/a").await;
    assert_eq!(d["state"], "open");
    // Doubled: 3 s, not 1.5 s.
    assert!(d["retry_in_ms"].as_u64().unwrap() > 1600, "{d}");
    row(
        "half-open probe fails",
        "exactly one probe; open for twice as long",
        format!("4 requests reached a; retry_in_ms {}", d["retry_in_ms"]),
    );
}

#[tokio::test]
async fn connect_errors_timeouts_and_429_move_on() {
    let s = setup(breaker()).await;
    // Connection refused on the first deployment: served by the next.
    let r = s.post("/v1/chat/completions", &chat("spread", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts(&r), 2);
    assert_eq!(s.b.requests().len(), 1);
    assert_eq!(s.b.requests()[0].json()["model"], "spread");
    row(
        "connection refused on the first deployment",
        "200 from the next",
        "200, attempts 2",
    );

    // A per-deployment first-byte timeout (300 ms; the provider takes 3 s).
    s.a.set_default_fault(Some(Fault {
        delay_ms: Some(3000),
        ..Default::default()
    }));
    let t = Instant::now();
    let r = s.post("/v1/chat/completions", &chat("slow", true)).await;
    let took = t.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(attempts(&r), 2);
    let text = r.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    row(
        "per-deployment first-byte timeout 300 ms, provider takes 3 s (stream)",
        "200 stream from the next, < 2.5 s",
        format!("200 [DONE], attempts 2, {took:?}"),
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");

    // 429 with Retry-After ejects at once, for that long.
    s.clear();
    s.a.set_default_fault(Some(Fault {
        status: Some(429),
        retry_after: Some(30),
        ..Default::default()
    }));
    let mut served = 0;
    for _ in 0..20 {
        let r = s
            .post("/v1/chat/completions", &chat("gpt-4.1", false))
            .await;
        assert_eq!(r.status(), 200);
        served += 1;
    }
    assert_eq!(served, 20);
    assert_eq!(
        s.a.requests().len(),
        1,
        "one 429 with retry-after is enough"
    );
    let d = s.deployment("gpt-4.1/a").await;
    assert_eq!(d["state"], "open");
    assert!(d["retry_in_ms"].as_u64().unwrap() > 25_000, "{d}");
    row(
        "429 with retry-after: 30",
        "ejected at once for 30 s",
        format!("1 request reached a; retry_in_ms {}", d["retry_in_ms"]),
    );

    // A 200 whose body is not JSON (read ahead before anything reaches the client) counts
    // as a failure: served by the next deployment.
    s.clear();
    s.b.set_default_fault(Some(Fault {
        fault: Some("invalid-json-200".into()),
        ..Default::default()
    }));
    let r = s.post("/v1/chat/completions", &chat("spread", false)).await;
    assert_eq!(
        r.status(),
        502,
        "spread: dead, then b's garbage: nothing left"
    );
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("invalid response body"), "{v}");
    assert!(msg.contains("spread/b (invalid_body)"), "{v}");
    let r = s.post("/v1/chat/completions", &chat("slow", false)).await;
    assert_eq!(r.status(), 200, "slow: a is healthy again, b unused");
    s.a.set_default_fault(Some(Fault {
        fault: Some("invalid-json-200".into()),
        ..Default::default()
    }));
    s.b.set_default_fault(None);
    let r = s.post("/v1/chat/completions", &chat("slow", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts(&r), 2);
    let v: Value = r.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert_eq!(
        s.metric(
            "tollgate_upstream_attempts_total",
            &["slow/a", "invalid_body"]
        )
        .await,
        1.0
    );
    row(
        "200 with an invalid body, then a healthy deployment / nothing left",
        "200 from the next / 502 native",
        "200 attempts 2 / 502 'invalid response body'",
    );
}

#[tokio::test]
async fn the_standby_and_its_own_credential_take_over_when_priority_zero_is_down() {
    let s = setup(breaker()).await;
    s.a.set_default_fault(fault(502));
    s.b.set_default_fault(fault(503));
    let r = s.post("/v1/chat/completions", &chat("gpt-4.1", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts(&r), 3);
    let text = r.text().await.unwrap();
    assert!(text.contains("[DONE]"));
    let got = &s.az.requests()[0];
    assert_eq!(got.path, "/openai/v1/chat/completions");
    assert_eq!(got.header("api-key"), Some("sk-az-provider-key"));
    assert_eq!(got.header("authorization"), None);
    assert_eq!(got.json()["model"], "gpt41-prod");
    let rows = s.usage(1).await;
    assert_eq!(rows.len(), 1, "metered once");
    assert_eq!(rows[0]["provider"], "az");
    assert_eq!(rows[0]["upstream_model"], "gpt41-prod");
    assert_eq!(rows[0]["model"], "gpt-4.1");
    assert!(rows[0]["completion_tokens"].as_u64().unwrap() > 0);
    row(
        "both priority-0 deployments 502/503 (stream)",
        "standby (Azure api-key, own model), metered once",
        "200 stream, attempts 3, 1 usage row on az",
    );

    // Everything down: the last answer is passed on, and the error says what was tried.
    s.az.set_default_fault(fault(500));
    let r = s
        .post("/v1/chat/completions", &chat("gpt-4.1", false))
        .await;
    assert_eq!(r.status(), 500);
    assert_eq!(attempts(&r), 3);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    // Connection errors on every deployment: a gateway error naming each.
    let s2 = setup(json!({"max_attempts": 2})).await;
    drop(s2.b);
    let r = client()
        .post(format!("{}/v1/chat/completions", s2.gw.url()))
        .bearer_auth(&s2.key)
        .json(&chat("spread", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        msg.contains("Tried 2 deployments: spread/dead (connect), spread/b (connect)"),
        "{msg}"
    );
    assert!(!msg.contains("sk-"), "{msg}");
    row(
        "every deployment unreachable",
        "502 native, names what was tried",
        msg,
    );
}

#[tokio::test]
async fn fallbacks_cross_formats_with_translation() {
    let s = setup(breaker()).await;
    // The Anthropic deployment is overloaded: an Anthropic client gets an Anthropic answer,
    // translated from OpenAI's, non-streamed and streamed.
    s.ant.set_default_fault(fault(529));
    let r = s
        .post("/v1/messages", &messages("claude-sonnet-4-6", false))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts(&r), 2);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["model"], "claude-sonnet-4-6");
    assert_eq!(v["content"][0]["type"], "text");
    let up =
        s.a.requests()
            .into_iter()
            .chain(s.b.requests())
            .next()
            .unwrap();
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.json()["model"], "gpt-4.1");

    let r = s
        .post("/v1/messages", &messages("claude-sonnet-4-6", true))
        .await;
    assert_eq!(r.status(), 200);
    let evs = events(&r.text().await.unwrap());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(names.contains(&"content_block_delta"));

    // An OpenAI client on the same model: the fallback speaks its format (no translation).
    let r = s
        .post("/v1/chat/completions", &chat("claude-sonnet-4-6", false))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");

    let rows = s.usage(3).await;
    assert_eq!(rows.len(), 3, "one row per request");
    for row in &rows {
        assert_eq!(row["model"], "claude-sonnet-4-6");
        assert_eq!(row["upstream_model"], "gpt-4.1");
        assert!(
            ["a", "b"].contains(&row["provider"].as_str().unwrap()),
            "{row}"
        );
    }
    assert_eq!(
        s.metric("tollgate_retries_total", &["kind=\"fallback\""])
            .await,
        3.0
    );
    row(
        "Anthropic deployment 529; fallback gpt-4.1 (OpenAI)",
        "Anthropic answers (JSON + stream), translated",
        "message / message_start..message_stop; 3 rows at gpt-4.1",
    );
}

#[tokio::test]
async fn a_started_stream_is_never_replayed() {
    let s = setup(breaker()).await;
    // The stream breaks half-way on whichever deployment serves it: the client gets an error
    // event, and no other deployment sees the request.
    for m in [&s.a, &s.b] {
        m.set_default_fault(Some(Fault {
            fault: Some("reset-mid-stream".into()),
            ..Default::default()
        }));
    }
    let r = s.post("/v1/chat/completions", &chat("gpt-4.1", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts(&r), 1);
    let text = r.text().await.unwrap_or_default();
    assert!(text.contains("\"error\""), "{text}");
    assert_eq!(s.a.requests().len() + s.b.requests().len(), 1);
    assert!(s.az.requests().is_empty());
    row(
        "stream reset half-way",
        "error event, never replayed",
        "error event; 1 upstream request",
    );
}

#[tokio::test]
async fn the_retry_budget_bounds_retries() {
    // No share of traffic and no floor: no retries at all.
    let s = setup(json!({"retry_budget_percent": 0, "retry_budget_min_per_second": 0})).await;
    s.a.set_default_fault(fault(503));
    s.b.set_default_fault(fault(503));
    let r = s
        .post("/v1/chat/completions", &chat("gpt-4.1", false))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(attempts(&r), 1);
    assert_eq!(s.a.requests().len() + s.b.requests().len(), 1);
    assert!(s.az.requests().is_empty());
    assert_eq!(
        s.metric("tollgate_retries_denied_total", &["budget"]).await,
        1.0
    );
    let rows = s.usage(1).await;
    assert_eq!(rows[0]["status"], 503);
    row(
        "retry budget 0% and no floor",
        "no retry; the 503 passed on; denied counted",
        "503, attempts 1, retries_denied{budget} 1",
    );
}
