//! Guardrails against the real binary, with the mock provider and the mock guardrail service
//! (`mock_upstream::GuardrailMock`, Otari's `/validate` contract): every scope in every
//! client format, the merge of operator policies with a request's entries, concurrency,
//! each failure policy, output checks of non-streamed answers, the verdict header on
//! answers and streams (both forwarding paths), SSRF refusals, the stripping of gateway-only
//! fields, policies attached through the management API, records and metrics.

mod common;

use common::*;
use mock_upstream::guardrail::{Behaviour, MARKER};
use mock_upstream::{GuardrailMock, MockServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Env {
    mock: MockServer,
    guard: GuardrailMock,
    gw: Gateway,
    key: String,
}

/// A gateway whose default guardrail service is the mock (plus `more` of the config).
async fn start(more: impl FnOnce(TestConfig, &str) -> TestConfig) -> Env {
    let mock = MockServer::start().await;
    let guard = GuardrailMock::start().await;
    let cfg = more(TestConfig::new(&mock.url()), &guard.url());
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("guarded").await;
    Env {
        mock,
        guard,
        gw,
        key,
    }
}

fn with_url(c: TestConfig, url: &str) -> TestConfig {
    c.set("guardrails", json!({"url": url}))
}

struct Resp {
    status: u16,
    header: Option<String>,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The `x-tollgate-guardrails` header, parsed.
    fn verdicts(&self) -> Vec<Value> {
        let h = self
            .header
            .as_deref()
            .expect("x-tollgate-guardrails header");
        serde_json::from_str::<Value>(h)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The verdict of `profile` in the header.
    fn valid(&self, profile: &str) -> Value {
        self.verdicts()
            .into_iter()
            .find(|v| v["profile"] == profile)
            .unwrap_or_else(|| panic!("no verdict for {profile} in {:?}", self.header))["valid"]
            .clone()
    }
}

async fn send(gw: &Gateway, path: &str, key: &str, body: &Value, rid: &str) -> Resp {
    let r = client()
        .post(format!("{}{}", gw.url(), path))
        .header("authorization", format!("Bearer {key}"))
        .header("anthropic-version", "2023-06-01")
        .header("x-request-id", rid)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("x-tollgate-guardrails")
        .map(|v| v.to_str().unwrap().to_string());
    Resp {
        status,
        header,
        text: r.text().await.unwrap(),
    }
}

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const RESPONSES: &str = "/v1/responses";

/// A conversation in each client format with four places for text: the system prompt, a
/// first user message, a tool result, and the last user message.
fn conversation(path: &str, sys: &str, first: &str, tool: &str, last: &str) -> Value {
    match path {
        CHAT => json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": sys},
            {"role": "user", "content": first},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "read", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": tool},
            {"role": "user", "content": [{"type": "text", "text": last}]},
        ]}),
        MESSAGES => json!({"model": "claude-x", "max_tokens": 50, "system": sys, "messages": [
            {"role": "user", "content": first},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": tool},
                {"type": "text", "text": last}]},
        ]}),
        _ => json!({"model": "gpt-4o-mini", "instructions": sys, "input": [
            {"role": "user", "content": first},
            {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": tool},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": last}]},
        ]}),
    }
}

fn with_guardrails(mut body: Value, g: Value) -> Value {
    body["guardrails"] = g;
    body
}

/// One monitor entry per scope, each its own profile.
fn every_scope() -> Value {
    json!([
        {"profile": "last", "scope": "last_user"},
        {"profile": "users", "scope": "all_user"},
        {"profile": "tools", "scope": "tool_results"},
        {"profile": "full", "scope": "full"},
    ])
}

#[tokio::test]
async fn each_scope_reads_its_part_of_each_client_format() {
    let e = start(with_url).await;
    // Where the marker is → which scopes see it.
    let placements: [(&str, [bool; 4]); 4] = [
        ("sys", [false, false, false, true]),
        ("first", [false, true, false, true]),
        ("tool", [false, false, true, true]),
        ("last", [true, true, false, true]),
    ];
    for path in [CHAT, MESSAGES, RESPONSES] {
        for (at, expect) in placements {
            let t = |p: &str| {
                if p == at {
                    format!("{p} text {MARKER}")
                } else {
                    format!("{p} text")
                }
            };
            let body = with_guardrails(
                conversation(path, &t("sys"), &t("first"), &t("tool"), &t("last")),
                every_scope(),
            );
            let r = send(&e.gw, path, &e.key, &body, "scope").await;
            assert_eq!(r.status, 200, "{path} {at}: {}", r.text);
            for (profile, flagged) in ["last", "users", "tools", "full"].iter().zip(expect) {
                assert_eq!(
                    r.valid(profile),
                    json!(!flagged),
                    "{path}: marker in {at}, scope {profile}"
                );
            }
        }
    }
    // What the service got: the scope's text, never an image; `input` for Responses.
    e.guard.clear();
    let body = with_guardrails(
        json!({"model": "gpt-4o-mini", "input": "just this"}),
        json!([{"profile": "last"}]),
    );
    assert_eq!(send(&e.gw, RESPONSES, &e.key, &body, "r").await.status, 200);
    let seen = e.guard.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].input_text, "just this");
    assert_eq!(seen[0].validate_kwargs, json!({}));
}

