//! Cross-format traffic through the real binary: Anthropic clients on an OpenAI-format
//! upstream and OpenAI clients on an Anthropic upstream, streamed and not, with tools.

mod common;

use common::*;
use futures_util::StreamExt;
use mock_upstream::MockServer;
use serde_json::{json, Value};

async fn start() -> (MockServer, Gateway) {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url());
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    (mock, gw)
}

async fn post(gw: &Gateway, path: &str, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{}", gw.url(), path))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_client_on_openai_upstream_non_stream_and_stream() {
    let (mock, gw) = start().await;
    let key = gw.create_key("t").await;
    let body = json!({"model": "openai:gpt-4o-mini", "max_tokens": 100, "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1.2.3;"}, {"type": "text", "text": "Be brief."}],
        "metadata": {"user_id": "{\"device_id\":\"abc\",\"session_id\":\"s\"}"},
        "messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "mid-conversation note"}, {"role": "user", "content": [{"type": "text", "text": "again", "cache_control": {"type": "ephemeral"}}]}]});
    let r = post(&gw, "/v1/messages?beta=true", &key, body.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(
        v["model"], "openai:gpt-4o-mini",
        "the client's model string is echoed"
    );
    assert_eq!(v["content"][0]["text"], "Hello from mock upstream!");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let up = mock.requests()[0].json();
    assert_eq!(mock.requests()[0].path, "/v1/chat/completions");
    assert_eq!(up["model"], "gpt-4o-mini");
    assert_eq!(
        up["messages"][0],
        json!({"role": "system", "content": "Be brief."}),
        "billing header dropped (E05)"
    );
    assert_eq!(
        up["messages"][2]["role"], "system",
        "mid-conversation system kept in place (E01)"
    );
    assert!(
        up["safety_identifier"].as_str().unwrap().starts_with("tg_"),
        "metadata.user_id hashed (E02)"
    );
    assert!(!up.to_string().contains("device_id"));
    assert_eq!(up["max_completion_tokens"], 100);

    // streamed
    let mut sbody = body;
    sbody["stream"] = json!(true);
    let r = post(&gw, "/v1/messages", &key, sbody).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let ev = events(&text);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(
        names.contains(&"content_block_start")
            && names.contains(&"content_block_delta")
            && names.contains(&"message_delta")
    );
    let text_out: String = ev
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(text_out, "Hello from mock upstream!");
    let md = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(md.1["delta"]["stop_reason"], "end_turn");
    assert!(
        md.1["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "exact usage in message_delta (E08)"
    );
    let up = mock.requests()[1].json();
    assert_eq!(up["stream_options"]["include_usage"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_tool_round_trip_against_an_openai_upstream() {
    let (_mock, gw) = start().await;
    let key = gw.create_key("t").await;
    let tools = json!([{"name": "Bash", "description": "Run a command", "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}]);
    let r = post(
        &gw,
        "/v1/messages",
        &key,
        json!({"model": "openai:gpt-4o-mini", "max_tokens": 100, "stream": true, "tools": tools,
        "messages": [{"role": "user", "content": "CALL_TOOL please"}]}),
    )
    .await;
    let ev = events(&r.text().await.unwrap());
    let start = ev
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .expect("tool_use block");
    assert_eq!(start.1["content_block"]["name"], "Bash");
    let id = start.1["content_block"]["id"].as_str().unwrap().to_string();
    let args: String = ev
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"command": "echo hello-from-mock-tool"})
    );
    let md = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(md.1["delta"]["stop_reason"], "tool_use");
    // Claude Code echoes the turn and sends the result.
    let r = post(&gw, "/v1/messages", &key, json!({"model": "openai:gpt-4o-mini", "max_tokens": 100, "stream": true, "tools": tools,
        "messages": [{"role": "user", "content": "CALL_TOOL please"},
                     {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "Bash", "input": {"command": "echo hello-from-mock-tool"}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "hello-from-mock-tool", "is_error": false}]}]})).await;
    let ev = events(&r.text().await.unwrap());
    let text: String = ev
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(text, "Tool said: hello-from-mock-tool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_on_anthropic_upstream_with_tools_and_usage() {
    let (mock, gw) = start().await;
    let key = gw.create_key("t").await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let r = post(&gw, "/v1/chat/completions", &key, json!({"model": "anthropic:claude-sonnet-4-6", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}], "max_tokens": 50})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from mock upstream!"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let up = &mock.requests()[0];
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.header("x-api-key"), Some("sk-ant-provider-key"));
    assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(up.json()["system"][0]["text"], "sys");
    assert_eq!(up.json()["max_tokens"], 50);

    // streamed with tools and include_usage
    let r = post(&gw, "/v1/chat/completions", &key, json!({"model": "anthropic:claude-sonnet-4-6", "stream": true, "stream_options": {"include_usage": true},
        "tools": tools, "messages": [{"role": "user", "content": "CALL_TOOL now"}]})).await;
    let text = r.text().await.unwrap();
    let ev = events(&text);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let chunks: Vec<&Value> = ev
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d.is_object())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let name = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].as_str())
        .unwrap();
    assert_eq!(name, "get_weather");
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"command": "echo hello-from-mock-tool"})
    );
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "tool_calls");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_broken_streams_are_translated_into_the_client_dialect() {
    let (_mock, gw) = start().await;
    let key = gw.create_key("t").await;
    // An OpenAI-format 429 reaches an Anthropic client as an Anthropic error, retry-after kept.
    let r = client().post(format!("{}/v1/messages", gw.url())).header("x-api-key", &key).header("x-mock-status", "429").header("x-mock-retry-after", "7")
        .json(&json!({"model": "openai:gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["message"], "mock injected 429");
    // An Anthropic 400 reaches an OpenAI client in the OpenAI envelope.
    let r = client().post(format!("{}/v1/chat/completions", gw.url())).bearer_auth(&key).header("x-mock-status", "400")
        .json(&json!({"model": "anthropic:claude-x", "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "mock injected 400");
    // A stream cut mid-way ends with an error event, never message_stop (E10).
    let r = client().post(format!("{}/v1/messages", gw.url())).header("x-api-key", &key).header("x-mock-fault", "truncate").header("x-mock-pieces", "10")
        .json(&json!({"model": "openai:gpt-4o-mini", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    let mut body = Vec::new();
    let mut st = r.bytes_stream();
    while let Some(Ok(c)) = st.next().await {
        body.extend_from_slice(&c);
    }
    let ev = events(&String::from_utf8(body).unwrap());
    assert_eq!(ev.last().unwrap().0, "error");
    assert_eq!(ev.last().unwrap().1["error"]["type"], "api_error");
    assert!(!ev.iter().any(|(n, _)| n == "message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_is_local_for_openai_models_and_forwarded_for_anthropic() {
    let (mock, gw) = start().await;
    let key = gw.create_key("t").await;
    let body = json!({"model": "openai:gpt-4o-mini", "messages": [{"role": "user", "content": "hello world, how are you today?"}], "tools": []});
    let r = post(&gw, "/v1/messages/count_tokens?beta=true", &key, body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let n = v["input_tokens"].as_u64().unwrap();
    assert!((8..=20).contains(&n), "{n}");
    assert!(mock.requests().is_empty(), "never a generation call");
    let r = post(
        &gw,
        "/v1/messages/count_tokens",
        &key,
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(mock.requests()[0].path, "/v1/messages/count_tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_falls_back_to_the_local_count_when_the_provider_is_slow_or_failing() {
    let (mock, gw) = start().await;
    let key = gw.create_key("t").await;
    let body = json!({"model": "claude-x", "messages": [{"role": "user", "content": "hello world, how are you today?"}]});
    // the provider answers: its count (body length / 4 in the mock) is used
    let r = post(&gw, "/v1/messages/count_tokens", &key, body.clone()).await;
    let upstream_count = r.json::<Value>().await.unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(mock.requests().len(), 1);
    // slow (10 s) and failing (500) providers: the local BPE count, without waiting for the
    // slow one (the fallback budget is 1 s; the bound below only proves it did not wait)
    for (h, v) in [("x-mock-delay-ms", "10000"), ("x-mock-status", "500")] {
        let t = std::time::Instant::now();
        let r = client()
            .post(format!("{}/v1/messages/count_tokens", gw.url()))
            .header("x-api-key", &key)
            .header(h, v)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{h}");
        let n = r.json::<Value>().await.unwrap()["input_tokens"]
            .as_u64()
            .unwrap();
        assert!((8..=20).contains(&n) && n != upstream_count, "{h}: {n}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(8),
            "{h}: waited for the provider ({:?})",
            t.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstreams_get_keepalives_in_the_client_grammar() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url()).set("stream_keepalive_ms", 200);
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("t").await;
    // Anthropic client, OpenAI upstream silent for ~1 s between chunks: `ping` events.
    let r = client().post(format!("{}/v1/messages", gw.url())).header("x-api-key", &key).header("x-mock-chunk-delay-ms", "1000").header("x-mock-pieces", "1")
        .json(&json!({"model": "openai:gpt-4o-mini", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    let text = r.text().await.unwrap();
    let ev = events(&text);
    assert_eq!(ev.first().unwrap().0, "message_start");
    assert_eq!(ev.last().unwrap().0, "message_stop");
    let pings = ev.iter().filter(|(n, _)| n == "ping").count();
    assert!(pings >= 4, "expected keep-alive pings, got {pings}: {text}");
    // OpenAI client, Anthropic upstream silent: `: keep-alive` comments, then a valid stream.
    let r = client().post(format!("{}/v1/chat/completions", gw.url())).bearer_auth(&key).header("x-mock-chunk-delay-ms", "600").header("x-mock-pieces", "1")
        .json(&json!({"model": "anthropic:claude-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(text.matches(": keep-alive").count() >= 4, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_to_a_streaming_client_is_rendered_as_a_stream() {
    let (_mock, gw) = start().await;
    let key = gw.create_key("t").await;
    let r = client().post(format!("{}/v1/messages", gw.url())).header("x-api-key", &key).header("x-mock-ignore-stream", "1")
        .json(&json!({"model": "openai:gpt-4o-mini", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let ev = events(&r.text().await.unwrap());
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(ev[2].1["delta"]["text"], "Hello from mock upstream!");
    let r = client().post(format!("{}/v1/chat/completions", gw.url())).bearer_auth(&key).header("x-mock-ignore-stream", "1")
        .json(&json!({"model": "anthropic:claude-x", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let ev = events(&text);
    let content: String = ev
        .iter()
        .filter_map(|(_, d)| d["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from mock upstream!");
    assert!(ev
        .iter()
        .any(|(_, d)| d["choices"] == json!([]) && d["usage"]["total_tokens"].as_u64() > Some(0)));
}
