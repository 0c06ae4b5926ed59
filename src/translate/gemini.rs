//! OpenAI Chat Completions client ↔ Google Gemini `generateContent` upstream (wire-formats §7):
//! the request (C → G), the non-streamed response and the `?alt=sse` stream (G → C). Anthropic
//! and Responses clients reach Gemini by chaining through C, so the C produced here is exactly
//! what OpenAI sends.
//!
//! Thought signatures (E47) travel statelessly inside the tool call id handed to the client:
//! `call_` + base64url(signature bytes) + `_` + ordinal; the client echoes the id back in its
//! assistant `tool_calls` and the request restores `thoughtSignature` on that `functionCall`.

use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::BytesMut;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

use super::shared::*;
use super::sse::{SseEvent, SseParser};
use super::StreamTranscoder;
use crate::error::{Dialect, ErrorKind, GatewayError};
use crate::meter::Usage;

pub struct RequestOptions {
    pub upstream_model: String,
    /// The client streams; nothing in the G body depends on it (the path does, see
    /// [`path_for`]). Kept for symmetry with the other translators.
    pub stream: bool,
}

/// Google's documented placeholder for a Gemini 3 function call whose signature was lost
/// (history from another model, or an id shortened by a client-side translator).
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Prefix for tool names Gemini refuses only for their first character (a digit or `-`).
const NAME_PREFIX: &str = "tg_";

/// Signatures arrive as standard base64; accept them padded or not.
const SIG_IN: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const SIG_IN_URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid(msg)
}

/// The tool names of an OpenAI request (H1; same map as for Anthropic upstreams).
pub fn tool_names(c: &Map<String, Value>) -> ToolNames {
    super::c2a::tool_names(c)
}

/// H1 for Gemini: also `^[A-Za-z_]` as the first character.
fn upstream_name(names: &ToolNames, name: &str) -> String {
    let s = names.to_upstream(name);
    if s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s
    } else {
        format!("{NAME_PREFIX}{s}")
    }
}

/// H1⁻¹ for Gemini.
fn client_name(names: &ToolNames, name: &str) -> String {
    match name.strip_prefix(NAME_PREFIX) {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
            names.to_client(rest)
        }
        _ => names.to_client(name),
    }
}

/// Upstream path for a model, e.g. `/v1beta/models/gemini-2.5-flash:generateContent`.
pub fn path_for(model: &str, stream: bool) -> String {
    let (collection, id) = match model.strip_prefix("tunedModels/") {
        Some(rest) => ("tunedModels", rest),
        None => ("models", model.strip_prefix("models/").unwrap_or(model)),
    };
    let mut enc = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    format!("/v1beta/{collection}/{enc}:{method}")
}

// ---------------------------------------------------------------------------------------------
// Tool call ids (E47)

fn decode_signature(sig: &str) -> Option<Vec<u8>> {
    SIG_IN
        .decode(sig)
        .or_else(|_| SIG_IN_URL.decode(sig))
        .ok()
        .filter(|b| !b.is_empty())
}

/// The client's id for the `ordinal`-th function call of a response.
fn tool_call_id(part: &Value, response_id: &str, ordinal: u64) -> String {
    if let Some(bytes) = part
        .get("thoughtSignature")
        .and_then(Value::as_str)
        .and_then(decode_signature)
    {
        return format!("call_{}_{ordinal}", URL_SAFE_NO_PAD.encode(bytes));
    }
    let fc = &part["functionCall"];
    if let Some(id) = fc
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return safe_tool_id(id, "call_");
    }
    let seed = format!(
        "{response_id}\n{ordinal}\n{}\n{}",
        fc["name"].as_str().unwrap_or(""),
        fc.get("args").unwrap_or(&Value::Null)
    );
    format!(
        "call_{}",
        &crate::ids::hex(&Sha256::digest(seed.as_bytes()))[..24]
    )
}

/// The thought signature a client tool call id carries (standard base64, as Gemini sent it).
fn signature_from_id(id: &str) -> Option<String> {
    let rest = id.strip_prefix("call_")?;
    let (b64, ordinal) = rest.rsplit_once('_')?;
    if ordinal.is_empty() || ordinal.len() > 6 || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    // Real signatures are long; a short match is some other provider's `call_x_1` id.
    (bytes.len() >= 8).then(|| STANDARD.encode(bytes))
}

// ---------------------------------------------------------------------------------------------
// C request → G request

fn mime_for_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or("");
    let ext = file.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

fn media_part(url: &str) -> Result<Value, GatewayError> {
    if let Some((mime, data)) = parse_data_url(url) {
        return Ok(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        let mime = mime_for_url(url).ok_or_else(|| {
            bad(format!(
                "Cannot tell the media type of '{}' from its extension (use .png, .jpg, .webp, .heic, .heif or .pdf, or send a base64 data URL).",
                url.chars().take(200).collect::<String>()
            ))
        })?;
        return Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}}));
    }
    Err(bad(
        "image_url must be an http(s) URL or a base64 data URL.",
    ))
}

/// C user content (string or parts) → G parts.
fn user_parts(content: &Value, i: usize) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::String(s) if s.is_empty() => Ok(vec![]),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Null => Ok(vec![]),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = p
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            out.push(json!({ "text": t }));
                        }
                    }
                    Some("image_url") => {
                        let url = p
                            .pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .or_else(|| p.get("image_url").and_then(Value::as_str))
                            .unwrap_or("");
                        out.push(media_part(url)?);
                    }
                    Some("file") => {
                        let f = p.get("file").cloned().unwrap_or(Value::Null);
                        if f.get("file_id").is_some() {
                            return Err(bad(
                                "Uploaded file ids cannot be used with this provider; send file_data.",
                            ));
                        }
                        let data = f.get("file_data").and_then(Value::as_str).unwrap_or("");
                        let (mime, b64) = parse_data_url(data)
                            .ok_or_else(|| bad("file_data must be a base64 data URL."))?;
                        out.push(json!({"inlineData": {"mimeType": mime, "data": b64}}));
                    }
                    Some("input_audio") => {
                        let a = &p["input_audio"];
                        let mime = match a["format"].as_str() {
                            Some("wav") => "audio/wav",
                            Some("mp3") => "audio/mp3",
                            _ => return Err(bad("input_audio.format must be wav or mp3.")),
                        };
                        out.push(json!({"inlineData": {"mimeType": mime, "data": a["data"]}}));
                    }
                    _ => {}
                }
            }
            Ok(out)
        }
        _ => Err(bad(format!(
            "messages[{i}].content must be a string or an array of parts."
        ))),
    }
}

/// Appends a turn, merging it into the previous one when the role repeats (Gemini requires
/// alternation).
fn push_turn(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some(last) if last["role"] == role => {
            last["parts"].as_array_mut().expect("parts").extend(parts)
        }
        _ => contents.push(json!({"role": role, "parts": parts})),
    }
}

