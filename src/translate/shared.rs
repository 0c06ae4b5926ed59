//! The rules every direction shares (docs/translation.md, "Shared rules"): tool names and ids,
//! arguments, media, reasoning levels, stop reasons and usage objects.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

use crate::meter::Usage;

/// Lower-case hex of some bytes (for hashed names and ids).
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Tool names valid everywhere (`^[A-Za-z0-9_-]{1,64}$`). Longer or odd names are
/// shortened to a prefix plus a hash; the map restores the client's name in output.
#[derive(Debug, Clone, Default)]
pub struct ToolNames {
    to_client: Arc<HashMap<String, String>>,
}

pub fn safe_tool_name(name: &str) -> String {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        return name.to_string();
    }
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(55)
        .collect();
    let h = hex(&Sha256::digest(name.as_bytes())[..4]);
    format!("{clean}_{h}")
}

impl ToolNames {
    /// Builds the map from the client's tool names.
    pub fn from_names<'a>(names: impl Iterator<Item = &'a str>) -> ToolNames {
        let mut m = HashMap::new();
        for n in names {
            let s = safe_tool_name(n);
            if s != n {
                m.insert(s, n.to_string());
            }
        }
        ToolNames {
            to_client: Arc::new(m),
        }
    }

    pub fn to_upstream(&self, name: &str) -> String {
        safe_tool_name(name)
    }

    pub fn to_client(&self, name: &str) -> String {
        self.to_client
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }
}

/// Ids up to this length pass through unchanged: Gemini's thought signatures ride inside the
/// ids tollgate mints for its tool calls (E47) and run to a few KB.
const MAX_TOOL_ID: usize = 8192;

/// Tool ids valid for Anthropic (`^[a-zA-Z0-9_-]+$`), deterministic and stateless.
pub fn safe_tool_id(id: &str, prefix: &str) -> String {
    if !id.is_empty()
        && id.len() <= MAX_TOOL_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return id.to_string();
    }
    format!("{prefix}{}", &hex(&Sha256::digest(id.as_bytes()))[..24])
}

/// Arguments: the OpenAI `arguments` string → Anthropic `input` object.
pub fn args_to_input(args: &Value) -> Value {
    match args {
        Value::Object(_) => args.clone(),
        Value::String(s) if s.trim().is_empty() => json!({}),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            Ok(v) => json!({ "value": v }),
            Err(_) => json!({ "_raw_arguments": s }),
        },
        Value::Null => json!({}),
        other => json!({ "value": other }),
    }
}

/// Arguments, reversed: Anthropic `input` → OpenAI `arguments` (compact JSON; `{}` never `""`).
pub fn input_to_args(input: &Value) -> String {
    match input {
        Value::Null => "{}".into(),
        v => v.to_string(),
    }
}

/// Media: `data:<mime>;base64,<d>` → (mime, data).
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((mime, data))
}

pub const ANTHROPIC_IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// A stop reason → finish reason (tool-presence rule applied by the caller).
pub fn stop_to_finish(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// C finish reason → A stop reason.
pub fn finish_to_stop(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Canonical usage → A `usage` object.
pub fn usage_to_anthropic(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
        "output_tokens": u.output,
    })
}

/// Canonical usage → C `usage` object.
pub fn usage_to_openai(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_total(),
        "completion_tokens": u.output,
        "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    })
}

/// Reasoning level: Anthropic thinking/effort → Chat `reasoning_effort`.
pub fn effort_from_anthropic(req: &Map<String, Value>) -> Option<&'static str> {
    if let Some(e) = req
        .get("output_config")
        .and_then(|o| o.get("effort"))
        .and_then(Value::as_str)
    {
        return Some(match e {
            "low" => "low",
            "medium" => "medium",
            _ => "high",
        });
    }
    let t = req.get("thinking")?;
    match t.get("type").and_then(Value::as_str)? {
        "enabled" => {
            let b = t
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(8192);
            Some(if b < 4096 {
                "low"
            } else if b < 16384 {
                "medium"
            } else {
                "high"
            })
        }
        "disabled" => None,
        _ => None,
    }
}

/// Reasoning level, reversed: Chat `reasoning_effort` → Anthropic thinking budget (budget-only models).
pub fn budget_for_effort(effort: &str) -> Option<u64> {
    match effort {
        "minimal" => Some(1024),
        "low" => Some(2048),
        "medium" => Some(8192),
        "high" => Some(24576),
        "xhigh" => Some(32768),
        _ => None,
    }
}

