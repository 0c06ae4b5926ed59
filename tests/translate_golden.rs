//! Golden tests for the A↔C translators: each folder of tests/fixtures/translate holds an
//! input (a request, a response or an SSE capture), the expected output beside it, and a
//! meta.json naming the direction. One case per edge case of wire-formats.md §5 that applies,
//! plus real Claude Code captures. `UPDATE_GOLDEN=1` records outputs (review the diff!).
//!
//! Streams are also checked for the "any split" property: the output is identical whether the
//! input arrives whole, split at every byte position, or one byte at a time.

use bytes::BytesMut;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use tollgate::translate::shared::ToolNames;
use tollgate::translate::{a2c, c2a, gemini, StreamTranscoder};

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
    match kind {
        "chat_stream_to_anthropic" => Box::new(
            a2c::ChatToAnthropicStream::new("claude-client", 42, ToolNames::default())
                .with_id("msg_golden"),
        ),
        "anthropic_stream_to_chat" => Box::new(
            c2a::AnthropicToChatStream::new(
                "gpt-client",
                meta.get("include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                ToolNames::default(),
            )
            .with_id("chatcmpl-golden", 1_700_000_000),
        ),
        "gemini_stream_to_chat" => Box::new(
            gemini::GeminiToChatStream::new(
                "gpt-client",
                meta.get("include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                ToolNames::default(),
            )
            .with_id("chatcmpl-golden", 1_700_000_000),
        ),
        _ => unreachable!(),
    }
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
        "anthropic_request_to_chat" => a2c::request(
            &obj(input),
            &a2c::RequestOptions {
                upstream_model: model,
                stream,
                reasoning_model: meta
                    .get("reasoning_model")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        ),
        "chat_request_to_anthropic" => c2a::request(
            &obj(input),
            &c2a::RequestOptions {
                upstream_model: model,
                stream,
                default_max_tokens: 4096,
            },
        ),
        "chat_response_to_anthropic" => {
            Ok(a2c::response(input, "claude-client", &ToolNames::default()))
        }
        "anthropic_response_to_chat" => {
            let mut v = c2a::response(input, "gpt-client", &ToolNames::default());
            v["created"] = Value::from(0); // the only non-deterministic field
            Ok(v)
        }
        "chat_request_to_gemini" => gemini::request(
            &obj(input),
            &gemini::RequestOptions {
                upstream_model: model,
                stream,
            },
        ),
        "gemini_response_to_chat" => {
            let mut v = gemini::response(input, "gpt-client", &ToolNames::default());
            v["created"] = Value::from(0);
            Ok(v)
        }
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
        if kind.ends_with("_stream_to_anthropic") || kind.ends_with("_stream_to_chat") {
            let input = std::fs::read(case.join("in.sse")).unwrap();
            let got = run_stream(&kind, &meta, &[&input]);
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
                if events(&split) != events(&got) {
                    failures.push(format!("{name}: split at byte {i} changes the output"));
                    break;
                }
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            if events(&run_stream(&kind, &meta, &bytes)) != events(&got) {
                failures.push(format!("{name}: byte-at-a-time input changes the output"));
            }
        } else {
            let input: Value =
                serde_json::from_str(&std::fs::read_to_string(case.join("in.json")).unwrap())
                    .unwrap();
            let got = run_json(&kind, &meta, &input);
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
    let Ok(text) = std::fs::read_to_string(&case) else {
        return;
    };
    let a: Value = serde_json::from_str(&text).unwrap();
    let c = a2c::request(
        &obj(&a),
        &a2c::RequestOptions {
            upstream_model: "m".into(),
            stream: false,
            reasoning_model: false,
        },
    )
    .unwrap();
    let back = c2a::request(
        &obj(&c),
        &c2a::RequestOptions {
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
        }
    }
}
