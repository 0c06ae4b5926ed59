//! The text a check reads, for each scope and client format. Pure functions of the request
//! body. Images and other media are never sent; pieces are joined with blank lines.
//!
//! | scope | Chat | Anthropic Messages | Responses |
//! |---|---|---|---|
//! | `last_user` | last `role:user` message | text blocks of the last user message | `input` (a string), or the last user item |
//! | `all_user` | every user message | text blocks of every user message | every user item |
//! | `tool_results` | `role:tool` messages | `tool_result` blocks | `function_call_output` items |
//! | `full` | every message | `system`, every text block and tool result | `instructions`, every item's text and output |

use serde_json::{Map, Value};

use super::Scope;
use crate::translate::Format;

/// The text of `scope` in a request body of client format `format` (empty: nothing to check).
pub fn text(body: &Map<String, Value>, format: Format, scope: Scope) -> String {
    let mut parts: Vec<&str> = Vec::new();
    match format {
        Format::Anthropic => anthropic(body, scope, &mut parts),
        Format::Responses => responses(body, scope, &mut parts),
        Format::Chat | Format::Gemini => chat(body, scope, &mut parts),
    }
    parts.retain(|p| !p.is_empty());
    parts.join("\n\n")
}

/// The text parts of a content value: a string, or a list of parts with `text` (Chat's
/// `text`, Anthropic's `text`, Responses' `input_text`/`output_text`); media are skipped.
fn content_text<'a>(c: &'a Value, out: &mut Vec<&'a str>) {
    match c {
        Value::String(s) => out.push(s),
        Value::Array(parts) => {
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text" | "input_text" | "output_text") | None => {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            out.push(t);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn array<'a>(body: &'a Map<String, Value>, field: &str) -> &'a [Value] {
    body.get(field)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

fn role(m: &Value) -> Option<&str> {
    m.get("role").and_then(Value::as_str)
}

fn chat<'a>(body: &'a Map<String, Value>, scope: Scope, out: &mut Vec<&'a str>) {
    let msgs = array(body, "messages");
    let is_user = |m: &&Value| role(m) == Some("user");
    match scope {
        Scope::LastUser => {
            if let Some(m) = msgs.iter().rev().find(is_user) {
                content_text(&m["content"], out);
            }
        }
        Scope::AllUser => msgs
            .iter()
            .filter(is_user)
            .for_each(|m| content_text(&m["content"], out)),
        Scope::ToolResults => msgs
            .iter()
            .filter(|m| role(m) == Some("tool"))
            .for_each(|m| content_text(&m["content"], out)),
        Scope::Full => msgs.iter().for_each(|m| content_text(&m["content"], out)),
    }
}

/// The text blocks of an Anthropic message (tool results are their own scope).
fn anthropic_blocks<'a>(content: &'a Value, out: &mut Vec<&'a str>) {
    match content {
        Value::String(s) => out.push(s),
        Value::Array(blocks) => {
            for b in blocks {
                if b.get("type").and_then(Value::as_str) == Some("text") {
                    if let Some(t) = b.get("text").and_then(Value::as_str) {
                        out.push(t);
                    }
                }
            }
        }
        _ => {}
    }
}

fn anthropic_tool_results<'a>(content: &'a Value, out: &mut Vec<&'a str>) {
    for b in content.as_array().map_or(&[][..], Vec::as_slice) {
        if b.get("type").and_then(Value::as_str) == Some("tool_result") {
            if let Some(c) = b.get("content") {
                content_text(c, out);
            }
        }
    }
}

fn anthropic<'a>(body: &'a Map<String, Value>, scope: Scope, out: &mut Vec<&'a str>) {
    let msgs = array(body, "messages");
    let is_user = |m: &&Value| role(m) == Some("user");
    match scope {
        Scope::LastUser => {
            if let Some(m) = msgs.iter().rev().find(is_user) {
                anthropic_blocks(&m["content"], out);
            }
        }
        Scope::AllUser => msgs
            .iter()
            .filter(is_user)
            .for_each(|m| anthropic_blocks(&m["content"], out)),
        Scope::ToolResults => msgs
            .iter()
            .for_each(|m| anthropic_tool_results(&m["content"], out)),
        Scope::Full => {
            if let Some(s) = body.get("system") {
                content_text(s, out);
            }
            for m in msgs {
                anthropic_blocks(&m["content"], out);
                anthropic_tool_results(&m["content"], out);
            }
        }
    }
}

/// A Responses input item is a message when it has a role (its `type` is `message` or
/// absent).
fn is_message(item: &Value) -> bool {
    role(item).is_some()
        && matches!(
            item.get("type").and_then(Value::as_str),
            None | Some("message")
        )
}

fn is_tool_output(item: &Value) -> bool {
    matches!(
        item.get("type").and_then(Value::as_str),
        Some("function_call_output" | "custom_tool_call_output")
    )
}

