//! OpenAI Chat Completions → OpenAI Responses: a Chat answer (from a Chat provider, or an
//! Anthropic or Gemini one through Chat) for a Responses client, as a stream of Responses
//! events or as the response object. The rules are in docs/translation.md ("Whole
//! answers", "Stream lifecycle").
//!
//! The non-streamed response is produced by the stream writer itself (the completion is
//! replayed as chunks), so both shapes always agree.

use bytes::BytesMut;
use serde_json::{json, Value};

use super::chat_stream::completion_to_chunks;
use super::lifecycle::{open, Chunk, ClientStream, Events, Lifecycle, Next, Phase, Step};
use super::responses_to_chat::{ClientTool, ResponsesContext};
use super::shared::*;
use super::sse::{write_json, KEEPALIVE_COMMENT};
use super::{Format, Stamp, StreamTranscoder};
use crate::error::{ErrorKind, GatewayError};
use crate::meter::{usage_from_body, Usage};

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
pub fn response(c: &Value, ctx: &ResponsesContext, stamp: &Stamp) -> Value {
    let mut w = ChatToResponsesStream::new(ctx.clone(), stamp);
    let mut sink = BytesMut::new();
    w.feed(&completion_to_chunks(c, true), &mut sink);
    w.finish(&mut sink);
    let mut events = w.into_events();
    events
        .final_response
        .take()
        .unwrap_or_else(|| events.response_object("failed"))
}

/// The C answer (non-streamed) → the Responses event stream (E48).
pub fn response_to_events(c: &Value, ctx: &ResponsesContext, stamp: &Stamp) -> BytesMut {
    response_to_events_and_object(c, ctx, stamp).0
}

