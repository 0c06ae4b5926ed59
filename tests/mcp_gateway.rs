//! tollgate's own MCP endpoint, `/mcp`, with MCP servers registered in the config and through
//! `/v1/mcp/servers`: the real binary, sled on disk, the real Python MCP servers of
//! tests/mcp_servers (official SDK). What a key may see and call, rate limits, prices billed,
//! tollgate's credentials (a static header, OAuth client credentials with refresh), progress
//! relayed, tool-list changes, usage rows and metrics, and no secret in any answer or log.
//! Registered servers named by id in a request, whose calls in the tool loop are governed
//! the same way (rate limits, price per call, metrics).

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One JSON-RPC request to `/mcp` with `key`: the HTTP status and the messages of the answer
/// (one JSON body, or every `data:` event of an SSE stream).
async fn rpc(gw: &Gateway, key: &str, method: &str, params: Value) -> (u16, Vec<Value>) {
    let r = client()
        .post(format!("{}/mcp", gw.url()))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let sse = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let messages = if sse {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    } else {
        serde_json::from_str(&text).into_iter().collect()
    };
    (status, messages)
}

/// The final JSON-RPC answer (the message with the request's id).
fn answer(messages: &[Value]) -> Value {
    messages
        .iter()
        .find(|m| m.get("id").is_some())
        .cloned()
        .unwrap_or_else(|| panic!("no answer in {messages:?}"))
}

