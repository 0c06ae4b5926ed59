//! Stored Responses on translated models, through the real binary against the mock upstream:
//! `previous_response_id` chains on Anthropic-, chat- and Gemini-format providers (streamed
//! and not), `item_reference`, the read/delete/input_items/cancel endpoints, isolation
//! between keys, retention, restarts, and two instances sharing a PostgreSQL store.

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// The usual providers, plus a chat-only OpenAI-kind one and a Gemini one, on the mock.
fn config(mock: &str) -> TestConfig {
    TestConfig::new(mock)
        .provider(
            "chatonly",
            json!({"kind": "openai", "base_url": format!("{mock}/v1"), "api_key": "sk-chat-provider-key", "native_responses": false, "models": ["llama-3.3-70b"]}),
        )
        .provider(
            "gemini",
            json!({"kind": "gemini", "base_url": mock, "api_key": "gm-provider-key", "models": ["gemini-2.5-flash"]}),
        )
}

async fn start_with(cfg: TestConfig) -> Gateway {
    tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap()
}

async fn spawn_in(dir: &Path, cfg: TestConfig) -> Gateway {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || Gateway::spawn_in(&dir, cfg.file(), &[]))
        .await
        .unwrap()
}

const MODELS: &[&str] = &[
    "anthropic:claude-sonnet-4-6",
    "chatonly:llama-3.3-70b",
    "gemini:gemini-2.5-flash",
];

