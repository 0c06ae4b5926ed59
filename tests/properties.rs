//! Property tests (proptest): the SSE parser yields the same events however the bytes are
//! split and whatever line endings are used, and no input makes a transcoder panic. For the
//! Responses writer (C → R, and the A → C → R and G → C → R chains): the output does not
//! depend on how the upstream bytes are split, and whatever the upstream sends, the client's
//! stream ends with exactly one terminal event. `responses_to_chat::request` never panics.

use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;
use tollgate::translate::responses_to_chat::{self, ResponsesContext};
use tollgate::translate::shared::ToolNames;
use tollgate::translate::sse::{SseEvent, SseParser};
use tollgate::translate::{
    anthropic_to_chat, chat_to_anthropic, chat_to_gemini, chat_to_responses, gemini_to_chat, Chain,
    Stamp, StreamTranscoder,
};

fn parse(chunks: &[&[u8]]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, &mut |e| out.push(e));
    }
    p.finish(&mut |e| out.push(e));
    out
}

fn event_strategy() -> impl Strategy<Value = (Option<String>, Vec<String>)> {
    (
        proptest::option::of("[a-z_]{1,12}"),
        proptest::collection::vec("[ -9;-~]{0,24}", 1..4), // printable, no ':' needed to be safe at start
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn sse_parser_is_split_and_line_ending_invariant(
        events in proptest::collection::vec(event_strategy(), 1..8),
        eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut text = String::new();
        for (name, lines) in &events {
            if let Some(n) = name {
                text.push_str(&format!("event: {n}{eol}"));
            }
            for l in lines {
                text.push_str(&format!("data: {l}{eol}"));
            }
            text.push_str(eol);
        }
        let bytes = text.as_bytes();
        let whole = parse(&[bytes]);
        prop_assert_eq!(whole.len(), events.len());
        for (got, (name, lines)) in whole.iter().zip(&events) {
            prop_assert_eq!(&got.event, name);
            prop_assert_eq!(&got.data, &lines.join("\n"));
        }
        let mut pos: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        pos.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for p in pos {
            pieces.push(&bytes[last..p]);
            last = p;
        }
        pieces.push(&bytes[last..]);
        prop_assert_eq!(parse(&pieces), whole);
    }

    #[test]
    fn transcoders_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048), cut in any::<prop::sample::Index>()) {
        let c = cut.index(input.len() + 1);
        let ts: Vec<Box<dyn StreamTranscoder>> = vec![
            Box::new(chat_to_anthropic::ChatToAnthropicStream::new("m", 1, ToolNames::default(), &stamp())),
            Box::new(anthropic_to_chat::AnthropicToChatStream::new("m", true, ToolNames::default(), &stamp())),
        ];
        for mut t in ts {
            let mut out = BytesMut::new();
            t.feed(&input[..c], &mut out);
            t.keepalive(&mut out);
            t.feed(&input[c..], &mut out);
            t.finish(&mut out);
            t.fail("x", &mut out);
        }
    }

    #[test]
    fn request_translators_never_panic(v in arb_json(4)) {
        if let serde_json::Value::Object(m) = &v {
            let _ = anthropic_to_chat::request(m, &anthropic_to_chat::RequestOptions { upstream_model: "m".into(), stream: true, reasoning_model: true });
            let _ = chat_to_anthropic::request(m, &chat_to_anthropic::RequestOptions { upstream_model: "m".into(), stream: true, default_max_tokens: 10 });
            let _ = chat_to_anthropic::response(&v, "m", &ToolNames::default());
            let _ = anthropic_to_chat::response(&v, "m", &ToolNames::default(), 1);
        }
    }
}

