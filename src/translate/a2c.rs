//! Anthropic Messages client → OpenAI Chat Completions upstream (Claude Code on any
//! OpenAI-compatible model): the request (§2.1), the non-streamed response (§2.2) and the
//! stream (§3.3), as an explicit state machine.

use bytes::BytesMut;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::shared::*;
use super::sse::{SseEvent, SseParser};
use super::StreamTranscoder;
use crate::error::{Dialect, ErrorKind, GatewayError};
use crate::meter::Usage;

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
            let h = crate::ids::hex(&Sha256::digest(u.as_bytes()));
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

/// A C non-streamed response → A Message.
pub fn response(c: &Value, client_model: &str, names: &ToolNames) -> Value {
    let choice = &c["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(r) = msg
        .get("reasoning_content")
        .or_else(|| msg.get("reasoning"))
        .and_then(Value::as_str)
    {
        if !r.is_empty() {
            content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
        }
    }
    let refusal = msg
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let text = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or(refusal);
    if let Some(t) = text {
        content.push(json!({"type": "text", "text": t}));
    }
    let mut saw_tool = false;
    for call in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = &call["function"];
        content.push(json!({
            "type": "tool_use",
            "id": safe_tool_id(call["id"].as_str().unwrap_or(""), "toolu_"),
            "name": names.to_client(f["name"].as_str().unwrap_or("")),
            "input": args_to_input(&f["arguments"]),
        }));
        saw_tool = true;
    }
    let finish = choice["finish_reason"].as_str().unwrap_or("stop");
    let stop = if saw_tool {
        "tool_use"
    } else if refusal.is_some()
        && msg
            .get("content")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        "refusal"
    } else {
        match finish_to_stop(finish) {
            "tool_use" => "end_turn",
            s => s,
        }
    };
    let usage = c
        .get("usage")
        .and_then(|u| {
            crate::meter::usage_from_body(crate::meter::Wire::OpenAiChat, &json!({"usage": u}))
        })
        .unwrap_or_default();
    json!({
        "id": format!("msg_{}", safe_tool_id(c["id"].as_str().unwrap_or("x"), "")),
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage_to_anthropic(&usage),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Open,
    Finishing,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Tool(u64),
}

#[derive(Debug)]
struct PendingTool {
    /// Upstream index of the call.
    index: u64,
    id: String,
    name: Option<String>,
    args: String,
}

/// C upstream stream → A client events (§3.3).
#[derive(Debug)]
pub struct ChatToAnthropicStream {
    parser: SseParser,
    phase: Phase,
    client_model: String,
    msg_id: String,
    estimated_input: u64,
    names: ToolNames,
    next_index: u64,
    open: Option<Block>,
    /// Tool calls seen by upstream index; `started` ones have an open or closed A block.
    started: Vec<u64>,
    pending: Option<PendingTool>,
    saw_tool: bool,
    finish: Option<String>,
    usage: Option<Usage>,
    bad_json_run: u32,
}

fn event(out: &mut BytesMut, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl ChatToAnthropicStream {
    pub fn new(client_model: &str, estimated_input_tokens: u64, names: ToolNames) -> Self {
        ChatToAnthropicStream {
            parser: SseParser::new(),
            phase: Phase::Init,
            client_model: client_model.to_string(),
            msg_id: format!("msg_{}", &crate::ids::generate_id("")[..16]),
            estimated_input: estimated_input_tokens,
            names,
            next_index: 0,
            open: None,
            started: Vec::new(),
            pending: None,
            saw_tool: false,
            finish: None,
            usage: None,
            bad_json_run: 0,
        }
    }

    /// Fixes the message id (deterministic output for golden tests).
    pub fn with_id(mut self, id: &str) -> Self {
        self.msg_id = id.to_string();
        self
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.phase != Phase::Init {
            return;
        }
        self.phase = Phase::Open;
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
            "id": self.msg_id, "type": "message", "role": "assistant", "model": self.client_model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.estimated_input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}}}),
        );
        event(out, "ping", &json!({"type": "ping"}));
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.next_index - 1}),
            );
        }
    }

    fn open_block(&mut self, out: &mut BytesMut, kind: Block, block: Value) {
        self.close_block(out);
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.next_index, "content_block": block}),
        );
        self.next_index += 1;
        self.open = Some(kind);
    }

    fn delta(&self, out: &mut BytesMut, delta: Value) {
        event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.next_index - 1, "delta": delta}),
        );
    }

    fn start_tool(&mut self, out: &mut BytesMut, p: PendingTool) {
        let name = self.names.to_client(p.name.as_deref().unwrap_or(""));
        let id = safe_tool_id(&p.id, "toolu_");
        self.open_block(
            out,
            Block::Tool(p.index),
            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
        );
        self.started.push(p.index);
        self.saw_tool = true;
        if !p.args.is_empty() {
            self.delta(
                out,
                json!({"type": "input_json_delta", "partial_json": p.args}),
            );
        }
    }

    fn on_tool_fragment(&mut self, out: &mut BytesMut, tc: &Value) {
        let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
        let f = tc.get("function").cloned().unwrap_or(Value::Null);
        let args = match f.get("arguments") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(), // some servers send objects
        };
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(String::from);
        if self.open == Some(Block::Tool(index)) {
            if !args.is_empty() {
                self.delta(
                    out,
                    json!({"type": "input_json_delta", "partial_json": args}),
                );
            }
            return;
        }
        if self.started.contains(&index) {
            // A fragment for a call whose block is closed (E16): its arguments can no longer be
            // delivered intact, so the turn fails visibly (the client retries) rather than
            // running a tool with truncated input.
            if !args.is_empty() {
                self.fail_with(
                    out,
                    ErrorKind::Upstream,
                    "upstream interleaved tool call fragments",
                );
            }
            return;
        }
        // A new call, or one whose name has not arrived yet (E17).
        let mut p = match self.pending.take() {
            Some(p) if p.index == index => p,
            other => {
                if let Some(prev) = other {
                    if prev.name.is_some() {
                        self.start_tool(out, prev);
                    }
                }
                PendingTool {
                    index,
                    id: String::new(),
                    name: None,
                    args: String::new(),
                }
            }
        };
        if let Some(id) = tc.get("id").and_then(Value::as_str) {
            p.id = id.to_string();
        }
        if name.is_some() {
            p.name = name;
        }
        p.args.push_str(&args);
        if p.name.is_some() {
            if p.id.is_empty() {
                p.id = format!("call_{}_{}", self.msg_id, index);
            }
            self.start_tool(out, p);
        } else {
            self.pending = Some(p);
        }
    }

    fn on_chunk(&mut self, v: &Value, out: &mut BytesMut) {
        if let Some(e) = v.get("error") {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error");
            self.fail_with(out, ErrorKind::Upstream, &redact(msg));
            return;
        }
        if let Some(u) = v
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| v.pointer("/x_groq/usage"))
        {
            if let Some(us) =
                crate::meter::usage_from_body(crate::meter::Wire::OpenAiChat, &json!({"usage": u}))
            {
                self.usage = Some(us);
            }
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        self.start(out);
        let delta = choice.get("delta").cloned().unwrap_or(Value::Null);
        if let Some(r) = delta
            .get("reasoning_content")
            .or_else(|| delta.get("reasoning"))
            .and_then(Value::as_str)
        {
            if !r.is_empty() {
                if self.open != Some(Block::Thinking) {
                    self.open_block(
                        out,
                        Block::Thinking,
                        json!({"type": "thinking", "thinking": "", "signature": ""}),
                    );
                }
                self.delta(out, json!({"type": "thinking_delta", "thinking": r}));
            }
        }
        for key in ["content", "refusal"] {
            if let Some(t) = delta.get(key).and_then(Value::as_str) {
                if !t.is_empty() {
                    if self.open != Some(Block::Text) {
                        self.open_block(out, Block::Text, json!({"type": "text", "text": ""}));
                    }
                    self.delta(out, json!({"type": "text_delta", "text": t}));
                    if key == "refusal" && self.finish.is_none() {
                        self.finish = Some("content_filter".into());
                    }
                }
            }
        }
        for tc in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.on_tool_fragment(out, tc);
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            if let Some(p) = self.pending.take() {
                if p.name.is_some() {
                    self.start_tool(out, p);
                }
            }
            if self.open == Some(Block::Thinking) {
                self.delta(out, json!({"type": "signature_delta", "signature": ""}));
            }
            self.close_block(out);
            if self.finish.as_deref() != Some("content_filter") {
                self.finish = Some(f.to_string());
            }
            self.phase = Phase::Finishing;
        }
    }

    fn complete(&mut self, out: &mut BytesMut) {
        self.start(out);
        self.close_block(out);
        let stop = if self.saw_tool {
            "tool_use"
        } else {
            match finish_to_stop(self.finish.as_deref().unwrap_or("stop")) {
                "tool_use" => "end_turn", // tool_calls but no call survived (E22)
                s => s,
            }
        };
        let u = self.usage.unwrap_or(Usage {
            input: self.estimated_input,
            ..Default::default()
        });
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage_to_anthropic(&u)}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
        self.phase = Phase::Done;
    }

    fn fail_with(&mut self, out: &mut BytesMut, kind: ErrorKind, msg: &str) {
        if matches!(self.phase, Phase::Done | Phase::Failed) {
            return;
        }
        // The open block stays open: a `content_block_stop` tells Claude Code the block is
        // complete, after which it no longer retries (clients.md §1.5). The error event right
        // after the last delta makes it retry the turn.
        self.open = None;
        out.extend_from_slice(
            &GatewayError::new(kind, msg.to_string()).sse_event(Dialect::Anthropic),
        );
        self.phase = Phase::Failed;
    }

    fn on_event(&mut self, ev: SseEvent, out: &mut BytesMut) {
        if matches!(self.phase, Phase::Done | Phase::Failed) {
            return;
        }
        if ev.data.trim() == "[DONE]" {
            if self.phase == Phase::Finishing || self.phase == Phase::Open && self.usage.is_some() {
                self.complete(out);
            } else {
                self.fail_with(
                    out,
                    ErrorKind::Upstream,
                    "upstream stream ended before completion",
                );
            }
            return;
        }
        if ev.data.is_empty() {
            return;
        }
        match serde_json::from_str::<Value>(&ev.data) {
            Ok(v) => {
                self.bad_json_run = 0;
                self.on_chunk(&v, out);
            }
            Err(_) => {
                self.bad_json_run += 1;
                if self.bad_json_run >= 3 {
                    self.fail_with(
                        out,
                        ErrorKind::Upstream,
                        "upstream sent malformed stream data",
                    );
                }
            }
        }
    }
}

