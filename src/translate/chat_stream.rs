//! Writing an OpenAI chat stream for a client: the chunk envelope, the role chunk that opens
//! it, the usage chunk and `[DONE]` that end it, and the error chunk that ends it early.
//! Shared by every transcoder whose client speaks Chat (Anthropic → Chat, Gemini → Chat).

use bytes::BytesMut;
use serde_json::{json, Value};

use super::lifecycle::{ClientStream, Phase};
use super::shared::usage_to_openai;
use super::sse::{write_json, DONE, KEEPALIVE_COMMENT};
use super::{Format, Stamp};
use crate::error::GatewayError;
use crate::meter::Usage;

/// The client side of a stream translated into Chat.
#[derive(Debug)]
pub struct ChatWriter {
    id: String,
    created: u64,
    client_model: String,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    include_usage: bool,
    /// The upstream's usage so far, for the usage chunk.
    pub(super) usage: Usage,
    pub(super) saw_usage: bool,
}

impl ChatWriter {
    pub fn new(client_model: &str, include_usage: bool, stamp: &Stamp) -> Self {
        ChatWriter {
            id: format!("chatcmpl-{}", stamp.token),
            created: stamp.now,
            client_model: client_model.to_string(),
            include_usage,
            usage: Usage::default(),
            saw_usage: false,
        }
    }

    /// The usage the upstream reported, if it did.
    pub fn usage(&self) -> Option<Usage> {
        self.saw_usage.then_some(self.usage)
    }

    /// One chunk with one choice.
    pub fn chunk(&self, out: &mut BytesMut, delta: Value, finish: Value) {
        let mut v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.client_model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        write_json(out, None, &v);
    }
}

impl ClientStream for ChatWriter {
    /// The first chunk: the assistant's role.
    fn start(&mut self, out: &mut BytesMut) {
        self.chunk(
            out,
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        );
    }

    /// The end: the usage chunk (when asked for) and `[DONE]`.
    fn complete(&mut self, _: &mut Phase, out: &mut BytesMut) {
        if self.include_usage {
            let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.client_model,
                "choices": [], "usage": usage_to_openai(&self.usage)});
            write_json(out, None, &v);
        }
        out.extend_from_slice(DONE);
    }

    /// An error chunk, which ends the stream.
    fn fail(&mut self, e: GatewayError, _: &mut Phase, out: &mut BytesMut) {
        out.extend_from_slice(&e.sse_event(Format::Chat));
    }

    fn keepalive(&mut self, _: &mut Phase, out: &mut BytesMut) {
        out.extend_from_slice(KEEPALIVE_COMMENT);
    }
}

/// A chat.completion rendered as the chunk sequence a streaming client expects (the upstream
/// answered without streaming: docs/translation.md, E48).
pub fn completion_to_chunks(v: &Value, include_usage: bool) -> BytesMut {
    let mut out = BytesMut::new();
    let base = |choices: Value| {
        let mut c = json!({"id": v["id"], "object": "chat.completion.chunk", "created": v["created"], "model": v["model"], "choices": choices});
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut push = |c: Value| write_json(&mut out, None, &c);
    let msg = &v["choices"][0]["message"];
    push(base(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
    ));
    if let Some(r) = msg.get("reasoning_content").filter(|r| r.is_string()) {
        push(base(
            json!([{"index": 0, "delta": {"reasoning_content": r}, "finish_reason": null}]),
        ));
    }
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        push(base(
            json!([{"index": 0, "delta": {"content": t}, "finish_reason": null}]),
        ));
    }
    if let Some(t) = msg
        .get("refusal")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        push(base(
            json!([{"index": 0, "delta": {"refusal": t}, "finish_reason": null}]),
        ));
    }
    for (k, call) in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        push(base(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": k, "id": call["id"], "type": "function", "function": call["function"]}]}, "finish_reason": null}]),
        ));
    }
    push(base(
        json!([{"index": 0, "delta": {}, "finish_reason": v["choices"][0]["finish_reason"]}]),
    ));
    if include_usage {
        let mut u = base(json!([]));
        u["usage"] = v["usage"].clone();
        push(u);
    }
    out.extend_from_slice(DONE);
    out
}
