//! `capture: full` of a streamed answer: the answer put back together from the events the
//! client received (in the client's format), instead of a copy of every chunk. Kept: the
//! text, the tool calls (id, name, arguments), the finish reason and the usage; the text and
//! arguments up to `max_body_bytes` in all. Stored as the trace's response body:
//! `{"text": ..., "tool_calls": [...], "finish_reason": ..., "usage": {...}}`.
//!
//! Runs only for requests traced with `capture: full`: it parses each event's JSON, which
//! the request path does not otherwise do for a passthrough stream.

use serde_json::{json, Map, Value};

use crate::translate::sse::{SseEvent, SseParser};
use crate::translate::Format;

#[derive(Debug, Default)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Debug)]
pub struct StreamAnswer {
    format: Format,
    parser: SseParser,
    max: usize,
    kept: usize,
    truncated: bool,
    text: String,
    tool_calls: Vec<ToolCall>,
    /// Where each tool call of the stream is in `tool_calls`, by the stream's own key
    /// (a chat delta's index, an Anthropic block index, a Responses item id).
    tool_keys: Vec<String>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl StreamAnswer {
    pub fn new(format: Format, max: usize) -> Self {
        StreamAnswer {
            format,
            // An event bigger than the kept answer cannot add to it.
            parser: SseParser::with_limit(max.saturating_add(64 * 1024)),
            max,
            kept: 0,
            truncated: false,
            text: String::new(),
            tool_calls: Vec::new(),
            tool_keys: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// Reads a piece of the stream sent to the client.
    pub fn feed(&mut self, b: &[u8]) {
        let mut events = Vec::new();
        self.parser.feed(b, &mut |ev| events.push(ev));
        for ev in events {
            self.on_event(ev);
        }
    }

    /// The answer as stored (and whether text or arguments were cut).
    pub fn finish(&mut self) -> (Vec<u8>, bool) {
        let mut events = Vec::new();
        self.parser.finish(&mut |ev| events.push(ev));
        for ev in events {
            self.on_event(ev);
        }
        let calls: Vec<Value> = self
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments}))
            .collect();
        let v = json!({
            "text": self.text,
            "tool_calls": calls,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
        });
        (
            serde_json::to_vec(&v).unwrap_or_default(),
            self.truncated || self.parser.overflowed(),
        )
    }

    /// Appends to the text or a tool call's arguments, within `max` bytes in all.
    fn keep(&mut self, into: Dest, s: &str) {
        let room = self.max.saturating_sub(self.kept);
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.truncated |= n < s.len();
        self.kept += n;
        match into {
            Dest::Text => self.text.push_str(&s[..n]),
            Dest::Args(i) => self.tool_calls[i].arguments.push_str(&s[..n]),
        }
    }

    /// The tool call the stream calls `key`, started when new.
    fn tool(&mut self, key: String) -> usize {
        match self.tool_keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                self.tool_keys.push(key);
                self.tool_calls.push(ToolCall::default());
                self.tool_calls.len() - 1
            }
        }
    }

    fn on_event(&mut self, ev: SseEvent) {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return; // `[DONE]`, keep-alives
        };
        match self.format {
            Format::Chat => self.chat(&v),
            Format::Anthropic => self.anthropic(&v),
            Format::Responses => self.responses(&v),
            Format::Gemini => self.gemini(&v),
        }
    }

    fn chat(&mut self, v: &Value) {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = v["choices"].get(0) else {
            return;
        };
        let d = &choice["delta"];
        if let Some(t) = d["content"].as_str() {
            self.keep(Dest::Text, t);
        }
        for tc in d["tool_calls"].as_array().into_iter().flatten() {
            let i = self.tool(tc["index"].as_u64().unwrap_or(0).to_string());
            if let Some(id) = tc["id"].as_str() {
                self.tool_calls[i].id = id.to_string();
            }
            if let Some(n) = tc["function"]["name"].as_str() {
                self.tool_calls[i].name.push_str(n);
            }
            if let Some(a) = tc["function"]["arguments"].as_str() {
                self.keep(Dest::Args(i), a);
            }
        }
        if let Some(r) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(r.to_string());
        }
    }

    fn anthropic(&mut self, v: &Value) {
        match v["type"].as_str() {
            Some("message_start") => {
                if let Some(u) = v["message"].get("usage") {
                    self.usage = Some(u.clone());
                }
            }
            Some("content_block_start") => {
                let b = &v["content_block"];
                if b["type"] == "tool_use" {
                    let i = self.tool(v["index"].to_string());
                    self.tool_calls[i].id = b["id"].as_str().unwrap_or("").to_string();
                    self.tool_calls[i].name = b["name"].as_str().unwrap_or("").to_string();
                } else if let Some(t) = b["text"].as_str() {
                    self.keep(Dest::Text, t);
                }
            }
            Some("content_block_delta") => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => self.keep(Dest::Text, d["text"].as_str().unwrap_or("")),
                    Some("input_json_delta") => {
                        let i = self.tool(v["index"].to_string());
                        self.keep(Dest::Args(i), d["partial_json"].as_str().unwrap_or(""));
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    self.finish_reason = Some(r.to_string());
                }
                // The final counts add to (and override) those of `message_start`.
                if let Some(Value::Object(u)) = v.get("usage") {
                    let mut all = match self.usage.take() {
                        Some(Value::Object(m)) => m,
                        _ => Map::new(),
                    };
                    all.extend(u.clone());
                    self.usage = Some(Value::Object(all));
                }
            }
            _ => {}
        }
    }

    fn responses(&mut self, v: &Value) {
        match v["type"].as_str() {
            Some("response.output_text.delta") => {
                self.keep(Dest::Text, v["delta"].as_str().unwrap_or(""))
            }
            Some("response.output_item.added") if v["item"]["type"] == "function_call" => {
                let it = &v["item"];
                let i = self.tool(it["id"].as_str().unwrap_or("").to_string());
                self.tool_calls[i].id = it["call_id"].as_str().unwrap_or("").to_string();
                self.tool_calls[i].name = it["name"].as_str().unwrap_or("").to_string();
            }
            Some("response.function_call_arguments.delta") => {
                let i = self.tool(v["item_id"].as_str().unwrap_or("").to_string());
                self.keep(Dest::Args(i), v["delta"].as_str().unwrap_or(""));
            }
            Some("response.completed" | "response.incomplete" | "response.failed") => {
                let r = &v["response"];
                self.finish_reason = r["status"].as_str().map(String::from);
                if let Some(u) = r.get("usage").filter(|u| u.is_object()) {
                    self.usage = Some(u.clone());
                }
            }
            _ => {}
        }
    }

    fn gemini(&mut self, v: &Value) {
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(u.clone());
        }
        let Some(c) = v["candidates"].get(0) else {
            return;
        };
        for p in c["content"]["parts"].as_array().into_iter().flatten() {
            if let Some(t) = p["text"].as_str() {
                self.keep(Dest::Text, t);
            } else if let Some(f) = p.get("functionCall") {
                let i = self.tool(self.tool_calls.len().to_string());
                self.tool_calls[i].name = f["name"].as_str().unwrap_or("").to_string();
                let args = f["args"].to_string();
                self.keep(Dest::Args(i), &args);
            }
        }
        if let Some(r) = c["finishReason"].as_str() {
            self.finish_reason = Some(r.to_string());
        }
    }
}

