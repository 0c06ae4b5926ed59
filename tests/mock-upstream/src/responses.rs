//! OpenAI Responses answers: the last input item, and the answer (streamed or not, with
//! function calls).

use crate::respond::{arg_parts, now, tool_args, Events};
use serde_json::{json, Value};

/// `last_user` for the Responses API: the last item of `input` that is not a `system` or
/// `developer` message.
pub(crate) fn responses_last(req: &Value) -> (String, bool, String) {
    let none = || (String::new(), false, String::new());
    let items = match &req["input"] {
        Value::String(s) => return (s.clone(), false, String::new()),
        Value::Array(a) => a,
        _ => return none(),
    };
    let Some(last) = items
        .iter()
        .rev()
        .find(|it| !matches!(it["role"].as_str(), Some("system" | "developer")))
    else {
        return none();
    };
    let text_of = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|x| x["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    match last["type"].as_str() {
        Some("function_call_output" | "custom_tool_call_output") => {
            (String::new(), true, text_of(&last["output"]))
        }
        Some("message") | None => (text_of(&last["content"]), false, String::new()),
        _ => none(),
    }
}

pub(crate) fn responses_events(
    req: &Value,
    model: &str,
    pieces: &[String],
    tool: Option<&str>,
    stream: bool,
    p: u64,
    c: u64,
) -> Events {
    let text = pieces.concat();
    let (item, item_added) = match tool {
        Some(name) => (
            json!({"type": "function_call", "id": "fc_mock1", "call_id": "call_mock1", "name": name, "arguments": tool_args(name), "status": "completed"}),
            json!({"type": "function_call", "id": "fc_mock1", "call_id": "call_mock1", "name": name, "arguments": "", "status": "in_progress"}),
        ),
        None => (
            json!({"type": "message", "id": "msg_mock1", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}),
            json!({"type": "message", "id": "msg_mock1", "status": "in_progress", "role": "assistant", "content": []}),
        ),
    };
    let usage = json!({"input_tokens": p, "output_tokens": c, "total_tokens": p + c, "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
    let resp = |status: &str, output: Value, usage: Value| {
        json!({
            "id": "resp_mock1", "object": "response", "created_at": now(), "status": status,
            "model": model, "output": output, "usage": usage, "error": null,
            "incomplete_details": null,
            "instructions": req.get("instructions").cloned().unwrap_or(Value::Null),
            "tools": req.get("tools").cloned().unwrap_or(json!([])),
            "tool_choice": req.get("tool_choice").cloned().unwrap_or(json!("auto")),
            "parallel_tool_calls": req.get("parallel_tool_calls").cloned().unwrap_or(json!(true)),
            "store": req.get("store").cloned().unwrap_or(json!(false)),
            "metadata": {},
        })
    };
    if !stream {
        return Events::Json(resp("completed", json!([item]), usage));
    }
    let mut seq = 0u64;
    let mut ev = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        format!("event: {name}\ndata: {data}\n\n")
    };
    let mut out = vec![
        ev(
            "response.created",
            json!({"response": resp("in_progress", json!([]), Value::Null)}),
        ),
        ev(
            "response.in_progress",
            json!({"response": resp("in_progress", json!([]), Value::Null)}),
        ),
        ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": item_added}),
        ),
    ];
    match tool {
        Some(name) => {
            let args = tool_args(name);
            for part in arg_parts(args) {
                out.push(ev(
                    "response.function_call_arguments.delta",
                    json!({"item_id": "fc_mock1", "output_index": 0, "delta": part}),
                ));
            }
            out.push(ev(
                "response.function_call_arguments.done",
                json!({"item_id": "fc_mock1", "output_index": 0, "arguments": args}),
            ));
        }
        None => {
            out.push(ev("response.content_part.added", json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})));
            for p in pieces {
                out.push(ev(
                    "response.output_text.delta",
                    json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "delta": p, "logprobs": []}),
                ));
            }
            out.push(ev(
                "response.output_text.done",
                json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            ));
            out.push(ev("response.content_part.done", json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}})));
        }
    }
    out.push(ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    ));
    out.push(ev(
        "response.completed",
        json!({"response": resp("completed", json!([item]), usage)}),
    ));
    Events::Stream(out)
}

