//! Gateway-run tools: the search backends and the sandbox client against the mock backends
//! (tests/mock-upstream: SearXNG, Brave and Tavily shapes, the reference sandbox), with their
//! failure modes; then the real gateway running tool loops.

mod common;

use mock_upstream::{SandboxServer, SearchServer, BRAVE_KEY, TAVILY_KEY};
use std::sync::Arc;
use std::time::Duration;
use tollgate::tools::sandbox::Sandbox;
use tollgate::tools::search::Searcher;
use tollgate::tools::settings::{Backend, CodeExecutionConfig, WebSearchConfig};
use tollgate::tools::ToolError;

fn search_cfg(backend: Backend, url: String, key: Option<&str>) -> WebSearchConfig {
    WebSearchConfig {
        backend,
        url,
        api_key: key.map(String::from),
        max_results: 5,
        allowed_domains: vec![],
        blocked_domains: vec![],
        allow_private_hosts: false,
        max_text_chars: 1500,
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn searxng_brave_and_tavily_shapes() {
    let m = SearchServer::start().await;
    let cases = [
        (Backend::Searxng, m.url(), None),
        (
            Backend::Brave,
            format!("{}/res/v1/web/search", m.url()),
            Some(BRAVE_KEY),
        ),
        (
            Backend::Tavily,
            format!("{}/search", m.url()),
            Some(TAVILY_KEY),
        ),
    ];
    for (backend, url, key) in cases {
        let s = Searcher::new(search_cfg(backend, url, key));
        let req = s.request("rust pingora", None);
        let res = s.search(&req).await.unwrap();
        assert_eq!(res.len(), 5, "{backend:?}");
        assert_eq!(res[1].title, "Result 2 for rust pingora", "{backend:?}");
        assert_eq!(res[1].url, "https://docs.alpha.invalid/2");
        // Brave gives snippets only; SearXNG and Tavily the page text too.
        match backend {
            Backend::Brave => assert_eq!(res[1].text, None),
            _ => assert_eq!(
                res[1].text.as_deref(),
                Some("Full text 2 about rust pingora: search-result-marker-2.")
            ),
        }
    }
    assert_eq!(m.queries(), vec!["rust pingora"; 3]);
}

#[tokio::test]
async fn wrong_key_is_a_tool_error() {
    let m = SearchServer::start().await;
    let s = Searcher::new(search_cfg(
        Backend::Brave,
        format!("{}/res/v1/web/search", m.url()),
        Some("wrong"),
    ));
    let e = s.search(&s.request("q", None)).await.unwrap_err();
    assert_eq!(
        e,
        ToolError::Failed("the search backend answered HTTP 401".into())
    );
}

#[tokio::test]
async fn results_are_capped_and_filtered_by_domain() {
    let m = SearchServer::start().await;
    let mut cfg = search_cfg(Backend::Searxng, m.url(), None);
    cfg.blocked_domains = vec!["gamma.invalid".into()];
    let s = Searcher::new(cfg);
    let o =
        serde_json::json!({"max_results": 3, "allowed_domains": ["alpha.invalid", "beta.invalid"]});
    let res = s.search(&s.request("q", o.as_object())).await.unwrap();
    let urls: Vec<&str> = res.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://docs.alpha.invalid/2",
            "https://www.beta.invalid/3",
            "https://docs.alpha.invalid/5"
        ]
    );
    let all = s.search(&s.request("q", None)).await.unwrap();
    assert!(all.iter().all(|r| !r.url.contains("gamma.invalid")));
    assert_eq!(all.len(), 5);
}

#[tokio::test]
async fn search_failure_modes() {
    let m = SearchServer::start().await;
    let s = Searcher::new(search_cfg(Backend::Searxng, m.url(), None));
    let req = s.request("q", None);
    for (mode, want) in [
        ("503", "the search backend answered HTTP 503"),
        ("malformed", "the search backend sent a malformed answer"),
        ("slow", "the search backend did not answer in time"),
        ("down", "the search backend failed"),
    ] {
        m.set_mode(Some(mode));
        let e = s.search(&req).await.unwrap_err();
        assert_eq!(e, ToolError::Failed(want.into()), "{mode}");
    }
    // Nothing listening: unreachable (the request is refused with a 502).
    let port = common::free_port();
    let s = Searcher::new(search_cfg(
        Backend::Searxng,
        format!("http://127.0.0.1:{port}"),
        None,
    ));
    let e = s.search(&req).await.unwrap_err();
    assert!(matches!(e, ToolError::Unreachable(_)), "{e:?}");
}

fn sandbox(url: String, timeout: Duration) -> Arc<Sandbox> {
    Arc::new(Sandbox::new(CodeExecutionConfig { url, timeout }))
}

#[tokio::test]
async fn sandbox_runs_code_and_deletes_its_session() {
    let sb = SandboxServer::start().await;
    let client = sandbox(sb.url(), Duration::from_secs(20));
    let session = client.open().await.unwrap();
    let out = session.exec("print(6 * 7)").await.unwrap();
    assert_eq!(out.stdout, "42\n");
    assert!(!out.failed());
    // A session keeps its directory between calls of one request.
    session
        .exec("open('f.txt', 'w').write('kept')")
        .await
        .unwrap();
    let out = session.exec("print(open('f.txt').read())").await.unwrap();
    assert_eq!(out.stdout, "kept\n");
    let out = session.exec("raise SystemExit(3)").await.unwrap();
    assert!(out.failed());
    assert!(out.render().starts_with("[tool error] return code: 3"));
    let out = session.exec("1/0").await.unwrap();
    assert!(out.render().contains("ZeroDivisionError"));
    let id = session.id().to_string();
    session.close().await;
    assert_eq!(sb.deleted(), vec![id]);
    assert!(sb.open_sessions().is_empty());
}

