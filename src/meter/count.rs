//! Local token counting with a real BPE tokenizer (o200k_base, embedded in the binary, no
//! network), for `count_tokens` against providers that have no such endpoint and for usage
//! estimates. The tokenizer loads on first use (it costs ~90 ms and some MB), and counts of
//! large blocks are memoised by content hash: Claude Code resends the same 60–80 KB of tools
//! and system prompt every turn, so only what changed is tokenized again.

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use tiktoken_rs::CoreBPE;

static BPE: Lazy<CoreBPE> = Lazy::new(|| tiktoken_rs::o200k_base().expect("embedded o200k_base"));

/// Blocks at least this long are memoised.
const MEMO_MIN: usize = 256;
const MEMO_MAX_ENTRIES: usize = 16_384;

static MEMO: Lazy<Mutex<HashMap<u64, u64>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// Tokens per image when its size is unknown (Anthropic's rule of thumb for ~1 MP).
const IMAGE_TOKENS: u64 = 1_600;
/// Per-message framing overhead.
const MESSAGE_OVERHEAD: u64 = 4;

/// Tokens of one string.
pub fn count_text(s: &str) -> u64 {
    if s.is_empty() {
        return 0;
    }
    if s.len() < MEMO_MIN {
        return BPE.encode_ordinary(s).len() as u64;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    let key = h.finish();
    if let Some(n) = MEMO.lock().get(&key) {
        return *n;
    }
    let n = BPE.encode_ordinary(s).len() as u64;
    let mut memo = MEMO.lock();
    if memo.len() >= MEMO_MAX_ENTRIES {
        memo.clear();
    }
    memo.insert(key, n);
    n
}

fn count_value_json(v: &Value) -> u64 {
    count_text(&v.to_string())
}

/// Tokens of Anthropic content (a string or blocks).
fn count_content(c: &Value) -> u64 {
    match c {
        Value::String(s) => count_text(s),
        Value::Array(blocks) => blocks.iter().map(count_block).sum(),
        Value::Null => 0,
        other => count_value_json(other),
    }
}

fn count_block(b: &Value) -> u64 {
    match b.get("type").and_then(Value::as_str) {
        Some("text") => count_text(b.get("text").and_then(Value::as_str).unwrap_or("")),
        Some("image") => IMAGE_TOKENS,
        Some("tool_use") => {
            count_text(b.get("name").and_then(Value::as_str).unwrap_or(""))
                + b.get("input").map_or(0, count_value_json)
        }
        Some("tool_result") => b.get("content").map_or(0, count_content),
        Some("thinking") => count_text(b.get("thinking").and_then(Value::as_str).unwrap_or("")),
        Some("document") => match b.pointer("/source/type").and_then(Value::as_str) {
            Some("text") => count_text(
                b.pointer("/source/data")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            ),
            Some("content") => b.pointer("/source/content").map_or(0, count_content),
            // A PDF's text is unknown without parsing it: a page-ish guess per 3 KB of base64.
            _ => b
                .pointer("/source/data")
                .and_then(Value::as_str)
                .map_or(1_000, |d| (d.len() as u64 / 3_000).max(1) * 500),
        },
        _ => count_value_json(b),
    }
}

/// Input tokens of an Anthropic Messages request: system, messages and tools.
pub fn count_anthropic_request(req: &Map<String, Value>) -> u64 {
    let mut n = 0;
    match req.get("system") {
        Some(Value::String(s)) => n += count_text(s),
        Some(Value::Array(blocks)) => n += blocks.iter().map(count_block).sum::<u64>(),
        _ => {}
    }
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        n += MESSAGE_OVERHEAD + m.get("content").map_or(0, count_content);
    }
    for t in req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        n += count_value_json(t);
    }
    n.max(1)
}

/// Input tokens of an OpenAI chat request: messages and tools.
pub fn count_chat_request(req: &Map<String, Value>) -> u64 {
    let mut n = 0;
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        n += MESSAGE_OVERHEAD;
        match m.get("content") {
            Some(Value::String(s)) => n += count_text(s),
            Some(Value::Array(parts)) => {
                for p in parts {
                    n += match p.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            count_text(p.get("text").and_then(Value::as_str).unwrap_or(""))
                        }
                        Some("image_url") => IMAGE_TOKENS,
                        _ => count_value_json(p),
                    };
                }
            }
            _ => {}
        }
        if let Some(calls) = m.get("tool_calls") {
            n += count_value_json(calls);
        }
    }
    for t in req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        n += count_value_json(t);
    }
    n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_real_tokens() {
        assert_eq!(count_text("hello world"), 2);
        let req = json!({"model": "m", "system": "You are terse.", "messages": [{"role": "user", "content": "say hi"}],
            "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]});
        let n = count_anthropic_request(req.as_object().unwrap());
        assert!(n > 10 && n < 60, "{n}");
        // memoised blocks give the same answer
        let long = "word ".repeat(200);
        assert_eq!(count_text(&long), count_text(&long));
    }

    #[test]
    fn claude_code_turn_is_counted() {
        // A captured Claude Code first turn (the same capture a golden translation case uses).
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/translate/capture-claude-code-messages-first-turn/in.json"
        ))
        .expect("the capture is in the repository");
        let v: Value = serde_json::from_str(&text).unwrap();
        let body = v.get("body").unwrap_or(&v);
        let obj = body.as_object().expect("a request body");
        let n = count_anthropic_request(obj);
        assert!(n > 100, "{n}");
    }
}
