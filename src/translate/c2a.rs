//! OpenAI Chat Completions client → Anthropic Messages upstream (any OpenAI client on a
//! Claude model): the request (§2.3), the non-streamed response (§2.4) and the stream (§3.4).

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use super::shared::*;
use super::sse::{SseEvent, SseParser};
use super::StreamTranscoder;
use crate::error::{Dialect, ErrorKind, GatewayError};
use crate::meter::Usage;

pub struct RequestOptions {
    pub upstream_model: String,
    pub stream: bool,
    /// `max_tokens` when the client gave none (Anthropic requires it).
    pub default_max_tokens: u64,
}

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid(msg)
}

/// The tool names of an OpenAI request.
pub fn tool_names(c: &Map<String, Value>) -> ToolNames {
    let tools = c.get("tools").and_then(Value::as_array);
    ToolNames::from_names(
        tools
            .into_iter()
            .flatten()
            .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str)),
    )
}

fn image_block(url: &str) -> Result<Value, GatewayError> {
    if let Some((mime, data)) = parse_data_url(url) {
        if !ANTHROPIC_IMAGE_TYPES.contains(&mime) {
            return Err(bad(format!(
                "Image type '{mime}' is not supported by this model (use jpeg, png, gif or webp)."
            )));
        }
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}),
        );
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(bad(
        "image_url must be an http(s) URL or a base64 data URL.",
    ))
}

/// C content (string or parts) → A blocks.
fn blocks_of(content: &Value) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::String(s) if s.is_empty() => Ok(vec![]),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Null => Ok(vec![]),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))})),
                    Some("image_url") => {
                        let url = p.pointer("/image_url/url").and_then(Value::as_str).or_else(|| p.get("image_url").and_then(Value::as_str)).unwrap_or("");
                        out.push(image_block(url)?);
                    }
                    Some("file") => {
                        let f = p.get("file").cloned().unwrap_or(Value::Null);
                        if f.get("file_id").is_some() {
                            return Err(bad("Uploaded file ids cannot be used with this provider; send file_data."));
                        }
                        let data = f.get("file_data").and_then(Value::as_str).unwrap_or("");
                        let (mime, b64) = parse_data_url(data).ok_or_else(|| bad("file_data must be a base64 data URL."))?;
                        out.push(json!({"type": "document", "source": {"type": "base64", "media_type": mime, "data": b64}}));
                    }
                    Some("input_audio") => return Err(bad("Audio input is not supported by this model.")),
                    _ => {}
                }
            }
            Ok(out)
        }
        _ => Err(bad(
            "message content must be a string or an array of parts.",
        )),
    }
}

