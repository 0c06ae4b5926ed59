//! OpenAI Responses client → Chat Completions upstream (Codex and `client.responses.*` on a
//! chat-only model): the request (§2.5), and the chat answer back as a Responses object or
//! event stream (§3.5). Anthropic and Gemini upstreams are reached by composing this with
//! their C transcoders (R → C → A, A → C → R), so the Responses rules live in one place.
//!
//! The non-streamed response is produced by the stream writer itself (the completion is
//! replayed as chunks), so both shapes always agree.
//!
//! Rules for tools the target cannot run (`web_search`, `file_search`, `tool_search`, `mcp`,
//! `code_interpreter`, `image_generation`, `computer_use_preview`, `local_shell`, ...):
//! they are dropped (listed in [`ResponsesContext::dropped`], logged, and named in the
//! `x-tollgate-dropped-tools` response header), unless the request cannot mean anything
//! without them: a `tool_choice` that forces one of them, or `tool_choice: "required"` when
//! nothing runnable is left. Those get a 400.

use bytes::BytesMut;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

use super::shared::*;
use super::sse::{SseEvent, SseParser};
use super::StreamTranscoder;
use crate::error::{ErrorKind, GatewayError};
use crate::meter::{usage_from_body, Usage, Wire};

pub struct RequestOptions {
    pub upstream_model: String,
    pub stream: bool,
}

/// How a chat tool name maps back to the tool the Responses client declared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClientTool {
    name: String,
    /// Declared inside a `namespace` tool (returned with `namespace` set).
    namespace: Option<String>,
    /// A `custom` (free-form input) tool: returned as `custom_tool_call{input}`.
    custom: bool,
}

/// What the response side needs to know about the request.
#[derive(Debug, Clone, Default)]
pub struct ResponsesContext {
    pub client_model: String,
    /// Chat tool name → the client's tool.
    tools: Arc<HashMap<String, ClientTool>>,
    /// Request fields echoed in every response object (tools, tool_choice, ...).
    echo: Arc<Map<String, Value>>,
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

/// Canonical usage → Responses `usage` (the details objects are always present: SDK types
/// and Codex require them).
pub fn usage_to_responses(u: &Usage) -> Value {
    let input = u.prompt_total();
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": input + u.output,
    })
}

/// The C answer (non-streamed) → the Responses object, by replaying it through the stream
/// writer (one set of rules for both shapes).
pub fn response(c: &Value, ctx: &ResponsesContext) -> Value {
    let mut w = ChatToResponsesStream::new(ctx.clone());
    let mut sink = BytesMut::new();
    w.feed(&super::c2a::completion_to_chunks(c, true), &mut sink);
    w.finish(&mut sink);
    w.final_response
        .take()
        .unwrap_or_else(|| w.response_object("failed"))
}

/// The C answer (non-streamed) → the Responses event stream (E48).
pub fn response_to_events(c: &Value, ctx: &ResponsesContext) -> BytesMut {
    let mut w = ChatToResponsesStream::new(ctx.clone());
    let mut out = BytesMut::new();
    w.feed(&super::c2a::completion_to_chunks(c, true), &mut out);
    w.finish(&mut out);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Open,
    /// `finish_reason` seen; waiting for the usage chunk or `[DONE]`.
    Finishing,
    Done,
    Failed,
}

#[derive(Debug)]
enum ItemKind {
    Message {
        text: String,
        refusal: bool,
    },
    Reasoning {
        text: String,
    },
    Call {
        call_id: String,
        tool: ClientTool,
        args: String,
    },
}

#[derive(Debug)]
struct Item {
    id: String,
    kind: ItemKind,
    done: bool,
}

/// A chat tool call whose name has not arrived yet (E17).
#[derive(Debug, Default)]
struct PendingCall {
    id: String,
    name: String,
    args: String,
}

/// C upstream chunks → Responses events (§3.5).
#[derive(Debug)]
pub struct ChatToResponsesStream {
    parser: SseParser,
    ctx: ResponsesContext,
    id: String,
    created: u64,
    seq: u64,
    phase: Phase,
    items: Vec<Item>,
    /// The open message or reasoning item (an index into `items`).
    open: Option<usize>,
    /// Chat tool index → item index, or the fragments seen before its name.
    calls: Vec<(u64, Result<usize, PendingCall>)>,
    finish: Option<String>,
    usage: Usage,
    saw_usage: bool,
    /// The terminal response object, once the stream completed.
    final_response: Option<Value>,
}

