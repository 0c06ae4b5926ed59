//! Masked values put back into a streamed answer, in the client's grammar (`mask` with
//! `restore: true`): the model saw `[EMAIL_1]`, the client reads the original. Text deltas go
//! through a [`Restorer`] per part (an Anthropic block, a Chat choice's content or tool call,
//! a Responses item's text or arguments), which holds back a placeholder split across
//! deltas; what a part holds goes out, as one more delta of that part, before the part ends.
//! Events that carry whole texts (a Responses `*.done` event, item or response; an Anthropic
//! block start) are restored whole.
//!
//! Pure and I/O-free; events are re-framed. Responses events are numbered again, so that
//! their `sequence_number`s stay consecutive when a delta is added or an empty one dropped.

use bytes::BytesMut;
use serde_json::{json, Value};
use std::sync::Arc;

use super::local::{Masks, Restorer};
use crate::translate::sse::{write_json, write_text, SseParser};
use crate::translate::Format;

/// The restorer of one client stream.
#[derive(Debug)]
pub struct StreamRestore {
    format: Format,
    masks: Arc<Masks>,
    parser: SseParser,
    parts: Vec<Part>,
    /// Chat: the envelope of the stream's chunks (id, object, created, model).
    envelope: Option<Value>,
    /// Responses: the number of the next event sent.
    next_seq: Option<u64>,
}

/// One part's restorer, and the delta event that flushes it (its last delta, emptied).
#[derive(Debug)]
struct Part {
    key: String,
    restorer: Restorer,
    template: Value,
}

impl StreamRestore {
    pub fn new(format: Format, masks: Arc<Masks>) -> StreamRestore {
        StreamRestore {
            format,
            masks,
            parser: SseParser::new(),
            parts: Vec::new(),
            envelope: None,
            next_seq: None,
        }
    }

