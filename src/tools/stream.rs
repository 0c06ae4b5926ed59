//! The client's stream during a tool loop, in its grammar. It opens at once (Anthropic
//! `message_start`, Responses `response.created`, a Chat role chunk), carries the grammar's
//! keep-alives while turns and tools run, shows each round of tollgate's searches as native
//! blocks or items when it is done, renders the last turn's answer, and ends with the
//! native terminal events, or the native error event when the loop fails.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::turns::ToolRun;
use crate::error::GatewayError;
use crate::translate::chat_stream::completion_to_chunks;
use crate::translate::shared::input_to_args;
use crate::translate::sse::{write_json, KEEPALIVE_COMMENT};
use crate::translate::Format;

pub struct LoopStream {
    format: Format,
    model: String,
    id: String,
    created: u64,
    /// Anthropic: the next content block index.
    index: usize,
    /// Responses: the event sequence number and the items shown so far.
    seq: u64,
    items: Vec<Value>,
    include_usage: bool,
}

impl LoopStream {
    /// `include_usage`: a Chat client asked for the usage chunk.
    pub fn new(format: Format, model: &str, include_usage: bool) -> LoopStream {
        let prefix = match format {
            Format::Anthropic => "msg_",
            Format::Responses => "resp_",
            _ => "chatcmpl-",
        };
        LoopStream {
            format,
            model: model.to_string(),
            id: crate::ids::generate_id(prefix),
            created: crate::clock::now_secs(),
            index: 0,
            seq: 0,
            items: Vec::new(),
            include_usage,
        }
    }

    fn emit(&mut self, out: &mut BytesMut, name: &str, mut data: Value) {
        data["type"] = json!(name);
        if self.format == Format::Responses {
            data["sequence_number"] = json!(self.seq);
            self.seq += 1;
        }
        write_json(out, Some(name), &data);
    }

    fn response(&self, status: &str) -> Value {
        json!({"id": self.id, "object": "response", "created_at": self.created, "status": status,
            "model": self.model, "output": self.items})
    }

