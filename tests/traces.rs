//! Request traces on the real binary (sled on disk, the mock provider): `capture: metadata`
//! keeps each request's metadata (routing, the translation pair, timings, attempts and why
//! they failed, usage) and never a body or a credential; `GET /v1/traces` filters and pages
//! (master key: all; a virtual key: its own); `capture: off` stores nothing; a full trace
//! queue drops traces and counts them while every request is served; `capture: full` keeps
//! the client's body, the upstream body and the answer (for a stream: the answer put back
//! together from its events, and their count), cut at
//! `max_body_bytes` and redacted (credentials, secrets, operator paths) before storing.

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn get(gw: &Gateway, key: &str, path: &str) -> (u16, Option<String>, Value) {
    let r = client()
        .get(format!("{}{path}", gw.url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let rid = r
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    (
        r.status().as_u16(),
        rid,
        r.json().await.unwrap_or(Value::Null),
    )
}

/// The stored trace of `rid`, once the writer has stored it.
async fn trace_of(gw: &Gateway, rid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _, v) = get(gw, MASTER, &format!("/v1/traces/{rid}")).await;
        if st == 200 {
            return v;
        }
        assert_eq!(st, 404, "{v}");
        assert!(Instant::now() < deadline, "no trace for {rid}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(
    gw: &Gateway,
    key: &str,
    path: &str,
    body: &Value,
    rid: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let mut r = client()
        .post(format!("{}{path}", gw.url()))
        .bearer_auth(key)
        .header("x-request-id", rid)
        .json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], rid);
    let st = r.status().as_u16();
    let _ = r.bytes().await;
    st
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["request_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_traces_are_stored_filtered_paged_and_read_by_their_own_key() {
    let mock = MockServer::start().await;
    let url = mock.url();
    let cfg = TestConfig::new(&url)
        .set("traces", json!({"capture": "metadata"}))
        .provider(
            "flaky",
            json!({"kind": "openai", "base_url": format!("{url}/v1"), "api_key": "sk-flaky-secret-1", "models": ["gpt-flaky"]}),
        )
        .provider(
            "dead",
            json!({"kind": "openai", "base_url": format!("http://127.0.0.1:{}/v1", free_port()), "api_key": "sk-dead-secret-2"}),
        )
        // Nothing listens for `dead`: its attempt fails, the next deployment answers.
        .set(
            "deployments",
            json!({"gpt-spread": [{"provider": "dead", "model": "gpt-4o-mini"}, {"provider": "openai", "model": "gpt-4o-mini", "priority": 1}]}),
        );
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let a = gw.create_key("a").await;
    let b = gw.create_key("b").await;

    let chat_ok = chat("gpt-4o-mini", false);
    assert_eq!(
        send(&gw, &a, "/v1/chat/completions", &chat_ok, "tr-a-1", &[]).await,
        200
    );
    assert_eq!(
        send(
            &gw,
            &a,
            "/v1/chat/completions",
            &chat("gpt-4o-mini", true),
            "tr-a-2",
            &[]
        )
        .await,
        200
    );
    // Anthropic client, OpenAI provider: a translated request.
    assert_eq!(
        send(
            &gw,
            &b,
            "/v1/messages",
            &messages("openai:gpt-4o-mini", false),
            "tr-b-1",
            &[]
        )
        .await,
        200
    );
    let failed = send(
        &gw,
        &b,
        "/v1/chat/completions",
        &chat("flaky:gpt-flaky", false),
        "tr-b-2",
        &[("x-mock-status", "500")],
    )
    .await;
    assert!(failed >= 500, "{failed}");
    assert_eq!(
        send(
            &gw,
            &b,
            "/v1/chat/completions",
            &chat("gpt-spread", false),
            "tr-b-3",
            &[]
        )
        .await,
        200
    );

    let t = trace_of(&gw, "tr-a-1").await;
    assert_eq!(t["status"], 200);
    assert_eq!(t["endpoint"], "chat_completions");
    assert_eq!(t["model"], "gpt-4o-mini");
    assert_eq!(t["provider"], "openai");
    assert_eq!(t["client_format"], "chat");
    assert_eq!(t["upstream_format"], "chat");
    assert_eq!(t["attempts"], 1);
    assert_eq!(t["stream"], false);
    assert!(t["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(t["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(t["timings"]["first_byte_ms"].as_u64().is_some());
    assert!(
        t["timings"]["last_byte_ms"].as_u64().unwrap()
            >= t["timings"]["first_byte_ms"].as_u64().unwrap()
    );
    // Each phase, in microseconds from the start: auth, routing, the attempt, first byte,
    // settle, in that order.
    let tm = &t["timings"];
    let us = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("{tm}"));
    let auth = us(&tm["auth_us"]);
    let routed = us(&tm["routing_us"]);
    let attempt = &tm["attempts"][0];
    assert_eq!(
        (attempt["outcome"].as_str(), attempt["status"].as_u64()),
        (Some("ok"), Some(200)),
        "{tm}"
    );
    assert!(auth <= routed && routed <= us(&attempt["start_us"]), "{tm}");
    assert!(us(&attempt["start_us"]) <= us(&tm["first_byte_us"]), "{tm}");
    assert!(
        us(&tm["settle"]["start_us"]) <= us(&tm["settle"]["end_us"]),
        "{tm}"
    );
    let key_a = t["key_id"].as_str().unwrap().to_string();
    assert_eq!(trace_of(&gw, "tr-a-2").await["stream"], true);
    let tb = trace_of(&gw, "tr-b-1").await;
    assert_eq!(tb["client_format"], "anthropic");
    assert_eq!(tb["upstream_format"], "chat");
    let key_b = tb["key_id"].as_str().unwrap().to_string();
    let tf = trace_of(&gw, "tr-b-2").await;
    assert_eq!(tf["status"].as_u64().unwrap(), u64::from(failed));
    assert_eq!(tf["provider"], "flaky");
    let over = trace_of(&gw, "tr-b-3").await;
    assert_eq!(over["status"], 200);
    assert_eq!(over["attempts"], 2, "{over}");
    assert_eq!(over["provider"], "openai");
    let why = over["failed_attempts"].as_array().unwrap();
    assert_eq!(why.len(), 1, "{over}");
    assert!(why[0].as_str().unwrap().contains("dead"), "{over}");
    let tried = over["timings"]["attempts"].as_array().unwrap();
    assert_eq!(tried.len(), 2, "{over}");
    assert_ne!(tried[0]["outcome"], "ok", "{over}");
    assert_eq!(tried[1]["outcome"], "ok", "{over}");

    // Metadata only: no body, no credential anywhere in a trace.
    let (_, _, all) = get(&gw, MASTER, "/v1/traces").await;
    let text = all.to_string();
    for secret in [
        a.as_str(),
        b.as_str(),
        MASTER,
        "sk-flaky-secret-1",
        "sk-dead-secret-2",
        "sk-openai-provider-key",
        "\"hi\"",
    ] {
        assert!(!text.contains(secret), "{secret} in a trace: {text}");
    }
    assert!(
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("bodies").is_none()),
        "capture: metadata keeps no body: {all}"
    );
    // Newest first.
    let every = vec!["tr-b-3", "tr-b-2", "tr-b-1", "tr-a-2", "tr-a-1"];
    assert_eq!(ids(&all), every);

    // Filters.
    let q = |query: String| {
        let gw = &gw;
        async move { get(gw, MASTER, &format!("/v1/traces?{query}")).await }
    };
    assert_eq!(
        ids(&q(format!("key_id={key_a}")).await.2),
        vec!["tr-a-2", "tr-a-1"]
    );
    assert_eq!(ids(&q(format!("status={failed}")).await.2), vec!["tr-b-2"]);
    assert_eq!(
        ids(&q("model=openai:gpt-4o-mini".into()).await.2),
        vec!["tr-b-1"]
    );
    assert!(ids(&q("min_latency_ms=3600000".into()).await.2).is_empty());
    assert_eq!(ids(&q("min_latency_ms=0".into()).await.2).len(), 5);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(ids(&q(format!("to={}", now - 3600)).await.2).is_empty());
    assert_eq!(ids(&q(format!("from={}", now - 3600)).await.2).len(), 5);
    let (st, _, e) = q("status=abc".into()).await;
    assert_eq!(st, 400, "{e}");
    let (st, _, e) = q("cursor=zz".into()).await;
    assert_eq!(st, 400, "{e}");

    // Paging: pages of 1 walk every trace once, in order.
    let mut walked = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/traces?limit=1&cursor={c}"),
            None => "/v1/traces?limit=1".into(),
        };
        let (st, _, page) = get(&gw, MASTER, &path).await;
        assert_eq!(st, 200);
        walked.extend(ids(&page));
        if page["has_more"] == false {
            assert!(page["next_cursor"].is_null());
            break;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_string());
    }
    assert_eq!(walked, every);

    // A virtual key reads its own traces only.
    let (st, rid, own) = get(&gw, &a, "/v1/traces").await;
    assert_eq!(st, 200);
    assert!(rid.is_some_and(|r| !r.is_empty()));
    assert_eq!(ids(&own), vec!["tr-a-2", "tr-a-1"]);
    let (st, _, _) = get(&gw, &a, "/v1/traces/tr-a-1").await;
    assert_eq!(st, 200);
    let (st, rid, e) = get(&gw, &a, "/v1/traces/tr-b-1").await;
    assert_eq!(st, 404, "{e}");
    assert!(rid.is_some());
    let (st, _, e) = get(&gw, &a, &format!("/v1/traces?key_id={key_b}")).await;
    assert_eq!(st, 403, "{e}");
    let (st, _, _) = get(&gw, "sk-not-a-key", "/v1/traces").await;
    assert_eq!(st, 401);
    let r = client()
        .delete(format!("{}/v1/traces/tr-a-1", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    // Traces are read-only: the method is refused and the trace stays.
    assert_eq!(r.status(), 405);
    assert_eq!(get(&gw, MASTER, "/v1/traces/tr-a-1").await.0, 200);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_text(gw: &Gateway) -> String {
    client()
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_off_by_default_stores_nothing() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url());
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("off").await;
    for n in 0..3 {
        let rid = format!("off-{n}");
        assert_eq!(
            send(
                &gw,
                &key,
                "/v1/chat/completions",
                &chat("gpt-4o-mini", false),
                &rid,
                &[]
            )
            .await,
            200
        );
        assert!(usage_record(&gw, &rid).await.is_some());
    }
    let (st, _, list) = get(&gw, MASTER, "/v1/traces").await;
    assert_eq!(st, 200);
    assert!(ids(&list).is_empty(), "{list}");
    let m = metrics_text(&gw).await;
    assert_eq!(metric(&m, "tollgate_traces_written_total"), 0.0);
    assert_eq!(metric(&m, "tollgate_traces_dropped_total"), 0.0);
}

/// A trace queue of one, and a burst of concurrent requests: every request is served, every
/// trace is either stored or dropped and counted, and some are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_trace_queue_drops_and_counts_while_requests_are_served() {
    let mock = MockServer::start().await;
    let cfg =
        TestConfig::new(&mock.url()).set("traces", json!({"capture": "metadata", "queue": 1}));
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("burst").await;
    const N: usize = 40;
    let mut tasks = Vec::new();
    for n in 0..N {
        let (u, k) = (gw.url(), key.clone());
        tasks.push(tokio::spawn(async move {
            let r = client()
                .post(format!("{u}/v1/chat/completions"))
                .bearer_auth(&k)
                .json(&chat("gpt-4o-mini", n % 2 == 0))
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            let _ = r.bytes().await;
            st
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (written, dropped) = loop {
        let m = metrics_text(&gw).await;
        let w = metric(&m, "tollgate_traces_written_total");
        let d = metric(&m, "tollgate_traces_dropped_total");
        if w + d >= N as f64 || Instant::now() > deadline {
            assert!(!m.contains("reason=\"write_error\""), "{m}");
            break (w, d);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        written + dropped,
        N as f64,
        "written {written}, dropped {dropped}"
    );
    assert!(dropped > 0.0, "nothing dropped with a queue of one");
    let (_, _, list) = get(&gw, MASTER, "/v1/traces?limit=1000").await;
    assert_eq!(ids(&list).len() as f64, written);
}

/// `sample: 0.5`: some requests are traced, not all (60 requests: all or none has a chance of
/// 2^-59).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_keeps_a_share_of_requests() {
    let mock = MockServer::start().await;
    let cfg =
        TestConfig::new(&mock.url()).set("traces", json!({"capture": "metadata", "sample": 0.5}));
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("sampled").await;
    const N: usize = 60;
    for n in 0..N {
        let rid = format!("s-{n}");
        let body = chat("gpt-4o-mini", false);
        assert_eq!(
            send(&gw, &key, "/v1/chat/completions", &body, &rid, &[]).await,
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let (_, _, list) = get(&gw, MASTER, "/v1/traces?limit=1000").await;
        let n = ids(&list).len();
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "no trace stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(stored < N, "every request traced at sample 0.5");
    let m = metrics_text(&gw).await;
    assert_eq!(metric(&m, "tollgate_traces_dropped_total"), 0.0);
}

/// Every file under `dir` (the sled store), read as bytes.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_capture_keeps_bodies_cut_and_redacted() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url()).set(
        "traces",
        json!({"capture": "full", "max_body_bytes": 4096,
               "redact": ["$.metadata.user_email", "messages[*].name"]}),
    );
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("full").await;

    // Anthropic client, OpenAI provider, not streamed: with planted secrets.
    let sk = "sk-proj-Q7vX2mK9pL4wR8tY3nB6cD1fG5hJ0kZa";
    let bearer = "Bearer tok9f8e7d6c5b4a3";
    let mut body = messages("openai:gpt-4o-mini", false);
    body["messages"][0]["content"] = json!(format!("plan-marker use {sk} and {bearer} please"));
    body["messages"][0]["name"] = json!("operator-named-secret");
    body["metadata"] = json!({"user_email": "planted@corp.example", "user_id": "u1"});
    assert_eq!(
        send(&gw, &key, "/v1/messages", &body, "full-1", &[]).await,
        200
    );
    let t = trace_of(&gw, "full-1").await;
    let b = &t["bodies"];
    let req = b["request"]["text"].as_str().unwrap();
    assert!(
        req.contains("plan-marker use [redacted] and [redacted] please"),
        "{t}"
    );
    assert!(req.contains("\"max_tokens\":100"), "{t}");
    assert_eq!(b["request"]["truncated"], false);
    // The upstream body is the translated one, in the provider's (OpenAI chat) format.
    let up: Value = serde_json::from_str(b["upstream_request"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(up["model"], "gpt-4o-mini", "{t}");
    assert!(up["messages"].to_string().contains("plan-marker"), "{t}");
    assert!(
        up.get("max_completion_tokens").is_some() || up.get("max_tokens").is_some(),
        "{up}"
    );
    // The answer, as the client got it (Anthropic format).
    let answer: Value = serde_json::from_str(b["response"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(answer["type"], "message", "{t}");
    assert!(b["stream_events"].is_null(), "{t}");

    // Streamed and translated: the bodies, the event count and the answer put back
    // together from the events (in four-character pieces), with a planted secret redacted.
    let stream_sk = "sk-ant-api03-Zq8Wm3Lp0Xv7Tn2Rb5Kc9Hd4Fg6Js1Ye";
    let mut sbody = messages("openai:gpt-4o-mini", true);
    sbody["messages"][0]["content"] = json!("stream-marker");
    let said = format!("Streamed answer with {stream_sk} inside, the end.");
    assert_eq!(
        send(
            &gw,
            &key,
            "/v1/messages",
            &sbody,
            "full-2",
            &[("x-mock-text", &said)]
        )
        .await,
        200
    );
    let t = trace_of(&gw, "full-2").await;
    let b = &t["bodies"];
    assert!(b["request"]["text"]
        .as_str()
        .unwrap()
        .contains("stream-marker"));
    let up: Value = serde_json::from_str(b["upstream_request"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(up["stream"], true, "{t}");
    assert!(up["messages"].is_array(), "{t}");
    // message_start, content block start / deltas / stop, message_delta, message_stop.
    assert!(b["stream_events"].as_u64().unwrap() >= 5, "{t}");
    let answer: Value = serde_json::from_str(b["response"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        answer["text"], "Streamed answer with [redacted] inside, the end.",
        "{t}"
    );
    assert_eq!(answer["finish_reason"], "end_turn", "{t}");
    assert!(answer["usage"]["output_tokens"].as_u64().is_some(), "{t}");
    assert_eq!(b["response"]["truncated"], false);

    // Streamed OpenAI chat, passed through: the same, in the chat stream's terms.
    let mut cbody = chat("gpt-4o-mini", true);
    cbody["messages"][0]["content"] = json!("chat-stream-marker");
    let said = format!("Chat stream {stream_sk} done.");
    assert_eq!(
        send(
            &gw,
            &key,
            "/v1/chat/completions",
            &cbody,
            "full-5",
            &[("x-mock-text", &said)]
        )
        .await,
        200
    );
    let t = trace_of(&gw, "full-5").await;
    let answer: Value =
        serde_json::from_str(t["bodies"]["response"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(answer["text"], "Chat stream [redacted] done.", "{t}");
    assert_eq!(answer["finish_reason"], "stop", "{t}");
    assert!(t["bodies"]["stream_events"].as_u64().unwrap() >= 3, "{t}");

    // An MCP server's authorization_token and headers in a request (Anthropic to Anthropic:
    // the provider runs the servers, so the request goes to the mock as it is).
    let mut mcp = messages("anthropic:claude-3-5-haiku-latest", false);
    mcp["mcp_servers"] = json!([{"type": "url", "name": "x", "url": "https://mcp.example.com/mcp",
        "authorization_token": "mcp-token-planted-1", "headers": {"X-Key": "mcp-header-planted-2"}}]);
    send(&gw, &key, "/v1/messages", &mcp, "full-3", &[]).await;
    let t = trace_of(&gw, "full-3").await;
    assert!(
        t["bodies"]["request"]["text"]
            .as_str()
            .unwrap()
            .contains("mcp.example.com"),
        "{t}"
    );

    // Truncation: a body over max_body_bytes is cut and flagged.
    let mut big = chat("gpt-4o-mini", false);
    big["messages"][0]["content"] = json!("x".repeat(10_000));
    assert_eq!(
        send(&gw, &key, "/v1/chat/completions", &big, "full-4", &[]).await,
        200
    );
    let t = trace_of(&gw, "full-4").await;
    let r = &t["bodies"]["request"];
    assert_eq!(r["truncated"], true, "{t}");
    assert_eq!(r["text"].as_str().unwrap().len(), 4096);
    assert_eq!(t["bodies"]["upstream_request"]["truncated"], true);
    assert_eq!(t["bodies"]["response"]["truncated"], false);

    // No planted secret in any stored trace: read through the API, and in the store's files.
    let (_, _, all) = get(&gw, MASTER, "/v1/traces").await;
    assert_eq!(ids(&all).len(), 5, "{all}");
    let planted = [
        sk,
        stream_sk,
        "tok9f8e7d6c5b4a3",
        "planted@corp.example",
        "operator-named-secret",
        "mcp-token-planted-1",
        "mcp-header-planted-2",
        key.as_str(),
    ];
    let text = all.to_string();
    assert!(text.contains("plan-marker"));
    // sled writes its log to the files in the background: wait until a body is there.
    let deadline = Instant::now() + Duration::from_secs(10);
    let files = loop {
        let files = all_bytes(&gw.dir.join("data"));
        if memchr::memmem::find(&files, b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").is_some() {
            break files;
        }
        assert!(
            Instant::now() < deadline,
            "the traces never reached the store's files"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for s in planted {
        assert!(!text.contains(s), "{s} in a trace: {text}");
        assert!(
            memchr::memmem::find(&files, s.as_bytes()).is_none(),
            "{s} in the store's files"
        );
    }
}

async fn key_with(gw: &Gateway, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}/v1/keys", gw.url()))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A key's own `traces` settings override the config's: `full` on a key of a gateway that
/// keeps metadata, `off` on another; a key without settings follows the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_overrides_the_trace_settings() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url()).set("traces", json!({"capture": "metadata"}));
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let (st, full) = key_with(&gw, json!({"name": "f", "traces": {"capture": "full"}})).await;
    assert_eq!(st, 201, "{full}");
    assert_eq!(full["traces"], json!({"capture": "full"}));
    let (st, off) = key_with(&gw, json!({"name": "o", "traces": {"capture": "off"}})).await;
    assert_eq!(st, 201, "{off}");
    let plain = gw.create_key("p").await;
    for bad in [
        json!({"capture": "all"}),
        json!({"sample": 2.0}),
        json!("full"),
    ] {
        let (st, e) = key_with(&gw, json!({"name": "bad", "traces": bad})).await;
        assert_eq!(st, 400, "{e}");
        assert_eq!(e["error"]["param"], "traces", "{e}");
    }

    let body = chat("gpt-4o-mini", false);
    let k = |v: &Value| v["key"].as_str().unwrap().to_string();
    for (key, rid) in [
        (k(&full), "pk-full"),
        (k(&off), "pk-off"),
        (plain, "pk-plain"),
    ] {
        assert_eq!(
            send(&gw, &key, "/v1/chat/completions", &body, rid, &[]).await,
            200
        );
    }
    let t = trace_of(&gw, "pk-full").await;
    assert!(
        t["bodies"]["request"]["text"]
            .as_str()
            .unwrap()
            .contains("\"hi\""),
        "{t}"
    );
    let t = trace_of(&gw, "pk-plain").await;
    assert!(t.get("bodies").is_none(), "{t}");
    // Both later requests are stored (newest first, by the same writer): the `off` one is not.
    let (_, _, all) = get(&gw, MASTER, "/v1/traces").await;
    assert_eq!(ids(&all), vec!["pk-plain", "pk-full"]);

    // `null` returns a key to the config's settings.
    let r = client()
        .patch(format!(
            "{}/v1/keys/{}",
            gw.url(),
            full["id"].as_str().unwrap()
        ))
        .bearer_auth(MASTER)
        .json(&json!({"traces": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["traces"].is_null(), "{v}");
}

/// An id the gateway minted (no `x-request-id` sent) finds its trace; a client that sends
/// the same id again later gets the newer trace (the newest wins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_request_id_finds_its_trace_and_the_newest_wins() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url()).set("traces", json!({"capture": "metadata"}));
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("minted").await;
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let _ = r.bytes().await;
    assert!(rid.starts_with("req_"), "{rid}");
    let t = trace_of(&gw, &rid).await;
    assert_eq!(
        (t["request_id"].as_str(), t["status"].as_u64()),
        (Some(rid.as_str()), Some(200))
    );
    // The same id again, from the client, on a request that fails.
    let st = send(
        &gw,
        &key,
        "/v1/chat/completions",
        &chat("gpt-4o-mini", false),
        &rid,
        &[("x-mock-status", "500")],
    )
    .await;
    assert!(st >= 500, "{st}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = trace_of(&gw, &rid).await;
        if t["status"].as_u64() == Some(u64::from(st)) {
            break;
        }
        assert!(Instant::now() < deadline, "the older trace still wins: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, _, all) = get(&gw, MASTER, "/v1/traces").await;
    assert_eq!(ids(&all), vec![rid.clone(), rid]);
}