impl ChatToResponsesStream {
    pub fn new(ctx: ResponsesContext) -> Self {
        let id = crate::ids::generate_id("resp_");
        ChatToResponsesStream {
            parser: SseParser::new(),
            ctx,
            id,
            created: crate::clock::now_secs(),
            seq: 0,
            phase: Phase::Init,
            items: Vec::new(),
            open: None,
            calls: Vec::new(),
            finish: None,
            usage: Usage::default(),
            saw_usage: false,
            final_response: None,
        }
    }

    /// Fixes the id and creation time (deterministic output for golden tests).
    pub fn with_id(mut self, id: &str, created: u64) -> Self {
        self.id = id.to_string();
        self.created = created;
        self
    }

    /// A stable fragment of the response id for item and call ids.
    fn short_id(&self) -> &str {
        self.id
            .get(5..21)
            .or_else(|| self.id.get(5..))
            .unwrap_or("")
    }

    fn emit(&mut self, out: &mut BytesMut, ty: &str, mut body: Value) {
        body["type"] = json!(ty);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(ty.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Put `type` first for readability of captures: rebuild the object in order.
        let mut ordered = Map::new();
        if let Value::Object(m) = body {
            ordered.insert("type".into(), m["type"].clone());
            for (k, v) in m {
                if k != "type" {
                    ordered.insert(k, v);
                }
            }
        }
        out.extend_from_slice(Value::Object(ordered).to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn item_json(&self, i: usize) -> Value {
        let it = &self.items[i];
        let status = if it.done { "completed" } else { "in_progress" };
        match &it.kind {
            ItemKind::Message { text, refusal } => {
                let content = if !it.done && text.is_empty() {
                    json!([])
                } else if *refusal {
                    json!([{"type": "refusal", "refusal": text}])
                } else {
                    json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
                };
                json!({"type": "message", "id": it.id, "status": status, "role": "assistant", "content": content})
            }
            ItemKind::Reasoning { text } => {
                let summary = if !it.done && text.is_empty() {
                    json!([])
                } else {
                    json!([{"type": "summary_text", "text": text}])
                };
                json!({"type": "reasoning", "id": it.id, "summary": summary})
            }
            ItemKind::Call {
                call_id,
                tool,
                args,
            } => {
                let mut v = if tool.custom {
                    let input = serde_json::from_str::<Value>(args)
                        .ok()
                        .and_then(|a| a.get("input").and_then(Value::as_str).map(String::from))
                        .unwrap_or_default();
                    json!({"type": "custom_tool_call", "id": it.id, "call_id": call_id, "name": tool.name, "input": if it.done { input } else { String::new() }, "status": status})
                } else {
                    let a = if it.done && args.trim().is_empty() {
                        "{}"
                    } else {
                        args.as_str()
                    };
                    json!({"type": "function_call", "id": it.id, "call_id": call_id, "name": tool.name, "arguments": if it.done { a } else { "" }, "status": status})
                };
                if let Some(ns) = &tool.namespace {
                    v["namespace"] = json!(ns);
                }
                v
            }
        }
    }

    /// The response object in its current state.
    fn response_object(&self, status: &str) -> Value {
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "error": null, "incomplete_details": null, "model": self.ctx.client_model,
            "output": (0..self.items.len()).map(|i| self.item_json(i)).collect::<Vec<_>>(),
            "parallel_tool_calls": true, "previous_response_id": null, "tool_choice": "auto", "tools": [],
            "truncation": "disabled", "usage": null, "metadata": {}, "store": false,
            "text": {"format": {"type": "text"}},
        });
        for (k, v) in self.ctx.echo.iter() {
            r[k.as_str()] = v.clone();
        }
        if matches!(status, "completed" | "incomplete") && self.saw_usage {
            r["usage"] = usage_to_responses(&self.usage);
        }
        r
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.phase != Phase::Init {
            return;
        }
        self.phase = Phase::Open;
        let r = self.response_object("in_progress");
        self.emit(out, "response.created", json!({"response": r.clone()}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn open_item(&mut self, out: &mut BytesMut, kind: ItemKind) -> usize {
        let prefix = match kind {
            ItemKind::Message { .. } => "msg_",
            ItemKind::Reasoning { .. } => "rs_",
            ItemKind::Call { .. } => "fc_",
        };
        // Items never interleave (§1.6 `item*`): whatever is still open (a message, or a
        // tool call whose arguments may still grow) is finished before the next one starts.
        for i in 0..self.items.len() {
            self.close_item(out, i);
        }
        let idx = self.items.len();
        self.items.push(Item {
            id: format!("{prefix}{}_{idx}", self.short_id()),
            kind,
            done: false,
        });
        let item = self.item_json(idx);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": idx, "item": item}),
        );
        let item_id = self.items[idx].id.clone();
        match &self.items[idx].kind {
            ItemKind::Message { refusal, .. } => {
                let part = if *refusal {
                    json!({"type": "refusal", "refusal": ""})
                } else {
                    json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
                };
                self.emit(out, "response.content_part.added", json!({"item_id": item_id, "output_index": idx, "content_index": 0, "part": part}));
            }
            ItemKind::Reasoning { .. } => {
                self.emit(out, "response.reasoning_summary_part.added", json!({"item_id": item_id, "output_index": idx, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}));
            }
            ItemKind::Call { .. } => {}
        }
        idx
    }

    fn close_item(&mut self, out: &mut BytesMut, idx: usize) {
        if self.items[idx].done {
            return;
        }
        self.items[idx].done = true;
        let item_id = self.items[idx].id.clone();
        let item = self.item_json(idx);
        match &self.items[idx].kind {
            ItemKind::Message { text, refusal } => {
                let (done_ev, part) = if *refusal {
                    (
                        "response.refusal.done",
                        json!({"type": "refusal", "refusal": text}),
                    )
                } else {
                    (
                        "response.output_text.done",
                        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []}),
                    )
                };
                let mut d = json!({"item_id": item_id, "output_index": idx, "content_index": 0});
                if *refusal {
                    d["refusal"] = json!(text);
                } else {
                    d["text"] = json!(text);
                    d["logprobs"] = json!([]);
                }
                self.emit(out, done_ev, d);
                self.emit(out, "response.content_part.done", json!({"item_id": item_id, "output_index": idx, "content_index": 0, "part": part}));
            }
            ItemKind::Reasoning { text } => {
                let t = text.clone();
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": item_id, "output_index": idx, "summary_index": 0, "text": t}),
                );
                self.emit(out, "response.reasoning_summary_part.done", json!({"item_id": item_id, "output_index": idx, "summary_index": 0, "part": {"type": "summary_text", "text": t}}));
            }
            ItemKind::Call { tool, .. } => {
                if tool.custom {
                    let input = item["input"].clone();
                    self.emit(
                        out,
                        "response.custom_tool_call_input.delta",
                        json!({"item_id": item_id, "output_index": idx, "delta": input}),
                    );
                    self.emit(
                        out,
                        "response.custom_tool_call_input.done",
                        json!({"item_id": item_id, "output_index": idx, "input": input}),
                    );
                } else {
                    let args = item["arguments"].clone();
                    self.emit(
                        out,
                        "response.function_call_arguments.done",
                        json!({"item_id": item_id, "output_index": idx, "arguments": args}),
                    );
                }
            }
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": idx, "item": item}),
        );
        if self.open == Some(idx) {
            self.open = None;
        }
    }

