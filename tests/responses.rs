//! The Responses API and native Gemini through the real binary, against the mock upstream:
//! a Responses client on every provider kind (OpenAI passthrough, a chat-only
//! OpenAI-compatible provider, Anthropic, Gemini), every client format on Gemini, and the
//! rest of the OpenAI surface (embeddings, moderations, one model).

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};

/// The usual two providers, a Chat-only OpenAI-kind provider and a Gemini one, all on the mock.
async fn start() -> (MockServer, Gateway) {
    let mock = MockServer::start().await;
    let url = mock.url();
    let cfg = TestConfig::new(&url)
        .provider(
            "chatonly",
            json!({"kind": "openai", "base_url": format!("{url}/v1"), "api_key": "sk-chat-provider-key", "native_responses": false, "models": ["llama-3.3-70b"]}),
        )
        .provider(
            "gemini",
            json!({"kind": "gemini", "base_url": url, "api_key": "gm-provider-key", "models": ["gemini-2.5-flash"]}),
        );
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    (mock, gw)
}

async fn post(gw: &Gateway, path: &str, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{}", gw.url(), path))
        .header("authorization", format!("Bearer {key}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Usage grouped by model, once at least `groups` models have records (the usage writer
/// commits every 20 ms).
async fn usage_by_model(gw: &Gateway, groups: usize) -> Value {
    let mut last = Value::Null;
    for _ in 0..50 {
        last = client()
            .get(format!("{}/v1/usage?group_by=model", gw.url()))
            .header("authorization", format!("Bearer {MASTER}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if last["data"].as_array().is_some_and(|d| d.len() >= groups) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    last
}

const SELECTORS: &[(&str, &str)] = &[
    ("openai:gpt-5.5", "/v1/responses"),
    ("chatonly:llama-3.3-70b", "/v1/chat/completions"),
    ("anthropic:claude-sonnet-4-6", "/v1/messages"),
    (
        "gemini:gemini-2.5-flash",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    ),
];

fn codex_turn(model: &str, text: &str) -> Value {
    json!({"model": model, "stream": true, "store": false, "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "thread-1", "tool_choice": "auto", "parallel_tool_calls": true,
        "reasoning": {"summary": "auto"},
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are a coding agent."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Runs a command", "strict": false,
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"], "additionalProperties": false}},
            {"type": "web_search", "external_web_access": true}]})
}

/// The terminal event and every `output_item.done` item of a Responses stream, after checking
/// the grammar: created, in_progress first; sequence numbers from 0; terminal event last.
fn check_stream(text: &str) -> (Value, Vec<Value>) {
    let evs = events(text);
    assert!(evs.len() >= 4, "{text}");
    assert_eq!(evs[0].0, "response.created", "{text}");
    assert_eq!(evs[1].0, "response.in_progress");
    for (i, (name, v)) in evs.iter().enumerate() {
        assert_eq!(v["type"].as_str(), Some(name.as_str()));
        assert_eq!(v["sequence_number"].as_u64(), Some(i as u64), "{text}");
    }
    let done = evs
        .iter()
        .filter(|(n, _)| n == "response.output_item.done")
        .map(|(_, v)| v["item"].clone())
        .collect();
    (evs.last().unwrap().1.clone(), done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_plain_turn_on_every_provider_kind() {
    let (mock, gw) = start().await;
    let key = gw.create_key("t").await;
    for (model, path) in SELECTORS {
        mock.clear();
        let r = post(&gw, "/v1/responses", &key, codex_turn(model, "say hi")).await;
        assert_eq!(r.status(), 200, "{model}");
        let dropped = r
            .headers()
            .get("x-tollgate-dropped-tools")
            .map(|v| v.to_str().unwrap().to_string());
        let text = r.text().await.unwrap();
        let (last, items) = check_stream(&text);
        assert_eq!(last["type"], "response.completed", "{model}: {text}");
        let msg = items.iter().find(|i| i["type"] == "message").unwrap();
        assert_eq!(
            msg["content"][0]["text"], "Hello from mock upstream!",
            "{model}"
        );
        let usage = &last["response"]["usage"];
        assert!(usage["input_tokens"].as_u64().unwrap() > 0, "{model}");
        assert!(usage["output_tokens"].as_u64().unwrap() > 0, "{model}");
        assert!(usage["input_tokens_details"]["cached_tokens"].is_u64());
        assert!(usage["output_tokens_details"]["reasoning_tokens"].is_u64());
        let reqs = mock.requests();
        assert_eq!(reqs.len(), 1, "{model}");
        assert!(reqs[0].path.starts_with(path), "{model}: {}", reqs[0].path);
        let up = reqs[0].json();
        if *model == "openai:gpt-5.5" {
            assert_eq!(dropped, None, "passthrough keeps every tool");
            assert_eq!(up["tools"][1]["type"], "web_search");
            assert_eq!(up["model"], "gpt-5.5");
        } else {
            assert_eq!(dropped.as_deref(), Some("web_search"), "{model}");
            assert!(
                !up.to_string().contains("web_search"),
                "{model}: the hosted tool is not sent"
            );
        }
    }
    // Usage is recorded for each of them, with the tokens the upstream reported.
    let usage = usage_by_model(&gw, SELECTORS.len()).await;
    for (model, _) in SELECTORS {
        let row = usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == *model)
            .unwrap_or_else(|| panic!("{model} in {usage}"));
        assert_eq!(row["requests"], 1);
        assert!(row["completion_tokens"].as_u64().unwrap() > 0, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_tool_round_trip_on_every_provider_kind() {
    let (_mock, gw) = start().await;
    let key = gw.create_key("t").await;
    for (model, _) in SELECTORS {
        let r = post(
            &gw,
            "/v1/responses",
            &key,
            codex_turn(model, "CALL_TOOL please"),
        )
        .await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let (last, items) = check_stream(&text);
        assert_eq!(last["type"], "response.completed", "{model}: {text}");
        let call = items
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap_or_else(|| panic!("{model}: no call in {text}"));
        assert_eq!(call["name"], "exec_command", "{model}");
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"cmd": "echo hello-from-mock-tool"}), "{model}");
        let call_id = call["call_id"].as_str().unwrap().to_string();
        assert!(!call_id.is_empty());
        // The next turn carries the call and its output, statelessly (as Codex does).
        let mut turn = codex_turn(model, "CALL_TOOL please");
        let input = turn["input"].as_array_mut().unwrap();
        input.push(call.clone());
        input.push(json!({"type": "function_call_output", "call_id": call_id, "output": "hello-from-mock-tool\n"}));
        let r = post(&gw, "/v1/responses", &key, turn).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let (last, items) = check_stream(&text);
        assert_eq!(last["type"], "response.completed", "{model}: {text}");
        let msg = items.iter().find(|i| i["type"] == "message").unwrap();
        let said = msg["content"][0]["text"].as_str().unwrap();
        assert!(
            said.starts_with("Tool said:") && said.contains("hello-from-mock-tool"),
            "{model}: {said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_non_stream_and_refusals() {
    let (mock, gw) = start().await;
    let key = gw.create_key("t").await;
    for (model, _) in SELECTORS {
        let r = post(&gw, "/v1/responses", &key, json!({"model": model, "input": "hi", "instructions": "be brief", "max_output_tokens": 50})).await;
        assert_eq!(r.status(), 200, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "response", "{model}: {v}");
        assert_eq!(v["status"], "completed");
        if *model != "openai:gpt-5.5" {
            assert_eq!(v["model"], *model, "translations echo the client's model");
        }
        let text: String = v["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["type"] == "message")
            .map(|i| i["content"][0]["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(text, "Hello from mock upstream!", "{model}");
        assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
    }
    // previous_response_id: passthrough keeps it (OpenAI stores); translation resolves it
    // from tollgate's stored responses, and refuses one it does not have as OpenAI does
    // (tests/stored_responses.rs has the chains).
    mock.clear();
    let r = post(
        &gw,
        "/v1/responses",
        &key,
        json!({"model": "openai:gpt-5.5", "input": "hi", "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(mock.requests()[0].json()["previous_response_id"], "resp_1");
    for model in [
        "chatonly:llama-3.3-70b",
        "anthropic:claude-sonnet-4-6",
        "gemini:gemini-2.5-flash",
    ] {
        mock.clear();
        let r = post(
            &gw,
            "/v1/responses",
            &key,
            json!({"model": model, "input": "hi", "previous_response_id": "resp_1"}),
        )
        .await;
        assert_eq!(r.status(), 400, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], "previous_response_id");
        assert_eq!(v["error"]["code"], "previous_response_not_found");
        assert!(mock.requests().is_empty(), "nothing reaches the provider");
        let r = post(&gw, "/v1/responses", &key, json!({"model": model, "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}})).await;
        assert_eq!(r.status(), 400, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stream_that_breaks_ends_with_response_failed() {
    let (_mock, gw) = start().await;
    let key = gw.create_key("t").await;
    for (model, _) in SELECTORS {
        for fault in ["truncate", "event-error"] {
            let r = client()
                .post(format!("{}/v1/responses", gw.url()))
                .header("authorization", format!("Bearer {key}"))
                .header("x-mock-fault", fault)
                .json(&codex_turn(model, "say hi"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{model} {fault}");
            let text = r.text().await.unwrap();
            let evs = events(&text);
            let last = &evs.last().unwrap().1;
            assert_eq!(last["type"], "response.failed", "{model} {fault}: {text}");
            assert_eq!(last["response"]["status"], "failed");
            assert!(last["response"]["error"]["code"].is_string());
            assert!(!text.contains("response.completed"), "{model} {fault}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_format_on_gemini() {
    let (mock, gw) = start().await;
    let key = gw.create_key("t").await;
    // Chat client, streamed with usage.
    let mut body = chat("gemini:gemini-2.5-flash", true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&gw, "/v1/chat/completions", &key, body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let evs = events(&text);
    let content: String = evs
        .iter()
        .filter_map(|(_, v)| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(content, "Hello from mock upstream!");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let usage = evs.iter().find(|(_, v)| v["usage"].is_object()).unwrap();
    assert!(usage.1["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let up = &mock.requests()[0];
    assert_eq!(up.header("x-goog-api-key"), Some("gm-provider-key"));
    assert!(
        up.header("authorization").is_none(),
        "the virtual key never goes upstream"
    );
    assert_eq!(up.query.as_deref(), Some("alt=sse"));
    // Chat client, not streamed.
    let r = post(
        &gw,
        "/v1/chat/completions",
        &key,
        chat("gemini:gemini-2.5-flash", false),
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from mock upstream!"
    );
    assert_eq!(v["model"], "gemini:gemini-2.5-flash");
    // Anthropic client, streamed, with a tool call.
    let mut body = messages("gemini:gemini-2.5-flash", true);
    body["messages"] = json!([{"role": "user", "content": "CALL_TOOL now"}]);
    body["tools"] = json!([{"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]);
    let r = post(&gw, "/v1/messages", &key, body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let evs = events(&text);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"), "{text}");
    let tool = evs
        .iter()
        .find(|(_, v)| v.pointer("/content_block/type") == Some(&json!("tool_use")))
        .unwrap();
    assert_eq!(tool.1["content_block"]["name"], "Bash");
    let delta = evs
        .iter()
        .find(|(_, v)| v.pointer("/delta/stop_reason").is_some())
        .unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    // A prompt Gemini blocks is a refusal to the Anthropic client and content_filter to chat.
    let mut body = messages("gemini:gemini-2.5-flash", false);
    body["messages"] = json!([{"role": "user", "content": "BLOCK_ME"}]);
    let v: Value = post(&gw, "/v1/messages", &key, body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "refusal", "{v}");
    let mut body = chat("gemini:gemini-2.5-flash", false);
    body["messages"] = json!([{"role": "user", "content": "BLOCK_ME"}]);
    let v: Value = post(&gw, "/v1/chat/completions", &key, body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter", "{v}");
    // An upstream error keeps its status and becomes the client's envelope.
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", &key)
        .header("x-mock-status", "429")
        .header("x-mock-retry-after", "3")
        .json(&messages("gemini:gemini-2.5-flash", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_moderations_and_one_model() {
    let (mock, gw) = start().await;
    let key = gw.create_key("t").await;
    let r = post(
        &gw,
        "/v1/embeddings",
        &key,
        json!({"model": "openai:text-embedding-3-small", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(mock.requests()[0].path, "/v1/embeddings");
    assert_eq!(mock.requests()[0].json()["model"], "text-embedding-3-small");
    let r = post(&gw, "/v1/moderations", &key, json!({"input": "hello"})).await;
    assert_eq!(r.status(), 200);
    let r = post(
        &gw,
        "/v1/embeddings",
        &key,
        json!({"model": "gemini:gemini-2.5-flash", "input": "a"}),
    )
    .await;
    assert_eq!(r.status(), 400, "a provider that cannot embed says so");
    // Embeddings are metered like everything else.
    let usage = usage_by_model(&gw, 2).await;
    let row = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == "openai:text-embedding-3-small")
        .unwrap_or_else(|| panic!("{usage}"));
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
    let r = client()
        .get(format!("{}/v1/models/gpt-4o-mini", gw.url()))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "gpt-4o-mini");
    assert_eq!(v["object"], "model");
}
