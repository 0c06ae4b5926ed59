//! Fuzz target bodies, shared by the libFuzzer binaries (fuzz_targets/) and the stable
//! deterministic mutation loops (tests/fuzz_loops.rs). Each must never panic.

use bytes::BytesMut;
use serde_json::Value;
use tollgate::translate::responses_to_chat::ResponsesContext;
use tollgate::translate::shared::ToolNames;
use tollgate::translate::sse::SseParser;
use tollgate::translate::{
    anthropic_to_chat, chat_to_anthropic, chat_to_gemini, chat_to_responses, gemini_to_chat,
    responses_to_chat, Chain, Stamp, StreamTranscoder,
};

/// The config parser: any text (env lookups return nothing or a fixed value).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = tollgate::config::Config::from_yaml_str(&text, &|_| None);
    let _ = tollgate::config::Config::from_yaml_str(&text, &|_| Some("v".into()));
}

/// Request parsing and translation, in every direction.
pub fn requests(data: &[u8]) {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for stream in [false, true] {
        let _ = anthropic_to_chat::request(
            &m,
            &anthropic_to_chat::RequestOptions {
                upstream_model: "m".into(),
                stream,
                reasoning_model: stream,
            },
        );
        let _ = chat_to_anthropic::request(
            &m,
            &chat_to_anthropic::RequestOptions {
                upstream_model: "m".into(),
                stream,
                default_max_tokens: 4096,
            },
        );
        let _ = responses_to_chat::request(
            &m,
            &responses_to_chat::RequestOptions {
                upstream_model: "m".into(),
                stream,
            },
        );
        let _ = chat_to_gemini::request(
            &m,
            &chat_to_gemini::RequestOptions {
                upstream_model: "m".into(),
                stream,
            },
        );
    }
    let v = Value::Object(m);
    let stamp = Stamp::new("fuzz", 1);
    let _ = chat_to_anthropic::response(&v, "m", &ToolNames::default());
    let _ = anthropic_to_chat::response(&v, "m", &ToolNames::default(), stamp.now);
    let _ = gemini_to_chat::response(&v, "m", &ToolNames::default(), &stamp);
}

/// The SSE parser, fed in two pieces split where the first byte says.
pub fn sse(data: &[u8]) {
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut p = SseParser::new();
    let mut n = 0usize;
    p.feed(&data[..cut], &mut |_| n += 1);
    p.feed(&data[cut..], &mut |_| n += 1);
    p.finish(&mut |_| n += 1);
}

fn transcoders_all() -> Vec<Box<dyn StreamTranscoder>> {
    let names = ToolNames::default;
    let s = &Stamp::new("fuzz", 1);
    let context = || ResponsesContext::new("m");
    vec![
        Box::new(chat_to_anthropic::ChatToAnthropicStream::new(
            "m",
            10,
            names(),
            s,
        )),
        Box::new(anthropic_to_chat::AnthropicToChatStream::new(
            "m",
            true,
            names(),
            s,
        )),
        Box::new(gemini_to_chat::GeminiToChatStream::new(
            "m",
            true,
            names(),
            s,
        )),
        Box::new(chat_to_responses::ChatToResponsesStream::new(context(), s)),
        Box::new(Chain::new(
            Box::new(anthropic_to_chat::AnthropicToChatStream::new(
                "m",
                true,
                names(),
                s,
            )),
            Box::new(chat_to_responses::ChatToResponsesStream::new(context(), s)),
        )),
        Box::new(Chain::new(
            Box::new(gemini_to_chat::GeminiToChatStream::new(
                "m",
                true,
                names(),
                s,
            )),
            Box::new(chat_to_anthropic::ChatToAnthropicStream::new(
                "m",
                10,
                names(),
                s,
            )),
        )),
    ]
}

/// Every stream transcoder (and the chains), fed the bytes in pieces, then ended normally
/// and, on a second instance, by an upstream failure.
pub fn transcoders(data: &[u8]) {
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    for (mut t, mut u) in transcoders_all().into_iter().zip(transcoders_all()) {
        let mut out = BytesMut::new();
        t.feed(&data[..cut], &mut out);
        t.keepalive(&mut out);
        t.feed(&data[cut..], &mut out);
        t.finish(&mut out);
        let _ = (t.usage(), t.completed());
        let mut out = BytesMut::new();
        u.feed(&data[..cut], &mut out);
        u.fail("fuzz", &mut out);
        let _ = (u.usage(), u.completed());
    }
}