/// The closing event of `x-mock-fault: event-error`, at sequence number `seq`.
pub(crate) fn failed_event(seq: usize, model: &str) -> String {
    let data = json!({"type": "response.failed", "sequence_number": seq, "response": {"id": "resp_mock1", "object": "response", "created_at": now(), "status": "failed", "model": model, "output": [], "usage": null, "incomplete_details": null, "error": {"code": "server_error", "message": "mock overloaded"}}});
    format!("event: response.failed\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    // ---------- Responses ----------

    #[tokio::test]
    async fn responses_plain_string_input() {
        let m = MockServer::start().await;
        let r = post(
            &m,
            "/v1/responses",
            &[],
            json!({"model": "gpt-x", "input": "hi"}),
        )
        .await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["output"][0]["type"], "message");
        assert_eq!(v["output"][0]["content"][0]["text"], TEXT);
        assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 0);
        assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 0);
    }

    #[tokio::test]
    async fn responses_stream_text_grammar() {
        let m = MockServer::start().await;
        let r = post(
            &m,
            "/v1/responses",
            &[],
            json!({"model": "gpt-x", "stream": true, "input": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let ev = r.sse();
        for (i, (name, d)) in ev.iter().enumerate() {
            assert_eq!(name.as_deref(), d["type"].as_str());
            assert_eq!(d["sequence_number"], i as u64);
        }
        let t = types(&ev);
        assert_eq!(
            t[..5],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta"
            ]
        );
        assert_eq!(
            t[t.len() - 4..],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let text: String = ev
            .iter()
            .filter(|(_, d)| d["type"] == "response.output_text.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, TEXT);
        let done = &ev.last().unwrap().1["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], TEXT);
        let u = &done["usage"];
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
        );
    }

    #[tokio::test]
    async fn responses_stream_tool_call_prefers_exec_command() {
        let m = MockServer::start().await;
        let body = json!({"model": "gpt-x", "stream": true,
            "tools": [{"type": "web_search"}, {"type": "function", "name": "apply_patch", "parameters": {}},
                      {"type": "function", "name": "exec_command", "parameters": {}}],
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be nice"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "CALL_TOOL now"}]},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "trailing"}]}]});
        let ev = post(&m, "/v1/responses", &[], body).await.sse();
        let t = types(&ev);
        assert_eq!(
            t.iter()
                .filter(|t| *t == "response.function_call_arguments.delta")
                .count(),
            3
        );
        assert!(t.contains(&"response.function_call_arguments.done".to_string()));
        assert!(!t.iter().any(|t| t.starts_with("response.output_text")));
        let added = &ev[2].1["item"];
        assert_eq!(added["status"], "in_progress");
        assert_eq!(added["arguments"], "");
        let args: String = ev
            .iter()
            .filter(|(_, d)| d["type"] == "response.function_call_arguments.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(args, EXEC_ARGS);
        let done = ev
            .iter()
            .find(|(_, d)| d["type"] == "response.output_item.done")
            .unwrap();
        assert_eq!(
            done.1["item"],
            json!({"type": "function_call", "id": "fc_mock1", "call_id": "call_mock1", "name": "exec_command", "arguments": EXEC_ARGS, "status": "completed"})
        );
        let completed = &ev.last().unwrap().1["response"];
        assert_eq!(completed["output"][0], done.1["item"]);
        assert_eq!(completed["status"], "completed");
    }

    #[tokio::test]
    async fn responses_non_stream_tool_call_other_tool() {
        let m = MockServer::start().await;
        let body = json!({"model": "gpt-x", "input": "CALL_TOOL",
            "tools": [{"type": "web_search"}, {"type": "function", "name": "lookup", "parameters": {}}]});
        let v = post(&m, "/v1/responses", &[], body).await.json();
        assert_eq!(v["output"][0]["type"], "function_call");
        assert_eq!(v["output"][0]["name"], "lookup");
        assert_eq!(v["output"][0]["arguments"], TOOL_ARGS);
        // No tools: plain text.
        let v = post(
            &m,
            "/v1/responses",
            &[],
            json!({"model": "gpt-x", "input": "CALL_TOOL"}),
        )
        .await
        .json();
        assert_eq!(v["output"][0]["type"], "message");
    }

    #[tokio::test]
    async fn responses_function_call_output() {
        let m = MockServer::start().await;
        let history = |output: Value| {
            json!({"model": "gpt-x", "input": [
                {"role": "user", "content": "CALL_TOOL"},
                {"type": "function_call", "call_id": "call_mock1", "name": "exec_command", "arguments": EXEC_ARGS},
                {"type": "function_call_output", "call_id": "call_mock1", "output": output},
                {"role": "developer", "content": "trailing"}]})
        };
        let v = post(
            &m,
            "/v1/responses",
            &[],
            history(json!("hello-from-mock-tool")),
        )
        .await
        .json();
        assert_eq!(
            v["output"][0]["content"][0]["text"],
            "Tool said: hello-from-mock-tool"
        );
        let parts =
            json!([{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]);
        let v = post(&m, "/v1/responses", &[], history(parts)).await.json();
        assert_eq!(v["output"][0]["content"][0]["text"], "Tool said: ab");
    }

    #[tokio::test]
    async fn responses_event_error_is_response_failed() {
        let m = MockServer::start().await;
        let r = post(
            &m,
            "/v1/responses",
            &[("x-mock-fault", "event-error")],
            json!({"model": "gpt-x", "stream": true, "input": "hi"}),
        )
        .await;
        let ev = r.sse();
        let (name, last) = ev.last().unwrap();
        assert_eq!(name.as_deref(), Some("response.failed"));
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(
            last["response"]["error"],
            json!({"code": "server_error", "message": "mock overloaded"})
        );
        assert_eq!(last["sequence_number"], (ev.len() - 1) as u64);
        // Status faults keep the OpenAI envelope.
        let r = post(
            &m,
            "/v1/responses",
            &[("x-mock-status", "429")],
            json!({"input": "hi"}),
        )
        .await;
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["error"]["type"], "rate_limit_exceeded");
    }
}