fn responses<'a>(body: &'a Map<String, Value>, scope: Scope, out: &mut Vec<&'a str>) {
    let items = match body.get("input") {
        Some(Value::String(s)) => {
            // A plain string is the user's message (and the only thing there is).
            if scope != Scope::ToolResults {
                if scope == Scope::Full {
                    if let Some(Value::String(i)) = body.get("instructions") {
                        out.push(i);
                    }
                }
                out.push(s);
            }
            return;
        }
        Some(Value::Array(a)) => a.as_slice(),
        _ => &[],
    };
    let is_user = |m: &&Value| is_message(m) && role(m) == Some("user");
    match scope {
        Scope::LastUser => {
            if let Some(m) = items.iter().rev().find(is_user) {
                content_text(&m["content"], out);
            }
        }
        Scope::AllUser => items
            .iter()
            .filter(is_user)
            .for_each(|m| content_text(&m["content"], out)),
        Scope::ToolResults => items
            .iter()
            .filter(|i| is_tool_output(i))
            .for_each(|i| content_text(&i["output"], out)),
        Scope::Full => {
            if let Some(Value::String(i)) = body.get("instructions") {
                out.push(i);
            }
            for i in items {
                if is_message(i) {
                    content_text(&i["content"], out);
                } else if is_tool_output(i) {
                    content_text(&i["output"], out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(body: Value, format: Format, scope: Scope) -> String {
        text(body.as_object().unwrap(), format, scope)
    }

    const IMG: &str = "data:image/png;base64,AAAA";

    #[test]
    fn chat_scopes() {
        let body = json!({"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "read", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "file text"},
            {"role": "user", "content": [{"type": "text", "text": "second"},
                {"type": "image_url", "image_url": {"url": IMG}}]},
        ]});
        assert_eq!(t(body.clone(), Format::Chat, Scope::LastUser), "second");
        assert_eq!(
            t(body.clone(), Format::Chat, Scope::AllUser),
            "first\n\nsecond"
        );
        assert_eq!(
            t(body.clone(), Format::Chat, Scope::ToolResults),
            "file text"
        );
        let full = t(body, Format::Chat, Scope::Full);
        assert_eq!(full, "sys\n\nfirst\n\nfile text\n\nsecond");
        assert!(!full.contains("base64"));
    }

    #[test]
    fn anthropic_scopes() {
        let body = json!({"system": [{"type": "text", "text": "sys"}], "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "text", "text": "reading"},
                {"type": "tool_use", "id": "t1", "name": "Read", "input": {"path": "a"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "file text"},
                    {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]},
                {"type": "text", "text": "second"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
        ]});
        assert_eq!(
            t(body.clone(), Format::Anthropic, Scope::LastUser),
            "second"
        );
        assert_eq!(
            t(body.clone(), Format::Anthropic, Scope::AllUser),
            "first\n\nsecond"
        );
        assert_eq!(
            t(body.clone(), Format::Anthropic, Scope::ToolResults),
            "file text"
        );
        assert_eq!(
            t(body, Format::Anthropic, Scope::Full),
            "sys\n\nfirst\n\nreading\n\nsecond\n\nfile text"
        );
        // Claude Code's usual last turn: only a tool result, no user text.
        let only_result = json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "out"}]}]});
        assert_eq!(
            t(only_result.clone(), Format::Anthropic, Scope::LastUser),
            ""
        );
        assert_eq!(t(only_result, Format::Anthropic, Scope::ToolResults), "out");
    }

    #[test]
    fn responses_scopes() {
        let s = json!({"instructions": "sys", "input": "just this"});
        assert_eq!(
            t(s.clone(), Format::Responses, Scope::LastUser),
            "just this"
        );
        assert_eq!(t(s.clone(), Format::Responses, Scope::AllUser), "just this");
        assert_eq!(t(s.clone(), Format::Responses, Scope::ToolResults), "");
        assert_eq!(t(s, Format::Responses, Scope::Full), "sys\n\njust this");
        let body = json!({"instructions": "sys", "input": [
            {"role": "user", "content": "first"},
            {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "file text"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"},
                {"type": "input_image", "image_url": IMG}]},
        ]});
        assert_eq!(
            t(body.clone(), Format::Responses, Scope::LastUser),
            "second"
        );
        assert_eq!(
            t(body.clone(), Format::Responses, Scope::AllUser),
            "first\n\nsecond"
        );
        assert_eq!(
            t(body.clone(), Format::Responses, Scope::ToolResults),
            "file text"
        );
        assert_eq!(
            t(body, Format::Responses, Scope::Full),
            "sys\n\nfirst\n\nfile text\n\nok\n\nsecond"
        );
    }

    #[test]
    fn odd_bodies_give_no_text() {
        for f in [Format::Chat, Format::Anthropic, Format::Responses] {
            for s in [
                Scope::LastUser,
                Scope::AllUser,
                Scope::ToolResults,
                Scope::Full,
            ] {
                assert_eq!(t(json!({"messages": 3, "input": {"x": 1}}), f, s), "");
            }
        }
    }
}
