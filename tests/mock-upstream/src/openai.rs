//! OpenAI answers: Chat Completions (streamed or not, with tool calls), embeddings,
//! moderations, the one-model list of `GET /v1/models` outside discovery, and errors.

use crate::respond::{arg_parts, now, tool_args, Events};
use serde_json::{json, Value};

pub(crate) fn chat_events(
    req: &Value,
    model: &str,
    pieces: &[String],
    tool: Option<&str>,
    stream: bool,
    p: u64,
    c: u64,
) -> Events {
    let usage = json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c, "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}});
    let id = "chatcmpl-mock1";
    if !stream {
        let message = match tool {
            Some(names) => {
                let calls: Vec<Value> = names.split('+').enumerate().map(|(i, name)| json!({"id": format!("call_mock_{}", i + 1), "type": "function", "function": {"name": name, "arguments": tool_args(name)}})).collect();
                json!({"role": "assistant", "content": null, "tool_calls": calls})
            }
            None => json!({"role": "assistant", "content": pieces.concat()}),
        };
        return Events::Json(json!({
            "id": id, "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": if tool.is_some() { "tool_calls" } else { "stop" }, "logprobs": null}],
            "usage": usage,
        }));
    }
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": now(), "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if include_usage {
            v["usage"] = Value::Null;
        }
        format!("data: {v}\n\n")
    };
    let mut ev = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    match tool {
        Some(names) => {
            for (i, name) in names.split('+').enumerate() {
                ev.push(chunk(json!({"tool_calls": [{"index": i, "id": format!("call_mock_{}", i + 1), "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
                for part in arg_parts(tool_args(name)) {
                    ev.push(chunk(
                        json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}),
                        Value::Null,
                    ));
                }
            }
            ev.push(chunk(json!({}), json!("tool_calls")));
        }
        None => {
            for p in pieces {
                ev.push(chunk(json!({"content": p}), Value::Null));
            }
            ev.push(chunk(json!({}), json!("stop")));
        }
    }
    if include_usage {
        ev.push(format!("data: {}\n\n", json!({"id": id, "object": "chat.completion.chunk", "created": now(), "model": model, "choices": [], "usage": usage})));
    }
    ev.push("data: [DONE]\n\n".to_string());
    Events::Stream(ev)
}

/// The error envelope for an injected `status` (or a missing route).
pub(crate) fn error_body(status: u16, message: &str) -> Value {
    json!({"error": {"message": message, "type": if status == 429 { "rate_limit_exceeded" } else { "invalid_request_error" }, "param": null, "code": null}})
}

/// The mid-stream error event of `x-mock-fault: event-error`.
pub(crate) const ERROR_EVENT: &str = "data: {\"error\":{\"message\":\"mock overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";

pub(crate) fn embeddings(req: &Value, model: &str, p: u64) -> Value {
    let n = match &req["input"] {
        Value::Array(a) => a.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]})).collect();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": p, "total_tokens": p}})
}

pub(crate) fn moderation(model: &str) -> Value {
    json!({"id": "modr-mock", "model": model, "results": [{"flagged": false, "categories": {}, "category_scores": {}}]})
}

pub(crate) fn model_list() -> Value {
    json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]})
}
