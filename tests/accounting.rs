//! Accounting against the real binary: budgets under concurrency, rate limits, pricing,
//! allow-lists, usage records and their durability across kill -9.

mod common;

use common::*;
use futures_util::future::join_all;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::time::Duration;

/// The mock model's price: $1 per million input tokens, $2 per million output tokens, so a
/// request's cost in micro-dollars is `input + 2 * output`.
fn priced(c: TestConfig) -> TestConfig {
    c.pricing("openai:gpt-4o-mini", 1, 2)
        .pricing("anthropic:claude-x", 1, 2)
}

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

/// A chat body whose token estimate is exactly `input` tokens (4 bytes each) with
/// `max_tokens = output`.
fn sized_chat(input: u64, output: u64) -> Vec<u8> {
    let head = format!("{{\"model\":\"gpt-4o-mini\",\"max_tokens\":{output},\"messages\":[{{\"role\":\"user\",\"content\":\"");
    let tail = "\"}]}";
    let target = (input * 4) as usize;
    let pad = target - head.len() - tail.len();
    format!("{head}{}{tail}", "a".repeat(pad)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_admit_exactly_what_the_budget_allows_and_spend_is_exact() {
    let (mock, gw) = start(|c| c).await;
    // Each request costs exactly 500 + 2*100 = 700 micro-dollars and reserves the same.
    let (input, output) = (500u64, 100u64);
    let per_request = input + 2 * output;
    let k = 37u64;
    let (st, key) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "budgeted", "max_budget": format!("0.{:06}", k * per_request)})),
    )
    .await;
    assert_eq!(st, 201, "{key}");
    let secret = key["key"].as_str().unwrap().to_string();
    let id = key["id"].as_str().unwrap().to_string();
    let body = sized_chat(input, output);
    let usage = format!("{input},{output}");
    let c = client();
    let futs = (0..200).map(|_| {
        let c = c.clone();
        let (url, secret, body, usage) = (gw.url(), secret.clone(), body.clone(), usage.clone());
        async move {
            c.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&secret)
                .header("content-type", "application/json")
                .header("x-mock-usage", usage)
                .header("x-mock-delay-ms", "20")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = join_all(futs).await;
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    let refused = statuses.iter().filter(|s| **s == 403).count() as u64;
    assert_eq!(ok, k, "exactly K admitted: {statuses:?}");
    assert_eq!(ok + refused, 200);
    assert_eq!(
        mock.requests().len() as u64,
        k,
        "refused requests never reach the upstream"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, info) = admin(&gw, reqwest::Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(
        info["standing"]["spend"],
        crate_usd(k * per_request),
        "{info}"
    );
    assert_eq!(info["standing"]["reserved"], "0.00");
    let (_, sum) = admin(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/usage?group_by=key&key_id={id}"),
        None,
    )
    .await;
    let row = &sum["data"][0];
    assert_eq!(row["cost"], crate_usd(k * per_request), "{sum}");
    assert_eq!(row["prompt_tokens"], json!(k * input));
    assert_eq!(row["completion_tokens"], json!(k * output));
    // 200 records in all: K served, the rest refused with 403 (recorded, at no cost).
    assert_eq!(sum["totals"]["requests"], json!(200));
}

fn crate_usd(m: u64) -> Value {
    let s = format!("{}.{:06}", m / 1_000_000, m % 1_000_000);
    let s = s.trim_end_matches('0');
    json!(if s.ends_with('.') {
        format!("{s}00")
    } else {
        s.to_string()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_is_a_native_403_that_says_limit_spend_and_reset() {
    let (_mock, gw) = start(|c| c).await;
    admin(
        &gw,
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"user_id": "alice", "max_budget": 0.001, "budget_duration": "daily"})),
    )
    .await;
    let (st, key) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"user_id": "alice"})),
    )
    .await;
    assert_eq!(st, 201, "{key}");
    let secret = key["key"].as_str().unwrap();
    // max_tokens 1000 at $2/M = 2000 micro-dollars > the $0.001 budget.
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", secret)
        .json(&json!({"model": "claude-x", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "permission_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("user 'alice'") && msg.contains("$0.001") && msg.contains("resets at"),
        "{msg}"
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(secret)
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "budget_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_limit_gives_429_with_retry_after_and_pricing_and_allow_lists_refuse_early() {
    let (mock, gw) = start(|c| c.set("require_pricing", true)).await;
    let (_, key) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"rpm_limit": 2, "allowed_models": ["gpt-4o-mini", "openai:gpt-4.1*"]})),
    )
    .await;
    let secret = key["key"].as_str().unwrap();
    let chat = |model: &str| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(secret)
            .json(&json!({"model": model, "messages": []}))
    };
    assert_eq!(chat("gpt-4o-mini").send().await.unwrap().status(), 200);
    // allowed but unpriced: 402 before any upstream call (and before the RPM counts it)
    let r = chat("gpt-4.1-x").send().await.unwrap();
    assert_eq!(r.status(), 402);
    // not allowed: 403
    let r = chat("gpt-4o").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_allowed");
    assert_eq!(chat("gpt-4o-mini").send().await.unwrap().status(), 200);
    let r = chat("gpt-4o-mini").send().await.unwrap();
    assert_eq!(r.status(), 429);
    let ra: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&ra));
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_mismatch_is_refused_but_claude_code_metadata_is_not() {
    // reject_user_mismatch is off by default (a named user is end-user attribution, see
    // tests/end_user.rs); this test turns it on globally, as an operator who wants it would.
    let (_mock, gw) = start(|c| c.set("reject_user_mismatch", true)).await;
    admin(
        &gw,
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"user_id": "alice"})),
    )
    .await;
    let (_, key) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"user_id": "alice"})),
    )
    .await;
    let secret = key["key"].as_str().unwrap();
    let send = |meta: Value| {
        client()
            .post(format!("{}/v1/messages", gw.url()))
            .header("x-api-key", secret)
            .json(&json!({"model": "claude-x", "max_tokens": 10, "metadata": meta, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let blob = "{\"device_id\":\"ab12\",\"account_uuid\":\"\",\"session_id\":\"6afd43e8\"}";
    assert_eq!(send(json!({"user_id": blob})).await.unwrap().status(), 200);
    assert_eq!(
        send(json!({"user_id": "alice"})).await.unwrap().status(),
        200
    );
    let r = send(json!({"user_id": "bob"})).await.unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_records_hold_every_field_and_export_as_jsonl_and_csv() {
    let (_mock, gw) = start(|c| c).await;
    let (_, key) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "u"})),
    )
    .await;
    let secret = key["key"].as_str().unwrap();
    let r = client()
        .post(format!("{}/v1/messages?beta=true", gw.url()))
        .header("x-api-key", secret)
        .header("x-claude-code-session-id", "sess-42")
        .header("x-mock-usage", "30,7")
        .json(&json!({"model": "claude-x", "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, page) = admin(
        &gw,
        reqwest::Method::GET,
        "/v1/usage?session_id=sess-42",
        None,
    )
    .await;
    let rec = &page["data"][0];
    assert_eq!(rec["session_id"], "sess-42");
    assert_eq!(rec["prompt_tokens"], 30);
    assert_eq!(rec["completion_tokens"], 7);
    assert_eq!(rec["total_tokens"], 37);
    assert_eq!(rec["cost"], "0.000044"); // 30*1 + 7*2
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["stream"], true);
    assert_eq!(rec["estimated"], false);
    assert_eq!(rec["provider"], "anthropic");
    assert!(rec["latency_ms"].is_u64() && rec["ttft_ms"].is_u64());
    let text = client()
        .get(format!(
            "{}/v1/usage?format=csv&session_id=sess-42",
            gw.url()
        ))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("id,timestamp,key_id"));
    assert!(
        lines
            .next()
            .unwrap()
            .contains(",sess-42,30,7,0,37,0.000044,200,"),
        "{text}"
    );
    let text = client()
        .get(format!("{}/v1/usage?format=jsonl", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.lines().count(), 1);
    // The key can read its own standing.
    let v: Value = client()
        .get(format!("{}/v1/key/info", gw.url()))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["standing"]["spend"], "0.000044");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api_validates_and_pages() {
    let (_mock, gw) = start(|c| c).await;
    let (st, v) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"user_id": "u1", "max_budget": "ten"})),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(v["error"]["param"], "max_budget");
    assert_eq!(
        admin(
            &gw,
            reqwest::Method::POST,
            "/v1/users",
            Some(json!({"user_id": "u1"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        admin(
            &gw,
            reqwest::Method::POST,
            "/v1/users",
            Some(json!({"user_id": "u1"}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        admin(&gw, reqwest::Method::GET, "/v1/users/nope", None)
            .await
            .0,
        404
    );
    assert_eq!(
        admin(
            &gw,
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({"user_id": "ghost"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        admin(
            &gw,
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({"nmae": "typo"}))
        )
        .await
        .0,
        400
    );
    for i in 0..5 {
        admin(
            &gw,
            reqwest::Method::POST,
            "/v1/users",
            Some(json!({"user_id": format!("p{i}")})),
        )
        .await;
    }
    let (_, p1) = admin(&gw, reqwest::Method::GET, "/v1/users?limit=2", None).await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    assert_eq!(p1["has_more"], true);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = admin(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/users?limit=2&after={cursor}"),
        None,
    )
    .await;
    assert_ne!(p1["data"][0]["user_id"], p2["data"][0]["user_id"]);
    let (st, b) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/budgets",
        Some(json!({"budget_id": "team", "max_budget": 25, "budget_duration": "monthly"})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(
        admin(
            &gw,
            reqwest::Method::PATCH,
            "/v1/users/u1",
            Some(json!({"budget_id": "team"}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        admin(&gw, reqwest::Method::DELETE, "/v1/budgets/team", None)
            .await
            .0,
        409
    );
    let (st, p) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/pricing",
        Some(json!({"model_key": "openai:gpt-9", "input": 1.5, "output": "6"})),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["input"], "1.5");
    let (_, all) = admin(&gw, reqwest::Method::GET, "/v1/pricing", None).await;
    assert!(all["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["model_key"] == "openai:gpt-9" && e["source"] == "api"));
    assert!(all["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["model_key"] == "anthropic:claude-sonnet-4*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_usage_that_finished_before_the_promise() {
    let mock = MockServer::start().await;
    let url = mock.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (d1, u1) = (dir.clone(), url.clone());
    let mut gw = tokio::task::spawn_blocking(move || {
        Gateway::spawn_in(&d1, priced(TestConfig::new(&u1)).file(), &[])
    })
    .await
    .unwrap();
    let (_, key) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "crash"})),
    )
    .await;
    let secret = key["key"].as_str().unwrap().to_string();
    let id = key["id"].as_str().unwrap().to_string();
    // Load: 8 workers; each response's completion time is noted.
    let stop_at = std::time::Instant::now() + Duration::from_millis(1500);
    let workers = (0..8).map(|_| {
        let (url, secret) = (gw.url(), secret.clone());
        tokio::spawn(async move {
            let mut done = Vec::new();
            while std::time::Instant::now() < stop_at + Duration::from_secs(2) {
                let r = client()
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&secret)
                    .header("x-mock-usage", "10,5")
                    .json(&json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": []}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        done.push(std::time::Instant::now());
                    }
                    _ => break,
                }
            }
            done
        })
    });
    let workers: Vec<_> = workers.collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = std::time::Instant::now();
    gw.signal("KILL");
    assert!(gw.wait_exit(Duration::from_secs(5)));
    let mut finished = Vec::new();
    for w in workers {
        finished.extend(w.await.unwrap());
    }
    let promised = finished
        .iter()
        .filter(|t| **t + Duration::from_millis(100) <= killed_at)
        .count() as u64;
    assert!(
        promised > 20,
        "the load was too light to mean anything: {promised}"
    );
    // Restart on the same store.
    let cfg_path = gw.config_path.clone();
    let port = gw.port;
    let d2 = dir.clone();
    let gw2 = tokio::task::spawn_blocking(move || {
        let g = Gateway::launch(&d2, &cfg_path, port, &[]);
        g.wait_ready();
        g
    })
    .await
    .unwrap();
    let (_, sum) = admin(
        &gw2,
        reqwest::Method::GET,
        &format!("/v1/usage?group_by=key&key_id={id}"),
        None,
    )
    .await;
    let recorded = sum["totals"]["requests"].as_u64().unwrap();
    let upstream = mock.requests().len() as u64;
    assert!(
        recorded >= promised,
        "lost usage: {recorded} recorded < {promised} finished 100 ms before the kill"
    );
    assert!(
        recorded <= upstream,
        "usage counted twice: {recorded} recorded > {upstream} upstream requests"
    );
    let (_, info) = admin(&gw2, reqwest::Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(
        info["standing"]["spend"],
        crate_usd(recorded * 20),
        "spend matches the records exactly"
    );
    eprintln!("crash test: {promised} finished >=100 ms before kill -9, {recorded} recorded, {upstream} reached the upstream");
}

/// A same-format OpenAI chat stream whose client did not ask for usage: tollgate asks the
/// provider for the usage chunk (spliced into the body, which stays otherwise the same),
/// meters it, and keeps it from the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_stream_is_metered_from_a_usage_chunk_the_client_never_sees() {
    let (mock, gw) = start(|c| c).await;
    let (_, key) = admin(
        &gw,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "s"})),
    )
    .await;
    let secret = key["key"].as_str().unwrap();
    let body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi \"there\"\n"}]});
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(secret)
        .header("x-mock-usage", "30,7")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(
        !text.contains("\"completion_tokens\""),
        "the usage chunk reached the client: {text}"
    );
    let mut up = mock.requests()[0].json();
    assert_eq!(up["stream_options"], json!({"include_usage": true}));
    up.as_object_mut().unwrap().remove("stream_options");
    assert_eq!(up, body, "the rest of the body is forwarded as sent");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let id = key["id"].as_str().unwrap();
    let (_, page) = admin(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/usage?key_id={id}"),
        None,
    )
    .await;
    let rec = &page["data"][0];
    assert_eq!(rec["prompt_tokens"], 30);
    assert_eq!(rec["completion_tokens"], 7);
    assert_eq!(rec["estimated"], false);
}