#[tokio::test]
async fn images_are_never_sent() {
    let e = start(with_url).await;
    let body = json!({"model": "gpt-4o-mini", "guardrails": [{"profile": "full", "scope": "full"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    assert_eq!(send(&e.gw, CHAT, &e.key, &body, "img").await.status, 200);
    let seen = e.guard.requests();
    assert_eq!(seen[0].input_text, "look");
}

#[tokio::test]
async fn a_flagged_request_in_block_mode_is_a_native_403_and_never_reaches_the_provider() {
    let e = start(with_url).await;
    let block = json!([{"profile": "prompt-injection", "mode": "block"}]);
    // OpenAI envelope (Chat and Responses).
    for path in [CHAT, RESPONSES] {
        let body = with_guardrails(conversation(path, "s", "f", "t", MARKER), block.clone());
        let r = send(&e.gw, path, &e.key, &body, "blocked-openai").await;
        assert_eq!(r.status, 403, "{}", r.text);
        let v = r.json();
        assert_eq!(
            v["error"]["message"],
            "Request blocked by guardrail policy."
        );
        assert_eq!(v["error"]["code"], "guardrail_violation");
        assert_eq!(v["error"]["type"], "permission_error");
        assert_eq!(
            v["error"]["guardrails"],
            json!([{"profile": "prompt-injection", "explanation": format!("found {MARKER}"), "score": 0.9}])
        );
    }
    // Anthropic envelope.
    let body = with_guardrails(conversation(MESSAGES, "s", "f", "t", MARKER), block.clone());
    let r = send(&e.gw, MESSAGES, &e.key, &body, "blocked-anthropic").await;
    assert_eq!(r.status, 403);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(
        v["error"]["message"],
        "Request blocked by guardrail policy."
    );
    assert_eq!(v["error"]["guardrails"][0]["profile"], "prompt-injection");
    assert!(
        e.mock.requests().is_empty(),
        "the provider was never called"
    );
    // The usage record notes the block (and costs nothing).
    let rec = usage_record(&e.gw, "blocked-anthropic").await.expect("row");
    assert_eq!(rec["status"], 403);
    assert_eq!(rec["guardrails"][0]["profile"], "prompt-injection");
    assert_eq!(rec["guardrails"][0]["verdict"], "flagged");
    assert_eq!(rec["guardrails"][0]["blocked"], true);
    assert_eq!(rec["guardrails"][0]["stage"], "input");
    assert_eq!(rec["cost_micros"].as_u64().unwrap_or(0), 0, "{rec}");
    assert_eq!(rec["prompt_tokens"].as_u64().unwrap_or(0), 0, "{rec}");
    // A clean request passes, with its verdict in the header and the record.
    let body = with_guardrails(conversation(CHAT, "s", "f", "t", "fine"), block);
    let r = send(&e.gw, CHAT, &e.key, &body, "clean").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.verdicts(),
        vec![json!({"profile": "prompt-injection", "mode": "block", "valid": true, "score": 0.1})]
    );
    let rec = usage_record(&e.gw, "clean").await.expect("row");
    assert_eq!(rec["guardrails"][0]["verdict"], "valid");
    assert_eq!(rec["guardrails"][0]["blocked"], false);
    // Metrics: verdicts by profile, stage and outcome, and the latency histogram.
    let m = client()
        .get(format!("{}/metrics", e.gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(r#"tollgate_guardrail_verdicts_total{outcome="flagged",profile="prompt-injection",stage="input"} 3"#),
        "{m}"
    );
    assert!(m.contains(r#"tollgate_guardrail_verdicts_total{outcome="valid",profile="prompt-injection",stage="input"} 1"#));
    assert!(m.contains(r#"tollgate_guardrail_latency_seconds_count{profile="prompt-injection"} 4"#));
    // The access log notes the block.
    let log = e.gw.stderr_text();
    assert!(
        log.lines().any(|l| l.contains("rid=blocked-anthropic")
            && l.contains("guardrail_blocked=prompt-injection")),
        "{log}"
    );
}

#[tokio::test]
async fn malformed_declarations_are_400s_that_name_the_field() {
    let e = start(with_url).await;
    for (g, param) in [
        (json!({"profile": "p"}), "guardrails"),
        (
            json!([{"profile": "p"}, {"profile": "p", "mode": "strict"}]),
            "guardrails[1].mode",
        ),
        (json!([{"profile": ""}]), "guardrails[0].profile"),
        (
            json!([{"profile": "p", "on": ["sideways"]}]),
            "guardrails[0].on",
        ),
        (
            json!([{"profile": "p", "mode": "mask"}]),
            "guardrails[0].mode",
        ),
        (json!(vec![json!({"profile": "p"}); 9]), "guardrails"),
    ] {
        let body = with_guardrails(conversation(CHAT, "s", "f", "t", "l"), g);
        let r = send(&e.gw, CHAT, &e.key, &body, "bad").await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.json()["error"]["param"], param);
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(param));
    }
    // Anthropic's envelope has no `param`: the message names the field.
    let body = with_guardrails(
        conversation(MESSAGES, "s", "f", "t", "l"),
        json!([{"profile": "p", "scope": "everything"}]),
    );
    let r = send(&e.gw, MESSAGES, &e.key, &body, "bad").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("guardrails[0].scope"));
    assert!(e.mock.requests().is_empty());
}

#[tokio::test]
async fn unsafe_urls_are_refused_and_loopback_is_allowed() {
    let e = start(with_url).await;
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7:8000",
        "http://192.168.1.1",
        "file:///etc/passwd",
    ] {
        let body = with_guardrails(
            conversation(CHAT, "s", "f", "t", "l"),
            json!([{"profile": "p", "url": url}]),
        );
        let r = send(&e.gw, CHAT, &e.key, &body, "ssrf").await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        assert_eq!(r.json()["error"]["param"], "guardrails[0].url");
    }
    assert!(e.guard.requests().is_empty());
    // A second service on loopback, named by the request.
    let other = GuardrailMock::start().await;
    let body = with_guardrails(
        conversation(CHAT, "s", "f", "t", MARKER),
        json!([{"profile": "p", "url": other.url(), "mode": "block"}]),
    );
    let r = send(&e.gw, CHAT, &e.key, &body, "loopback").await;
    assert_eq!(r.status, 403);
    assert_eq!(other.requests().len(), 1);
    assert!(e.guard.requests().is_empty(), "the entry's own url is used");
}

#[tokio::test]
async fn private_urls_when_the_operator_allows_them() {
    // Allowed: the refusal is no longer a 400 (10.255.255.1 does not answer: the check is
    // unavailable and, in monitor mode, fails open).
    let e = start(|c, u| {
        c.set(
            "guardrails",
            json!({"url": u, "allow_private_urls": true, "timeout_ms": 300}),
        )
    })
    .await;
    let body = with_guardrails(
        conversation(CHAT, "s", "f", "t", "l"),
        json!([{"profile": "p", "url": "http://10.255.255.1:9", "on_unavailable": "monitor"}]),
    );
    let r = send(&e.gw, CHAT, &e.key, &body, "private").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.valid("p"), Value::Null);
}

#[tokio::test]
async fn gateway_only_fields_are_never_forwarded() {
    let e = start(with_url).await;
    // (`mcp_servers` and `mcp_server_ids` are not here: tollgate connects to those servers,
    // or an Anthropic route passes Anthropic's MCP connector through; tests/mcp.rs and
    // tests/mcp_gateway.rs.)
    let extra = json!({"guardrails": [{"profile": "p"}],
        "tools_header": "h", "max_tool_iterations": 3, "session_label": null});
    for (path, model) in [
        (CHAT, "gpt-4o-mini"),
        (CHAT, "claude-x"),
        (MESSAGES, "claude-x"),
        (RESPONSES, "gpt-4o-mini"),
    ] {
        for stream in [false, true] {
            e.mock.clear();
            let mut body = conversation(path, "s", "f", "t", "l");
            body["model"] = json!(model);
            body["stream"] = json!(stream);
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let r = send(&e.gw, path, &e.key, &body, "strip").await;
            assert_eq!(r.status, 200, "{path} {model}: {}", r.text);
            let got = e.mock.requests();
            assert_eq!(got.len(), 1);
            let sent = got[0].json();
            assert!(sent.is_object(), "{path} {model}");
            for k in extra.as_object().unwrap().keys() {
                assert!(
                    sent.get(k).is_none(),
                    "{path} {model} stream={stream}: {k} forwarded"
                );
            }
        }
    }
    // A body without them goes through byte for byte.
    e.mock.clear();
    e.guard.clear();
    let raw = r#"{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"hi"}]}"#;
    let r = client()
        .post(format!("{}{CHAT}", e.gw.url()))
        .bearer_auth(&e.key)
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-tollgate-guardrails").is_none());
    assert_eq!(e.mock.requests()[0].body, raw.as_bytes());
    assert!(e.guard.requests().is_empty());
}

#[tokio::test]
async fn checks_run_concurrently() {
    let e = start(with_url).await;
    let slow = json!({"mock": {"delay_ms": 300}});
    let body = with_guardrails(
        conversation(CHAT, "s", "f", "t", "l"),
        json!([
            {"profile": "a", "validate_kwargs": slow},
            {"profile": "b", "validate_kwargs": slow},
            {"profile": "c", "validate_kwargs": slow},
        ]),
    );
    // Warm the connection pool first: the proof is about the checks, not the connects.
    send(&e.gw, CHAT, &e.key, &body, "warm").await;
    let t = Instant::now();
    let r = send(&e.gw, CHAT, &e.key, &body, "concurrent").await;
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.verdicts().len(), 3);
    assert!(
        took < Duration::from_millis(750),
        "three 300 ms checks took {took:?}: not concurrent"
    );
    assert!(took >= Duration::from_millis(300));
}

#[tokio::test]
async fn each_failure_policy() {
    let e = start(|c, u| c.set("guardrails", json!({"url": u, "timeout_ms": 400}))).await;
    e.guard.set(
        "down",
        Behaviour {
            status: Some(503),
            ..Default::default()
        },
    );
    e.guard.set(
        "slow",
        Behaviour {
            delay_ms: Some(2_000),
            ..Default::default()
        },
    );
    e.guard.set(
        "malformed",
        Behaviour {
            reply: Some("malformed".into()),
            ..Default::default()
        },
    );
    e.guard.set(
        "unsure",
        Behaviour {
            reply: Some("inconclusive".into()),
            ..Default::default()
        },
    );
    e.guard.set(
        "listed",
        Behaviour {
            reply: Some("list".into()),
            ..Default::default()
        },
    );
    let ask = |g: Value, path: &'static str| {
        let body = with_guardrails(conversation(path, "s", "f", "t", MARKER), g);
        let gw = &e.gw;
        let key = e.key.clone();
        async move { send(gw, path, &key, &body, "fail").await }
    };
    // Fail closed: block + on_unavailable block (the default) → native 502.
    for p in ["down", "slow", "malformed"] {
        let r = ask(json!([{"profile": p, "mode": "block"}]), CHAT).await;
        assert_eq!(r.status, 502, "{p}: {}", r.text);
        assert_eq!(r.json()["error"]["code"], "guardrail_unavailable");
        let r = ask(json!([{"profile": p, "mode": "block"}]), MESSAGES).await;
        assert_eq!(r.status, 502);
        assert_eq!(r.json()["type"], "error");
    }
    // Fail open: block + on_unavailable monitor, and monitor mode.
    for g in [
        json!([{"profile": "down", "mode": "block", "on_unavailable": "monitor"}]),
        json!([{"profile": "down"}]),
        json!([{"profile": "malformed", "mode": "monitor", "on_unavailable": "block"}]),
    ] {
        let r = ask(g.clone(), CHAT).await;
        assert_eq!(r.status, 200, "{g}: {}", r.text);
        assert_eq!(r.verdicts()[0]["valid"], Value::Null);
    }
    // An inconclusive verdict is not a flag, even in block mode.
    let r = ask(json!([{"profile": "unsure", "mode": "block"}]), CHAT).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.valid("unsure"), Value::Null);
    // A list `result`: its first item.
    let r = ask(json!([{"profile": "listed", "mode": "block"}]), CHAT).await;
    assert_eq!(r.status, 403);
    let log = e.gw.stderr_text();
    assert!(
        log.contains(
            "guardrail 'down' (input) had no verdict: the service answered HTTP 503; failing open"
        ),
        "{log}"
    );
    assert!(log.contains("had no verdict: timed out; failing closed"));
}

#[tokio::test]
async fn no_service_url_fails_closed_in_block_mode() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url());
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("k").await;
    let body = with_guardrails(
        conversation(CHAT, "s", "f", "t", "l"),
        json!([{"profile": "p", "mode": "block"}]),
    );
    let r = send(&gw, CHAT, &key, &body, "nourl").await;
    assert_eq!(r.status, 502, "{}", r.text);
    let body = with_guardrails(
        conversation(CHAT, "s", "f", "t", "l"),
        json!([{"profile": "p"}]),
    );
    let r = send(&gw, CHAT, &key, &body, "nourl").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.valid("p"), Value::Null);
}

