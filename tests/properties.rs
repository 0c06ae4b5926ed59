//! Property tests (proptest): the SSE parser yields the same events however the bytes are
//! split and whatever line endings are used, and no input makes a transcoder panic.

use bytes::BytesMut;
use proptest::prelude::*;
use tollgate::translate::shared::ToolNames;
use tollgate::translate::sse::{SseEvent, SseParser};
use tollgate::translate::{a2c, c2a, StreamTranscoder};

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
            Box::new(a2c::ChatToAnthropicStream::new("m", 1, ToolNames::default())),
            Box::new(c2a::AnthropicToChatStream::new("m", true, ToolNames::default())),
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
            let _ = a2c::request(m, &a2c::RequestOptions { upstream_model: "m".into(), stream: true, reasoning_model: true });
            let _ = c2a::request(m, &c2a::RequestOptions { upstream_model: "m".into(), stream: true, default_max_tokens: 10 });
            let _ = a2c::response(&v, "m", &ToolNames::default());
            let _ = c2a::response(&v, "m", &ToolNames::default());
        }
    }
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
