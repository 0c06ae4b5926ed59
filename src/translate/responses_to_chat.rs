//! OpenAI Responses → OpenAI Chat Completions: a Responses client's request (Codex and
//! `client.responses.*`) for a model that does not speak Responses; Anthropic and Gemini
//! models get the result through Chat. The answer goes back in `chat_to_responses`, with the
//! [`ResponsesContext`] this request leaves for it. The rules are in docs/translation.md
//! ("Requests").
//!
//! Tools the target cannot run (`web_search`, `file_search`, `tool_search`, `mcp`,
//! `code_interpreter`, `image_generation`, `computer_use_preview`, `local_shell`, ...) are
//! dropped (listed in [`ResponsesContext::dropped`], logged, and named in the
//! `x-tollgate-dropped-tools` response header), unless the request cannot mean anything
//! without them: a `tool_choice` that forces one of them, or `tool_choice: "required"` when
//! nothing runnable is left. Those get a 400.

use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

use super::shared::*;
use crate::error::GatewayError;

pub struct RequestOptions {
    pub upstream_model: String,
    pub stream: bool,
}

/// How a chat tool name maps back to the tool the Responses client declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClientTool {
    pub(super) name: String,
    /// Declared inside a `namespace` tool (returned with `namespace` set).
    pub(super) namespace: Option<String>,
    /// A `custom` (free-form input) tool: returned as `custom_tool_call{input}`.
    pub(super) custom: bool,
}

/// What the response side needs to know about the request.
#[derive(Debug, Clone, Default)]
pub struct ResponsesContext {
    pub client_model: String,
    /// Chat tool name → the client's tool.
    pub(super) tools: Arc<HashMap<String, ClientTool>>,
    /// Request fields echoed in every response object (tools, tool_choice, ...).
    pub(super) echo: Arc<Map<String, Value>>,
    /// Tool types that were dropped because the upstream cannot run them.
    pub dropped: Vec<String>,
}

impl ResponsesContext {
    pub fn new(client_model: &str) -> Self {
        ResponsesContext {
            client_model: client_model.to_string(),
            ..Default::default()
        }
    }
}

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid(msg)
}

/// Hosted tool types only OpenAI runs.
const HOSTED_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "file_search",
    "tool_search",
    "mcp",
    "code_interpreter",
    "image_generation",
    "computer_use_preview",
    "computer",
    "local_shell",
    "shell",
    "apply_patch",
];

/// Fields that only make sense to a stateful OpenAI backend.
fn refuse_stateful(r: &Map<String, Value>) -> Result<(), GatewayError> {
    let stateless = "tollgate does not store responses, so it cannot continue one on this provider; resend the whole conversation in 'input' (with store: false).";
    for field in ["previous_response_id", "conversation"] {
        if r.get(field).is_some_and(|v| !v.is_null()) {
            return Err(bad(format!(
                "'{field}' is not supported for this model: {stateless}"
            ))
            .with_param(field));
        }
    }
    if r.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(
            bad("'background' responses are not supported for this model.")
                .with_param("background"),
        );
    }
    Ok(())
}