/// Status and JSON body of a request.
async fn call(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client()
        .request(method, format!("{}{}", gw.url(), path))
        .bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Sends a Responses request and returns its status and the response object (for a stream:
/// the one its terminal event carries), with the request id it was sent with.
async fn respond(gw: &Gateway, key: &str, body: Value) -> (u16, Value, String) {
    let rid = format!("req-{}", rand_id());
    let stream = body["stream"].as_bool().unwrap_or(false);
    let r = client()
        .post(format!("{}/v1/responses", gw.url()))
        .bearer_auth(key)
        .header("x-request-id", &rid)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    if status != 200 || !stream {
        return (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            rid,
        );
    }
    let evs = events(&text);
    let (name, last) = evs.last().cloned().unwrap();
    assert_eq!(name, "response.completed", "{text}");
    (status, last["response"].clone(), rid)
}

fn rand_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    format!("{:016x}", h.finish())
}

/// The body of the last request the mock received.
fn last_upstream(mock: &MockServer) -> String {
    let reqs = mock.requests();
    String::from_utf8(reqs.last().expect("an upstream request").body.clone()).unwrap()
}

/// Positions of `needles` in `hay`, which must appear in that order.
fn in_order(hay: &str, needles: &[&str]) {
    let mut from = 0;
    for n in needles {
        let at = hay[from..]
            .find(n)
            .unwrap_or_else(|| panic!("'{n}' not found (in order) in {hay}"));
        from += at + n.len();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_of_three_turns_on_every_provider_format_streamed_and_not() {
    let mock = MockServer::start().await;
    let gw = start_with(config(&mock.url())).await;
    let key = gw.create_key("chains").await;
    for model in MODELS {
        for stream in [false, true] {
            let what = format!("{model} stream={stream}");
            let mut previous: Option<String> = None;
            for (turn, question) in ["first-question", "second-question", "third-question"]
                .iter()
                .enumerate()
            {
                let mut body = json!({"model": model, "stream": stream, "input": question});
                if let Some(p) = &previous {
                    body["previous_response_id"] = json!(p);
                }
                let (status, r, rid) = respond(&gw, &key, body).await;
                assert_eq!(status, 200, "{what} turn {turn}: {r}");
                assert_eq!(r["status"], "completed", "{what}");
                assert_eq!(r["store"], true, "{what}: stored by default");
                assert_eq!(
                    r["previous_response_id"].as_str(),
                    previous.as_deref(),
                    "{what}: the answer names the response it continued"
                );
                // The provider received the whole history, oldest first.
                let up = last_upstream(&mock);
                let mut expected: Vec<&str> = Vec::new();
                for q in ["first-question", "second-question", "third-question"]
                    .iter()
                    .take(turn)
                {
                    expected.push(q);
                    expected.push("Hello from mock upstream!");
                }
                expected.push(question);
                in_order(&up, &expected);
                // Usage is what the provider reported for that whole prompt (the mock counts
                // a token per 4 bytes of the body it received).
                let reported = (up.len() as u64 / 4).max(1);
                assert_eq!(
                    r["usage"]["input_tokens"].as_u64(),
                    Some(reported),
                    "{what} turn {turn}"
                );
                let rec = usage_record(&gw, &rid).await.expect("usage record");
                assert_eq!(rec["prompt_tokens"].as_u64(), Some(reported), "{what}");
                previous = Some(r["id"].as_str().unwrap().to_string());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_references_are_replaced_by_the_stored_items() {
    let mock = MockServer::start().await;
    let gw = start_with(config(&mock.url())).await;
    let key = gw.create_key("refs").await;
    let tools = json!([{"type": "function", "name": "Bash", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}]);
    for model in MODELS {
        for stream in [false, true] {
            let (status, r, _) = respond(
                &gw,
                &key,
                json!({"model": model, "stream": stream, "tools": tools, "input": [
                    {"role": "user", "content": "CALL_TOOL now"}]}),
            )
            .await;
            assert_eq!(status, 200, "{model}: {r}");
            let output = r["output"].as_array().unwrap();
            let call = output
                .iter()
                .find(|i| i["type"] == "function_call")
                .unwrap_or_else(|| panic!("{model}: no call in {r}"));
            // The next step refers to the output items instead of resending them (the
            // Vercel AI SDK's way with store on), then adds the tool's result.
            let mut input = vec![json!({"role": "user", "content": "CALL_TOOL now"})];
            for item in output {
                input.push(json!({"type": "item_reference", "id": item["id"]}));
            }
            input.push(json!({"type": "function_call_output", "call_id": call["call_id"], "output": "tool-result-42"}));
            let (status, r2, _) = respond(
                &gw,
                &key,
                json!({"model": model, "stream": stream, "tools": tools, "input": input}),
            )
            .await;
            assert_eq!(status, 200, "{model}: {r2}");
            let up = last_upstream(&mock);
            assert!(!up.contains("item_reference"), "{model}: {up}");
            assert!(up.contains("tool-result-42"), "{model}: {up}");
            assert!(
                up.contains("hello-from-mock-tool"),
                "{model}: the call's arguments"
            );
            let said = r2["output"][0]["content"][0]["text"].as_str().unwrap_or("");
            assert!(said.contains("tool-result-42"), "{model}: {r2}");
        }
    }
    // Anthropic's text before its call is in the stored output, and so in the next prompt.
    let up = last_upstream(&mock);
    assert!(!up.is_empty());
    // An unknown reference is refused, as OpenAI does.
    let (status, e, _) = respond(
        &gw,
        &key,
        json!({"model": MODELS[0], "input": [{"type": "item_reference", "id": "msg_nope"}]}),
    )
    .await;
    assert_eq!(status, 404, "{e}");
    assert_eq!(e["error"]["message"], "Item with id 'msg_nope' not found.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_delete_input_items_cancel_and_isolation_between_keys() {
    let mock = MockServer::start().await;
    let gw = start_with(config(&mock.url())).await;
    let owner = gw.create_key("owner").await;
    let other = gw.create_key("other").await;
    let input = json!([
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "two"}]},
    ]);
    let (status, r, _) = respond(
        &gw,
        &owner,
        json!({"model": MODELS[0], "input": input, "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(status, 200);
    let id = r["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_") && id.len() >= 5 + 18, "{id}");
    let get = reqwest::Method::GET;
    // GET returns the object the client received.
    let (s, got) = call(
        &gw,
        get.clone(),
        &format!("/v1/responses/{id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(got, r);
    let (s, got) = call(
        &gw,
        get.clone(),
        &format!("/v1/responses/{id}?include[]=reasoning.encrypted_content"),
        &owner,
        None,
    )
    .await;
    assert_eq!((s, &got["id"]), (200, &json!(id)));
    // input_items: newest first by default, paged with limit and after.
    let items = format!("/v1/responses/{id}/input_items");
    let (s, page) = call(&gw, get.clone(), &format!("{items}?limit=2"), &owner, None).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["content"][0]["text"], "two");
    assert_eq!(data[1]["content"], "one");
    assert!(data
        .iter()
        .all(|i| i["id"].is_string() && i["type"] == "message"));
    let after = page["last_id"].as_str().unwrap();
    let (_, page2) = call(
        &gw,
        get.clone(),
        &format!("{items}?limit=2&after={after}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert_eq!(page2["data"][0]["role"], "developer");
    assert_eq!(page2["has_more"], false);
    let (_, asc) = call(
        &gw,
        get.clone(),
        &format!("{items}?order=asc"),
        &owner,
        None,
    )
    .await;
    assert_eq!(asc["data"][0]["role"], "developer");
    assert_eq!(asc["data"].as_array().unwrap().len(), 3);
    // Another key sees nothing of it: not by GET, not by a chain, not by a reference.
    let not_found = json!({"error": {"message": format!("Response with id '{id}' not found."), "type": "invalid_request_error", "param": null, "code": null}});
    for path in [format!("/v1/responses/{id}"), items.clone()] {
        let (s, e) = call(&gw, get.clone(), &path, &other, None).await;
        assert_eq!((s, &e), (404, &not_found), "{path}");
    }
    let (s, e) = call(
        &gw,
        reqwest::Method::DELETE,
        &format!("/v1/responses/{id}"),
        &other,
        None,
    )
    .await;
    assert_eq!((s, &e), (404, &not_found));
    let (s, e, _) = respond(
        &gw,
        &other,
        json!({"model": MODELS[0], "input": "steal", "previous_response_id": id}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        e,
        json!({"error": {"message": format!("Previous response with id '{id}' not found."), "type": "invalid_request_error", "param": "previous_response_id", "code": "previous_response_not_found"}})
    );
    let msg_id = r["output"][0]["id"].as_str().unwrap();
    let (s, _, _) = respond(
        &gw,
        &other,
        json!({"model": MODELS[0], "input": [{"type": "item_reference", "id": msg_id}]}),
    )
    .await;
    assert_eq!(s, 404);
    assert!(
        !last_upstream(&mock).contains("steal"),
        "nothing was sent upstream for another key's chain"
    );
    // The master key reads any.
    let (s, _) = call(
        &gw,
        get.clone(),
        &format!("/v1/responses/{id}"),
        MASTER,
        None,
    )
    .await;
    assert_eq!(s, 200);
    // cancel: not a background response.
    let (s, e) = call(
        &gw,
        reqwest::Method::POST,
        &format!("/v1/responses/{id}/cancel"),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    // DELETE, then it is gone for reads and chains.
    let (s, d) = call(
        &gw,
        reqwest::Method::DELETE,
        &format!("/v1/responses/{id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(
        (s, d),
        (
            200,
            json!({"id": id, "object": "response.deleted", "deleted": true})
        )
    );
    let (s, _) = call(
        &gw,
        get.clone(),
        &format!("/v1/responses/{id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, e, _) = respond(
        &gw,
        &owner,
        json!({"model": MODELS[0], "input": "again", "previous_response_id": id}),
    )
    .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (400, &json!("previous_response_not_found"))
    );
    // store: false stores nothing.
    let (_, r, _) = respond(
        &gw,
        &owner,
        json!({"model": MODELS[1], "input": "x", "store": false}),
    )
    .await;
    assert_eq!(r["store"], false);
    let rid = r["id"].as_str().unwrap();
    let (s, _) = call(&gw, get, &format!("/v1/responses/{rid}"), &owner, None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_store_off_keeps_the_stateless_refusal() {
    let mock = MockServer::start().await;
    let gw = start_with(config(&mock.url()).set("responses", json!({"store": false}))).await;
    let key = gw.create_key("off").await;
    let (s, r, _) = respond(&gw, &key, json!({"model": MODELS[0], "input": "hi"})).await;
    assert_eq!(s, 200);
    let id = r["id"].as_str().unwrap();
    let (s, _) = call(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/responses/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, e, _) = respond(
        &gw,
        &key,
        json!({"model": MODELS[0], "input": "hi", "previous_response_id": id}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not store responses"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_stored_responses_and_retention_prunes_them() {
    let mock = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // A restart keeps them (written to sled by the response writer).
    let mut gw = spawn_in(tmp.path(), config(&mock.url())).await;
    let key = gw.create_key("restart").await;
    let (_, r, _) = respond(
        &gw,
        &key,
        json!({"model": MODELS[2], "input": "remember-me"}),
    )
    .await;
    let id = r["id"].as_str().unwrap().to_string();
    gw.stop();
    drop(gw);
    let mut gw = spawn_in(tmp.path(), config(&mock.url())).await;
    let (s, got) = call(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/responses/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!((s, &got), (200, &r));
    let (s, _, _) = respond(
        &gw,
        &key,
        json!({"model": MODELS[2], "input": "and-now", "previous_response_id": id}),
    )
    .await;
    assert_eq!(s, 200);
    in_order(&last_upstream(&mock), &["remember-me", "and-now"]);
    gw.stop();
    drop(gw);
    // With a two-second retention, the keeper prunes them from the store: a gateway with
    // the default retention started on the same data afterwards finds none.
    let short = config(&mock.url()).set("responses", json!({"retention_days": 2.0 / 86_400.0}));
    let mut gw = spawn_in(tmp.path(), short).await;
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    gw.stop();
    drop(gw);
    let gw = spawn_in(tmp.path(), config(&mock.url())).await;
    let (s, _) = call(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/responses/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(s, 404, "pruned past its retention");
    assert!(
        !gw.stderr_text().contains("panicked"),
        "{}",
        gw.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_postgres_share_stored_responses() {
    let Some(url) = pg_url() else { return };
    let mock = MockServer::start().await;
    let schema = format!("sr_{}", &rand_id()[..12]);
    let cfg = config(&mock.url()).postgres(
        &url,
        &schema,
        json!({"sync_interval_ms": 100, "connect_timeout_ms": 2000}),
    );
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_in(d1.path(), cfg.clone()).await;
    let b = spawn_in(d2.path(), cfg).await;
    let key = a.create_key("shared").await;
    // The key reaches the other instance through the change feed.
    let mut ready = false;
    for _ in 0..50 {
        let (s, _) = call(&b, reqwest::Method::GET, "/v1/key/info", &key, None).await;
        if s == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the key reached instance b");
    let (s, r, _) = respond(&a, &key, json!({"model": MODELS[0], "input": "on-a"})).await;
    assert_eq!(s, 200);
    let id = r["id"].as_str().unwrap().to_string();
    // Written within a writer cycle; instance b reads it from the database.
    let mut got = (0, Value::Null);
    for _ in 0..50 {
        got = call(
            &b,
            reqwest::Method::GET,
            &format!("/v1/responses/{id}"),
            &key,
            None,
        )
        .await;
        if got.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, (200, r));
    let (s, r2, _) = respond(
        &b,
        &key,
        json!({"model": MODELS[1], "stream": true, "input": "on-b", "previous_response_id": id}),
    )
    .await;
    assert_eq!(s, 200);
    in_order(
        &last_upstream(&mock),
        &["on-a", "Hello from mock upstream!", "on-b"],
    );
    // And a deletes what b produced.
    let id2 = r2["id"].as_str().unwrap().to_string();
    let mut deleted = 0;
    for _ in 0..50 {
        deleted = call(
            &a,
            reqwest::Method::DELETE,
            &format!("/v1/responses/{id2}"),
            &key,
            None,
        )
        .await
        .0;
        if deleted == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(deleted, 200);
    let (s, _) = call(
        &b,
        reqwest::Method::GET,
        &format!("/v1/responses/{id2}"),
        &key,
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_size_cap_is_answered_but_not_stored() {
    let mock = MockServer::start().await;
    let gw =
        start_with(config(&mock.url()).set("responses", json!({"max_response_bytes": 300}))).await;
    let key = gw.create_key("cap").await;
    let (s, r, _) = respond(&gw, &key, json!({"model": MODELS[1], "input": "big"})).await;
    assert_eq!(s, 200);
    assert_eq!(
        r["output"][0]["content"][0]["text"],
        "Hello from mock upstream!"
    );
    let id = r["id"].as_str().unwrap();
    let (s, _) = call(
        &gw,
        reqwest::Method::GET,
        &format!("/v1/responses/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert!(gw
        .stderr_text()
        .contains("over responses.max_response_bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_hold_the_history_of_responses_made_in_them() {
    let mock = MockServer::start().await;
    let gw = start_with(config(&mock.url())).await;
    let key = gw.create_key("conv").await;
    let other = gw.create_key("other").await;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let (s, conv) = call(
        &gw,
        post.clone(),
        "/v1/conversations",
        &key,
        Some(json!({"items": [{"role": "user", "content": "conv-seed"}], "metadata": {"topic": "t"}})),
    )
    .await;
    assert_eq!(s, 200, "{conv}");
    let id = conv["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("conv_"));
    assert_eq!(
        (&conv["object"], &conv["metadata"]),
        (&json!("conversation"), &json!({"topic": "t"}))
    );
    for (n, (model, stream)) in [(MODELS[0], false), (MODELS[2], true)].iter().enumerate() {
        let q = format!("conv-turn-{n}");
        let (s, r, _) = respond(
            &gw,
            &key,
            json!({"model": model, "stream": stream, "input": q, "conversation": id}),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["conversation"], json!({"id": id}));
        let mut expected = vec!["conv-seed"];
        if n == 1 {
            expected.extend(["conv-turn-0", "Hello from mock upstream!"]);
        }
        expected.push(&q);
        in_order(&last_upstream(&mock), &expected);
    }
    // Items: the seed, then each turn's input and output; newest first by default.
    let items = format!("/v1/conversations/{id}/items");
    let (s, list) = call(&gw, get.clone(), &format!("{items}?order=asc"), &key, None).await;
    assert_eq!(s, 200);
    let texts: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| match &i["content"] {
            Value::String(t) => t.clone(),
            c => c[0]["text"].as_str().unwrap_or("").to_string(),
        })
        .collect();
    assert_eq!(
        texts,
        [
            "conv-seed",
            "conv-turn-0",
            "Hello from mock upstream!",
            "conv-turn-1",
            "Hello from mock upstream!"
        ]
    );
    let (_, newest) = call(&gw, get.clone(), &format!("{items}?limit=1"), &key, None).await;
    assert_eq!(newest["data"][0]["role"], "assistant");
    assert_eq!(newest["has_more"], true);
    // Added items, one read back, one deleted.
    let (s, added) = call(
        &gw,
        post.clone(),
        &items,
        &key,
        Some(json!({"items": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "added"}]}]})),
    )
    .await;
    assert_eq!(s, 200, "{added}");
    let item_id = added["data"][0]["id"].as_str().unwrap().to_string();
    let (s, item) = call(&gw, get.clone(), &format!("{items}/{item_id}"), &key, None).await;
    assert_eq!((s, &item["content"][0]["text"]), (200, &json!("added")));
    let (s, _) = call(
        &gw,
        reqwest::Method::DELETE,
        &format!("{items}/{item_id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(&gw, get.clone(), &format!("{items}/{item_id}"), &key, None).await;
    assert_eq!(s, 404);
    // Metadata update.
    let (s, c) = call(
        &gw,
        post.clone(),
        &format!("/v1/conversations/{id}"),
        &key,
        Some(json!({"metadata": {"topic": "u"}})),
    )
    .await;
    assert_eq!((s, &c["metadata"]), (200, &json!({"topic": "u"})));
    // Another key: nothing.
    let (s, _) = call(
        &gw,
        get.clone(),
        &format!("/v1/conversations/{id}"),
        &other,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, _) = respond(
        &gw,
        &other,
        json!({"model": MODELS[0], "input": "x", "conversation": id}),
    )
    .await;
    assert_eq!(s, 404);
    // Not with previous_response_id.
    let (s, e, _) = respond(
        &gw,
        &key,
        json!({"model": MODELS[0], "input": "x", "conversation": id, "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!((s, &e["error"]["param"]), (400, &json!("conversation")));
    // Deleted: gone.
    let (s, d) = call(
        &gw,
        reqwest::Method::DELETE,
        &format!("/v1/conversations/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(
        (s, d),
        (
            200,
            json!({"id": id, "object": "conversation.deleted", "deleted": true})
        )
    );
    let (s, _) = call(&gw, get, &format!("/v1/conversations/{id}"), &key, None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_reservation_includes_the_history_of_a_chain() {
    let mock = MockServer::start().await;
    // A micro-dollar per token; a budget that holds one 1,000-token prompt, not two.
    let gw = start_with(config(&mock.url()).pricing("anthropic:claude-sonnet-4-6", 1, 1)).await;
    let (s, key) = admin_call(
        &gw.url(),
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "budgeted", "max_budget": "0.001500"})),
    )
    .await;
    assert_eq!(s, 201);
    let key = key["key"].as_str().unwrap().to_string();
    let turn = |input: String, previous: Option<&str>| {
        let mut b = json!({"model": MODELS[0], "input": input, "max_output_tokens": 16});
        if let Some(p) = previous {
            b["previous_response_id"] = json!(p);
        }
        client()
            .post(format!("{}/v1/responses", gw.url()))
            .bearer_auth(&key)
            .header("x-mock-usage", "10,1")
            .json(&b)
            .send()
    };
    let r = turn("a".repeat(4000), None).await.unwrap();
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    let sent = mock.requests().len();
    // The same-sized second prompt alone would fit; with the first one's history it does not.
    let r = turn("b".repeat(4000), first["id"].as_str()).await.unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "budget_exceeded", "{e}");
    assert_eq!(mock.requests().len(), sent, "refused before the provider");
    let r = turn("b".repeat(4000), None).await.unwrap();
    assert_eq!(r.status(), 200);
}
