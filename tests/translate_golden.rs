//! Golden tests for the translators (A↔C, G↔C, and R↔C with its compositions R→C→A, R→C→G,
//! A→C→R, G→C→R): each folder of tests/fixtures/translate holds an input (a request, a
//! response or an SSE capture), the expected output beside it, and a meta.json naming the
//! direction. One case per edge case of docs/translation.md that applies, plus real Claude Code
//! and Codex captures. `UPDATE_GOLDEN=1` records outputs (review the diff!).
//!
//! Streams are also checked for the "any split" property: the output is identical whether the
//! input arrives whole, split at every byte position, or one byte at a time. Every Responses
//! stream (recorded or not) must also pass the grammar check in [`check_responses`].

use bytes::BytesMut;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use tollgate::translate::responses_to_chat::{self, ResponsesContext};
use tollgate::translate::shared::ToolNames;
use tollgate::translate::{
    anthropic_to_chat, chat_to_anthropic, chat_to_gemini, chat_to_responses, gemini_to_chat, Chain,
    Stamp, StreamTranscoder,
};

/// What a transcoder would otherwise take from the random source and the clock. Ids read
/// `msg_golden`, `chatcmpl-golden` and `resp_golden000000000000000` (Responses item ids take
/// 16 characters of the token); streams are stamped 1_700_000_000, whole answers 0.
fn stamp(responses: bool, stream: bool) -> Stamp {
    let token = if responses {
        "golden000000000000000"
    } else {
        "golden"
    };
    Stamp::new(token, if stream { 1_700_000_000 } else { 0 })
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate")
}

fn meta_str<'a>(m: &'a Value, k: &str, d: &'a str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or(d)
}

fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Parses SSE text into comparable (event, data) pairs; data is JSON when it parses.
fn events(text: &str) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    let mut p = tollgate::translate::sse::SseParser::new();
    let mut push = |e: tollgate::translate::sse::SseEvent| {
        out.push((
            e.event,
            serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)),
        ));
    };
    p.feed(text.as_bytes(), &mut push);
    p.finish(&mut push);
    out
}

fn transcoder(kind: &str, meta: &Value) -> Box<dyn StreamTranscoder> {
    let include_usage = meta
        .get("include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let names = ToolNames::default;
    let chat = stamp(false, true);
    let resp = stamp(true, true);
    match kind {
        "chat_stream_to_anthropic" => Box::new(chat_to_anthropic::ChatToAnthropicStream::new(
            "claude-client",
            42,
            names(),
            &chat,
        )),
        "anthropic_stream_to_chat" => Box::new(anthropic_to_chat::AnthropicToChatStream::new(
            "gpt-client",
            include_usage,
            names(),
            &chat,
        )),
        "gemini_stream_to_chat" => Box::new(gemini_to_chat::GeminiToChatStream::new(
            "gpt-client",
            include_usage,
            names(),
            &chat,
        )),
        "chat_stream_to_responses" => Box::new(responses_writer(meta)),
        // A → C → R and G → C → R, as the pipeline composes them (the first stage always
        // asks for usage).
        "anthropic_stream_to_responses" => Box::new(Chain::new(
            Box::new(anthropic_to_chat::AnthropicToChatStream::new(
                "codex-client",
                true,
                names(),
                &resp,
            )),
            Box::new(responses_writer(meta)),
        )),
        "gemini_stream_to_responses" => Box::new(Chain::new(
            Box::new(gemini_to_chat::GeminiToChatStream::new(
                "codex-client",
                true,
                names(),
                &resp,
            )),
            Box::new(responses_writer(meta)),
        )),
        _ => unreachable!(),
    }
}

/// What the response side knows about the R request: meta.json "request" (the Responses
/// request whose tools decide how calls come back), or a bare context.
fn responses_context(meta: &Value) -> ResponsesContext {
    match meta.get("request") {
        Some(r) => {
            responses_to_chat::request(
                &obj(r),
                &responses_to_chat::RequestOptions {
                    upstream_model: "up-model".into(),
                    stream: true,
                },
            )
            .expect("meta.request is a valid Responses request")
            .1
        }
        None => ResponsesContext::new(meta_str(meta, "client_model", "codex-client")),
    }
}

fn responses_writer(meta: &Value) -> chat_to_responses::ChatToResponsesStream {
    chat_to_responses::ChatToResponsesStream::new(responses_context(meta), &stamp(true, true))
}

/// An item of a Responses stream being checked.
#[derive(Default)]
struct Open {
    id: String,
    kind: String,
    /// Sub-part state: 0 none yet, 1 part open, 2 part done.
    part: u8,
    text: String,
    done: Option<Value>,
}

/// The open item an event addresses (by `output_index`), checked against its `item_id` and
/// the item kinds the event may address.
fn open_item<'a>(items: &'a mut [Open], d: &Value, kinds: &[&str]) -> Result<&'a mut Open, String> {
    let Some(it) = d["output_index"]
        .as_u64()
        .and_then(|n| items.get_mut(n as usize))
    else {
        return Err("no such output_index".into());
    };
    if it.done.is_some() {
        return Err("item already done".into());
    }
    if d.get("item_id").is_some() && d["item_id"] != it.id.as_str() {
        return Err(format!("item_id {} is not {}", d["item_id"], it.id));
    }
    if !kinds.contains(&it.kind.as_str()) {
        return Err(format!("not for a {} item", it.kind));
    }
    Ok(it)
}