/// R content (string or parts) → C content parts, or a plain string when it is only text.
fn content_of(content: &Value, role: &str) -> Result<Value, GatewayError> {
    let parts = match content {
        Value::String(_) | Value::Null => return Ok(content.clone()),
        Value::Array(p) => p,
        _ => {
            return Err(bad(
                "message content must be a string or an array of parts.",
            ))
        }
    };
    let mut out: Vec<Value> = Vec::new();
    for p in parts {
        match p.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text" | "summary_text") => out
                .push(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))})),
            Some("refusal") => out.push(
                json!({"type": "text", "text": p.get("refusal").cloned().unwrap_or(json!(""))}),
            ),
            Some("input_image") => {
                if p.get("file_id").is_some_and(|f| !f.is_null()) {
                    return Err(bad(
                        "Uploaded file ids cannot be used with this provider; send image_url.",
                    )
                    .with_param("input"));
                }
                let url = p.get("image_url").and_then(Value::as_str).unwrap_or("");
                let mut img = json!({"url": url});
                if let Some(d) = p.get("detail").filter(|d| d.is_string()) {
                    img["detail"] = d.clone();
                }
                out.push(json!({"type": "image_url", "image_url": img}));
            }
            Some("input_file") => {
                if p.get("file_id").is_some_and(|f| !f.is_null()) {
                    return Err(bad(
                        "Uploaded file ids cannot be used with this provider; send file_data.",
                    )
                    .with_param("input"));
                }
                let mut f = Map::new();
                for k in ["file_data", "filename"] {
                    if let Some(v) = p.get(k) {
                        f.insert(k.into(), v.clone());
                    }
                }
                out.push(json!({"type": "file", "file": f}));
            }
            Some("input_audio") => return Err(bad("Audio input is not supported by this model.")),
            _ => {}
        }
    }
    // Assistant turns and single text parts read best as plain strings upstream.
    let all_text = out.iter().all(|p| p["type"] == "text");
    if all_text && (role == "assistant" || out.len() == 1) {
        let joined: Vec<&str> = out.iter().filter_map(|p| p["text"].as_str()).collect();
        return Ok(Value::String(joined.join("")));
    }
    Ok(Value::Array(out))
}

/// Output of a function call (string or parts) → tool message text.
fn output_text(output: &Value) -> String {
    match output {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// Builds the chat tool list and the map back to the client's tools.
fn tools_of(
    r: &Map<String, Value>,
    dropped: &mut Vec<String>,
) -> Result<(Vec<Value>, HashMap<String, ClientTool>), GatewayError> {
    let mut out = Vec::new();
    let mut map = HashMap::new();
    let mut add = |t: &Value, namespace: Option<&str>, out: &mut Vec<Value>| {
        let name = t.get("name").and_then(Value::as_str).unwrap_or("");
        let custom = t.get("type").and_then(Value::as_str) == Some("custom");
        let full = match namespace {
            Some(ns) => format!("{ns}__{name}"),
            None => name.to_string(),
        };
        let upstream = safe_tool_name(&full);
        let mut f = json!({"name": upstream});
        if let Some(d) = t.get("description").filter(|d| d.is_string()) {
            f["description"] = d.clone();
        }
        if custom {
            // A free-form tool becomes a function with one string argument.
            let hint = match t.pointer("/format/type").and_then(Value::as_str) {
                Some("grammar") => "The raw input for this tool, following its grammar exactly.",
                _ => "The raw input for this tool.",
            };
            f["parameters"] = json!({"type": "object", "properties": {"input": {"type": "string", "description": hint}}, "required": ["input"], "additionalProperties": false});
        } else {
            f["parameters"] = t
                .get("parameters")
                .cloned()
                .filter(|p| p.is_object())
                .unwrap_or(json!({"type": "object", "properties": {}}));
            if let Some(s) = t.get("strict").filter(|s| s.is_boolean()) {
                f["strict"] = s.clone();
            }
        }
        out.push(json!({"type": "function", "function": f}));
        map.insert(
            upstream,
            ClientTool {
                name: name.to_string(),
                namespace: namespace.map(String::from),
                custom,
            },
        );
    };
    // A tool without a name cannot be called: refused as OpenAI does, never sent upstream
    // under an invented name.
    let named = |t: &Value, at: String| {
        if t.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            Ok(())
        } else {
            Err(bad(format!("Missing required parameter: '{at}.name'."))
                .with_param(format!("{at}.name")))
        }
    };
    for (i, t) in r
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match t.get("type").and_then(Value::as_str).unwrap_or("function") {
            "function" | "custom" => {
                named(t, format!("tools[{i}]"))?;
                add(t, None, &mut out);
            }
            "namespace" => {
                let ns = t.get("name").and_then(Value::as_str).unwrap_or("ns");
                for (j, child) in t
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    named(child, format!("tools[{i}].tools[{j}]"))?;
                    add(child, Some(ns), &mut out);
                }
            }
            other => dropped.push(other.to_string()),
        }
    }
    Ok((out, map))
}

