//! Answers an inference request: which endpoint it is, the user's last turn and tool, the
//! provider's events, and how they are written (with the stream faults).

use crate::faults::{write_stream, Fault};
use crate::gemini::{
    gemini_error, gemini_events, gemini_last, gemini_model, gemini_model_info, GeminiOpts,
};
use crate::http::{write_json, Head};
use crate::responses::{responses_events, responses_last};
use crate::{anthropic, anthropic::anthropic_events, openai, openai::chat_events, responses};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Chat,
    Messages,
    CountTokens,
    Responses,
    Embeddings,
    Moderations,
    Models,
    /// Gemini `POST .../models/{m}:generateContent`.
    GeminiGenerate,
    /// Gemini `POST .../models/{m}:streamGenerateContent` (`?alt=sse`: SSE, else a JSON array).
    GeminiStream,
    /// Gemini `POST .../models/{m}:countTokens`.
    GeminiCount,
    /// Gemini `GET /v1beta/models`.
    GeminiModels,
    /// Gemini `GET /v1beta/models/{m}`.
    GeminiModel,
    Unknown,
}

impl Kind {
    fn is_gemini(self) -> bool {
        matches!(
            self,
            Kind::GeminiGenerate
                | Kind::GeminiStream
                | Kind::GeminiCount
                | Kind::GeminiModels
                | Kind::GeminiModel
        )
    }
}

pub(crate) fn kind_of(method: &str, path: &str) -> Kind {
    let p = path.trim_end_matches('/');
    if let Some((model, action)) = gemini_model(p) {
        match (method, action) {
            ("POST", "generateContent") => return Kind::GeminiGenerate,
            ("POST", "streamGenerateContent") => return Kind::GeminiStream,
            ("POST", "countTokens") => return Kind::GeminiCount,
            ("GET", "") if p.contains("/v1beta/") && !model.is_empty() => return Kind::GeminiModel,
            _ => {}
        }
    }
    match method {
        "GET" if p.ends_with("/v1beta/models") => Kind::GeminiModels,
        "POST" if p.ends_with("/chat/completions") => Kind::Chat,
        "POST" if p.ends_with("/messages/count_tokens") => Kind::CountTokens,
        "POST" if p.ends_with("/messages") => Kind::Messages,
        "POST" if p.ends_with("/responses") => Kind::Responses,
        "POST" if p.ends_with("/embeddings") => Kind::Embeddings,
        "POST" if p.ends_with("/moderations") => Kind::Moderations,
        "GET" if p.ends_with("/models") => Kind::Models,
        _ => Kind::Unknown,
    }
}

/// Whether a request asks for a streamed answer (Gemini by path, the others by `stream`).
pub(crate) fn is_stream_request(path: &str, body: &[u8]) -> bool {
    path.contains(":streamGenerateContent")
        || serde_json::from_slice::<Value>(body)
            .is_ok_and(|v| v["stream"].as_bool().unwrap_or(false))
}

pub(crate) const TEXT: &str = "Hello from mock upstream!";

pub(crate) fn pieces(f: &Fault) -> Vec<String> {
    match f.pieces {
        Some(n) => (0..n).map(|_| "tok ".to_string()).collect(),
        None => f
            .text
            .as_deref()
            .unwrap_or(TEXT)
            .chars()
            .collect::<Vec<_>>()
            .chunks(4)
            .map(|c| c.iter().collect())
            .collect(),
    }
}