    /// Restores a piece of the client's stream into `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut BytesMut) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.feed(bytes, &mut |ev| {
            self.event(ev.event.as_deref(), &ev.data, out)
        });
        self.parser = parser;
    }

    /// The stream's last bytes were fed: whatever is held goes out.
    pub fn finish(&mut self, out: &mut BytesMut) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.finish(&mut |ev| self.event(ev.event.as_deref(), &ev.data, out));
        self.parser = parser;
        self.flush(|_| true, out);
    }

    /// Pushes `text` through the restorer of part `key` (made on first use); `template` is
    /// the part's delta event with its text emptied. Returns what may be sent now.
    fn push(&mut self, key: String, json_text: bool, text: &str, template: Value) -> String {
        let i = match self.parts.iter().position(|p| p.key == key) {
            Some(i) => i,
            None => {
                let m = self.masks.clone();
                let restorer = if json_text {
                    Restorer::json_text(m)
                } else {
                    Restorer::new(m)
                };
                self.parts.push(Part {
                    key,
                    restorer,
                    template: Value::Null,
                });
                self.parts.len() - 1
            }
        };
        let p = &mut self.parts[i];
        p.template = template;
        p.restorer.push(text)
    }

    fn event(&mut self, name: Option<&str>, data: &str, out: &mut BytesMut) {
        match serde_json::from_str::<Value>(data) {
            Ok(mut v) if v.is_object() => match self.format {
                Format::Anthropic => self.anthropic(name, &mut v, out),
                Format::Responses => self.responses(name, &mut v, out),
                Format::Chat | Format::Gemini => self.chat(&mut v, out),
            },
            _ => {
                // `[DONE]` (and anything else that is not a JSON object) ends what is held.
                self.flush(|_| true, out);
                write_text(out, name, data);
            }
        }
    }

    fn anthropic(&mut self, name: Option<&str>, v: &mut Value, out: &mut BytesMut) {
        let ty = name.or(v["type"].as_str()).unwrap_or("").to_string();
        let index = v["index"].as_u64().unwrap_or(0).to_string();
        match ty.as_str() {
            "content_block_delta" => {
                let (field, json_text) = match v["delta"]["type"].as_str() {
                    Some("text_delta") => ("text", false),
                    Some("input_json_delta") => ("partial_json", true),
                    _ => return write_json(out, Some(&ty), v),
                };
                let Some(text) = v["delta"][field].as_str().map(str::to_owned) else {
                    return write_json(out, Some(&ty), v);
                };
                v["delta"][field] = json!("");
                let ready = self.push(index, json_text, &text, v.clone());
                if !ready.is_empty() {
                    v["delta"][field] = json!(ready);
                    write_json(out, Some(&ty), v);
                }
            }
            "content_block_stop" => {
                self.flush(|k| k == index, out);
                write_json(out, Some(&ty), v);
            }
            "message_delta" | "message_stop" | "error" => {
                self.flush(|_| true, out);
                write_json(out, Some(&ty), v);
            }
            _ => {
                self.masks.restore_value(v);
                write_json(out, Some(&ty), v);
            }
        }
    }

    fn chat(&mut self, v: &mut Value, out: &mut BytesMut) {
        if self.envelope.is_none() {
            let mut e = v.clone();
            if let Some(o) = e.as_object_mut() {
                o.retain(|k, _| matches!(k.as_str(), "id" | "object" | "created" | "model"));
            }
            self.envelope = Some(e);
        }
        let mut finishing: Vec<String> = Vec::new();
        let mut choices = std::mem::take(&mut v["choices"]);
        for c in choices.as_array_mut().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap_or(0);
            if let Some(text) = c["delta"]["content"].as_str().map(str::to_owned) {
                let t = json!({"index": i, "delta": {"content": ""}, "finish_reason": null});
                c["delta"]["content"] = json!(self.push(format!("{i}"), false, &text, t));
            }
            for call in c["delta"]["tool_calls"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                let n = call["index"].as_u64().unwrap_or(0);
                if let Some(a) = call["function"]["arguments"].as_str().map(str::to_owned) {
                    let t = json!({"index": i, "delta": {"tool_calls": [
                        {"index": n, "function": {"arguments": ""}}]}, "finish_reason": null});
                    call["function"]["arguments"] =
                        json!(self.push(format!("{i}.{n}"), true, &a, t));
                }
            }
            if !c["finish_reason"].is_null() {
                finishing.push(format!("{i}"));
            }
        }
        v["choices"] = choices;
        // What a finishing choice's parts hold goes out just before its finish.
        self.flush(
            |k| finishing.iter().any(|f| k.split('.').next() == Some(f)),
            out,
        );
        write_json(out, None, v);
    }

    fn responses(&mut self, name: Option<&str>, v: &mut Value, out: &mut BytesMut) {
        let ty = name.or(v["type"].as_str()).unwrap_or("").to_string();
        if self.next_seq.is_none() {
            self.next_seq = v["sequence_number"].as_u64();
        }
        let key = format!(
            "{}.{}",
            v["item_id"].as_str().unwrap_or(""),
            v["content_index"].as_u64().unwrap_or(0)
        );
        match ty.as_str() {
            "response.output_text.delta" | "response.function_call_arguments.delta" => {
                let json_text = ty == "response.function_call_arguments.delta";
                if let Some(text) = v["delta"].as_str().map(str::to_owned) {
                    v["delta"] = json!("");
                    let ready = self.push(key, json_text, &text, v.clone());
                    if ready.is_empty() {
                        return; // all held: nothing to send (and no number used)
                    }
                    v["delta"] = json!(ready);
                }
            }
            "response.output_text.done" | "response.function_call_arguments.done" => {
                self.flush(|k| k == key, out);
                self.masks.restore_value(v);
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.flush(|_| true, out);
                self.masks.restore_value(v);
            }
            _ => self.masks.restore_value(v),
        }
        self.write_responses(&ty, v, out);
    }

    fn write_responses(&mut self, ty: &str, v: &mut Value, out: &mut BytesMut) {
        if let Some(n) = self.next_seq {
            if v.get("sequence_number").is_some() {
                v["sequence_number"] = json!(n);
                self.next_seq = Some(n + 1);
            }
        }
        write_json(out, Some(ty), v);
    }

    /// Sends what the parts whose key passes `which` hold, each as one more delta.
    fn flush(&mut self, which: impl Fn(&str) -> bool, out: &mut BytesMut) {
        let mut held = Vec::new();
        for p in self.parts.iter_mut().filter(|p| which(&p.key)) {
            let text = p.restorer.finish();
            if !text.is_empty() {
                held.push((p.template.clone(), text));
            }
        }
        for (mut t, text) in held {
            match self.format {
                Format::Anthropic => {
                    let field = if t["delta"]["type"] == "input_json_delta" {
                        "partial_json"
                    } else {
                        "text"
                    };
                    t["delta"][field] = json!(text);
                    write_json(out, Some("content_block_delta"), &t);
                }
                Format::Responses => {
                    t["delta"] = json!(text);
                    let ty = t["type"].as_str().unwrap_or("").to_string();
                    self.write_responses(&ty, &mut t, out);
                }
                Format::Chat | Format::Gemini => {
                    if t["delta"]["content"].is_string() {
                        t["delta"]["content"] = json!(text);
                    } else {
                        t["delta"]["tool_calls"][0]["function"]["arguments"] = json!(text);
                    }
                    let mut chunk = self.envelope.clone().unwrap_or_else(|| json!({}));
                    chunk["choices"] = json!([t]);
                    write_json(out, None, &chunk);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::local::Kind;
    use super::*;
    use crate::translate::sse::SseEvent;

    fn masks() -> Arc<Masks> {
        let mut m = Masks::default();
        m.placeholder(Kind::Email, "jane@example.com");
        m.placeholder(Kind::ApiKey, "sk-ant-\"quoted\"");
        Arc::new(m)
    }

    fn parse(b: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut v = Vec::new();
        p.feed(b, &mut |e| v.push(e));
        p.finish(&mut |e| v.push(e));
        v
    }

    fn run(format: Format, input: &str, n: usize) -> Vec<SseEvent> {
        let mut r = StreamRestore::new(format, masks());
        let mut out = BytesMut::new();
        for piece in input.as_bytes().chunks(n) {
            r.feed(piece, &mut out);
        }
        r.finish(&mut out);
        parse(&out)
    }

    fn data(e: &SseEvent) -> Value {
        serde_json::from_str(&e.data).unwrap_or(Value::Null)
    }

    fn anthropic_delta(i: u64, ty: &str, field: &str, s: &str) -> String {
        let d = json!({"type": "content_block_delta", "index": i, "delta": {"type": ty, field: s}});
        format!("event: content_block_delta\ndata: {d}\n\n")
    }

    #[test]
    fn anthropic_placeholders_split_across_deltas() {
        let input = [
            anthropic_delta(0, "text_delta", "text", "Mail [EMA"),
            anthropic_delta(0, "text_delta", "text", "IL_1] now ["),
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                .into(),
            anthropic_delta(1, "input_json_delta", "partial_json", "{\"k\":\"[API_"),
            anthropic_delta(1, "input_json_delta", "partial_json", "KEY_1]\"}"),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into(),
        ]
        .concat();
        for n in [1, 7, 1000] {
            let evs = run(Format::Anthropic, &input, n);
            let text: String = evs
                .iter()
                .filter_map(|e| data(e)["delta"]["text"].as_str().map(String::from))
                .collect();
            assert_eq!(text, "Mail jane@example.com now [");
            let json_text: String = evs
                .iter()
                .filter_map(|e| data(e)["delta"]["partial_json"].as_str().map(String::from))
                .collect();
            let args: Value = serde_json::from_str(&json_text).unwrap();
            assert_eq!(args["k"], "sk-ant-\"quoted\"");
            // The held "[" went out before its block's stop.
            let stop = evs
                .iter()
                .position(|e| e.event.as_deref() == Some("content_block_stop"));
            let last_text = evs
                .iter()
                .rposition(|e| data(e)["delta"]["text"].is_string());
            assert!(last_text < stop);
        }
    }

    #[test]
    fn chat_content_and_arguments() {
        let chunk = |delta: Value, finish: Value| {
            let c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            format!("data: {c}\n\n")
        };
        let input = [
            chunk(json!({"content": "to [EMAIL"}), Value::Null),
            chunk(json!({"content": "_1]"}), Value::Null),
            chunk(json!({"content": " and [EMAIL_"}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":\"[API_KEY_1]\"}"}}]}), Value::Null),
            chunk(json!({}), json!("stop")),
            "data: [DONE]\n\n".into(),
        ]
        .concat();
        let evs = run(Format::Chat, &input, 5);
        let text: String = evs
            .iter()
            .filter_map(|e| {
                data(e)["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(text, "to jane@example.com and [EMAIL_");
        let args: String = evs
            .iter()
            .filter_map(|e| {
                data(e)["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap()["a"],
            "sk-ant-\"quoted\""
        );
        let finish = evs
            .iter()
            .position(|e| data(e)["choices"][0]["finish_reason"] == "stop")
            .unwrap();
        assert_eq!(
            data(&evs[finish - 1])["id"],
            "c1",
            "the flush before the finish"
        );
        assert_eq!(evs.last().unwrap().data, "[DONE]");
    }

    #[test]
    fn responses_deltas_done_events_and_numbering() {
        let ev = |n: u64, ty: &str, rest: Value| {
            let mut v = json!({"type": ty, "sequence_number": n});
            for (k, x) in rest.as_object().unwrap() {
                v[k] = x.clone();
            }
            format!("event: {ty}\ndata: {v}\n\n")
        };
        let at = |d: &str| json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": d});
        let input = [
            ev(0, "response.created", json!({"response": {"output": []}})),
            ev(1, "response.output_text.delta", at("[EMA")),
            ev(2, "response.output_text.delta", at("IL_1] [EMA")),
            ev(
                3,
                "response.output_text.done",
                json!({"item_id": "msg_1", "output_index": 0,
                "content_index": 0, "text": "[EMAIL_1] [EMA"}),
            ),
            ev(
                4,
                "response.completed",
                json!({"response": {"output": [{"type": "message",
                "content": [{"type": "output_text", "text": "[EMAIL_1] [EMA"}]},
                {"type": "function_call", "arguments": "{\"k\":\"[API_KEY_1]\"}"}]}}),
            ),
        ]
        .concat();
        let evs = run(Format::Responses, &input, 9);
        let seqs: Vec<u64> = evs
            .iter()
            .map(|e| data(e)["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..evs.len() as u64).collect::<Vec<_>>());
        let deltas: String = evs
            .iter()
            .filter(|e| e.event.as_deref() == Some("response.output_text.delta"))
            .map(|e| data(e)["delta"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(deltas, "jane@example.com [EMA");
        let done = evs
            .iter()
            .find(|e| e.event.as_deref() == Some("response.output_text.done"))
            .unwrap();
        assert_eq!(data(done)["text"], "jane@example.com [EMA");
        let r = data(evs.last().unwrap());
        assert_eq!(
            r["response"]["output"][0]["content"][0]["text"],
            "jane@example.com [EMA"
        );
        let args: Value =
            serde_json::from_str(r["response"]["output"][1]["arguments"].as_str().unwrap())
                .unwrap();
        assert_eq!(args["k"], "sk-ant-\"quoted\"");
    }
}
