//! OpenAI Chat Completions → Google Gemini `generateContent`: a Chat client's request (and
//! an Anthropic or Responses client's, through Chat) for a Gemini model, the path it goes to,
//! and the tool names and call ids both directions of the pair share. The rules are in
//! docs/translation.md ("Requests").
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
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

use super::shared::*;
use crate::error::GatewayError;

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

/// The tool names of an OpenAI request (same map as for Anthropic upstreams).
pub fn tool_names(c: &Map<String, Value>) -> ToolNames {
    super::chat_to_anthropic::tool_names(c)
}

/// A tool name for Gemini: also `^[A-Za-z_]` as the first character.
fn upstream_name(names: &ToolNames, name: &str) -> String {
    let s = names.to_upstream(name);
    if s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s
    } else {
        format!("{NAME_PREFIX}{s}")
    }
}

/// A Gemini tool name back to the client's.
pub(super) fn client_name(names: &ToolNames, name: &str) -> String {
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
pub(super) fn tool_call_id(part: &Value, response_id: &str, ordinal: u64) -> String {
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
    format!("call_{}", &hex(&Sha256::digest(seed.as_bytes()))[..24])
}

/// The thought signature a client tool call id carries (standard base64, as Gemini sent it).
pub(super) fn signature_from_id(id: &str) -> Option<String> {
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

/// The reasoning level for Gemini: `reasoning_effort` → `thinkingConfig` (2.5: budget, 3: level).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{gemini_to_chat, Stamp};

    fn response(g: &Value, model: &str, names: &ToolNames) -> Value {
        gemini_to_chat::response(g, model, names, &Stamp::new("t", 1))
    }

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
}