/// Collapses text blocks or a string into one string.
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    if !out.is_empty() {
                        out.push_str("\n\n");
                    }
                    out.push_str(t);
                }
            }
            out
        }
        _ => String::new(),
    }
}

/// Removes anything that looks like a provider secret from an upstream message.
pub fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for (i, word) in msg.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_');
        let secret = (w.starts_with("sk-")
            || w.starts_with("sk_")
            || w.starts_with("tg-")
            || w.starts_with("AIza"))
            && w.len() > 8;
        out.push_str(if secret { "[redacted]" } else { word });
    }
    out.chars().take(2000).collect()
}

/// Removes thinking blocks without a real signature from assistant turns (E26): tollgate mints
/// such blocks when it translates another provider's reasoning for an Anthropic client, and
/// Anthropic refuses them if the conversation later goes to a Claude model. Returns whether
/// anything was removed.
pub fn strip_unsigned_thinking(req: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for m in req
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if m.get("role").and_then(Value::as_str) != Some("assistant") {
            continue;
        }
        if let Some(blocks) = m.get_mut("content").and_then(Value::as_array_mut) {
            let before = blocks.len();
            blocks.retain(|b| {
                !(b.get("type").and_then(Value::as_str) == Some("thinking")
                    && b.get("signature")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty))
            });
            changed |= blocks.len() != before;
        }
    }
    changed
}

/// The `tool_calls` fragments of a chat stream chunk's `delta`.
pub fn tool_call_deltas(delta: &Value) -> impl Iterator<Item = &Value> {
    delta
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Whether an OpenAI chat request asked for the usage chunk of its stream.
pub fn asked_for_usage(req: &Map<String, Value>) -> bool {
    req.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// Whether an Anthropic `metadata.user_id` is Claude Code's JSON telemetry blob (device and
/// session ids) rather than an application's end-user id.
pub fn is_telemetry_blob(v: &str) -> bool {
    // Validated without building it: this runs on every Claude Code request.
    v.trim_start().starts_with('{') && serde_json::from_str::<serde::de::IgnoredAny>(v).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        assert_eq!(safe_tool_name("Bash"), "Bash");
        let long = "mcp__plugin_something_very_long_name_that_goes_on_and_on_and_on_forever";
        let s = safe_tool_name(long);
        assert!(s.len() <= 64 && s != long);
        let other = safe_tool_name(
            "mcp__plugin_something_very_long_name_that_goes_on_and_on_and_on_forever_2",
        );
        assert_ne!(
            s, other,
            "two long names with a shared prefix stay distinct"
        );
        let names = ToolNames::from_names([long, "Bash"].into_iter());
        assert_eq!(names.to_client(&s), long);
        assert_eq!(
            safe_tool_id("functions.get_weather:0", "toolu_"),
            safe_tool_id("functions.get_weather:0", "toolu_")
        );
        assert!(safe_tool_id("functions.get_weather:0", "toolu_").starts_with("toolu_"));
    }

    #[test]
    fn arguments() {
        assert_eq!(args_to_input(&json!("")), json!({}));
        assert_eq!(args_to_input(&json!("{\"a\":1}")), json!({"a": 1}));
        assert_eq!(args_to_input(&json!("[1]")), json!({"value": [1]}));
        assert_eq!(
            args_to_input(&json!("{bad")),
            json!({"_raw_arguments": "{bad"})
        );
        assert_eq!(args_to_input(&json!({"x": 2})), json!({"x": 2}));
        assert_eq!(input_to_args(&json!({})), "{}");
    }

    #[test]
    fn unsigned_thinking_is_stripped_for_anthropic() {
        let mut req = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": ""}, {"type": "thinking", "thinking": "real", "signature": "EqQB"}, {"type": "text", "text": "x"}]}]})
        .as_object()
        .unwrap()
        .clone();
        assert!(strip_unsigned_thinking(&mut req));
        let blocks = req["messages"][1]["content"].as_array().unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0]["signature"], "EqQB");
        assert!(!strip_unsigned_thinking(&mut req));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("bad key sk-abcdefghijkl here"),
            "bad key [redacted] here"
        );
    }
}
