//! Anthropic Messages → OpenAI Chat Completions: an Anthropic client's request for a Chat
//! (or Gemini, through Chat) model, and an Anthropic provider's answer for a Chat client, whole
//! or streamed. The rules are in docs/translation.md ("Requests", "Whole answers").

use bytes::BytesMut;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::chat_stream::ChatWriter;
use super::lifecycle::{open, Chunk, Events, Lifecycle, Next, Phase, Step};
use super::shared::*;
use super::{Format, Stamp};
use crate::error::{ErrorKind, GatewayError};
use crate::meter::{usage_from_body, Usage};

pub struct RequestOptions {
    pub upstream_model: String,
    pub stream: bool,
    /// The upstream model accepts `reasoning_effort` (o-series, gpt-5).
    pub reasoning_model: bool,
}

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid(msg)
}

/// Whether a model name looks like an OpenAI reasoning model.
pub fn is_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    m.starts_with("o1") || m.starts_with("o3") || m.starts_with("o4") || m.starts_with("gpt-5")
}

/// The tool names of an Anthropic request.
pub fn tool_names(a: &Map<String, Value>) -> ToolNames {
    let tools = a.get("tools").and_then(Value::as_array);
    ToolNames::from_names(
        tools
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("name").and_then(Value::as_str)),
    )
}

fn image_part(source: &Value) -> Result<Value, GatewayError> {
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mt = source.get("media_type").and_then(Value::as_str).unwrap_or("image/png");
            let data = source.get("data").and_then(Value::as_str).unwrap_or("");
            Ok(json!({"type": "image_url", "image_url": {"url": format!("data:{mt};base64,{data}")}}))
        }
        Some("url") => Ok(json!({"type": "image_url", "image_url": {"url": source.get("url").cloned().unwrap_or(Value::Null)}})),
        _ => Err(bad("Image sources of type 'file' cannot be sent to this provider; send the image as base64 or a URL.")),
    }
}

fn document_part(b: &Value) -> Result<Value, GatewayError> {
    let src = b.get("source").cloned().unwrap_or(Value::Null);
    let title = b.get("title").and_then(Value::as_str).unwrap_or("document");
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mt = src
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("application/pdf");
            let data = src.get("data").and_then(Value::as_str).unwrap_or("");
            Ok(
                json!({"type": "file", "file": {"filename": format!("{title}.pdf"), "file_data": format!("data:{mt};base64,{data}")}}),
            )
        }
        Some("text") => Ok(
            json!({"type": "text", "text": format!("[{title}]\n{}", src.get("data").and_then(Value::as_str).unwrap_or(""))}),
        ),
        Some("content") => Ok(
            json!({"type": "text", "text": format!("[{title}]\n{}", text_of(src.get("content").unwrap_or(&Value::Null)))}),
        ),
        Some("url") => Ok(
            json!({"type": "text", "text": format!("[{title}] {}", src.get("url").and_then(Value::as_str).unwrap_or(""))}),
        ),
        _ => Err(bad("This document source cannot be sent to this provider.")),
    }
}

/// User content parts that are not tool results, in C form.
fn user_parts(blocks: &[Value], parts: &mut Vec<Value>) -> Result<(), GatewayError> {
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts
                .push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or(json!(""))})),
            Some("image") => parts.push(image_part(b.get("source").unwrap_or(&Value::Null))?),
            Some("document") => parts.push(document_part(b)?),
            Some("search_result") => {
                parts.push(json!({"type": "text", "text": format!("[{}] {}\n{}",
                b.get("source").and_then(Value::as_str).unwrap_or(""),
                b.get("title").and_then(Value::as_str).unwrap_or(""),
                text_of(b.get("content").unwrap_or(&Value::Null)))}))
            }
            _ => {} // thinking, server tool blocks, container uploads: nothing to send
        }
    }
    Ok(())
}

fn content_value(parts: Vec<Value>) -> Value {
    if parts.len() == 1 && parts[0]["type"] == "text" {
        return parts[0]["text"].clone();
    }
    Value::Array(parts)
}

