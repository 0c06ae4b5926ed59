//! Criterion micro-benchmarks of the hot-path pieces: key lookup, routing, request
//! translation of a real 76 KB Claude Code turn, stream transcoding, the SSE parser and local
//! count_tokens. Quick mode: `cargo bench --bench hot_path -- --quick`.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use tollgate::auth::KeyIndex;
use tollgate::config::Config;
use tollgate::records::KeyRecord;
use tollgate::route::Router;
use tollgate::translate::shared::ToolNames;
use tollgate::translate::sse::SseParser;
use tollgate::translate::{anthropic_to_chat, chat_to_anthropic, Stamp, StreamTranscoder};

/// A Claude Code turn of realistic size (~77 KB: 24 tools of ~2.7 KB with JSON schemas, a 6 KB
/// system prompt in three blocks, a mid-conversation system item; a capture of it
/// would be large, so the body is built here).
fn claude_code_turn() -> serde_json::Map<String, Value> {
    let desc =
        "Executes a given command and returns its output. Use it for git, builds and tests. "
            .repeat(30);
    let tools: Vec<Value> = (0..24)
        .map(|i| {
            json!({"name": format!("Tool{i}"), "description": desc,
                "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                    "properties": {"command": {"type": "string", "description": "The command to run"}, "timeout": {"type": "number"}, "description": {"type": "string"}},
                    "required": ["command"], "additionalProperties": false}})
        })
        .collect();
    let sys = "You are an interactive agent that helps users with software engineering tasks. "
        .repeat(75);
    json!({"model": "claude-opus-4-8", "max_tokens": 64000, "stream": true,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.123;"}, {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": sys, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can use the following context.\n</system-reminder>"}, {"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}}]},
                     {"role": "system", "content": "Available agent types for the Agent tool: ".repeat(150)}],
        "tools": tools, "metadata": {"user_id": "{\"device_id\":\"fb5230\",\"account_uuid\":\"\",\"session_id\":\"6afd43e8\"}"},
        "thinking": {"type": "adaptive"}, "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}, "output_config": {"effort": "high"}})
    .as_object()
    .unwrap()
    .clone()
}

/// An OpenAI chat stream of `n` text deltas, a finish chunk, usage and [DONE].
fn chat_stream(n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"));
    }
    s.push_str("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

fn anthropic_stream(n: usize) -> Vec<u8> {
    let mut s = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for i in 0..n {
        s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"tok{i} \"}}}}\n\n"));
    }
    s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s.into_bytes()
}

fn benches(c: &mut Criterion) {
    // key lookup
    let idx = KeyIndex::new();
    let mut secret = String::new();
    let recs: Vec<KeyRecord> = (0..10_000)
        .map(|i| {
            let (r, s) = KeyRecord::mint(None, None, json!({}));
            if i == 5_000 {
                secret = s;
            }
            r
        })
        .collect();
    idx.replace(recs);
    c.bench_function("key_lookup_10k_keys", |b| {
        b.iter(|| idx.check(black_box(&secret), 1).unwrap())
    });

    // routing
    let cfg = Config::from_yaml_str(
        "presets: false\nproviders:\n  openai: {kind: openai, base_url: 'http://127.0.0.1:1/v1', api_key: a}\n  anthropic: {kind: anthropic, base_url: 'http://127.0.0.1:2', api_key: b}\naliases: {fast: 'openai:gpt-4o-mini'}\n",
        &|_| None,
    )
    .unwrap();
    let router = Router::new(&cfg);
    c.bench_function("route_selectors", |b| {
        b.iter(|| {
            router.resolve(black_box("openai:gpt-4.1")).unwrap();
            router.resolve(black_box("claude-sonnet-4-6")).unwrap();
            router.resolve(black_box("fast")).unwrap();
        })
    });

    // request translation of the Claude Code turn (parse + translate + serialize)
    let turn = claude_code_turn();
    let raw = serde_json::to_vec(&turn).unwrap();
    let mut g = c.benchmark_group("request_translation");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("claude_code_turn_anthropic_to_chat", |b| {
        b.iter(|| {
            let v: serde_json::Map<String, Value> =
                serde_json::from_slice(black_box(&raw)).unwrap();
            let out = anthropic_to_chat::request(
                &v,
                &anthropic_to_chat::RequestOptions {
                    upstream_model: "gpt-4.1".into(),
                    stream: true,
                    reasoning_model: false,
                },
            )
            .unwrap();
            serde_json::to_vec(&out).unwrap()
        })
    });
    g.finish();

    // stream transcoding, both directions
    let cs = chat_stream(200);
    let mut g = c.benchmark_group("stream_transcoding");
    g.throughput(Throughput::Elements(203));
    g.bench_function("chat_to_anthropic_200_events", |b| {
        b.iter(|| {
            let mut t = chat_to_anthropic::ChatToAnthropicStream::new(
                "claude",
                10,
                ToolNames::default(),
                &Stamp::new("bench", 1),
            );
            let mut out = BytesMut::new();
            for piece in cs.chunks(512) {
                t.feed(piece, &mut out);
            }
            t.finish(&mut out);
            out
        })
    });
    let as_ = anthropic_stream(200);
    g.bench_function("anthropic_to_chat_200_events", |b| {
        b.iter(|| {
            let mut t = anthropic_to_chat::AnthropicToChatStream::new(
                "gpt",
                true,
                ToolNames::default(),
                &Stamp::new("bench", 1),
            );
            let mut out = BytesMut::new();
            for piece in as_.chunks(512) {
                t.feed(piece, &mut out);
            }
            t.finish(&mut out);
            out
        })
    });
    g.finish();

    // SSE parser
    let mut g = c.benchmark_group("sse_parser");
    g.throughput(Throughput::Bytes(as_.len() as u64));
    g.bench_function("anthropic_stream_512b_pieces", |b| {
        b.iter(|| {
            let mut p = SseParser::new();
            let mut n = 0usize;
            for piece in as_.chunks(512) {
                p.feed(piece, &mut |_| n += 1);
            }
            n
        })
    });
    g.finish();

    // local count_tokens of the Claude Code turn (memoised blocks after the first call)
    tollgate::meter::count::count_anthropic_request(&turn);
    let mut g = c.benchmark_group("count_tokens");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("claude_code_turn_local", |b| {
        b.iter(|| tollgate::meter::count::count_anthropic_request(black_box(&turn)))
    });
    g.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