/// The text of the last user message, and whether it is a tool result.
pub(crate) fn last_user(req: &Value, kind: Kind) -> (String, bool, String) {
    let msgs = req["messages"].as_array().cloned().unwrap_or_default();
    // System and developer items may follow the user's turn (Claude Code): skip them.
    let Some(last) = msgs
        .iter()
        .rev()
        .find(|m| !matches!(m["role"].as_str(), Some("system" | "developer")))
    else {
        return (String::new(), false, String::new());
    };
    if kind == Kind::Chat && last["role"] == "tool" {
        let c = match &last["content"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        return (String::new(), true, c);
    }
    match &last["content"] {
        Value::String(s) => (s.clone(), false, String::new()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for b in blocks {
                if b["type"] == "tool_result" {
                    let c = match &b["content"] {
                        Value::String(s) => s.clone(),
                        Value::Array(a) => a
                            .iter()
                            .filter_map(|x| x["text"].as_str())
                            .collect::<Vec<_>>()
                            .join(""),
                        v => v.to_string(),
                    };
                    return (String::new(), true, c);
                }
                if let Some(t) = b["text"].as_str() {
                    text.push_str(t);
                }
            }
            (text, false, String::new())
        }
        _ => (String::new(), false, String::new()),
    }
}

/// `name`, when the request offers a function of that name.
pub(crate) fn offered(req: &Value, kind: Kind, name: &str) -> Option<String> {
    tool_names(req, kind)?.into_iter().find(|n| n == name)
}

/// The tool to call: a shell tool when one is declared (Claude Code's `Bash`, Codex's
/// `exec_command`), else the first with a name (Responses built-ins such as `web_search`
/// have none).
pub(crate) fn first_tool(req: &Value, kind: Kind) -> Option<String> {
    let names = tool_names(req, kind)?;
    names
        .iter()
        .find(|n| *n == "Bash" || *n == "exec_command")
        .or(names.first())
        .cloned()
}

/// The names of the functions a request declares.
fn tool_names(req: &Value, kind: Kind) -> Option<Vec<String>> {
    let tools = req["tools"].as_array()?;
    let names: Vec<String> = if kind.is_gemini() {
        tools
            .iter()
            .filter_map(|t| {
                t["functionDeclarations"]
                    .as_array()
                    .or(t["function_declarations"].as_array())
            })
            .flatten()
            .filter_map(|d| d["name"].as_str().map(String::from))
            .collect()
    } else {
        tools
            .iter()
            .filter_map(|t| {
                let n = if kind == Kind::Chat {
                    t["function"]["name"].as_str().or(t["name"].as_str())
                } else {
                    t["name"].as_str()
                };
                n.map(String::from)
            })
            .collect()
    };
    Some(names)
}

pub(crate) const TOOL_ARGS: &str = "{\"command\":\"echo hello-from-mock-tool\"}";
/// Codex's `exec_command` takes `cmd`, not `command`.
pub(crate) const EXEC_ARGS: &str = "{\"cmd\":\"echo hello-from-mock-tool\"}";

/// What the mock searches for with `web_search`.
pub(crate) const SEARCH_ARGS: &str = "{\"query\":\"tollgate mock search\"}";
/// The code the mock runs with `code_execution` (prints `42 ok`).
pub(crate) const CODE_ARGS: &str = "{\"code\":\"print(6 * 7, 'ok')\"}";

/// The JSON arguments the mock calls `name` with.
pub(crate) fn tool_args(name: &str) -> &'static str {
    match name {
        "exec_command" => EXEC_ARGS,
        "web_search" | "WebSearch" => SEARCH_ARGS,
        "code_execution" => CODE_ARGS,
        n if n.starts_with("mcp__") => mcp_args(n),
        _ => TOOL_ARGS,
    }
}

/// MCP tools (offered by tollgate as `mcp__<server>__<tool>`) of tests/mcp_servers: the
/// arguments each one takes.
fn mcp_args(name: &str) -> &'static str {
    match name.rsplit("__").next().unwrap_or_default() {
        "add" => "{\"a\":2,\"b\":3}",
        "echo" => "{\"text\":\"hello-from-mcp\"}",
        "nap" => "{\"seconds\":30}",
        "count_slowly" => "{\"n\":2}",
        _ => "{}",
    }
}

/// Rounds of tool results in a request's history (consecutive results are one round).
pub(crate) fn tool_rounds(req: &Value, kind: Kind) -> usize {
    let is_result = |v: &Value| -> bool {
        match kind {
            Kind::Chat => v["role"] == "tool",
            Kind::Responses => v["type"] == "function_call_output",
            k if k.is_gemini() => v["parts"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x.get("functionResponse").is_some())),
            _ => v["content"]
                .as_array()
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result")),
        }
    };
    let items = match kind {
        Kind::Responses => req["input"].as_array(),
        k if k.is_gemini() => req["contents"].as_array(),
        _ => req["messages"].as_array(),
    };
    let mut rounds = 0;
    let mut prev = false;
    for it in items.into_iter().flatten() {
        let r = is_result(it);
        if r && !prev {
            rounds += 1;
        }
        prev = r;
    }
    rounds
}