/// A config with policies: `strict` (block, operator kwargs), `watch` (monitor, tool results).
fn with_policies(c: TestConfig, url: &str) -> TestConfig {
    c.set(
        "guardrails",
        json!({"url": url, "policies": {
            "strict": [{"profile": "inj", "mode": "block", "validate_kwargs": {"level": "operator"}}],
            "watch": [{"profile": "tools", "scope": "tool_results"}],
            "everyone": [{"profile": "all"}],
        }, "global": ["everyone"]}),
    )
}

#[tokio::test]
async fn policies_merge_with_requests_and_cannot_be_weakened() {
    let e = start(with_policies).await;
    // The global policy runs on every request, with no `guardrails` in the body.
    let r = send(
        &e.gw,
        CHAT,
        &e.key,
        &conversation(CHAT, "s", "f", "t", "l"),
        "global",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.valid("all"), json!(true));
    // A key with `strict`, through the management API.
    let (st, k) = admin_call(
        &e.gw.url(),
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "strict", "guardrail_policies": ["strict"]})),
    )
    .await;
    assert_eq!(st, 201, "{k}");
    assert_eq!(k["guardrail_policies"], json!(["strict"]));
    let strict = k["key"].as_str().unwrap().to_string();
    let other = GuardrailMock::start().await; // would pass everything
    other.set(
        "inj",
        Behaviour {
            marker: Some("never-present".into()),
            ..Default::default()
        },
    );
    // The request tries to weaken `inj`: monitor, fail open, its own service and kwargs.
    let weaken = json!([{"profile": "inj", "mode": "monitor", "on_unavailable": "monitor",
        "url": other.url(), "validate_kwargs": {"level": "request"}}]);
    let body = with_guardrails(conversation(CHAT, "s", "f", "t", MARKER), weaken.clone());
    let r = send(&e.gw, CHAT, &strict, &body, "weaken").await;
    assert_eq!(r.status, 403, "block wins: {}", r.text);
    assert!(other.requests().is_empty(), "the operator's url wins");
    let inj: Vec<_> = e
        .guard
        .requests()
        .into_iter()
        .filter(|v| v.profile == "inj")
        .collect();
    assert_eq!(inj.len(), 1, "merged into one check");
    assert_eq!(inj[0].validate_kwargs, json!({"level": "operator"}));
    // The same request on a key without the policy: the request's own monitor entry.
    let r = send(&e.gw, CHAT, &e.key, &body, "own").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.valid("inj"), json!(true), "its own service said so");
    assert_eq!(other.requests().len(), 1);
    // A request may strengthen: the global `all` (monitor) in block mode.
    let body = with_guardrails(
        conversation(CHAT, "s", "f", "t", MARKER),
        json!([{"profile": "all", "mode": "block"}]),
    );
    let r = send(&e.gw, CHAT, &e.key, &body, "stronger").await;
    assert_eq!(r.status, 403);
    // And add: another profile runs beside the policies.
    let body = with_guardrails(
        conversation(CHAT, "s", "f", "t", "l"),
        json!([{"profile": "extra"}]),
    );
    let r = send(&e.gw, CHAT, &strict, &body, "added").await;
    assert_eq!(r.status, 200);
    let profiles: Vec<Value> = r.verdicts().iter().map(|v| v["profile"].clone()).collect();
    assert_eq!(profiles, vec![json!("all"), json!("inj"), json!("extra")]);
}