/// Upstream stream captures of the golden fixtures, by upstream format ("chat", "anthropic",
/// "gemini": the prefix of their kind).
fn fixture_streams(upstream: &str) -> &'static [Vec<u8>] {
    static ALL: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate");
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let (Ok(meta), Ok(input)) = (
                std::fs::read_to_string(e.path().join("meta.json")),
                std::fs::read(e.path().join("in.sse")),
            ) else {
                continue;
            };
            let meta: Value = serde_json::from_str(&meta).unwrap();
            let kind = meta["kind"].as_str().unwrap_or("");
            if let Some((from, _)) = kind.split_once("_stream_to_") {
                v.push((from.to_string(), input));
            }
        }
        v.sort();
        v
    });
    static BY: OnceLock<Vec<(String, Vec<Vec<u8>>)>> = OnceLock::new();
    let by = BY.get_or_init(|| {
        ["chat", "anthropic", "gemini"]
            .iter()
            .map(|u| {
                let inputs = all.iter().filter(|(f, _)| f == u).map(|(_, b)| b.clone());
                (u.to_string(), inputs.collect())
            })
            .collect()
    });
    let inputs = &by.iter().find(|(u, _)| u == upstream).unwrap().1;
    assert!(!inputs.is_empty(), "no {upstream} stream fixtures");
    inputs
}

/// A Codex-like request context: tool calls come back by name, namespace and custom kind.
/// The ids' token and the time of the transcoders under test.
fn stamp() -> Stamp {
    Stamp::new("prop", 1)
}