pub(crate) async fn respond(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    head: &Head,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    f: &Fault,
) -> std::io::Result<(u16, bool)> {
    let kind = kind_of(&head.method, path);
    if let Some(ms) = f.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let is_anthropic = matches!(kind, Kind::Messages | Kind::CountTokens);
    let is_gemini = kind.is_gemini() || path.contains("/v1beta/");
    if let Some(status) = f.status.filter(|s| *s >= 400) {
        let message = format!("mock injected {status}");
        let body = if is_anthropic {
            anthropic::error_body(status, &message)
        } else if is_gemini {
            gemini_error(status, &message)
        } else {
            openai::error_body(status, &message)
        };
        let extra: Vec<(&str, String)> = f
            .retry_after
            .map(|r| vec![("retry-after", r.to_string())])
            .unwrap_or_default();
        write_json(wr, status, &extra, &body.to_string()).await?;
        return Ok((status, true));
    }
    match f.fault.as_deref() {
        Some("close-before-response") => return Ok((0, false)),
        Some("invalid-json-200") => {
            wr.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"oops\": ").await?;
            return Ok((200, true));
        }
        _ => {}
    }
    if kind == Kind::Unknown {
        let message = format!("mock: no route {} {path}", head.method);
        let body = if is_gemini {
            gemini_error(404, &message)
        } else {
            openai::error_body(404, &message)
        };
        write_json(wr, 404, &[], &body.to_string()).await?;
        return Ok((404, true));
    }
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let model = if is_gemini {
        gemini_model(path).map(|(m, _)| m).unwrap_or("gemini-mock")
    } else {
        req["model"].as_str().unwrap_or("mock-model")
    }
    .to_string();
    let ps = pieces(f);
    let (p_tokens, c_tokens) = f
        .usage
        .unwrap_or(((body.len() as u64 / 4).max(1), ps.len() as u64));
    match kind {
        Kind::CountTokens => {
            write_json(
                wr,
                200,
                &[],
                &json!({"input_tokens": (body.len() / 4).max(1)}).to_string(),
            )
            .await?;
            return Ok((200, true));
        }
        Kind::GeminiCount => {
            write_json(
                wr,
                200,
                &[],
                &json!({"totalTokens": (body.len() / 4).max(1)}).to_string(),
            )
            .await?;
            return Ok((200, true));
        }
        Kind::Models => {
            write_json(wr, 200, &[], &openai::model_list().to_string()).await?;
            return Ok((200, true));
        }
        Kind::GeminiModels => {
            let m = gemini_model_info("gemini-2.5-flash", "Gemini 2.5 Flash");
            write_json(wr, 200, &[], &json!({"models": [m]}).to_string()).await?;
            return Ok((200, true));
        }
        Kind::GeminiModel => {
            write_json(wr, 200, &[], &gemini_model_info(&model, &model).to_string()).await?;
            return Ok((200, true));
        }
        Kind::Embeddings => {
            let v = openai::embeddings(&req, &model, p_tokens);
            write_json(wr, 200, &[], &v.to_string()).await?;
            return Ok((200, true));
        }
        Kind::Moderations => {
            write_json(wr, 200, &[], &openai::moderation(&model).to_string()).await?;
            return Ok((200, true));
        }
        _ => {}
    }
    let (user_text, is_tool_result, tool_output) = match kind {
        Kind::Responses => responses_last(&req),
        k if k.is_gemini() => gemini_last(&req),
        _ => last_user(&req, kind),
    };
    // Gemini-only triggers.
    let blocked = is_gemini && !is_tool_result && user_text.contains("BLOCK_ME");
    // `x-mock-tool-script: a,b+c`: the first turn calls tool `a`, the second (after one
    // round of tool results) calls `b` and `c` (several calls: Chat only), then text.
    let tool = match head.get("x-mock-tool-script") {
        Some(script) => script
            .split(',')
            .nth(tool_rounds(&req, kind))
            .filter(|t| !t.is_empty())
            .map(|t| {
                if kind == Kind::Chat {
                    t.to_string()
                } else {
                    t.split('+').next().unwrap_or(t).to_string()
                }
            }),
        None if !is_tool_result && !blocked && user_text.contains("CALL_TOOL") => {
            first_tool(&req, kind)
        }
        // Real clients and gateway tools: `SEARCH_WEB` (or Claude Code's WebSearch request)
        // calls `web_search` when it is offered, else Claude Code's own `WebSearch` tool;
        // `RUN_CODE` calls `code_execution`.
        None if !is_tool_result
            && (user_text.contains("SEARCH_WEB") || user_text.contains("Perform a web search")) =>
        {
            offered(&req, kind, "web_search").or_else(|| offered(&req, kind, "WebSearch"))
        }
        None if !is_tool_result && user_text.contains("RUN_CODE") => {
            offered(&req, kind, "code_execution")
        }
        None => None,
    };
    let text_pieces: Vec<String> = if is_tool_result {
        vec![format!("Tool said: {tool_output}")]
    } else {
        ps
    };
    // `x-mock-ignore-stream`: answer in one JSON body even when a stream was asked for.
    let stream = if is_gemini {
        kind == Kind::GeminiStream
    } else {
        req["stream"].as_bool().unwrap_or(false)
    } && head.get("x-mock-ignore-stream").is_none();
    let events = match kind {
        Kind::Chat => chat_events(
            &req,
            &model,
            &text_pieces,
            tool.as_deref(),
            stream,
            p_tokens,
            c_tokens,
        ),
        Kind::Messages => anthropic_events(
            &model,
            &text_pieces,
            tool.as_deref(),
            stream,
            p_tokens,
            c_tokens,
        ),
        Kind::Responses => responses_events(
            &req,
            &model,
            &text_pieces,
            tool.as_deref(),
            stream,
            p_tokens,
            c_tokens,
        ),
        _ => gemini_events(
            &model,
            &text_pieces,
            tool.as_deref(),
            GeminiOpts {
                think: !is_tool_result && user_text.contains("THINK"),
                blocked,
                safety_stop: tool.is_none() && !is_tool_result && user_text.contains("SAFETY_STOP"),
                ids: head.get("x-mock-gemini-ids").is_some(),
            },
            stream,
            p_tokens,
            c_tokens,
        ),
    };
    // Gemini streams are SSE only with `alt=sse`; without it, a streamed JSON array.
    let gemini_sse = query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    // `x-mock-provider-ratelimit`: the provider's own rate-limit header, in its convention.
    let provider_rl: Vec<(&str, String)> = match head.get("x-mock-provider-ratelimit") {
        None => Vec::new(),
        Some(_) if is_anthropic => vec![("anthropic-ratelimit-requests-remaining", "4999".into())],
        Some(_) => vec![("x-ratelimit-remaining-requests", "4999".into())],
    };
    let (content_type, events) = match events {
        Events::Json(v) => {
            write_json(wr, 200, &provider_rl, &v.to_string()).await?;
            return Ok((200, true));
        }
        Events::Stream(events) => ("text/event-stream", events),
        // Real Gemini ends its SSE lines with CRLF.
        Events::Chunks(chunks) if gemini_sse => (
            "text/event-stream",
            chunks
                .iter()
                .map(|c| format!("data: {c}\r\n\r\n"))
                .collect(),
        ),
        Events::Chunks(chunks) => {
            let mut ev: Vec<String> = chunks
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{}{c}", if i == 0 { "[" } else { ",\r\n" }))
                .collect();
            ev.push("]".to_string());
            ("application/json", ev)
        }
    };
    let extra: String = provider_rl
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    wr.write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncache-control: no-cache\r\n{extra}transfer-encoding: chunked\r\n\r\n").as_bytes()).await?;
    let split = head.get("x-mock-split-writes") != Some("0");
    // Gemini streams can be a single chunk: fail at the last one at the latest.
    let error_at = if is_gemini {
        3.min(events.len().saturating_sub(1))
    } else {
        3
    };
    let error_event = |i: usize| match kind {
        Kind::Messages => anthropic::ERROR_EVENT.to_string(),
        Kind::Responses => responses::failed_event(i, &model),
        _ if is_gemini => {
            let data = gemini_error(503, "mock overloaded");
            if gemini_sse {
                format!("data: {data}\r\n\r\n")
            } else {
                format!("{}{data}]", if i == 0 { "[" } else { ",\r\n" })
            }
        }
        _ => openai::ERROR_EVENT.to_string(),
    };
    write_stream(wr, &events, f, split, error_at, error_event).await
}

