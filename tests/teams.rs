//! Teams and organisations against the real binary: a request is admitted only if its key,
//! user, team and organisation all admit it, under concurrency, on one instance and on
//! three sharing PostgreSQL; the refusal names the level; the management API (CRUD, paging,
//! 400/404/409, cascade) and the team's rate limits and allow-list.

mod common;

use common::*;
use futures_util::future::join_all;
use mock_upstream::MockServer;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// $1 per million input tokens, $2 per million output tokens. Every request of
/// [`sized_chat`]: 500 input and 100 output tokens, reserved and billed: 700 micro-dollars.
const INPUT: u64 = 500;
const OUTPUT: u64 = 100;
const COST: u64 = INPUT + 2 * OUTPUT;

fn priced(c: TestConfig) -> TestConfig {
    c.pricing("openai:gpt-4o-mini", 1, 2)
        .pricing("anthropic:claude-x", 1, 2)
}

async fn start() -> (MockServer, Gateway) {
    let mock = MockServer::start().await;
    let cfg = priced(TestConfig::new(&mock.url()));
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    (mock, gw)
}

async fn admin(url: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    admin_call(url, method, path, body).await
}

/// Creates with POST, asserting 201.
async fn create(url: &str, path: &str, body: Value) -> Value {
    let (st, v) = admin(url, Method::POST, path, Some(body)).await;
    assert_eq!(st, 201, "POST {path}: {v}");
    v
}

/// A chat body whose token estimate is exactly INPUT tokens, with max_tokens = OUTPUT.
fn sized_chat() -> Vec<u8> {
    let head = format!("{{\"model\":\"gpt-4o-mini\",\"max_tokens\":{OUTPUT},\"messages\":[{{\"role\":\"user\",\"content\":\"");
    let tail = "\"}]}";
    let pad = (INPUT * 4) as usize - head.len() - tail.len();
    format!("{head}{}{tail}", "a".repeat(pad)).into_bytes()
}

/// One chat request: (status, body).
async fn chat_once(c: &reqwest::Client, url: &str, secret: &str) -> (u16, Value) {
    let r = c
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(secret)
        .header("content-type", "application/json")
        .header("x-mock-usage", format!("{INPUT},{OUTPUT}"))
        .header("x-mock-delay-ms", "20")
        .timeout(Duration::from_secs(20))
        .body(sized_chat())
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn usd(m: u64) -> String {
    let s = format!("{}.{:06}", m / 1_000_000, m % 1_000_000);
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}00")
    } else {
        s.to_string()
    }
}

/// org `acme` (no budget) → team `eng` (budget `team_budget` micro-dollars, monthly) →
/// users alice and bob (no budgets) → one key each. Returns the keys' (id, secret).
async fn hierarchy(url: &str, team_budget: u64) -> Vec<(String, String)> {
    create(url, "/v1/orgs", json!({"org_id": "acme", "alias": "Acme"})).await;
    create(
        url,
        "/v1/teams",
        json!({"team_id": "eng", "org_id": "acme", "max_budget": usd(team_budget), "budget_duration": "monthly"}),
    )
    .await;
    let mut keys = Vec::new();
    for u in ["alice", "bob"] {
        create(url, "/v1/users", json!({"user_id": u, "team_id": "eng"})).await;
        let k = create(url, "/v1/keys", json!({"name": u, "user_id": u})).await;
        keys.push((
            k["id"].as_str().unwrap().to_string(),
            k["key"].as_str().unwrap().to_string(),
        ));
    }
    keys
}

/// The spend an entity's standing shows.
async fn spend_of(url: &str, path: &str) -> Value {
    let (st, v) = admin(url, Method::GET, path, None).await;
    assert_eq!(st, 200, "{path}: {v}");
    assert_eq!(v["standing"]["reserved"], "0.00", "nothing in flight: {v}");
    v["standing"]["spend"].clone()
}