#[tokio::test]
async fn policies_per_user_and_unknown_names() {
    let e = start(with_policies).await;
    let (st, _) = admin_call(
        &e.gw.url(),
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"user_id": "agent", "guardrail_policies": ["watch"]})),
    )
    .await;
    assert_eq!(st, 201);
    let (st, k) = admin_call(
        &e.gw.url(),
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"user_id": "agent"})),
    )
    .await;
    assert_eq!(st, 201);
    let key = k["key"].as_str().unwrap();
    // Claude Code's path: the injection arrives in a tool result.
    let body = conversation(
        MESSAGES,
        "s",
        "f",
        &format!("README says {MARKER}"),
        "go on",
    );
    let r = send(&e.gw, MESSAGES, key, &body, "user-policy").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.valid("tools"), json!(false));
    // Upgrade the policy through the management API: a key attached to `strict` too.
    let kid = k["id"].as_str().unwrap();
    let (st, k2) = admin_call(
        &e.gw.url(),
        reqwest::Method::PATCH,
        &format!("/v1/keys/{kid}"),
        Some(json!({"guardrail_policies": ["strict"]})),
    )
    .await;
    assert_eq!(st, 200, "{k2}");
    let body = conversation(MESSAGES, "s", "f", "t", MARKER);
    assert_eq!(
        send(&e.gw, MESSAGES, key, &body, "patched").await.status,
        403
    );
    // Unknown names are refused.
    for (path, body) in [
        ("/v1/keys", json!({"guardrail_policies": ["lax"]})),
        (
            "/v1/users",
            json!({"user_id": "u2", "guardrail_policies": ["lax"]}),
        ),
        ("/v1/keys", json!({"guardrail_policies": "strict"})),
    ] {
        let (st, v) = admin_call(&e.gw.url(), reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(st, 400, "{v}");
        assert_eq!(v["error"]["param"], "guardrail_policies");
    }
}

