//! Google Gemini → OpenAI Chat Completions: a Gemini provider's answer (`generateContent`, or
//! the `?alt=sse` stream) for a Chat client; Anthropic and Responses clients get it through
//! Chat. Also Gemini's error bodies. The rules are in docs/translation.md ("Whole answers").

use bytes::BytesMut;
use serde_json::{json, Value};

use super::chat_stream::ChatWriter;
use super::chat_to_gemini::{client_name, tool_call_id};
use super::lifecycle::{open, Chunk, Events, Lifecycle, Next, Phase, Step};
use super::shared::*;
use super::{Format, Stamp};
use crate::error::{ErrorKind, GatewayError};
use crate::meter::{usage_from_body, Usage};

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

/// A Gemini `GenerateContentResponse` → a Chat `chat.completion` (the id is the upstream's
/// `responseId` when it has one, else made from the stamp's token).
pub fn response(g: &Value, client_model: &str, names: &ToolNames, stamp: &Stamp) -> Value {
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
    let usage = usage_from_body(Format::Gemini, g).unwrap_or_default();
    let id = if response_id.is_empty() {
        format!("chatcmpl-{}", stamp.token)
    } else {
        format!("chatcmpl-{}", safe_tool_id(response_id, ""))
    };
    json!({
        "id": id,
        "object": "chat.completion",
        "created": stamp.now,
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

/// Gemini upstream chunks (`?alt=sse`) → Chat client chunks (docs/translation.md, "Stream
/// lifecycle"). Gemini has no terminator: after the finish chunk, usage and `[DONE]`
/// wait for the end of the body, as a later chunk may still update the usage.
pub type GeminiToChatStream = Lifecycle<GeminiToChat>;

impl GeminiToChatStream {
    pub fn new(client_model: &str, include_usage: bool, names: ToolNames, stamp: &Stamp) -> Self {
        Lifecycle::wrap(GeminiToChat {
            w: ChatWriter::new(client_model, include_usage, stamp),
            names,
            tool_count: 0,
        })
    }
}

/// The event mapping of [`GeminiToChatStream`].
#[derive(Debug)]
pub struct GeminiToChat {
    w: ChatWriter,
    names: ToolNames,
    tool_count: u64,
}

impl Events for GeminiToChat {
    type Client = ChatWriter;

    fn client(&mut self) -> &mut ChatWriter {
        &mut self.w
    }

    fn on_chunk(&mut self, c: Chunk, phase: &mut Phase, out: &mut BytesMut) -> Step {
        if let Some(e) = c.data.get("error").filter(|e| e.is_object()) {
            let msg = redact(e["message"].as_str().unwrap_or("upstream error"));
            let (kind, status) = error_kind(e);
            let mut err = GatewayError::new(kind, msg);
            if let Some(s) = status {
                err = err.with_status(s);
            }
            return Err(err);
        }
        let v = c.data;
        if let Some(u) = usage_from_body(Format::Gemini, v) {
            self.w.usage = u; // cumulative: the last one wins
            self.w.saw_usage = true;
        }
        if *phase == Phase::Finishing {
            return Ok(Next::Continue); // nothing may follow the finish chunk but usage
        }
        let response_id = v.get("responseId").and_then(Value::as_str).unwrap_or("");
        let Some(cand) = v.pointer("/candidates/0") else {
            if let Some(msg) = block_message(v) {
                open(&mut self.w, phase, out);
                self.w.chunk(out, json!({ "refusal": msg }), Value::Null);
                self.w.chunk(out, json!({}), json!("content_filter"));
                return Ok(Next::Finishing);
            } else if v.is_object() {
                open(&mut self.w, phase, out);
            }
            return Ok(Next::Continue);
        };
        open(&mut self.w, phase, out);
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
                self.w
                    .chunk(out, json!({ "tool_calls": [call] }), Value::Null);
            } else if let Some(t) = p
                .get("text")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    self.w
                        .chunk(out, json!({ "reasoning_content": t }), Value::Null);
                } else {
                    self.w.chunk(out, json!({ "content": t }), Value::Null);
                }
            }
        }
        if let Some(reason) = cand.get("finishReason").and_then(Value::as_str) {
            let finish = finish_reason(reason, self.tool_count > 0);
            self.w.chunk(out, json!({}), json!(finish));
            return Ok(Next::Finishing);
        }
        Ok(Next::Continue)
    }

    fn usage(&self) -> Option<Usage> {
        self.w.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::chat_to_gemini::{path_for, signature_from_id};
    use crate::translate::StreamTranscoder;

    fn response(g: &Value, model: &str, names: &ToolNames) -> Value {
        super::response(g, model, names, &Stamp::new("t", 1))
    }

    fn usage_from_metadata(m: &Value) -> Option<Usage> {
        usage_from_body(Format::Gemini, &json!({ "usageMetadata": m }))
    }

    fn run(input: &[&[u8]], include_usage: bool) -> String {
        let mut t = GeminiToChatStream::new(
            "gpt-client",
            include_usage,
            ToolNames::default(),
            &Stamp::new("t", 1),
        );
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
        let mut t = GeminiToChatStream::new("m", true, ToolNames::default(), &Stamp::new("t", 1));
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
        let mut a = crate::translate::chat_to_anthropic::ChatToAnthropicStream::new(
            "claude-client",
            0,
            ToolNames::default(),
            &Stamp::new("t", 1),
        );
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
            "a short signature id survives the Anthropic id rule"
        );
        assert!(s.contains("\"stop_reason\":\"tool_use\""));
        assert!(s.contains("\"input_tokens\":20") && s.contains("\"cache_read_input_tokens\":10"));
    }

    #[test]
    fn stream_fail_keepalive_usage_and_late_usage() {
        let mut t = GeminiToChatStream::new("m", true, ToolNames::default(), &Stamp::new("t", 1));
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
        let mut t = GeminiToChatStream::new("m", false, ToolNames::default(), &Stamp::new("t", 1));
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