fn responses_context() -> ResponsesContext {
    let r = json!({"model": "gpt-5.5", "input": "hi", "tools": [
        {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
        {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn_agent"}, {"type": "function", "name": "wait_agent"}]},
        {"type": "custom", "name": "apply_patch"},
        {"type": "web_search"}]});
    let opts = responses_to_chat::RequestOptions {
        upstream_model: "m".into(),
        stream: true,
    };
    responses_to_chat::request(r.as_object().unwrap(), &opts)
        .unwrap()
        .1
}

/// The Responses client stage over an upstream format, as `Cross::stream` composes it.
fn to_responses(upstream: &str) -> Box<dyn StreamTranscoder> {
    let writer = Box::new(chat_to_responses::ChatToResponsesStream::new(
        responses_context(),
        &Stamp::new("prop00000000000000000", 1_700_000_000),
    ));
    match upstream {
        "chat" => writer,
        "anthropic" => Box::new(Chain::new(
            Box::new(anthropic_to_chat::AnthropicToChatStream::new(
                "m",
                true,
                ToolNames::default(),
                &stamp(),
            )),
            writer,
        )),
        _ => Box::new(Chain::new(
            Box::new(gemini_to_chat::GeminiToChatStream::new(
                "m",
                true,
                ToolNames::default(),
                &stamp(),
            )),
            writer,
        )),
    }
}

fn run_pieces(upstream: &str, pieces: &[&[u8]]) -> BytesMut {
    let mut t = to_responses(upstream);
    let mut out = BytesMut::new();
    for p in pieces {
        t.feed(p, &mut out);
    }
    t.finish(&mut out);
    out
}

/// Splits `bytes` at the given cut points (any order, duplicates allowed).
fn split<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut pos: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    pos.sort_unstable();
    let mut pieces = Vec::new();
    let mut last = 0;
    for p in pos {
        pieces.push(&bytes[last..p]);
        last = p;
    }
    pieces.push(&bytes[last..]);
    pieces
}

const TERMINAL: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// Checks the frame of a Responses stream: every event is JSON whose `type` is its event name,
/// `sequence_number`s run from 0 without gaps, `response.created` comes first, items do not
/// interleave (every item event addresses the one open item, opened in `output_index`
/// order), and exactly one terminal event ends it. Returns the event types.
fn check_frame(out: &[u8]) -> Result<Vec<String>, String> {
    let mut evs = Vec::new();
    let mut p = SseParser::new();
    p.feed(out, &mut |e| evs.push(e));
    p.finish(&mut |e| evs.push(e));
    let mut types = Vec::new();
    let (mut open, mut next) = (None, 0);
    for (i, e) in evs.iter().enumerate() {
        let v: Value = serde_json::from_str(&e.data).map_err(|err| format!("event {i}: {err}"))?;
        let ty = v["type"].as_str().unwrap_or("").to_string();
        if e.event.as_deref() != Some(ty.as_str()) {
            return Err(format!("event {i}: name {:?}, type {ty}", e.event));
        }
        if v["sequence_number"].as_u64() != Some(i as u64) {
            return Err(format!(
                "event {i}: sequence_number {}",
                v["sequence_number"]
            ));
        }
        if let Some(at) = v["output_index"].as_u64() {
            match ty.as_str() {
                "response.output_item.added" if open.is_none() && at == next => open = Some(at),
                _ if open != Some(at) => {
                    return Err(format!("event {i} ({ty}) for item {at}; open: {open:?}"))
                }
                "response.output_item.done" => {
                    open = None;
                    next += 1;
                }
                _ => {}
            }
        }
        types.push(ty);
    }
    if types.first().map(String::as_str) != Some("response.created") {
        return Err(format!("starts with {:?}", types.first()));
    }
    let terminals = types
        .iter()
        .filter(|t| TERMINAL.contains(&t.as_str()))
        .count();
    if terminals != 1 || !TERMINAL.contains(&types.last().unwrap().as_str()) {
        return Err(format!(
            "{terminals} terminal events, last {:?}",
            types.last()
        ));
    }
    Ok(types)
}

/// A C upstream stream made of plausible chunks in any order: text, reasoning and refusal
/// deltas, tool call fragments for a few indexes (with or without id, name, arguments),
/// finish reasons (alone or with content), usage chunks, error chunks, `[DONE]`.
fn arb_chat_stream() -> impl Strategy<Value = Vec<u8>> {
    let delta = prop_oneof![
        "[a-zé ]{0,6}".prop_map(|t| json!({"content": t})),
        "[a-z ]{0,6}".prop_map(|t| json!({"reasoning_content": t})),
        "[a-z ]{0,6}".prop_map(|t| json!({"refusal": t})),
        Just(json!({"role": "assistant", "content": null})),
        (
            0u64..3,
            proptest::option::of(prop_oneof![Just("call_a"), Just("call_b")]),
            proptest::option::of(prop_oneof![
                Just("exec_command"),
                Just("multi_agent_v1__spawn_agent"),
                Just("apply_patch"),
                Just("unknown_tool")
            ]),
            proptest::option::of(prop_oneof![
                Just("{\"input\":\"*** Begin"),
                Just("{\"cmd\":"),
                Just("\"ls\"}"),
                Just(""),
                Just("}")
            ]),
        )
            .prop_map(|(index, id, name, args)| {
                let mut f = json!({});
                if let Some(n) = name {
                    f["name"] = json!(n);
                }
                if let Some(a) = args {
                    f["arguments"] = json!(a);
                }
                let mut tc = json!({"index": index, "function": f});
                if let Some(id) = id {
                    tc["id"] = json!(id);
                    tc["type"] = json!("function");
                }
                json!({"tool_calls": [tc]})
            }),
    ];
    let finish = proptest::option::of(prop_oneof![
        Just("stop"),
        Just("tool_calls"),
        Just("length"),
        Just("content_filter")
    ]);
    let event = prop_oneof![
        8 => (delta, finish).prop_map(|(d, f)| json!({"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": d, "finish_reason": f}]}).to_string()),
        1 => Just(json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4,
            "total_tokens": 14, "prompt_tokens_details": {"cached_tokens": 2}}}).to_string()),
        1 => Just(json!({"error": {"message": "overloaded", "type": "server_error"}}).to_string()),
        1 => Just("[DONE]".to_string()),
    ];
    proptest::collection::vec(event, 0..14).prop_map(|evs| {
        evs.iter()
            .map(|e| format!("data: {e}\n\n"))
            .collect::<String>()
            .into_bytes()
    })
}

