//! The client's stream during a tool loop, in its grammar. It opens at once (Anthropic
//! `message_start`, Responses `response.created`, a Chat role chunk), carries the grammar's
//! keep-alives while turns and tools run, passes each turn's text on as it streams in
//! (indices, ids and sequence numbers continued across turns), shows each round of
//! tollgate's searches as native blocks or items, and ends with the last turn's held tool
//! calls and terminal events, or with the native error event when the loop fails.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::declare::ToolKind;
use super::search::SearchResult;
use super::turns::ToolRun;
use crate::error::GatewayError;
use crate::translate::shared::input_to_args;
use crate::translate::sse::{write_json, KEEPALIVE_COMMENT};
use crate::translate::sse::{SseEvent, SseParser};
use crate::translate::Format;
use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// Responses: output indices handed out.
    outputs: u64,
    /// The gateway tools offered (their calls are held back and hidden).
    offered: Vec<ToolKind>,
    /// Anthropic: the search results shown so far (text blocks that name one cite it).
    results: Vec<SearchResult>,
    turn: Turn,
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
            outputs: 0,
            offered: Vec::new(),
            results: Vec::new(),
            turn: Turn::new(),
        }
    }

    /// The gateway tools whose calls a live turn holds back.
    pub fn offering(mut self, offered: Vec<ToolKind>) -> LoopStream {
        self.offered = offered;
        self
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
        if self.format == Format::Anthropic {
            self.results.extend(super::cite::results_of(runs).cloned());
        }
        self.show(view)
    }

    /// Responses: items shown before the first turn (the MCP servers' `mcp_list_tools`).
    pub fn items(&mut self, items: Vec<Value>) -> Option<Bytes> {
        self.show(json!({"content": [], "output": items}))
    }

    /// Writes a view's blocks (Anthropic `content`) or items (Responses `output`).
    fn show(&mut self, view: Value) -> Option<Bytes> {
        let mut out = BytesMut::new();
        match self.format {
            Format::Anthropic => {
                for b in view["content"].as_array().cloned().unwrap_or_default() {
                    let i = self.index;
                    self.index += 1;
                    if b["type"] == "server_tool_use" || b["type"] == "mcp_tool_use" {
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
                    let i = self.outputs;
                    self.outputs += 1;
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

/// One model turn streamed live: the provider's answer (already in the client's format)
/// goes out as it comes, except tool calls and the turn's terminal events, which are held
/// until the turn ends (tollgate's own calls are then run and hidden). The whole answer is
/// rebuilt alongside, for the next turn's history.
#[derive(Default)]
struct Turn {
    parser: SseParser,
    /// Held events (tool calls, terminal events), in order.
    held: Vec<SseEvent>,
    /// Anthropic block index / Responses output index / Chat tool-call index → the index the
    /// client sees (assigned when the first event of it goes out).
    remap: HashMap<u64, u64>,
    /// Indices of tool calls (held), and which of them are tollgate's.
    calls: HashSet<u64>,
    ours: HashSet<u64>,
    /// The rebuilt answer.
    blocks: BTreeMap<u64, Value>,
    partial: HashMap<u64, String>,
    end: Value,
    text: String,
    chat_calls: BTreeMap<u64, (String, String, String)>,
    completed: Option<Value>,
    /// The turn ended the client's stream itself (an error event went out).
    failed: bool,
}

impl Turn {
    fn new() -> Turn {
        Turn {
            // (`SseParser::default()` has no room for an event.)
            parser: SseParser::new(),
            ..Default::default()
        }
    }
}

/// How a live turn ended.
pub struct TurnEnd {
    /// The whole answer, in the client's format (as a non-streamed answer would be).
    pub answer: Value,
    /// An error event already ended the client's stream.
    pub failed: bool,
}

fn index_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

impl LoopStream {
    fn is_ours(&self, name: Option<&str>) -> bool {
        name.and_then(ToolKind::from_function)
            .is_some_and(|k| self.offered.contains(&k))
    }

    fn new_index(&mut self, orig: u64) -> u64 {
        if let Some(i) = self.turn.remap.get(&orig) {
            return *i;
        }
        let i = match self.format {
            Format::Anthropic => {
                self.index += 1;
                (self.index - 1) as u64
            }
            Format::Responses => {
                self.outputs += 1;
                self.outputs - 1
            }
            _ => self.turn.remap.len() as u64,
        };
        self.turn.remap.insert(orig, i);
        i
    }

    /// Writes one event as the client sees it (indices, ids and sequence numbers rewritten).
    fn pass(&mut self, ev: &SseEvent, mut data: Value, out: &mut BytesMut) {
        match self.format {
            Format::Anthropic => {
                if let Some(i) = index_of(&data, "index") {
                    data["index"] = json!(self.new_index(i));
                }
                write_json(out, ev.event.as_deref(), &data);
            }
            Format::Responses => {
                if let Some(i) = index_of(&data, "output_index") {
                    data["output_index"] = json!(self.new_index(i));
                }
                if data["type"] == "response.output_item.done" {
                    self.items.push(data["item"].clone());
                }
                if data["type"] == "response.completed" {
                    data["response"]["id"] = json!(self.id);
                    data["response"]["output"] = json!(self.items);
                }
                data["sequence_number"] = json!(self.seq);
                self.seq += 1;
                write_json(out, ev.event.as_deref(), &data);
            }
            _ => {
                if data.is_object() {
                    data["id"] = json!(self.id);
                }
                write_json(out, None, &data);
            }
        }
    }

    /// Feeds a piece of the turn's answer; returns what goes to the client now.
    pub fn feed(&mut self, bytes: &[u8]) -> Bytes {
        let mut events = Vec::new();
        self.turn.parser.feed(bytes, &mut |e| events.push(e));
        let mut out = BytesMut::new();
        for ev in events {
            self.on_event(ev, &mut out);
        }
        out.freeze()
    }

    fn on_event(&mut self, ev: SseEvent, out: &mut BytesMut) {
        if self.turn.failed {
            return;
        }
        if ev.data.trim() == "[DONE]" {
            self.turn.held.push(ev);
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        match self.format {
            Format::Anthropic => self.anthropic_event(ev, data, out),
            Format::Responses => self.responses_event(ev, data, out),
            _ => self.chat_event(ev, data, out),
        }
    }

    fn anthropic_event(&mut self, ev: SseEvent, data: Value, out: &mut BytesMut) {
        let t = &mut self.turn;
        let idx = index_of(&data, "index");
        match data["type"].as_str().unwrap_or_default() {
            "message_start" => {}
            "ping" => write_json(out, Some("ping"), &data),
            "error" => {
                t.failed = true;
                write_json(out, Some("error"), &data);
            }
            "message_delta" | "message_stop" => {
                if data["type"] == "message_delta" {
                    t.end = data.clone();
                }
                t.held.push(ev);
            }
            "content_block_start" => {
                let i = idx.unwrap_or(0);
                let block = data["content_block"].clone();
                let call = block["type"] == "tool_use";
                t.blocks.insert(i, block.clone());
                if call {
                    t.calls.insert(i);
                    if self.is_ours(block["name"].as_str()) {
                        self.turn.ours.insert(i);
                    }
                    self.turn.held.push(ev);
                } else {
                    self.pass(&ev, data, out);
                }
            }
            kind => {
                let i = idx.unwrap_or(0);
                if kind == "content_block_delta" {
                    let d = &data["delta"];
                    if let Some(b) = t.blocks.get_mut(&i) {
                        let mut add = |key: &str, piece: &Value| {
                            if let Some(p) = piece.as_str() {
                                let cur = b[key].as_str().unwrap_or_default().to_string();
                                b[key] = json!(cur + p);
                            }
                        };
                        match d["type"].as_str() {
                            Some("text_delta") => add("text", &d["text"]),
                            Some("thinking_delta") => add("thinking", &d["thinking"]),
                            Some("signature_delta") => add("signature", &d["signature"]),
                            Some("input_json_delta") => t
                                .partial
                                .entry(i)
                                .or_default()
                                .push_str(d["partial_json"].as_str().unwrap_or_default()),
                            _ => {}
                        }
                    }
                }
                if t.calls.contains(&i) {
                    t.held.push(ev);
                    return;
                }
                if kind == "content_block_stop" {
                    self.cite_block(i, out);
                }
                self.pass(&ev, data, out);
            }
        }
    }

    /// Before a text block stops: a `citations_delta` for each search result its text names.
    fn cite_block(&mut self, i: u64, out: &mut BytesMut) {
        let Some(b) = self.turn.blocks.get(&i).filter(|b| b["type"] == "text") else {
            return;
        };
        let found = super::cite::citations(b["text"].as_str().unwrap_or_default(), &self.results);
        let ev = SseEvent {
            event: Some("content_block_delta".into()),
            data: String::new(),
        };
        for c in found {
            let data = json!({"type": "content_block_delta", "index": i,
                "delta": {"type": "citations_delta", "citation": c}});
            self.pass(&ev, data, out);
        }
    }

    fn responses_event(&mut self, ev: SseEvent, data: Value, out: &mut BytesMut) {
        let t = &mut self.turn;
        let kind = data["type"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "response.created" | "response.in_progress" => {}
            "response.completed" | "response.incomplete" => {
                t.completed = Some(data["response"].clone());
                t.held.push(ev);
            }
            "response.failed" | "error" => {
                t.failed = true;
                self.pass(&ev, data, out);
            }
            _ => {
                let Some(i) = index_of(&data, "output_index") else {
                    self.pass(&ev, data, out);
                    return;
                };
                if kind == "response.output_item.added" && data["item"]["type"] == "function_call" {
                    t.calls.insert(i);
                    if self.is_ours(data["item"]["name"].as_str()) {
                        self.turn.ours.insert(i);
                    }
                }
                if self.turn.calls.contains(&i) {
                    self.turn.held.push(ev);
                } else {
                    self.pass(&ev, data, out);
                }
            }
        }
    }

    fn chat_event(&mut self, ev: SseEvent, data: Value, out: &mut BytesMut) {
        let t = &mut self.turn;
        if data.get("error").is_some() {
            t.failed = true;
            write_json(out, None, &data);
            return;
        }
        let choice = &data["choices"][0];
        let delta = &choice["delta"];
        if let Some(c) = delta["content"].as_str() {
            t.text.push_str(c);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            t.end["finish_reason"] = json!(f);
        }
        if data.get("usage").is_some_and(|u| !u.is_null()) {
            t.end["usage"] = data["usage"].clone();
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            for c in calls {
                let i = c["index"].as_u64().unwrap_or(0);
                let e = t.chat_calls.entry(i).or_default();
                if let Some(id) = c["id"].as_str() {
                    e.0 = id.to_string();
                }
                if let Some(n) = c["function"]["name"].as_str() {
                    e.1.push_str(n);
                }
                if let Some(a) = c["function"]["arguments"].as_str() {
                    e.2.push_str(a);
                }
            }
            let ours: Vec<u64> = t
                .chat_calls
                .iter()
                .filter(|(_, (_, name, _))| {
                    ToolKind::from_function(name).is_some_and(|k| self.offered.contains(&k))
                })
                .map(|(i, _)| *i)
                .collect();
            self.turn.ours.extend(ours);
            self.turn.held.push(ev);
            return;
        }
        let terminal = !choice["finish_reason"].is_null()
            || data["choices"].as_array().is_some_and(|c| c.is_empty());
        if terminal {
            self.turn.held.push(ev);
        } else if delta.get("role").is_some() && delta["content"].as_str().unwrap_or("").is_empty()
        {
            // The role chunk went out when the stream opened.
        } else {
            self.pass(&ev, data, out);
        }
    }

    /// The turn's end: the whole answer, rebuilt; the held events stay held.
    pub fn end_turn(&mut self) -> TurnEnd {
        let mut rest = Vec::new();
        self.turn.parser.finish(&mut |e| rest.push(e));
        let mut out = BytesMut::new();
        for ev in rest {
            self.on_event(ev, &mut out);
        }
        let t = &mut self.turn;
        let answer = match self.format {
            Format::Anthropic => {
                let content: Vec<Value> = t
                    .blocks
                    .iter()
                    .map(|(i, b)| {
                        let mut b = b.clone();
                        if let Some(p) = t.partial.get(i) {
                            b["input"] = serde_json::from_str(p).unwrap_or(json!({}));
                        }
                        b
                    })
                    .collect();
                json!({"content": content, "stop_reason": t.end["delta"]["stop_reason"], "usage": t.end["usage"]})
            }
            Format::Responses => t.completed.clone().unwrap_or(json!({"output": []})),
            _ => {
                let calls: Vec<Value> = t
                    .chat_calls
                    .values()
                    .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                    .collect();
                let mut msg = json!({"role": "assistant", "content": if t.text.is_empty() { Value::Null } else { json!(t.text) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = json!(calls);
                }
                json!({"choices": [{"index": 0, "message": msg, "finish_reason": t.end["finish_reason"]}], "usage": t.end["usage"]})
            }
        };
        TurnEnd {
            answer,
            failed: t.failed,
        }
    }

    /// The last turn: its held events go out (tollgate's own calls left out), ending the
    /// stream.
    pub fn flush(&mut self) -> Bytes {
        let held = std::mem::take(&mut self.turn.held);
        let mut out = BytesMut::new();
        for ev in held {
            if ev.data.trim() == "[DONE]" {
                out.extend_from_slice(crate::translate::sse::DONE);
                continue;
            }
            let Ok(mut data) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            let ours = |i: Option<u64>| i.is_some_and(|i| self.turn.ours.contains(&i));
            match self.format {
                Format::Anthropic if ours(index_of(&data, "index")) => continue,
                Format::Responses if ours(index_of(&data, "output_index")) => continue,
                Format::Anthropic | Format::Responses => {}
                _ => {
                    if let Some(calls) = data["choices"][0]["delta"]["tool_calls"].as_array() {
                        let kept: Vec<Value> = calls
                            .iter()
                            .filter(|c| !ours(c["index"].as_u64()))
                            .cloned()
                            .collect();
                        if kept.is_empty() {
                            continue;
                        }
                        let kept: Vec<Value> = kept
                            .into_iter()
                            .map(|mut c| {
                                let i = c["index"].as_u64().unwrap_or(0);
                                c["index"] = json!(self.new_index(i));
                                c
                            })
                            .collect();
                        data["choices"][0]["delta"]["tool_calls"] = json!(kept);
                    }
                }
            }
            self.pass(&ev, data, &mut out);
        }
        self.turn = Turn::new();
        out.freeze()
    }

    /// A turn that only called tollgate's tools: nothing more of it reaches the client.
    pub fn discard(&mut self) {
        self.turn = Turn::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::turns::Call;

    #[test]
    fn a_text_block_naming_a_result_gets_a_citations_delta_before_it_stops() {
        let mut ls =
            LoopStream::new(Format::Anthropic, "m", false).offering(vec![ToolKind::WebSearch]);
        ls.open();
        let run = ToolRun {
            call: Call {
                id: "c1".into(),
                name: "web_search".into(),
                args: serde_json::from_value(json!({"query": "q"})).unwrap(),
                ours: Some(ToolKind::WebSearch),
            },
            output: String::new(),
            results: vec![SearchResult {
                url: "https://a.example/x".into(),
                title: "A".into(),
                snippet: "about a".into(),
                text: None,
                published: None,
            }],
            ok: true,
            mcp: None,
        };
        ls.tools(&[run]).unwrap();
        let turn = concat!(
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"per https://a.example/x\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        let out = String::from_utf8(ls.feed(turn.as_bytes()).to_vec()).unwrap();
        let mut events = Vec::new();
        let mut p = SseParser::new();
        p.feed(out.as_bytes(), &mut |e| events.push(e));
        let data: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        // The two search blocks took indices 0 and 1: the text block is 2.
        assert_eq!(data.len(), 4, "{out}");
        assert_eq!(events[2].event.as_deref(), Some("content_block_delta"));
        let enc = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "tollgate:https://a.example/x",
        );
        assert_eq!(
            data[2],
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "citations_delta",
                "citation": {"type": "web_search_result_location", "url": "https://a.example/x",
                    "title": "A", "encrypted_index": enc, "cited_text": "about a"}}})
        );
        assert_eq!(data[3], json!({"type": "content_block_stop", "index": 2}));
    }
}
