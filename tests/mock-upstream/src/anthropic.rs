//! Anthropic Messages answers (streamed or not, with tool use).

use crate::respond::{arg_parts, tool_args, Events};
use serde_json::{json, Value};

pub(crate) fn anthropic_events(
    model: &str,
    pieces: &[String],
    tool: Option<&str>,
    stream: bool,
    p: u64,
    c: u64,
) -> Events {
    let usage = json!({"input_tokens": p, "output_tokens": c, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    if !stream {
        let content = match tool {
            Some(name) => {
                json!([{"type": "text", "text": "I'll run it."}, {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": serde_json::from_str::<Value>(tool_args(name)).unwrap()}])
            }
            None => json!([{"type": "text", "text": pieces.concat()}]),
        };
        return Events::Json(json!({
            "id": "msg_mock1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null, "usage": usage,
        }));
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock1", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": p, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        ),
        ev("ping", json!({"type": "ping"})),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    let text: Vec<String> = if tool.is_some() {
        vec!["I'll run it.".to_string()]
    } else {
        pieces.to_vec()
    };
    for t in &text {
        out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})));
    }
    out.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    if let Some(name) = tool {
        out.push(ev("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}}})));
        for part in arg_parts(tool_args(name)) {
            out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
        out.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    out.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null}, "usage": {"output_tokens": c}})));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    Events::Stream(out)
}

/// The error envelope for an injected `status`.
pub(crate) fn error_body(status: u16, message: &str) -> Value {
    let t = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": t, "message": message}, "request_id": "req_mock"})
}

/// The mid-stream error event of `x-mock-fault: event-error`.
pub(crate) const ERROR_EVENT: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"mock overloaded\"}}\n\n";