fn tool_choice_of(
    choice: &Value,
    have_tools: bool,
    dropped: &[String],
) -> Result<Option<Value>, GatewayError> {
    let forced_hosted = |ty: &str| {
        bad(format!(
            "tool_choice forces the '{ty}' tool, which this provider cannot run."
        ))
        .with_param("tool_choice")
    };
    match choice {
        Value::Null => Ok(None),
        Value::String(s) if s == "required" && !have_tools => {
            if dropped.is_empty() {
                Ok(None)
            } else {
                Err(forced_hosted(&dropped.join(", ")))
            }
        }
        Value::String(_) if !have_tools => Ok(None),
        Value::String(s) => Ok(Some(Value::String(s.clone()))),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function" | "custom") => {
                let name = o.get("name").and_then(Value::as_str).unwrap_or("");
                Ok(Some(
                    json!({"type": "function", "function": {"name": safe_tool_name(name)}}),
                ))
            }
            Some("allowed_tools") => Ok(o.get("mode").cloned().filter(|_| have_tools)),
            Some(ty) if HOSTED_TOOLS.contains(&ty) || ty.starts_with("web_search") => {
                Err(forced_hosted(ty))
            }
            _ => Ok(None),
        },
        _ => Err(bad("'tool_choice' must be a string or an object.").with_param("tool_choice")),
    }
}

/// The R request → C request, and the context the response side needs.
pub fn request(
    r: &Map<String, Value>,
    opts: &RequestOptions,
) -> Result<(Value, ResponsesContext), GatewayError> {
    refuse_stateful(r)?;
    let mut dropped = Vec::new();
    let (tools, tool_map) = tools_of(r, &mut dropped)?;
    let mut msgs: Vec<Value> = Vec::new();
    if let Some(i) = r
        .get("instructions")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        msgs.push(json!({"role": "system", "content": i}));
    }
    match r.get("input") {
        Some(Value::String(s)) => msgs.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut msgs)?;
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(bad("'input' must be a string or an array of items.").with_param("input"))
        }
    }
    if msgs.is_empty() {
        return Err(bad("'input' must not be empty.").with_param("input"));
    }
    let mut c = Map::new();
    c.insert("model".into(), json!(opts.upstream_model));
    c.insert("messages".into(), Value::Array(msgs));
    let have_tools = !tools.is_empty();
    if let Some(choice) = tool_choice_of(
        r.get("tool_choice").unwrap_or(&Value::Null),
        have_tools,
        &dropped,
    )? {
        c.insert("tool_choice".into(), choice);
    }
    if have_tools {
        c.insert("tools".into(), Value::Array(tools));
        if let Some(p) = r.get("parallel_tool_calls").filter(|p| p.is_boolean()) {
            c.insert("parallel_tool_calls".into(), p.clone());
        }
    }
    if let Some(n) = r.get("max_output_tokens").filter(|n| n.is_u64()) {
        c.insert("max_tokens".into(), n.clone());
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = r.get(k).filter(|v| v.is_number()) {
            c.insert(k.into(), v.clone());
        }
    }
    // End-user attribution: both fields exist in Chat too.
    for k in ["user", "safety_identifier"] {
        if let Some(v) = r.get(k).filter(|v| v.is_string()) {
            c.insert(k.into(), v.clone());
        }
    }
    if let Some(e) = r
        .get("reasoning")
        .and_then(|x| x.get("effort"))
        .and_then(Value::as_str)
    {
        c.insert("reasoning_effort".into(), json!(e));
    }
    match r.get("text").and_then(|x| x.get("format")) {
        Some(f) if f["type"] == "json_schema" => {
            let mut js = Map::new();
            js.insert(
                "name".into(),
                f.get("name").cloned().unwrap_or(json!("output")),
            );
            for k in ["schema", "strict", "description"] {
                if let Some(v) = f.get(k) {
                    js.insert(k.into(), v.clone());
                }
            }
            c.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": js}),
            );
        }
        Some(f) if f["type"] == "json_object" => {
            c.insert("response_format".into(), json!({"type": "json_object"}));
        }
        _ => {}
    }
    if opts.stream {
        c.insert("stream".into(), json!(true));
        c.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if !dropped.is_empty() {
        log::debug!(
            "responses: dropped tool types the provider cannot run: {}",
            dropped.join(",")
        );
    }
    let mut echo = Map::new();
    for k in [
        "instructions",
        "max_output_tokens",
        "parallel_tool_calls",
        "reasoning",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_p",
        "metadata",
        "prompt_cache_key",
        "store",
    ] {
        if let Some(v) = r.get(k) {
            echo.insert(k.into(), v.clone());
        }
    }
    let ctx = ResponsesContext {
        client_model: r
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        tools: Arc::new(tool_map),
        echo: Arc::new(echo),
        dropped,
    };
    Ok((Value::Object(c), ctx))
}