/// The Responses stream grammar and what Codex needs (docs/translation.md, E07):
/// `sequence_number` from 0 and consecutive, `event:` equal to `type`, created then
/// in_progress first, items opened in `output_index` order with their sub-grammar (parts,
/// arguments, summaries) and a matching full `output_item.done`, exactly one terminal event,
/// last, whose response carries every finished item and complete usage.
fn check_responses(evs: &[(Option<String>, Value)]) -> Result<(), String> {
    let ty = |d: &Value| d["type"].as_str().unwrap_or("").to_string();
    let first: Vec<String> = evs.iter().take(2).map(|(_, d)| ty(d)).collect();
    if first != ["response.created", "response.in_progress"] {
        return Err(format!("stream starts with {first:?}"));
    }
    let resp_id = evs[0]
        .1
        .pointer("/response/id")
        .cloned()
        .unwrap_or_default();
    if !resp_id.is_string() {
        return Err("response.created has no response id".into());
    }
    if evs[0].1.pointer("/response/output") != Some(&serde_json::json!([])) {
        return Err("response.created must carry output: []".into());
    }
    let mut items: Vec<Open> = Vec::new();
    let mut terminal = None;
    for (i, (name, d)) in evs.iter().enumerate() {
        let t = ty(d);
        let at = |m: String| format!("event {i} ({t}): {m}");
        if name.as_deref() != Some(t.as_str()) {
            return Err(at(format!("event name {name:?}")));
        }
        if d["sequence_number"].as_u64() != Some(i as u64) {
            return Err(at(format!("sequence_number {}", d["sequence_number"])));
        }
        if terminal.is_some() {
            return Err(at("event after the terminal event".into()));
        }
        let idx = d["output_index"].as_u64().map(|n| n as usize);
        match t.as_str() {
            "response.created" if i == 0 => {}
            "response.in_progress" => {
                if d["response"]["id"] != resp_id || d["response"]["status"] != "in_progress" {
                    return Err(at("bad in_progress response".into()));
                }
            }
            "response.output_item.added" => {
                if idx != Some(items.len()) {
                    return Err(at(format!(
                        "output_index {idx:?}, expected {}",
                        items.len()
                    )));
                }
                if let Some(open) = items.iter().find(|o| o.done.is_none()) {
                    return Err(at(format!("items interleave: {} is still open", open.id)));
                }
                let it = &d["item"];
                let kind = ty(it);
                let id = it["id"].as_str().unwrap_or("").to_string();
                if id.is_empty() || items.iter().any(|o| o.id == id) {
                    return Err(at(format!("item id {id:?} missing or repeated")));
                }
                if kind != "reasoning" && it["status"] != "in_progress" {
                    return Err(at("added item is not in_progress".into()));
                }
                if !matches!(
                    kind.as_str(),
                    "message" | "reasoning" | "function_call" | "custom_tool_call"
                ) {
                    return Err(at(format!("unexpected item type {kind}")));
                }
                items.push(Open {
                    id,
                    kind,
                    ..Open::default()
                });
            }
            "response.content_part.added" | "response.reasoning_summary_part.added" => {
                let it = open_item(&mut items, d, &["message", "reasoning"]).map_err(&at)?;
                if it.part != 0 {
                    return Err(at("second part".into()));
                }
                it.part = 1;
            }
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning_summary_text.delta" => {
                let it = open_item(&mut items, d, &["message", "reasoning"]).map_err(&at)?;
                if it.part != 1 {
                    return Err(at("delta outside an open part".into()));
                }
                it.text.push_str(d["delta"].as_str().unwrap_or(""));
            }
            "response.output_text.done"
            | "response.refusal.done"
            | "response.reasoning_summary_text.done" => {
                let key = if t == "response.refusal.done" {
                    "refusal"
                } else {
                    "text"
                };
                let it = open_item(&mut items, d, &["message", "reasoning"]).map_err(&at)?;
                if it.part != 1 || d[key] != it.text.as_str() {
                    return Err(at(format!("{key} is not the deltas joined")));
                }
            }
            "response.content_part.done" | "response.reasoning_summary_part.done" => {
                let it = open_item(&mut items, d, &["message", "reasoning"]).map_err(&at)?;
                if it.part != 1 {
                    return Err(at("part done twice or never added".into()));
                }
                it.part = 2;
            }
            "response.function_call_arguments.delta" => {
                open_item(&mut items, d, &["function_call"])
                    .map_err(&at)?
                    .text
                    .push_str(d["delta"].as_str().unwrap_or(""));
            }
            "response.function_call_arguments.done" => {
                let it = open_item(&mut items, d, &["function_call"]).map_err(&at)?;
                let args = d["arguments"].as_str().unwrap_or("");
                if args.is_empty() || (!it.text.is_empty() && args != it.text) {
                    return Err(at(format!("arguments {args:?} (deltas {:?})", it.text)));
                }
                it.text = args.to_string();
                it.part = 2;
            }
            "response.custom_tool_call_input.delta" => {
                open_item(&mut items, d, &["custom_tool_call"])
                    .map_err(&at)?
                    .text
                    .push_str(d["delta"].as_str().unwrap_or(""));
            }
            "response.custom_tool_call_input.done" => {
                let it = open_item(&mut items, d, &["custom_tool_call"]).map_err(&at)?;
                if d["input"] != it.text.as_str() {
                    return Err(at("input is not the deltas joined".into()));
                }
                it.part = 2;
            }
            "response.output_item.done" => {
                let full = d["item"].clone();
                let it = open_item(
                    &mut items,
                    d,
                    &["message", "reasoning", "function_call", "custom_tool_call"],
                )
                .map_err(&at)?;
                if full["id"] != it.id.as_str() || ty(&full) != it.kind {
                    return Err(at("done item is not the added one".into()));
                }
                if it.kind != "reasoning" && full["status"] != "completed" {
                    return Err(at("done item is not completed".into()));
                }
                let whole = match it.kind.as_str() {
                    "message" => full.pointer("/content/0").map(|p| {
                        p.get("text")
                            .or(p.get("refusal"))
                            .cloned()
                            .unwrap_or_default()
                    }),
                    "reasoning" => full.pointer("/summary/0/text").cloned(),
                    "function_call" => Some(full["arguments"].clone()),
                    _ => Some(full["input"].clone()),
                };
                if it.part != 2 || whole != Some(Value::String(it.text.clone())) {
                    return Err(at(format!("done item {full} does not match its events")));
                }
                if it.kind.ends_with("call") && !full["call_id"].is_string() {
                    return Err(at("call without call_id".into()));
                }
                it.done = Some(full);
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                terminal = Some(i);
                let r = &d["response"];
                let status = t.trim_start_matches("response.");
                if r["id"] != resp_id || r["status"] != status || r["object"] != "response" {
                    return Err(at(format!("bad terminal response {r}")));
                }
                if t == "response.failed" {
                    if !r["error"]["code"].is_string() || !r["error"]["message"].is_string() {
                        return Err(at("failed without error.code/message".into()));
                    }
                    continue;
                }
                if t == "response.incomplete" && !r["incomplete_details"]["reason"].is_string() {
                    return Err(at("incomplete without a reason".into()));
                }
                let mut done = Vec::new();
                for it in &items {
                    match &it.done {
                        Some(v) => done.push(v.clone()),
                        None => return Err(at(format!("item {} never done", it.id))),
                    }
                }
                if r["output"] != Value::Array(done) {
                    return Err(at("output is not the finished items".into()));
                }
                let u = &r["usage"];
                if !u.is_null() {
                    let n = |p: &str| u.pointer(p).and_then(Value::as_u64);
                    let (Some(inp), Some(outp), Some(total)) =
                        (n("/input_tokens"), n("/output_tokens"), n("/total_tokens"))
                    else {
                        return Err(at(format!("usage {u} lacks integer totals")));
                    };
                    let cached = n("/input_tokens_details/cached_tokens");
                    let reasoning = n("/output_tokens_details/reasoning_tokens");
                    if cached.is_none() || reasoning.is_none() || total != inp + outp {
                        return Err(at(format!("usage {u} is incomplete or inconsistent")));
                    }
                }
            }
            other => return Err(at(format!("unexpected event {other}"))),
        }
    }
    if terminal.is_none() {
        return Err("no terminal event".into());
    }
    Ok(())
}

