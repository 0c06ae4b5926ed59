//! End users (an application's own users, named by `user`, `safety_identifier` or Anthropic's
//! `metadata.user_id`) against the real binary: attribution on usage rows from every client
//! format, forwarding to the provider, `/v1/usage` filters and grouping, the user-mismatch
//! policy (off by default), and exact per-end-user budgets and rate limits.

mod common;

use common::*;
use futures_util::future::join_all;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::time::Duration;

/// $1 per million input tokens, $2 per million output tokens: a request's cost in
/// micro-dollars is `input + 2 * output`.
fn priced(c: TestConfig) -> TestConfig {
    c.pricing("openai:gpt-4o-mini", 1, 2)
        .pricing("anthropic:claude-x", 1, 2)
}

/// Claude Code's `metadata.user_id`: a JSON string of device and session ids.
const CLAUDE_CODE_BLOB: &str =
    "{\"device_id\":\"ab12\",\"account_uuid\":\"\",\"session_id\":\"6afd43e8\"}";

/// A gateway on a fresh mock, priced, with `more` of the config.
async fn start(more: impl FnOnce(TestConfig) -> TestConfig) -> (MockServer, Gateway) {
    let mock = MockServer::start().await;
    let cfg = more(priced(TestConfig::new(&mock.url())));
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    (mock, gw)
}

async fn admin(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    admin_call(&gw.url(), method, path, body).await
}

/// Creates a key with these fields; returns (id, secret).
async fn key(gw: &Gateway, fields: Value) -> (String, String) {
    let (st, k) = admin(gw, reqwest::Method::POST, "/v1/keys", Some(fields)).await;
    assert_eq!(st, 201, "{k}");
    (
        k["id"].as_str().unwrap().to_string(),
        k["key"].as_str().unwrap().to_string(),
    )
}

async fn post(gw: &Gateway, path: &str, secret: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}{}", gw.url(), path))
        .header("authorization", format!("Bearer {secret}"))
        .header("x-api-key", secret)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn chat_as(model: &str, field: &str, who: &str) -> Value {
    json!({"model": model, "max_tokens": 10, field: who, "messages": [{"role": "user", "content": "hi"}]})
}

fn messages_as(model: &str, who: &str) -> Value {
    json!({"model": model, "max_tokens": 10, "metadata": {"user_id": who}, "messages": [{"role": "user", "content": "hi"}]})
}

fn responses_as(model: &str, field: &str, who: &str) -> Value {
    json!({"model": model, "max_output_tokens": 10, field: who, "input": "hi"})
}