/// One input item → chat messages (function calls join the assistant turn before them).
fn input_item(item: &Value, i: usize, msgs: &mut Vec<Value>) -> Result<(), GatewayError> {
    let ty = item.get("type").and_then(Value::as_str);
    let ty = match ty {
        None if item.get("role").is_some() => "message",
        None => return Err(bad(format!("input[{i}] has no 'type'.")).with_param("input")),
        Some(t) => t,
    };
    match ty {
        "message" => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
            let role = match role {
                "developer" | "system" => "system",
                "assistant" => "assistant",
                "user" => "user",
                other => return Err(bad(format!("input[{i}].role '{other}' is not one of user, assistant, system, developer.")).with_param("input")),
            };
            let content = content_of(item.get("content").unwrap_or(&Value::Null), role)?;
            msgs.push(json!({"role": role, "content": content}));
        }
        "function_call" | "custom_tool_call" => {
            let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or("");
            let name = item.get("name").and_then(Value::as_str).unwrap_or("");
            let full = match item.get("namespace").and_then(Value::as_str) {
                Some(ns) => format!("{ns}__{name}"),
                None => name.to_string(),
            };
            let args = if ty == "custom_tool_call" {
                json!({"input": item.get("input").cloned().unwrap_or(json!(""))}).to_string()
            } else {
                match item.get("arguments") {
                    Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                    Some(v @ Value::Object(_)) => v.to_string(),
                    _ => "{}".to_string(),
                }
            };
            let call = json!({"id": call_id, "type": "function", "function": {"name": safe_tool_name(&full), "arguments": args}});
            // Calls join the assistant message right before them (text or other calls).
            match msgs.last_mut() {
                Some(m) if m["role"] == "assistant" => {
                    let calls = m.as_object_mut().expect("message object").entry("tool_calls").or_insert_with(|| json!([]));
                    if let Some(a) = calls.as_array_mut() {
                        a.push(call);
                    }
                }
                _ => msgs.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" | "custom_tool_call_output" => {
            let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or("");
            let text = output_text(item.get("output").unwrap_or(&Value::Null));
            msgs.push(json!({"role": "tool", "tool_call_id": call_id, "content": text}));
        }
        "item_reference" => {
            return Err(bad("'item_reference' input items are not supported for this model: tollgate does not store responses; send the items themselves.").with_param("input"))
        }
        // Reasoning from another provider, hosted tool calls and their results have no chat form.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn req(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    pub(crate) fn opts() -> RequestOptions {
        RequestOptions {
            upstream_model: "up-model".into(),
            stream: true,
        }
    }

    #[test]
    fn end_user_fields_carry_over_to_chat() {
        let (c, _) = request(
            &req(json!({"model": "m", "input": "hi", "user": "u-1", "safety_identifier": "s-1"})),
            &opts(),
        )
        .unwrap();
        assert_eq!(
            (c["user"].as_str(), c["safety_identifier"].as_str()),
            (Some("u-1"), Some("s-1"))
        );
        let (c, _) = request(&req(json!({"model": "m", "input": "hi"})), &opts()).unwrap();
        assert!(c.get("user").is_none() && c.get("safety_identifier").is_none());
    }

    #[test]
    fn codex_style_request_maps_to_chat() {
        let r = req(json!({
            "model": "chatonly:m", "stream": true, "store": false,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "t1",
            "instructions": "be brief",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sys"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xx"},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "file.txt"},
            ],
            "tools": [
                {"type": "function", "name": "exec_command", "strict": false, "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
                {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}]},
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
                {"type": "web_search", "external_web_access": true},
            ],
            "tool_choice": "auto", "parallel_tool_calls": true,
            "reasoning": {"effort": "high", "summary": "auto"},
            "max_output_tokens": 1000,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": true}},
        }));
        let (c, ctx) = request(&r, &opts()).unwrap();
        assert_eq!(c["model"], "up-model");
        let m = c["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1], json!({"role": "system", "content": "sys"}));
        assert_eq!(m[2], json!({"role": "user", "content": "hi"}));
        assert_eq!(m[3]["role"], "assistant");
        assert_eq!(m[3]["tool_calls"][0]["id"], "call_1");
        assert_eq!(
            m[3]["tool_calls"][0]["function"]["arguments"],
            "{\"cmd\":\"ls\"}"
        );
        assert_eq!(
            m[4],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "file.txt"})
        );
        assert_eq!(m.len(), 5, "the reasoning item is dropped");
        let names: Vec<&str> = c["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["exec_command", "multi_agent_v1__spawn_agent", "apply_patch"]
        );
        assert_eq!(
            c["tools"][2]["function"]["parameters"]["required"],
            json!(["input"])
        );
        assert_eq!(ctx.dropped, ["web_search"]);
        assert_eq!(c["reasoning_effort"], "high");
        assert_eq!(c["max_tokens"], 1000);
        assert_eq!(c["response_format"]["json_schema"]["name"], "x");
        assert_eq!(c["response_format"]["json_schema"]["strict"], true);
        assert_eq!(c["stream_options"]["include_usage"], true);
        assert_eq!(c["parallel_tool_calls"], true);
        for gone in [
            "store",
            "include",
            "prompt_cache_key",
            "instructions",
            "input",
            "text",
            "reasoning",
        ] {
            assert!(c.get(gone).is_none(), "{gone} is not a chat field");
        }
    }

    #[test]
    fn stateful_fields_are_refused_with_a_clear_400() {
        let e = request(
            &req(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"})),
            &opts(),
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.param.as_deref(), Some("previous_response_id"));
        assert!(e.message.contains("does not store responses"));
        let e = request(
            &req(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]})),
            &opts(),
        )
        .unwrap_err();
        assert!(e.message.contains("item_reference"));
    }

    #[test]
    fn forcing_a_hosted_tool_is_refused_but_offering_it_is_not() {
        let r = req(
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}),
        );
        assert_eq!(
            request(&r, &opts()).unwrap_err().param.as_deref(),
            Some("tool_choice")
        );
        let r = req(
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "required"}),
        );
        assert!(request(&r, &opts()).is_err());
        let r = req(
            json!({"model": "m", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "auto"}),
        );
        let (c, ctx) = request(&r, &opts()).unwrap();
        assert!(c.get("tools").is_none() && c.get("tool_choice").is_none());
        assert_eq!(ctx.dropped, ["web_search"]);
    }
}