    fn close_open(&mut self, out: &mut BytesMut) {
        if let Some(i) = self.open.take() {
            self.close_item(out, i);
        }
    }

    /// Appends text to the open message (or reasoning) item, opening one if needed.
    fn text(&mut self, out: &mut BytesMut, delta: &str, reasoning: bool, refusal: bool) {
        if delta.is_empty() {
            return;
        }
        let fits = self.open.is_some_and(|i| match &self.items[i].kind {
            ItemKind::Message { refusal: r, .. } => !reasoning && *r == refusal,
            ItemKind::Reasoning { .. } => reasoning,
            ItemKind::Call { .. } => false,
        });
        if !fits {
            self.close_open(out);
            let kind = if reasoning {
                ItemKind::Reasoning {
                    text: String::new(),
                }
            } else {
                ItemKind::Message {
                    text: String::new(),
                    refusal,
                }
            };
            let i = self.open_item(out, kind);
            self.open = Some(i);
        }
        let idx = self.open.expect("open item");
        let item_id = self.items[idx].id.clone();
        match &mut self.items[idx].kind {
            ItemKind::Message { text, .. } | ItemKind::Reasoning { text } => text.push_str(delta),
            ItemKind::Call { .. } => {}
        }
        let (ev, body) = if reasoning {
            (
                "response.reasoning_summary_text.delta",
                json!({"item_id": item_id, "output_index": idx, "summary_index": 0, "delta": delta}),
            )
        } else if refusal {
            (
                "response.refusal.delta",
                json!({"item_id": item_id, "output_index": idx, "content_index": 0, "delta": delta}),
            )
        } else {
            (
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": idx, "content_index": 0, "delta": delta, "logprobs": []}),
            )
        };
        self.emit(out, ev, body);
    }