#[tokio::test]
async fn a_dropped_session_is_deleted() {
    let sb = SandboxServer::start().await;
    let client = sandbox(sb.url(), Duration::from_secs(20));
    let session = client.open().await.unwrap();
    let id = session.id().to_string();
    drop(session);
    for _ in 0..100 {
        if sb.deleted() == vec![id.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sb.deleted(), vec![id]);
}

#[tokio::test]
async fn sandbox_timeout_and_failure_modes() {
    let sb = SandboxServer::start().await;
    let client = sandbox(sb.url(), Duration::from_secs(1));
    let session = client.open().await.unwrap();
    let out = session.exec("import time; time.sleep(5)").await.unwrap();
    assert_eq!(out.return_code, 124);
    assert!(out.failed());
    for (mode, want) in [
        ("503", "the sandbox answered HTTP 503"),
        ("malformed", "the sandbox sent a malformed answer"),
    ] {
        sb.set_mode(Some(mode));
        let e = session.exec("print(1)").await.unwrap_err();
        assert_eq!(e, ToolError::Failed(want.into()), "{mode}");
    }
    sb.set_mode(Some("503"));
    assert!(matches!(client.open().await, Err(ToolError::Failed(_))));
    sb.set_mode(None);
    session.close().await;
    assert!(sb.open_sessions().is_empty());
    let port = common::free_port();
    let down = sandbox(format!("http://127.0.0.1:{port}"), Duration::from_secs(1));
    assert!(matches!(down.open().await, Err(ToolError::Unreachable(_))));
}

// ---- The gateway's tool loop ----

use common::{client, Gateway, TestConfig};
use mock_upstream::MockServer;
use serde_json::{json, Value};

struct Rig {
    mock: MockServer,
    search: SearchServer,
    sandbox: SandboxServer,
    gw: Gateway,
    key: String,
}

/// A gateway with providers of every format on the mock (`openai`: Chat, `oairesp`:
/// Responses, `anthropic`, `gemini`), the mock search backend and the reference sandbox.
async fn rig(edit: impl FnOnce(TestConfig) -> TestConfig) -> Rig {
    let mock = MockServer::start().await;
    let search = SearchServer::start().await;
    let sandbox = SandboxServer::start().await;
    let url = mock.url();
    let cfg = TestConfig::new(&url)
        // Chat only: Responses clients are translated (`oairesp` serves them natively).
        .provider_set("openai", "native_responses", false)
        .provider(
            "oairesp",
            json!({"kind": "openai", "base_url": format!("{url}/v1"), "api_key": "sk-r", "native_responses": true, "models": ["gpt-4.1"]}),
        )
        .provider(
            "gemini",
            json!({"kind": "gemini", "base_url": url, "api_key": "gm-key", "models": ["gemini-2.5-flash"]}),
        )
        .set(
            "tools",
            json!({"web_search": {"url": search.url()}, "code_execution": {"url": sandbox.url()}}),
        );
    let cfg = edit(cfg);
    let gw = Gateway::start_with(cfg.file());
    let key = gw.create_key("tools").await;
    Rig {
        mock,
        search,
        sandbox,
        gw,
        key,
    }
}

const MODELS: [&str; 4] = [
    "openai:gpt-4o-mini",
    "anthropic:claude-sonnet-4-6",
    "gemini:gemini-2.5-flash",
    "oairesp:gpt-4.1",
];

fn body(path: &str, model: &str, tools: Value) -> Value {
    match path {
        "/v1/messages" => {
            json!({"model": model, "max_tokens": 100, "tools": tools, "messages": [{"role": "user", "content": "find it"}]})
        }
        "/v1/responses" => json!({"model": model, "tools": tools, "input": "find it"}),
        _ => {
            json!({"model": model, "tools": tools, "messages": [{"role": "user", "content": "find it"}]})
        }
    }
}

fn answer_text(path: &str, v: &Value) -> String {
    let format = match path {
        "/v1/messages" => tollgate::translate::Format::Anthropic,
        "/v1/responses" => tollgate::translate::Format::Responses,
        _ => tollgate::translate::Format::Chat,
    };
    tollgate::tools::turns::text(v, format)
}

async fn post(r: &Rig, path: &str, b: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}{path}", r.gw.url()))
        .bearer_auth(&r.key)
        .json(b);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// Whether `cond` holds within 5 s.
async fn eventually(cond: impl Fn() -> bool) -> bool {
    for _ in 0..250 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn three_iterations_on_every_client_and_provider_format() {
    let r = rig(|c| c).await;
    let tools = json!([{"type": "tollgate_web_search"}, {"type": "tollgate_code_execution"}]);
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        for model in MODELS {
            r.mock.clear();
            let res = post(
                &r,
                path,
                &body(path, model, tools.clone()),
                &[("x-mock-tool-script", "web_search,code_execution")],
            )
            .await;
            let status = res.status();
            let iters = res
                .headers()
                .get("x-tollgate-tool-iterations")
                .map(|v| v.to_str().unwrap().to_string());
            let v: Value = res.json().await.unwrap();
            assert_eq!(status, 200, "{path} {model}: {v}");
            assert_eq!(iters.as_deref(), Some("3"), "{path} {model}");
            // The last tool result (the sandbox's output) reached the model.
            let text = answer_text(path, &v);
            assert!(text.contains("42 ok"), "{path} {model}: {v}");
            assert_eq!(r.mock.requests().len(), 3, "{path} {model}");
            // The second turn carried the search results to the model.
            let second = String::from_utf8_lossy(&r.mock.requests()[1].body).to_string();
            assert!(second.contains("search-result-marker-2"), "{path} {model}");
            // What the client sees of the search.
            match path {
                "/v1/messages" => {
                    assert_eq!(v["content"][0]["type"], "server_tool_use", "{model}: {v}");
                    assert_eq!(v["content"][0]["input"]["query"], "tollgate mock search");
                    assert_eq!(v["content"][1]["type"], "web_search_tool_result");
                    assert_eq!(
                        v["content"][1]["content"][1]["url"],
                        "https://docs.alpha.invalid/2"
                    );
                }
                "/v1/responses" => {
                    assert_eq!(v["output"][0]["type"], "web_search_call", "{model}: {v}");
                    assert_eq!(v["output"][0]["action"]["query"], "tollgate mock search");
                }
                _ => assert!(!v.to_string().contains("web_search"), "{model}: {v}"),
            }
        }
    }
    // One sandbox session per request, every one deleted.
    assert_eq!(r.sandbox.created().len(), 12);
    // Sessions are deleted as the request ends, just after its answer is written.
    assert!(eventually(|| r.sandbox.open_sessions().is_empty()).await);
    assert_eq!(r.search.queries().len(), 12);
}

#[tokio::test]
async fn mixed_turn_returns_only_the_callers_calls() {
    let r = rig(|c| c).await;
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        let caller_tool = match path {
            "/v1/messages" => json!({"name": "Bash", "input_schema": {"type": "object"}}),
            "/v1/responses" => {
                json!({"type": "function", "name": "Bash", "parameters": {"type": "object"}})
            }
            _ => {
                json!({"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}})
            }
        };
        let tools = json!([caller_tool, {"type": "tollgate_web_search"}]);
        let res = post(
            &r,
            path,
            &body(path, "openai:gpt-4o-mini", tools),
            &[("x-mock-tool-script", "web_search+Bash")],
        )
        .await;
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        let s = v.to_string();
        match path {
            "/v1/messages" => {
                let uses: Vec<&Value> = v["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|b| b["type"] == "tool_use")
                    .collect();
                assert_eq!(uses.len(), 1, "{v}");
                assert_eq!(uses[0]["name"], "Bash");
                assert_eq!(v["stop_reason"], "tool_use");
            }
            "/v1/responses" => {
                let calls: Vec<&Value> = v["output"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|i| i["type"] == "function_call")
                    .collect();
                assert_eq!(calls.len(), 1, "{v}");
                assert_eq!(calls[0]["name"], "Bash");
            }
            _ => {
                let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
                assert_eq!(calls.len(), 1, "{v}");
                assert_eq!(calls[0]["function"]["name"], "Bash");
                assert!(!s.contains("web_search"), "{v}");
            }
        }
    }
    assert_eq!(r.search.queries().len(), 3);
}

#[tokio::test]
async fn iteration_cap_and_refusals() {
    let r = rig(|c| {
        c.set(
            "tools",
            json!({"web_search": {"url": "http://127.0.0.1:9"}, "max_tool_iterations": 3}),
        )
    })
    .await;
    // Asking for more than the gateway allows: 422 in the client's envelope.
    let mut b = body(
        "/v1/messages",
        "openai:gpt-4o-mini",
        json!([{"type": "tollgate_web_search"}]),
    );
    b["max_tool_iterations"] = json!(4);
    let res = post(&r, "/v1/messages", &b, &[]).await;
    assert_eq!(res.status(), 422);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    // No sandbox configured: 400.
    let b = body(
        "/v1/chat/completions",
        "openai:gpt-4o-mini",
        json!([{"type": "otari_code_execution"}]),
    );
    let res = post(&r, "/v1/chat/completions", &b, &[]).await;
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TOLLGATE_SANDBOX_URL"),
        "{v}"
    );
    // The search backend is unreachable: 502, and the provider was called once.
    r.mock.clear();
    let b = body(
        "/v1/responses",
        "openai:gpt-4o-mini",
        json!([{"type": "tollgate_web_search"}]),
    );
    let res = post(
        &r,
        "/v1/responses",
        &b,
        &[("x-mock-tool-script", "web_search")],
    )
    .await;
    assert_eq!(res.status(), 502);
    assert_eq!(r.mock.requests().len(), 1);
}

#[tokio::test]
async fn the_model_that_never_stops_calling_tools_hits_the_cap() {
    let r = rig(|c| c).await;
    let mut b = body(
        "/v1/chat/completions",
        "anthropic:claude-sonnet-4-6",
        json!([{"type": "tollgate_web_search"}]),
    );
    b["max_tool_iterations"] = json!(2);
    let res = post(
        &r,
        "/v1/chat/completions",
        &b,
        &[("x-mock-tool-script", "web_search,web_search,web_search")],
    )
    .await;
    assert_eq!(res.status(), 422);
    assert_eq!(r.mock.requests().len(), 2);
    assert_eq!(r.search.queries().len(), 1);
}

#[tokio::test]
async fn tool_failures_reach_the_model_as_tool_errors() {
    let r = rig(|c| c).await;
    r.search.set_mode(Some("503"));
    let b = body(
        "/v1/chat/completions",
        "openai:gpt-4o-mini",
        json!([{"type": "tollgate_web_search"}]),
    );
    let res = post(
        &r,
        "/v1/chat/completions",
        &b,
        &[("x-mock-tool-script", "web_search")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.contains("[tool error] the search backend answered HTTP 503"),
        "{text}"
    );
}

#[tokio::test]
async fn requests_without_gateway_tools_are_untouched() {
    let r = rig(|c| c).await;
    // A client function named web_search is the client's own.
    let b = body(
        "/v1/chat/completions",
        "gpt-4o-mini",
        json!([{"type": "function", "function": {"name": "web_search", "parameters": {}}}]),
    );
    let raw = serde_json::to_vec(&b).unwrap();
    let res = client()
        .post(format!("{}/v1/chat/completions", r.gw.url()))
        .bearer_auth(&r.key)
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-tollgate-tool-iterations").is_none());
    assert_eq!(r.mock.requests()[0].body, raw);
    assert!(r.search.queries().is_empty());
}

#[tokio::test]
async fn tools_listing() {
    let r = rig(|c| c).await;
    let res = client()
        .get(format!("{}/v1/tools", r.gw.url()))
        .bearer_auth(&r.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["data"][0]["type"], "tollgate_web_search");
    assert_eq!(v["data"][0]["available"], true);
    assert_eq!(v["data"][0]["backend"], "searxng");
    assert_eq!(v["data"][0]["input_schema"]["required"], json!(["query"]));
    assert_eq!(v["data"][1]["type"], "tollgate_code_execution");
    assert_eq!(v["data"][1]["available"], true);
    assert!(v["data"][1]["accepted_types"]
        .as_array()
        .unwrap()
        .contains(&json!("otari_code_execution")));
    assert_eq!(v["max_tool_iterations"], 10);
    let res = client()
        .get(format!("{}/v1/tools", r.gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let bare = rig(|c| c.without("tools")).await;
    let v: Value = client()
        .get(format!("{}/v1/tools", bare.gw.url()))
        .bearer_auth(&bare.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["available"], false);
    assert_eq!(v["data"][1]["available"], false);
}

/// Claude Code's WebSearch declaration.
fn claude_code_search() -> Value {
    json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 8},
           {"name": "Bash", "input_schema": {"type": "object"}}])
}

#[tokio::test]
async fn claude_codes_web_search_runs_on_a_translated_route() {
    // Intercept off: still claimed where the provider cannot run it (a translated route).
    let search = SearchServer::start().await;
    let r = rig(|c| {
        c.set(
            "tools",
            json!({"web_search": {"url": search.url(), "intercept": false}}),
        )
    })
    .await;
    let b = body("/v1/messages", "openai:gpt-4o-mini", claude_code_search());
    let res = post(
        &r,
        "/v1/messages",
        &b,
        &[("x-mock-tool-script", "web_search")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["content"][0]["type"], "server_tool_use", "{v}");
    assert_eq!(v["content"][1]["type"], "web_search_tool_result");
    assert!(answer_text("/v1/messages", &v).contains("search-result-marker-3"));
    assert_eq!(search.queries(), ["tollgate mock search"]);
    // The provider was offered a plain function.
    let first = r.mock.requests()[0].json();
    let names: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(names, ["Bash", "web_search"]);

    // The next turn echoes the blocks: they are stripped before the provider.
    r.mock.clear();
    let mut b = b;
    b["messages"] = json!([{"role": "user", "content": "find it"},
        {"role": "assistant", "content": v["content"].clone()},
        {"role": "user", "content": "thanks"}]);
    let res = post(&r, "/v1/messages", &b, &[]).await;
    assert_eq!(res.status(), 200);
    let sent = String::from_utf8_lossy(&r.mock.requests()[0].body).to_string();
    assert!(!sent.contains("srvtoolu_"), "{sent}");

    // Same format (Anthropic on Anthropic) with intercept off: the provider gets its own tool.
    r.mock.clear();
    let b = body(
        "/v1/messages",
        "anthropic:claude-sonnet-4-6",
        claude_code_search(),
    );
    let res = post(&r, "/v1/messages", &b, &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        r.mock.requests()[0].json()["tools"][0]["type"],
        "web_search_20250305"
    );
}

#[tokio::test]
async fn intercept_claims_web_search_on_native_routes() {
    // Intercept defaults on with a backend.
    let r = rig(|c| c).await;
    let b = body(
        "/v1/messages",
        "anthropic:claude-sonnet-4-6",
        claude_code_search(),
    );
    let res = post(
        &r,
        "/v1/messages",
        &b,
        &[("x-mock-tool-script", "web_search")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["content"][0]["type"], "server_tool_use", "{v}");
    assert_eq!(
        r.mock.requests()[0].json()["tools"][1]["name"],
        "web_search"
    );
    // Codex's web_search on a Responses-native route.
    let b = body(
        "/v1/responses",
        "oairesp:gpt-4.1",
        json!([{"type": "web_search", "external_web_access": true}]),
    );
    let res = post(
        &r,
        "/v1/responses",
        &b,
        &[("x-mock-tool-script", "web_search")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["output"][0]["type"], "web_search_call", "{v}");
    assert_eq!(r.search.queries().len(), 2);
}

async fn admin(r: &Rig, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let (_, v) = common::admin_call(&r.gw.url(), method, path, body).await;
    v
}

/// The usage rows of one request, once `n` are written.
async fn rows_of(r: &Rig, request_id: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let rows: Vec<Value> = common::usage_rows(&r.gw)
            .await
            .into_iter()
            .filter(|v| v["request_id"] == request_id)
            .collect();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {n} usage rows for {request_id}");
}

#[tokio::test]
async fn every_turn_and_tool_call_is_billed_exactly() {
    let r = rig(|c| {
        c.set(
            "pricing",
            json!({"openai:gpt-4o-mini": {"input": 1, "output": 2},
                       "tollgate:web_search": {"input": 0.001, "output": 0},
                       "tollgate:code_execution": {"input": 0.002, "output": 0}}),
        )
    })
    .await;
    let tools = json!([{"type": "tollgate_web_search"}, {"type": "tollgate_code_execution"}]);
    let b = body("/v1/chat/completions", "openai:gpt-4o-mini", tools.clone());
    let res = post(
        &r,
        "/v1/chat/completions",
        &b,
        &[
            ("x-mock-tool-script", "web_search,code_execution"),
            ("x-mock-usage", "100,10"),
            ("x-request-id", "loop-billing-1"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let mut rows = rows_of(&r, "loop-billing-1", 3).await;
    rows.sort_by_key(|v| v["tool_iteration"].as_u64());
    let per_turn = 100 + 2 * 10;
    let costs: Vec<u64> = rows
        .iter()
        .map(|v| v["cost_micros"].as_u64().unwrap())
        .collect();
    assert_eq!(
        costs,
        [per_turn + 1000, per_turn + 2000, per_turn],
        "{rows:?}"
    );
    let iters: Vec<u64> = rows
        .iter()
        .map(|v| v["tool_iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(iters, [1, 2, 3]);
    let calls: Vec<u64> = rows
        .iter()
        .map(|v| v["tool_calls"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(calls, [1, 1, 0]);
    assert!(rows
        .iter()
        .all(|v| v["prompt_tokens"] == 100 && v["status"] == 200));

    // A failed call is free.
    r.sandbox.set_mode(Some("503"));
    let res = post(
        &r,
        "/v1/chat/completions",
        &b,
        &[
            ("x-mock-tool-script", "code_execution"),
            ("x-mock-usage", "100,10"),
            ("x-request-id", "loop-billing-2"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let rows = rows_of(&r, "loop-billing-2", 2).await;
    let total: u64 = rows
        .iter()
        .map(|v| v["cost_micros"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2 * per_turn);
}

#[tokio::test]
async fn a_loop_stops_at_the_budget() {
    let r = rig(|c| c.pricing("openai:gpt-4o-mini", 1, 2)).await;
    let key = admin(
        &r,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "small", "max_budget": "0.0015"})),
    )
    .await;
    let secret = key["key"].as_str().unwrap().to_string();
    let id = key["id"].as_str().unwrap().to_string();
    let mut b = body(
        "/v1/chat/completions",
        "openai:gpt-4o-mini",
        json!([{"type": "tollgate_web_search"}]),
    );
    b["max_tokens"] = json!(10);
    let res = client()
        .post(format!("{}/v1/chat/completions", r.gw.url()))
        .bearer_auth(&secret)
        .header("x-mock-tool-script", "web_search,web_search,web_search,web_search,web_search,web_search,web_search,web_search")
        .header("x-mock-usage", "500,100")
        .json(&b)
        .send()
        .await
        .unwrap();
    // Turns cost 700 micro-dollars each; the third cannot be reserved.
    assert_eq!(res.status(), 403);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");
    let turns = r.mock.requests().len() as u64;
    assert_eq!(turns, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = admin(&r, reqwest::Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(info["standing"]["spend"], "0.0014", "{info}");
    assert_eq!(info["standing"]["reserved"], "0.00");
}

// ---- Streams ----

fn streamed(mut b: Value) -> Value {
    b["stream"] = json!(true);
    b
}

#[tokio::test]
async fn three_iteration_streams_in_every_client_grammar() {
    let r = rig(|c| c.set("stream_keepalive_ms", 100)).await;
    let tools = json!([{"type": "tollgate_web_search"}, {"type": "tollgate_code_execution"}]);
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        for model in [
            "openai:gpt-4o-mini",
            "anthropic:claude-sonnet-4-6",
            "oairesp:gpt-4.1",
        ] {
            let res = post(
                &r,
                path,
                &streamed(body(path, model, tools.clone())),
                &[
                    ("x-mock-tool-script", "web_search,code_execution"),
                    // Slow turns: the stream carries keep-alives meanwhile.
                    ("x-mock-delay-ms", "250"),
                ],
            )
            .await;
            assert_eq!(res.status(), 200);
            assert_eq!(
                res.headers()["content-type"].to_str().unwrap(),
                "text/event-stream"
            );
            let text = res.text().await.unwrap();
            let evs = common::events(&text);
            let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
            match path {
                "/v1/messages" => {
                    assert_eq!(names[0], "message_start", "{model}: {text}");
                    assert_eq!(*names.last().unwrap(), "message_stop", "{model}: {text}");
                    assert!(names.contains(&"ping"), "{model}: {text}");
                    let starts: Vec<&str> = evs
                        .iter()
                        .filter(|(n, _)| n == "content_block_start")
                        .map(|(_, v)| v["content_block"]["type"].as_str().unwrap())
                        .collect();
                    // Interim text (the Anthropic mock says "I'll run it." before each
                    // call) streams too, as it does with Anthropic's own web search.
                    let tools: Vec<&&str> = starts.iter().filter(|t| **t != "text").collect();
                    assert_eq!(
                        tools,
                        [&"server_tool_use", &"web_search_tool_result"],
                        "{model}: {text}"
                    );
                    assert_eq!(*starts.last().unwrap(), "text");
                    let indices: Vec<u64> = evs
                        .iter()
                        .filter(|(n, _)| n == "content_block_start")
                        .map(|(_, v)| v["index"].as_u64().unwrap())
                        .collect();
                    assert_eq!(indices, (0..starts.len() as u64).collect::<Vec<_>>());
                    let delta: String = evs
                        .iter()
                        .filter_map(|(_, v)| v["delta"]["text"].as_str())
                        .collect();
                    assert!(delta.contains("42 ok"), "{model}: {text}");
                }
                "/v1/responses" => {
                    assert_eq!(names[0], "response.created", "{model}: {text}");
                    assert_eq!(*names.last().unwrap(), "response.completed");
                    let done = &evs.last().unwrap().1["response"];
                    let items: Vec<&str> = done["output"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i["type"].as_str().unwrap())
                        .collect();
                    assert_eq!(
                        items.iter().filter(|t| **t == "web_search_call").count(),
                        1,
                        "{done}"
                    );
                    assert!(!items.contains(&"function_call"), "{done}");
                    assert_eq!(*items.last().unwrap(), "message", "{done}");
                    assert!(answer_text(path, done).contains("42 ok"));
                    let indices: Vec<u64> = evs
                        .iter()
                        .filter(|(n, _)| n == "response.output_item.added")
                        .map(|(_, v)| v["output_index"].as_u64().unwrap())
                        .collect();
                    assert_eq!(indices, (0..items.len() as u64).collect::<Vec<_>>());
                    let seqs: Vec<u64> = evs
                        .iter()
                        .map(|(_, v)| v["sequence_number"].as_u64().unwrap())
                        .collect();
                    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
                }
                _ => {
                    assert!(text.contains(": keep-alive"), "{model}");
                    assert!(text.ends_with("data: [DONE]\n\n"), "{model}: {text}");
                    let content: String = evs
                        .iter()
                        .filter_map(|(_, v)| v["choices"][0]["delta"]["content"].as_str())
                        .collect();
                    assert!(content.contains("42 ok"), "{model}: {text}");
                    assert!(!text.contains("web_search"), "{model}: {text}");
                }
            }
        }
    }
}

#[tokio::test]
async fn a_failure_mid_stream_ends_with_the_native_error_event() {
    let r = rig(|c| c).await;
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        let mut b = streamed(body(
            path,
            "openai:gpt-4o-mini",
            json!([{"type": "tollgate_web_search"}]),
        ));
        b["max_tool_iterations"] = json!(2);
        let res = post(
            &r,
            path,
            &b,
            &[("x-mock-tool-script", "web_search,web_search,web_search")],
        )
        .await;
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        let evs = common::events(&text);
        let (name, last) = evs.last().unwrap();
        match path {
            "/v1/messages" => {
                assert_eq!(name, "error", "{text}");
                assert!(last["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("2 iterations"));
            }
            "/v1/responses" => assert_eq!(name, "response.failed", "{text}"),
            _ => assert!(last["error"]["message"].as_str().is_some(), "{text}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_backend_is_a_502_before_the_stream() {
    let port = common::free_port();
    let r = rig(|c| {
        c.set(
            "tools",
            json!({"web_search": {"url": format!("http://127.0.0.1:{port}")}}),
        )
    })
    .await;
    let b = streamed(body(
        "/v1/messages",
        "openai:gpt-4o-mini",
        json!([{"type": "tollgate_web_search"}]),
    ));
    let res = post(
        &r,
        "/v1/messages",
        &b,
        &[("x-mock-tool-script", "web_search")],
    )
    .await;
    assert_eq!(res.status(), 502);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(r.mock.requests().is_empty());
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_no_sandbox_session() {
    let r = rig(|c| c.set("stream_keepalive_ms", 50)).await;
    // Every sandbox call takes 3 s: the client leaves while code runs.
    r.sandbox.set_mode(Some("slow"));
    let b = streamed(body(
        "/v1/chat/completions",
        "openai:gpt-4o-mini",
        json!([{"type": "tollgate_code_execution"}]),
    ));
    let mut res = post(
        &r,
        "/v1/chat/completions",
        &b,
        &[("x-mock-tool-script", "code_execution")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));
    drop(res);
    assert!(eventually(|| r.sandbox.created().len() == 1).await);
    // Deleted after the slow exec and delete calls (3 s each), well before the 60 s timeout.
    for _ in 0..60 {
        if r.sandbox.deleted().len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(r.sandbox.deleted(), r.sandbox.created());
    assert!(r.sandbox.open_sessions().is_empty());
    // The loop stopped with the client: no second turn was asked for.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.mock.requests().len(), 1);
}

// ---- Page fetching and SSRF ----

use tollgate::outbound::HostPolicy;
use tollgate::tools::fetch::Fetcher;

#[tokio::test]
async fn pages_are_fetched_when_the_backend_gives_snippets() {
    let m = SearchServer::start().await;
    // The operator allows private hosts: the local result page is fetched and read as text.
    let mut cfg = search_cfg(Backend::Searxng, m.url(), None);
    cfg.allow_private_hosts = true;
    let s = Searcher::new(cfg);
    let res = s.search(&s.request("q", None)).await.unwrap();
    let text = res[0].text.as_deref().unwrap();
    assert!(
        text.contains("The fetched text of page 1: page-text-marker-1."),
        "{text}"
    );
    assert!(!text.contains("<p>") && !text.contains("p{}"), "{text}");
    // Results that came with text are not fetched again.
    assert_eq!(
        res[1].text.as_deref(),
        Some("Full text 2 about q: search-result-marker-2.")
    );
    let rendered = tollgate::tools::search::render(&res, 30);
    assert!(rendered.contains("# Page 1\nThe fetched"), "{rendered}");
    assert!(
        !rendered.contains("marker-1"),
        "cut to max_text_chars: {rendered}"
    );

    // By default a page on a private address is refused: the snippet stays.
    let s = Searcher::new(search_cfg(Backend::Searxng, m.url(), None));
    let res = s.search(&s.request("q", None)).await.unwrap();
    assert_eq!(res[0].text, None);
    assert_eq!(res[0].snippet, "A snippet of the local page about q.");
}

#[tokio::test]
async fn page_fetching_refuses_inside_addresses_at_every_hop() {
    let m = SearchServer::start().await;
    let public = Fetcher::new(HostPolicy::PUBLIC);
    let port = m.addr().port();
    for url in [
        format!("http://127.0.0.1:{port}/page/1"),
        format!("http://localhost:{port}/page/1"),
        format!("http://[::1]:{port}/page/1"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        "file:///etc/passwd".to_string(),
    ] {
        let e = public.text(&url).await.unwrap_err();
        assert!(
            e.contains("loopback") || e.contains("private") || e.contains("scheme"),
            "{url}: {e}"
        );
    }
    // A host allowed on the first hop, redirecting inside: refused at the redirect.
    let loopback_only = Fetcher::new(HostPolicy::LOOPBACK);
    assert!(loopback_only
        .text(&format!("{}/redirect?to=/page/2", m.url()))
        .await
        .unwrap()
        .contains("page-text-marker-2"));
    for inside in [
        "http://169.254.169.254/latest/meta-data/",
        "http://192.168.1.1/",
    ] {
        let e = loopback_only
            .text(&format!("{}/redirect?to={inside}", m.url()))
            .await
            .unwrap_err();
        assert!(e.contains("private or link-local"), "{inside}: {e}");
    }
    // More than 5 redirects.
    let mut url = format!("{}/page/3", m.url());
    for _ in 0..6 {
        url = format!(
            "{}/redirect?to={}",
            m.url(),
            url.replace('&', "%26")
                .replace('?', "%3F")
                .replace('=', "%3D")
        );
    }
    let e = loopback_only.text(&url).await.unwrap_err();
    assert!(e.contains("redirects"), "{e}");
}

#[tokio::test]
async fn the_last_turn_streams_chunk_by_chunk() {
    let r = rig(|c| c).await;
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        let b = streamed(body(
            path,
            "anthropic:claude-sonnet-4-6",
            json!([{"type": "tollgate_web_search"}]),
        ));
        // No tool call: the model's text comes in pieces 150 ms apart.
        let mut res = post(&r, path, &b, &[("x-mock-chunk-delay-ms", "150")]).await;
        assert_eq!(res.status(), 200);
        let mut first_text = None;
        let mut all = Vec::new();
        while let Some(c) = res.chunk().await.unwrap() {
            all.extend_from_slice(&c);
            if first_text.is_none() && String::from_utf8_lossy(&all).contains("Hell") {
                first_text = Some(std::time::Instant::now());
            }
        }
        let after_first = first_text.expect("text arrived").elapsed();
        // The rest of the text kept coming after the first piece went out.
        assert!(
            after_first > Duration::from_millis(400),
            "{path}: {after_first:?}"
        );
        let text = String::from_utf8_lossy(&all).to_string();
        assert!(text.contains("o fr"), "{path}: {text}");
    }
}

#[tokio::test]
async fn a_streamed_mixed_turn_hands_back_only_the_callers_call() {
    let r = rig(|c| c).await;
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/responses"] {
        let caller_tool = match path {
            "/v1/messages" => json!({"name": "Bash", "input_schema": {"type": "object"}}),
            "/v1/responses" => {
                json!({"type": "function", "name": "Bash", "parameters": {"type": "object"}})
            }
            _ => {
                json!({"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}})
            }
        };
        let b = streamed(body(
            path,
            "openai:gpt-4o-mini",
            json!([caller_tool, {"type": "tollgate_web_search"}]),
        ));
        let res = post(&r, path, &b, &[("x-mock-tool-script", "web_search+Bash")]).await;
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        let evs = common::events(&text);
        match path {
            "/v1/messages" => {
                let starts: Vec<(String, String)> = evs
                    .iter()
                    .filter(|(n, _)| n == "content_block_start")
                    .map(|(_, v)| {
                        let b = &v["content_block"];
                        (
                            b["type"].as_str().unwrap().into(),
                            b["name"].as_str().unwrap_or("").into(),
                        )
                    })
                    .collect();
                let want: Vec<(String, String)> = [
                    ("server_tool_use", "web_search"),
                    ("web_search_tool_result", ""),
                    ("tool_use", "Bash"),
                ]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
                assert_eq!(starts, want, "{text}");
                let stop = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
                assert_eq!(stop.1["delta"]["stop_reason"], "tool_use");
            }
            "/v1/responses" => {
                let done = &evs.last().unwrap().1["response"];
                let items: Vec<(&str, &str)> = done["output"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        (
                            i["type"].as_str().unwrap(),
                            i["name"].as_str().unwrap_or(""),
                        )
                    })
                    .collect();
                assert_eq!(
                    items,
                    [("web_search_call", ""), ("function_call", "Bash")],
                    "{text}"
                );
            }
            _ => {
                let names: Vec<&str> = evs
                    .iter()
                    .filter_map(|(_, v)| v["choices"][0]["delta"]["tool_calls"].as_array())
                    .flatten()
                    .filter_map(|c| c["function"]["name"].as_str())
                    .collect();
                assert_eq!(names, ["Bash"], "{text}");
                let indices: Vec<u64> = evs
                    .iter()
                    .filter_map(|(_, v)| v["choices"][0]["delta"]["tool_calls"].as_array())
                    .flatten()
                    .map(|c| c["index"].as_u64().unwrap())
                    .collect();
                assert!(indices.iter().all(|i| *i == 0), "renumbered: {text}");
                assert!(!text.contains("web_search"), "{text}");
                assert!(text.ends_with("data: [DONE]\n\n"));
            }
        }
    }
    assert_eq!(r.search.queries().len(), 3);
}

// ---- Per-key and per-user tool policy ----

/// A key of its own with `fields` (e.g. a `tools` policy), and its secret.
async fn policy_key(r: &Rig, fields: Value) -> String {
    let (status, v) =
        common::admin_call(&r.gw.url(), reqwest::Method::POST, "/v1/keys", Some(fields)).await;
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

async fn tools_seen_by(r: &Rig, key: &str) -> Value {
    client()
        .get(format!("{}/v1/tools", r.gw.url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tool_the_key_may_not_use_is_refused_before_anything_is_sent() {
    let r = rig(|c| c).await;
    let key = policy_key(
        &r,
        json!({"name": "no-code", "tools": {"code_execution": {"allowed": false}}}),
    )
    .await;
    for (path, envelope) in [
        ("/v1/chat/completions", "error"),
        ("/v1/messages", "error"),
        ("/v1/responses", "error"),
    ] {
        let b = body(
            path,
            "openai:gpt-4o-mini",
            json!([{"type": "tollgate_web_search"}, {"type": "tollgate_code_execution"}]),
        );
        let res = client()
            .post(format!("{}{path}", r.gw.url()))
            .bearer_auth(&key)
            .json(&b)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        let v: Value = res.json().await.unwrap();
        let msg = v[envelope]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("'code_execution'"), "{path}: {v}");
        if path == "/v1/messages" {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(v["error"]["type"], "permission_error", "{v}");
        }
    }
    assert!(r.mock.requests().is_empty());
    assert!(r.sandbox.created().is_empty());
    // The tools it may use still work.
    let b = body(
        "/v1/chat/completions",
        "openai:gpt-4o-mini",
        json!([{"type": "tollgate_web_search"}]),
    );
    let res = client()
        .post(format!("{}/v1/chat/completions", r.gw.url()))
        .bearer_auth(&key)
        .header("x-mock-tool-script", "web_search")
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // GET /v1/tools tells this key what it may use.
    let v = tools_seen_by(&r, &key).await;
    assert_eq!(v["data"][0]["available"], true, "{v}");
    assert_eq!(v["data"][1]["available"], false, "{v}");
    assert_eq!(v["data"][1]["allowed"], false, "{v}");
    let v = tools_seen_by(&r, &r.key).await;
    assert_eq!(v["data"][1]["available"], true, "{v}");
}

#[tokio::test]
async fn the_users_policy_applies_to_its_keys_and_the_stricter_wins() {
    let r = rig(|c| c).await;
    let (status, v) = common::admin_call(
        &r.gw.url(),
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"user_id": "ann", "tools": {"web_search": {"allowed": false}, "code_execution": {"max_calls": 5}}})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["tools"]["web_search"]["allowed"], false, "{v}");
    // The key allows web search (the user does not) and caps code at 2 (the user at 5).
    let key = policy_key(
        &r,
        json!({"user_id": "ann", "tools": {"web_search": {"allowed": true}, "code_execution": {"max_calls": 2}}}),
    )
    .await;
    let v = tools_seen_by(&r, &key).await;
    assert_eq!(v["data"][0]["available"], false, "{v}");
    assert_eq!(v["data"][1]["available"], true, "{v}");
    assert_eq!(v["data"][1]["max_calls"], 2, "{v}");
    // Claude Code's claimed WebSearch counts as the gateway's web search.
    let res = client()
        .post(format!("{}/v1/messages", r.gw.url()))
        .bearer_auth(&key)
        .json(&body(
            "/v1/messages",
            "openai:gpt-4o-mini",
            claude_code_search(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let v: Value = res.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'web_search'"));
    assert!(r.mock.requests().is_empty());
    // Clearing the user's rule lets the key search.
    let (status, v) = common::admin_call(
        &r.gw.url(),
        reqwest::Method::PATCH,
        "/v1/users/ann",
        Some(json!({"tools": {"web_search": null}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["tools"],
        json!({"code_execution": {"allowed": true, "max_calls": 5}})
    );
    let v = tools_seen_by(&r, &key).await;
    assert_eq!(v["data"][0]["available"], true, "{v}");
}

#[tokio::test]
async fn calls_past_max_calls_reach_the_model_as_tool_errors_and_are_free() {
    let r = rig(|c| {
        c.set(
            "pricing",
            json!({"openai:gpt-4o-mini": {"input": 1, "output": 2},
                   "tollgate:web_search": {"input": 0.001, "output": 0}}),
        )
    })
    .await;
    let key = policy_key(&r, json!({"tools": {"web_search": {"max_calls": 1}}})).await;
    let b = body(
        "/v1/chat/completions",
        "openai:gpt-4o-mini",
        json!([{"type": "tollgate_web_search"}]),
    );
    // Turn 1: one search (runs); turn 2: two more (both over the cap); then the answer.
    let res = client()
        .post(format!("{}/v1/chat/completions", r.gw.url()))
        .bearer_auth(&key)
        .header("x-mock-tool-script", "web_search,web_search+web_search")
        .header("x-mock-usage", "100,10")
        .header("x-request-id", "loop-cap-1")
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("[tool error] call limit reached"), "{text}");
    assert_eq!(r.search.queries().len(), 1);
    let rows = rows_of(&r, "loop-cap-1", 3).await;
    let total: u64 = rows
        .iter()
        .map(|v| v["cost_micros"].as_u64().unwrap())
        .sum();
    // Three turns, one search billed.
    assert_eq!(total, 3 * (100 + 2 * 10) + 1000, "{rows:?}");
}

#[tokio::test]
async fn tool_policies_are_validated() {
    let r = rig(|c| c).await;
    for (fields, param) in [
        (json!({"tools": ["web_search"]}), "tools"),
        (json!({"tools": {"browser": {}}}), "tools.browser"),
        (
            json!({"tools": {"web_search": {"max_calls": -2}}}),
            "tools.web_search.max_calls",
        ),
        (
            json!({"tools": {"code_execution": {"allowed": "yes"}}}),
            "tools.code_execution.allowed",
        ),
    ] {
        for path in ["/v1/keys", "/v1/users"] {
            let mut f = fields.clone();
            if path == "/v1/users" {
                f["user_id"] = json!("bob");
            }
            let (status, v) =
                common::admin_call(&r.gw.url(), reqwest::Method::POST, path, Some(f)).await;
            assert_eq!(status, 400, "{path} {fields}: {v}");
            assert_eq!(v["error"]["param"], param, "{path}: {v}");
        }
    }
    // Stored and shown; null clears it.
    let (_, v) = common::admin_call(
        &r.gw.url(),
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"tools": {"web_search": {"max_calls": 3}}})),
    )
    .await;
    assert_eq!(
        v["tools"],
        json!({"web_search": {"allowed": true, "max_calls": 3}})
    );
    let id = v["id"].as_str().unwrap();
    let (_, v) = common::admin_call(
        &r.gw.url(),
        reqwest::Method::PATCH,
        &format!("/v1/keys/{id}"),
        Some(json!({"tools": null})),
    )
    .await;
    assert_eq!(v["tools"], Value::Null);
}

// ---- Citations (Anthropic clients) ----

#[tokio::test]
async fn anthropic_answers_cite_the_results_they_name() {
    let r = rig(|c| c).await;
    for model in ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4-6"] {
        // The mock's last turn repeats the search results (titles, URLs, text) it was given.
        let b = body("/v1/messages", model, claude_code_search());
        let res = post(
            &r,
            "/v1/messages",
            &b,
            &[("x-mock-tool-script", "web_search")],
        )
        .await;
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        let text = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|b| b["type"] == "text")
            .unwrap()
            .clone();
        let cites = text["citations"].as_array().expect("citations");
        let c = cites
            .iter()
            .find(|c| c["url"] == "https://docs.alpha.invalid/2")
            .unwrap_or_else(|| panic!("{model}: {v}"));
        assert_eq!(c["type"], "web_search_result_location");
        assert_eq!(c["title"], "Result 2 for tollgate mock search");
        assert!(c["encrypted_index"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(
            c["cited_text"]
                .as_str()
                .unwrap()
                .contains("search-result-marker-2"),
            "{c}"
        );
        // Every cited URL is in the text, and is one of the results shown.
        let shown = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "web_search_tool_result")
            .unwrap()["content"]
            .to_string();
        for c in cites {
            let url = c["url"].as_str().unwrap();
            assert!(text["text"].as_str().unwrap().contains(url));
            assert!(shown.contains(url));
        }
    }
    // Echoed citations never reach the provider.
    r.mock.clear();
    let mut b = body(
        "/v1/messages",
        "anthropic:claude-sonnet-4-6",
        claude_code_search(),
    );
    b["messages"] = json!([
        {"role": "user", "content": "find it"},
        {"role": "assistant", "content": [{"type": "text", "text": "See https://docs.alpha.invalid/2",
            "citations": [{"type": "web_search_result_location", "url": "https://docs.alpha.invalid/2",
                "title": "t", "encrypted_index": "x", "cited_text": "c"}]}]},
        {"role": "user", "content": "more"}
    ]);
    let res = post(&r, "/v1/messages", &b, &[]).await;
    assert_eq!(res.status(), 200);
    let sent = String::from_utf8_lossy(&r.mock.requests()[0].body).to_string();
    assert!(sent.contains("See https://docs.alpha.invalid/2"));
    assert!(!sent.contains("web_search_result_location"), "{sent}");
}

#[tokio::test]
async fn streamed_anthropic_answers_carry_citations_deltas() {
    let r = rig(|c| c).await;
    for model in ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4-6"] {
        let b = streamed(body("/v1/messages", model, claude_code_search()));
        let res = post(
            &r,
            "/v1/messages",
            &b,
            &[("x-mock-tool-script", "web_search")],
        )
        .await;
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        let evs = common::events(&text);
        let pos = evs
            .iter()
            .position(|(n, v)| {
                n == "content_block_delta"
                    && v["delta"]["type"] == "citations_delta"
                    && v["delta"]["citation"]["url"] == "https://docs.alpha.invalid/2"
            })
            .unwrap_or_else(|| panic!("{model}: {text}"));
        let (_, cite) = &evs[pos];
        let index = cite["index"].clone();
        let c = &cite["delta"]["citation"];
        assert_eq!(c["type"], "web_search_result_location");
        assert!(c["cited_text"]
            .as_str()
            .unwrap()
            .contains("search-result-marker-2"));
        // On a text block that is open: started before, stopped after.
        let start = evs
            .iter()
            .position(|(n, v)| n == "content_block_start" && v["index"] == index)
            .unwrap();
        assert_eq!(evs[start].1["content_block"]["type"], "text", "{text}");
        let stop = evs
            .iter()
            .position(|(n, v)| n == "content_block_stop" && v["index"] == index)
            .unwrap();
        assert!(start < pos && pos < stop, "{text}");
        assert_eq!(evs.last().unwrap().0, "message_stop");
    }
}

// ---- Failover inside the loop ----

/// `loopy`: two deployments, the rig's `openai` provider (first; on `r.mock`) and `b` (its
/// alternate, on a mock of its own).
async fn failover_rig() -> (Rig, MockServer) {
    let b = MockServer::start().await;
    let b_url = b.url();
    let r = rig(move |c| {
        c.provider(
            "b",
            json!({"kind": "openai", "base_url": format!("{b_url}/v1"), "api_key": "sk-b", "native_responses": false}),
        )
        .set(
            "deployments",
            json!({"loopy": [{"provider": "openai", "model": "gpt-4o-mini"},
                             {"provider": "b", "model": "gpt-4o-mini", "priority": 1}]}),
        )
    })
    .await;
    (r, b)
}

fn fail_next(m: &MockServer, times: Option<u32>) {
    m.set_default_fault(Some(mock_upstream::Fault {
        status: Some(503),
        times,
        ..Default::default()
    }));
}

#[tokio::test]
async fn each_turn_fails_over_to_the_routes_alternates() {
    let (r, b) = failover_rig().await;
    let tools = json!([{"type": "tollgate_web_search"}, {"type": "tollgate_code_execution"}]);
    // The first deployment fails the first turn only: that turn completes on the alternate,
    // the next ones start at the first deployment again.
    fail_next(&r.mock, Some(1));
    let res = post(
        &r,
        "/v1/chat/completions",
        &body("/v1/chat/completions", "loopy", tools.clone()),
        &[
            ("x-mock-tool-script", "web_search,code_execution"),
            ("x-request-id", "loop-failover-1"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-tollgate-tool-iterations"], "3");
    let v: Value = res.json().await.unwrap();
    assert!(
        answer_text("/v1/chat/completions", &v).contains("42 ok"),
        "{v}"
    );
    assert_eq!(b.requests().len(), 1, "the alternate served the first turn");
    assert_eq!(
        r.mock.requests().len(),
        3,
        "one failed attempt, then turns 2 and 3"
    );
    let mut rows = rows_of(&r, "loop-failover-1", 3).await;
    rows.sort_by_key(|v| v["tool_iteration"].as_u64());
    let providers: Vec<&str> = rows
        .iter()
        .map(|v| v["provider"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(providers, ["b", "openai", "openai"], "{rows:?}");

    // Streamed, with the first deployment failing every turn: the loop completes on the
    // alternate.
    r.mock.clear();
    b.clear();
    fail_next(&r.mock, None);
    let res = post(
        &r,
        "/v1/messages",
        &streamed(body("/v1/messages", "loopy", tools)),
        &[("x-mock-tool-script", "web_search,code_execution")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let evs = common::events(&text);
    assert_eq!(evs.last().unwrap().0, "message_stop", "{text}");
    assert!(!text.contains("event: error"), "{text}");
    assert!(text.contains("42 ok"), "{text}");
    assert_eq!(b.requests().len(), 3, "the alternate served every turn");
    r.mock.set_default_fault(None);
}

#[tokio::test]
async fn guardrails_and_the_tool_loop() {
    let r = rig(|c| {
        c.set(
            "guardrails",
            json!({"policies": {"out": [{"profile": "pii", "mode": "block", "on": ["output"]}]}}),
        )
    })
    .await;
    // The guardrail stage strips the gateway-only fields; the loop still reads its own.
    let mut b = body(
        "/v1/messages",
        "openai:gpt-4o-mini",
        json!([{"type": "tollgate_web_search"}]),
    );
    b["max_tool_iterations"] = json!(40);
    b["guardrails"] = json!([{"profile": "pii", "mode": "monitor"}]);
    let res = post(&r, "/v1/messages", &b, &[]).await;
    assert_eq!(res.status(), 422, "max_tool_iterations reached the loop");
    // A blocking output check cannot run on a loop yet: refused, never let through unchecked.
    b["max_tool_iterations"] = json!(3);
    b["guardrails"] = json!([{"profile": "pii", "mode": "block", "on": ["output"]}]);
    let res = post(&r, "/v1/messages", &b, &[]).await;
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("blocking output guardrails"),
        "{v}"
    );
    // Input-only guardrails run, and the loop goes on.
    b["guardrails"] = json!([{"profile": "pii", "mode": "block"}]);
    let res = post(
        &r,
        "/v1/messages",
        &b,
        &[("x-mock-tool-script", "web_search")],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-tollgate-guardrails"));
}