fn run_stream(kind: &str, meta: &Value, pieces: &[&[u8]]) -> String {
    let mut t = transcoder(kind, meta);
    let mut out = BytesMut::new();
    for p in pieces {
        t.feed(p, &mut out);
    }
    t.finish(&mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

/// Runs one non-stream case; errors are rendered as {"status", "error"}.
fn run_json(kind: &str, meta: &Value, input: &Value) -> Value {
    let model = meta_str(meta, "upstream_model", "up-model").to_string();
    let stream = meta.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let res = match kind {
        "anthropic_request_to_chat" => anthropic_to_chat::request(
            &obj(input),
            &anthropic_to_chat::RequestOptions {
                upstream_model: model,
                stream,
                reasoning_model: meta
                    .get("reasoning_model")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        ),
        "chat_request_to_anthropic" => chat_to_anthropic::request(
            &obj(input),
            &chat_to_anthropic::RequestOptions {
                upstream_model: model,
                stream,
                default_max_tokens: 4096,
            },
        ),
        "chat_response_to_anthropic" => Ok(chat_to_anthropic::response(
            input,
            "claude-client",
            &ToolNames::default(),
        )),
        "anthropic_response_to_chat" => Ok(anthropic_to_chat::response(
            input,
            "gpt-client",
            &ToolNames::default(),
            stamp(false, false).now,
        )),
        "chat_request_to_gemini" => chat_to_gemini::request(
            &obj(input),
            &chat_to_gemini::RequestOptions {
                upstream_model: model,
                stream,
            },
        ),
        "gemini_response_to_chat" => Ok(gemini_to_chat::response(
            input,
            "gpt-client",
            &ToolNames::default(),
            &stamp(false, false),
        )),
        "responses_request_to_chat"
        | "responses_request_to_anthropic"
        | "responses_request_to_gemini" => responses_to_chat::request(
            &obj(input),
            &responses_to_chat::RequestOptions {
                upstream_model: model.clone(),
                stream,
            },
        )
        .and_then(|(chat, ctx)| {
            let body = match kind {
                "responses_request_to_anthropic" => chat_to_anthropic::request(
                    &obj(&chat),
                    &chat_to_anthropic::RequestOptions {
                        upstream_model: model,
                        stream,
                        default_max_tokens: 4096,
                    },
                )?,
                "responses_request_to_gemini" => chat_to_gemini::request(
                    &obj(&chat),
                    &chat_to_gemini::RequestOptions {
                        upstream_model: model,
                        stream,
                    },
                )?,
                _ => chat,
            };
            Ok(serde_json::json!({"request": body, "dropped": ctx.dropped}))
        }),
        "chat_response_to_responses" => Ok(chat_to_responses::response(
            input,
            &responses_context(meta),
            &stamp(true, false),
        )),
        other => panic!("unknown kind {other}"),
    };
    match res {
        Ok(v) => v,
        Err(e) => serde_json::json!({"status": e.status(), "error": e.message, "param": e.param}),
    }
}

#[test]
fn golden_cases() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    let mut n = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let case = entry.path();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("meta.json")).unwrap())
                .unwrap();
        let kind = meta_str(&meta, "kind", "").to_string();
        n += 1;
        if kind == "chat_response_to_responses_stream" {
            // E48: a whole chat completion replayed as a Responses stream.
            let input: Value =
                serde_json::from_str(&std::fs::read_to_string(case.join("in.json")).unwrap())
                    .unwrap();
            let raw = chat_to_responses::response_to_events(
                &input,
                &responses_context(&meta),
                &stamp(true, false),
            );
            let got = String::from_utf8(raw.to_vec()).unwrap();
            if let Err(e) = check_responses(&events(&got)) {
                failures.push(format!("{name}: Responses grammar: {e}\n{got}"));
            }
            let path = case.join("expected.sse");
            if update {
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if events(&got) != events(&want) {
                failures.push(format!(
                    "{name}: stream output differs\n--- got ---\n{got}\n--- want ---\n{want}"
                ));
            }
        } else if kind.ends_with("_stream_to_anthropic")
            || kind.ends_with("_stream_to_chat")
            || kind.ends_with("_stream_to_responses")
        {
            let input = std::fs::read(case.join("in.sse")).unwrap();
            let got = run_stream(&kind, &meta, &[&input]);
            if kind.ends_with("_to_responses") {
                if let Err(e) = check_responses(&events(&got)) {
                    failures.push(format!("{name}: Responses grammar: {e}\n{got}"));
                }
            }
            let path = case.join("expected.sse");
            if update {
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if events(&got) != events(&want) {
                failures.push(format!(
                    "{name}: stream output differs\n--- got ---\n{got}\n--- want ---\n{want}"
                ));
            }
            // any split: two pieces at every position, and one byte at a time
            for i in 0..=input.len() {
                let split = run_stream(&kind, &meta, &[&input[..i], &input[i..]]);
                if split != got && events(&split) != events(&got) {
                    failures.push(format!("{name}: split at byte {i} changes the output"));
                    break;
                }
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            let one_by_one = run_stream(&kind, &meta, &bytes);
            if one_by_one != got && events(&one_by_one) != events(&got) {
                failures.push(format!("{name}: byte-at-a-time input changes the output"));
            }
        } else {
            let input: Value =
                serde_json::from_str(&std::fs::read_to_string(case.join("in.json")).unwrap())
                    .unwrap();
            let got = run_json(&kind, &meta, &input);
            if kind == "chat_response_to_responses" {
                // The JSON answer is the terminal response of the replayed stream (one rule set).
                let raw = chat_to_responses::response_to_events(
                    &input,
                    &responses_context(&meta),
                    &stamp(true, false),
                );
                let evs = events(std::str::from_utf8(&raw).unwrap());
                if let Err(e) = check_responses(&evs) {
                    failures.push(format!("{name}: replayed stream: {e}"));
                }
                if evs.last().map(|(_, d)| &d["response"]) != Some(&got) {
                    failures.push(format!("{name}: the JSON answer differs from the stream's"));
                }
            }
            let path = case.join("expected.json");
            if update {
                std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
                continue;
            }
            let want: Value = serde_json::from_str(
                &std::fs::read_to_string(&path).unwrap_or_else(|_| "null".into()),
            )
            .unwrap();
            if got != want {
                failures.push(format!(
                    "{name}: output differs\n--- got ---\n{}\n--- want ---\n{}",
                    serde_json::to_string_pretty(&got).unwrap(),
                    serde_json::to_string_pretty(&want).unwrap()
                ));
            }
        }
    }
    assert!(n >= 25, "only {n} golden cases");
    assert!(
        failures.is_empty(),
        "{} of {n} golden cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A → C → A keeps the meaning of a Claude Code tool-result turn: roles, tool ids and the
/// result text survive the round trip.
#[test]
fn round_trip_keeps_meaning() {
    let case = dir().join("capture-claude-code-messages-tool-result-turn/in.json");
    let text = std::fs::read_to_string(&case).expect("the fixture is in the repository");
    let a: Value = serde_json::from_str(&text).unwrap();
    let c = anthropic_to_chat::request(
        &obj(&a),
        &anthropic_to_chat::RequestOptions {
            upstream_model: "m".into(),
            stream: false,
            reasoning_model: false,
        },
    )
    .unwrap();
    let back = chat_to_anthropic::request(
        &obj(&c),
        &chat_to_anthropic::RequestOptions {
            upstream_model: "claude".into(),
            stream: false,
            default_max_tokens: 4096,
        },
    )
    .unwrap();
    let orig_tool = a["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|b| b["type"] == "tool_use")
        .unwrap();
    let back_msgs = back["messages"].as_array().unwrap();
    let back_tool = back_msgs
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|b| b["type"] == "tool_use")
        .unwrap();
    assert_eq!(back_tool["id"], orig_tool["id"]);
    assert_eq!(back_tool["name"], orig_tool["name"]);
    assert_eq!(back_tool["input"], orig_tool["input"]);
    let result = back_msgs
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|b| b["type"] == "tool_result")
        .unwrap();
    assert_eq!(result["tool_use_id"], orig_tool["id"]);
    assert_eq!(result["content"], "hello-from-mock-tool");
    assert!(back["system"].as_array().unwrap()[0]["text"]
        .as_str()
        .unwrap()
        .contains("Claude agent"));
    let roles: Vec<&str> = back_msgs
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert!(
        roles.windows(2).all(|w| w[0] != w[1]),
        "roles alternate: {roles:?}"
    );
}

/// No input makes a transcoder panic: pseudo-random bytes and mutated fixtures.
#[test]
fn transcoders_never_panic_on_garbage() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for e in std::fs::read_dir(dir()).unwrap().flatten() {
        if let Ok(b) = std::fs::read(e.path().join("in.sse")) {
            corpus.push(b);
        }
    }
    let alphabet =
        b"data: event{}[]\":,\n\r 0123456789abcdefnulltrue[DONE]choicesdeltatool_callsindex";
    for round in 0..2_000 {
        let input: Vec<u8> = if round % 2 == 0 && !corpus.is_empty() {
            let mut b = corpus[(next() as usize) % corpus.len()].clone();
            for _ in 0..1 + next() % 8 {
                if b.is_empty() {
                    break;
                }
                let i = (next() as usize) % b.len();
                match next() % 3 {
                    0 => b[i] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            b
        } else {
            (0..next() % 400)
                .map(|_| alphabet[(next() as usize) % alphabet.len()])
                .collect()
        };
        for kind in [
            "chat_stream_to_anthropic",
            "anthropic_stream_to_chat",
            "gemini_stream_to_chat",
            "chat_stream_to_responses",
            "anthropic_stream_to_responses",
            "gemini_stream_to_responses",
        ] {
            let cut = if input.is_empty() {
                0
            } else {
                (next() as usize) % input.len()
            };
            let mut t = transcoder(kind, &Value::Null);
            let mut out = BytesMut::new();
            t.feed(&input[..cut], &mut out);
            t.feed(&input[cut..], &mut out);
            if round % 3 == 0 {
                t.fail("reset", &mut out);
            }
            t.finish(&mut out);
            let _ = t.usage();
            if kind.ends_with("_to_responses") {
                // Whatever the upstream sent, the client sees a well-formed Responses stream.
                let text = String::from_utf8(out.to_vec()).expect("UTF-8 output");
                if let Err(e) = check_responses(&events(&text)) {
                    panic!(
                        "{kind} on {:?}: {e}\n{text}",
                        String::from_utf8_lossy(&input)
                    );
                }
            }
        }
    }
}
