//! Token metering from what the upstream sends: usage read from JSON bodies and from SSE
//! streams as they pass (never by buffering a stream). Canonical numbers follow
//! wire-formats §4.1: `input` excludes cache reads and writes, `reasoning` is part of `output`.

use serde_json::Value;

pub mod count;
pub mod price;
pub mod record;

use crate::translate::sse::{SseEvent, SseParser};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens that were neither read from nor written to a cache.
    pub input: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub output: u64,
    /// Reasoning tokens (already counted in `output`).
    pub reasoning: u64,
}

impl Usage {
    pub fn prompt_total(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }

    pub fn total(&self) -> u64 {
        self.prompt_total() + self.output
    }
}

/// The response dialect being metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAiChat,
    Anthropic,
    Responses,
    /// Embeddings and moderations: usage in the JSON body, if at all.
    OpenAiOther,
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

/// OpenAI `usage` object (chat, embeddings): prompt counts include cached tokens.
fn from_openai(usage: &Value) -> Option<Usage> {
    let prompt = u(usage, &["prompt_tokens"])?;
    let cached = u(usage, &["prompt_tokens_details", "cached_tokens"])
        .or_else(|| u(usage, &["prompt_cache_hit_tokens"])) // DeepSeek
        .unwrap_or(0);
    let write = u(usage, &["prompt_tokens_details", "cache_write_tokens"]).unwrap_or(0);
    Some(Usage {
        input: prompt.saturating_sub(cached + write),
        cache_read: cached,
        cache_write: write,
        output: u(usage, &["completion_tokens"]).unwrap_or(0),
        reasoning: u(usage, &["completion_tokens_details", "reasoning_tokens"]).unwrap_or(0),
    })
}

/// Responses `usage`: like OpenAI's with other names.
fn from_responses(usage: &Value) -> Option<Usage> {
    let input = u(usage, &["input_tokens"])?;
    let cached = u(usage, &["input_tokens_details", "cached_tokens"]).unwrap_or(0);
    Some(Usage {
        input: input.saturating_sub(cached),
        cache_read: cached,
        cache_write: 0,
        output: u(usage, &["output_tokens"]).unwrap_or(0),
        reasoning: u(usage, &["output_tokens_details", "reasoning_tokens"]).unwrap_or(0),
    })
}

/// Anthropic `usage`: fields present overwrite `base` (message_delta carries cumulative values).
fn merge_anthropic(base: &mut Usage, usage: &Value) -> bool {
    let mut any = false;
    let mut set = |dst: &mut u64, key: &str| {
        if let Some(n) = u(usage, &[key]) {
            *dst = n;
            any = true;
        }
    };
    set(&mut base.input, "input_tokens");
    set(&mut base.cache_read, "cache_read_input_tokens");
    set(&mut base.cache_write, "cache_creation_input_tokens");
    set(&mut base.output, "output_tokens");
    any
}

/// Usage from a complete (non-streamed) response body.
pub fn usage_from_body(wire: Wire, body: &Value) -> Option<Usage> {
    let usage = body.get("usage")?;
    match wire {
        Wire::OpenAiChat | Wire::OpenAiOther => from_openai(usage),
        Wire::Responses => from_responses(usage),
        Wire::Anthropic => {
            let mut out = Usage::default();
            merge_anthropic(&mut out, usage).then_some(out)
        }
    }
}

/// Watches a stream go by and keeps the usage it reports and whether it ended properly.
#[derive(Debug)]
pub struct StreamMeter {
    wire: Wire,
    parser: SseParser,
    pub usage: Usage,
    pub saw_usage: bool,
    /// The dialect's terminal event was seen (`[DONE]`, `message_stop`, `response.completed`).
    pub completed: bool,
    /// An in-stream error event was seen.
    pub errored: bool,
    pub events: u64,
}

impl StreamMeter {
    pub fn new(wire: Wire) -> Self {
        StreamMeter {
            wire,
            parser: SseParser::new(),
            usage: Usage::default(),
            saw_usage: false,
            completed: false,
            errored: false,
            events: 0,
        }
    }

