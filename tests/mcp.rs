//! MCP: tollgate's MCP client (src/mcp/) against real MCP servers written with the official
//! Python SDK (tests/mcp_servers/servers.py), over Streamable HTTP and HTTP+SSE, on loopback.

mod common;

use common::{McpServers, MCP_TOKEN};
use std::time::Duration;
use tollgate::mcp::{connect, CallToolResult, McpError, Progress, ServerSpec, TransportKind};
use tollgate::outbound::HostPolicy;

const SECOND: Duration = Duration::from_secs(1);

fn spec(name: &str, url: String, transport: TransportKind) -> ServerSpec {
    let mut s = ServerSpec::new(name, &url, 10 * SECOND, 10 * SECOND);
    s.transport = transport;
    s
}

fn both(port: u16) -> [(TransportKind, String); 2] {
    [
        (TransportKind::StreamableHttp, McpServers::http_url(port)),
        (TransportKind::Sse, McpServers::sse_url(port)),
    ]
}

fn text(result: &CallToolResult) -> String {
    let v = serde_json::to_value(result).unwrap();
    v["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("")
}

fn args(v: serde_json::Value) -> Option<serde_json::Map<String, serde_json::Value>> {
    v.as_object().cloned()
}

#[tokio::test]
async fn lists_and_calls_tools_over_both_transports() {
    let servers = McpServers::start();
    for (transport, url) in both(servers.tools) {
        let session = connect(&spec("calc", url, transport), HostPolicy::LOOPBACK)
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        let mut names: Vec<String> = session
            .list_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["add", "count_slowly", "echo", "grow", "secret_word"],
            "{transport:?}"
        );
        let sum = session
            .call_tool("add", args(serde_json::json!({"a": 2, "b": 3})), None)
            .await
            .unwrap();
        assert_eq!(text(&sum), "5", "{transport:?}");
        assert_ne!(sum.is_error, Some(true));
        session.close().await;
    }
}

#[tokio::test]
async fn closing_a_streamable_session_deletes_it_on_the_server() {
    let servers = McpServers::start();
    let session = connect(
        &spec(
            "calc",
            McpServers::http_url(servers.tools),
            TransportKind::StreamableHttp,
        ),
        HostPolicy::LOOPBACK,
    )
    .await
    .unwrap();
    assert!(!servers.requests().contains("DELETE /mcp"));
    session.close().await;
    assert!(
        servers.saw("mcp-request tools DELETE /mcp"),
        "{}",
        servers.requests()
    );
}

#[tokio::test]
async fn allowed_tools_filter_the_list_and_the_calls() {
    let servers = McpServers::start();
    for (transport, url) in both(servers.tools) {
        let mut s = spec("calc", url, transport);
        s.allowed_tools = Some(vec!["echo".into(), "not_a_tool".into()]);
        let session = connect(&s, HostPolicy::LOOPBACK).await.unwrap();
        let names: Vec<String> = session
            .list_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(names, ["echo"], "{transport:?}");
        let err = session
            .call_tool("add", args(serde_json::json!({"a": 1, "b": 1})), None)
            .await
            .unwrap_err();
        assert!(matches!(err, McpError::NotAllowed { .. }), "{err}");
        let echoed = session
            .call_tool("echo", args(serde_json::json!({"text": "hi"})), None)
            .await
            .unwrap();
        assert_eq!(text(&echoed), "echo: hi");
        session.close().await;
    }
}

#[tokio::test]
async fn headers_reach_the_server_and_never_the_error_text() {
    let servers = McpServers::start();
    for (transport, url) in both(servers.auth) {
        // Without the token: refused by the server, a clear error.
        let err = connect(&spec("auth", url.clone(), transport), HostPolicy::LOOPBACK)
            .await
            .unwrap_err();
        assert!(matches!(err, McpError::Unreachable { .. }), "{err}");
        // A wrong token: refused, and the token is not in the message.
        let mut wrong = spec("auth", url.clone(), transport);
        wrong.headers.bearer("tok-wrong-0123456789").unwrap();
        let err = connect(&wrong, HostPolicy::LOOPBACK).await.unwrap_err();
        assert!(!err.to_string().contains("tok-wrong"), "{err}");
        assert!(!format!("{err:?}").contains("tok-wrong"), "{err:?}");
        // The right one.
        let mut right = spec("auth", url, transport);
        right.headers.bearer(MCP_TOKEN).unwrap();
        let session = connect(&right, HostPolicy::LOOPBACK)
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        let who = session.call_tool("whoami", None, None).await.unwrap();
        assert_eq!(text(&who), "authorized caller");
        assert!(!format!("{session:?}").contains(MCP_TOKEN));
        session.close().await;
    }
}