    fn client_tool(&self, upstream_name: &str) -> ClientTool {
        self.ctx
            .tools
            .get(upstream_name)
            .cloned()
            .unwrap_or_else(|| ClientTool {
                name: upstream_name.to_string(),
                namespace: None,
                custom: false,
            })
    }

    fn tool_fragment(&mut self, out: &mut BytesMut, tc: &Value) {
        let index = tc
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(self.calls.len() as u64);
        let id = tc.get("id").and_then(Value::as_str).unwrap_or("");
        let name = tc
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = match tc.pointer("/function/arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            _ => String::new(),
        };
        let pos = match self.calls.iter().position(|(k, _)| *k == index) {
            Some(p) => p,
            None => {
                self.calls.push((index, Err(PendingCall::default())));
                self.calls.len() - 1
            }
        };
        if let Err(p) = &mut self.calls[pos].1 {
            p.id.push_str(id);
            p.name.push_str(name);
            p.args.push_str(&args);
            if p.name.is_empty() {
                return; // the name comes later (E17)
            }
            let p = std::mem::take(p);
            self.close_open(out);
            let call_id = if p.id.is_empty() {
                format!("call_{}_{}", self.short_id(), index)
            } else {
                p.id
            };
            let tool = self.client_tool(&p.name);
            let idx = self.open_item(
                out,
                ItemKind::Call {
                    call_id,
                    tool,
                    args: String::new(),
                },
            );
            self.calls[pos].1 = Ok(idx);
            self.args(out, idx, &p.args);
            return;
        }
        if let Ok(idx) = self.calls[pos].1 {
            self.args(out, idx, &args);
        }
    }

    fn args(&mut self, out: &mut BytesMut, idx: usize, delta: &str) {
        if delta.is_empty() {
            return;
        }
        if self.items[idx].done {
            // A fragment for a call that already ended (E16): its item is final, so the
            // stream fails visibly rather than losing or misplacing the arguments.
            self.fail_with(
                out,
                GatewayError::new(
                    ErrorKind::Upstream,
                    "upstream interleaved tool call fragments",
                )
                .with_code("server_error"),
            );
            return;
        }
        let item_id = self.items[idx].id.clone();
        let mut custom = false;
        if let ItemKind::Call { args, tool, .. } = &mut self.items[idx].kind {
            args.push_str(delta);
            custom = tool.custom;
        }
        // A custom tool's input is inside a JSON string: sent whole when the call closes.
        if !custom {
            self.emit(
                out,
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": idx, "delta": delta}),
            );
        }
    }

    fn complete(&mut self, out: &mut BytesMut) {
        self.start(out);
        self.close_open(out);
        for i in 0..self.items.len() {
            self.close_item(out, i);
        }
        let (ty, status, reason) = match self.finish.as_deref() {
            Some("length") => (
                "response.incomplete",
                "incomplete",
                Some("max_output_tokens"),
            ),
            Some("content_filter") => ("response.incomplete", "incomplete", Some("content_filter")),
            _ => ("response.completed", "completed", None),
        };
        let mut r = self.response_object(status);
        if let Some(reason) = reason {
            r["incomplete_details"] = json!({"reason": reason});
        }
        self.emit(out, ty, json!({"response": r.clone()}));
        self.final_response = Some(r);
        self.phase = Phase::Done;
    }