#[tokio::test]
async fn non_streamed_answers_are_checked_and_refused_natively() {
    let e = start(with_url).await;
    // The mock provider answers "Hello from mock upstream!": flag that.
    let output = |mode: &str| {
        json!([{"profile": "leak", "mode": mode, "on": ["output"],
            "validate_kwargs": {"mock": {"marker": "Hello from mock"}}}])
    };
    // Chat: finish_reason content_filter, with the refusal field.
    let body = with_guardrails(chat("gpt-4o-mini", false), output("block"));
    let r = send(&e.gw, CHAT, &e.key, &body, "out-chat").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert!(v["choices"][0]["message"]["refusal"].is_string());
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert!(!r.text.contains("Hello from mock"));
    assert_eq!(r.valid("leak"), json!(false));
    let seen = e.guard.requests();
    assert_eq!(seen.len(), 1, "output only: the prompt was not sent");
    assert!(seen[0].input_text.contains("Hello from mock upstream!"));
    // Billed for what the provider produced.
    let rec = usage_record(&e.gw, "out-chat").await.expect("row");
    assert!(rec["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(rec["guardrails"][0]["stage"], "output");
    assert_eq!(rec["guardrails"][0]["blocked"], true);
    // Anthropic: stop_reason refusal; also when translated (Chat client, Anthropic provider).
    let body = with_guardrails(messages("claude-x", false), output("block"));
    let r = send(&e.gw, MESSAGES, &e.key, &body, "out-anthropic").await;
    let v = r.json();
    assert_eq!(v["stop_reason"], "refusal", "{v}");
    assert_eq!(v["content"], json!([]));
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let body = with_guardrails(chat("claude-x", false), output("block"));
    let r = send(&e.gw, CHAT, &e.key, &body, "out-translated").await;
    assert_eq!(r.json()["choices"][0]["finish_reason"], "content_filter");
    // Responses: a refusal content part.
    let body = with_guardrails(
        json!({"model": "gpt-4o-mini", "input": "hi"}),
        output("block"),
    );
    let r = send(&e.gw, RESPONSES, &e.key, &body, "out-responses").await;
    let v = r.json();
    assert_eq!(v["output"][0]["content"][0]["type"], "refusal", "{v}");
    assert!(!r.text.contains("Hello from mock"));
    // Monitor: the answer as it came, the verdict in the header.
    let body = with_guardrails(chat("gpt-4o-mini", false), output("monitor"));
    let r = send(&e.gw, CHAT, &e.key, &body, "out-monitor").await;
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from mock upstream!"
    );
    assert_eq!(
        r.verdicts(),
        vec![json!({"profile": "leak", "mode": "monitor", "valid": false, "score": 0.9})]
    );
    // Input and output: one verdict each.
    let both = json!([{"profile": "leak", "on": ["input", "output"],
        "validate_kwargs": {"mock": {"marker": "Hello from mock"}}}]);
    let body = with_guardrails(chat("gpt-4o-mini", false), both);
    let r = send(&e.gw, CHAT, &e.key, &body, "out-both").await;
    let valid: Vec<Value> = r.verdicts().iter().map(|v| v["valid"].clone()).collect();
    assert_eq!(valid, vec![json!(true), json!(false)]);
}

#[tokio::test]
async fn the_verdict_header_is_on_streams_on_both_paths() {
    let e = start(with_url).await;
    let g = json!([{"profile": "watch"}]);
    for (path, model, what) in [
        (CHAT, "gpt-4o-mini", "proxy path (same format)"),
        (MESSAGES, "claude-x", "proxy path (Anthropic)"),
        (CHAT, "claude-x", "direct path (translated)"),
        (RESPONSES, "gpt-4o-mini", "Responses"),
    ] {
        let mut body = with_guardrails(conversation(path, "s", "f", "t", MARKER), g.clone());
        body["model"] = json!(model);
        body["stream"] = json!(true);
        let rid = format!("stream-{}", what.replace(' ', "-").replace(['(', ')'], ""));
        let r = send(&e.gw, path, &e.key, &body, &rid).await;
        assert_eq!(r.status, 200, "{what}: {}", r.text);
        assert_eq!(
            r.verdicts(),
            vec![json!({"profile": "watch", "mode": "monitor", "valid": false, "score": 0.9})],
            "{what}"
        );
        assert!(!events(&r.text).is_empty(), "{what}: a stream");
        // The access line says which path carried it (`large_body`: the direct path).
        let direct = what.starts_with("direct");
        let deadline = Instant::now() + Duration::from_secs(5);
        let line = loop {
            let log = e.gw.stderr_text();
            if let Some(l) = log.lines().find(|l| l.contains(&format!("rid={rid} "))) {
                break l.to_string();
            }
            assert!(Instant::now() < deadline, "no access line for {rid}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            line.contains(&format!("large_body={direct}")),
            "{what}: {line}"
        );
    }
}

#[tokio::test]
async fn the_verdict_cache_when_enabled() {
    let e = start(|c, u| {
        c.set(
            "guardrails",
            json!({"url": u, "cache": {"enabled": true, "ttl_secs": 60}}),
        )
    })
    .await;
    let body = with_guardrails(
        conversation(CHAT, "s", "f", "t", "same text"),
        json!([{"profile": "p"}]),
    );
    for _ in 0..3 {
        assert_eq!(send(&e.gw, CHAT, &e.key, &body, "cached").await.status, 200);
    }
    assert_eq!(e.guard.requests().len(), 1, "one call, then the cache");
    let body = with_guardrails(
        conversation(CHAT, "s", "f", "t", "other text"),
        json!([{"profile": "p"}]),
    );
    send(&e.gw, CHAT, &e.key, &body, "cached").await;
    assert_eq!(
        e.guard.requests().len(),
        2,
        "another text is another verdict"
    );
}

#[tokio::test]
async fn policies_that_do_not_apply_cost_nothing() {
    // Policies configured, none global, none on this key: no check, the body untouched.
    let e = start(|c, u| {
        c.set(
            "guardrails",
            json!({"url": u, "policies": {"strict": [{"profile": "inj", "mode": "block"}]}}),
        )
    })
    .await;
    let raw = format!(
        r#"{{"model":"gpt-4o-mini", "messages":[{{"role":"user","content":"{MARKER}"}}]}}"#
    );
    let r = client()
        .post(format!("{}{CHAT}", e.gw.url()))
        .bearer_auth(&e.key)
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-tollgate-guardrails").is_none());
    assert!(e.guard.requests().is_empty());
    assert_eq!(e.mock.requests()[0].body, raw.as_bytes());
}

// ---- Streamed answers ----

/// The same format on both sides, and translated (the client's grammar either way).
const STREAM_ROUTES: [(&str, &str, &str); 6] = [
    (CHAT, "gpt-4o-mini", "chat"),
    (MESSAGES, "claude-x", "anthropic"),
    (RESPONSES, "gpt-4o-mini", "responses"),
    (CHAT, "claude-x", "chat-translated"),
    (MESSAGES, "gpt-4o-mini", "anthropic-translated"),
    (RESPONSES, "claude-x", "responses-translated"),
];

const FILLER: &str = "lorem ipsum dolor sit amet ";
const TAIL: &str = "THE-END";

/// An answer of ~450 characters with the marker in the middle and [`TAIL`] last.
fn flagged_answer() -> String {
    format!("{}{MARKER} {}{TAIL}", FILLER.repeat(8), FILLER.repeat(8))
}

/// Streams `text` from the mock (four characters an event, `delay_ms` apart) to `path`
/// under the output entry `entry`.
async fn stream_with(
    e: &Env,
    path: &str,
    model: &str,
    entry: Value,
    text: &str,
    delay_ms: u64,
    rid: &str,
) -> Resp {
    let plain = match path {
        CHAT => chat(model, true),
        MESSAGES => messages(model, true),
        _ => json!({"model": model, "stream": true, "input": "hi"}),
    };
    let body = with_guardrails(plain, json!([entry]));
    let r = client()
        .post(format!("{}{}", e.gw.url(), path))
        .bearer_auth(&e.key)
        .header("anthropic-version", "2023-06-01")
        .header("x-request-id", rid)
        .header("x-mock-text", text)
        .header("x-mock-chunk-delay-ms", delay_ms.to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("x-tollgate-guardrails")
        .map(|v| v.to_str().unwrap().to_string());
    Resp {
        status,
        header,
        text: r.text().await.unwrap(),
    }
}

/// The answer text a client reads off a stream, and how many text deltas carried it.
fn streamed_text(path: &str, body: &str) -> (String, usize) {
    let mut text = String::new();
    let mut n = 0;
    for (name, v) in events(body) {
        let piece = match path {
            MESSAGES if name == "content_block_delta" => v["delta"]["text"].as_str(),
            RESPONSES if name == "response.output_text.delta" => v["delta"].as_str(),
            CHAT => v["choices"][0]["delta"]["content"].as_str(),
            _ => None,
        };
        if let Some(p) = piece {
            text.push_str(p);
            n += 1;
        }
    }
    (text, n)
}

/// Whether the stream ended with its grammar's refusal (and is otherwise well formed).
fn ends_in_refusal(path: &str, body: &str) -> Result<(), String> {
    let evs = events(body);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    let last = |k: usize| {
        evs.get(evs.len().wrapping_sub(k))
            .cloned()
            .unwrap_or_default()
    };
    match path {
        MESSAGES => {
            let starts = names
                .iter()
                .filter(|n| **n == "content_block_start")
                .count();
            let stops = names.iter().filter(|n| **n == "content_block_stop").count();
            let ok = names.ends_with(&["message_delta", "message_stop"])
                && last(2).1["delta"]["stop_reason"] == "refusal"
                && starts == stops
                && names.iter().filter(|n| **n == "message_stop").count() == 1;
            ok.then_some(()).ok_or_else(|| format!("{names:?}"))
        }
        CHAT => {
            let c = &last(2).1["choices"][0];
            let ok = last(1).1 == json!("[DONE]")
                && c["finish_reason"] == "content_filter"
                && c["delta"]["refusal"].is_string()
                && evs.iter().filter(|(_, v)| *v == json!("[DONE]")).count() == 1;
            ok.then_some(()).ok_or_else(|| format!("{:?}", last(2)))
        }
        _ => {
            let (name, v) = last(1);
            let output = v["response"]["output"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let refused = output.iter().any(|i| i["content"][0]["type"] == "refusal");
            let seqs: Vec<u64> = evs
                .iter()
                .filter_map(|(_, v)| v["sequence_number"].as_u64())
                .collect();
            let ordered = seqs.windows(2).all(|w| w[1] > w[0]);
            let ok = name == "response.incomplete"
                && v["response"]["incomplete_details"]["reason"] == "content_filter"
                && refused
                && ordered
                && !names.contains(&"response.completed");
            ok.then_some(()).ok_or_else(|| format!("{name} {v}"))
        }
    }
}

/// The output verdict of `profile` in a usage record.
fn output_outcome(rec: &Value, profile: &str) -> Value {
    rec["guardrails"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["profile"] == profile && g["stage"] == "output")
        .cloned()
        .unwrap_or_else(|| panic!("no output outcome for {profile} in {rec}"))
}

#[tokio::test]
async fn a_flagged_stream_is_cut_with_its_grammars_refusal() {
    let e = start(with_url).await;
    let entry =
        json!({"profile": "leak", "mode": "block", "on": ["output"], "output_window_chars": 50});
    for (path, model, what) in STREAM_ROUTES {
        let rid = format!("cut-{what}");
        let r = stream_with(&e, path, model, entry.clone(), &flagged_answer(), 10, &rid).await;
        assert_eq!(r.status, 200, "{what}: {}", r.text);
        if let Err(why) = ends_in_refusal(path, &r.text) {
            panic!("{what}: not a refusal ending: {why}\n{}", r.text);
        }
        let (text, deltas) = streamed_text(path, &r.text);
        assert!(
            text.starts_with(FILLER),
            "{what}: delivered as it came: {text:?}"
        );
        assert!(!text.contains(TAIL), "{what}: cut before the end: {text:?}");
        // The input verdicts only in the header (the output ones came later).
        assert!(r.header.is_none(), "{what}: {:?}", r.header);
        // Billed for what the provider produced: at least what the client received.
        let rec = usage_record(&e.gw, &rid).await.expect("usage row");
        let billed = rec["completion_tokens"].as_u64().unwrap();
        assert!(billed >= deltas as u64, "{what}: {billed} < {deltas}");
        let o = output_outcome(&rec, "leak");
        assert_eq!(o["verdict"], "flagged", "{what}");
        assert_eq!(o["blocked"], true, "{what}");
    }
    // Checked incrementally: the texts sent grow, each one the answer so far.
    let seen: Vec<String> = e
        .guard
        .requests()
        .into_iter()
        .map(|v| v.input_text)
        .collect();
    assert!(seen.len() >= 6 * 2, "{}", seen.len());
    assert!(seen
        .iter()
        .all(|t| flagged_answer().starts_with(t.as_str())));
    // Counted in the metrics.
    let m = client()
        .get(format!("{}/metrics", e.gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.lines()
            .any(|l| l.starts_with("tollgate_guardrail_verdicts_total")
                && l.contains("stage=\"output\"")
                && l.contains("outcome=\"flagged\"")),
        "{m}"
    );
}

#[tokio::test]
async fn a_monitored_stream_is_not_cut() {
    let e = start(with_url).await;
    let entry = json!({"profile": "leak", "on": ["output"], "output_window_chars": 50});
    for (path, model, what) in STREAM_ROUTES {
        let rid = format!("monitor-{what}");
        let r = stream_with(&e, path, model, entry.clone(), &flagged_answer(), 2, &rid).await;
        assert_eq!(r.status, 200, "{what}");
        assert!(ends_in_refusal(path, &r.text).is_err(), "{what}");
        assert_eq!(streamed_text(path, &r.text).0, flagged_answer(), "{what}");
        let rec = usage_record(&e.gw, &rid).await.expect("usage row");
        let o = output_outcome(&rec, "leak");
        assert_eq!(o["verdict"], "flagged", "{what}");
        assert_eq!(o["blocked"], false, "{what}");
    }
}

#[tokio::test]
async fn held_back_streams_never_deliver_flagged_text() {
    let e = start(with_url).await;
    let entry = json!({"profile": "leak", "mode": "block", "on": ["output"],
        "output_window_chars": 50, "hold_back": true});
    for (path, model, what) in STREAM_ROUTES {
        let r = stream_with(&e, path, model, entry.clone(), &flagged_answer(), 2, "held").await;
        if let Err(why) = ends_in_refusal(path, &r.text) {
            panic!("{what}: not a refusal ending: {why}\n{}", r.text);
        }
        let (text, _) = streamed_text(path, &r.text);
        assert!(!text.contains("FLAG"), "{what}: {text:?}");
        assert!(!r.text.contains(MARKER), "{what}: anywhere in the stream");
        assert!(text.starts_with(FILLER), "{what}: checked text went out");
        // A clean answer is delivered whole, and ends normally.
        let clean = format!("{}done", FILLER.repeat(12));
        let r = stream_with(&e, path, model, entry.clone(), &clean, 0, "held-clean").await;
        assert!(ends_in_refusal(path, &r.text).is_err(), "{what}");
        assert_eq!(streamed_text(path, &r.text).0, clean, "{what}");
    }
}

#[tokio::test]
async fn the_end_of_stream_check_decides_the_ending() {
    let e = start(with_url).await;
    // Shorter than the default window (1,000): only the end-of-stream check runs.
    let short = format!("a short answer with {MARKER} in it");
    let entry = json!({"profile": "leak", "mode": "block", "on": ["output"]});
    for (path, model, what) in STREAM_ROUTES {
        let before = e.guard.requests().len();
        let r = stream_with(&e, path, model, entry.clone(), &short, 0, "end").await;
        if let Err(why) = ends_in_refusal(path, &r.text) {
            panic!("{what}: not a refusal ending: {why}\n{}", r.text);
        }
        // Not held back: the text went out; the normal end did not.
        assert_eq!(streamed_text(path, &r.text).0, short, "{what}");
        let seen = e.guard.requests();
        assert_eq!(seen.len(), before + 1, "{what}: one check, at the end");
        assert_eq!(seen[before].input_text, short, "{what}");
    }
}

#[tokio::test]
async fn stream_checks_do_not_hold_the_stream_back() {
    let e = start(with_url).await;
    // Each check takes 400 ms; a window every 20 characters of a ~100-character answer
    // streamed in ~250 ms. Waiting on each check would take over 2 s.
    let entry = json!({"profile": "slow", "mode": "monitor", "on": ["output"],
        "output_window_chars": 20, "validate_kwargs": {"mock": {"delay_ms": 400}}});
    let text = format!("{}done", FILLER.repeat(4));
    let t = Instant::now();
    let r = stream_with(&e, CHAT, "gpt-4o-mini", entry, &text, 10, "fast").await;
    let took = t.elapsed();
    assert_eq!(streamed_text(CHAT, &r.text).0, text);
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test]
async fn a_stream_whose_check_fails_closed_ends_in_its_grammars_error() {
    let e = start(with_url).await;
    let entry = json!({"profile": "down", "mode": "block", "on": ["output"],
        "validate_kwargs": {"mock": {"status": 503}}});
    for (path, model, what) in STREAM_ROUTES {
        let r = stream_with(&e, path, model, entry.clone(), "fine text", 0, "closed").await;
        let evs = events(&r.text);
        let (name, last) = evs.last().cloned().unwrap_or_default();
        let ok = match path {
            MESSAGES => name == "error",
            CHAT => last["error"].is_object(),
            _ => name == "response.failed",
        };
        assert!(ok, "{what}: {}", r.text);
        assert!(ends_in_refusal(path, &r.text).is_err(), "{what}");
    }
    // Failing open (monitor) ends normally.
    let entry = json!({"profile": "down", "mode": "block", "on": ["output"],
        "on_unavailable": "monitor", "validate_kwargs": {"mock": {"status": 503}}});
    let r = stream_with(&e, CHAT, "gpt-4o-mini", entry, "fine text", 0, "open").await;
    assert_eq!(events(&r.text).last().unwrap().1, json!("[DONE]"));
    assert_eq!(streamed_text(CHAT, &r.text).0, "fine text");
}

// ---- Built-in profiles: pii, deny_patterns, masking ----

const EMAIL: &str = "jane.doe@example.com";
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// A one-message request in `path`'s format.
fn plain(path: &str, model: &str, stream: bool, text: &str) -> Value {
    match path {
        CHAT => {
            json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})
        }
        MESSAGES => json!({"model": model, "stream": stream, "max_tokens": 100,
            "messages": [{"role": "user", "content": text}]}),
        _ => json!({"model": model, "stream": stream, "input": text}),
    }
}

/// The text of a non-streamed answer in `path`'s format.
fn answer_text(path: &str, v: &Value) -> String {
    match path {
        CHAT => v["choices"][0]["message"]["content"].as_str(),
        MESSAGES => v["content"][0]["text"].as_str(),
        _ => v["output"]
            .as_array()
            .and_then(|o| o.iter().find(|i| i["type"] == "message"))
            .and_then(|i| i["content"][0]["text"].as_str()),
    }
    .unwrap_or_default()
    .to_string()
}

async fn send_with(e: &Env, path: &str, body: &Value, rid: &str, answer: &str) -> Resp {
    let r = client()
        .post(format!("{}{}", e.gw.url(), path))
        .bearer_auth(&e.key)
        .header("anthropic-version", "2023-06-01")
        .header("x-request-id", rid)
        .header("x-mock-text", answer)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("x-tollgate-guardrails")
        .map(|v| v.to_str().unwrap().to_string());
    Resp {
        status,
        header,
        text: r.text().await.unwrap(),
    }
}

#[tokio::test]
async fn masked_values_never_leave_and_are_restored_in_the_answer() {
    let e = start(with_url).await;
    let prompt = format!("Mail {EMAIL} the key {AWS_KEY}, and {EMAIL} again");
    // The model (the mock) answers with the placeholders it was shown, four characters an
    // event on streams: placeholders split across deltas.
    let answer = "Sent to [EMAIL_1] with [AWS_KEY_1].";
    let restored = format!("Sent to {EMAIL} with {AWS_KEY}.");
    // A service check beside the masking: it sees placeholders too.
    let entries = json!([{"profile": "pii", "mode": "mask", "restore": true},
        {"profile": "watch", "scope": "last_user"}]);
    for (path, model, what) in STREAM_ROUTES {
        for stream in [false, true] {
            let rid = format!("mask-{what}-{stream}");
            let body = with_guardrails(plain(path, model, stream, &prompt), entries.clone());
            let r = send_with(&e, path, &body, &rid, answer).await;
            assert_eq!(r.status, 200, "{what} {stream}: {}", r.text);
            let text = if stream {
                streamed_text(path, &r.text).0
            } else {
                answer_text(path, &r.json())
            };
            assert_eq!(text, restored, "{what} stream={stream}: {}", r.text);
            let sent = e.mock.requests().pop().unwrap();
            let sent = String::from_utf8_lossy(&sent.body);
            assert!(
                !sent.contains(EMAIL) && !sent.contains(AWS_KEY),
                "{what}: {sent}"
            );
            assert!(sent.contains("Mail [EMAIL_1] the key [AWS_KEY_1], and [EMAIL_1] again"));
            let checked = e.guard.requests().pop().unwrap().input_text;
            assert_eq!(
                checked,
                "Mail [EMAIL_1] the key [AWS_KEY_1], and [EMAIL_1] again"
            );
            assert_eq!(
                r.verdicts()[0],
                json!({"profile": "pii", "mode": "mask", "valid": false, "score": 1.0})
            );
        }
    }
    // Without `restore`, the answer keeps the placeholders.
    let body = with_guardrails(
        plain(CHAT, "gpt-4o-mini", false, &prompt),
        json!([{"profile": "pii", "mode": "mask"}]),
    );
    let r = send_with(&e, CHAT, &body, "mask-kept", answer).await;
    assert_eq!(answer_text(CHAT, &r.json()), answer);
    // The originals are in no header, log line or usage record.
    let rec = usage_record(&e.gw, "mask-kept").await.expect("row");
    assert_eq!(rec["guardrails"][0]["verdict"], "flagged");
    let rows = serde_json::to_string(&usage_rows(&e.gw).await).unwrap();
    let log = e.gw.stderr_text() + &e.gw.stdout_text();
    for secret in [EMAIL, AWS_KEY] {
        assert!(!rows.contains(secret), "usage rows hold {secret}");
        assert!(!log.contains(secret), "the log holds {secret}");
        assert!(!r.header.as_deref().unwrap_or("").contains(secret));
    }
}

#[tokio::test]
async fn built_in_profiles_check_in_process() {
    let e = start(|c, u| {
        c.set(
            "guardrails",
            json!({"url": u, "deny_patterns": ["project\\s+falcon", "(?-i)ZX-[0-9]{4}"]}),
        )
    })
    .await;
    // pii in block mode: a 403 whose explanation names kinds and counts, not the key.
    let body = with_guardrails(
        plain(
            CHAT,
            "gpt-4o-mini",
            false,
            &format!("use {AWS_KEY} and {EMAIL}"),
        ),
        json!([{"profile": "pii", "mode": "block"}]),
    );
    let r = send(&e.gw, CHAT, &e.key, &body, "pii-block").await;
    assert_eq!(r.status, 403, "{}", r.text);
    let v = r.json();
    assert_eq!(
        v["error"]["guardrails"][0]["explanation"],
        "pii: 1 email, 1 aws_key"
    );
    assert!(!r.text.contains(AWS_KEY) && !r.text.contains(EMAIL));
    // deny_patterns from the config, case-insensitive unless a pattern says otherwise.
    let body = with_guardrails(
        plain(
            MESSAGES,
            "claude-x",
            false,
            "About Project  Falcon and zx-1234",
        ),
        json!([{"profile": "deny_patterns", "mode": "block"}]),
    );
    let r = send(&e.gw, MESSAGES, &e.key, &body, "deny-block").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        r.json()["error"]["guardrails"][0]["explanation"],
        "deny_patterns: 1 deny_pattern (patterns #1)"
    );
    // Monitor: through, the verdict in the header.
    let body = with_guardrails(
        plain(RESPONSES, "gpt-4o-mini", false, EMAIL),
        json!([{"profile": "pii"}]),
    );
    let r = send(&e.gw, RESPONSES, &e.key, &body, "pii-monitor").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.valid("pii"), json!(false));
    // On the answer, non-streamed and streamed.
    let out = json!([{"profile": "pii", "mode": "block", "on": ["output"]}]);
    let leak = format!("the address is {EMAIL}");
    let body = with_guardrails(plain(CHAT, "gpt-4o-mini", false, "hi"), out.clone());
    let r = send_with(&e, CHAT, &body, "pii-out", &leak).await;
    assert_eq!(r.json()["choices"][0]["finish_reason"], "content_filter");
    let body = with_guardrails(plain(MESSAGES, "claude-x", true, "hi"), out);
    let r = send_with(&e, MESSAGES, &body, "pii-out-stream", &leak).await;
    ends_in_refusal(MESSAGES, &r.text).unwrap();
    // Never sent to a service.
    assert!(e.guard.requests().is_empty());
    assert_eq!(
        e.mock.requests().len(),
        3,
        "the blocked ones never reached it"
    );
}
