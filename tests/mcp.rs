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