/// The C request → A request.
pub fn request(c: &Map<String, Value>, opts: &RequestOptions) -> Result<Value, GatewayError> {
    if c.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(bad("'n' greater than 1 is not supported for this model.").with_param("n"));
    }
    let names = tool_names(c);
    let msgs = c
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("'messages' must be an array.").with_param("messages"))?;
    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    // Text to put at the start of the next user turn (later system messages).
    let mut reminders: Vec<String> = Vec::new();
    let mut leading = true;
    for (i, m) in msgs.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("messages[{i}].role is required.")))?;
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        match role {
            "system" | "developer" => {
                let t = text_of(&content);
                if leading {
                    system.push(json!({"type": "text", "text": t}));
                } else {
                    reminders.push(format!("<system-reminder>\n{t}\n</system-reminder>"));
                }
            }
            "user" | "tool" => {
                leading = false;
                let mut blocks = Vec::new();
                if role == "tool" {
                    let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                    blocks.push(json!({"type": "tool_result", "tool_use_id": safe_tool_id(id, "toolu_"), "content": text_of(&content)}));
                } else {
                    for r in reminders.drain(..) {
                        blocks.push(json!({"type": "text", "text": r}));
                    }
                    blocks.extend(blocks_of(&content)?);
                }
                // Consecutive tool results and the following user message form one user turn,
                // results first (E30).
                match out.last_mut() {
                    Some(last) if last["role"] == "user" => {
                        let arr = last["content"].as_array_mut().expect("blocks");
                        if role == "tool" {
                            let pos = arr
                                .iter()
                                .take_while(|b| b["type"] == "tool_result")
                                .count();
                            arr.insert(pos, blocks.remove(0));
                        } else {
                            arr.extend(blocks);
                        }
                    }
                    _ => {
                        if !blocks.is_empty() {
                            out.push(json!({"role": "user", "content": blocks}));
                        }
                    }
                }
            }
            "assistant" => {
                leading = false;
                let mut blocks = blocks_of(&content)?;
                if let Some(r) = m.get("refusal").and_then(Value::as_str) {
                    blocks.push(json!({"type": "text", "text": r}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = &call["function"];
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": safe_tool_id(call["id"].as_str().unwrap_or(""), "toolu_"),
                        "name": names.to_upstream(f["name"].as_str().unwrap_or("")),
                        "input": args_to_input(&f["arguments"]),
                    }));
                }
                if !blocks.is_empty() {
                    out.push(json!({"role": "assistant", "content": blocks}));
                }
            }
            other => {
                return Err(bad(format!(
                    "messages[{i}].role '{other}' is not supported."
                )))
            }
        }
    }
    if !reminders.is_empty() {
        // Trailing system items join the last user turn (roles must alternate).
        let blocks: Vec<Value> = reminders
            .into_iter()
            .map(|r| json!({"type": "text", "text": r}))
            .collect();
        match out.last_mut() {
            Some(last) if last["role"] == "user" => last["content"]
                .as_array_mut()
                .expect("blocks")
                .extend(blocks),
            _ => out.push(json!({"role": "user", "content": blocks})),
        }
    }
    // Tool calls without results get placeholders (A refuses unanswered tool_use).
    add_missing_results(&mut out);

    let mut a = Map::new();
    a.insert("model".into(), json!(opts.upstream_model));
    // Anthropic requires an assistant tool-use turn to start with its thinking block when
    // thinking is on; an OpenAI client's history has none (E25), so thinking stays off for a
    // request that carries a tool loop.
    let tool_loop = msgs.iter().any(|m| {
        m.get("tool_calls")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
    });
    let budget = c
        .get("reasoning_effort")
        .and_then(Value::as_str)
        .and_then(budget_for_effort)
        .filter(|_| !tool_loop);
    // A client that gave no limit but asked for reasoning gets room for both.
    let max = c
        .get("max_completion_tokens")
        .or_else(|| c.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(opts.default_max_tokens + budget.unwrap_or(0));
    a.insert("max_tokens".into(), json!(max));
    if let Some(fmt) = c.get("response_format") {
        match fmt.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let schema = fmt
                    .pointer("/json_schema/schema")
                    .cloned()
                    .unwrap_or(json!({}));
                a.insert(
                    "output_config".into(),
                    json!({"format": {"type": "json_schema", "schema": schema}}),
                );
            }
            Some("json_object") => system.push(
                json!({"type": "text", "text": "Reply with one JSON object and nothing else."}),
            ),
            _ => {}
        }
    }
    if !system.is_empty() {
        a.insert("system".into(), Value::Array(system));
    }
    a.insert("messages".into(), Value::Array(out));
    let thinking = budget.filter(|b| *b < max && *b >= 1024);
    if let Some(b) = thinking {
        a.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": b}),
        );
    } else {
        if let Some(t) = c.get("temperature").and_then(Value::as_f64) {
            a.insert("temperature".into(), json!(t.min(1.0)));
        } else if let Some(p) = c.get("top_p").filter(|v| v.is_number()) {
            a.insert("top_p".into(), p.clone());
        }
    }
    match c.get("stop") {
        Some(Value::String(s)) => {
            a.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(v)) if !v.is_empty() => {
            a.insert("stop_sequences".into(), Value::Array(v.clone()));
        }
        _ => {}
    }
    let mut tools = Vec::new();
    for t in c
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = t.get("function").cloned().unwrap_or(Value::Null);
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            continue;
        };
        let mut tool = json!({"name": names.to_upstream(name), "input_schema": f.get("parameters").cloned().unwrap_or(json!({"type": "object", "properties": {}}))});
        if let Some(d) = f.get("description") {
            tool["description"] = d.clone();
        }
        tools.push(tool);
    }
    let has_tools = !tools.is_empty();
    if has_tools {
        a.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = match c.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|n| json!({"type": "tool", "name": names.to_upstream(n)})),
        _ => None,
    };
    if has_tools && c.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let ch = choice.get_or_insert_with(|| json!({"type": "auto"}));
        ch["disable_parallel_tool_use"] = json!(true);
    }
    if let (Some(ch), true) = (choice, has_tools) {
        a.insert("tool_choice".into(), ch);
    }
    if let Some(u) = c
        .get("user")
        .or_else(|| c.get("safety_identifier"))
        .and_then(Value::as_str)
    {
        a.insert("metadata".into(), json!({"user_id": u}));
    }
    if opts.stream {
        a.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(a))
}