#[tokio::test]
async fn a_failing_tool_is_a_result_the_model_reads() {
    let servers = McpServers::start();
    for (transport, url) in both(servers.fail) {
        let session = connect(&spec("fail", url, transport), HostPolicy::LOOPBACK)
            .await
            .unwrap();
        let result = session.call_tool("boom", None, None).await.unwrap();
        assert_eq!(result.is_error, Some(true), "{transport:?}");
        assert!(
            text(&result).contains("failed on purpose"),
            "{}",
            text(&result)
        );
        session.close().await;
    }
}

#[tokio::test]
async fn a_slow_call_times_out() {
    let servers = McpServers::start();
    for (transport, url) in both(servers.slow) {
        let mut s = spec("slow", url, transport);
        s.call_timeout = Duration::from_millis(300);
        let session = connect(&s, HostPolicy::LOOPBACK).await.unwrap();
        let err = session
            .call_tool("nap", args(serde_json::json!({"seconds": 30})), None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                McpError::Timeout {
                    what: "tools/call",
                    ..
                }
            ),
            "{err}"
        );
        // The session still works after a cancelled call.
        let quick = session
            .call_tool("nap", args(serde_json::json!({"seconds": 0})), None)
            .await
            .unwrap();
        assert_eq!(text(&quick), "slept 0.0");
        session.close().await;
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_connecting() {
    // Accepts connections and says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    for (transport, url) in both(port) {
        let mut s = spec("silent", url, transport);
        s.connect_timeout = Duration::from_millis(500);
        let err = connect(&s, HostPolicy::LOOPBACK).await.unwrap_err();
        assert!(
            matches!(
                err,
                McpError::Timeout {
                    what: "connect",
                    ..
                }
            ),
            "{err}"
        );
    }
    drop(silent);
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    for (transport, url) in both(port) {
        let err = connect(&spec("gone", url, transport), HostPolicy::LOOPBACK)
            .await
            .unwrap_err();
        assert!(matches!(err, McpError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("\"gone\""), "{err}");
    }
}

#[tokio::test]
async fn inside_addresses_are_refused_by_the_policy() {
    let servers = McpServers::start();
    for (transport, url) in both(servers.tools) {
        let err = connect(&spec("calc", url, transport), HostPolicy::PUBLIC)
            .await
            .unwrap_err();
        assert!(matches!(err, McpError::Refused { .. }), "{err}");
    }
    // By name too.
    let url = format!("http://localhost:{}/mcp", servers.tools);
    let err = connect(
        &spec("calc", url, TransportKind::StreamableHttp),
        HostPolicy::PUBLIC,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, McpError::Refused { .. }), "{err}");
    assert!(!servers.requests().contains("mcp-request"));
}

#[tokio::test]
async fn progress_notifications_reach_the_callback() {
    let servers = McpServers::start();
    for (transport, url) in both(servers.tools) {
        let session = connect(&spec("calc", url, transport), HostPolicy::LOOPBACK)
            .await
            .unwrap();
        let mut seen: Vec<Progress> = Vec::new();
        let mut record = |p: Progress| seen.push(p);
        let done = session
            .call_tool(
                "count_slowly",
                args(serde_json::json!({"n": 3})),
                Some(&mut record),
            )
            .await
            .unwrap();
        assert_eq!(text(&done), "counted to 3");
        let steps: Vec<(f64, Option<f64>, Option<String>)> = seen
            .into_iter()
            .map(|p| (p.progress, p.total, p.message))
            .collect();
        assert_eq!(
            steps,
            (1..=3)
                .map(|i| (i as f64, Some(3.0), Some(format!("step {i}"))))
                .collect::<Vec<_>>(),
            "{transport:?}"
        );
        session.close().await;
    }
}

