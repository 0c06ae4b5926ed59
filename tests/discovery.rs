//! Model discovery, end to end: the real tollgate binary fetches the mock provider's model
//! lists (OpenAI, Anthropic and Gemini formats, paged) and lists and routes what it found.

mod common;

use common::*;
use mock_upstream::{MockServer, ModelsControl};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Three providers, one per format, all on `mock`, and no `models:` anywhere.
fn config(mock: &str) -> TestConfig {
    TestConfig::new(mock)
        .provider(
            "openai",
            json!({"kind": "openai", "base_url": format!("{mock}/v1"), "api_key": "sk-openai-provider-key"}),
        )
        .provider(
            "gemini",
            json!({"kind": "gemini", "base_url": mock, "api_key": "gm-provider-key"}),
        )
}

/// A mock (prepared by `prepare` before tollgate starts) and a gateway on it.
async fn start(
    prepare: impl FnOnce(&MockServer),
    more: impl FnOnce(TestConfig, &str) -> TestConfig,
) -> (MockServer, Gateway) {
    let mock = MockServer::start().await;
    prepare(&mock);
    let url = mock.url();
    let cfg = more(config(&url), &url);
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    (mock, gw)
}

/// `GET path` with a virtual key, OpenAI style or (`anthropic`) Anthropic style.
async fn get(gw: &Gateway, key: &str, path: &str, anthropic: bool) -> (u16, Value) {
    let mut r = client().get(format!("{}{path}", gw.url())).bearer_auth(key);
    if anthropic {
        r = r.header("anthropic-version", "2023-06-01");
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {v}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn row<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {v}"))
}

async fn metrics(gw: &Gateway) -> String {
    client()
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one metric sample (0 when absent).
fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn failures(provider: &str) -> String {
    format!("tollgate_model_discovery_failures_total{{provider=\"{provider}\"}}")
}

/// Polls /metrics until `series` reaches `at_least` (20 s at most).
async fn wait_metric(gw: &Gateway, series: &str, at_least: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics(gw).await;
        if sample(&m, series) >= at_least || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Gemini list with a model no prefix rule claims.
fn gemma() -> ModelsControl {
    ModelsControl {
        gemini: Some(vec![
            "gemini-2.5-pro".into(),
            "gemma-3-27b-it".into(),
            "text-embedding-004".into(),
        ]),
        ..Default::default()
    }
}

fn list_calls(mock: &MockServer, format: &str) -> Vec<mock_upstream::RecordedRequest> {
    mock.list_requests()
        .into_iter()
        .filter(|r| match format {
            "gemini" => r.path.ends_with("/v1beta/models"),
            "anthropic" => r.header("anthropic-version").is_some(),
            _ => !r.path.ends_with("/v1beta/models") && r.header("anthropic-version").is_none(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_credentials_the_listing_shows_every_providers_models_in_both_shapes() {
    let (mock, gw) = start(
        |_| {},
        |c, _| {
            c.provider(
                "dead",
                json!({"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": "sk-dead-provider-key"}),
            )
        },
    )
    .await;
    let key = gw.create_key("t").await;

    // OpenAI shape: `provider:model` for every model, the bare name where it routes there.
    let (status, v) = get(&gw, &key, "/v1/models", false).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    let all = ids(&v);
    for id in [
        "openai:gpt-4.1",
        "openai:llama-3.3-70b-versatile",
        "llama-3.3-70b-versatile",
        "gpt-4.1",
        "anthropic:claude-haiku-4-5",
        "anthropic:claude-opus-4-8",
        "anthropic:claude-sonnet-4-6",
        "claude-sonnet-4-6",
        "gemini:gemini-2.5-flash",
        "gemini:gemini-2.5-pro",
        "gemini-2.5-pro",
        "gemini:text-embedding-004",
    ] {
        assert!(all.contains(&id.to_string()), "{id} missing from {all:?}");
    }
    assert!(
        !all.iter().any(|i| i.ends_with("aqa")),
        "a Gemini model that cannot generate is not listed"
    );
    assert!(!all.iter().any(|i| i.starts_with("dead:")));
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "sorted by id");
    let llama = row(&v, "openai:llama-3.3-70b-versatile");
    assert_eq!(llama["owned_by"], "openai");
    assert_eq!(llama["object"], "model");
    assert_eq!(llama["created"], 1_700_000_000);
    assert_eq!(llama["context_window"], 131072);
    let pro = row(&v, "gemini-2.5-pro");
    assert_eq!(pro["owned_by"], "gemini");
    assert_eq!(pro["context_window"], 1048576);
    assert_eq!(pro["max_output_tokens"], 65536);

    // Anthropic shape (Claude Code's discovery call): upstream display names and dates.
    let (status, a) = get(&gw, &key, "/v1/models?limit=1000", true).await;
    assert_eq!(status, 200);
    assert_eq!(a["has_more"], false);
    assert_eq!(ids(&a), all, "both shapes list the same ids");
    let sonnet = row(&a, "claude-sonnet-4-6");
    assert_eq!(sonnet["type"], "model");
    assert_eq!(sonnet["display_name"], "Claude Sonnet 4.6");
    assert_eq!(sonnet["created_at"], "2026-02-17T00:00:00Z");
    assert_eq!(
        row(&a, "gemini:gemini-2.5-flash")["display_name"],
        "Gemini 2.5 Flash"
    );
    assert_eq!(a["first_id"], all[0].as_str());
    assert_eq!(a["last_id"], all.last().unwrap().as_str());

    // Anthropic paging as the SDK walks it: limit + after_id (ids hold ':', sent encoded).
    let mut walked = Vec::new();
    let mut path = "/v1/models?limit=4".to_string();
    loop {
        let (_, page) = get(&gw, &key, &path, true).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 4);
        walked.extend(page_ids);
        if page["has_more"] != true {
            break;
        }
        let last = page["last_id"].as_str().unwrap().replace(':', "%3A");
        path = format!("/v1/models?limit=4&after_id={last}");
    }
    assert_eq!(walked, all);
    let (_, before) = get(
        &gw,
        &key,
        &format!("/v1/models?limit=2&before_id={}", all[3]),
        true,
    )
    .await;
    assert_eq!(ids(&before), all[1..3].to_vec());
    assert_eq!(before["has_more"], true);
    let (_, limited) = get(&gw, &key, "/v1/models?limit=3", false).await;
    assert_eq!(
        ids(&limited),
        all[..3].to_vec(),
        "limit in the OpenAI shape"
    );

    // ?provider= keeps one provider's rows; an unknown one is a 400 naming the configured.
    let (_, g) = get(&gw, &key, "/v1/models?provider=gemini", false).await;
    let g_ids = ids(&g);
    assert!(g_ids.contains(&"gemini-2.5-flash".to_string()));
    assert!(g.to_string().contains("gemini:gemini-2.5-pro"));
    assert!(g["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["owned_by"] == "gemini"));
    let (status, e) = get(&gw, &key, "/v1/models?provider=nope", false).await;
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic, dead, gemini, openai"),
        "{e}"
    );

    // /v1/models/{id} agrees with the list, in the client's shape; 404 in its envelope.
    let (status, m) = get(&gw, &key, "/v1/models/anthropic:claude-opus-4-8", true).await;
    assert_eq!(status, 200);
    assert_eq!(m["display_name"], "Claude Opus 4.8");
    assert_eq!(m["created_at"], "2026-05-01T00:00:00Z");
    let (status, m) = get(&gw, &key, "/v1/models/gemini%3Agemini-2.5-pro", false).await;
    assert_eq!(status, 200);
    assert_eq!(m, *row(&v, "gemini:gemini-2.5-pro"));
    for id in all.iter().take(40) {
        let (status, m) = get(&gw, &key, &format!("/v1/models/{id}"), false).await;
        assert_eq!((status, &m), (200, row(&v, id)));
    }
    let (status, e) = get(&gw, &key, "/v1/models/nope-model-1", false).await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], "model_not_found");
    let (status, e) = get(&gw, &key, "/v1/models/nope-model-1", true).await;
    assert_eq!(status, 404);
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "not_found_error");
    let (status, _) = get(&gw, &key, "/v1/models/aqa", false).await;
    assert_eq!(status, 404, "not listed, not retrievable");

    // Each format was fetched the provider's way, with the provider's credential, all pages.
    let oa = list_calls(&mock, "openai");
    assert!(oa.iter().all(|r| r.path == "/v1/models"
        && r.header("authorization") == Some("Bearer sk-openai-provider-key")));
    let an = list_calls(&mock, "anthropic");
    assert_eq!(an.len(), 2, "3 models in pages of 2: {an:?}");
    assert_eq!(an[0].query.as_deref(), Some("limit=1000"));
    assert_eq!(
        an[1].query.as_deref(),
        Some("limit=1000&after_id=claude-opus-4-8")
    );
    assert!(an
        .iter()
        .all(|r| r.header("x-api-key") == Some("sk-ant-provider-key")
            && r.header("authorization").is_none()));
    let ge = list_calls(&mock, "gemini");
    assert_eq!(ge.len(), 4, "4 models in pages of 1");
    assert_eq!(
        ge[3].query.as_deref(),
        Some("pageSize=1000&pageToken=page-3")
    );
    assert!(ge
        .iter()
        .all(|r| r.header("x-goog-api-key") == Some("gm-provider-key")));
    for r in mock.list_requests() {
        assert!(
            !format!("{:?}", r.headers).contains(&key),
            "client key upstream"
        );
    }

    // The dead provider is counted, and nobody waited on it for long.
    let m = wait_metric(&gw, &failures("dead"), 1).await;
    assert!(sample(&m, &failures("dead")) >= 1, "{m}");
    assert_eq!(
        sample(
            &m,
            "tollgate_model_discovery_models{provider=\"anthropic\"}"
        ),
        3
    );
    assert_eq!(sample(&m, &failures("openai")), 0);
    let logs = gw.stderr_text();
    assert!(
        logs.contains("model discovery: provider 'dead' connection failed"),
        "{logs}"
    );
    for secret in [
        "sk-openai-provider-key",
        "sk-ant-provider-key",
        "gm-provider-key",
        "sk-dead-provider-key",
        &key,
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!m.contains(secret), "{secret} in /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_name_only_discovery_knows_routes_to_the_one_provider_that_lists_it() {
    let (mock, gw) = start(|m| m.set_models(gemma()), |c, _| c).await;
    let key = gw.create_key("t").await;
    get(&gw, &key, "/v1/models", false).await;
    mock.clear();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&key)
        .json(&chat("llama-3.3-70b-versatile", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up = &mock.requests()[0];
    assert_eq!(up.path, "/v1/chat/completions");
    assert_eq!(up.json()["model"], "llama-3.3-70b-versatile");
    assert_eq!(
        up.header("authorization"),
        Some("Bearer sk-openai-provider-key")
    );
    // A Gemini model without a prefix rule of its own: found in Gemini's list.
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .bearer_auth(&key)
        .json(&messages("gemma-3-27b-it", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        mock.requests()[1].path,
        "/v1beta/models/gemma-3-27b-it:generateContent"
    );
    // Unknown everywhere: still the 404 that says what exists.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&key)
        .json(&chat("nope-model-1", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_several_providers_list_is_refused_with_the_candidates_unless_config_decides() {
    // groq and openai share the OpenAI-format list.
    let (mock, gw) = start(
        |_| {},
        |c, mock| {
            c.provider(
                "groq",
                json!({"kind": "openai", "base_url": format!("{mock}/v1"), "api_key": "gsk-provider-key", "models": ["gpt-4.1"]}),
            )
            .set("aliases", json!({"fast": "groq:llama-3.3-70b-versatile"}))
        },
    )
    .await;
    let key = gw.create_key("t").await;
    let (_, v) = get(&gw, &key, "/v1/models", false).await;
    let all = ids(&v);
    assert!(all.contains(&"groq:llama-3.3-70b-versatile".to_string()));
    assert!(all.contains(&"openai:llama-3.3-70b-versatile".to_string()));
    assert!(
        !all.contains(&"llama-3.3-70b-versatile".to_string()),
        "an ambiguous bare name is not listed"
    );
    assert_eq!(row(&v, "fast")["owned_by"], "groq");
    assert_eq!(
        row(&v, "fast")["context_window"],
        131072,
        "the alias carries its target's limits"
    );
    assert_eq!(row(&v, "gpt-4.1")["owned_by"], "groq", "models: decides");

    for (endpoint, body) in [
        (
            "/v1/chat/completions",
            chat("llama-3.3-70b-versatile", false),
        ),
        ("/v1/messages", messages("llama-3.3-70b-versatile", false)),
    ] {
        let r = client()
            .post(format!("{}{endpoint}", gw.url()))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let e: Value = r.json().await.unwrap();
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("groq:llama-3.3-70b-versatile")
                && msg.contains("openai:llama-3.3-70b-versatile"),
            "{msg}"
        );
        if endpoint == "/v1/messages" {
            assert_eq!(e["error"]["type"], "invalid_request_error");
        } else {
            assert_eq!(e["error"]["code"], "ambiguous_model");
        }
    }
    assert!(mock.requests().is_empty(), "nothing forwarded");
    // Config keeps precedence: models:, aliases, prefix rules, and explicit selectors.
    for (model, provider_key) in [
        ("gpt-4.1", "gsk-provider-key"),
        ("fast", "gsk-provider-key"),
        ("gpt-4o-mini", "sk-openai-provider-key"),
        ("groq:mock-model", "gsk-provider-key"),
    ] {
        mock.clear();
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(&key)
            .json(&chat(model, false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        assert_eq!(
            mock.requests()[0].header("authorization"),
            Some(format!("Bearer {provider_key}").as_str()),
            "{model}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_at_start_appears_on_the_first_listing_once_it_is_up() {
    let (mock, gw) = start(
        |m| {
            m.set_models(ModelsControl {
                fail: 1,
                status: Some(503),
                format: Some("anthropic".into()),
                ..Default::default()
            })
        },
        |c, _| c,
    )
    .await;
    let key = gw.create_key("t").await;
    let m = wait_metric(&gw, &failures("anthropic"), 1).await;
    assert_eq!(sample(&m, &failures("anthropic")), 1, "{m}");
    // The provider is up again; the next back-off retry is seconds away. The listing fetches
    // the missing list itself and waits for it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, a) = get(&gw, &key, "/v1/models?limit=1000", true).await;
    assert_eq!(status, 200);
    let all = ids(&a);
    assert!(all.contains(&"claude-opus-4-8".to_string()), "{all:?}");
    assert!(all.contains(&"anthropic:claude-haiku-4-5".to_string()));
    // 1 failed call, then the 2 pages of the on-demand fetch.
    assert_eq!(list_calls(&mock, "anthropic").len(), 3);
    let logs = gw.stderr_text();
    assert!(
        logs.contains("model discovery: provider 'anthropic' answered HTTP 503 (no list yet); retrying in 2 s"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fetches_are_retried_with_back_off_until_the_provider_answers() {
    // The OpenAI-format list endpoint drops the connection twice, then answers.
    let (mock, gw) = start(
        |m| {
            m.set_models(ModelsControl {
                fail: 2,
                status: Some(0),
                format: Some("openai".into()),
                ..Default::default()
            })
        },
        |c, _| c,
    )
    .await;
    let key = gw.create_key("t").await;
    // Nothing asks for the list (chat requests never trigger a fetch): the back-off does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(&key)
            .json(&chat("llama-3.3-70b-versatile", false))
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        if s == 200 || Instant::now() > deadline {
            break s;
        }
        assert_eq!(s, 404, "unknown until the list arrives");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 200, "routed once the retry got the list");
    let calls = list_calls(&mock, "openai");
    assert_eq!(calls.len(), 3, "two failures, one success");
    let gap = |i: usize| calls[i].received_at - calls[i - 1].received_at;
    assert!(
        gap(1) >= Duration::from_millis(1900),
        "first retry after ~2 s: {:?}",
        gap(1)
    );
    assert!(
        gap(2) >= Duration::from_millis(3900),
        "then ~4 s: {:?}",
        gap(2)
    );
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, &failures("openai")), 2);
    assert_eq!(sample(&m, &failures("anthropic")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_last_good_list() {
    let (mock, gw) = start(
        |m| m.set_models(gemma()),
        |c, _| {
            c.set(
                "model_discovery",
                json!({"refresh_secs": 1, "timeout_ms": 300}),
            )
        },
    )
    .await;
    let key = gw.create_key("t").await;
    let (_, before) = get(&gw, &key, "/v1/models", false).await;
    assert!(ids(&before).contains(&"gemini:gemini-2.5-pro".to_string()));
    // From now on Gemini's list is slow (past the timeout) or refused with a 401.
    mock.set_models(ModelsControl {
        fail: 1000,
        status: Some(401),
        delay_ms: 0,
        format: Some("gemini".into()),
        ..Default::default()
    });
    let m = wait_metric(&gw, &failures("gemini"), 2).await;
    assert!(sample(&m, &failures("gemini")) >= 2, "{m}");
    mock.set_models(ModelsControl {
        fail: 1000,
        status: Some(503),
        delay_ms: 2000,
        format: Some("gemini".into()),
        ..Default::default()
    });
    let seen = sample(&m, &failures("gemini"));
    let m = wait_metric(&gw, &failures("gemini"), seen + 1).await;
    assert!(
        sample(&m, &failures("gemini")) > seen,
        "a timeout counts: {m}"
    );
    assert_eq!(
        sample(&m, "tollgate_model_discovery_models{provider=\"gemini\"}"),
        3,
        "the gauge still shows the last good list"
    );
    let (status, after) = get(&gw, &key, "/v1/models", false).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&after), ids(&before), "the last good list is kept");
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&key)
        .json(&chat("gemma-3-27b-it", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "and still routes");
    let logs = gw.stderr_text();
    assert!(logs.contains("model discovery: provider 'gemini' answered HTTP 401 (keeping the last list (3 models))"), "{logs}");
    assert!(
        logs.contains("model discovery: provider 'gemini' timed out"),
        "{logs}"
    );
    assert!(!logs.contains("gm-provider-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_off_is_the_configured_listing_and_no_upstream_call() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url()).set("model_discovery", json!({"enabled": false}));
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("t").await;
    let (status, v) = get(&gw, &key, "/v1/models", false).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&v), ["openai:gpt-4o-mini"]);
    let (_, a) = get(&gw, &key, "/v1/models?limit=1000", true).await;
    assert_eq!(ids(&a), ["openai:gpt-4o-mini"]);
    assert_eq!(a["data"][0]["display_name"], "openai:gpt-4o-mini");
    // Retrieval still answers for any selector the router can place, as before.
    let (status, m) = get(&gw, &key, "/v1/models/claude-sonnet-4-6", false).await;
    assert_eq!((status, m["owned_by"].as_str()), (200, Some("anthropic")));
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&key)
        .json(&chat("llama-3.3-70b-versatile", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mock.list_requests().is_empty(), "no list was ever fetched");
    assert!(!metrics(&gw)
        .await
        .contains("tollgate_model_discovery_models{"));
}
