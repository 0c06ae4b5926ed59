//! A provider's error body → the error the client sees, in the client's format: the status
//! is kept (overload statuses are mapped between the families), the message is redacted, and
//! context-window overflows get the wording clients recover on (docs/translation.md, "Errors").

use serde_json::Value;

use super::shared::redact;
use super::{gemini_to_chat, Format};
use crate::error::{ErrorKind, GatewayError};

/// A provider's error body, answered with HTTP `status` in the provider's `format`.
pub fn from_body(upstream: Format, status: u16, body: &Value) -> GatewayError {
    match upstream {
        Format::Gemini => gemini_to_chat::error_from_body(status, body),
        _ => from_openai_or_anthropic(status, body, upstream),
    }
}

/// An OpenAI or Anthropic error body → a [`GatewayError`] with the same status, to be
/// rendered in the client's format. Provider secrets are redacted from the message.
fn from_openai_or_anthropic(status: u16, v: &Value, upstream: Format) -> GatewayError {
    let raw = v
        .pointer("/error/message")
        .and_then(|m| m.as_str())
        .unwrap_or("");
    let mut msg = if raw.is_empty() {
        format!("The provider answered HTTP {status}.")
    } else {
        redact(raw)
    };
    let kind = match status {
        400 | 409 | 413 | 422 => ErrorKind::InvalidRequest,
        404 => ErrorKind::NotFound,
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::Unavailable,
        504 => ErrorKind::UpstreamTimeout,
        _ if status >= 500 => ErrorKind::Upstream,
        _ => ErrorKind::InvalidRequest,
    };
    // Overload statuses in the other family's terms (E13): Anthropic's 529 is a 503 to OpenAI
    // clients, an OpenAI-side 503 is Anthropic's 529 overloaded_error.
    let status = match (upstream, status) {
        (Format::Anthropic, 529) => 503,
        (Format::Chat, 503) => 529,
        _ => status,
    };
    let mut e = GatewayError::new(kind, String::new()).with_status(status);
    // Context-window overflow, in the wording each client family keys its recovery on (E14).
    match upstream {
        Format::Chat
            if v.pointer("/error/code").and_then(|c| c.as_str())
                == Some("context_length_exceeded")
                || raw.contains("maximum context length") =>
        {
            let nums: Vec<u64> = raw
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [max, used, ..] = nums[..] {
                msg = format!("prompt is too long: {used} tokens > {max} maximum");
            } else {
                msg = format!("prompt is too long: {msg}");
            }
        }
        Format::Anthropic if raw.starts_with("prompt is too long") => {
            e = e.with_code("context_length_exceeded")
        }
        _ => {}
    }
    e.message = msg;
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overload_statuses_are_mapped_between_families() {
        let v = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        let e = from_body(Format::Anthropic, 529, &v);
        assert_eq!(e.status(), 503);
        let v = json!({"error": {"message": "busy", "type": "server_error"}});
        let e = from_body(Format::Chat, 503, &v);
        assert_eq!(e.status(), 529);
        let body: Value = serde_json::from_slice(&e.body(Format::Anthropic)).unwrap();
        assert_eq!(body["error"]["type"], "overloaded_error");
    }

    #[test]
    fn context_overflow_is_worded_for_each_client() {
        let v: Value = serde_json::from_str(r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130542 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#).unwrap();
        let e = from_body(Format::Chat, 400, &v);
        assert_eq!(
            e.message,
            "prompt is too long: 130542 tokens > 128000 maximum"
        );
        assert_eq!(e.status(), 400);
        let v: Value = serde_json::from_str(r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#).unwrap();
        let e = from_body(Format::Anthropic, 400, &v);
        assert_eq!(e.code, Some("context_length_exceeded"));
    }
}