#[tokio::test]
async fn tools_list_changed_is_seen_and_the_new_tool_listed() {
    let servers = McpServers::start();
    for (i, (transport, url)) in both(servers.tools).into_iter().enumerate() {
        let session = connect(&spec("calc", url, transport), HostPolicy::LOOPBACK)
            .await
            .unwrap();
        let mut changed = session.tools_changed();
        let name = format!("sprout{i}");
        session
            .call_tool("grow", args(serde_json::json!({"name": name})), None)
            .await
            .unwrap();
        tokio::time::timeout(10 * SECOND, changed.changed())
            .await
            .expect("notifications/tools/list_changed arrives")
            .unwrap();
        let names: Vec<String> = session
            .list_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        assert!(names.contains(&name), "{transport:?}: {names:?}");
        session.close().await;
    }
}

// ---- MCP servers named in a request, run by the gateway's tool loop ----

use common::{client, events, Gateway, TestConfig};
use mock_upstream::MockServer;
use serde_json::{json, Value};

struct Rig {
    mock: MockServer,
    servers: McpServers,
    gw: Gateway,
    key: String,
}

/// A gateway with providers of every format on the mock (`openai`: Chat only, `oairesp`:
/// native Responses, `anthropic`, `gemini`) and the MCP test servers; MCP servers on
/// loopback are allowed unless `public_only`.
async fn rig(public_only: bool) -> Rig {
    let mock = MockServer::start().await;
    let servers = McpServers::start();
    let url = mock.url();
    let cfg = TestConfig::new(&url)
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
            json!({"mcp": {"allow_private_hosts": !public_only, "connect_timeout_ms": 5000, "call_timeout_ms": 1500}}),
        );
    let gw = Gateway::start_with(cfg.file());
    let key = gw.create_key("mcp").await;
    Rig {
        mock,
        servers,
        gw,
        key,
    }
}

const MESSAGES: &str = "/v1/messages";
const RESPONSES: &str = "/v1/responses";
const CHAT: &str = "/v1/chat/completions";

const MODELS: [&str; 4] = [
    "openai:gpt-4o-mini",
    "anthropic:claude-sonnet-4-6",
    "gemini:gemini-2.5-flash",
    "oairesp:gpt-4.1",
];

/// Whether the provider runs this client's MCP form itself (the request goes through).
fn native(path: &str, model: &str) -> bool {
    (path == MESSAGES && model.starts_with("anthropic:"))
        || (path == RESPONSES && model.starts_with("oairesp:"))
}

/// A server as the client's own form names it: `extra` is merged into the entry.
fn server(path: &str, name: &str, url: &str, extra: Value) -> Value {
    let mut entry = match path {
        RESPONSES => {
            json!({"type": "mcp", "server_label": name, "server_url": url, "require_approval": "never"})
        }
        MESSAGES => json!({"type": "url", "name": name, "url": url}),
        _ => json!({"name": name, "url": url}),
    };
    for (k, v) in extra.as_object().unwrap() {
        entry[k] = v.clone();
    }
    entry
}

fn request(path: &str, model: &str, servers: Vec<Value>, stream: bool) -> Value {
    match path {
        RESPONSES => {
            json!({"model": model, "input": "use the tool", "tools": servers, "stream": stream})
        }
        MESSAGES => {
            json!({"model": model, "max_tokens": 100, "mcp_servers": servers, "stream": stream,
                   "messages": [{"role": "user", "content": "use the tool"}]})
        }
        _ => {
            json!({"model": model, "mcp_servers": servers, "stream": stream,
                   "messages": [{"role": "user", "content": "use the tool"}]})
        }
    }
}

async fn post(r: &Rig, path: &str, body: &Value, script: &str) -> reqwest::Response {
    client()
        .post(format!("{}{path}", r.gw.url()))
        .bearer_auth(&r.key)
        .header("anthropic-beta", "mcp-client-2025-04-04")
        .header("x-mock-tool-script", script)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn format_of(path: &str) -> tollgate::translate::Format {
    match path {
        MESSAGES => tollgate::translate::Format::Anthropic,
        RESPONSES => tollgate::translate::Format::Responses,
        _ => tollgate::translate::Format::Chat,
    }
}

/// The offered function names in the first model turn the mock received.
fn offered(r: &Rig) -> Vec<String> {
    let first: Value = serde_json::from_slice(&r.mock.requests()[0].body).unwrap();
    let mut names: Vec<String> = first["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            t["name"]
                .as_str()
                .or(t["function"]["name"].as_str())
                .map(String::from)
        })
        .collect();
    // Gemini: functionDeclarations.
    for t in first["tools"].as_array().into_iter().flatten() {
        for d in t["functionDeclarations"].as_array().into_iter().flatten() {
            names.extend(d["name"].as_str().map(String::from));
        }
    }
    names
}