/// Adds a `functionResponse` to the current user turn, after the turn's other responses and
/// before its text.
fn push_response(contents: &mut Vec<Value>, part: Value) {
    match contents.last_mut() {
        Some(last) if last["role"] == "user" => {
            let parts = last["parts"].as_array_mut().expect("parts");
            let pos = parts
                .iter()
                .take_while(|p| p.get("functionResponse").is_some())
                .count();
            parts.insert(pos, part);
        }
        _ => contents.push(json!({"role": "user", "parts": [part]})),
    }
}

/// Calls of the last model turn that got no tool message get a placeholder result: Gemini
/// wants as many responses as calls (E29).
fn flush_orphans(pending: &mut Vec<(String, String)>, contents: &mut Vec<Value>) {
    for (_, name) in pending.drain(..) {
        push_response(
            contents,
            json!({"functionResponse": {"name": name, "response": {"result": "[no result]"}}}),
        );
    }
}

fn without_schema_key(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
    }
    v
}

fn model_family(model: &str) -> String {
    model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase()
}

/// H5 for Gemini: `reasoning_effort` → `thinkingConfig` (2.5: budget, 3: level).
fn thinking_config(model: &str, effort: &str) -> Option<Value> {
    let m = model_family(model);
    let show = effort != "none";
    if m.starts_with("gemini-3") {
        let level = match effort {
            "none" | "minimal" | "low" => "low",
            "medium" | "high" | "xhigh" | "max" => "high",
            _ => return None,
        };
        let mut t = json!({ "thinkingLevel": level });
        if show {
            t["includeThoughts"] = json!(true);
        }
        return Some(t);
    }
    if m.starts_with("gemini-2.5") {
        // 2.5 Pro cannot turn thinking off (minimum 128) and goes up to 32768; Flash: 24576.
        let pro = m.contains("pro");
        let budget = match effort {
            "none" if pro => 128,
            "none" => 0,
            "minimal" => 512,
            "low" => 1024,
            "medium" => 8192,
            "high" => 24576,
            "xhigh" | "max" if pro => 32768,
            "xhigh" | "max" => 24576,
            _ => return None,
        };
        let mut t = json!({ "thinkingBudget": budget });
        if show {
            t["includeThoughts"] = json!(true);
        }
        return Some(t);
    }
    None // models without thinking refuse thinkingConfig
}

/// The C request → G `GenerateContentRequest` body (the model goes in the path).
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
    let mut contents: Vec<Value> = Vec::new();
    // Later system messages, as text for the next user turn.
    let mut reminders: Vec<String> = Vec::new();
    let mut leading = true;
    // Client tool call id → upstream function name, for functionResponse (which needs it).
    let mut call_names: HashMap<String, String> = HashMap::new();
    // Calls of the last model turn still waiting for a tool message: (id, name).
    let mut pending: Vec<(String, String)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("messages[{i}].role is required.")))?;
        let content = m.get("content").cloned().unwrap_or(Value::Null);
        match role {
            "system" | "developer" => {
                let t = text_of(&content);
                if t.is_empty() {
                    continue;
                }
                if leading {
                    system.push(json!({ "text": t }));
                } else {
                    reminders.push(format!("<system-reminder>\n{t}\n</system-reminder>"));
                }
            }
            "user" => {
                leading = false;
                let mut parts: Vec<Value> =
                    reminders.drain(..).map(|r| json!({ "text": r })).collect();
                parts.extend(user_parts(&content, i)?);
                push_turn(&mut contents, "user", parts);
            }
            "tool" => {
                leading = false;
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let name = call_names.get(id).cloned().ok_or_else(|| {
                    bad(format!(
                        "messages[{i}].tool_call_id '{id}' does not match a tool call of an earlier assistant message."
                    ))
                    .with_param(format!("messages[{i}].tool_call_id"))
                })?;
                pending.retain(|(p, _)| p != id);
                push_response(
                    &mut contents,
                    json!({"functionResponse": {"name": name, "response": {"result": text_of(&content)}}}),
                );
            }
            "assistant" => {
                leading = false;
                flush_orphans(&mut pending, &mut contents);
                let mut parts = Vec::new();
                match &content {
                    Value::String(s) if !s.is_empty() => parts.push(json!({ "text": s })),
                    Value::Array(a) => {
                        for p in a {
                            if let Some(t) = p
                                .get("text")
                                .or_else(|| p.get("refusal"))
                                .and_then(Value::as_str)
                                .filter(|t| !t.is_empty())
                            {
                                parts.push(json!({ "text": t }));
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(r) = m
                    .get("refusal")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    parts.push(json!({ "text": r }));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = &call["function"];
                    let id = call["id"].as_str().unwrap_or("").to_string();
                    let name = upstream_name(&names, f["name"].as_str().unwrap_or(""));
                    let mut part = json!({"functionCall": {"name": name, "args": args_to_input(&f["arguments"])}});
                    if let Some(sig) = signature_from_id(&id) {
                        part["thoughtSignature"] = json!(sig);
                    }
                    parts.push(part);
                    call_names.insert(id.clone(), name.clone());
                    pending.push((id, name));
                }
                push_turn(&mut contents, "model", parts);
            }
            other => {
                return Err(bad(format!(
                    "messages[{i}].role '{other}' is not supported."
                )))
            }
        }
    }
    flush_orphans(&mut pending, &mut contents);
    if !reminders.is_empty() {
        let parts = reminders
            .into_iter()
            .map(|r| json!({ "text": r }))
            .collect();
        push_turn(&mut contents, "user", parts);
    }
    if contents.is_empty() {
        return Err(
            bad("'messages' must contain at least one user or assistant message.")
                .with_param("messages"),
        );
    }
    if model_family(&opts.upstream_model).starts_with("gemini-3") {
        // Gemini 3 refuses a function-call step without its signature (E47).
        for turn in contents.iter_mut().filter(|t| t["role"] == "model") {
            let parts = turn["parts"].as_array_mut().expect("parts");
            if parts.iter().any(|p| p.get("thoughtSignature").is_some()) {
                continue;
            }
            if let Some(p) = parts.iter_mut().find(|p| p.get("functionCall").is_some()) {
                p["thoughtSignature"] = json!(SKIP_SIGNATURE);
            }
        }
    }

    let mut g = Map::new();
    if !system.is_empty() {
        g.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    g.insert("contents".into(), Value::Array(contents));

    let mut decls = Vec::new();
    for t in c
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if t.get("type")
            .and_then(Value::as_str)
            .is_some_and(|ty| ty != "function")
        {
            continue; // custom tools have no Gemini form
        }
        let f = t.get("function").cloned().unwrap_or(Value::Null);
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            continue;
        };
        let mut d = json!({ "name": upstream_name(&names, name) });
        if let Some(desc) = f.get("description").filter(|d| d.is_string()) {
            d["description"] = desc.clone();
        }
        if let Some(p) = f.get("parameters").filter(|p| p.is_object()) {
            d["parametersJsonSchema"] = without_schema_key(p);
        }
        decls.push(d);
    }
    if !decls.is_empty() {
        g.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
        let fcc = match c.get("tool_choice") {
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Some(json!({"mode": "AUTO"})),
                "none" => Some(json!({"mode": "NONE"})),
                "required" => Some(json!({"mode": "ANY"})),
                _ => None,
            },
            Some(Value::Object(o))
                if o.get("type").and_then(Value::as_str) == Some("allowed_tools") =>
            {
                let at = o.get("allowed_tools").cloned().unwrap_or(Value::Null);
                let allowed: Vec<String> = at["tools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
                    .map(|n| upstream_name(&names, n))
                    .collect();
                if at["mode"] == "required" {
                    Some(json!({"mode": "ANY", "allowedFunctionNames": allowed}))
                } else {
                    Some(json!({"mode": "AUTO"})) // Gemini restricts names only with ANY
                }
            }
            Some(Value::Object(o)) => o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(
                    |n| json!({"mode": "ANY", "allowedFunctionNames": [upstream_name(&names, n)]}),
                ),
            _ => None,
        };
        if let Some(fcc) = fcc {
            g.insert("toolConfig".into(), json!({ "functionCallingConfig": fcc }));
        }
    }

    let mut gen = Map::new();
    if let Some(t) = c.get("temperature").filter(|v| v.is_number()) {
        gen.insert("temperature".into(), t.clone());
    }
    if let Some(p) = c.get("top_p").filter(|v| v.is_number()) {
        gen.insert("topP".into(), p.clone());
    }
    if let Some(m) = c
        .get("max_completion_tokens")
        .filter(|v| v.is_u64())
        .or_else(|| c.get("max_tokens").filter(|v| v.is_u64()))
    {
        gen.insert("maxOutputTokens".into(), m.clone());
    }
    match c.get("stop") {
        Some(Value::String(s)) if !s.is_empty() => {
            gen.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(v)) => {
            let stops: Vec<Value> = v
                .iter()
                .filter(|s| s.is_string())
                .take(5)
                .cloned()
                .collect();
            if !stops.is_empty() {
                gen.insert("stopSequences".into(), Value::Array(stops));
            }
        }
        _ => {}
    }
    if let Some(s) = c.get("seed").filter(|v| v.is_i64() || v.is_u64()) {
        gen.insert("seed".into(), s.clone());
    }
    if let Some(fmt) = c.get("response_format") {
        match fmt.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                gen.insert("responseMimeType".into(), json!("application/json"));
                if let Some(s) = fmt.pointer("/json_schema/schema").filter(|s| s.is_object()) {
                    gen.insert("responseJsonSchema".into(), without_schema_key(s));
                }
            }
            Some("json_object") => {
                gen.insert("responseMimeType".into(), json!("application/json"));
            }
            _ => {}
        }
    }
    if let Some(t) = c
        .get("reasoning_effort")
        .and_then(Value::as_str)
        .and_then(|e| thinking_config(&opts.upstream_model, e))
    {
        gen.insert("thinkingConfig".into(), t);
    }
    if !gen.is_empty() {
        g.insert("generationConfig".into(), Value::Object(gen));
    }
    Ok(Value::Object(g))
}

