//! A client's stream as output checks see it: the events the gateway is about to send, in
//! the client's grammar, each with the answer text it adds (text and tool-call arguments, as
//! [`super::answer::text`] reads a whole answer), and the endings the gateway writes itself
//! when a check stops the stream: the grammar's refusal, or its error event.
//!
//! Pure and I/O-free. Events are re-framed one by one (so that they can be held back and
//! sent later); comments are dropped (keep-alives reach the client on their own). The
//! grammar state an ending needs (an open block, an open item, the last sequence number) is
//! that of the events *delivered*, which the caller reports with [`StreamWatch::delivered`]:
//! held-back events never reached the client and must not be closed.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::answer::REFUSAL;
use crate::error::GatewayError;
use crate::translate::sse::{write_json, write_text, SseParser, DONE};
use crate::translate::Format;

/// One event of the client's stream.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event, framed.
    pub bytes: Bytes,
    /// The answer text so far, in characters, this event included.
    pub text_end: usize,
    /// Part of the stream's normal end (a finish reason, `[DONE]`, `message_stop`,
    /// `response.completed`): held until the end-of-stream check when a check blocks.
    pub closing: bool,
    /// What delivering it changes in the client's grammar state.
    mark: Mark,
    /// Its `sequence_number` (Responses).
    seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Mark {
    None,
    MessageStart,
    BlockStart(u64),
    BlockStop(u64),
    ItemAdded(u64, Value),
    ItemDone(u64, Value),
    /// The stream ended (normally or in an error).
    End,
}

/// The watcher of one stream.
#[derive(Debug)]
pub struct StreamWatch {
    format: Format,
    parser: SseParser,
    text: String,
    chars: usize,
    /// Events that added text.
    deltas: u64,
    /// The part (block, tool call, item) the last text came from: a new part is separated
    /// from the previous one by a blank line.
    part: Option<String>,
    // Who the stream is (from the events seen).
    id: Option<Value>,
    model: Option<Value>,
    created: Option<Value>,
    response: Option<Value>,
    // What the client has (from the events delivered).
    started: bool,
    open_block: Option<u64>,
    seq: Option<u64>,
    items: Vec<(u64, Value)>,
    open_item: Option<(u64, Value)>,
    ended: bool,
}

impl StreamWatch {
    pub fn new(format: Format) -> StreamWatch {
        StreamWatch {
            format,
            parser: SseParser::new(),
            text: String::new(),
            chars: 0,
            deltas: 0,
            part: None,
            id: None,
            model: None,
            created: None,
            response: None,
            started: false,
            open_block: None,
            seq: None,
            items: Vec::new(),
            open_item: None,
            ended: false,
        }
    }

    /// The answer text seen so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its length in characters.
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// How many events added text (a token each, about: what a cut stream is billed by
    /// when the provider's own count is lower).
    pub fn deltas(&self) -> u64 {
        self.deltas
    }

