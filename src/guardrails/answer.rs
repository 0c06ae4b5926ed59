//! A non-streamed answer in the client's format: the text an output check reads (text and
//! tool-call arguments: an answer can leak through either), and the native refusal that
//! replaces a flagged one: Anthropic `stop_reason: "refusal"`, Chat `finish_reason:
//! "content_filter"` with the `refusal` field, Responses a `refusal` content part. Usage and
//! ids are kept: the provider's work is billed.

use serde_json::{json, Value};

use crate::translate::Format;

/// What the refusal says.
pub const REFUSAL: &str = "The answer was withheld by guardrail policy.";

/// The text of an answer (empty when it has none, or is not an answer).
pub fn text(answer: &Value, format: Format) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut push = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => parts.push(s.clone()),
        Some(v @ Value::Object(_)) => parts.push(v.to_string()),
        _ => {}
    };
    match format {
        Format::Anthropic => {
            for b in list(answer, "content") {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => push(b.get("text")),
                    Some("tool_use") => push(b.get("input")),
                    _ => {}
                }
            }
        }
        Format::Responses => {
            for item in list(answer, "output") {
                match item.get("type").and_then(Value::as_str) {
                    Some("message") => {
                        for c in list(item, "content") {
                            push(c.get("text"));
                        }
                    }
                    Some("function_call") => push(item.get("arguments")),
                    _ => {}
                }
            }
        }
        Format::Chat | Format::Gemini => {
            for choice in list(answer, "choices") {
                let m = &choice["message"];
                match m.get("content") {
                    Some(Value::Array(p)) => p.iter().for_each(|p| push(p.get("text"))),
                    c => push(c),
                }
                for call in list(m, "tool_calls") {
                    push(call["function"].get("arguments"));
                }
            }
        }
    }
    parts.join("\n\n")
}

fn list<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

/// Replaces the answer's content with the native refusal of its format.
pub fn refuse(answer: &mut Value, format: Format) {
    match format {
        Format::Anthropic => {
            answer["content"] = json!([]);
            answer["stop_reason"] = json!("refusal");
            answer["stop_sequence"] = Value::Null;
        }
        Format::Responses => {
            let id = format!("msg_{}", crate::ids::generate_id(""));
            answer["output"] = json!([{
                "type": "message",
                "id": id,
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": REFUSAL}],
            }]);
            if let Some(o) = answer.as_object_mut() {
                o.remove("output_text");
            }
        }
        Format::Chat | Format::Gemini => {
            if let Some(choices) = answer.get_mut("choices").and_then(Value::as_array_mut) {
                for c in choices {
                    c["message"] =
                        json!({"role": "assistant", "content": null, "refusal": REFUSAL});
                    c["finish_reason"] = json!("content_filter");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic() {
        let mut a = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "hello"}, {"type": "tool_use", "id": "t", "name": "Bash",
                "input": {"command": "ls"}}, {"type": "thinking", "thinking": "hm"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 5}});
        assert_eq!(text(&a, Format::Anthropic), "hello\n\n{\"command\":\"ls\"}");
        refuse(&mut a, Format::Anthropic);
        assert_eq!(a["stop_reason"], "refusal");
        assert_eq!(a["content"], json!([]));
        assert_eq!(a["usage"]["output_tokens"], 5);
    }

    #[test]
    fn chat() {
        let mut a = json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "hello", "tool_calls": [{"id": "x", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":1}"}}]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        assert_eq!(text(&a, Format::Chat), "hello\n\n{\"a\":1}");
        refuse(&mut a, Format::Chat);
        assert_eq!(a["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(a["choices"][0]["message"]["refusal"], REFUSAL);
        assert_eq!(a["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(a["usage"]["completion_tokens"], 2);
    }

    #[test]
    fn responses() {
        let mut a = json!({"id": "resp_1", "object": "response", "status": "completed",
            "output": [{"type": "reasoning", "summary": []}, {"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "hello", "annotations": []}]},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}],
            "output_text": "hello", "usage": {"input_tokens": 1, "output_tokens": 2}});
        assert_eq!(text(&a, Format::Responses), "hello\n\n{}");
        refuse(&mut a, Format::Responses);
        assert_eq!(a["output"][0]["content"][0]["type"], "refusal");
        assert_eq!(a["output"][0]["content"][0]["refusal"], REFUSAL);
        assert_eq!(a["output"].as_array().unwrap().len(), 1);
        assert!(a.get("output_text").is_none());
        assert_eq!(a["usage"]["output_tokens"], 2);
    }
}