    pub fn observe(&mut self, bytes: &[u8]) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.feed(bytes, &mut |ev| self.on_event(ev));
        self.parser = parser;
    }

    pub fn finish(&mut self) {
        let mut parser = std::mem::take(&mut self.parser);
        parser.finish(&mut |ev| self.on_event(ev));
        self.parser = parser;
    }

    fn on_event(&mut self, ev: SseEvent) {
        self.events += 1;
        let name = ev.event.as_deref();
        if ev.data == "[DONE]" {
            self.completed = true;
            return;
        }
        if name == Some("ping") {
            return;
        }
        // Only parse what can carry usage or end the stream: most events are text deltas.
        let interesting = ev.data.contains("usage")
            || ev.data.contains("\"error\"")
            || matches!(name, Some("message_stop") | Some("error"))
            || ev.data.contains("response.completed")
            || ev.data.contains("response.failed")
            || ev.data.contains("response.incomplete");
        if !interesting {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        let ty = v.get("type").and_then(Value::as_str).or(name).unwrap_or("");
        match self.wire {
            Wire::OpenAiChat | Wire::OpenAiOther => {
                if v.get("error").is_some() {
                    self.errored = true;
                }
                if let Some(us) = v
                    .get("usage")
                    .filter(|u| !u.is_null())
                    .and_then(from_openai)
                {
                    self.usage = us;
                    self.saw_usage = true;
                }
            }
            Wire::Anthropic => match ty {
                "message_start" => {
                    if let Some(us) = v.pointer("/message/usage") {
                        self.saw_usage |= merge_anthropic(&mut self.usage, us);
                    }
                }
                "message_delta" => {
                    if let Some(us) = v.get("usage") {
                        self.saw_usage |= merge_anthropic(&mut self.usage, us);
                    }
                }
                "message_stop" => self.completed = true,
                "error" => self.errored = true,
                _ => {}
            },
            Wire::Responses => match ty {
                "response.completed" | "response.incomplete" | "response.failed" => {
                    if let Some(us) = v.pointer("/response/usage").and_then(from_responses) {
                        self.usage = us;
                        self.saw_usage = true;
                    }
                    self.completed = ty == "response.completed";
                    self.errored |= ty == "response.failed";
                }
                "error" => self.errored = true,
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_stream_usage_chunk() {
        let mut m = StreamMeter::new(Wire::OpenAiChat);
        m.observe(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\ndata: [DONE]\n\n");
        assert!(m.completed && m.saw_usage);
        assert_eq!(
            m.usage,
            Usage {
                input: 6,
                cache_read: 4,
                cache_write: 0,
                output: 3,
                reasoning: 0
            }
        );
    }

    #[test]
    fn anthropic_stream_usage_merges_start_and_delta() {
        let mut m = StreamMeter::new(Wire::Anthropic);
        let s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":5,\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        for b in s.as_bytes().chunks(7) {
            m.observe(b);
        }
        assert!(m.completed);
        assert_eq!(
            m.usage,
            Usage {
                input: 20,
                cache_read: 5,
                cache_write: 2,
                output: 9,
                reasoning: 0
            }
        );
        assert_eq!(m.usage.total(), 36);
    }

    #[test]
    fn truncated_stream_is_not_completed() {
        let mut m = StreamMeter::new(Wire::Anthropic);
        m.observe(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":20}}}\n\n");
        m.finish();
        assert!(!m.completed);
        assert_eq!(m.usage.input, 20);
    }

    #[test]
    fn bodies() {
        let b = json!({"usage": {"prompt_tokens": 7, "completion_tokens": 2}});
        assert_eq!(usage_from_body(Wire::OpenAiChat, &b).unwrap().total(), 9);
        let b =
            json!({"usage": {"input_tokens": 7, "output_tokens": 2, "cache_read_input_tokens": 1}});
        assert_eq!(usage_from_body(Wire::Anthropic, &b).unwrap().total(), 10);
        let b = json!({"usage": {"input_tokens": 7, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 3}}});
        assert_eq!(
            usage_from_body(Wire::Responses, &b).unwrap(),
            Usage {
                input: 4,
                cache_read: 3,
                cache_write: 0,
                output: 2,
                reasoning: 0
            }
        );
    }
}