/// The A request → C request.
pub fn request(a: &Map<String, Value>, opts: &RequestOptions) -> Result<Value, GatewayError> {
    let names = tool_names(a);
    let mut messages: Vec<Value> = Vec::new();
    // system: string or text blocks; the per-request billing header block is dropped (E05)
    match a.get("system") {
        Some(Value::String(s)) if !s.is_empty() => {
            messages.push(json!({"role": "system", "content": s}))
        }
        Some(Value::Array(blocks)) => {
            let texts: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .filter(|t| !t.starts_with("x-anthropic-billing-header:"))
                .collect();
            if !texts.is_empty() {
                messages.push(json!({"role": "system", "content": texts.join("\n\n")}));
            }
        }
        _ => {}
    }
    let msgs = a
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("'messages' must be an array.").with_param("messages"))?;
    // Tool calls still waiting for results (E29).
    let mut open_calls: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("messages[{i}].role is required.")))?;
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        let blocks: Vec<Value> = match &content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) => a.clone(),
            Value::Null => vec![],
            _ => {
                return Err(bad(format!(
                    "messages[{i}].content must be a string or an array of blocks."
                )))
            }
        };
        match role {
            "system" => {
                // Claude Code's mid-conversation system items (E01): kept in place.
                let t = text_of(&content);
                if !t.is_empty() {
                    messages.push(json!({"role": "system", "content": t}));
                }
            }
            "user" => {
                // tool results first, as tool messages, then the rest of the turn (E28)
                let mut images_from_results = Vec::new();
                for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
                    let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                    let mut text = match b.get("content") {
                        Some(Value::Array(parts)) => {
                            for p in parts.iter().filter(|p| p["type"] == "image") {
                                images_from_results
                                    .push(image_part(p.get("source").unwrap_or(&Value::Null))?);
                            }
                            text_of(&Value::Array(parts.clone()))
                        }
                        Some(c) => text_of(c),
                        None => String::new(),
                    };
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        text = format!("[tool error] {text}");
                    }
                    open_calls.retain(|c| c != id);
                    messages.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                }
                flush_orphans(&mut open_calls, &mut messages);
                let mut parts = images_from_results;
                user_parts(&blocks, &mut parts)?;
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": content_value(parts)}));
                }
            }
            "assistant" => {
                flush_orphans(&mut open_calls, &mut messages);
                let mut text = String::new();
                let mut calls = Vec::new();
                for b in &blocks {
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            text.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""))
                        }
                        Some("tool_use") => {
                            let id = b
                                .get("id")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string();
                            let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                            calls.push(json!({"id": id, "type": "function", "function": {"name": names.to_upstream(name), "arguments": input_to_args(b.get("input").unwrap_or(&Value::Null))}}));
                            open_calls.push(id);
                        }
                        _ => {} // thinking blocks are not echoed to other providers
                    }
                }
                if text.is_empty() && calls.is_empty() {
                    continue; // empty assistant turns are removed
                }
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
            other => {
                return Err(bad(format!(
                    "messages[{i}].role '{other}' is not one of user, assistant, system."
                )))
            }
        }
    }
    flush_orphans(&mut open_calls, &mut messages);

    let mut c = Map::new();
    c.insert("model".into(), json!(opts.upstream_model));
    c.insert("messages".into(), Value::Array(messages));
    if let Some(mt) = a.get("max_tokens").and_then(Value::as_u64) {
        c.insert("max_completion_tokens".into(), json!(mt));
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = a.get(k).filter(|v| v.is_number()) {
            c.insert(k.into(), v.clone());
        }
    }
    if let Some(stops) = a.get("stop_sequences").and_then(Value::as_array) {
        if !stops.is_empty() {
            c.insert(
                "stop".into(),
                Value::Array(stops.iter().take(4).cloned().collect()),
            );
        }
    }
    // tools: untyped ones become functions; typed server tools cannot run elsewhere
    let mut tools = Vec::new();
    for t in a
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if t.get("type")
            .and_then(Value::as_str)
            .is_some_and(|ty| ty != "custom")
        {
            continue;
        }
        let mut params = t
            .get("input_schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        if let Some(o) = params.as_object_mut() {
            o.remove("$schema");
        }
        let mut f = json!({"name": names.to_upstream(t.get("name").and_then(Value::as_str).unwrap_or("")), "parameters": params});
        if let Some(d) = t.get("description") {
            f["description"] = d.clone();
        }
        if t.get("strict").and_then(Value::as_bool) == Some(true) {
            f["strict"] = json!(true);
        }
        tools.push(json!({"type": "function", "function": f}));
    }
    let has_tools = !tools.is_empty();
    if has_tools {
        c.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = a.get("tool_choice") {
        let choice = match tc.get("type").and_then(Value::as_str) {
            Some("auto") => Some(json!("auto")),
            Some("any") => Some(json!("required")),
            Some("none") => Some(json!("none")),
            Some("tool") => tc
                .get("name")
                .and_then(Value::as_str)
                .map(|n| json!({"type": "function", "function": {"name": names.to_upstream(n)}})),
            _ => None,
        };
        if let (Some(ch), true) = (choice, has_tools) {
            c.insert("tool_choice".into(), ch);
        }
        if has_tools && tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            c.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if opts.reasoning_model {
        if let Some(e) = effort_from_anthropic(a) {
            c.insert("reasoning_effort".into(), json!(e));
        }
    }
    if let Some(fmt) = a.get("output_config").and_then(|o| o.get("format")) {
        if fmt.get("type").and_then(Value::as_str) == Some("json_schema") {
            c.insert("response_format".into(), json!({"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.get("schema").cloned().unwrap_or(json!({})), "strict": true}}));
        }
    }
    if let Some(u) = a
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        if is_telemetry_blob(u) {
            // Never Claude Code's blob (it holds a device id): a stable hash (E02).
            let h = hex(&Sha256::digest(u.as_bytes()));
            c.insert(
                "safety_identifier".into(),
                json!(format!("tg_{}", &h[..32])),
            );
        } else if !u.is_empty() {
            // An application's end-user id: Chat's own field for it, unchanged.
            c.insert("user".into(), json!(u));
        }
    }
    if opts.stream {
        c.insert("stream".into(), json!(true));
        c.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(c))
}

/// Tool calls without results get a placeholder result so the upstream does not refuse the
/// conversation (E29).
fn flush_orphans(open: &mut Vec<String>, messages: &mut Vec<Value>) {
    for id in open.drain(..) {
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": "[no result]"}));
    }
}

/// An Anthropic Message → a Chat `chat.completion` (`created` from the stamp; the id is the
/// upstream's).
pub fn response(a: &Value, client_model: &str, names: &ToolNames, now: u64) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for b in a["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("thinking") => reasoning.push_str(b["thinking"].as_str().unwrap_or("")),
            Some("tool_use") => calls.push(json!({"id": b["id"], "type": "function", "function": {"name": names.to_client(b["name"].as_str().unwrap_or("")), "arguments": input_to_args(&b["input"])}})),
            _ => {}
        }
    }
    let stop = a["stop_reason"].as_str().unwrap_or("end_turn");
    let finish = if !calls.is_empty() {
        "tool_calls"
    } else {
        match stop_to_finish(stop) {
            "tool_calls" => "stop",
            f => f,
        }
    };
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }, "refusal": null});
    if stop == "refusal" {
        message["refusal"] = json!(text);
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    let usage = usage_from_body(Format::Anthropic, a).unwrap_or_default();
    json!({
        "id": format!("chatcmpl-{}", a["id"].as_str().unwrap_or("x")),
        "object": "chat.completion",
        "created": now,
        "model": client_model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage_to_openai(&usage),
    })
}

