//! Criterion benchmarks of the built-in guardrail checks (src/guardrails/local/) on an 80 KB
//! Claude Code turn: the `pii` scan of the body text, the scan of only the texts the model
//! reads, and masking the request in place. Target: `pii` scan ≤ 200 µs on 80 KB.
//! Quick mode: `cargo bench --bench guardrails -- --quick`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use tollgate::guardrails::local::{mask_request, Detector, LocalChecks};
use tollgate::translate::Format;

/// A Claude Code turn of ~80 KB as a coding session produces it: 24 tools with JSON schemas,
/// a system prompt in blocks, then tool results of the files and commands it ran (real Rust
/// source with numbers and hex, a git log with hashes, dates and authors' addresses, a
/// Cargo.lock excerpt full of checksums, a `.env` file with a key), and tool calls.
fn claude_code_turn() -> Value {
    let desc =
        "Executes a given command and returns its output. Use it for git, builds and tests. "
            .repeat(25);
    let tools: Vec<Value> = (0..24)
        .map(|i| {
            json!({"name": format!("Tool{i}"), "description": desc,
                "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                    "properties": {"command": {"type": "string", "description": "The command to run"}, "timeout": {"type": "number"}},
                    "required": ["command"], "additionalProperties": false}})
        })
        .collect();
    let sys = "You are an interactive agent that helps users with software engineering tasks. \
        When you commit, end the message with Co-Authored-By: Claude <noreply@anthropic.com>. "
        .repeat(30);
    let source = include_str!("../src/translate/chat_to_anthropic.rs");
    let source = &source[..source.len().min(6_000)];
    let mut git_log = String::new();
    for i in 0..40u32 {
        git_log.push_str(&format!(
            "commit {:040x}\nAuthor: Dev {i} <dev{i}@example.com>\nDate:   2026-0{}-1{} 1{}:2{}:3{} +0200\n\n    fix: handle case {i} in parser v1.{i}.0 (#{})\n\n",
            u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834),
            1 + i % 9, i % 10, i % 10, i % 10, i % 10, 4000 + i
        ));
    }
    let lock = include_str!("../Cargo.lock");
    let lock = &lock[..lock.len().min(4_000)];
    let env_file = "DATABASE_URL=postgres://app@db:5432/app\nOPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z\nPORT=8080\n";
    let result = |id: &str, text: &str| json!({"type": "tool_result", "tool_use_id": id, "content": [{"type": "text", "text": text}]});
    let call = |id: &str, cmd: &str| json!({"type": "tool_use", "id": id, "name": "Bash", "input": {"command": cmd}});
    json!({"model": "claude-opus-4-8", "max_tokens": 64000, "stream": true,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.123;"}, {"type": "text", "text": sys, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "The build fails after the last merge; find out why and fix it."}]},
            {"role": "assistant", "content": [call("toolu_01", "cat src/translate/chat_to_anthropic.rs")]},
            {"role": "user", "content": [result("toolu_01", source)]},
            {"role": "assistant", "content": [call("toolu_02", "git log -40")]},
            {"role": "user", "content": [result("toolu_02", &git_log)]},
            {"role": "assistant", "content": [call("toolu_03", "head -c 4000 Cargo.lock; cat .env")]},
            {"role": "user", "content": [result("toolu_03", &format!("{lock}\n{env_file}"))]}],
        "tools": tools, "metadata": {"user_id": "{\"device_id\":\"fb5230\",\"session_id\":\"6afd43e8\"}"}})
}

/// The texts of the turn the model reads (system, text blocks, tool results, tool inputs).
fn model_texts(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for block in body["system"].as_array().unwrap() {
        out.push(block["text"].as_str().unwrap().to_string());
    }
    for msg in body["messages"].as_array().unwrap() {
        for block in msg["content"].as_array().unwrap() {
            match block["type"].as_str() {
                Some("text") => out.push(block["text"].as_str().unwrap().to_string()),
                Some("tool_use") => out.push(block["input"].to_string()),
                Some("tool_result") => {
                    for part in block["content"].as_array().unwrap() {
                        out.push(part["text"].as_str().unwrap().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let body = claude_code_turn();
    let text = body.to_string();
    assert!(
        (75_000..90_000).contains(&text.len()),
        "body is {} bytes",
        text.len()
    );
    let texts = model_texts(&body);
    let checks = LocalChecks::new(&["project\\s+falcon".into(), "internal use only".into()])
        .expect("patterns compile");
    let pii = Detector::pii();
    // The body holds two addresses per commit, a key, and nothing else worth flagging.
    let found = pii.scan(&text);
    assert!(found.len() >= 40, "found {}", found.len());

    let mut g = c.benchmark_group("guardrails");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("pii_scan_body_80k", |b| {
        b.iter(|| pii.scan(black_box(&text)))
    });
    g.bench_function("pii_check_model_texts_80k", |b| {
        b.iter(|| pii.check(black_box(&texts).iter().map(String::as_str)))
    });
    let deny = checks.detector("deny_patterns").unwrap();
    g.bench_function("deny_patterns_scan_body_80k", |b| {
        b.iter(|| deny.scan(black_box(&text)))
    });
    g.bench_function("pii_mask_request_80k", |b| {
        b.iter_batched(
            || body.clone(),
            // The body is returned so that its drop is not timed.
            |mut v| {
                let masks = mask_request(Format::Anthropic, &mut v, &pii);
                (v, masks)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