// ---------------------------------------------------------------------------------------------
// G response → C

/// Canonical usage from a G `usageMetadata`: input excludes cached tokens and includes
/// tool-use prompt tokens; output = candidates + thoughts; reasoning = thoughts.
pub fn usage_from_metadata(m: &Value) -> Option<Usage> {
    let get = |k: &str| m.get(k).and_then(Value::as_u64);
    let prompt = get("promptTokenCount");
    let candidates = get("candidatesTokenCount");
    let thoughts = get("thoughtsTokenCount");
    let tool = get("toolUsePromptTokenCount");
    if prompt.is_none() && candidates.is_none() && thoughts.is_none() && tool.is_none() {
        return None;
    }
    let cached = get("cachedContentTokenCount").unwrap_or(0);
    let thoughts = thoughts.unwrap_or(0);
    Some(Usage {
        input: prompt.unwrap_or(0).saturating_sub(cached) + tool.unwrap_or(0),
        cache_read: cached,
        cache_write: 0,
        output: candidates.unwrap_or(0) + thoughts,
        reasoning: thoughts,
    })
}

/// G `finishReason` → C `finish_reason`, with the tool-presence rule.
fn finish_reason(reason: &str, saw_tool: bool) -> &'static str {
    if saw_tool {
        return "tool_calls";
    }
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ => "stop", // STOP, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, OTHER, …
    }
}

/// The refusal text for a prompt Gemini blocked before generating (`promptFeedback`).
fn block_message(g: &Value) -> Option<String> {
    let fb = g.get("promptFeedback")?;
    let reason = fb.get("blockReason").and_then(Value::as_str)?;
    let mut msg = format!("The prompt was blocked by the provider (blockReason: {reason}).");
    if let Some(extra) = fb
        .get("blockReasonMessage")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        msg.push(' ');
        msg.push_str(&redact(extra));
    }
    Some(msg)
}

fn tool_call(part: &Value, response_id: &str, k: u64, names: &ToolNames) -> Value {
    let fc = &part["functionCall"];
    json!({
        "id": tool_call_id(part, response_id, k),
        "type": "function",
        "function": {
            "name": client_name(names, fc["name"].as_str().unwrap_or("")),
            "arguments": input_to_args(&args_to_input(fc.get("args").unwrap_or(&Value::Null))),
        },
    })
}

/// A G `GenerateContentResponse` → C chat.completion.
pub fn response(g: &Value, client_model: &str, names: &ToolNames) -> Value {
    let response_id = g.get("responseId").and_then(Value::as_str).unwrap_or("");
    let cand = g.pointer("/candidates/0");
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for p in cand
        .and_then(|c| c.pointer("/content/parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if p.get("functionCall").is_some() {
            calls.push(tool_call(p, response_id, calls.len() as u64, names));
        } else if let Some(t) = p.get("text").and_then(Value::as_str) {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                reasoning.push_str(t);
            } else {
                text.push_str(t);
            }
        }
    }
    let blocked = if cand.is_none() {
        block_message(g)
    } else {
        None
    };
    let finish = if blocked.is_some() {
        "content_filter"
    } else {
        finish_reason(
            cand.and_then(|c| c.get("finishReason"))
                .and_then(Value::as_str)
                .unwrap_or("STOP"),
            !calls.is_empty(),
        )
    };
    let content = if blocked.is_some() || (text.is_empty() && !calls.is_empty()) {
        Value::Null
    } else {
        json!(text)
    };
    let mut message = json!({"role": "assistant", "content": content, "refusal": blocked});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    let usage = g
        .get("usageMetadata")
        .and_then(usage_from_metadata)
        .unwrap_or_default();
    let id = if response_id.is_empty() {
        format!("chatcmpl-{}", &crate::ids::generate_id("")[..16])
    } else {
        format!("chatcmpl-{}", safe_tool_id(response_id, ""))
    };
    json!({
        "id": id,
        "object": "chat.completion",
        "created": crate::clock::now_secs(),
        "model": client_model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage_to_openai(&usage),
    })
}