/// Usage records matching `query`, once there are `n` of them (the writer commits every
/// few milliseconds).
async fn usage(gw: &Gateway, query: &str, n: usize) -> Value {
    let mut last = Value::Null;
    for _ in 0..50 {
        last = admin(
            gw,
            reqwest::Method::GET,
            &format!("/v1/usage?{query}"),
            None,
        )
        .await
        .1;
        if last["data"].as_array().is_some_and(|d| d.len() >= n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// The JSON body of the last request the mock received on `path`.
fn last_upstream_body(mock: &MockServer, path: &str) -> Value {
    let r = mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == path)
        .unwrap_or_else(|| panic!("no upstream request on {path}"));
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_records_its_end_user_and_forwards_it() {
    let (mock, gw) = start(|c| c).await;
    let (_, secret) = key(&gw, json!({"name": "app"})).await;

    // Chat, same format: `user` reaches OpenAI unchanged.
    let (st, v) = post(
        &gw,
        "/v1/chat/completions",
        &secret,
        &chat_as("gpt-4o-mini", "user", "u-chat"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        last_upstream_body(&mock, "/v1/chat/completions")["user"],
        "u-chat"
    );
    // Chat on an Anthropic model: `safety_identifier` becomes `metadata.user_id`.
    let (st, v) = post(
        &gw,
        "/v1/chat/completions",
        &secret,
        &chat_as("claude-x", "safety_identifier", "u-safe"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        last_upstream_body(&mock, "/v1/messages")["metadata"]["user_id"],
        "u-safe"
    );
    // Messages, same format: `metadata.user_id` unchanged.
    let (st, v) = post(
        &gw,
        "/v1/messages",
        &secret,
        &messages_as("claude-x", "u-msg"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        last_upstream_body(&mock, "/v1/messages")["metadata"]["user_id"],
        "u-msg"
    );
    // Messages on an OpenAI model: Chat's `user`, unchanged.
    let (st, v) = post(
        &gw,
        "/v1/messages",
        &secret,
        &messages_as("gpt-4o-mini", "u-a2c"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let up = last_upstream_body(&mock, "/v1/chat/completions");
    assert_eq!(up["user"], "u-a2c");
    assert!(up.get("safety_identifier").is_none(), "{up}");
    // Claude Code's blob is no end user, and never leaves raw for a non-Anthropic provider.
    let (st, v) = post(
        &gw,
        "/v1/messages",
        &secret,
        &messages_as("gpt-4o-mini", CLAUDE_CODE_BLOB),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let up = last_upstream_body(&mock, "/v1/chat/completions");
    assert!(up.get("user").is_none(), "{up}");
    assert!(up["safety_identifier"].as_str().unwrap().starts_with("tg_"));
    // Responses, native on OpenAI: `user` unchanged; on Anthropic (R→C→A): metadata.user_id.
    let (st, v) = post(
        &gw,
        "/v1/responses",
        &secret,
        &responses_as("gpt-4o-mini", "user", "u-resp"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(last_upstream_body(&mock, "/v1/responses")["user"], "u-resp");
    let (st, v) = post(
        &gw,
        "/v1/responses",
        &secret,
        &responses_as("claude-x", "safety_identifier", "u-resp-a"),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        last_upstream_body(&mock, "/v1/messages")["metadata"]["user_id"],
        "u-resp-a"
    );

    let all = usage(&gw, "", 7).await;
    let mut seen: Vec<(String, String)> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["endpoint"].as_str().unwrap().to_string(),
                r["end_user"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, String)> = [
        ("chat_completions", "u-chat"),
        ("chat_completions", "u-safe"),
        ("messages", "u-msg"),
        ("messages", "u-a2c"),
        ("messages", "-"),
        ("responses", "u-resp"),
        ("responses", "u-resp-a"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    assert_eq!(seen, want, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_filters_and_groups_by_end_user() {
    let (_mock, gw) = start(|c| c).await;
    let (_, secret) = key(&gw, json!({"name": "app"})).await;
    for (who, n) in [("alice", 3), ("bob", 2)] {
        for _ in 0..n {
            let r = client()
                .post(format!("{}/v1/chat/completions", gw.url()))
                .bearer_auth(&secret)
                .header("x-mock-usage", "10,5")
                .json(&chat_as("gpt-4o-mini", "user", who))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    let (st, _) = post(
        &gw,
        "/v1/chat/completions",
        &secret,
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(st, 200);
    usage(&gw, "", 6).await;
    let alice = usage(&gw, "end_user=alice", 3).await;
    let rows = alice["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["end_user"] == "alice"));
    let (st, g) = admin(
        &gw,
        reqwest::Method::GET,
        "/v1/usage?group_by=end_user",
        None,
    )
    .await;
    assert_eq!(st, 200, "{g}");
    let groups: Vec<(String, u64, u64)> = g["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["group"].as_str().unwrap().to_string(),
                x["requests"].as_u64().unwrap(),
                x["total_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("-".to_string(), 1, groups[0].2),
            ("alice".to_string(), 3, 45),
            ("bob".to_string(), 2, 30),
        ]
    );
    // CSV export carries the column too.
    let csv = client()
        .get(format!("{}/v1/usage?format=csv&end_user=bob", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|c| *c == "end_user").unwrap();
    let cells: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(cells.len(), 2);
    assert!(cells.iter().all(|c| c[col] == "bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_user_is_never_refused_by_default() {
    let (_mock, gw) = start(|c| c).await;
    let (st, _) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"user_id": "alice"})),
    )
    .await;
    assert_eq!(st, 201);
    let (_, unbound) = key(&gw, json!({"name": "app"})).await;
    let (_, bound) = key(&gw, json!({"name": "alice's", "user_id": "alice"})).await;
    for secret in [&unbound, &bound] {
        for body in [
            chat_as("gpt-4o-mini", "user", "u-123"),
            chat_as("gpt-4o-mini", "safety_identifier", "u-123"),
        ] {
            let (st, v) = post(&gw, "/v1/chat/completions", secret, &body).await;
            assert_eq!(st, 200, "{v}");
        }
        let (st, v) = post(
            &gw,
            "/v1/messages",
            secret,
            &messages_as("claude-x", "u-123"),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let (st, v) = post(
            &gw,
            "/v1/responses",
            secret,
            &responses_as("gpt-4o-mini", "user", "u-123"),
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatch_is_refused_only_on_a_bound_key_with_the_setting_on() {
    // Globally on: a bound key refuses another user; an unbound key never refuses.
    let (_mock, gw) = start(|c| c.set("reject_user_mismatch", true)).await;
    admin(
        &gw,
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"user_id": "alice"})),
    )
    .await;
    let (bound_id, bound) = key(&gw, json!({"user_id": "alice"})).await;
    let (_, unbound) = key(&gw, json!({})).await;
    let (st, v) = post(
        &gw,
        "/v1/chat/completions",
        &bound,
        &chat_as("gpt-4o-mini", "user", "bob"),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["error"]["code"], "user_mismatch");
    assert_eq!(v["error"]["type"], "permission_error");
    let (st, v) = post(&gw, "/v1/messages", &bound, &messages_as("claude-x", "bob")).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["type"], "error", "Anthropic envelope: {v}");
    assert_eq!(v["error"]["type"], "permission_error");
    for (path, body) in [
        (
            "/v1/chat/completions",
            chat_as("gpt-4o-mini", "user", "alice"),
        ),
        ("/v1/messages", messages_as("claude-x", "alice")),
        ("/v1/messages", messages_as("claude-x", CLAUDE_CODE_BLOB)),
    ] {
        let (st, v) = post(&gw, path, &bound, &body).await;
        assert_eq!(st, 200, "{path}: {v}");
    }
    let (st, _) = post(
        &gw,
        "/v1/chat/completions",
        &unbound,
        &chat_as("gpt-4o-mini", "user", "bob"),
    )
    .await;
    assert_eq!(st, 200, "a key without a user has nobody to mismatch");
    // The refusal leaves an error row naming the end user.
    let rows = usage(&gw, "end_user=bob&status=403", 2).await;
    assert_eq!(rows["data"].as_array().unwrap().len(), 2, "{rows}");

    // Per key: off overrides the global on.
    let (st, k) = admin(
        &gw,
        reqwest::Method::PATCH,
        &format!("/v1/keys/{bound_id}"),
        Some(json!({"reject_user_mismatch": false})),
    )
    .await;
    assert_eq!((st, &k["reject_user_mismatch"]), (200, &json!(false)));
    let (st, _) = post(
        &gw,
        "/v1/chat/completions",
        &bound,
        &chat_as("gpt-4o-mini", "user", "bob"),
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_can_turn_the_check_on_when_the_default_is_off() {
    let (_mock, gw) = start(|c| c).await;
    admin(
        &gw,
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"user_id": "alice"})),
    )
    .await;
    let (_, strict) = key(
        &gw,
        json!({"user_id": "alice", "reject_user_mismatch": true}),
    )
    .await;
    let (_, lax) = key(&gw, json!({"user_id": "alice"})).await;
    let body = chat_as("gpt-4o-mini", "user", "bob");
    assert_eq!(
        post(&gw, "/v1/chat/completions", &strict, &body).await.0,
        403
    );
    assert_eq!(post(&gw, "/v1/chat/completions", &lax, &body).await.0, 200);
    // A body naming the owner in one field and someone else in another is a mismatch too.
    let both = json!({"model": "gpt-4o-mini", "user": "alice", "safety_identifier": "bob", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        post(&gw, "/v1/chat/completions", &strict, &both).await.0,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_end_user_is_a_400_in_the_clients_format() {
    let (mock, gw) = start(|c| c).await;
    let (_, secret) = key(&gw, json!({})).await;
    let long = "x".repeat(257);
    let (st, v) = post(
        &gw,
        "/v1/chat/completions",
        &secret,
        &chat_as("gpt-4o-mini", "user", &long),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "user");
    let (st, v) = post(
        &gw,
        "/v1/messages",
        &secret,
        &messages_as("claude-x", &long),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["type"], "error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("256"),
        "{v}"
    );
    assert!(
        mock.requests().is_empty(),
        "refused before any upstream call"
    );
    let ok = "x".repeat(256);
    let (st, _) = post(
        &gw,
        "/v1/chat/completions",
        &secret,
        &chat_as("gpt-4o-mini", "user", &ok),
    )
    .await;
    assert_eq!(st, 200);
}

/// A chat body for `who` whose token estimate is exactly `input` tokens (4 bytes each), with
/// `max_tokens = output`: with the mock reporting the same usage, it reserves and costs
/// exactly `input + 2 * output` micro-dollars.
fn sized_chat(who: &str, input: u64, output: u64) -> Vec<u8> {
    let head = format!("{{\"model\":\"gpt-4o-mini\",\"user\":\"{who}\",\"max_tokens\":{output},\"messages\":[{{\"role\":\"user\",\"content\":\"");
    let tail = "\"}]}";
    let pad = (input * 4) as usize - head.len() - tail.len();
    format!("{head}{}{tail}", "a".repeat(pad)).into_bytes()
}

async fn sized(gw: &Gateway, secret: &str, who: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(secret)
        .header("content-type", "application/json")
        .header("x-mock-usage", "500,100")
        .body(sized_chat(who, 500, 100))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_end_user_budget_exhausts_exactly_for_that_end_user_only() {
    let (_mock, gw) = start(|c| c).await;
    const PER_REQUEST: u64 = 500 + 2 * 100;
    let k = 3;
    let (id, secret) = key(
        &gw,
        json!({"name": "saas", "end_user_limits": {"max_budget": format!("0.{:06}", k * PER_REQUEST), "budget_duration": "daily"}}),
    )
    .await;
    // 40 concurrent requests from one end user: exactly k are admitted.
    let results = join_all((0..40).map(|_| sized(&gw, &secret, "carol"))).await;
    let admitted = results.iter().filter(|(st, _)| *st == 200).count() as u64;
    assert_eq!(
        admitted,
        k,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let refusal = &results.iter().find(|(st, _)| *st == 403).unwrap().1;
    assert_eq!(refusal["error"]["code"], "budget_exceeded");
    let msg = refusal["error"]["message"].as_str().unwrap();
    assert!(msg.contains("end user 'carol'"), "{msg}");
    // Sequentially for another end user: k pass, the next is refused.
    for _ in 0..k {
        assert_eq!(sized(&gw, &secret, "alice").await.0, 200);
    }
    assert_eq!(sized(&gw, &secret, "alice").await.0, 403);
    // Others are untouched, and so is a request naming no end user.
    assert_eq!(sized(&gw, &secret, "bob").await.0, 200);
    let (st, _) = post(&gw, "/v1/chat/completions", &secret, &json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(st, 200);
    // The standing of one end user, exact.
    let (st, v) = admin(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/keys/{id}/end_users/carol"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["standing"]["spend"],
        json!(format!("0.{:06}", k * PER_REQUEST).trim_end_matches('0'))
    );
    assert_eq!(v["standing"]["remaining"], "0.00");
    let (_, v) = admin(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/keys/{id}/end_users/bob"),
        None,
    )
    .await;
    assert_eq!(v["standing"]["spend"], "0.0007");
    // Usage rows of the refused requests name the end user.
    let rows = usage(&gw, "end_user=carol&status=403", 37).await;
    assert_eq!(rows["data"].as_array().unwrap().len(), 37);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_user_rate_limit_leaves_the_keys_own_limit_alone() {
    let (_mock, gw) = start(|c| c).await;
    let (_, secret) = key(
        &gw,
        json!({"rpm_limit": 5, "end_user_limits": {"rpm_limit": 2}}),
    )
    .await;
    let send = |who: &'static str| {
        let gw = &gw;
        let secret = secret.clone();
        async move {
            post(
                gw,
                "/v1/chat/completions",
                &secret,
                &chat_as("gpt-4o-mini", "user", who),
            )
            .await
        }
    };
    assert_eq!(send("alice").await.0, 200);
    assert_eq!(send("alice").await.0, 200);
    for _ in 0..3 {
        let (st, v) = send("alice").await;
        assert_eq!(st, 429, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("end user 'alice'"),
            "{v}"
        );
    }
    // alice's refused requests did not count against the key's 5.
    assert_eq!(send("bob").await.0, 200);
    assert_eq!(send("bob").await.0, 200);
    assert_eq!(send("carol").await.0, 200);
    let (st, v) = send("dave").await;
    assert_eq!(st, 429, "the key's own limit: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this key allows 5"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_user_limits_are_managed_through_the_key_api() {
    let (_mock, gw) = start(|c| c).await;
    let (id, _) = key(&gw, json!({})).await;
    let path = format!("/v1/keys/{id}");
    let (st, v) = admin(&gw, reqwest::Method::GET, &path, None).await;
    assert_eq!((st, &v["end_user_limits"]), (200, &Value::Null));
    let (st, v) = admin(
        &gw,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"end_user_limits": {"max_budget": 2.5, "budget_duration": "monthly", "rpm_limit": 10}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["end_user_limits"]["max_budget"], "2.5");
    assert_eq!(v["end_user_limits"]["budget_period"], "monthly");
    assert_eq!(v["end_user_limits"]["rpm_limit"], 10);
    // A partial update keeps the other fields.
    let (_, v) = admin(
        &gw,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"end_user_limits": {"tpm_limit": 1000}})),
    )
    .await;
    assert_eq!(
        (
            &v["end_user_limits"]["rpm_limit"],
            &v["end_user_limits"]["tpm_limit"]
        ),
        (&json!(10), &json!(1000))
    );
    for bad in [
        json!({"end_user_limits": {"max_budget": -1}}),
        json!({"end_user_limits": {"rpm": 0}}),
        json!({"end_user_limits": {"colour": "red"}}),
        json!({"end_user_limits": 5}),
    ] {
        let (st, v) = admin(&gw, reqwest::Method::PATCH, &path, Some(bad.clone())).await;
        assert_eq!(st, 400, "{bad} → {v}");
        assert!(
            v["error"]["param"]
                .as_str()
                .unwrap()
                .starts_with("end_user_limits"),
            "{v}"
        );
    }
    let (st, v) = admin(
        &gw,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"end_user_limits": {"budget_id": "nope"}})),
    )
    .await;
    assert_eq!(st, 404, "{v}");
    let (_, v) = admin(
        &gw,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"end_user_limits": null})),
    )
    .await;
    assert_eq!(v["end_user_limits"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_user_spend_survives_a_restart() {
    let mock = MockServer::start().await;
    let url = mock.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cfg = priced(TestConfig::new(&url)).file();
    let (d, c) = (dir.clone(), cfg.clone());
    let mut gw = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d, c, &[]))
        .await
        .unwrap();
    let (_, secret) = key(&gw, json!({"end_user_limits": {"max_budget": "0.0014"}})).await;
    assert_eq!(sized(&gw, &secret, "alice").await.0, 200);
    assert_eq!(sized(&gw, &secret, "alice").await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::spawn_blocking(move || {
        gw.stop();
    })
    .await
    .unwrap();
    let gw = tokio::task::spawn_blocking(move || Gateway::spawn_in(&dir, cfg, &[]))
        .await
        .unwrap();
    let (st, v) = sized(&gw, &secret, "alice").await;
    assert_eq!(st, 403, "spend was kept: {v}");
    assert_eq!(v["error"]["code"], "budget_exceeded");
    assert_eq!(sized(&gw, &secret, "bob").await.0, 200);
}

/// Two instances sharing PostgreSQL: one end user's budget and rate limit hold across both
/// (they go through the same leases as key budgets), and the usage rows carry the end user.
/// Needs `TOLLGATE_TEST_PG_URL` (tests/run.sh starts a PostgreSQL and sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_user_limits_hold_across_instances_on_postgres() {
    let Some(url) = pg_url() else {
        return;
    };
    let schema = format!(
        "t_end_user_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mock = MockServer::start().await;
    let cfg = priced(TestConfig::new(&mock.url())).postgres(
        &url,
        &schema,
        json!({"sync_interval_ms": 100}),
    );
    let mut gws = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let d = tempfile::tempdir().unwrap();
        let (path, cfg) = (d.path().to_path_buf(), cfg.clone());
        gws.push(
            tokio::task::spawn_blocking(move || Gateway::spawn_in(&path, cfg.file(), &[]))
                .await
                .unwrap(),
        );
        dirs.push(d);
    }
    const PER_REQUEST: u64 = 500 + 2 * 100;
    let (id, secret) = key(
        &gws[0],
        json!({"end_user_limits": {"max_budget": format!("0.{:06}", 4 * PER_REQUEST)}}),
    )
    .await;
    // The other instance learns of the key through the change counter.
    let mut seen = false;
    for _ in 0..50 {
        let (st, _) = admin(
            &gws[1],
            reqwest::Method::GET,
            &format!("/v1/keys/{id}"),
            None,
        )
        .await;
        if st == 200 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the key reached the second instance");
    let results = join_all((0..30).map(|n| sized(&gws[n % 2], &secret, "carol"))).await;
    let admitted = results.iter().filter(|(st, _)| *st == 200).count();
    assert_eq!(
        admitted,
        4,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(sized(&gws[1], &secret, "bob").await.0, 200);
    let rows = usage(&gws[1], "end_user=carol&status=200", 4).await;
    assert_eq!(rows["data"].as_array().unwrap().len(), 4, "{rows}");
    let c = client()
        .delete(format!("{}/v1/keys/{id}", gws[0].url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 200);
}