pub(crate) enum Events {
    Json(Value),
    /// Framed SSE events.
    Stream(Vec<String>),
    /// Gemini stream chunks, framed by the caller (SSE or JSON array).
    Chunks(Vec<Value>),
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The arguments in three pieces (as a streamed tool call delivers them).
pub(crate) fn arg_parts(a: &str) -> Vec<String> {
    // Cut at 10 and 25 bytes (a third and two thirds of shorter ones, such as MCP tools'
    // arguments); the arguments are ASCII.
    let (one, two) = if a.len() > 25 {
        (10, 25)
    } else {
        (a.len() / 3, 2 * a.len() / 3)
    };
    vec![
        a[..one].to_string(),
        a[one..two].to_string(),
        a[two..].to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[tokio::test]
    async fn chat_and_anthropic_exec_command_args() {
        let m = MockServer::start().await;
        let v = post(
            &m,
            "/v1/chat/completions",
            &[],
            json!({"model": "x",
            "tools": [{"type": "function", "function": {"name": "exec_command", "parameters": {}}}],
            "messages": [{"role": "user", "content": "CALL_TOOL"}]}),
        )
        .await
        .json();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            EXEC_ARGS
        );
        let v = post(
            &m,
            "/v1/messages",
            &[],
            json!({"model": "x", "max_tokens": 10,
            "tools": [{"name": "exec_command", "input_schema": {}}],
            "messages": [{"role": "user", "content": "CALL_TOOL"}]}),
        )
        .await
        .json();
        assert_eq!(
            v["content"][1]["input"],
            json!({"cmd": "echo hello-from-mock-tool"})
        );
        let v = post(
            &m,
            "/v1/messages",
            &[],
            json!({"model": "x", "max_tokens": 10,
            "tools": [{"name": "Bash", "input_schema": {}}],
            "messages": [{"role": "user", "content": "CALL_TOOL"}]}),
        )
        .await
        .json();
        assert_eq!(
            v["content"][1]["input"],
            json!({"command": "echo hello-from-mock-tool"})
        );
    }
}