#[tokio::test]
async fn request_servers_on_every_client_and_provider_format() {
    let r = rig(false).await;
    let url = McpServers::http_url(r.servers.tools);
    for path in [CHAT, MESSAGES, RESPONSES] {
        for model in MODELS {
            r.mock.clear();
            let sent = request(
                path,
                model,
                vec![server(path, "calc", &url, json!({}))],
                false,
            );
            let res = post(&r, path, &sent, "mcp__calc__add").await;
            let status = res.status();
            let v: Value = res.json().await.unwrap();
            assert_eq!(status, 200, "{path} {model}: {v}");
            let first: Value = serde_json::from_slice(&r.mock.requests()[0].body).unwrap();
            if native(path, model) {
                // The provider runs MCP itself: the client's form reaches it untouched.
                match path {
                    MESSAGES => assert_eq!(first["mcp_servers"], sent["mcp_servers"], "{model}"),
                    _ => assert_eq!(first["tools"], sent["tools"], "{model}"),
                }
                assert_eq!(r.mock.requests().len(), 1, "{path} {model}");
                continue;
            }
            // tollgate ran it: the tool's result reached the model, in two turns.
            assert_eq!(r.mock.requests().len(), 2, "{path} {model}");
            assert!(
                first.get("mcp_servers").is_none(),
                "{path} {model}: {first}"
            );
            let names = offered(&r);
            for t in [
                "mcp__calc__add",
                "mcp__calc__echo",
                "mcp__calc__secret_word",
            ] {
                assert!(names.iter().any(|n| n == t), "{path} {model}: {names:?}");
            }
            let text = tollgate::tools::turns::text(&v, format_of(path));
            assert!(text.contains("Tool said: 5"), "{path} {model}: {v}");
            match path {
                MESSAGES => {
                    let blocks = v["content"].as_array().unwrap();
                    assert_eq!(blocks[0]["type"], "mcp_tool_use", "{model}: {v}");
                    assert_eq!(blocks[0]["name"], "add");
                    assert_eq!(blocks[0]["server_name"], "calc");
                    assert_eq!(blocks[0]["input"], json!({"a": 2, "b": 3}));
                    assert_eq!(blocks[1]["type"], "mcp_tool_result");
                    assert_eq!(blocks[1]["tool_use_id"], blocks[0]["id"]);
                    assert_eq!(blocks[1]["is_error"], false);
                    assert_eq!(blocks[1]["content"][0]["text"], "5");
                }
                RESPONSES => {
                    let out = v["output"].as_array().unwrap();
                    assert_eq!(out[0]["type"], "mcp_list_tools", "{model}: {v}");
                    assert_eq!(out[0]["server_label"], "calc");
                    assert!(out[0]["tools"].as_array().unwrap().len() >= 5);
                    assert_eq!(out[1]["type"], "mcp_call", "{model}: {v}");
                    assert_eq!(out[1]["name"], "add");
                    assert_eq!(out[1]["output"], "5");
                    assert_eq!(out[1]["status"], "completed");
                }
                _ => {
                    // Chat: hidden, as gateway tools are.
                    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
                    assert!(!v.to_string().contains("mcp__calc"), "{v}");
                }
            }
        }
    }
    // Every session was closed after its request.
    let opened = r.servers.requests().matches("POST /mcp").count();
    assert!(opened > 0);
    assert!(r.servers.saw("mcp-request tools DELETE /mcp"));
}