/// An A upstream stream made of plausible events in any order (blocks of every kind, their
/// deltas and stops, message_delta, message_stop, ping, error).
fn arb_anthropic_stream() -> impl Strategy<Value = Vec<u8>> {
    let block = prop_oneof![
        Just(json!({"type": "text", "text": ""})),
        Just(json!({"type": "thinking", "thinking": "", "signature": ""})),
        Just(json!({"type": "tool_use", "id": "toolu_1", "name": "exec_command", "input": {}})),
        Just(json!({"type": "tool_use", "id": "toolu_2", "name": "apply_patch", "input": {}})),
        Just(
            json!({"type": "tool_use", "id": "toolu_3", "name": "multi_agent_v1__wait_agent", "input": {}})
        ),
    ];
    let delta = prop_oneof![
        "[a-z ]{0,6}".prop_map(|t| json!({"type": "text_delta", "text": t})),
        "[a-z ]{0,6}".prop_map(|t| json!({"type": "thinking_delta", "thinking": t})),
        Just(json!({"type": "signature_delta", "signature": "sig"})),
        prop_oneof![
            Just("{\"input\":\"x\"}"),
            Just("{\"cmd\":"),
            Just("\"ls\"}"),
            Just("")
        ]
        .prop_map(|p| json!({"type": "input_json_delta", "partial_json": p})),
    ];
    let stop = prop_oneof![
        Just("end_turn"),
        Just("tool_use"),
        Just("max_tokens"),
        Just("refusal")
    ];
    let event = prop_oneof![
        1 => Just(json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "content": [], "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}})),
        3 => (0u64..3, block).prop_map(|(i, b)| json!({"type": "content_block_start", "index": i, "content_block": b})),
        5 => (0u64..3, delta).prop_map(|(i, d)| json!({"type": "content_block_delta", "index": i, "delta": d})),
        2 => (0u64..3).prop_map(|i| json!({"type": "content_block_stop", "index": i})),
        1 => stop.prop_map(|s| json!({"type": "message_delta", "delta": {"stop_reason": s}, "usage": {"output_tokens": 7}})),
        1 => Just(json!({"type": "message_stop"})),
        1 => Just(json!({"type": "ping"})),
        1 => Just(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
    ];
    proptest::collection::vec(event, 0..14).prop_map(|evs| {
        evs.iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
            .collect::<String>()
            .into_bytes()
    })
}

/// Upstream bytes: anything at all, a fixture capture with a few bytes changed, or (for C and
/// A) a stream of plausible events in any order.
fn upstream_bytes(upstream: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let structured = match upstream {
        "chat" => arb_chat_stream().boxed(),
        "anthropic" => arb_anthropic_stream().boxed(),
        _ => proptest::collection::vec(any::<u8>(), 0..64).boxed(),
    };
    let edits =
        proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..8);
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..1024),
        4 => structured,
        2 => (any::<prop::sample::Index>(), edits).prop_map(move |(which, edits)| {
            let inputs = fixture_streams(upstream);
            let mut b = which.get(inputs).clone();
            for (at, op, byte) in edits {
                let i = at.index(b.len() + 1);
                match op {
                    0 if i < b.len() => b[i] = byte,
                    1 if i < b.len() => {
                        b.remove(i);
                    }
                    _ => b.insert(i, byte),
                }
            }
            b
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// C → R and A → C → R (and G → C → R): a fixture capture split anywhere, into any number
    /// of pieces, gives byte-identical client output.
    #[test]
    fn responses_writer_is_split_invariant(
        upstream in prop_oneof![Just("chat"), Just("anthropic"), Just("gemini")],
        which in any::<prop::sample::Index>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 1..12),
    ) {
        let input = which.get(fixture_streams(upstream));
        let whole = run_pieces(upstream, &[input]);
        prop_assert_eq!(&run_pieces(upstream, &split(input, &cuts)), &whole);
    }

    /// Streams of plausible events in any order are split invariant too.
    #[test]
    fn responses_writer_is_split_invariant_on_any_event_order(
        (upstream, input) in prop_oneof![
            arb_chat_stream().prop_map(|b| ("chat", b)),
            arb_anthropic_stream().prop_map(|b| ("anthropic", b)),
        ],
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 1..12),
    ) {
        let whole = run_pieces(upstream, &[&input]);
        prop_assert_eq!(&run_pieces(upstream, &split(&input, &cuts)), &whole);
    }

    /// The upstream connection failing at any point still ends the stream exactly once.
    #[test]
    fn responses_stream_failing_midway_ends_once(
        upstream in prop_oneof![Just("chat"), Just("anthropic"), Just("gemini")],
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let input = which.get(fixture_streams(upstream));
        let mut t = to_responses(upstream);
        let mut out = BytesMut::new();
        t.feed(&input[..cut.index(input.len() + 1)], &mut out);
        t.fail("connection reset", &mut out);
        t.finish(&mut out);
        check_frame(&out).map_err(|e| {
            TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&out)))
        })?;
    }

    /// `responses_to_chat::request` never panics on Responses-shaped requests, and what it produces is a
    /// chat request the C → A and C → G stages accept without panicking: non-empty messages,
    /// and only tool names every provider accepts.
    #[test]
    fn responses_request_never_panics(r in arb_responses_request()) {
        let m = r.as_object().unwrap();
        for stream in [false, true] {
            let opts = responses_to_chat::RequestOptions { upstream_model: "m".into(), stream };
            let Ok((c, ctx)) = responses_to_chat::request(m, &opts) else { continue };
            let msgs = c["messages"].as_array().expect("messages");
            prop_assert!(!msgs.is_empty());
            let mut names: Vec<&str> = c["tools"].as_array().into_iter().flatten()
                .map(|t| t["function"]["name"].as_str().unwrap_or("")).collect();
            names.extend(msgs.iter().flat_map(|m| m["tool_calls"].as_array().into_iter().flatten())
                .map(|tc| tc["function"]["name"].as_str().unwrap_or("")));
            for n in names {
                prop_assert!(!n.is_empty() && n.len() <= 64
                    && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                    "tool name {:?}", n);
            }
            let cm = c.as_object().unwrap();
            let _ = chat_to_anthropic::request(cm, &chat_to_anthropic::RequestOptions { upstream_model: "m".into(), stream, default_max_tokens: 4096 });
            let _ = chat_to_gemini::request(cm, &chat_to_gemini::RequestOptions { upstream_model: "m".into(), stream });
            // And the answer side runs with that context.
            let _ = chat_to_responses::response(&json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "x",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":1}"}}]}}]}), &ctx, &stamp());
        }
    }
}