    fn fail_with(&mut self, out: &mut BytesMut, e: GatewayError) {
        if matches!(self.phase, Phase::Done | Phase::Failed) {
            return;
        }
        self.start(out);
        let r = self.response_object("in_progress");
        out.extend_from_slice(&e.responses_failed_event(self.seq, Some(r)));
        self.seq += 1;
        self.phase = Phase::Failed;
    }

    fn on_event(&mut self, ev: SseEvent, out: &mut BytesMut) {
        if matches!(self.phase, Phase::Done | Phase::Failed) || ev.data.is_empty() {
            return;
        }
        if ev.data == "[DONE]" {
            if self.phase == Phase::Finishing {
                self.complete(out);
            }
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            let msg = redact(
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error"),
            );
            let code = e
                .get("code")
                .and_then(Value::as_str)
                .or(e.get("type").and_then(Value::as_str));
            let (kind, code) = match code {
                Some("rate_limit_exceeded" | "rate_limit_error") => {
                    (ErrorKind::RateLimited, "rate_limit_exceeded")
                }
                Some("context_length_exceeded") => {
                    (ErrorKind::InvalidRequest, "context_length_exceeded")
                }
                Some("insufficient_quota") => (ErrorKind::BudgetExceeded, "insufficient_quota"),
                Some("stream_truncated") => (ErrorKind::Upstream, "server_error"),
                _ => (ErrorKind::Upstream, "server_error"),
            };
            self.fail_with(out, GatewayError::new(kind, msg).with_code(code));
            return;
        }
        self.start(out);
        if let Some(u) = usage_from_body(Wire::OpenAiChat, &v) {
            self.usage = u;
            self.saw_usage = true;
        }
        let Some(choice) = v.pointer("/choices/0") else {
            if self.phase == Phase::Finishing && self.saw_usage {
                self.complete(out);
            }
            return;
        };
        let d = &choice["delta"];
        for key in ["reasoning_content", "reasoning"] {
            if let Some(t) = d.get(key).and_then(Value::as_str) {
                self.text(out, t, true, false);
            }
        }
        if let Some(t) = d.get("content").and_then(Value::as_str) {
            self.text(out, t, false, false);
        }
        if let Some(t) = d.get("refusal").and_then(Value::as_str) {
            self.text(out, t, false, true);
        }
        for tc in d
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if self.phase == Phase::Failed {
                return;
            }
            self.tool_fragment(out, tc);
        }
        if self.phase == Phase::Failed {
            return;
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
            self.close_open(out);
            self.phase = Phase::Finishing;
        }
    }
}