/// [`response_to_events`], and the response object its terminal event carries.
pub fn response_to_events_and_object(
    c: &Value,
    ctx: &ResponsesContext,
    stamp: &Stamp,
) -> (BytesMut, Option<Value>) {
    let mut w = ChatToResponsesStream::new(ctx.clone(), stamp);
    let mut out = BytesMut::new();
    w.feed(&completion_to_chunks(c, true), &mut out);
    w.finish(&mut out);
    (out, w.take_final_response())
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

/// Chat upstream chunks → Responses client events (docs/translation.md, "Stream
/// lifecycle"). After the finish reason, the terminal event waits for the usage chunk or
/// `[DONE]`.
pub type ChatToResponsesStream = Lifecycle<ChatToResponses>;

impl ChatToResponsesStream {
    pub fn new(ctx: ResponsesContext, stamp: &Stamp) -> Self {
        Lifecycle::wrap(ChatToResponses {
            ctx,
            id: format!("resp_{}", stamp.token),
            created: stamp.now,
            seq: 0,
            items: Vec::new(),
            open: None,
            calls: Vec::new(),
            finish: None,
            usage: Usage::default(),
            saw_usage: false,
            final_response: None,
        })
    }
}

/// The event mapping of [`ChatToResponsesStream`].
#[derive(Debug)]
pub struct ChatToResponses {
    ctx: ResponsesContext,
    id: String,
    created: u64,
    seq: u64,
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

impl ChatToResponses {
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
        write_json(out, Some(ty), &body);
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

    fn open_item(&mut self, out: &mut BytesMut, kind: ItemKind) -> usize {
        let prefix = match kind {
            ItemKind::Message { .. } => "msg_",
            ItemKind::Reasoning { .. } => "rs_",
            ItemKind::Call { .. } => "fc_",
        };
        // Items never interleave (E15): whatever is still open (a message, or a
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

    fn tool_fragment(&mut self, out: &mut BytesMut, tc: &Value) -> Result<(), GatewayError> {
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
                return Ok(()); // the name comes later (E17)
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
            return self.args(out, idx, &p.args);
        }
        match self.calls[pos].1 {
            Ok(idx) => self.args(out, idx, &args),
            Err(_) => Ok(()),
        }
    }

    fn args(&mut self, out: &mut BytesMut, idx: usize, delta: &str) -> Result<(), GatewayError> {
        if delta.is_empty() {
            return Ok(());
        }
        if self.items[idx].done {
            // A fragment for a call that already ended (E16): its item is final, so the
            // stream fails visibly rather than losing or misplacing the arguments.
            return Err(GatewayError::new(
                ErrorKind::Upstream,
                "upstream interleaved tool call fragments",
            )
            .with_code("server_error"));
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
        Ok(())
    }
}

impl ClientStream for ChatToResponses {
    fn start(&mut self, out: &mut BytesMut) {
        let r = self.response_object("in_progress");
        self.emit(out, "response.created", json!({"response": r.clone()}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn complete(&mut self, phase: &mut Phase, out: &mut BytesMut) {
        open(self, phase, out);
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
    }

    fn fail(&mut self, mut e: GatewayError, phase: &mut Phase, out: &mut BytesMut) {
        open(self, phase, out);
        if e.code == Some("stream_truncated") {
            e.code = Some("server_error"); // the code Codex knows for it
        }
        let r = self.response_object("in_progress");
        out.extend_from_slice(&e.responses_failed_event(self.seq, Some(r)));
        self.seq += 1;
    }

    fn keepalive(&mut self, phase: &mut Phase, out: &mut BytesMut) {
        // Codex's idle timer counts parsed events only: a comment alone would not do.
        out.extend_from_slice(KEEPALIVE_COMMENT);
        if *phase == Phase::Init {
            open(self, phase, out);
        } else {
            let r = self.response_object("in_progress");
            self.emit(out, "response.in_progress", json!({"response": r}));
        }
    }
}

impl Events for ChatToResponses {
    type Client = Self;

    fn client(&mut self) -> &mut Self {
        self
    }

    /// Without a finish reason first, the end of the body decides (truncation).
    fn on_done(&mut self, phase: Phase) -> Next {
        if phase == Phase::Finishing {
            Next::Complete
        } else {
            Next::Continue
        }
    }

    fn on_chunk(&mut self, c: Chunk, phase: &mut Phase, out: &mut BytesMut) -> Step {
        let v = c.data;
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
            return Err(GatewayError::new(kind, msg).with_code(code));
        }
        open(self, phase, out);
        if let Some(u) = usage_from_body(Format::Chat, v) {
            self.usage = u;
            self.saw_usage = true;
        }
        let Some(choice) = v.pointer("/choices/0") else {
            let whole = *phase == Phase::Finishing && self.saw_usage;
            return Ok(if whole {
                Next::Complete
            } else {
                Next::Continue
            });
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
        for tc in tool_call_deltas(d) {
            self.tool_fragment(out, tc)?;
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
            self.close_open(out);
            return Ok(Next::Finishing);
        }
        Ok(Next::Continue)
    }

    fn usage(&self) -> Option<Usage> {
        self.saw_usage.then_some(self.usage)
    }

    fn take_final_response(&mut self) -> Option<Value> {
        self.final_response.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::responses_to_chat::request;
    use crate::translate::responses_to_chat::tests::{opts, req};
    use crate::translate::sse::SseParser;

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
        let mut w = ChatToResponsesStream::new(ctx, &Stamp::new("test0000000000000000", 7));
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
        let r = response(
            &c,
            &ResponsesContext::new("client-model"),
            &Stamp::new("x", 1),
        );
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], "client-model");
        assert_eq!(r["output"][0]["content"][0]["text"], "hi");
        assert_eq!(r["output"][1]["type"], "function_call");
        assert_eq!(r["usage"]["total_tokens"], 7);
        let evs = events(&response_to_events(
            &c,
            &ResponsesContext::new("client-model"),
            &Stamp::new("x", 1),
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
            let mut w = ChatToResponsesStream::new(
                ResponsesContext::new("m"),
                &Stamp::new("x000000000000000000000", 1),
            );
            let mut out = BytesMut::new();
            w.feed(input.as_bytes(), &mut out);
            w.finish(&mut out);
            out
        };
        for step in [1, 3, 7, 64] {
            let mut w = ChatToResponsesStream::new(
                ResponsesContext::new("m"),
                &Stamp::new("x000000000000000000000", 1),
            );
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
        let mut w = ChatToResponsesStream::new(ResponsesContext::new("m"), &Stamp::new("x", 1));
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