/// Anthropic upstream events → Chat client chunks (docs/translation.md, "Stream
/// lifecycle").
pub type AnthropicToChatStream = Lifecycle<AnthropicToChat>;

impl AnthropicToChatStream {
    pub fn new(client_model: &str, include_usage: bool, names: ToolNames, stamp: &Stamp) -> Self {
        Lifecycle::wrap(AnthropicToChat {
            w: ChatWriter::new(client_model, include_usage, stamp),
            names,
            tool_index: Vec::new(),
            tool_had_args: Vec::new(),
            tool_count: 0,
            saw_tool: false,
        })
    }
}

/// The event mapping of [`AnthropicToChatStream`].
#[derive(Debug)]
pub struct AnthropicToChat {
    w: ChatWriter,
    names: ToolNames,
    /// A block index → C tool call index, for tool_use blocks.
    tool_index: Vec<(u64, u64)>,
    /// Tool blocks that received a non-empty argument fragment.
    tool_had_args: Vec<u64>,
    tool_count: u64,
    saw_tool: bool,
}

impl AnthropicToChat {
    fn merge_usage(&mut self, u: &Value) {
        let mut any = false;
        let usage = &mut self.w.usage;
        for (k, dst) in [
            ("input_tokens", &mut usage.input),
            ("cache_read_input_tokens", &mut usage.cache_read),
            ("cache_creation_input_tokens", &mut usage.cache_write),
            ("output_tokens", &mut usage.output),
        ] {
            if let Some(n) = u.get(k).and_then(Value::as_u64) {
                *dst = n;
                any = true;
            }
        }
        self.w.saw_usage |= any;
    }
}