/// A G `error` object (HTTP body or in-stream) → error kind, and a status for kinds whose
/// default status would misreport it.
fn error_kind(e: &Value) -> (ErrorKind, Option<u16>) {
    let code = e.get("code").and_then(Value::as_u64);
    match (e.get("status").and_then(Value::as_str).unwrap_or(""), code) {
        ("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE", _) | (_, Some(400)) => {
            (ErrorKind::InvalidRequest, None)
        }
        ("UNAUTHENTICATED", _) | (_, Some(401)) => (ErrorKind::Authentication, None),
        ("PERMISSION_DENIED", _) | (_, Some(403)) => (ErrorKind::PermissionDenied, None),
        ("NOT_FOUND", _) | (_, Some(404)) => (ErrorKind::NotFound, None),
        ("RESOURCE_EXHAUSTED", _) | (_, Some(429)) => (ErrorKind::RateLimited, None),
        ("UNAVAILABLE", _) | (_, Some(503)) => (ErrorKind::Unavailable, None),
        ("DEADLINE_EXCEEDED", _) | (_, Some(504)) => (ErrorKind::UpstreamTimeout, None),
        _ => (ErrorKind::Upstream, Some(500)),
    }
}

/// A G error body (`{"error":{code,message,status}}`) answered with HTTP `status` → a
/// [`GatewayError`] keeping that status. Context-window overflow gets the wording clients key
/// their recovery on (E14).
pub fn error_from_body(status: u16, body: &Value) -> GatewayError {
    let e = body.get("error").unwrap_or(&Value::Null);
    let raw = e.get("message").and_then(Value::as_str).unwrap_or("");
    let (kind, _) = error_kind(e);
    let mut err = GatewayError::new(kind, String::new()).with_status(status);
    err.message = if raw.is_empty() {
        format!("The provider answered HTTP {status}.")
    } else if raw.contains("input token count") && raw.contains("exceeds the maximum") {
        let nums: Vec<u64> = raw
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        err = err.with_code("context_length_exceeded");
        match nums[..] {
            [used, max, ..] => format!("prompt is too long: {used} tokens > {max} maximum"),
            _ => format!("prompt is too long: {}", redact(raw)),
        }
    } else {
        redact(raw)
    };
    err
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Open,
    /// The finish chunk went out; usage and `[DONE]` wait for the end of the upstream body
    /// (Gemini has no terminator, and a later chunk may still update the usage).
    Finishing,
    Done,
    Failed,
}

/// G stream (`?alt=sse`) → C client chunks (§7 streaming, §3.7).
#[derive(Debug)]
pub struct GeminiToChatStream {
    parser: SseParser,
    phase: Phase,
    id: String,
    created: u64,
    client_model: String,
    include_usage: bool,
    names: ToolNames,
    tool_count: u64,
    usage: Usage,
    saw_usage: bool,
}

impl GeminiToChatStream {
    pub fn new(client_model: &str, include_usage: bool, names: ToolNames) -> Self {
        GeminiToChatStream {
            parser: SseParser::new(),
            phase: Phase::Init,
            id: format!("chatcmpl-{}", &crate::ids::generate_id("")[..16]),
            created: crate::clock::now_secs(),
            client_model: client_model.to_string(),
            include_usage,
            names,
            tool_count: 0,
            usage: Usage::default(),
            saw_usage: false,
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

    fn start(&mut self, out: &mut BytesMut) {
        if self.phase == Phase::Init {
            self.phase = Phase::Open;
            self.chunk(
                out,
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            );
        }
    }

    fn on_event(&mut self, ev: SseEvent, out: &mut BytesMut) {
        if matches!(self.phase, Phase::Done | Phase::Failed) || ev.data.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        if let Some(e) = v.get("error").filter(|e| e.is_object()) {
            let msg = redact(e["message"].as_str().unwrap_or("upstream error"));
            let (kind, status) = error_kind(e);
            self.fail_with(out, kind, &msg, status);
            return;
        }
        if let Some(u) = v.get("usageMetadata").and_then(usage_from_metadata) {
            self.usage = u; // cumulative: the last one wins
            self.saw_usage = true;
        }
        if self.phase == Phase::Finishing {
            return; // nothing may follow the finish chunk but usage
        }
        let response_id = v.get("responseId").and_then(Value::as_str).unwrap_or("");
        let Some(cand) = v.pointer("/candidates/0") else {
            if let Some(msg) = block_message(&v) {
                self.start(out);
                self.chunk(out, json!({ "refusal": msg }), Value::Null);
                self.chunk(out, json!({}), json!("content_filter"));
                self.phase = Phase::Finishing;
            } else if v.is_object() {
                self.start(out);
            }
            return;
        };
        self.start(out);
        for p in cand
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if p.get("functionCall").is_some() {
                let k = self.tool_count;
                self.tool_count += 1;
                let mut call = tool_call(p, response_id, k, &self.names);
                call["index"] = json!(k);
                self.chunk(out, json!({ "tool_calls": [call] }), Value::Null);
            } else if let Some(t) = p
                .get("text")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    self.chunk(out, json!({ "reasoning_content": t }), Value::Null);
                } else {
                    self.chunk(out, json!({ "content": t }), Value::Null);
                }
            }
        }
        if let Some(reason) = cand.get("finishReason").and_then(Value::as_str) {
            let finish = finish_reason(reason, self.tool_count > 0);
            self.chunk(out, json!({}), json!(finish));
            self.phase = Phase::Finishing;
        }
    }
}

