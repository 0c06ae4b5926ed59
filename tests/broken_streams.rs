//! How a stream that breaks mid-way ends, for every client format, every upstream format and
//! both forwarding paths (passthrough and translated), against the real binary and the mock.
//!
//! The endings are the ones the real clients retry (docs/translation.md, "Stream lifecycle"):
//! - Anthropic clients: an `event: error` right after the last delta, with the open content
//!   block left open. A `content_block_stop` before the error makes Claude Code treat the
//!   block as complete and give up (or, before a bare close, take the partial text as the
//!   whole answer).
//! - Chat clients: an error chunk, no `finish_reason`, no `[DONE]` (the OpenAI SDK raises).
//! - Responses clients: `response.failed`, never `response.completed` (Codex reconnects).
//!
//! Every broken attempt is settled: a usage record with the tokens that were delivered.

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    Anthropic,
    Chat,
    Responses,
}

const FAULTS: [&str; 4] = ["truncate", "reset-mid-stream", "event-error", "stall"];

fn cases() -> Vec<(Client, &'static str)> {
    vec![
        (Client::Anthropic, "anthropic:claude-x"),
        (Client::Anthropic, "openai:gpt-4o-mini"),
        (Client::Anthropic, "chatonly:llama-x"),
        (Client::Anthropic, "gemini:gemini-2.5-flash"),
        (Client::Chat, "openai:gpt-4o-mini"),
        (Client::Chat, "anthropic:claude-x"),
        (Client::Chat, "gemini:gemini-2.5-flash"),
        (Client::Responses, "openai:gpt-4o-mini"),
        (Client::Responses, "chatonly:llama-x"),
        (Client::Responses, "anthropic:claude-x"),
        (Client::Responses, "gemini:gemini-2.5-flash"),
    ]
}

fn request(c: Client, model: &str) -> (&'static str, Value) {
    match c {
        Client::Anthropic => ("/v1/messages", messages(model, true)),
        Client::Chat => ("/v1/chat/completions", chat(model, true)),
        Client::Responses => (
            "/v1/responses",
            json!({"model": model, "stream": true, "input": "hi"}),
        ),
    }
}

/// Checks the client's stream ending; returns what was wrong, if anything.
fn check_ending(c: Client, text: &str) -> Result<(), String> {
    let evs = events(text);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    match c {
        Client::Anthropic => {
            let at = names
                .iter()
                .position(|n| *n == "error")
                .ok_or("no `event: error`")?;
            if at + 1 != evs.len() {
                return Err(format!("events after the error: {:?}", &names[at + 1..]));
            }
            if names.contains(&"message_stop") {
                return Err("message_stop on a broken stream".into());
            }
            if at > 0 && names[at - 1] == "content_block_stop" {
                return Err(format!(
                    "content_block_stop right before the error: {names:?}"
                ));
            }
            let starts = names
                .iter()
                .filter(|n| **n == "content_block_start")
                .count();
            let stops = names.iter().filter(|n| **n == "content_block_stop").count();
            let deltas = names
                .iter()
                .filter(|n| **n == "content_block_delta")
                .count();
            if deltas > 0 && stops >= starts {
                return Err(format!("the open block was closed: {names:?}"));
            }
            Ok(())
        }
        Client::Chat => {
            if text.contains("data: [DONE]") {
                return Err("[DONE] on a broken stream".into());
            }
            let last = &evs.last().ok_or("empty stream")?.1;
            if !last["error"]["message"].is_string() {
                return Err(format!("last chunk is not an error: {last}"));
            }
            let finished = evs.iter().any(|(_, v)| {
                v["choices"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|ch| !ch["finish_reason"].is_null())
            });
            if finished {
                return Err("a finish_reason on a broken stream".into());
            }
            Ok(())
        }
        Client::Responses => {
            if names.contains(&"response.completed") {
                return Err("response.completed on a broken stream".into());
            }
            match names.last() {
                Some(&"response.failed") => Ok(()),
                other => Err(format!("last event is {other:?}, not response.failed")),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_broken_stream_ends_the_way_its_client_retries() {
    let mock = MockServer::start().await;
    let url = mock.url();
    let idle = 800;
    let cfg = TestConfig::new(&url)
        .provider_set("openai", "stream_idle_timeout_ms", idle)
        .provider_set("anthropic", "stream_idle_timeout_ms", idle)
        .provider(
            "chatonly",
            json!({"kind": "openai", "base_url": format!("{url}/v1"), "api_key": "sk-chat-provider-key", "native_responses": false, "stream_idle_timeout_ms": idle}),
        )
        .provider(
            "gemini",
            json!({"kind": "gemini", "base_url": url, "api_key": "gm-provider-key", "stream_idle_timeout_ms": idle}),
        );
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("broken").await;
    let mut failures = Vec::new();
    let mut n = 0;
    for (c, model) in cases() {
        for fault in FAULTS {
            n += 1;
            let id = format!("broken-{n}");
            let (path, body) = request(c, model);
            let mut req = client()
                .post(format!("{}{path}", gw.url()))
                .timeout(Duration::from_secs(20))
                .header("x-request-id", &id)
                .header("x-mock-fault", fault)
                .header("x-mock-pieces", "12")
                .json(&body);
            req = if c == Client::Anthropic {
                req.header("x-api-key", &key)
            } else {
                req.bearer_auth(&key)
            };
            let case = format!("{c:?} on {model}, {fault}");
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{case}: send error {e}"));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            // A cut connection on our side would be a failure too: read to the end.
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => {
                    failures.push(format!("{case}: the client's stream was cut: {e}"));
                    continue;
                }
            };
            if status != 200 {
                failures.push(format!("{case}: status {status}"));
                continue;
            }
            if let Err(why) = check_ending(c, &text) {
                failures.push(format!("{case}: {why}\n{text}"));
            }
            match usage_record(&gw, &id).await {
                None => failures.push(format!("{case}: no usage record")),
                Some(rec) => {
                    let deltas = text.matches("delta").count() as u64;
                    let delivered = deltas > 0;
                    let out = rec["completion_tokens"].as_u64().unwrap_or(0);
                    if delivered && out == 0 {
                        failures.push(format!(
                            "{case}: text was delivered but the usage record bills no output: {rec}"
                        ));
                    }
                    // Billed for what was delivered, not for the stream's framing bytes.
                    if out > 2 * deltas + 2 {
                        failures.push(format!(
                            "{case}: {out} output tokens billed for {deltas} deltas delivered: {rec}"
                        ));
                    }
                    eprintln!(
                        "{case}: ok, completion_tokens {out} estimated {}",
                        rec["estimated"]
                    );
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
}