proptest! {
    // Many cases: the interesting orders (a failure and a finish in one chunk, a fragment
    // for a closed call) are rare among random event sequences.
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Whatever the upstream sends (and however it is cut), nothing panics and the client's
    /// stream ends with exactly one terminal event; a later failure adds no second one.
    #[test]
    fn responses_stream_always_ends_once(
        (upstream, input) in prop_oneof![Just("chat"), Just("anthropic"), Just("gemini")]
            .prop_flat_map(|u| (Just(u), upstream_bytes(u))),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        keepalive in any::<bool>(),
    ) {
        let mut t = to_responses(upstream);
        let mut out = BytesMut::new();
        for piece in split(&input, &cuts) {
            t.feed(piece, &mut out);
            if keepalive {
                t.keepalive(&mut out);
            }
        }
        t.finish(&mut out);
        let types = check_frame(&out).map_err(|e| {
            TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&out)))
        })?;
        prop_assert_eq!(t.completed(), types.last().unwrap() != "response.failed");
        let mut after = BytesMut::new();
        t.fail("connection reset", &mut after);
        t.keepalive(&mut after);
        t.finish(&mut after);
        prop_assert!(after.is_empty(), "output after the terminal event: {:?}", after);
    }
}

fn text_part() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[ -~]{0,12}".prop_map(|t| json!({"type": "input_text", "text": t})),
        "[ -~]{0,12}".prop_map(|t| json!({"type": "output_text", "text": t})),
        Just(json!({"type": "input_text"})),
        Just(json!({"type": "refusal", "refusal": "no"})),
        Just(
            json!({"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"})
        ),
        Just(json!({"type": "input_image", "file_id": "file_1"})),
        Just(json!({"type": "input_image", "image_url": 7})),
        Just(
            json!({"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"})
        ),
        Just(json!({"type": "input_file", "file_id": "file_2"})),
        Just(json!({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}})),
        Just(json!({"type": "weird"})),
        Just(json!(null)),
        Just(json!("bare string")),
    ]
}