impl Events for AnthropicToChat {
    type Client = ChatWriter;

    fn client(&mut self) -> &mut ChatWriter {
        &mut self.w
    }

    fn on_chunk(&mut self, c: Chunk, phase: &mut Phase, out: &mut BytesMut) -> Step {
        let v = c.data;
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(c.name)
            .unwrap_or("");
        match ty {
            "message_start" => {
                if let Some(u) = v.pointer("/message/usage") {
                    self.merge_usage(u);
                }
                open(&mut self.w, phase, out);
            }
            "content_block_start" => {
                let idx = v["index"].as_u64().unwrap_or(0);
                let b = &v["content_block"];
                if b["type"] == "tool_use" {
                    let k = self.tool_count;
                    self.tool_count += 1;
                    self.tool_index.push((idx, k));
                    self.saw_tool = true;
                    let name = self.names.to_client(b["name"].as_str().unwrap_or(""));
                    self.w.chunk(out, json!({"tool_calls": [{"index": k, "id": b["id"], "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null);
                } else if b["type"] == "text" {
                    if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                        self.w.chunk(out, json!({"content": t}), Value::Null);
                    }
                }
            }
            "content_block_delta" => {
                let idx = v["index"].as_u64().unwrap_or(0);
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        self.w
                            .chunk(out, json!({"content": d["text"]}), Value::Null)
                    }
                    Some("thinking_delta") => self.w.chunk(
                        out,
                        json!({"reasoning_content": d["thinking"]}),
                        Value::Null,
                    ),
                    Some("input_json_delta") => {
                        let part = d["partial_json"].as_str().unwrap_or("");
                        if let (false, Some((_, k))) = (
                            part.is_empty(),
                            self.tool_index.iter().find(|(i, _)| *i == idx).copied(),
                        ) {
                            self.tool_had_args.push(idx);
                            self.w.chunk(out, json!({"tool_calls": [{"index": k, "function": {"arguments": part}}]}), Value::Null);
                        }
                    }
                    _ => {} // signatures and citations have no C form
                }
            }
            "content_block_stop" => {
                let idx = v["index"].as_u64().unwrap_or(0);
                if let Some((_, k)) = self.tool_index.iter().find(|(i, _)| *i == idx).copied() {
                    if !self.tool_had_args.contains(&idx) {
                        // A tool with no parameters: "{}", never "" (E18).
                        self.w.chunk(
                            out,
                            json!({"tool_calls": [{"index": k, "function": {"arguments": "{}"}}]}),
                            Value::Null,
                        );
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.merge_usage(u);
                }
                let stop = v
                    .pointer("/delta/stop_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                let finish = if self.saw_tool {
                    "tool_calls"
                } else {
                    match stop_to_finish(stop) {
                        "tool_calls" => "stop",
                        f => f,
                    }
                };
                self.w.chunk(out, json!({}), json!(finish));
                return Ok(Next::Finishing);
            }
            "message_stop" => return Ok(Next::Complete),
            "error" => {
                let e = &v["error"];
                let msg = redact(e["message"].as_str().unwrap_or("upstream error"));
                let err = match e["type"].as_str().unwrap_or("api_error") {
                    "rate_limit_error" => GatewayError::new(ErrorKind::RateLimited, msg),
                    "overloaded_error" => GatewayError::new(ErrorKind::Unavailable, msg),
                    "invalid_request_error" => GatewayError::new(ErrorKind::InvalidRequest, msg),
                    _ => GatewayError::new(ErrorKind::Upstream, msg).with_status(500),
                };
                return Err(err);
            }
            _ => {}
        }
        Ok(Next::Continue)
    }

    fn usage(&self) -> Option<Usage> {
        self.w.usage()
    }
}