impl StreamTranscoder for ChatToResponsesStream {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.feed(input, &mut |ev| self.on_event(ev, out));
        self.parser = parser;
    }

    fn finish(&mut self, out: &mut BytesMut) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.finish(&mut |ev| self.on_event(ev, out));
        self.parser = parser;
        match self.phase {
            // The finish arrived; the usage chunk or [DONE] did not (E09).
            Phase::Finishing => self.complete(out),
            Phase::Init | Phase::Open => self.fail_with(
                out,
                GatewayError::new(
                    ErrorKind::Upstream,
                    "upstream stream ended before completion",
                )
                .with_code("server_error"),
            ),
            _ => {}
        }
    }

    fn fail(&mut self, message: &str, out: &mut BytesMut) {
        if self.phase == Phase::Finishing {
            self.complete(out);
            return;
        }
        self.fail_with(
            out,
            GatewayError::new(
                ErrorKind::Upstream,
                format!("upstream stream failed: {message}"),
            )
            .with_code("server_error"),
        );
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        if matches!(self.phase, Phase::Done | Phase::Failed) {
            return;
        }
        // Codex's idle timer counts parsed events only: a comment alone would not do.
        out.extend_from_slice(b": keep-alive\n\n");
        if self.phase == Phase::Init {
            self.start(out);
        } else {
            let r = self.response_object("in_progress");
            self.emit(out, "response.in_progress", json!({"response": r}));
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.saw_usage.then_some(self.usage)
    }

    fn completed(&self) -> bool {
        self.phase == Phase::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn opts() -> RequestOptions {
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

    fn events(out: &[u8]) -> Vec<Value> {
        let mut evs = Vec::new();
        let mut p = SseParser::new();
        p.feed(out, &mut |e| {
            if let Ok(v) = serde_json::from_str::<Value>(&e.data) {
                assert_eq!(
                    e.event.as_deref(),
                    v["type"].as_str(),
                    "event name matches type"
                );
                evs.push(v);
            }
        });
        evs
    }

    fn types(evs: &[Value]) -> Vec<&str> {
        evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
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

    fn chunk(delta: Value, finish: Value) -> String {
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    }

    fn usage_chunk() -> String {
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":7,\"total_tokens\":107,\"prompt_tokens_details\":{\"cached_tokens\":40}}}\n\n".into()
    }

    fn run(input: &str, ctx: ResponsesContext) -> (Vec<Value>, ChatToResponsesStream) {
        let mut w = ChatToResponsesStream::new(ctx).with_id("resp_test0000000000000000", 7);
        let mut out = BytesMut::new();
        w.feed(input.as_bytes(), &mut out);
        w.finish(&mut out);
        (events(&out), w)
    }

    #[test]
    fn text_stream_has_the_event_sequence_codex_accepts() {
        let input = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hel"}), Value::Null),
            chunk(json!({"content": "lo"}), Value::Null),
            chunk(json!({}), json!("stop")),
            usage_chunk(),
            "data: [DONE]\n\n".into(),
        ]
        .concat();
        let (evs, w) = run(&input, ResponsesContext::new("chatonly:m"));
        assert_eq!(
            types(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let seqs: Vec<u64> = evs
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        let done = &evs[8]["item"];
        assert_eq!(done["content"][0]["text"], "Hello");
        assert_eq!(done["status"], "completed");
        let r = &evs[9]["response"];
        assert_eq!(r["model"], "chatonly:m");
        assert_eq!(r["output"][0], *done);
        assert_eq!(r["usage"]["input_tokens"], 100);
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 40);
        assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 0);
        assert_eq!(r["usage"]["total_tokens"], 107);
        assert!(w.completed());
        assert_eq!(w.usage().unwrap().cache_read, 40);
    }

    #[test]
    fn tool_calls_become_function_call_items_with_full_arguments() {
        let (c, ctx) = request(&req(json!({"model": "m", "input": "go", "tools": [{"type": "function", "name": "exec_command", "parameters": {}}, {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "child"}]}]})), &opts()).unwrap();
        assert_eq!(c["tools"][1]["function"]["name"], "ns__child");
        let input = [
            chunk(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "exec_command", "arguments": ""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"cmd\":"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"ls\"}"}}]}), Value::Null),
            // The second call's id arrives before its name (E17).
            chunk(json!({"tool_calls": [{"index": 1, "id": "call_b"}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 1, "function": {"name": "ns__child", "arguments": ""}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            usage_chunk(),
            "data: [DONE]\n\n".into(),
        ]
        .concat();
        let (evs, _) = run(&input, ctx);
        let done: Vec<&Value> = evs
            .iter()
            .filter(|e| e["type"] == "response.output_item.done")
            .map(|e| &e["item"])
            .collect();
        assert_eq!(done[0]["type"], "function_call");
        assert_eq!(done[0]["call_id"], "call_a");
        assert_eq!(done[0]["arguments"], "{\"cmd\":\"ls\"}");
        assert_eq!(done[1]["name"], "child");
        assert_eq!(done[1]["namespace"], "ns");
        assert_eq!(done[1]["arguments"], "{}", "no arguments is {{}} (E18)");
        let args: String = evs
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(args, "{\"cmd\":\"ls\"}");
        assert_eq!(evs.last().unwrap()["type"], "response.completed");
        assert_eq!(
            evs.last().unwrap()["response"]["output"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn custom_tools_round_trip_as_custom_tool_calls() {
        let (_, ctx) = request(&req(json!({"model": "m", "input": "go", "tools": [{"type": "custom", "name": "apply_patch"}]})), &opts()).unwrap();
        let input = [
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_p", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": " Patch\"}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            "data: [DONE]\n\n".into(),
        ]
        .concat();
        let (evs, _) = run(&input, ctx);
        let done = evs
            .iter()
            .find(|e| e["type"] == "response.output_item.done")
            .unwrap();
        assert_eq!(done["item"]["type"], "custom_tool_call");
        assert_eq!(done["item"]["input"], "*** Begin Patch");
        // And the next turn sends it back as a function call with {"input": ...}.
        let (c, _) = request(&req(json!({"model": "m", "tools": [{"type": "custom", "name": "apply_patch"}], "input": [
            {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_p", "output": "ok"}]})), &opts()).unwrap();
        assert_eq!(
            c["messages"][0]["tool_calls"][0]["function"]["arguments"],
            "{\"input\":\"*** Begin Patch\"}"
        );
        assert_eq!(c["messages"][1]["content"], "ok");
    }

    #[test]
    fn reasoning_then_text_are_separate_items() {
        let input = [
            chunk(json!({"reasoning_content": "think"}), Value::Null),
            chunk(json!({"content": "answer"}), Value::Null),
            chunk(json!({}), json!("stop")),
            "data: [DONE]\n\n".into(),
        ]
        .concat();
        let (evs, _) = run(&input, ResponsesContext::new("m"));
        let r = &evs.last().unwrap()["response"];
        assert_eq!(r["output"][0]["type"], "reasoning");
        assert_eq!(r["output"][0]["summary"][0]["text"], "think");
        assert_eq!(r["output"][1]["content"][0]["text"], "answer");
        assert!(r["usage"].is_null(), "no usage reported: none invented");
    }

    #[test]
    fn length_is_incomplete_and_eof_mid_text_fails() {
        let input = [
            chunk(json!({"content": "a"}), Value::Null),
            chunk(json!({}), json!("length")),
            "data: [DONE]\n\n".into(),
        ]
        .concat();
        let (evs, _) = run(&input, ResponsesContext::new("m"));
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        let (evs, w) = run(
            &chunk(json!({"content": "a"}), Value::Null),
            ResponsesContext::new("m"),
        );
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(last["response"]["error"]["code"], "server_error");
        assert!(!w.completed());
    }

    #[test]
    fn upstream_error_chunk_becomes_response_failed_with_its_code() {
        let input = [chunk(json!({"content": "a"}), Value::Null), "data: {\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_exceeded\",\"code\":\"rate_limit_exceeded\"}}\n\n".into()].concat();
        let (evs, _) = run(&input, ResponsesContext::new("m"));
        let last = evs.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn non_stream_response_matches_the_stream_terminal_object() {
        let c = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}});
        let r = response(&c, &ResponsesContext::new("client-model"));
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], "client-model");
        assert_eq!(r["output"][0]["content"][0]["text"], "hi");
        assert_eq!(r["output"][1]["type"], "function_call");
        assert_eq!(r["usage"]["total_tokens"], 7);
        let evs = events(&response_to_events(
            &c,
            &ResponsesContext::new("client-model"),
        ));
        assert_eq!(evs.first().unwrap()["type"], "response.created");
        let strip = |v: &Value| {
            let mut v = v.clone();
            for it in v.as_array_mut().unwrap() {
                it.as_object_mut().unwrap().remove("id");
            }
            v
        };
        assert_eq!(
            strip(&evs.last().unwrap()["response"]["output"]),
            strip(&r["output"])
        );
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let input = [chunk(json!({"content": "Hé llo"}), Value::Null), chunk(json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}), Value::Null), chunk(json!({}), json!("tool_calls")), usage_chunk(), "data: [DONE]\n\n".into()].concat();
        let whole = {
            let mut w = ChatToResponsesStream::new(ResponsesContext::new("m"))
                .with_id("resp_x000000000000000000000", 1);
            let mut out = BytesMut::new();
            w.feed(input.as_bytes(), &mut out);
            w.finish(&mut out);
            out
        };
        for step in [1, 3, 7, 64] {
            let mut w = ChatToResponsesStream::new(ResponsesContext::new("m"))
                .with_id("resp_x000000000000000000000", 1);
            let mut out = BytesMut::new();
            for piece in input.as_bytes().chunks(step) {
                w.feed(piece, &mut out);
            }
            w.finish(&mut out);
            assert_eq!(out, whole, "split every {step} bytes");
        }
    }

    #[test]
    fn keepalive_is_a_comment_and_an_in_progress_event() {
        let mut w = ChatToResponsesStream::new(ResponsesContext::new("m"));
        let mut out = BytesMut::new();
        w.keepalive(&mut out);
        w.keepalive(&mut out);
        let evs = events(&out);
        assert_eq!(
            types(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.in_progress"
            ]
        );
        assert!(out.starts_with(b": keep-alive\n\n"));
    }
}