async fn tool_names(gw: &Gateway, key: &str) -> Vec<String> {
    let (status, m) = rpc(gw, key, "tools/list", json!({})).await;
    assert_eq!(status, 200, "{m:?}");
    let mut names: Vec<String> = answer(&m)["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{m:?}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

async fn call(gw: &Gateway, key: &str, tool: &str, args: Value) -> Value {
    let (status, m) = rpc(
        gw,
        key,
        "tools/call",
        json!({"name": tool, "arguments": args}),
    )
    .await;
    assert_eq!(status, 200, "{m:?}");
    answer(&m)
}

fn text_of(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {answer}"))
        .to_string()
}

async fn key_with(gw: &Gateway, name: &str, mcp: Value) -> String {
    let (status, v) = admin_call(
        &gw.url(),
        Method::POST,
        "/v1/keys",
        Some(json!({"name": name, "mcp": mcp})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    for (server, grant) in mcp.as_object().unwrap() {
        assert_eq!(
            v["mcp"][server]["tools"],
            grant.get("tools").cloned().unwrap_or(json!(["*"]))
        );
    }
    v["key"].as_str().unwrap().to_string()
}

/// MCP usage rows (`endpoint: mcp`) once at least `n` are written.
async fn mcp_rows(gw: &Gateway, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let rows: Vec<Value> = usage_rows(gw)
            .await
            .into_iter()
            .filter(|r| r["endpoint"] == "mcp")
            .collect();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} MCP usage rows were written");
}

fn config(servers: &McpServers) -> TestConfig {
    TestConfig::empty()
        .set(
            "mcp_servers",
            json!([
                {"name": "tools", "url": McpServers::http_url(servers.tools),
                 "description": "Test tools", "price_per_call": "0.002"},
                {"name": "auth", "url": McpServers::http_url(servers.auth),
                 "auth": {"type": "header", "name": "Authorization", "value": format!("Bearer {MCP_TOKEN}")}},
            ]),
        )
        .set("mcp_gateway", json!({"tools_ttl_secs": 3600}))
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_servers_through_the_mcp_endpoint() {
    let servers = McpServers::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = Gateway::spawn_in(tmp.path(), config(&servers).file(), &[]);
    let url = gw.url();

    // Registration: the config's servers are listed read-only, the API adds stored ones.
    let (status, v) = admin_call(
        &url,
        Method::POST,
        "/v1/mcp/servers",
        Some(
            json!({"name": "fail", "url": McpServers::http_url(servers.fail),
                    "description": "Always fails", "call_timeout_ms": 5000}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["source"], "api");
    let (_, list) = admin_call(&url, Method::GET, "/v1/mcp/servers", None).await;
    let ids: Vec<(&str, &str)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [("auth", "config"), ("fail", "api"), ("tools", "config")]
    );
    let (_, auth) = admin_call(&url, Method::GET, "/v1/mcp/servers/auth", None).await;
    assert_eq!(
        auth["auth"],
        json!({"type": "header", "name": "Authorization", "value_set": true})
    );
    assert!(!list.to_string().contains(MCP_TOKEN) && !auth.to_string().contains(MCP_TOKEN));
    let (_, tools) = admin_call(&url, Method::GET, "/v1/mcp/servers/tools", None).await;
    assert_eq!(tools["price_per_call"], "0.002");
    for (method, body) in [
        (Method::PATCH, Some(json!({"description": "x"}))),
        (Method::DELETE, None),
    ] {
        let (status, v) = admin_call(&url, method, "/v1/mcp/servers/tools", body).await;
        assert_eq!(status, 403, "config servers are read-only: {v}");
    }
    let (status, _) = admin_call(
        &url,
        Method::POST,
        "/v1/mcp/servers",
        Some(json!({"name": "fail", "url": "http://127.0.0.1:1/mcp"})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, v) = admin_call(
        &url,
        Method::POST,
        "/v1/mcp/servers",
        Some(json!({"name": "slow", "url": McpServers::http_url(servers.slow), "call_timeout_ms": 300})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = admin_call(
        &url,
        Method::POST,
        "/v1/mcp/servers",
        Some(json!({"name": "bad__name", "url": "http://127.0.0.1:1/mcp"})),
    )
    .await;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("name")));

    // Permissions: servers and tools (wildcards) per key; a key with no policy sees nothing.
    let key = key_with(
        &gw,
        "dev",
        json!({
            "tools": {"tools": ["add", "echo", "count_*", "grow", "grown*"],
                      "rate_limits": {"echo": 2}},
            "auth": {"tools": ["*"]},
            "fail": {"tools": ["*"]},
            "slow": {},
        }),
    )
    .await;
    let bare = gw.create_key("no-mcp").await;
    assert_eq!(tool_names(&gw, &bare).await, Vec::<String>::new());
    assert_eq!(
        tool_names(&gw, &key).await,
        [
            "auth__whoami",
            "fail__boom",
            "slow__nap",
            "tools__add",
            "tools__count_slowly",
            "tools__echo",
            "tools__grow"
        ]
    );
    // Neither listed nor callable: a forbidden tool, an unknown one, an unknown server.
    for name in ["tools__secret_word", "tools__nope", "other__add", "add"] {
        let a = call(&gw, &key, name, json!({})).await;
        assert_eq!(a["error"]["code"], -32602, "{name}: {a}");
        assert!(
            a["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Unknown tool"),
            "{a}"
        );
    }
    let a = call(&gw, &bare, "tools__add", json!({"a": 1, "b": 2})).await;
    assert_eq!(a["error"]["code"], -32602, "{a}");
    // A virtual key is needed at all.
    let r = client()
        .post(format!("{url}/mcp"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Calls go through with tollgate's credential (the auth server takes only its token).
    assert_eq!(
        text_of(&call(&gw, &key, "tools__add", json!({"a": 2, "b": 3})).await),
        "5"
    );
    assert_eq!(
        text_of(&call(&gw, &key, "auth__whoami", json!({})).await),
        "authorized caller"
    );
    let boom = call(&gw, &key, "fail__boom", json!({})).await;
    assert_eq!(boom["result"]["isError"], true, "{boom}");

    // A call past the server's timeout: a JSON-RPC error, recorded as 504.
    let nap = call(&gw, &key, "slow__nap", json!({"seconds": 10})).await;
    assert!(
        nap["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{nap}"
    );

    // Rate limit: two echo calls a minute for this key.
    for i in 0..2 {
        let a = call(&gw, &key, "tools__echo", json!({"text": format!("hi {i}")})).await;
        assert_eq!(text_of(&a), format!("echo: hi {i}"));
    }
    let limited = call(&gw, &key, "tools__echo", json!({"text": "again"})).await;
    assert!(
        limited["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Rate limit"),
        "{limited}"
    );

    // Progress notifications are relayed, under the caller's token, before the result.
    let (status, m) = rpc(
        &gw,
        &key,
        "tools/call",
        json!({"name": "tools__count_slowly", "arguments": {"n": 3},
               "_meta": {"progressToken": "p-1"}}),
    )
    .await;
    assert_eq!(status, 200);
    let progress: Vec<&Value> = m
        .iter()
        .filter(|x| x["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{m:?}");
    assert!(progress
        .iter()
        .all(|p| p["params"]["progressToken"] == "p-1"));
    assert_eq!(progress[2]["params"]["progress"], 3.0);
    assert_eq!(progress[2]["params"]["message"], "step 3");
    assert_eq!(text_of(m.last().unwrap()), "counted to 3");

    // The tool list is cached (TTL one hour) and refreshed on tools/list_changed.
    let grew = call(&gw, &key, "tools__grow", json!({"name": "grown_one"})).await;
    assert_eq!(text_of(&grew), "added grown_one");
    let mut listed = false;
    for _ in 0..100 {
        if tool_names(&gw, &key)
            .await
            .contains(&"tools__grown_one".to_string())
        {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listed,
        "the list_changed notification refreshed the cached tool list"
    );
    assert_eq!(
        text_of(&call(&gw, &key, "tools__grown_one", json!({})).await),
        "grown_one grown"
    );

    // Usage rows: one per call that reached the permission check; billed at the price.
    let rows = mcp_rows(&gw, 10).await;
    let row = |tool: &str| -> Vec<&Value> { rows.iter().filter(|r| r["model"] == tool).collect() };
    let add = row("add")[0];
    assert_eq!(add["provider"], "tools");
    assert_eq!(add["status"], 200);
    assert_eq!(add["cost_micros"], 2000);
    assert!(add["response_bytes"].as_u64().unwrap() > 0);
    assert!(add["latency_ms"].is_u64());
    let echo = row("echo");
    assert_eq!(echo.len(), 3);
    assert_eq!(echo.iter().filter(|r| r["status"] == 429).count(), 1);
    assert!(echo.iter().all(|r| r.get("key_id").is_some()));
    let boom = row("boom")[0];
    assert_eq!(
        (boom["provider"].as_str(), boom["status"].as_u64()),
        (Some("fail"), Some(200))
    );
    assert_eq!(boom["cost_micros"], 0, "a failed tool is free: {boom}");
    assert_eq!(row("whoami")[0]["cost_micros"], 0, "auth has no price");
    assert_eq!(row("nap")[0]["status"], 504);
    let billed: u64 = rows.iter().filter_map(|r| r["cost_micros"].as_u64()).sum();
    // add, two echoes, count_slowly, grow, grown_one at 0.002 each.
    assert_eq!(billed, 6 * 2000);
    let (_, info) = admin_call(&url, Method::GET, "/v1/keys", None).await;
    assert!(!info.to_string().contains(MCP_TOKEN));

    // Metrics: bounded series by server and outcome, no secret.
    let metrics = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"tollgate_mcp_calls_total{outcome="ok",server="tools"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tollgate_mcp_calls_total{outcome="rate_limited",server="tools"}"#));
    assert!(metrics.contains(r#"tollgate_mcp_calls_total{outcome="tool_error",server="fail"}"#));
    assert!(metrics.contains(r#"tollgate_mcp_calls_total{outcome="timeout",server="slow"}"#));
    assert!(metrics.contains("tollgate_mcp_call_duration_seconds_bucket"));
    assert!(!metrics.contains(MCP_TOKEN));

    // Registrations persist across a restart; the key was never forwarded.
    gw.stop();
    let gw = Gateway::spawn_in(tmp.path(), config(&servers).file(), &[]);
    let (_, list) = admin_call(&gw.url(), Method::GET, "/v1/mcp/servers/fail", None).await;
    assert_eq!(list["source"], "api");
    assert_eq!(list["call_timeout_ms"], 5000);
    assert_eq!(
        text_of(&call(&gw, &key, "tools__add", json!({"a": 1, "b": 1})).await),
        "2"
    );
    let logs = gw.stderr_text() + &gw.stdout_text();
    assert!(!logs.contains(MCP_TOKEN), "a credential in the logs");
    assert!(!logs.contains(&key), "a key in the logs");
}

/// The OAuth test server (tests/mcp_servers/oauth_server.py): token endpoint and MCP server.
struct OauthServer {
    child: Child,
    port: u16,
}

impl OauthServer {
    fn start(expires_in: u64) -> OauthServer {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(root.join("tests/clients/.venv/bin/python"))
            .arg(root.join("tests/mcp_servers/oauth_server.py"))
            .args(["--expires-in", &expires_in.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the OAuth MCP test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("oauth server listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        OauthServer { child, port }
    }

    fn registration(&self, name: &str) -> Value {
        json!({
            "name": name,
            "url": format!("http://127.0.0.1:{}/mcp", self.port),
            "auth": {"type": "oauth", "token_url": format!("http://127.0.0.1:{}/token", self.port),
                     "client_id": "tollgate-client", "client_secret": "tollgate-secret"},
        })
    }

    async fn post(&self, path: &str) -> Value {
        let r = client()
            .post(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn stats(&self) -> Value {
        let r = client()
            .get(format!("http://127.0.0.1:{}/stats", self.port))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }
}

impl Drop for OauthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_client_credentials_are_fetched_and_refreshed() {
    let long = OauthServer::start(3600);
    let short = OauthServer::start(1);
    let gw = Gateway::start_with(TestConfig::empty().file());
    // One through the API, one with the `tollgate mcp-servers` command.
    let (status, v) = admin_call(
        &gw.url(),
        Method::POST,
        "/v1/mcp/servers",
        Some(long.registration("crm")),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let erp = short.registration("erp");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "mcp-servers",
            "create",
            "--name",
            "erp",
            "--json",
            "--server-url",
        ])
        .arg(erp["url"].as_str().unwrap())
        .arg("--auth")
        .arg(erp["auth"].to_string())
        .env("TOLLGATE_URL", gw.url())
        .env("TOLLGATE_MASTER_KEY", MASTER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], "erp");
    for name in ["crm", "erp"] {
        let (_, v) = admin_call(
            &gw.url(),
            Method::GET,
            &format!("/v1/mcp/servers/{name}"),
            None,
        )
        .await;
        assert_eq!(v["auth"]["client_secret_set"], true, "{v}");
        assert!(!v.to_string().contains("tollgate-secret"));
    }
    let key = key_with(&gw, "ops", json!({"crm": {}, "erp": {}})).await;

    // A token is fetched once and reused while it is valid.
    let who = call(&gw, &key, "crm__whoami", json!({})).await;
    assert_eq!(text_of(&who), "caller with token tok-1");
    let who = call(&gw, &key, "crm__whoami", json!({})).await;
    assert_eq!(text_of(&who), "caller with token tok-1");
    assert_eq!(long.stats().await["issued"], 1);
    // The server stops accepting it (as when it expired there): the 401 makes tollgate fetch
    // a new one and call again.
    long.post("/revoke").await;
    let who = call(&gw, &key, "crm__whoami", json!({})).await;
    assert_eq!(text_of(&who), "caller with token tok-2");
    assert_eq!(long.stats().await["issued"], 2);

    // A token about to expire is replaced before it is used: never refused.
    for n in 1..=2 {
        let who = call(&gw, &key, "erp__whoami", json!({})).await;
        assert_eq!(text_of(&who), format!("caller with token tok-{n}"));
    }
    let stats = short.stats().await;
    assert_eq!(stats["refused"], 0, "{stats}");

    let logs = gw.stderr_text() + &gw.stdout_text();
    assert!(!logs.contains("tollgate-secret") && !logs.contains("tok-1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn registered_servers_named_by_id_in_a_request() {
    let mock = mock_upstream::MockServer::start().await;
    let servers = McpServers::start();
    let cfg = TestConfig::new(&mock.url()).set(
        "mcp_servers",
        json!([
            {"name": "tools", "url": McpServers::http_url(servers.tools)},
            {"name": "auth", "url": McpServers::http_url(servers.auth),
             "auth": {"type": "header", "name": "Authorization", "value": format!("Bearer {MCP_TOKEN}")}},
        ]),
    );
    let gw = Gateway::start_with(cfg.file());
    let key = key_with(
        &gw,
        "loop",
        json!({"tools": {"tools": ["add", "secret_*"]}, "auth": {}}),
    )
    .await;
    let post = |ids: Value, script: &'static str, key: String| {
        let url = gw.url();
        async move {
            client()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .header("x-mock-tool-script", script)
                .json(&json!({"model": "gpt-4o-mini", "mcp_server_ids": ids,
                              "messages": [{"role": "user", "content": "use the tool"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    // The allowed tools are offered and run with tollgate's credential; the answer uses them.
    let r = post(
        json!(["tools", "auth"]),
        "mcp__tools__secret_word",
        key.clone(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("PAPAYA-42"), "{v}");
    let first: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    let mut offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    offered.sort();
    assert_eq!(
        offered,
        [
            "mcp__auth__whoami",
            "mcp__tools__add",
            "mcp__tools__secret_word"
        ]
    );
    assert!(!String::from_utf8_lossy(&mock.requests()[0].body).contains("mcp_server_ids"));
    mock.clear();
    let r = post(json!(["auth"]), "mcp__auth__whoami", key.clone()).await;
    let v: Value = r.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("authorized caller"));
    // A server the key may not use, or that does not exist: refused before any model call.
    let bare = gw.create_key("none").await;
    for (ids, key) in [
        (json!(["tools"]), bare.clone()),
        (json!(["nope"]), key.clone()),
        (json!("tools"), key.clone()),
    ] {
        mock.clear();
        let r = post(ids.clone(), "mcp__tools__add", key).await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert!(status == 403 || status == 400, "{ids}: {status} {v}");
        assert_eq!(v["error"]["param"], "mcp_server_ids", "{v}");
        assert!(mock.requests().is_empty());
    }
}

/// The usage rows of one request (a tool loop writes one per turn) once `n` are written,
/// in turn order.
async fn rows_of(gw: &Gateway, request_id: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let mut rows: Vec<Value> = usage_rows(gw)
            .await
            .into_iter()
            .filter(|v| v["request_id"] == request_id)
            .collect();
        if rows.len() >= n {
            rows.sort_by_key(|v| v["tool_iteration"].as_u64());
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {n} usage rows for {request_id}");
}

fn field(rows: &[Value], name: &str) -> Vec<u64> {
    rows.iter().map(|v| v[name].as_u64().unwrap_or(0)).collect()
}

/// How many calls of `tool` the `tools` server ran (its `mcp-tool NAME` log lines).
fn tool_calls_seen(servers: &McpServers, tool: &str) -> usize {
    let line = format!("mcp-tool {tool}\n");
    assert!(servers.saw(&line), "{}", servers.requests());
    // The log is read by a thread: let any line still on its way land.
    std::thread::sleep(Duration::from_millis(300));
    servers.requests().matches(&line).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn loop_calls_to_registered_servers_are_rate_limited_priced_and_counted() {
    let mock = mock_upstream::MockServer::start().await;
    let servers = McpServers::start();
    let cfg = TestConfig::new(&mock.url())
        .pricing("openai:gpt-4o-mini", 1, 2)
        .set(
            "mcp_servers",
            json!([{"name": "tools", "url": McpServers::http_url(servers.tools),
                    "price_per_call": "0.002"}]),
        )
        .set("tools", json!({"mcp": {"allow_private_hosts": true}}));
    let gw = Gateway::start_with(cfg.file());
    let (status, k) = admin_call(
        &gw.url(),
        Method::POST,
        "/v1/keys",
        Some(
            json!({"name": "loop", "mcp": {"tools": {"tools": ["secret_word", "add"],
                                                      "rate_limits": {"secret_word": 1}}}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    let key_id = k["id"].as_str().unwrap().to_string();
    let post = |extra: Value, script: &'static str, request_id: &'static str| {
        let (url, key) = (gw.url(), key.clone());
        async move {
            let mut body = json!({"model": "gpt-4o-mini",
                                  "messages": [{"role": "user", "content": "use the tool"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let r = client()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .header("x-mock-tool-script", script)
                .header("x-mock-usage", "100,10")
                .header("x-request-id", request_id)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{request_id}");
            r.json::<Value>().await.unwrap()
        }
    };
    // Every turn costs 100 + 2 * 10 micro-dollars of model usage.
    let turn = 100 + 2 * 10;
    let ids = json!({"mcp_server_ids": ["tools"]});

    // A limit of one call per minute, and a model that calls the tool twice in one turn: the
    // first runs, the second is a tool error the model reads in the next turn.
    post(
        ids.clone(),
        "mcp__tools__secret_word+mcp__tools__secret_word",
        "mcp-loop-limited",
    )
    .await;
    let turns = mock.requests();
    assert_eq!(turns.len(), 2);
    let next: Value = serde_json::from_slice(&turns[1].body).unwrap();
    let results: Vec<(&str, &str)> = next["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(results.len(), 2, "{next}");
    assert_eq!(results[0].0, "call_mock_1");
    assert!(results[0].1.contains("PAPAYA-42"), "{results:?}");
    assert_eq!(results[1].0, "call_mock_2");
    assert!(
        results[1]
            .1
            .starts_with("[tool error] rate limit of tool 'secret_word' on the MCP server 'tools' reached: retry in "),
        "{results:?}"
    );
    assert_eq!(tool_calls_seen(&servers, "secret_word"), 1);
    // Billed: the call that ran, at the server's price; the refused one is free.
    let rows = rows_of(&gw, "mcp-loop-limited", 2).await;
    assert_eq!(field(&rows, "cost_micros"), [turn + 2000, turn], "{rows:?}");
    assert_eq!(field(&rows, "tool_calls"), [2, 0], "{rows:?}");

    // Two successful calls in a turn: the price twice.
    post(
        ids.clone(),
        "mcp__tools__add+mcp__tools__add",
        "mcp-loop-priced",
    )
    .await;
    assert_eq!(tool_calls_seen(&servers, "add"), 2);
    let rows = rows_of(&gw, "mcp-loop-priced", 2).await;
    assert_eq!(field(&rows, "cost_micros"), [turn + 4000, turn], "{rows:?}");

    // The same server named by URL in the request: tollgate does not price it.
    mock.clear();
    let named =
        json!({"mcp_servers": [{"name": "direct", "url": McpServers::http_url(servers.tools)}]});
    post(named, "mcp__direct__add", "mcp-loop-url").await;
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(tool_calls_seen(&servers, "add"), 3);
    let rows = rows_of(&gw, "mcp-loop-url", 2).await;
    assert_eq!(field(&rows, "cost_micros"), [turn, turn], "{rows:?}");

    // The key's spend: every turn, and the three calls that ran on the registered server.
    let expected = 6 * turn + 3 * 2000;
    let mut spend = 0;
    for _ in 0..100 {
        let (_, info) =
            admin_call(&gw.url(), Method::GET, &format!("/v1/keys/{key_id}"), None).await;
        let usd: f64 = info["standing"]["spend"].as_str().unwrap().parse().unwrap();
        spend = (usd * 1e6).round() as u64;
        if spend == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spend, expected);

    // Counted in the MCP series as calls through /mcp are; the URL-named server is not.
    let metrics = client()
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"tollgate_mcp_calls_total{outcome="ok",server="tools"} 3"#,
        r#"tollgate_mcp_calls_total{outcome="rate_limited",server="tools"} 1"#,
        r#"tollgate_mcp_call_duration_seconds_count{server="tools"} 4"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    assert!(!metrics.contains(r#"server="direct""#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_registered_on_one_instance_serve_on_another() {
    let Some(url) = pg_url() else {
        return;
    };
    let servers = McpServers::start();
    let n = std::process::id();
    let schema = format!("t_mcpg_{n}_{}", free_port());
    let cfg = TestConfig::empty()
        .postgres(&url, &schema, json!({"sync_interval_ms": 100}))
        .file();
    let a = Gateway::start_with(cfg.clone());
    let b = Gateway::start_with(cfg);
    let (status, v) = admin_call(
        &a.url(),
        Method::POST,
        "/v1/mcp/servers",
        Some(
            json!({"name": "tools", "url": McpServers::http_url(servers.tools),
                    "auth": {"type": "header", "name": "X-Api-Key", "value": "not-shown"}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let key = key_with(&a, "shared", json!({"tools": {"tools": ["add"]}})).await;
    // The other instance follows the change feed: the server, then the call through it.
    let mut seen = false;
    for _ in 0..100 {
        let (status, v) = admin_call(&b.url(), Method::GET, "/v1/mcp/servers/tools", None).await;
        if status == 200 {
            assert_eq!(v["auth"]["value_set"], true);
            assert!(!v.to_string().contains("not-shown"));
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "instance b never saw the server registered on a");
    let mut answered = Value::Null;
    for _ in 0..100 {
        // (the key is followed too: 401 until it arrives)
        let (status, m) = rpc(
            &b,
            &key,
            "tools/call",
            json!({"name": "tools__add", "arguments": {"a": 20, "b": 22}}),
        )
        .await;
        if status == 200 && answer(&m).get("result").is_some() {
            answered = answer(&m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(text_of(&answered), "42");
    // Deleted on b: gone on a too.
    let (status, _) = admin_call(&b.url(), Method::DELETE, "/v1/mcp/servers/tools", None).await;
    assert_eq!(status, 200);
    let mut gone = false;
    for _ in 0..100 {
        let (status, _) = admin_call(&a.url(), Method::GET, "/v1/mcp/servers/tools", None).await;
        if status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone);
}