fn add_missing_results(out: &mut Vec<Value>) {
    let mut i = 0;
    while i < out.len() {
        if out[i]["role"] == "assistant" {
            let ids: Vec<String> = out[i]["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["id"].as_str().map(String::from))
                .collect();
            if !ids.is_empty() {
                let answered: Vec<String> = out
                    .get(i + 1)
                    .filter(|m| m["role"] == "user")
                    .and_then(|m| m["content"].as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["tool_use_id"].as_str().map(String::from))
                    .collect();
                let missing: Vec<Value> = ids.iter().filter(|id| !answered.contains(id)).map(|id| json!({"type": "tool_result", "tool_use_id": id, "content": "[no result]"})).collect();
                if !missing.is_empty() {
                    if out.get(i + 1).is_some_and(|m| m["role"] == "user") {
                        let arr = out[i + 1]["content"].as_array_mut().expect("blocks");
                        for (k, b) in missing.into_iter().enumerate() {
                            arr.insert(k, b);
                        }
                    } else {
                        out.insert(i + 1, json!({"role": "user", "content": missing}));
                    }
                }
            }
        }
        i += 1;
    }
}

/// An A Message → C chat.completion.
pub fn response(a: &Value, client_model: &str, names: &ToolNames) -> Value {
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
    let usage = crate::meter::usage_from_body(crate::meter::Wire::Anthropic, a).unwrap_or_default();
    json!({
        "id": format!("chatcmpl-{}", a["id"].as_str().unwrap_or("x")),
        "object": "chat.completion",
        "created": crate::clock::now_secs(),
        "model": client_model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage_to_openai(&usage),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Open,
    Delta,
    Done,
    Failed,
}

/// A upstream stream → C client chunks (§3.4).
#[derive(Debug)]
pub struct AnthropicToChatStream {
    parser: SseParser,
    phase: Phase,
    id: String,
    created: u64,
    client_model: String,
    include_usage: bool,
    names: ToolNames,
    /// A block index → C tool call index, for tool_use blocks.
    tool_index: Vec<(u64, u64)>,
    /// Tool blocks that received a non-empty argument fragment.
    tool_had_args: Vec<u64>,
    tool_count: u64,
    usage: Usage,
    saw_usage: bool,
    saw_tool: bool,
    stop: Option<String>,
}

impl AnthropicToChatStream {
    pub fn new(client_model: &str, include_usage: bool, names: ToolNames) -> Self {
        AnthropicToChatStream {
            parser: SseParser::new(),
            phase: Phase::Init,
            id: format!("chatcmpl-{}", &crate::ids::generate_id("")[..16]),
            created: crate::clock::now_secs(),
            client_model: client_model.to_string(),
            include_usage,
            names,
            tool_index: Vec::new(),
            tool_had_args: Vec::new(),
            tool_count: 0,
            usage: Usage::default(),
            saw_usage: false,
            saw_tool: false,
            stop: None,
        }
    }

    /// Fixes the id and creation time (deterministic output for golden tests).
    pub fn with_id(mut self, id: &str, created: u64) -> Self {
        self.id = id.to_string();
        self.created = created;
        self
    }

    fn chunk(&self, out: &mut BytesMut, delta: Value, finish: Value) {
        let mut v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.client_model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn fail_with(&mut self, out: &mut BytesMut, kind: ErrorKind, msg: &str, status: Option<u16>) {
        if matches!(self.phase, Phase::Done | Phase::Failed) {
            return;
        }
        let mut e = GatewayError::new(kind, msg.to_string());
        if let Some(s) = status {
            e = e.with_status(s);
        }
        out.extend_from_slice(&e.sse_event(Dialect::OpenAi));
        self.phase = Phase::Failed;
    }

    fn merge_usage(&mut self, u: &Value) {
        let mut any = false;
        for (k, dst) in [
            ("input_tokens", &mut self.usage.input),
            ("cache_read_input_tokens", &mut self.usage.cache_read),
            ("cache_creation_input_tokens", &mut self.usage.cache_write),
            ("output_tokens", &mut self.usage.output),
        ] {
            if let Some(n) = u.get(k).and_then(Value::as_u64) {
                *dst = n;
                any = true;
            }
        }
        self.saw_usage |= any;
    }

    fn complete(&mut self, out: &mut BytesMut) {
        if self.include_usage {
            let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.client_model,
                "choices": [], "usage": usage_to_openai(&self.usage)});
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(v.to_string().as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.phase = Phase::Done;
    }

    fn on_event(&mut self, ev: SseEvent, out: &mut BytesMut) {
        if matches!(self.phase, Phase::Done | Phase::Failed) || ev.data.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or("")
            .to_string();
        match ty.as_str() {
            "message_start" => {
                if let Some(u) = v.pointer("/message/usage") {
                    self.merge_usage(u);
                }
                if self.phase == Phase::Init {
                    self.phase = Phase::Open;
                    self.chunk(
                        out,
                        json!({"role": "assistant", "content": ""}),
                        Value::Null,
                    );
                }
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
                    self.chunk(out, json!({"tool_calls": [{"index": k, "id": b["id"], "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null);
                } else if b["type"] == "text" {
                    if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                        self.chunk(out, json!({"content": t}), Value::Null);
                    }
                }
            }
            "content_block_delta" => {
                let idx = v["index"].as_u64().unwrap_or(0);
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        self.chunk(out, json!({"content": d["text"]}), Value::Null)
                    }
                    Some("thinking_delta") => self.chunk(
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
                            self.chunk(out, json!({"tool_calls": [{"index": k, "function": {"arguments": part}}]}), Value::Null);
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
                        self.chunk(
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
                    .unwrap_or("end_turn")
                    .to_string();
                let finish = if self.saw_tool {
                    "tool_calls"
                } else {
                    match stop_to_finish(&stop) {
                        "tool_calls" => "stop",
                        f => f,
                    }
                };
                self.stop = Some(stop);
                self.chunk(out, json!({}), json!(finish));
                self.phase = Phase::Delta;
            }
            "message_stop" => self.complete(out),
            "error" => {
                let e = &v["error"];
                let kind = e["type"].as_str().unwrap_or("api_error");
                let msg = redact(e["message"].as_str().unwrap_or("upstream error"));
                let (k, status) = match kind {
                    "rate_limit_error" => (ErrorKind::RateLimited, None),
                    "overloaded_error" => (ErrorKind::Unavailable, None),
                    "invalid_request_error" => (ErrorKind::InvalidRequest, None),
                    _ => (ErrorKind::Upstream, Some(500)),
                };
                self.fail_with(out, k, &msg, status);
            }
            _ => {}
        }
    }
}

impl StreamTranscoder for AnthropicToChatStream {
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
            Phase::Delta => self.complete(out), // message_delta seen, message_stop lost
            Phase::Init | Phase::Open => {
                let mut e = GatewayError::new(
                    ErrorKind::Upstream,
                    "upstream stream ended before completion",
                )
                .with_code("stream_truncated");
                e.status_override = Some(502);
                out.extend_from_slice(&e.sse_event(Dialect::OpenAi));
                self.phase = Phase::Failed;
            }
            _ => {}
        }
    }

    fn fail(&mut self, message: &str, out: &mut BytesMut) {
        if self.phase == Phase::Delta {
            self.complete(out);
            return;
        }
        self.fail_with(
            out,
            ErrorKind::Upstream,
            &format!("upstream stream failed: {message}"),
            None,
        );
    }

    fn keepalive(&mut self, out: &mut BytesMut) {
        if !matches!(self.phase, Phase::Done | Phase::Failed) {
            out.extend_from_slice(b": keep-alive\n\n");
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.saw_usage.then_some(self.usage)
    }

    fn completed(&self) -> bool {
        self.phase == Phase::Done
    }
}

/// A chat.completion rendered as the chunk sequence a streaming client expects (E48: the
/// upstream answered without streaming).
pub fn completion_to_chunks(v: &Value, include_usage: bool) -> BytesMut {
    let mut out = BytesMut::new();
    let base = |choices: Value| {
        let mut c = json!({"id": v["id"], "object": "chat.completion.chunk", "created": v["created"], "model": v["model"], "choices": choices});
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut push = |c: Value| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(c.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    let msg = &v["choices"][0]["message"];
    push(base(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
    ));
    if let Some(r) = msg.get("reasoning_content").filter(|r| r.is_string()) {
        push(base(
            json!([{"index": 0, "delta": {"reasoning_content": r}, "finish_reason": null}]),
        ));
    }
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        push(base(
            json!([{"index": 0, "delta": {"content": t}, "finish_reason": null}]),
        ));
    }
    if let Some(t) = msg
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        push(base(
            json!([{"index": 0, "delta": {"refusal": t}, "finish_reason": null}]),
        ));
    }
    for (k, call) in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        push(base(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": k, "id": call["id"], "type": "function", "function": call["function"]}]}, "finish_reason": null}]),
        ));
    }
    push(base(
        json!([{"index": 0, "delta": {}, "finish_reason": v["choices"][0]["finish_reason"]}]),
    ));
    if include_usage {
        let mut u = base(json!([]));
        u["usage"] = v["usage"].clone();
        push(u);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}
