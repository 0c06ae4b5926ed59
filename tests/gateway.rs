//! End-to-end tests of the real tollgate binary against the mock upstream, on loopback.

mod common;

use common::*;
use futures_util::StreamExt;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn setup() -> (MockServer, Gateway) {
    setup_with(|c, _| c).await
}

/// Starts a mock and a gateway; `more` adds to the config (it gets the mock's URL).
async fn setup_with(more: impl FnOnce(TestConfig, &str) -> TestConfig) -> (MockServer, Gateway) {
    let mock = MockServer::start().await;
    let url = mock.url();
    let cfg = more(TestConfig::new(&url), &url);
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    (mock, gw)
}

async fn post(gw: &Gateway, path: &str, auth: (&str, &str), body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{}", gw.url(), path))
        .header(auth.0, auth.1)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_auth_header_forms_work_on_every_endpoint_and_the_key_never_reaches_upstream() {
    let (mock, gw) = setup().await;
    let key = gw.create_key("t").await;
    let bearer = format!("Bearer {key}");
    for (path, body) in [
        ("/v1/chat/completions", chat("gpt-4o-mini", false)),
        ("/v1/messages", messages("claude-sonnet-4-6", false)),
    ] {
        for auth in [
            ("authorization", bearer.as_str()),
            ("x-api-key", key.as_str()),
        ] {
            let r = post(&gw, path, auth, &body).await;
            assert_eq!(r.status(), 200, "{path} with {}", auth.0);
        }
    }
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 4);
    for r in &reqs {
        let all = format!("{:?}", r.headers);
        assert!(!all.contains(&key), "virtual key leaked upstream: {all}");
        if r.path.ends_with("/chat/completions") {
            assert_eq!(
                r.header("authorization"),
                Some("Bearer sk-openai-provider-key")
            );
            assert_eq!(r.header("x-api-key"), None);
        } else {
            assert_eq!(r.header("x-api-key"), Some("sk-ant-provider-key"));
            assert_eq!(r.header("authorization"), None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_wrong_keys_get_401_in_the_endpoint_dialect() {
    let (mock, gw) = setup().await;
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Missing API key"));

    let r = post(
        &gw,
        "/v1/messages",
        ("x-api-key", "tg-not-a-real-key"),
        &messages("claude-x", false),
    )
    .await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    // The master key is for management only.
    let r = post(
        &gw,
        "/v1/chat/completions",
        ("authorization", &format!("Bearer {MASTER}")),
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(r.status(), 401);
    // Management refuses virtual keys.
    let key = gw.create_key("t").await;
    let r = client()
        .get(format!("{}/v1/keys", gw.url()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_string_beta_headers_and_selectors_are_forwarded_correctly() {
    let (mock, gw) = setup().await;
    let key = gw.create_key("t").await;
    let r = client()
        .post(format!("{}/v1/messages?beta=true", gw.url()))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .header("x-claude-code-session-id", "sess-1")
        .json(&messages("anthropic:claude-opus-4-8", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-request-id").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    let up = &mock.requests()[0];
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.query.as_deref(), Some("beta=true"));
    assert_eq!(
        up.header("anthropic-beta"),
        Some("claude-code-20250219,interleaved-thinking-2025-05-14")
    );
    assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(up.header("x-claude-code-session-id"), Some("sess-1"));
    assert_eq!(
        up.json()["model"],
        "claude-opus-4-8",
        "the provider prefix is stripped"
    );

    let r = post(
        &gw,
        "/v1/chat/completions",
        ("authorization", &format!("Bearer {key}")),
        &chat("openai/gpt-4.1", false),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(mock.requests()[1].json()["model"], "gpt-4.1");
    assert_eq!(mock.requests()[1].path, "/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_arrive_incrementally_before_the_upstream_finishes() {
    let (mock, gw) = setup().await;
    let key = gw.create_key("t").await;
    for (path, body) in [
        ("/v1/chat/completions", chat("gpt-4o-mini", true)),
        ("/v1/messages", messages("claude-x", true)),
    ] {
        mock.clear();
        let sent = Instant::now();
        let r = client()
            .post(format!("{}{}", gw.url(), path))
            .header("x-api-key", &key)
            .header("x-mock-chunk-delay-ms", "100")
            .header("x-mock-pieces", "8")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut stream = r.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        let first_at = Instant::now();
        assert!(!first.is_empty());
        let mut all = first.to_vec();
        while let Some(c) = stream.next().await {
            all.extend_from_slice(&c.unwrap());
        }
        let done_at = Instant::now();
        let up = &mock.requests()[0];
        let upstream_done = up.completed_at.expect("mock finished");
        assert!(
            first_at < upstream_done,
            "{path}: first chunk only after the upstream finished"
        );
        assert!(
            done_at.duration_since(first_at) > Duration::from_millis(500),
            "{path}: the stream was buffered"
        );
        let text = String::from_utf8(all).unwrap();
        if path.ends_with("messages") {
            assert!(text.contains("event: message_stop"), "{text}");
        } else {
            assert!(text.contains("data: [DONE]"), "{text}");
        }
        let _ = sent;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_native_errors() {
    let (mock, gw) = setup_with(|c, _| c.set("max_body_bytes", 1048576)).await;
    let key = gw.create_key("t").await;
    let c = client();
    let send = |path: &'static str, body: Vec<u8>| {
        c.post(format!("{}{}", gw.url(), path))
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // malformed JSON
    let r = send("/v1/chat/completions", b"{\"model\": ".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    // missing model, in the Anthropic envelope
    let r = send("/v1/messages", br#"{"messages":[]}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'model' is required"));
    // wrong type
    let r = send("/v1/chat/completions", br#"{"model": 42}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "model");
    // unknown model: 404 that says what exists
    let r = send(
        "/v1/chat/completions",
        br#"{"model": "llama-nope", "messages": []}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai:gpt-4o-mini"),
        "{v}"
    );
    // oversized body
    let big = format!(
        "{{\"model\":\"gpt-4o-mini\",\"x\":\"{}\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    let r = send("/v1/chat/completions", big.into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // unknown path
    let r = c.get(format!("{}/v1/nope", gw.url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(mock.requests().is_empty(), "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_documented_statuses() {
    let (mock, gw) = setup_with(|c, url| {
        c.provider(
            "slow",
            json!({"kind": "openai", "base_url": format!("{url}/v1"), "api_key": "k", "read_timeout_ms": 300}),
        )
        .provider(
            "dead",
            json!({"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key": "k"}),
        )
    })
    .await;
    let key = gw.create_key("t").await;
    let auth = ("x-api-key", key.as_str());
    // 429 passes through with retry-after
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header(auth.0, auth.1)
        .header("x-mock-status", "429")
        .header("x-mock-retry-after", "7")
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    // a provider auth failure is the gateway's problem: 502
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .header(auth.0, auth.1)
        .header("x-mock-status", "401")
        .json(&messages("claude-x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rejected the gateway's credentials"));
    // unreachable: 502
    let r = post(&gw, "/v1/chat/completions", auth, &chat("dead:m", false)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{v}"
    );
    // timeout: 504
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header(auth.0, auth.1)
        .header("x-mock-delay-ms", "2000")
        .json(&chat("slow:m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let _ = mock;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_of_100kb_and_5mb_reach_the_upstream_intact() {
    let (mock, gw) = setup().await;
    let key = gw.create_key("t").await;
    for size in [2 * 1024, 100 * 1024, 5 * 1024 * 1024] {
        for stream in [false, true] {
            for (path, selector, upstream_model) in [
                ("/v1/chat/completions", "openai:gpt-4o-mini", "gpt-4o-mini"),
                ("/v1/messages", "claude-sonnet-4-6", "claude-sonnet-4-6"),
            ] {
                mock.clear();
                let filler = "x".repeat(size);
                let body = json!({"model": selector, "stream": stream, "max_tokens": 10,
                    "messages": [{"role": "user", "content": filler}]});
                let r = post(&gw, path, ("x-api-key", &key), &body).await;
                assert_eq!(r.status(), 200, "{path} {size} stream={stream}");
                let text = r.text().await.unwrap();
                if stream {
                    assert!(
                        text.contains("[DONE]") || text.contains("message_stop"),
                        "{path} {size}: {}",
                        &text[..text.len().min(300)]
                    );
                } else {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert!(v.get("usage").is_some());
                }
                let up = &mock.requests()[0];
                let got = up.json();
                assert_eq!(got["model"], upstream_model);
                assert_eq!(
                    got["messages"][0]["content"].as_str().unwrap().len(),
                    size,
                    "{path} {size}: body altered"
                );
                assert_eq!(
                    up.header("content-length")
                        .map(|v| v.parse::<usize>().unwrap()),
                    Some(up.body.len())
                );
            }
        }
    }
}

/// Sends raw HTTP/1.1 and returns the whole response text.
async fn raw_http(port: u16, parts: &[&[u8]], pause: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    for p in parts {
        s.write_all(p).await.unwrap();
        tokio::time::sleep(pause).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_and_expect_100_continue_work_on_both_paths() {
    let (mock, gw) = setup().await;
    let key = gw.create_key("t").await;
    for size in [1000usize, 150_000] {
        mock.clear();
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "y".repeat(size)}]}).to_string();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n"
        );
        let mut chunks: Vec<Vec<u8>> = vec![head.into_bytes()];
        for piece in body.as_bytes().chunks(16 * 1024) {
            let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
            c.extend_from_slice(piece);
            c.extend_from_slice(b"\r\n");
            chunks.push(c);
        }
        chunks.push(b"0\r\n\r\n".to_vec());
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        let started = Instant::now();
        let resp = raw_http(gw.port, &refs, Duration::from_millis(2)).await;
        assert!(
            resp.contains("100 Continue"),
            "{}",
            &resp[..resp.len().min(200)]
        );
        assert!(
            resp.contains("HTTP/1.1 200"),
            "{}",
            &resp[..resp.len().min(400)]
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "Expect: 100-continue stalled"
        );
        assert_eq!(
            mock.requests()[0].json()["messages"][0]["content"]
                .as_str()
                .unwrap()
                .len(),
            size
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_ends_with_a_native_error_event() {
    let (_mock, gw) = setup().await;
    let key = gw.create_key("t").await;
    for (path, body, small) in [
        ("/v1/messages", messages("claude-x", true), true),
        ("/v1/chat/completions", chat("gpt-4o-mini", true), true),
        // the large-body path too
        (
            "/v1/messages",
            json!({"model": "claude-x", "stream": true, "max_tokens": 5, "messages": [{"role": "user", "content": "z".repeat(100_000)}]}),
            false,
        ),
    ] {
        let r = client()
            .post(format!("{}{}", gw.url(), path))
            .header("x-api-key", &key)
            .header("x-mock-fault", "reset-mid-stream")
            .header("x-mock-pieces", "10")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut text = Vec::new();
        let mut s = r.bytes_stream();
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => text.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&text);
        if path == "/v1/messages" {
            assert!(
                text.contains("event: error\ndata: {\"error\":{\"message\":")
                    || text.contains("event: error\ndata: {"),
                "small={small}: {text}"
            );
            assert!(text.contains("\"type\":\"error\""), "{text}");
            assert!(!text.contains("message_stop"));
        } else {
            assert!(text.contains("data: {\"error\":"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_root_metrics_and_model_listing() {
    let (_mock, gw) = setup().await;
    let key = gw.create_key("t").await;
    let c = client();
    let r = c.head(format!("{}/", gw.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = c
        .get(format!("{}/health", gw.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["store"], "open");
    let r = post(
        &gw,
        "/v1/chat/completions",
        ("x-api-key", &key),
        &chat("gpt-4o-mini", true),
    )
    .await;
    let _ = r.text().await.unwrap();
    // The request is counted when the gateway logs it, just after the client has read the
    // last byte: wait for it.
    let counted = "tollgate_requests_total{endpoint=\"chat_completions\",model=\"gpt-4o-mini\",provider=\"openai\",status=\"200\"} 1";
    let mut m = String::new();
    for _ in 0..50 {
        m = c
            .get(format!("{}/metrics", gw.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains(counted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(m.contains(counted), "{m}");
    assert!(m.contains("tollgate_upstream_ttfb_seconds_bucket"));
    assert!(m.contains("tollgate_tokens_total"));
    assert!(
        m.contains("tollgate_key_tokens_total{key_id=\"key_"),
        "tokens by key id"
    );
    assert!(
        !m.contains(&key) && !m.contains("sk-openai-provider-key"),
        "secrets in /metrics"
    );
    // OpenAI shape by default, Anthropic shape for Anthropic clients
    let v: Value = c
        .get(format!("{}/v1/models", gw.url()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "openai:gpt-4o-mini"));
    let v: Value = c
        .get(format!("{}/v1/models?limit=1000", gw.url()))
        .bearer_auth(&key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["has_more"], false);
    assert_eq!(v["data"][0]["type"], "model");
    let logs = gw.stderr_text();
    assert!(logs.contains("tollgate::access"));
    assert!(
        !logs.contains(&key) && !logs.contains("sk-openai-provider-key") && !logs.contains(MASTER),
        "secrets in logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_with_the_right_sni() {
    let mock = MockServer::start().await;
    let front = mock_upstream::tls::TlsFront::start(mock.addr, &["localhost"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, &front.cert_pem).unwrap();
    let port = front.addr.port();
    let cfg = TestConfig::empty()
        .without("threads")
        .set("ca_file", ca.display().to_string())
        .set("grace_period_seconds", 1)
        .set("graceful_shutdown_timeout_seconds", 1)
        .provider(
            "good",
            json!({"kind": "openai", "base_url": format!("https://localhost:{port}/v1"), "api_key": "k"}),
        )
        .provider(
            "wrongname",
            json!({"kind": "openai", "base_url": format!("https://127.0.0.1:{port}/v1"), "api_key": "k"}),
        );
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("t").await;
    // certificate for "localhost", trusted through ca_file: works, stream included
    for stream in [false, true] {
        let r = post(
            &gw,
            "/v1/chat/completions",
            ("x-api-key", &key),
            &chat("good:m", stream),
        )
        .await;
        assert_eq!(r.status(), 200, "stream={stream}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("Hello") || text.contains("tok") || text.contains("[DONE]"),
            "{text}"
        );
    }
    // the large-body path (own connector) verifies too
    let big =
        json!({"model": "good:m", "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    assert_eq!(
        post(&gw, "/v1/chat/completions", ("x-api-key", &key), &big)
            .await
            .status(),
        200
    );
    assert_eq!(mock.requests().len(), 3);
    // the same certificate presented for another name is refused: 502, nothing reaches the mock
    let r = post(
        &gw,
        "/v1/chat/completions",
        ("x-api-key", &key),
        &chat("wrongname:m", false),
    )
    .await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("TLS"),
        "{v}"
    );
    assert_eq!(mock.requests().len(), 3);
}

/// A request refused before its body is read (here a wrong key) while the client is still
/// sending a large body: the client gets the 401, not a connection reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_body_is_read_reach_a_client_still_sending_it() {
    let (mock, gw) = setup().await;
    let big = json!({"model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x".repeat(4 * 1024 * 1024)}]});
    for _ in 0..5 {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .header("authorization", "Bearer tg-wrong-key")
            .json(&big)
            .send()
            .await
            .expect("a 401, not a reset");
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    }
    assert!(mock.requests().is_empty());
}