fn name() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("exec_command")),
        Just(json!("spawn_agent")),
        Just(json!("apply_patch")),
        Just(json!("")),
        Just(json!(null)),
        Just(json!(3)),
        "[a-z_.:/ ]{0,80}".prop_map(Value::String),
    ]
}

fn input_item() -> impl Strategy<Value = Value> {
    let content = prop_oneof![
        "[ -~]{0,12}".prop_map(Value::String),
        proptest::collection::vec(text_part(), 0..4).prop_map(Value::Array),
        Just(json!(null)),
        Just(json!(5)),
        Just(json!({"type": "input_text"})),
    ];
    let role = prop_oneof![
        Just(json!("user")),
        Just(json!("assistant")),
        Just(json!("developer")),
        Just(json!("system")),
        Just(json!("tool")),
        Just(json!(null)),
    ];
    let args = prop_oneof![
        Just(json!("{\"cmd\":\"ls\"}")),
        Just(json!("")),
        Just(json!("{bad")),
        Just(json!({"cmd": "ls"})),
        Just(json!([1])),
        Just(json!(null)),
    ];
    let output = prop_oneof![
        "[ -~]{0,12}".prop_map(Value::String),
        proptest::collection::vec(text_part(), 0..3).prop_map(Value::Array),
        Just(json!(null)),
        Just(json!({"a": 1})),
    ];
    let call_id = prop_oneof![
        Just(json!("call_1")),
        Just(json!("")),
        Just(json!(null)),
        Just(json!(9))
    ];
    prop_oneof![
        (role.clone(), content.clone())
            .prop_map(|(r, c)| json!({"type": "message", "role": r, "content": c})),
        (role, content).prop_map(|(r, c)| json!({"role": r, "content": c})),
        (call_id.clone(), name(), args, proptest::option::of(name())).prop_map(|(id, n, a, ns)| {
            let mut v = json!({"type": "function_call", "call_id": id, "name": n, "arguments": a});
            if let Some(ns) = ns {
                v["namespace"] = ns;
            }
            v
        }),
        (call_id.clone(), output.clone()).prop_map(
            |(id, o)| json!({"type": "function_call_output", "call_id": id, "output": o})
        ),
        (call_id.clone(), name(), output.clone()).prop_map(
            |(id, n, i)| json!({"type": "custom_tool_call", "call_id": id, "name": n, "input": i})
        ),
        (call_id, output).prop_map(
            |(id, o)| json!({"type": "custom_tool_call_output", "call_id": id, "output": o})
        ),
        Just(
            json!({"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}], "encrypted_content": "x"})
        ),
        Just(json!({"type": "item_reference", "id": "msg_1"})),
        Just(json!({"type": "web_search_call", "id": "ws_1", "status": "completed"})),
        Just(json!({"content": "no type, no role"})),
        Just(json!(null)),
        Just(json!(42)),
        Just(json!(["nested"])),
    ]
}

fn tool() -> impl Strategy<Value = Value> {
    let params = prop_oneof![
        Just(json!({"type": "object", "properties": {"cmd": {"type": "string"}}})),
        Just(json!("<elided schema>")),
        Just(json!(null)),
        Just(json!([])),
    ];
    prop_oneof![
        (name(), params.clone(), proptest::option::of(any::<bool>())).prop_map(|(n, p, strict)| {
            let mut v = json!({"type": "function", "name": n, "parameters": p});
            if let Some(s) = strict { v["strict"] = json!(s); }
            v
        }),
        (name(), params).prop_map(|(n, p)| json!({"name": n, "parameters": p})),
        (name(), prop_oneof![Just(json!({"type": "grammar", "syntax": "lark", "definition": "start: x"})), Just(json!({"type": "text"})), Just(json!(null))])
            .prop_map(|(n, f)| json!({"type": "custom", "name": n, "format": f})),
        (name(), proptest::collection::vec(name(), 0..3)).prop_map(|(ns, kids)| json!({"type": "namespace", "name": ns,
            "tools": kids.into_iter().map(|k| json!({"type": "function", "name": k})).collect::<Vec<_>>()})),
        Just(json!({"type": "namespace", "name": "ns", "tools": "not a list"})),
        Just(json!({"type": "web_search", "external_web_access": true})),
        Just(json!({"type": "tool_search", "execution": "client"})),
        Just(json!({"type": "file_search", "vector_store_ids": []})),
        Just(json!({"type": "mcp", "server_label": "x"})),
        Just(json!({"type": "function", "function": {"name": "chat_style"}})),
        Just(json!("…<7 more tools>")),
        Just(json!(null)),
    ]
}

/// Responses requests built from the item, part and tool shapes clients send (and broken ones).
fn arb_responses_request() -> impl Strategy<Value = Value> {
    let input = prop_oneof![
        "[ -~]{0,12}".prop_map(Value::String),
        proptest::collection::vec(input_item(), 0..8).prop_map(Value::Array),
        Just(json!(null)),
        Just(json!({"type": "message"})),
    ];
    let tool_choice = prop_oneof![
        Just(json!("auto")),
        Just(json!("required")),
        Just(json!("none")),
        Just(json!({"type": "function", "name": "exec_command"})),
        Just(json!({"type": "custom", "name": "apply_patch"})),
        Just(json!({"type": "allowed_tools", "mode": "required", "tools": []})),
        Just(json!({"type": "web_search"})),
        Just(json!({"type": "tool_search"})),
        Just(json!({"type": 7})),
        Just(json!(12)),
    ];
    let text = prop_oneof![
        Just(
            json!({"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": true}})
        ),
        Just(json!({"format": {"type": "json_schema"}})),
        Just(json!({"format": {"type": "json_object"}})),
        Just(json!({"format": "text"})),
        Just(json!({"verbosity": "low"})),
        Just(json!("text")),
    ];
    let extra = prop_oneof![
        Just(("previous_response_id", json!("resp_1"))),
        Just(("previous_response_id", json!(null))),
        Just(("conversation", json!("conv_1"))),
        Just(("background", json!(true))),
        Just(("background", json!(false))),
        Just(("instructions", json!("be brief"))),
        Just(("instructions", json!(3))),
        Just(("reasoning", json!({"effort": "high", "summary": "auto"}))),
        Just(("reasoning", json!({"effort": 1}))),
        Just(("max_output_tokens", json!(100))),
        Just(("max_output_tokens", json!(-1))),
        Just(("temperature", json!(0.5))),
        Just(("top_p", json!("x"))),
        Just(("parallel_tool_calls", json!(false))),
        Just(("store", json!(false))),
        Just(("include", json!(["reasoning.encrypted_content"]))),
        Just(("stream", json!(true))),
    ];
    (
        proptest::option::of(input),
        proptest::option::of(proptest::collection::vec(tool(), 0..5)),
        proptest::option::of(tool_choice),
        proptest::option::of(text),
        proptest::collection::vec(extra, 0..4),
    )
        .prop_map(|(input, tools, choice, text, extra)| {
            let mut r = json!({"model": "gpt-5.5"});
            if let Some(i) = input {
                r["input"] = i;
            }
            if let Some(t) = tools {
                r["tools"] = Value::Array(t);
            }
            if let Some(c) = choice {
                r["tool_choice"] = c;
            }
            if let Some(t) = text {
                r["text"] = t;
            }
            for (k, v) in extra {
                r[k] = v;
            }
            r
        })
}

/// Arbitrary JSON biased towards the request fields the translators read.
fn arb_json(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        prop_oneof![
            Just("user".to_string()),
            Just("assistant".to_string()),
            Just("system".to_string()),
            Just("tool".to_string()),
            Just("text".to_string()),
            Just("tool_use".to_string()),
            Just("tool_result".to_string()),
            Just("image".to_string()),
            "[a-z{}\":]{0,10}"
        ]
        .prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(depth, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("messages"),
                        Just("content"),
                        Just("role"),
                        Just("type"),
                        Just("tools"),
                        Just("tool_calls"),
                        Just("system"),
                        Just("text"),
                        Just("input"),
                        Just("function"),
                        Just("arguments"),
                        Just("source"),
                        Just("choices"),
                        Just("message"),
                        Just("name"),
                        Just("id"),
                        Just("tool_choice"),
                        Just("max_tokens"),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| serde_json::Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}