#[tokio::test]
async fn request_servers_in_streams() {
    let r = rig(false).await;
    let url = McpServers::http_url(r.servers.tools);
    for path in [CHAT, MESSAGES, RESPONSES] {
        for model in ["openai:gpt-4o-mini", "gemini:gemini-2.5-flash"] {
            r.mock.clear();
            let sent = request(
                path,
                model,
                vec![server(path, "calc", &url, json!({}))],
                true,
            );
            let res = post(&r, path, &sent, "mcp__calc__add").await;
            assert_eq!(res.status(), 200, "{path} {model}");
            let text = res.text().await.unwrap();
            let evs = events(&text);
            let mut said = String::new();
            for (_, d) in &evs {
                said.push_str(d["delta"]["text"].as_str().unwrap_or_default());
                said.push_str(
                    d["choices"][0]["delta"]["content"]
                        .as_str()
                        .unwrap_or_default(),
                );
                if d["type"] == "response.output_text.delta" {
                    said.push_str(d["delta"].as_str().unwrap_or_default());
                }
            }
            assert!(said.contains("Tool said: 5"), "{path} {model}: {text}");
            match path {
                MESSAGES => {
                    let starts: Vec<&str> = evs
                        .iter()
                        .filter(|(e, _)| e == "content_block_start")
                        .filter_map(|(_, d)| d["content_block"]["type"].as_str())
                        .collect();
                    assert_eq!(starts[..2], ["mcp_tool_use", "mcp_tool_result"], "{text}");
                    let result = evs
                        .iter()
                        .find(|(_, d)| d["content_block"]["type"] == "mcp_tool_result")
                        .unwrap();
                    assert_eq!(result.1["content_block"]["content"][0]["text"], "5");
                }
                RESPONSES => {
                    let done: Vec<&Value> = evs
                        .iter()
                        .filter(|(e, _)| e == "response.output_item.done")
                        .map(|(_, d)| &d["item"])
                        .collect();
                    assert_eq!(done[0]["type"], "mcp_list_tools", "{text}");
                    assert_eq!(done[1]["type"], "mcp_call", "{text}");
                    assert_eq!(done[1]["output"], "5");
                    let completed = evs
                        .iter()
                        .find(|(e, _)| e == "response.completed")
                        .expect("completed");
                    let kinds: Vec<&str> = completed.1["response"]["output"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|i| i["type"].as_str())
                        .collect();
                    assert_eq!(kinds[..2], ["mcp_list_tools", "mcp_call"], "{text}");
                }
                _ => assert!(!text.contains("mcp__calc"), "{text}"),
            }
        }
    }
}

#[tokio::test]
async fn allowed_tools_and_the_sse_transport() {
    let r = rig(false).await;
    let sse = McpServers::sse_url(r.servers.tools);
    // Anthropic's tool_configuration, Responses' allowed_tools, Otari's allowed_tools.
    for (path, extra) in [
        (
            MESSAGES,
            json!({"tool_configuration": {"enabled": true, "allowed_tools": ["echo"]}}),
        ),
        (RESPONSES, json!({"allowed_tools": ["echo"]})),
        (CHAT, json!({"allowed_tools": ["echo"]})),
    ] {
        r.mock.clear();
        let sent = request(
            path,
            "openai:gpt-4o-mini",
            vec![server(path, "calc", &sse, extra)],
            false,
        );
        // An HTTP+SSE server: Streamable HTTP is refused, tollgate falls back to SSE.
        let res = post(&r, path, &sent, "mcp__calc__echo").await;
        let status = res.status();
        let v: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(offered(&r), ["mcp__calc__echo"], "{path}");
        let text = tollgate::tools::turns::text(&v, format_of(path));
        assert!(
            text.contains("Tool said: echo: hello-from-mcp"),
            "{path}: {v}"
        );
    }
}