impl StreamTranscoder for GeminiToChatStream {
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
            Phase::Finishing => self.complete(out),
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
        if self.phase == Phase::Finishing {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Result<Value, GatewayError> {
        req_for(v, "gemini-2.5-flash")
    }

    fn req_for(v: Value, model: &str) -> Result<Value, GatewayError> {
        request(
            v.as_object().unwrap(),
            &RequestOptions {
                upstream_model: model.into(),
                stream: false,
            },
        )
    }

    fn run(input: &[&[u8]], include_usage: bool) -> String {
        let mut t = GeminiToChatStream::new("gpt-client", include_usage, ToolNames::default())
            .with_id("chatcmpl-t", 1);
        let mut out = BytesMut::new();
        for p in input {
            t.feed(p, &mut out);
        }
        t.finish(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// The data payloads of a C stream, JSON-parsed (`[DONE]` as a string).
    fn datas(s: &str) -> Vec<Value> {
        s.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap_or(json!(d)))
            .collect()
    }

    fn sse(events: &[Value]) -> String {
        events
            .iter()
            .map(|e| format!("data: {e}\r\n\r\n"))
            .collect()
    }

    const SIG: &str = "CiQBjz1rX7c0a9v+/Zq1YWJjZGVmZ2hpamtsbW5vcA==";

    #[test]
    fn request_maps_roles_system_and_generation_config() {
        let g = req(json!({"model": "gpt-x", "user": "alice", "store": true, "logprobs": true, "presence_penalty": 0.5,
            "temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "max_completion_tokens": 100, "stop": "END", "seed": 7,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "no emoji"}]},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello", "reasoning_content": "dropped"},
                {"role": "user", "content": [{"type": "text", "text": "again"}]}]}))
        .unwrap();
        assert_eq!(
            g["systemInstruction"],
            json!({"parts": [{"text": "be brief"}, {"text": "no emoji"}]})
        );
        assert_eq!(
            g["contents"],
            json!([{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"text": "hello"}]},
                   {"role": "user", "parts": [{"text": "again"}]}])
        );
        assert_eq!(
            g["generationConfig"],
            json!({"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 100, "stopSequences": ["END"], "seed": 7})
        );
        for k in [
            "model",
            "user",
            "store",
            "messages",
            "stream",
            "stream_options",
        ] {
            assert!(g.get(k).is_none(), "{k} leaked");
        }
        let g = req(json!({"stop": ["a", "b", "c", "d", "e", "f"], "messages": [{"role": "user", "content": "x"}]})).unwrap();
        assert_eq!(
            g["generationConfig"]["stopSequences"],
            json!(["a", "b", "c", "d", "e"])
        );
    }

    #[test]
    fn consecutive_same_role_turns_merge() {
        let g = req(json!({"messages": [
            {"role": "user", "content": "one"}, {"role": "user", "content": "two"},
            {"role": "assistant", "content": "a"}, {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
            {"role": "user", "content": ""}, {"role": "user", "content": "three"}]}))
        .unwrap();
        assert_eq!(
            g["contents"],
            json!([{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
                   {"role": "model", "parts": [{"text": "a"}, {"text": "b"}]},
                   {"role": "user", "parts": [{"text": "three"}]}])
        );
    }

    #[test]
    fn later_system_messages_become_user_text() {
        let g = req(json!({"messages": [{"role": "system", "content": "first"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"}, {"role": "system", "content": "be formal"}, {"role": "user", "content": "again"},
            {"role": "developer", "content": "trailing"}]}))
        .unwrap();
        assert_eq!(g["systemInstruction"]["parts"], json!([{"text": "first"}]));
        let last = &g["contents"][2];
        assert_eq!(last["role"], "user");
        assert_eq!(
            last["parts"],
            json!([{"text": "<system-reminder>\nbe formal\n</system-reminder>"}, {"text": "again"},
                   {"text": "<system-reminder>\ntrailing\n</system-reminder>"}])
        );
        assert!(req(json!({"messages": [{"role": "system", "content": "only"}]})).is_err());
    }

    #[test]
    fn images_files_and_audio() {
        let g = req(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.JPG?x=1", "detail": "high"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]}))
        .unwrap();
        assert_eq!(
            g["contents"][0]["parts"],
            json!([{"text": "see"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                   {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a/cat.JPG?x=1"}},
                   {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                   {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}])
        );
        for bad_part in [
            json!({"type": "image_url", "image_url": {"url": "https://example.com/image"}}),
            json!({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}),
            json!({"type": "file", "file": {"file_id": "file-1"}}),
        ] {
            let e =
                req(json!({"messages": [{"role": "user", "content": [bad_part]}]})).unwrap_err();
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn tools_and_tool_choice() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather", "strict": true,
            "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "noargs"}}, {"type": "custom", "custom": {"name": "patch"}}]);
        let user = json!([{"role": "user", "content": "hi"}]);
        let g =
            req(json!({"tools": tools, "messages": user, "parallel_tool_calls": false})).unwrap();
        assert_eq!(
            g["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather", "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "noargs"}]}])
        );
        assert!(g.get("toolConfig").is_none());
        for (choice, want) in [
            (json!("auto"), json!({"mode": "AUTO"})),
            (json!("none"), json!({"mode": "NONE"})),
            (json!("required"), json!({"mode": "ANY"})),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "noargs"}}]}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["noargs"]}),
            ),
        ] {
            let g = req(json!({"tools": tools, "tool_choice": choice, "messages": user})).unwrap();
            assert_eq!(g["toolConfig"], json!({"functionCallingConfig": want}));
        }
        // no tools: no toolConfig even when tool_choice is set
        let g = req(json!({"tool_choice": "required", "messages": user})).unwrap();
        assert!(g.get("toolConfig").is_none() && g.get("tools").is_none());
    }

    #[test]
    fn long_and_leading_digit_tool_names_round_trip() {
        let long =
            "mcp__plugin_github_enterprise_server__list_pull_request_review_comments_for_repo";
        let c = json!({"tools": [{"type": "function", "function": {"name": long}}, {"type": "function", "function": {"name": "3d_render"}}],
            "tool_choice": {"type": "function", "function": {"name": "3d_render"}},
            "messages": [{"role": "user", "content": "hi"}]});
        let g = req(c.clone()).unwrap();
        let decls = g["tools"][0]["functionDeclarations"].as_array().unwrap();
        let up_long = decls[0]["name"].as_str().unwrap().to_string();
        assert!(up_long.len() <= 64 && up_long != long);
        assert_eq!(decls[1]["name"], "tg_3d_render");
        assert_eq!(
            g["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"],
            json!(["tg_3d_render"])
        );
        let names = tool_names(c.as_object().unwrap());
        let r = response(
            &json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": up_long, "args": {}}}, {"functionCall": {"name": "tg_3d_render", "args": {"x": 1}}}]}, "finishReason": "STOP"}]}),
            "m",
            &names,
        );
        let calls = r["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls[0]["function"]["name"], long);
        assert_eq!(calls[1]["function"]["name"], "3d_render");
        assert_eq!(calls[0]["function"]["arguments"], "{}");
        assert_eq!(calls[1]["function"]["arguments"], "{\"x\":1}");
    }

    #[test]
    fn tool_messages_become_function_responses_named_from_the_call() {
        let g = req(json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
            {"role": "user", "content": "and?"},
            {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "cold"}]}]}))
        .unwrap();
        assert_eq!(
            g["contents"][1],
            json!({"role": "model", "parts": [{"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                {"functionCall": {"name": "get_time", "args": {}}}]})
        );
        assert_eq!(
            g["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
                {"functionResponse": {"name": "get_weather", "response": {"result": "cold"}}},
                {"text": "and?"}]})
        );
        assert_eq!(g["contents"].as_array().unwrap().len(), 3);
        let e = req(json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}]})).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.param.as_deref(), Some("messages[1].tool_call_id"));
    }

    #[test]
    fn unanswered_tool_calls_get_placeholder_results() {
        let g = req(json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "assistant", "content": "never mind"},
            {"role": "user", "content": "ok"}]}))
        .unwrap();
        let roles: Vec<&str> = g["contents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "model", "user", "model", "user"]);
        assert_eq!(
            g["contents"][2]["parts"],
            json!([{"functionResponse": {"name": "f", "response": {"result": "[no result]"}}}])
        );
    }

    #[test]
    fn thought_signature_round_trips_through_the_tool_call_id() {
        let g = json!({"responseId": "r1", "candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": SIG},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]}, "finishReason": "STOP"}]});
        let c = response(&g, "m", &ToolNames::default());
        let calls = c["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .clone();
        let id0 = calls[0]["id"].as_str().unwrap().to_string();
        let id1 = calls[1]["id"].as_str().unwrap().to_string();
        assert!(id0.starts_with("call_") && id0.ends_with("_0"), "{id0}");
        assert_ne!(id0, id1);
        for id in [&id0, &id1] {
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{id}"
            );
        }
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        // the client echoes the ids back
        let back = req(json!({"messages": [{"role": "user", "content": "weather"},
            {"role": "assistant", "content": null, "tool_calls": calls},
            {"role": "tool", "tool_call_id": id0, "content": "cold"}, {"role": "tool", "tool_call_id": id1, "content": "warm"}]}))
        .unwrap();
        let parts = back["contents"][1]["parts"].as_array().unwrap();
        assert_eq!(parts[0]["thoughtSignature"], SIG);
        assert_eq!(
            parts[0]["functionCall"],
            json!({"name": "get_weather", "args": {"city": "Oslo"}})
        );
        assert!(parts[1].get("thoughtSignature").is_none());
        assert_eq!(
            back["contents"][2]["parts"][1]["functionResponse"]["response"]["result"],
            "warm"
        );
        // an unpadded signature is the same bytes
        assert_eq!(signature_from_id(&id0).unwrap(), SIG);
        assert_eq!(
            decode_signature(SIG.trim_end_matches('=')),
            decode_signature(SIG)
        );
    }

    #[test]
    fn ids_without_signature() {
        let part = json!({"functionCall": {"name": "f", "args": {"a": 1}}});
        let a = tool_call_id(&part, "resp", 0);
        assert_eq!(a, tool_call_id(&part, "resp", 0), "deterministic");
        assert_ne!(a, tool_call_id(&part, "resp", 1));
        assert_ne!(a, tool_call_id(&part, "other", 0));
        assert!(a.starts_with("call_") && a.len() == 29);
        assert_eq!(signature_from_id(&a), None);
        let with_id = json!({"functionCall": {"id": "fc-7", "name": "f", "args": {}}});
        assert_eq!(tool_call_id(&with_id, "resp", 0), "fc-7");
        let odd = json!({"functionCall": {"id": "functions.f:0", "name": "f"}});
        assert!(tool_call_id(&odd, "", 0).starts_with("call_"));
        // other providers' ids never carry a signature
        for id in [
            "call_abc_1",
            "call_0_1",
            "toolu_01ABC",
            "call_Xyz123",
            "call_!!!_0",
        ] {
            assert_eq!(signature_from_id(id), None, "{id}");
        }
    }

    #[test]
    fn gemini_3_gets_a_placeholder_signature_when_the_id_lost_it() {
        let msgs = json!([{"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                                               {"id": "toolu_2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "a"}, {"role": "tool", "tool_call_id": "toolu_2", "content": "b"}]);
        let g = req_for(json!({"messages": msgs}), "gemini-3-pro-preview").unwrap();
        let parts = &g["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], SKIP_SIGNATURE);
        assert!(parts[1].get("thoughtSignature").is_none());
        let g = req_for(json!({"messages": msgs}), "gemini-2.5-flash").unwrap();
        assert!(g["contents"][1]["parts"][0]
            .get("thoughtSignature")
            .is_none());
        // a real signature is never overwritten
        let sig_id = format!(
            "call_{}_0",
            URL_SAFE_NO_PAD.encode(STANDARD.decode(SIG).unwrap())
        );
        let g = req_for(json!({"messages": [{"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [{"id": sig_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": sig_id, "content": "a"}]}), "models/gemini-3-flash").unwrap();
        assert_eq!(g["contents"][1]["parts"][0]["thoughtSignature"], SIG);
    }

    #[test]
    fn n_response_format_and_reasoning_effort() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let e = req(json!({"n": 2, "messages": user})).unwrap_err();
        assert_eq!((e.status(), e.param.as_deref()), (400, Some("n")));
        assert!(req(json!({"n": 1, "messages": user})).is_ok());
        let g = req(json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "o", "strict": true,
            "schema": {"$schema": "x", "type": "object", "properties": {"a": {"type": "integer"}}}}}})).unwrap();
        assert_eq!(
            g["generationConfig"],
            json!({"responseMimeType": "application/json", "responseJsonSchema": {"type": "object", "properties": {"a": {"type": "integer"}}}})
        );
        let g = req(json!({"messages": user, "response_format": {"type": "json_object"}})).unwrap();
        assert_eq!(
            g["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        let g = req(json!({"messages": user, "response_format": {"type": "text"}})).unwrap();
        assert!(g.get("generationConfig").is_none());
        for (model, effort, want) in [
            (
                "gemini-2.5-flash",
                "medium",
                Some(json!({"thinkingBudget": 8192, "includeThoughts": true})),
            ),
            (
                "gemini-2.5-flash",
                "low",
                Some(json!({"thinkingBudget": 1024, "includeThoughts": true})),
            ),
            (
                "gemini-2.5-flash",
                "minimal",
                Some(json!({"thinkingBudget": 512, "includeThoughts": true})),
            ),
            (
                "gemini-2.5-flash",
                "high",
                Some(json!({"thinkingBudget": 24576, "includeThoughts": true})),
            ),
            (
                "gemini-2.5-flash",
                "none",
                Some(json!({"thinkingBudget": 0})),
            ),
            (
                "gemini-2.5-pro",
                "none",
                Some(json!({"thinkingBudget": 128})),
            ),
            (
                "gemini-2.5-pro",
                "xhigh",
                Some(json!({"thinkingBudget": 32768, "includeThoughts": true})),
            ),
            (
                "gemini-3-pro-preview",
                "low",
                Some(json!({"thinkingLevel": "low", "includeThoughts": true})),
            ),
            (
                "gemini-3-pro-preview",
                "medium",
                Some(json!({"thinkingLevel": "high", "includeThoughts": true})),
            ),
            (
                "gemini-3-flash",
                "high",
                Some(json!({"thinkingLevel": "high", "includeThoughts": true})),
            ),
            ("gemini-2.0-flash", "high", None),
            ("gemini-2.5-flash", "bogus", None),
        ] {
            let g = req_for(json!({"messages": user, "reasoning_effort": effort}), model).unwrap();
            assert_eq!(
                g.pointer("/generationConfig/thinkingConfig").cloned(),
                want,
                "{model} {effort}"
            );
        }
    }

    #[test]
    fn response_text_reasoning_and_usage() {
        let g = json!({"responseId": "abc", "modelVersion": "gemini-2.5-flash", "candidates": [{"index": 0, "content": {"role": "model", "parts": [
            {"text": "Let me think.", "thought": true}, {"text": "Hello"}, {"text": " world", "thoughtSignature": SIG}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 7, "thoughtsTokenCount": 20,
                              "toolUsePromptTokenCount": 5, "totalTokenCount": 132}});
        let c = response(&g, "gpt-client", &ToolNames::default());
        assert_eq!(c["id"], "chatcmpl-abc");
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["model"], "gpt-client");
        let msg = &c["choices"][0]["message"];
        assert_eq!(msg["content"], "Hello world");
        assert_eq!(msg["reasoning_content"], "Let me think.");
        assert_eq!(msg["refusal"], Value::Null);
        assert!(msg.get("tool_calls").is_none());
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            c["usage"],
            json!({"prompt_tokens": 105, "completion_tokens": 27, "total_tokens": 132,
                   "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 20}})
        );
    }

    #[test]
    fn blocked_prompt_is_a_content_filter_refusal() {
        let g = json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}, "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}});
        let c = response(&g, "m", &ToolNames::default());
        let msg = &c["choices"][0]["message"];
        assert_eq!(c["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(msg["content"], Value::Null);
        assert!(
            msg["refusal"].as_str().unwrap().contains("blocked")
                && msg["refusal"].as_str().unwrap().contains("SAFETY")
        );
        assert_eq!(c["usage"]["prompt_tokens"], 9);
        let s = run(&[sse(&[g]).as_bytes()], true);
        let d = datas(&s);
        assert_eq!(
            d[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert!(d[1]["choices"][0]["delta"]["refusal"]
            .as_str()
            .unwrap()
            .contains("SAFETY"));
        assert_eq!(d[2]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(d[3]["usage"]["prompt_tokens"], 9);
        assert_eq!(d[4], json!("[DONE]"));
    }

    #[test]
    fn finish_reasons() {
        for (g, want) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("IMAGE_SAFETY", "content_filter"),
            ("MALFORMED_FUNCTION_CALL", "stop"),
            ("UNEXPECTED_TOOL_CALL", "stop"),
            ("OTHER", "stop"),
            ("FINISH_REASON_UNSPECIFIED", "stop"),
        ] {
            assert_eq!(finish_reason(g, false), want, "{g}");
        }
        assert_eq!(finish_reason("STOP", true), "tool_calls");
        let c = response(
            &json!({"candidates": [{"content": {"parts": [{"text": "Once upon"}]}, "finishReason": "MAX_TOKENS"}]}),
            "m",
            &ToolNames::default(),
        );
        assert_eq!(c["choices"][0]["finish_reason"], "length");
        let c = response(
            &json!({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL"}]}),
            "m",
            &ToolNames::default(),
        );
        assert_eq!(
            (
                c["choices"][0]["finish_reason"].as_str(),
                c["choices"][0]["message"]["content"].as_str()
            ),
            (Some("stop"), Some(""))
        );
    }

    #[test]
    fn usage_metadata() {
        assert_eq!(usage_from_metadata(&json!({})), None);
        assert_eq!(
            usage_from_metadata(&json!({"promptTokenCount": 10, "candidatesTokenCount": 3})),
            Some(Usage {
                input: 10,
                cache_read: 0,
                cache_write: 0,
                output: 3,
                reasoning: 0
            })
        );
        let u = usage_from_metadata(&json!({"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 7,
            "thoughtsTokenCount": 20, "toolUsePromptTokenCount": 5})).unwrap();
        assert_eq!(
            u,
            Usage {
                input: 45,
                cache_read: 60,
                cache_write: 0,
                output: 27,
                reasoning: 20
            }
        );
        assert_eq!((u.prompt_total(), u.total()), (105, 132));
    }

    #[test]
    fn paths() {
        assert_eq!(
            path_for("gemini-2.5-flash", false),
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            path_for("models/gemini-2.5-flash", true),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            path_for("we ird/x:y?", false),
            "/v1beta/models/we%20ird%2Fx%3Ay%3F:generateContent"
        );
        assert_eq!(
            path_for("tunedModels/my-model", false),
            "/v1beta/tunedModels/my-model:generateContent"
        );
    }

    #[test]
    fn error_bodies() {
        let e = error_from_body(
            400,
            &json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}}),
        );
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.message,
            "prompt is too long: 1200000 tokens > 1048576 maximum"
        );
        assert_eq!(e.code, Some("context_length_exceeded"));
        let e = error_from_body(
            429,
            &json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota for key AIzaSyABCDEFGH"}}),
        );
        assert_eq!((e.kind, e.status()), (ErrorKind::RateLimited, 429));
        assert!(!e.message.contains("AIza"));
        let e = error_from_body(500, &json!({}));
        assert_eq!(e.message, "The provider answered HTTP 500.");
    }

    fn text_stream() -> String {
        sse(&[
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Thinking…", "thought": true}]}}], "responseId": "r", "usageMetadata": {"promptTokenCount": 12}}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Héllo"}]}}], "responseId": "r"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " there"}]}, "finishReason": "STOP"}], "responseId": "r",
                   "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 3, "thoughtsTokenCount": 4, "totalTokenCount": 19}}),
        ])
    }

    #[test]
    fn stream_text_reasoning_and_usage() {
        let s = run(&[text_stream().as_bytes()], true);
        let d = datas(&s);
        assert_eq!(d.len(), 7);
        for c in &d[..5] {
            assert_eq!(c["id"], "chatcmpl-t");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "gpt-client");
            assert_eq!(c["created"], 1);
            assert_eq!(c["usage"], Value::Null);
            assert!(c.get("usage").is_some());
        }
        assert_eq!(
            d[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(
            d[1]["choices"][0]["delta"],
            json!({"reasoning_content": "Thinking…"})
        );
        assert_eq!(d[2]["choices"][0]["delta"], json!({"content": "Héllo"}));
        assert_eq!(d[3]["choices"][0]["delta"], json!({"content": " there"}));
        assert_eq!(
            d[4]["choices"][0],
            json!({"index": 0, "delta": {}, "finish_reason": "stop"})
        );
        assert_eq!(d[5]["choices"], json!([]));
        assert_eq!(d[5]["usage"]["completion_tokens"], 7);
        assert_eq!(
            d[5]["usage"]["completion_tokens_details"]["reasoning_tokens"],
            4
        );
        assert_eq!(d[6], json!("[DONE]"));
        // without include_usage: no usage fields, no usage chunk
        let d = datas(&run(&[text_stream().as_bytes()], false));
        assert_eq!(d.len(), 6);
        assert!(d[..5].iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn stream_output_does_not_depend_on_splits() {
        let input = text_stream() + &sse(&[]);
        let bytes = input.as_bytes();
        let whole = run(&[bytes], true);
        for i in 0..=bytes.len() {
            assert_eq!(
                run(&[&bytes[..i], &bytes[i..]], true),
                whole,
                "split at {i}"
            );
        }
        let one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&one, true), whole);
    }

    #[test]
    fn stream_function_calls() {
        let input = sse(&[
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking."}]}}], "responseId": "r9"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": SIG},
                {"functionCall": {"name": "list", "args": {}}}]}, "finishReason": "STOP"}], "responseId": "r9",
                   "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 10, "totalTokenCount": 60}}),
        ]);
        let d = datas(&run(&[input.as_bytes()], false));
        let tc0 = &d[2]["choices"][0]["delta"]["tool_calls"][0];
        let tc1 = &d[3]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(tc0["index"], 0);
        assert_eq!(tc0["type"], "function");
        assert_eq!(
            tc0["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"})
        );
        assert_eq!(
            signature_from_id(tc0["id"].as_str().unwrap()).as_deref(),
            Some(SIG)
        );
        assert_eq!(tc1["index"], 1);
        assert_eq!(tc1["function"], json!({"name": "list", "arguments": "{}"}));
        assert_eq!(
            tc1["id"].as_str().unwrap(),
            tool_call_id(
                &json!({"functionCall": {"name": "list", "args": {}}}),
                "r9",
                1
            )
        );
        assert_eq!(d[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(d[5], json!("[DONE]"));
        // the same ids as the non-streamed response
        let c = response(
            &json!({"responseId": "r9", "candidates": [{"content": {"parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": SIG},
            {"functionCall": {"name": "list", "args": {}}}]}, "finishReason": "STOP"}]}),
            "m",
            &ToolNames::default(),
        );
        assert_eq!(c["choices"][0]["message"]["tool_calls"][1]["id"], tc1["id"]);
        assert_eq!(c["choices"][0]["message"]["tool_calls"][0]["id"], tc0["id"]);
    }

    #[test]
    fn stream_max_tokens_and_safety_finish() {
        let input = sse(&[
            json!({"candidates": [{"content": {"parts": [{"text": "Once"}]}, "finishReason": "MAX_TOKENS"}]}),
        ]);
        let d = datas(&run(&[input.as_bytes()], false));
        assert_eq!(d[2]["choices"][0]["finish_reason"], "length");
        let input = sse(&[
            json!({"candidates": [{"finishReason": "SAFETY", "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": true}]}]}),
        ]);
        let d = datas(&run(&[input.as_bytes()], false));
        assert_eq!(d[1]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(d[2], json!("[DONE]"));
    }

    #[test]
    fn stream_truncation_and_errors() {
        // EOF without finishReason
        let input = sse(&[json!({"candidates": [{"content": {"parts": [{"text": "par"}]}}]})]);
        let mut t = GeminiToChatStream::new("m", true, ToolNames::default());
        let mut out = BytesMut::new();
        t.feed(input.as_bytes(), &mut out);
        t.finish(&mut out);
        assert!(!t.completed());
        let d = datas(std::str::from_utf8(&out).unwrap());
        assert_eq!(d.last().unwrap()["error"]["code"], "stream_truncated");
        assert!(!String::from_utf8_lossy(&out).contains("[DONE]"));
        // an empty body is truncated too
        let d = datas(&run(&[b""], true));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0]["error"]["code"], "stream_truncated");
        // in-band error after content
        let input = sse(&[
            json!({"candidates": [{"content": {"parts": [{"text": "a"}]}}]}),
            json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
            json!({"candidates": [{"content": {"parts": [{"text": "ignored"}]}, "finishReason": "STOP"}]}),
        ]);
        let s = run(&[input.as_bytes()], true);
        let d = datas(&s);
        assert_eq!(d.len(), 3);
        assert_eq!(d[2]["error"]["message"], "The model is overloaded.");
        assert_eq!(d[2]["error"]["type"], "server_error");
        assert!(!s.contains("ignored") && !s.contains("[DONE]"));
        let input = sse(&[
            json!({"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}),
        ]);
        let d = datas(&run(&[input.as_bytes()], false));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0]["error"]["type"], "rate_limit_error");
    }

    /// Anthropic clients are served through C: the chunks feed the C → A transcoder cleanly.
    #[test]
    fn stream_chains_into_the_anthropic_transcoder() {
        let input = sse(&[
            json!({"candidates": [{"content": {"parts": [{"text": "hmm", "thought": true}, {"text": "Checking."}]}}], "responseId": "r"}),
            json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "Bash", "args": {"command": "ls"}}, "thoughtSignature": SIG}]},
                   "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 30, "cachedContentTokenCount": 10, "candidatesTokenCount": 5}}),
        ]);
        let c = run(&[input.as_bytes()], true);
        let mut a =
            super::super::a2c::ChatToAnthropicStream::new("claude-client", 0, ToolNames::default());
        let mut out = BytesMut::new();
        a.feed(c.as_bytes(), &mut out);
        a.finish(&mut out);
        assert!(a.completed());
        let s = String::from_utf8(out.to_vec()).unwrap();
        let names: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .filter(|n| *n != "ping")
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let sig_id = tool_call_id(&json!({"thoughtSignature": SIG}), "", 0);
        assert!(
            s.contains(&format!("\"id\":\"{sig_id}\"")),
            "a short signature id survives H2"
        );
        assert!(s.contains("\"stop_reason\":\"tool_use\""));
        assert!(s.contains("\"input_tokens\":20") && s.contains("\"cache_read_input_tokens\":10"));
    }

    #[test]
    fn stream_fail_keepalive_usage_and_late_usage() {
        let mut t = GeminiToChatStream::new("m", true, ToolNames::default());
        let mut out = BytesMut::new();
        t.keepalive(&mut out);
        assert_eq!(&out[..], b": keep-alive\n\n");
        t.feed(sse(&[json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}}),
                     json!({"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2}})]).as_bytes(), &mut out);
        assert!(!t.completed());
        assert_eq!(t.usage().unwrap().output, 2, "the last usageMetadata wins");
        // connection drops after the finish chunk: the stream still ends normally
        t.fail("reset", &mut out);
        assert!(t.completed());
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(s.ends_with("data: [DONE]\n\n"));
        assert_eq!(
            datas(&s)
                .iter()
                .filter(|c| c["choices"] == json!([]))
                .count(),
            1
        );
        let before = out.len();
        t.keepalive(&mut out);
        t.finish(&mut out);
        assert_eq!(out.len(), before, "nothing after the end");
        // a failure mid-content is an error chunk
        let mut t = GeminiToChatStream::new("m", false, ToolNames::default());
        let mut out = BytesMut::new();
        t.feed(
            sse(&[json!({"candidates": [{"content": {"parts": [{"text": "a"}]}}]})]).as_bytes(),
            &mut out,
        );
        t.fail("reset", &mut out);
        assert!(!t.completed() && t.usage().is_none());
        assert!(String::from_utf8_lossy(&out).contains("upstream stream failed: reset"));
    }
}