#[derive(Clone, Copy)]
enum Dest {
    Text,
    Args(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: Format, max: usize, stream: &str) -> (Value, bool) {
        let mut a = StreamAnswer::new(format, max);
        // in small pieces, as a stream arrives
        for piece in stream.as_bytes().chunks(7) {
            a.feed(piece);
        }
        let (b, cut) = a.finish();
        (serde_json::from_slice(&b).unwrap(), cut)
    }

    #[test]
    fn chat_stream_is_put_back_together() {
        let s = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let (v, cut) = run(Format::Chat, 1 << 20, s);
        assert!(!cut);
        assert_eq!(v["text"], "Hello");
        assert_eq!(
            v["tool_calls"],
            json!([{"id": "call_1", "name": "get", "arguments": "{\"a\":1}"}])
        );
        assert_eq!(v["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["completion_tokens"], 2);
        // cut at max bytes of text and arguments
        let (v, cut) = run(Format::Chat, 4, s);
        assert!(cut);
        assert_eq!(
            (v["text"].as_str(), v["tool_calls"][0]["arguments"].as_str()),
            (Some("Hell"), Some(""))
        );
    }

    #[test]
    fn anthropic_stream_is_put_back_together() {
        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi é\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tu_1\",\"name\":\"run\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        let (v, _) = run(Format::Anthropic, 1 << 20, s);
        assert_eq!(v["text"], "Hi é");
        assert_eq!(
            v["tool_calls"],
            json!([{"id": "tu_1", "name": "run", "arguments": "{}"}])
        );
        assert_eq!(v["finish_reason"], "tool_use");
        assert_eq!(v["usage"], json!({"input_tokens": 5, "output_tokens": 9}));
        // a cut never splits a character
        let (v, cut) = run(Format::Anthropic, 4, s);
        assert_eq!((v["text"].as_str(), cut), (Some("Hi "), true));
    }

    #[test]
    fn responses_and_gemini_streams_are_put_back_together() {
        let s = concat!(
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"ok\"}\n\n",
            "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_9\",\"name\":\"f\"}}\n\n",
            "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\",\"delta\":\"{}\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"usage\":{\"input_tokens\":1}}}\n\n"
        );
        let (v, _) = run(Format::Responses, 1 << 20, s);
        assert_eq!(v["text"], "ok");
        assert_eq!(
            v["tool_calls"][0],
            json!({"id": "call_9", "name": "f", "arguments": "{}"})
        );
        assert_eq!(
            (
                v["finish_reason"].as_str(),
                v["usage"]["input_tokens"].as_u64()
            ),
            (Some("completed"), Some(1))
        );
        let g = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\n\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"totalTokenCount\":3}}\n\n"
        );
        let (v, _) = run(Format::Gemini, 1 << 20, g);
        assert_eq!(
            (v["text"].as_str(), v["finish_reason"].as_str()),
            (Some("ab"), Some("STOP"))
        );
        assert_eq!(v["usage"]["totalTokenCount"], 3);
    }
}