#[tokio::test]
async fn slow_failing_and_unreachable_servers() {
    let r = rig(false).await;
    // A call past its timeout: the model reads the error and answers.
    let slow = McpServers::http_url(r.servers.slow);
    let sent = request(
        MESSAGES,
        "openai:gpt-4o-mini",
        vec![server(MESSAGES, "slow", &slow, json!({}))],
        false,
    );
    let res = post(&r, MESSAGES, &sent, "mcp__slow__nap").await;
    let v: Value = res.json().await.unwrap();
    let text = tollgate::tools::turns::text(&v, format_of(MESSAGES));
    assert!(text.contains("timed out"), "{v}");
    assert_eq!(v["content"][1]["type"], "mcp_tool_result");
    assert_eq!(v["content"][1]["is_error"], true);
    // A tool that fails: its error is the result.
    let fail = McpServers::http_url(r.servers.fail);
    let sent = request(
        RESPONSES,
        "openai:gpt-4o-mini",
        vec![server(RESPONSES, "fail", &fail, json!({}))],
        false,
    );
    let res = post(&r, RESPONSES, &sent, "mcp__fail__boom").await;
    let v: Value = res.json().await.unwrap();
    let call = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "mcp_call")
        .unwrap()
        .clone();
    assert_eq!(call["status"], "failed", "{v}");
    assert!(
        call["error"]
            .as_str()
            .unwrap()
            .contains("failed on purpose"),
        "{v}"
    );
    // A server that cannot be reached: a 502 in the client's envelope, nothing sent.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!(
        "http://127.0.0.1:{}/mcp",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    for path in [CHAT, MESSAGES, RESPONSES] {
        for stream in [false, true] {
            r.mock.clear();
            let sent = request(
                path,
                "openai:gpt-4o-mini",
                vec![server(path, "gone", &gone, json!({}))],
                stream,
            );
            let res = post(&r, path, &sent, "mcp__gone__add").await;
            assert_eq!(res.status(), 502, "{path}");
            let v: Value = res.json().await.unwrap();
            let message = if path == MESSAGES {
                assert_eq!(v["type"], "error", "{v}");
                v["error"]["message"].as_str().unwrap().to_string()
            } else {
                v["error"]["message"].as_str().unwrap().to_string()
            };
            assert!(message.contains("\"gone\""), "{v}");
            assert!(r.mock.requests().is_empty());
        }
    }
}

#[tokio::test]
async fn tokens_reach_the_server_and_never_the_logs_or_errors() {
    let r = rig(false).await;
    let url = McpServers::http_url(r.servers.auth);
    let forms = [
        (MESSAGES, json!({"authorization_token": MCP_TOKEN})),
        (CHAT, json!({"authorization_token": MCP_TOKEN})),
        (
            RESPONSES,
            json!({"headers": {"Authorization": format!("Bearer {MCP_TOKEN}")}}),
        ),
    ];
    for (path, auth) in forms {
        let sent = request(
            path,
            "openai:gpt-4o-mini",
            vec![server(path, "auth", &url, auth)],
            false,
        );
        let res = post(&r, path, &sent, "mcp__auth__whoami").await;
        let v: Value = res.json().await.unwrap();
        let text = tollgate::tools::turns::text(&v, format_of(path));
        assert!(text.contains("Tool said: authorized caller"), "{path}: {v}");
    }
    // A wrong token: refused by the server; the error does not carry it.
    let wrong = "tok-wrong-secret-0123456789";
    let sent = request(
        MESSAGES,
        "openai:gpt-4o-mini",
        vec![server(
            MESSAGES,
            "auth",
            &url,
            json!({"authorization_token": wrong}),
        )],
        false,
    );
    let res = post(&r, MESSAGES, &sent, "mcp__auth__whoami").await;
    assert_eq!(res.status(), 502);
    let body = res.text().await.unwrap();
    assert!(!body.contains(wrong), "{body}");
    let logs = r.gw.stderr_text() + &r.gw.stdout_text();
    assert!(!logs.contains(wrong) && !logs.contains(MCP_TOKEN), "{logs}");
}

#[tokio::test]
async fn refusals_in_the_native_envelope() {
    let r = rig(true).await;
    let url = McpServers::http_url(r.servers.tools);
    // Loopback is not allowed by default: the URL is refused before connecting.
    for path in [CHAT, MESSAGES, RESPONSES] {
        let sent = request(
            path,
            "openai:gpt-4o-mini",
            vec![server(path, "calc", &url, json!({}))],
            false,
        );
        let res = post(&r, path, &sent, "mcp__calc__add").await;
        assert_eq!(res.status(), 400, "{path}");
        let v: Value = res.json().await.unwrap();
        assert!(v.to_string().contains("loopback"), "{path}: {v}");
    }
    assert!(!r.servers.requests().contains("mcp-request"));
    // require_approval other than never, on a translated route.
    let sent = request(
        RESPONSES,
        "openai:gpt-4o-mini",
        vec![server(
            RESPONSES,
            "calc",
            &url,
            json!({"require_approval": "always"}),
        )],
        false,
    );
    let res = post(&r, RESPONSES, &sent, "").await;
    assert_eq!(res.status(), 400);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["param"], "tools[0].require_approval", "{v}");
    assert!(r.mock.requests().is_empty());
}