impl StreamTranscoder for ChatToAnthropicStream {
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
            // finish seen, no [DONE]: end normally (E09)
            Phase::Finishing => self.complete(out),
            Phase::Init | Phase::Open => self.fail_with(
                out,
                ErrorKind::Upstream,
                "upstream stream ended before completion",
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
            ErrorKind::Upstream,
            &format!("upstream stream failed: {message}"),
        );
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        if matches!(self.phase, Phase::Done | Phase::Failed) {
            return;
        }
        // Anthropic clients expect message_start first; pings may come anywhere after it.
        if self.phase == Phase::Init {
            self.start(out);
        } else {
            event(out, "ping", &json!({"type": "ping"}));
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn completed(&self) -> bool {
        self.phase == Phase::Done
    }
}

/// An Anthropic Message rendered as the event sequence a streaming client expects (E48: the
/// upstream answered without streaming).
pub fn message_to_events(msg: &Value) -> BytesMut {
    let mut out = BytesMut::new();
    let mut start = msg.clone();
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    let usage = msg.get("usage").cloned().unwrap_or(json!({}));
    start["usage"] = json!({"input_tokens": usage["input_tokens"], "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
        "cache_read_input_tokens": usage["cache_read_input_tokens"], "output_tokens": 0});
    event(
        &mut out,
        "message_start",
        &json!({"type": "message_start", "message": start}),
    );
    for (i, b) in msg["content"].as_array().into_iter().flatten().enumerate() {
        let (shell, delta) = match b["type"].as_str() {
            Some("text") => (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": b["text"]}),
            ),
            Some("thinking") => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                json!({"type": "thinking_delta", "thinking": b["thinking"]}),
            ),
            Some("tool_use") => (
                json!({"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}),
                json!({"type": "input_json_delta", "partial_json": input_to_args(&b["input"])}),
            ),
            _ => continue,
        };
        event(
            &mut out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": i, "content_block": shell}),
        );
        event(
            &mut out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": i, "delta": delta}),
        );
        event(
            &mut out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": i}),
        );
    }
    event(
        &mut out,
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": msg["stop_sequence"]}, "usage": usage}),
    );
    event(&mut out, "message_stop", &json!({"type": "message_stop"}));
    out
}
