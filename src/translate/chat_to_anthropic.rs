//! OpenAI Chat Completions → Anthropic Messages: a Chat client's request for a Claude model,
//! and a Chat provider's answer for an Anthropic client (Claude Code on any OpenAI-compatible
//! model), whole or streamed. The rules are in docs/translation.md ("Requests", "Whole answers").

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use super::lifecycle::{open, Chunk, ClientStream, Events, Lifecycle, Next, Phase, Step};
use super::shared::*;
use super::sse::write_json;
use super::{Format, Stamp};
use crate::error::{ErrorKind, GatewayError};
use crate::meter::{usage_from_body, Usage};

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
        .and_then(|u| usage_from_body(Format::Chat, &json!({"usage": u})))
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

/// Chat upstream chunks → Anthropic client events (docs/translation.md, "Stream
/// lifecycle").
pub type ChatToAnthropicStream = Lifecycle<ChatToAnthropic>;

impl ChatToAnthropicStream {
    pub fn new(
        client_model: &str,
        estimated_input_tokens: u64,
        names: ToolNames,
        stamp: &Stamp,
    ) -> Self {
        Lifecycle::wrap(ChatToAnthropic {
            client_model: client_model.to_string(),
            msg_id: format!("msg_{}", stamp.token),
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
        })
    }
}

/// The event mapping of [`ChatToAnthropicStream`].
#[derive(Debug)]
pub struct ChatToAnthropic {
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

impl ChatToAnthropic {
    fn close_block(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            write_json(
                out,
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": self.next_index - 1}),
            );
        }
    }

    fn open_block(&mut self, out: &mut BytesMut, kind: Block, block: Value) {
        self.close_block(out);
        write_json(
            out,
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": self.next_index, "content_block": block}),
        );
        self.next_index += 1;
        self.open = Some(kind);
    }

    fn delta(&self, out: &mut BytesMut, delta: Value) {
        write_json(
            out,
            Some("content_block_delta"),
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

    fn on_tool_fragment(&mut self, out: &mut BytesMut, tc: &Value) -> Result<(), GatewayError> {
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
            return Ok(());
        }
        if self.started.contains(&index) {
            // A fragment for a call whose block is closed (E16): its arguments can no longer be
            // delivered intact, so the turn fails visibly (the client retries) rather than
            // running a tool with truncated input.
            if !args.is_empty() {
                return Err(GatewayError::new(
                    ErrorKind::Upstream,
                    "upstream interleaved tool call fragments",
                ));
            }
            return Ok(());
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
        Ok(())
    }

    fn map_chunk(
        &mut self,
        v: &Value,
        phase: &mut Phase,
        out: &mut BytesMut,
    ) -> Result<Next, GatewayError> {
        if let Some(e) = v.get("error") {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error");
            return Err(GatewayError::new(ErrorKind::Upstream, redact(msg)));
        }
        if let Some(u) = v
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| v.pointer("/x_groq/usage"))
        {
            if let Some(us) = usage_from_body(Format::Chat, &json!({"usage": u})) {
                self.usage = Some(us);
            }
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return Ok(Next::Continue);
        };
        open(self, phase, out);
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
        for tc in tool_call_deltas(&delta) {
            self.on_tool_fragment(out, tc)?;
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
            return Ok(Next::Finishing);
        }
        Ok(Next::Continue)
    }
}

impl Events for ChatToAnthropic {
    type Client = Self;

    fn client(&mut self) -> &mut Self {
        self
    }

    fn on_chunk(&mut self, c: Chunk, phase: &mut Phase, out: &mut BytesMut) -> Step {
        let v = c.data;
        self.bad_json_run = 0;
        self.map_chunk(v, phase, out)
    }

    /// `[DONE]` ends the turn if its end was announced, or if the usage chunk came (some
    /// servers send no finish reason); otherwise the stream was cut short.
    fn on_done(&mut self, phase: Phase) -> Next {
        if phase == Phase::Finishing || phase == Phase::Open && self.usage.is_some() {
            Next::Complete
        } else {
            Next::Truncated
        }
    }

    /// A run of chunks that are not JSON fails the stream; a stray one is skipped.
    fn on_malformed(&mut self) -> Result<(), GatewayError> {
        self.bad_json_run += 1;
        if self.bad_json_run >= 3 {
            return Err(GatewayError::new(
                ErrorKind::Upstream,
                "upstream sent malformed stream data",
            ));
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

impl ClientStream for ChatToAnthropic {
    fn start(&mut self, out: &mut BytesMut) {
        write_json(
            out,
            Some("message_start"),
            &json!({"type": "message_start", "message": {
            "id": self.msg_id, "type": "message", "role": "assistant", "model": self.client_model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.estimated_input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}}}),
        );
        write_json(out, Some("ping"), &json!({"type": "ping"}));
    }

    fn complete(&mut self, phase: &mut Phase, out: &mut BytesMut) {
        open(self, phase, out);
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
        write_json(
            out,
            Some("message_delta"),
            &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage_to_anthropic(&u)}),
        );
        write_json(out, Some("message_stop"), &json!({"type": "message_stop"}));
    }

    fn fail(&mut self, e: GatewayError, _: &mut Phase, out: &mut BytesMut) {
        // The open block stays open: a `content_block_stop` would tell Claude Code the block
        // is complete, after which it no longer retries. The error event right after the last
        // delta makes it retry the turn (docs/translation.md, "Stream lifecycle").
        self.open = None;
        out.extend_from_slice(&e.sse_event(Format::Anthropic));
    }

    fn keepalive(&mut self, phase: &mut Phase, out: &mut BytesMut) {
        // Anthropic clients expect message_start first; pings may come anywhere after it.
        if *phase == Phase::Init {
            open(self, phase, out);
        } else {
            write_json(out, Some("ping"), &json!({"type": "ping"}));
        }
    }
}

/// An Anthropic Message rendered as the event sequence a streaming client expects (the
/// upstream answered without streaming: E48).
pub fn message_to_events(msg: &Value) -> BytesMut {
    let mut out = BytesMut::new();
    let mut start = msg.clone();
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    let usage = msg.get("usage").cloned().unwrap_or(json!({}));
    start["usage"] = json!({"input_tokens": usage["input_tokens"], "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
        "cache_read_input_tokens": usage["cache_read_input_tokens"], "output_tokens": 0});
    write_json(
        &mut out,
        Some("message_start"),
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
        write_json(
            &mut out,
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": i, "content_block": shell}),
        );
        write_json(
            &mut out,
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": i, "delta": delta}),
        );
        write_json(
            &mut out,
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": i}),
        );
    }
    write_json(
        &mut out,
        Some("message_delta"),
        &json!({"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": msg["stop_sequence"]}, "usage": usage}),
    );
    write_json(
        &mut out,
        Some("message_stop"),
        &json!({"type": "message_stop"}),
    );
    out
}