    /// The client's stream has ended (a terminal or error event was delivered).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Splits a piece of the client's stream into events (appended to `out`).
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.feed(bytes, &mut |ev| {
            if let Some(e) = self.event(ev.event.as_deref(), &ev.data) {
                out.push(e);
            }
        });
        self.parser = parser;
    }

    /// The stream's last bytes were fed: an event without its blank line is complete.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.finish(&mut |ev| {
            if let Some(e) = self.event(ev.event.as_deref(), &ev.data) {
                out.push(e);
            }
        });
        self.parser = parser;
    }

    fn add_text(&mut self, part: String, s: &str) {
        if s.is_empty() {
            return;
        }
        if self.part.as_ref() != Some(&part) {
            if self.part.is_some() {
                self.text.push_str("\n\n");
                self.chars += 2;
            }
            self.part = Some(part);
        }
        self.text.push_str(s);
        self.chars += s.chars().count();
    }

    fn event(&mut self, name: Option<&str>, data: &str) -> Option<Event> {
        if data.is_empty() && name.is_none() {
            return None;
        }
        let before = self.chars;
        let mut bytes = BytesMut::with_capacity(data.len() + 32);
        write_text(&mut bytes, name, data);
        let mut ev = Event {
            bytes: bytes.freeze(),
            text_end: 0,
            closing: false,
            mark: Mark::None,
            seq: None,
        };
        if self.format == Format::Chat && data.trim() == "[DONE]" {
            ev.closing = true;
            ev.mark = Mark::End;
        } else if let Ok(v) = serde_json::from_str::<Value>(data) {
            match self.format {
                Format::Anthropic => self.anthropic(name, &v, &mut ev),
                Format::Responses => self.responses(&v, &mut ev),
                Format::Chat | Format::Gemini => self.chat(&v, &mut ev),
            }
        }
        if self.chars > before {
            self.deltas += 1;
        }
        ev.text_end = self.chars;
        Some(ev)
    }

    fn anthropic(&mut self, name: Option<&str>, v: &Value, ev: &mut Event) {
        let ty = name.or(v["type"].as_str()).unwrap_or("");
        let index = v["index"].as_u64().unwrap_or(0);
        match ty {
            "message_start" => {
                self.id = v["message"].get("id").cloned();
                self.model = v["message"].get("model").cloned();
                ev.mark = Mark::MessageStart;
            }
            "content_block_start" => ev.mark = Mark::BlockStart(index),
            "content_block_stop" => ev.mark = Mark::BlockStop(index),
            "content_block_delta" => {
                let d = &v["delta"];
                let s = match d["type"].as_str() {
                    Some("text_delta") => d["text"].as_str(),
                    Some("input_json_delta") => d["partial_json"].as_str(),
                    _ => None,
                };
                if let Some(s) = s {
                    self.add_text(index.to_string(), s);
                }
            }
            "message_delta" => ev.closing = true,
            "message_stop" => {
                ev.closing = true;
                ev.mark = Mark::End;
            }
            "error" => ev.mark = Mark::End,
            _ => {}
        }
    }

    fn chat(&mut self, v: &Value, ev: &mut Event) {
        if self.id.is_none() {
            self.id = v.get("id").cloned();
            self.model = v.get("model").cloned();
            self.created = v.get("created").cloned();
        }
        if v.get("error").is_some_and(|e| !e.is_null()) {
            ev.mark = Mark::End;
            return;
        }
        let Some(choices) = v["choices"].as_array() else {
            return;
        };
        if choices.is_empty() && v["usage"].is_object() {
            ev.closing = true; // the usage chunk follows the finish chunk
        }
        for c in choices {
            let i = c["index"].as_u64().unwrap_or(0);
            let d = &c["delta"];
            for f in ["content", "refusal"] {
                if let Some(s) = d[f].as_str() {
                    self.add_text(format!("{i}"), s);
                }
            }
            for call in d["tool_calls"].as_array().into_iter().flatten() {
                if let Some(s) = call["function"]["arguments"].as_str() {
                    let n = call["index"].as_u64().unwrap_or(0);
                    self.add_text(format!("{i}.{n}"), s);
                }
            }
            if !c["finish_reason"].is_null() {
                ev.closing = true;
            }
        }
    }

    fn responses(&mut self, v: &Value, ev: &mut Event) {
        ev.seq = v["sequence_number"].as_u64();
        let index = v["output_index"].as_u64().unwrap_or(0);
        match v["type"].as_str().unwrap_or("") {
            "response.created" => self.response = v.get("response").cloned(),
            "response.output_item.added" => ev.mark = Mark::ItemAdded(index, v["item"].clone()),
            "response.output_item.done" => ev.mark = Mark::ItemDone(index, v["item"].clone()),
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.function_call_arguments.delta"
            | "response.custom_tool_call_input.delta" => {
                if let Some(s) = v["delta"].as_str() {
                    self.add_text(index.to_string(), s);
                }
            }
            "response.completed" | "response.incomplete" => {
                ev.closing = true;
                ev.mark = Mark::End;
            }
            "response.failed" | "error" => ev.mark = Mark::End,
            _ => {}
        }
    }

    /// `ev` reached the client.
    pub fn delivered(&mut self, ev: &Event) {
        if let Some(s) = ev.seq {
            self.seq = Some(self.seq.map_or(s, |x| x.max(s)));
        }
        match &ev.mark {
            Mark::None => {}
            Mark::MessageStart => self.started = true,
            Mark::BlockStart(i) => self.open_block = Some(*i),
            Mark::BlockStop(i) => {
                if self.open_block == Some(*i) {
                    self.open_block = None;
                }
            }
            Mark::ItemAdded(i, item) => self.open_item = Some((*i, item.clone())),
            Mark::ItemDone(i, item) => {
                if self.open_item.as_ref().is_some_and(|(o, _)| o == i) {
                    self.open_item = None;
                }
                self.items.push((*i, item.clone()));
            }
            Mark::End => self.ended = true,
        }
    }

    /// A keep-alive the gateway wrote straight to the client (its sequence number counts).
    pub fn keepalive_sent(&mut self, bytes: &[u8]) {
        let mut evs = Vec::new();
        self.feed(bytes, &mut evs);
        for e in &evs {
            self.delivered(e);
        }
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq.map_or(0, |s| s + 1);
        self.seq = Some(s);
        s
    }

    /// The events that end the client's stream with the grammar's refusal (what was sent
    /// stays; nothing more comes): Anthropic `stop_reason: "refusal"`, Chat `finish_reason:
    /// "content_filter"` with the `refusal` field, Responses a refusal part and
    /// `response.incomplete` (`content_filter`). `output_tokens`: what the provider produced.
    pub fn refusal(&mut self, output_tokens: u64) -> Bytes {
        let mut out = BytesMut::new();
        match self.format {
            Format::Anthropic => self.anthropic_refusal(output_tokens, &mut out),
            Format::Responses => self.responses_refusal(&mut out),
            Format::Chat | Format::Gemini => {
                let chunk = json!({
                    "id": self.id.clone().unwrap_or_else(|| json!(format!("chatcmpl-{}", crate::ids::generate_id("")))),
                    "object": "chat.completion.chunk",
                    "created": self.created.clone().unwrap_or_else(|| json!(crate::clock::now_secs())),
                    "model": self.model.clone().unwrap_or(Value::Null),
                    "choices": [{"index": 0, "delta": {"refusal": REFUSAL}, "finish_reason": "content_filter"}],
                });
                write_json(&mut out, None, &chunk);
                out.extend_from_slice(DONE);
            }
        }
        self.ended = true;
        out.freeze()
    }

    fn anthropic_refusal(&mut self, output_tokens: u64, out: &mut BytesMut) {
        if !self.started {
            let id = format!("msg_{}", crate::ids::generate_id(""));
            let start = json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "content": [],
                "model": self.model.clone().unwrap_or(Value::Null),
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}});
            write_json(out, Some("message_start"), &start);
        }
        if let Some(i) = self.open_block.take() {
            write_json(
                out,
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": i}),
            );
        }
        write_json(
            out,
            Some("message_delta"),
            &json!({"type": "message_delta",
                "delta": {"stop_reason": "refusal", "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}}),
        );
        write_json(out, Some("message_stop"), &json!({"type": "message_stop"}));
    }

    fn responses_refusal(&mut self, out: &mut BytesMut) {
        let mut emit = |w: &mut Self, name: &str, mut v: Value| {
            v["type"] = json!(name);
            v["sequence_number"] = json!(w.next_seq());
            write_json(out, Some(name), &v);
        };
        let mut output: Vec<(u64, Value)> = self.items.clone();
        if let Some((i, mut item)) = self.open_item.take() {
            item["status"] = json!("incomplete");
            emit(
                self,
                "response.output_item.done",
                json!({"output_index": i, "item": item}),
            );
            output.push((i, item));
        }
        let index = output.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        let id = format!("msg_{}", crate::ids::generate_id(""));
        let part = json!({"type": "refusal", "refusal": REFUSAL});
        let at = json!({"item_id": id, "output_index": index, "content_index": 0});
        let with = |extra: Value| {
            let mut v = at.clone();
            for (k, x) in extra.as_object().into_iter().flatten() {
                v[k] = x.clone();
            }
            v
        };
        emit(
            self,
            "response.output_item.added",
            json!({"output_index": index, "item": {"type": "message", "id": id,
                "status": "in_progress", "role": "assistant", "content": []}}),
        );
        emit(
            self,
            "response.content_part.added",
            with(json!({"part": {"type": "refusal", "refusal": ""}})),
        );
        emit(
            self,
            "response.refusal.delta",
            with(json!({"delta": REFUSAL})),
        );
        emit(
            self,
            "response.refusal.done",
            with(json!({"refusal": REFUSAL})),
        );
        emit(
            self,
            "response.content_part.done",
            with(json!({"part": part})),
        );
        let item = json!({"type": "message", "id": id, "status": "completed",
            "role": "assistant", "content": [part]});
        emit(
            self,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        output.push((index, item));
        output.sort_by_key(|(i, _)| *i);
        let mut r = self.response_object();
        r["status"] = json!("incomplete");
        r["incomplete_details"] = json!({"reason": "content_filter"});
        r["output"] = Value::Array(output.into_iter().map(|(_, v)| v).collect());
        emit(self, "response.incomplete", json!({"response": r}));
    }

    fn response_object(&self) -> Value {
        self.response.clone().unwrap_or_else(|| {
            json!({"id": format!("resp_{}", crate::ids::generate_id("")), "object": "response",
                "created_at": crate::clock::now_secs(), "model": null, "output": [], "usage": null})
        })
    }

    /// The error event that ends the client's stream (a check that fails closed got no
    /// verdict): the grammar's own error, as a broken upstream stream would end.
    pub fn failure(&mut self, e: &GatewayError) -> Bytes {
        self.ended = true;
        match self.format {
            Format::Responses => {
                let seq = self.next_seq();
                let mut r = self.response_object();
                r["output"] = Value::Array(self.items.iter().map(|(_, v)| v.clone()).collect());
                e.responses_failed_event(seq, Some(r))
            }
            f => e.sse_event(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::translate::sse::SseEvent;

    fn parse(b: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut v = Vec::new();
        p.feed(b, &mut |e| v.push(e));
        p.finish(&mut |e| v.push(e));
        v
    }

    fn data(e: &SseEvent) -> Value {
        serde_json::from_str(&e.data).unwrap_or(Value::Null)
    }

    /// Feeds `input` split every `n` bytes, delivers the first `deliver` events, returns all.
    fn watch(format: Format, input: &str, n: usize, deliver: usize) -> (StreamWatch, Vec<Event>) {
        let mut w = StreamWatch::new(format);
        let mut evs = Vec::new();
        for piece in input.as_bytes().chunks(n) {
            w.feed(piece, &mut evs);
        }
        w.finish(&mut evs);
        for e in evs.iter().take(deliver) {
            w.delivered(e);
        }
        (w, evs)
    }

    const ANTHROPIC: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
        : a comment\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"héllo\"}}\n\n\
        event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"Bash\",\"input\":{}}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n\
        event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn anthropic_text_offsets_and_closing() {
        let (w, evs) = watch(Format::Anthropic, ANTHROPIC, 7, 0);
        assert_eq!(w.text(), "héllo\n\n{\"a\":1}");
        assert_eq!(w.chars(), 14);
        assert_eq!(evs.len(), 8, "the comment is dropped");
        let ends: Vec<usize> = evs.iter().map(|e| e.text_end).collect();
        assert_eq!(ends, vec![0, 0, 5, 5, 5, 14, 14, 14]);
        let closing: Vec<bool> = evs.iter().map(|e| e.closing).collect();
        assert_eq!(
            closing,
            vec![false, false, false, false, false, false, true, true]
        );
        // Re-framed events parse back to what came in.
        let again: Vec<u8> = evs.iter().flat_map(|e| e.bytes.to_vec()).collect();
        assert_eq!(parse(&again).len(), 8);
    }

    #[test]
    fn anthropic_refusal_closes_only_the_delivered_open_block() {
        // Delivered up to the tool block's start: that block is open.
        let (mut w, _) = watch(Format::Anthropic, ANTHROPIC, 50, 6);
        let out = parse(&w.refusal(7));
        let names: Vec<&str> = out.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            vec!["content_block_stop", "message_delta", "message_stop"]
        );
        assert_eq!(data(&out[0])["index"], 1);
        assert_eq!(data(&out[1])["delta"]["stop_reason"], "refusal");
        assert_eq!(data(&out[1])["usage"]["output_tokens"], 7);
        // Delivered only up to the first block's stop: no block is open.
        let (mut w, _) = watch(Format::Anthropic, ANTHROPIC, 50, 4);
        let out = parse(&w.refusal(1));
        assert_eq!(out[0].event.as_deref(), Some("message_delta"));
        // Held back before the block started: it is not closed.
        let (mut w, _) = watch(Format::Anthropic, ANTHROPIC, 50, 1);
        assert_eq!(
            parse(&w.refusal(1))[0].event.as_deref(),
            Some("message_delta")
        );
    }

    #[test]
    fn chat_text_closing_and_refusal() {
        let input = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi \"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
            data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n\
            data: [DONE]\n\n";
        let (mut w, evs) = watch(Format::Chat, input, 9, 2);
        assert_eq!(w.text(), "hi \n\n{}");
        let closing: Vec<bool> = evs.iter().map(|e| e.closing).collect();
        assert_eq!(closing, vec![false, false, true, true, true]);
        let out = parse(&w.refusal(3));
        assert_eq!(out.len(), 2);
        let c = data(&out[0]);
        assert_eq!(c["id"], "c1");
        assert_eq!(c["created"], 5);
        assert_eq!(c["model"], "m");
        assert_eq!(c["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(c["choices"][0]["delta"]["refusal"], REFUSAL);
        assert_eq!(out[1].data, "[DONE]");
        assert!(w.ended());
    }

    #[test]
    fn responses_refusal_continues_the_sequence_and_closes_the_open_item() {
        let ev = |n: u64, ty: &str, rest: &str| {
            format!("event: {ty}\ndata: {{\"type\":\"{ty}\",\"sequence_number\":{n}{rest}}}\n\n")
        };
        let input = [
            ev(0, "response.created", ",\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"m\",\"output\":[]}"),
            ev(1, "response.output_item.added", ",\"output_index\":0,\"item\":{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[]}"),
            ev(2, "response.output_item.done", ",\"output_index\":0,\"item\":{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[]}"),
            ev(3, "response.output_item.added", ",\"output_index\":1,\"item\":{\"type\":\"message\",\"id\":\"msg_1\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}"),
            ev(4, "response.output_text.delta", ",\"output_index\":1,\"item_id\":\"msg_1\",\"content_index\":0,\"delta\":\"secret\""),
            ev(5, "response.completed", ",\"response\":{}"),
        ]
        .concat();
        let (mut w, evs) = watch(Format::Responses, &input, 13, 5);
        assert_eq!(w.text(), "secret");
        assert!(evs[5].closing && !evs[4].closing);
        let out = parse(&w.refusal(0));
        let seqs: Vec<u64> = out
            .iter()
            .map(|e| data(e)["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (5..5 + out.len() as u64).collect::<Vec<_>>());
        let first = data(&out[0]);
        assert_eq!(first["type"], "response.output_item.done");
        assert_eq!(first["item"]["id"], "msg_1");
        assert_eq!(first["item"]["status"], "incomplete");
        let last = data(out.last().unwrap());
        assert_eq!(last["type"], "response.incomplete");
        let r = &last["response"];
        assert_eq!(r["id"], "resp_1");
        assert_eq!(r["incomplete_details"]["reason"], "content_filter");
        let output = r["output"].as_array().unwrap();
        assert_eq!(output.len(), 3);
        assert_eq!(output[2]["content"][0]["type"], "refusal");
        assert_eq!(output[2]["content"][0]["refusal"], REFUSAL);
        assert!(!out.iter().any(|e| e.data.contains("secret")));
    }

    #[test]
    fn failures_in_each_grammar() {
        let e = GatewayError::new(ErrorKind::Upstream, "unavailable");
        let mut w = StreamWatch::new(Format::Anthropic);
        assert!(w.failure(&e).starts_with(b"event: error\n"));
        let mut w = StreamWatch::new(Format::Responses);
        let out = parse(&w.failure(&e));
        assert_eq!(data(&out[0])["type"], "response.failed");
        let mut w = StreamWatch::new(Format::Chat);
        assert!(data(&parse(&w.failure(&e))[0])["error"].is_object());
    }
}