    /// The stream's first events.
    pub fn open(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        match self.format {
            Format::Anthropic => {
                let msg = json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}});
                self.emit(&mut out, "message_start", json!({"message": msg}));
            }
            Format::Responses => {
                let r = self.response("in_progress");
                self.emit(&mut out, "response.created", json!({"response": r}));
                let r = self.response("in_progress");
                self.emit(&mut out, "response.in_progress", json!({"response": r}));
            }
            _ => {
                let c = self.chunk(json!({"role": "assistant", "content": ""}), Value::Null);
                write_json(&mut out, None, &c);
            }
        }
        out.freeze()
    }

    fn chunk(&self, delta: Value, finish: Value) -> Value {
        let mut c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    /// A keep-alive in the client's grammar.
    pub fn keepalive(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        match self.format {
            Format::Anthropic => self.emit(&mut out, "ping", json!({})),
            Format::Responses => {
                // Codex's idle timer counts parsed events only.
                out.extend_from_slice(KEEPALIVE_COMMENT);
                let r = self.response("in_progress");
                self.emit(&mut out, "response.in_progress", json!({"response": r}));
            }
            _ => out.extend_from_slice(KEEPALIVE_COMMENT),
        }
        out.freeze()
    }

    /// One round of tollgate's searches, as native blocks or items (nothing on Chat).
    pub fn tools(&mut self, runs: &[ToolRun]) -> Option<Bytes> {
        let mut view = json!({"content": [], "output": []});
        super::turns::present(&mut view, self.format, runs);
        let mut out = BytesMut::new();
        match self.format {
            Format::Anthropic => {
                for b in view["content"].as_array().cloned().unwrap_or_default() {
                    let i = self.index;
                    self.index += 1;
                    if b["type"] == "server_tool_use" {
                        let mut shell = b.clone();
                        shell["input"] = json!({});
                        self.emit(
                            &mut out,
                            "content_block_start",
                            json!({"index": i, "content_block": shell}),
                        );
                        let delta = json!({"type": "input_json_delta", "partial_json": input_to_args(&b["input"])});
                        self.emit(
                            &mut out,
                            "content_block_delta",
                            json!({"index": i, "delta": delta}),
                        );
                    } else {
                        self.emit(
                            &mut out,
                            "content_block_start",
                            json!({"index": i, "content_block": b}),
                        );
                    }
                    self.emit(&mut out, "content_block_stop", json!({"index": i}));
                }
            }
            Format::Responses => {
                for item in view["output"].as_array().cloned().unwrap_or_default() {
                    let i = self.items.len();
                    let mut added = item.clone();
                    added["status"] = json!("in_progress");
                    self.emit(
                        &mut out,
                        "response.output_item.added",
                        json!({"output_index": i, "item": added}),
                    );
                    self.emit(
                        &mut out,
                        "response.output_item.done",
                        json!({"output_index": i, "item": item}),
                    );
                    self.items.push(item);
                }
            }
            _ => {}
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    /// The last turn's answer (whole, in the client's format) and the terminal events.
    pub fn finish(&mut self, answer: &Value) -> Bytes {
        let mut out = BytesMut::new();
        match self.format {
            Format::Anthropic => {
                for b in answer["content"].as_array().cloned().unwrap_or_default() {
                    let (shell, delta) = match b["type"].as_str() {
                        Some("text") => (
                            json!({"type": "text", "text": ""}),
                            json!({"type": "text_delta", "text": b["text"]}),
                        ),
                        Some("thinking") => (
                            json!({"type": "thinking", "thinking": "", "signature": b["signature"]}),
                            json!({"type": "thinking_delta", "thinking": b["thinking"]}),
                        ),
                        Some("tool_use") => (
                            json!({"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}),
                            json!({"type": "input_json_delta", "partial_json": input_to_args(&b["input"])}),
                        ),
                        _ => continue,
                    };
                    let i = self.index;
                    self.index += 1;
                    self.emit(
                        &mut out,
                        "content_block_start",
                        json!({"index": i, "content_block": shell}),
                    );
                    self.emit(
                        &mut out,
                        "content_block_delta",
                        json!({"index": i, "delta": delta}),
                    );
                    self.emit(&mut out, "content_block_stop", json!({"index": i}));
                }
                let delta = json!({"stop_reason": answer["stop_reason"], "stop_sequence": answer["stop_sequence"]});
                self.emit(
                    &mut out,
                    "message_delta",
                    json!({"delta": delta, "usage": answer["usage"]}),
                );
                self.emit(&mut out, "message_stop", json!({}));
            }
            Format::Responses => {
                for item in answer["output"].as_array().cloned().unwrap_or_default() {
                    let i = self.items.len();
                    let mut added = item.clone();
                    added["status"] = json!("in_progress");
                    if item["type"] == "message" {
                        added["content"] = json!([]);
                    } else if item["type"] == "function_call" {
                        added["arguments"] = json!("");
                    }
                    self.emit(
                        &mut out,
                        "response.output_item.added",
                        json!({"output_index": i, "item": added}),
                    );
                    if item["type"] == "message" {
                        for (k, part) in item["content"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .enumerate()
                        {
                            let id = item["id"].clone();
                            let text = part["text"].clone();
                            self.emit(&mut out, "response.content_part.added", json!({"item_id": id, "output_index": i, "content_index": k, "part": {"type": "output_text", "text": "", "annotations": []}}));
                            self.emit(&mut out, "response.output_text.delta", json!({"item_id": id, "output_index": i, "content_index": k, "delta": text}));
                            self.emit(&mut out, "response.output_text.done", json!({"item_id": id, "output_index": i, "content_index": k, "text": text}));
                            self.emit(&mut out, "response.content_part.done", json!({"item_id": id, "output_index": i, "content_index": k, "part": part}));
                        }
                    } else if item["type"] == "function_call" {
                        let id = item["id"].clone();
                        let args = item["arguments"].clone();
                        self.emit(
                            &mut out,
                            "response.function_call_arguments.delta",
                            json!({"item_id": id, "output_index": i, "delta": args}),
                        );
                        self.emit(
                            &mut out,
                            "response.function_call_arguments.done",
                            json!({"item_id": id, "output_index": i, "arguments": args}),
                        );
                    }
                    self.emit(
                        &mut out,
                        "response.output_item.done",
                        json!({"output_index": i, "item": item}),
                    );
                    self.items.push(item);
                }
                let mut r = answer.clone();
                r["id"] = json!(self.id);
                r["output"] = json!(self.items);
                r["status"] = json!("completed");
                self.emit(&mut out, "response.completed", json!({"response": r}));
            }
            _ => {
                let mut a = answer.clone();
                a["id"] = json!(self.id);
                let chunks = completion_to_chunks(&a, self.include_usage);
                // Its first chunk (the role) went out when the stream opened.
                let skip = chunks
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map_or(0, |p| p + 2);
                out.extend_from_slice(&chunks[skip..]);
            }
        }
        out.freeze()
    }

    /// The event that ends the stream when the loop fails.
    pub fn fail(&mut self, e: &GatewayError) -> Bytes {
        match self.format {
            Format::Responses => {
                let seq = self.seq;
                self.seq += 1;
                e.responses_failed_event(seq, Some(self.response("in_progress")))
            }
            f => e.sse_event(f),
        }
    }
}