/// Spend per key from the usage records (the store).
async fn recorded_spend(url: &str, key_id: &str) -> u64 {
    let text = client()
        .get(format!("{url}/v1/usage?key_id={key_id}&format=jsonl"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["cost_micros"]
                .as_u64()
                .unwrap()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_team_budget_admits_exactly_k_of_200_across_two_users_and_spend_is_exact_at_every_level()
{
    let (mock, mut gw) = start().await;
    let url = gw.url();
    let k = 29u64;
    let keys = hierarchy(&url, k * COST).await;
    let c = client();
    let futs = (0..200).map(|n| {
        let (c, url, secret) = (c.clone(), url.clone(), keys[n % 2].1.clone());
        async move { chat_once(&c, &url, &secret).await }
    });
    let answers = join_all(futs).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count() as u64;
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 403)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok, k, "exactly K admitted");
    assert_eq!(ok + refused.len() as u64, 200);
    assert_eq!(
        mock.requests().len() as u64,
        k,
        "refusals never reach the upstream"
    );
    let msg = refused[0]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("team 'eng'"),
        "the refusal names the level: {msg}"
    );
    assert!(
        msg.contains(&format!("of ${}", usd(k * COST))),
        "and its limit: {msg}"
    );
    assert!(msg.contains("resets at"), "and when it resets: {msg}");
    assert_eq!(refused[0]["error"]["code"], "budget_exceeded");

    // Exact at every level: team, organisation, each user, each key, and the usage records.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = json!(usd(k * COST));
    assert_eq!(spend_of(&url, "/v1/teams/eng").await, total);
    assert_eq!(spend_of(&url, "/v1/orgs/acme").await, total);
    let mut users = 0;
    let mut recorded = 0;
    for (u, (kid, _)) in ["alice", "bob"].iter().zip(&keys) {
        let us = spend_of(&url, &format!("/v1/users/{u}")).await;
        let ks = spend_of(&url, &format!("/v1/keys/{kid}")).await;
        assert_eq!(us, ks, "one key per user");
        let r = recorded_spend(&url, kid).await;
        assert_eq!(json!(usd(r)), ks, "the store agrees with the ledger");
        users += r;
        recorded += r;
    }
    assert_eq!(users, k * COST);
    assert_eq!(recorded, k * COST);

    // The spend rows of the team and the organisation are durable: a restart reloads them.
    gw.stop();
    let (dir, cfg, port) = (gw.dir.clone(), gw.config_path.clone(), gw.port);
    let gw2 = tokio::task::spawn_blocking(move || {
        // The snapshot (written at stop) would seed the counters too: without it, the
        // store's spend rows are the only source.
        let _ = std::fs::remove_file(dir.join("data").join("keys.snapshot.json"));
        let g = Gateway::launch(&dir, &cfg, port, &[]);
        g.wait_ready();
        g
    })
    .await
    .unwrap();
    assert_eq!(spend_of(&gw2.url(), "/v1/teams/eng").await, total);
    assert_eq!(spend_of(&gw2.url(), "/v1/orgs/acme").await, total);
    let (st, _) = chat_once(&c, &gw2.url(), &keys[0].1).await;
    assert_eq!(st, 403, "still over the team's budget after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refusal_names_the_organisation_in_the_anthropic_envelope() {
    let (_mock, gw) = start().await;
    let url = gw.url();
    create(
        &url,
        "/v1/orgs",
        json!({"org_id": "acme", "max_budget": "0.000001", "budget_duration": "daily"}),
    )
    .await;
    create(
        &url,
        "/v1/teams",
        json!({"team_id": "ops", "org_id": "acme"}),
    )
    .await;
    // A service key: in the team directly, no user.
    let k = create(&url, "/v1/keys", json!({"name": "svc", "team_id": "ops"})).await;
    assert_eq!(k["team_id"], "ops");
    let r = client()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", k["key"].as_str().unwrap())
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic's envelope: {v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("org 'acme'"), "{msg}");
    assert!(msg.contains("of $0.000001 (daily budget)"), "{msg}");
    assert!(msg.contains("resets at"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_rate_limits_and_allow_lists_bound_every_key_under_the_team() {
    let (_mock, gw) = start().await;
    let url = gw.url();
    create(
        &url,
        "/v1/teams",
        json!({"team_id": "lab", "rpm_limit": 3, "allowed_models": ["openai:gpt-4o*"]}),
    )
    .await;
    let a = create(&url, "/v1/keys", json!({"team_id": "lab"})).await;
    let b = create(&url, "/v1/keys", json!({"team_id": "lab"})).await;
    let (a, b) = (a["key"].as_str().unwrap(), b["key"].as_str().unwrap());
    let c = client();
    // The team's allow-list: another model is refused for its keys.
    let r = c
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", a)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
    // Three requests a minute for the team, over both keys.
    let mut statuses = Vec::new();
    for s in [a, b, a, b] {
        statuses.push(chat_once(&c, &url, s).await);
    }
    assert_eq!(
        statuses.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![200, 200, 200, 429]
    );
    let msg = statuses[3].1["error"]["message"].as_str().unwrap();
    assert!(msg.contains("team allows 3 requests per minute"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_and_orgs_api_crud_paging_errors_and_cascade() {
    let (_mock, gw) = start().await;
    let url = gw.url();
    create(&url, "/v1/orgs", json!({"org_id": "acme"})).await;
    for t in ["t1", "t2", "t3"] {
        let v = create(
            &url,
            "/v1/teams",
            json!({"team_id": t, "org_id": "acme", "max_budget": 5, "metadata": {"cc": t}}),
        )
        .await;
        assert_eq!(v["object"], "team");
        assert_eq!(v["org_id"], "acme");
        assert_eq!(v["limits"]["max_budget"], "5.00");
    }
    // 409 on a duplicate, 400 on bad input, 404 on unknown references and ids.
    let cases = [
        (Method::POST, "/v1/teams", json!({"team_id": "t1"}), 409),
        (Method::POST, "/v1/teams", json!({"team_id": "bad id"}), 400),
        (Method::POST, "/v1/teams", json!({}), 400),
        (
            Method::POST,
            "/v1/teams",
            json!({"team_id": "t9", "colour": 1}),
            400,
        ),
        (
            Method::POST,
            "/v1/teams",
            json!({"team_id": "t9", "max_budget": -1}),
            400,
        ),
        (
            Method::POST,
            "/v1/teams",
            json!({"team_id": "t9", "org_id": "nope"}),
            404,
        ),
        (
            Method::POST,
            "/v1/orgs",
            json!({"org_id": "o2", "org": "x"}),
            400,
        ),
        (
            Method::POST,
            "/v1/users",
            json!({"user_id": "u9", "team_id": "nope"}),
            404,
        ),
        (Method::POST, "/v1/keys", json!({"team_id": "nope"}), 404),
        (Method::PATCH, "/v1/teams/t1", json!({"team_id": "t2"}), 400),
        (Method::PATCH, "/v1/teams/nope", json!({"alias": "x"}), 404),
        (Method::GET, "/v1/orgs/nope", Value::Null, 404),
        (Method::DELETE, "/v1/teams/nope", Value::Null, 404),
    ];
    for (m, path, body, want) in cases {
        let b = (!body.is_null()).then_some(body.clone());
        let (st, v) = admin(&url, m.clone(), path, b).await;
        assert_eq!(st, want, "{m} {path} {body}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // Paging.
    let (_, p1) = admin(&url, Method::GET, "/v1/teams?limit=2", None).await;
    assert_eq!(p1["has_more"], true);
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    assert_eq!(p1["next_cursor"], "t2");
    let (_, p2) = admin(&url, Method::GET, "/v1/teams?limit=2&after=t2", None).await;
    assert_eq!(p2["has_more"], false);
    assert_eq!(p2["data"][0]["team_id"], "t3");
    let (_, by_org) = admin(&url, Method::GET, "/v1/teams?org_id=acme", None).await;
    assert_eq!(by_org["data"].as_array().unwrap().len(), 3);
    // Update.
    let (st, v) = admin(
        &url,
        Method::PATCH,
        "/v1/teams/t1",
        Some(json!({"alias": "Platform", "rpm_limit": 10, "org_id": null})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["alias"].clone(), v["org_id"].clone()),
        (json!("Platform"), Value::Null)
    );
    assert_eq!(v["limits"]["rpm_limit"], 10);
    // Members: a user and a service key in t2.
    create(
        &url,
        "/v1/users",
        json!({"user_id": "carol", "team_id": "t2"}),
    )
    .await;
    let svc = create(&url, "/v1/keys", json!({"name": "svc", "team_id": "t2"})).await;
    let svc_id = svc["id"].as_str().unwrap();
    let (_, t2) = admin(&url, Method::GET, "/v1/teams/t2", None).await;
    assert_eq!(t2["users"], json!(["carol"]));
    assert_eq!(t2["keys"], json!([svc_id]));
    let (_, keys) = admin(&url, Method::GET, "/v1/keys?team_id=t2", None).await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
    let (_, users) = admin(&url, Method::GET, "/v1/users?team_id=t2", None).await;
    assert_eq!(users["data"][0]["user_id"], "carol");
    // Deleting with members: 409, unless cascade.
    let (st, v) = admin(&url, Method::DELETE, "/v1/teams/t2", None).await;
    assert_eq!(st, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("cascade"));
    let (st, v) = admin(&url, Method::DELETE, "/v1/orgs/acme", None).await;
    assert_eq!(st, 409, "an organisation with teams: {v}");
    let (st, _) = admin(&url, Method::DELETE, "/v1/teams/t2?cascade=maybe", None).await;
    assert_eq!(st, 400);
    let (st, v) = admin(&url, Method::DELETE, "/v1/orgs/acme?cascade=true", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["deleted"], true);
    // The organisation's teams went with it (t1 had left it); their members stay.
    let (_, left) = admin(&url, Method::GET, "/v1/teams", None).await;
    let ids: Vec<&str> = left["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["team_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["t1"]);
    let (_, carol) = admin(&url, Method::GET, "/v1/users/carol", None).await;
    assert_eq!(carol["team_id"], Value::Null, "{carol}");
    let (_, svc) = admin(&url, Method::GET, &format!("/v1/keys/{svc_id}"), None).await;
    assert_eq!(svc["active"], false, "a deleted team's service keys stop");
    let (st, _) = admin(&url, Method::DELETE, "/v1/teams/t1", None).await;
    assert_eq!(st, 200, "no members: deleted at once");
}

/// Three instances on one PostgreSQL: the team's budget holds exactly across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_team_budget_holds_exactly_across_three_instances_on_postgres() {
    let Some(pg) = pg_url() else { return };
    let mock = MockServer::start().await;
    let schema = format!("t_teams_{}", std::process::id());
    let cfg = priced(TestConfig::new(&mock.url())).postgres(
        &pg,
        &schema,
        json!({"auto_migrate": true, "lease_ttl_ms": 3000, "lease_idle_ms": 300, "sync_interval_ms": 100}),
    );
    let mut dirs = Vec::new();
    let mut gws = Vec::new();
    for _ in 0..3 {
        let d = tempfile::tempdir().unwrap();
        let (path, cfg) = (d.path().to_path_buf(), cfg.clone());
        let g = tokio::task::spawn_blocking(move || Gateway::spawn_in(&path, cfg.file(), &[]))
            .await
            .unwrap();
        gws.push(g);
        dirs.push(d);
    }
    let urls: Vec<String> = gws.iter().map(|g| g.url()).collect();
    let k = 31u64;
    let keys = hierarchy(&urls[0], k * COST).await;
    // Every instance sees the hierarchy before the load.
    for u in &urls {
        for _ in 0..100 {
            let (st, _) = admin(u, Method::GET, "/v1/users/bob", None).await;
            let (st2, v) = admin(u, Method::GET, "/v1/teams/eng", None).await;
            if st == 200 && st2 == 200 && v["users"].as_array().is_some_and(|a| a.len() == 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let c = client();
    let futs = (0..200).map(|n| {
        let (c, url, secret) = (c.clone(), urls[n % 3].clone(), keys[n % 2].1.clone());
        async move { chat_once(&c, &url, &secret).await.0 }
    });
    let statuses = join_all(futs).await;
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    let refused = statuses.iter().filter(|s| **s == 403).count() as u64;
    assert_eq!(ok, k, "exactly K admitted across instances: {statuses:?}");
    assert_eq!(ok + refused, 200);
    assert_eq!(mock.requests().len() as u64, k);
    // The store's spend, through any instance, once written.
    let mut recorded = 0;
    for _ in 0..100 {
        recorded = 0;
        for (kid, _) in &keys {
            recorded += recorded_spend(&urls[2], kid).await;
        }
        if recorded == k * COST {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recorded, k * COST);
    for g in &mut gws {
        g.stop();
    }
}

/// An Anthropic request for `model` with max_tokens 1000, billed 500 input and 1000 output
/// tokens (2,500 micro-dollars at the test price).
async fn opus_call(c: &reqwest::Client, url: &str, secret: &str, model: &str) -> (u16, Value) {
    let r = c
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", secret)
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-usage", "500,1000")
        .json(&json!({"model": model, "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_group_budget_cannot_be_dodged_with_another_variant_and_budgets_stack() {
    let mock = MockServer::start().await;
    let cfg = priced(TestConfig::new(&mock.url()))
        .pricing("anthropic:claude-opus-4-1", 1, 2)
        .pricing("anthropic:claude-opus-4-5", 1, 2)
        .set(
            "deployments",
            json!({"opus": [
                {"provider": "anthropic", "model": "claude-opus-4-1"},
                {"provider": "anthropic", "model": "claude-opus-4-5", "priority": 1},
            ]}),
        );
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let url = gw.url();
    // The team: $10 a month in all, and at most $0.005 a day on the "opus" group.
    let t = create(
        &url,
        "/v1/teams",
        json!({"team_id": "research", "max_budget": 10, "budget_duration": "monthly",
               "budgets": [{"id": "opus-daily", "max_budget": "0.005", "budget_duration": "daily", "model": "opus"},
                           {"max_budget": 50, "budget_duration": "lifetime"}]}),
    )
    .await;
    assert_eq!(t["limits"]["budgets"][0]["id"], "opus-daily");
    assert_eq!(t["limits"]["budgets"][0]["model"], "opus");
    assert!(t["limits"]["budgets"][1]["id"]
        .as_str()
        .unwrap()
        .starts_with("bud_"));
    let k = create(&url, "/v1/keys", json!({"team_id": "research"})).await;
    let secret = k["key"].as_str().unwrap();
    let c = client();
    // Reserve ~2,020 and bill 2,500 each: two fit in 5,000, the third does not.
    for _ in 0..2 {
        let (st, v) = opus_call(&c, &url, secret, "opus").await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = opus_call(&c, &url, secret, "opus").await;
    assert_eq!(st, 403, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("team 'research' (budget 'opus-daily' for models 'opus')"),
        "{msg}"
    );
    // Another variant of the group, named directly, is still the group's.
    for variant in ["anthropic:claude-opus-4-5", "claude-opus-4-1"] {
        let (st, v) = opus_call(&c, &url, secret, variant).await;
        assert_eq!(st, 403, "{variant} dodged the group budget: {v}");
    }
    // Other models are outside that budget; the team's other budgets still count them.
    let (st, v) = opus_call(&c, &url, secret, "claude-x").await;
    assert_eq!(st, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, t) = admin(&url, Method::GET, "/v1/teams/research", None).await;
    let s = &t["standing"];
    assert_eq!(s["spend"], "0.0075", "{t}");
    assert_eq!(s["budgets"][0]["id"], "opus-daily");
    assert_eq!(s["budgets"][0]["spend"], "0.005", "{t}");
    assert_eq!(s["budgets"][0]["max_budget"], "0.005");
    assert_eq!(s["budgets"][1]["spend"], "0.0075", "{t}");
    // Replacing the list keeps a budget named by its id (and its spend).
    let (st, t) = admin(
        &url,
        Method::PATCH,
        "/v1/teams/research",
        Some(json!({"budgets": [{"id": "opus-daily", "max_budget": "0.01", "budget_duration": "daily", "model": "opus"}]})),
    )
    .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["standing"]["budgets"][0]["spend"], "0.005", "{t}");
    assert_eq!(t["standing"]["budgets"].as_array().unwrap().len(), 1);
    let (st, v) = opus_call(&c, &url, secret, "opus").await;
    assert_eq!(st, 200, "room again after the raise: {v}");
    let (st, v) = admin(
        &url,
        Method::PATCH,
        "/v1/teams/research",
        Some(json!({"budgets": [{"max_budget": 1, "colour": "red"}]})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "budgets[0].colour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_ups_raise_a_lifetime_budget_with_an_audit_trail_and_overrides_expire() {
    let (_mock, gw) = start().await;
    let url = gw.url();
    // A prepaid team: no budget until topped up ($0.001 = 1,000 micro-dollars).
    create(&url, "/v1/teams", json!({"team_id": "prepaid"})).await;
    let (st, v) = admin(
        &url,
        Method::POST,
        "/v1/teams/prepaid/top-ups",
        Some(json!({"amount": "0.001", "note": "PO 4711"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["max_budget"], "0.001");
    assert_eq!(v["by"], "master key");
    assert_eq!(v["note"], "PO 4711");
    let k = create(&url, "/v1/keys", json!({"team_id": "prepaid"})).await;
    let secret = k["key"].as_str().unwrap();
    let c = client();
    // One request of 700 fits in 1,000; a second does not.
    assert_eq!(chat_once(&c, &url, secret).await.0, 200);
    let (st, v) = chat_once(&c, &url, secret).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("team 'prepaid'"));
    // A second top-up adds to the first; the spend stays.
    let (st, v) = admin(
        &url,
        Method::POST,
        "/v1/teams/prepaid/top-ups",
        Some(json!({"amount": 0.002})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["max_budget"], "0.003");
    assert_eq!(chat_once(&c, &url, secret).await.0, 200);
    // The trail: newest first, paged.
    let (_, trail) = admin(&url, Method::GET, "/v1/teams/prepaid/top-ups?limit=1", None).await;
    assert_eq!(trail["data"][0]["amount"], "0.002", "{trail}");
    assert_eq!(trail["has_more"], true);
    let cursor = trail["next_cursor"].as_str().unwrap();
    let (_, rest) = admin(
        &url,
        Method::GET,
        &format!("/v1/teams/prepaid/top-ups?after={cursor}"),
        None,
    )
    .await;
    assert_eq!(rest["data"][0]["note"], "PO 4711", "{rest}");
    assert_eq!(rest["has_more"], false);
    // Bad input, and a budget with a period is not prepaid.
    for (path, body, want) in [
        ("/v1/teams/prepaid/top-ups", json!({"amount": -1}), 400),
        ("/v1/teams/prepaid/top-ups", json!({"amount": 0}), 400),
        (
            "/v1/teams/prepaid/top-ups",
            json!({"amount": 1, "by": "me"}),
            400,
        ),
        ("/v1/teams/nope/top-ups", json!({"amount": 1}), 404),
    ] {
        let (st, v) = admin(&url, Method::POST, path, Some(body)).await;
        assert_eq!(st, want, "{path}: {v}");
    }
    create(
        &url,
        "/v1/users",
        json!({"user_id": "dana", "max_budget": "0.001", "budget_duration": "daily"}),
    )
    .await;
    let (st, v) = admin(
        &url,
        Method::POST,
        "/v1/users/dana/top-ups",
        Some(json!({"amount": 1})),
    )
    .await;
    assert_eq!(st, 409, "{v}");
    // A temporary override: $0.002 instead of $0.001 for the current day only.
    let (st, v) = admin(
        &url,
        Method::PATCH,
        "/v1/users/dana",
        Some(json!({"budget_override": {"max_budget": "0.002", "periods": 1}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["limits"]["budget_override"]["active"], true, "{v}");
    assert_eq!(v["standing"]["max_budget"], "0.002", "{v}");
    let until = v["limits"]["budget_override"]["until"].as_str().unwrap();
    assert!(until.ends_with("T00:00:00Z"), "ends with the day: {until}");
    let (st, v) = admin(
        &url,
        Method::PATCH,
        "/v1/teams/prepaid",
        Some(json!({"budget_override": {"max_budget": 1, "periods": 2}})),
    )
    .await;
    assert_eq!(st, 400, "a lifetime budget has no periods: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_keys_are_never_refused_but_their_spend_counts_and_last_used_at_shows() {
    let (_mock, gw) = start().await;
    let url = gw.url();
    create(
        &url,
        "/v1/teams",
        json!({"team_id": "mon", "max_budget": "0.001"}),
    )
    .await;
    let probe = create(
        &url,
        "/v1/keys",
        json!({"name": "probe", "team_id": "mon", "exclude_from_budget": true, "max_budget": "0.0001"}),
    )
    .await;
    assert_eq!(probe["exclude_from_budget"], true);
    assert_eq!(probe["last_used_at"], Value::Null);
    let normal = create(&url, "/v1/keys", json!({"team_id": "mon"})).await;
    let c = client();
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Over its own budget and the team's, and still served.
    for _ in 0..3 {
        let (st, v) = chat_once(&c, &url, probe["key"].as_str().unwrap()).await;
        assert_eq!(st, 200, "{v}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(spend_of(&url, "/v1/teams/mon").await, json!(usd(3 * COST)));
    // The team's other keys are held to what is left: nothing.
    let (st, _) = chat_once(&c, &url, normal["key"].as_str().unwrap()).await;
    assert_eq!(st, 403);
    let id = probe["id"].as_str().unwrap();
    let (_, k) = admin(&url, Method::GET, &format!("/v1/keys/{id}"), None).await;
    let used = k["last_used_at"].as_u64().expect("last_used_at");
    assert!(used >= t0, "{k}");
    let (st, _) = admin(
        &url,
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        Some(json!({"exclude_from_budget": "yes"})),
    )
    .await;
    assert_eq!(st, 400);
}
