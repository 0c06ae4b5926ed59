//! One error type for everything tollgate answers itself, rendered as the native envelope of
//! the endpoint: OpenAI `{"error":{message,type,param,code}}` on the OpenAI surface, Anthropic
//! `{"type":"error","error":{type,message}}` on `/v1/messages`.
//!
//! Messages never carry secrets: callers build them from names and ids only.

use bytes::Bytes;
use serde_json::json;

use crate::translate::Format;

/// What went wrong, which fixes the status and both dialects' type strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    BudgetExceeded,
    PaymentRequired,
    Upstream,
    UpstreamTimeout,
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    /// OpenAI's `param` (the offending field), when one is known.
    pub param: Option<String>,
    /// OpenAI's `code`, a stable machine-readable reason.
    pub code: Option<&'static str>,
    /// Seconds, sent as `retry-after` (u32: keeps the error, which every refusal carries,
    /// small).
    pub retry_after: Option<u32>,
    /// Overrides the kind's default status (used to pass upstream statuses through).
    pub status_override: Option<u16>,
    /// More members of the error object, in both envelopes (a guardrail refusal's flagged
    /// checks).
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            status_override: None,
            extra: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn with_param(mut self, p: impl Into<String>) -> Self {
        self.param = Some(p.into());
        self
    }

    pub fn with_code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }

    pub fn with_retry_after(mut self, s: u64) -> Self {
        self.retry_after = Some(u32::try_from(s).unwrap_or(u32::MAX));
        self
    }

    pub fn with_status(mut self, s: u16) -> Self {
        self.status_override = Some(s);
        self
    }

    /// Adds a member to the error object (`code` and `message` stay the envelope's).
    pub fn with_member(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(name.to_string(), value);
        self
    }

    pub fn status(&self) -> u16 {
        if let Some(s) = self.status_override {
            return s;
        }
        match self.kind {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PaymentRequired => 402,
            ErrorKind::PermissionDenied | ErrorKind::BudgetExceeded => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Upstream => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::UpstreamTimeout => 504,
        }
    }

    fn openai_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::PayloadTooLarge => {
                "invalid_request_error"
            }
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::BudgetExceeded | ErrorKind::PaymentRequired => "insufficient_quota",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Upstream | ErrorKind::UpstreamTimeout => "upstream_error",
            ErrorKind::Unavailable | ErrorKind::Internal => "server_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::PaymentRequired => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied | ErrorKind::BudgetExceeded => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::PayloadTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Unavailable => "overloaded_error",
            ErrorKind::Upstream | ErrorKind::UpstreamTimeout | ErrorKind::Internal => "api_error",
        }
    }

    /// The JSON body in the envelope of the given client format. Responses uses OpenAI's
    /// envelope over HTTP (its in-stream failures differ, see [`Self::sse_event`]); Gemini is
    /// never a client format and gets OpenAI's too.
    pub fn body(&self, format: Format) -> Bytes {
        Bytes::from(self.envelope(format).to_string())
    }

    fn envelope(&self, format: Format) -> serde_json::Value {
        let mut v = match format {
            Format::Chat | Format::Responses | Format::Gemini => json!({
                "error": {
                    "message": self.message,
                    "type": self.openai_type(),
                    "param": self.param,
                    "code": self.code,
                }
            }),
            Format::Anthropic => {
                let mut v = json!({
                    "type": "error",
                    "error": { "type": self.anthropic_type(), "message": self.message }
                });
                // Anthropic's envelope has no `code`; tollgate's own reasons still say theirs.
                if let (Some(code), Some(e)) = (self.code, v["error"].as_object_mut()) {
                    if self.extra.is_some() {
                        e.insert("code".into(), json!(code));
                    }
                }
                v
            }
        };
        if let (Some(extra), Some(e)) = (&self.extra, v["error"].as_object_mut()) {
            for (k, x) in extra.iter() {
                e.entry(k.clone()).or_insert_with(|| x.clone());
            }
        }
        v
    }

    /// An in-stream error event that ends a Server-Sent Events stream in the given client
    /// format: Anthropic's `event: error`, an OpenAI error chunk, or Responses'
    /// `response.failed` (Codex reads no other).
    pub fn sse_event(&self, format: Format) -> Bytes {
        if format == Format::Responses {
            return self.responses_failed_event(0, None);
        }
        let mut out = Vec::with_capacity(128 + self.message.len());
        let name = (format == Format::Anthropic).then_some("error");
        crate::translate::sse::write_json(&mut out, name, &self.envelope(format));
        Bytes::from(out)
    }

    /// The `code` a Responses client reads in `response.failed` (Codex special-cases these).
    pub fn responses_code(&self) -> &'static str {
        if let Some(c) = self.code {
            return c;
        }
        match self.kind {
            ErrorKind::RateLimited => "rate_limit_exceeded",
            ErrorKind::BudgetExceeded | ErrorKind::PaymentRequired => "insufficient_quota",
            ErrorKind::InvalidRequest | ErrorKind::NotFound | ErrorKind::PayloadTooLarge => {
                "invalid_request_error"
            }
            ErrorKind::UpstreamTimeout => "timeout",
            _ => "server_error",
        }
    }

    /// A Responses `response.failed` event; `response` is the response object so far
    /// (id, model, output) when the stream had one.
    pub fn responses_failed_event(&self, seq: u64, response: Option<serde_json::Value>) -> Bytes {
        let mut r = response.unwrap_or_else(|| json!({"object": "response", "output": []}));
        r["status"] = json!("failed");
        r["error"] = json!({"code": self.responses_code(), "message": self.message});
        let v = json!({"type": "response.failed", "sequence_number": seq, "response": r});
        let mut out = Vec::with_capacity(512);
        crate::translate::sse::write_json(&mut out, Some("response.failed"), &v);
        Bytes::from(out)
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status())
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn openai_envelope() {
        let e = GatewayError::invalid("bad")
            .with_param("model")
            .with_code("model_not_found");
        let v: Value = serde_json::from_slice(&e.body(Format::Chat)).unwrap();
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn anthropic_envelope() {
        let e = GatewayError::new(ErrorKind::Authentication, "nope");
        let v: Value = serde_json::from_slice(&e.body(Format::Anthropic)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
        assert_eq!(v["error"]["message"], "nope");
        assert_eq!(e.status(), 401);
        let ev = e.sse_event(Format::Anthropic);
        assert!(ev.starts_with(b"event: error\ndata: {"));
        assert!(ev.ends_with(b"\n\n"));
    }

    #[test]
    fn extra_members_in_both_envelopes() {
        let e = GatewayError::new(ErrorKind::PermissionDenied, "no")
            .with_code("guardrail_violation")
            .with_member("guardrails", json!([{"profile": "p"}]));
        let o: Value = serde_json::from_slice(&e.body(Format::Chat)).unwrap();
        assert_eq!(o["error"]["code"], "guardrail_violation");
        assert_eq!(o["error"]["guardrails"][0]["profile"], "p");
        let a: Value = serde_json::from_slice(&e.body(Format::Anthropic)).unwrap();
        assert_eq!(a["error"]["type"], "permission_error");
        assert_eq!(a["error"]["code"], "guardrail_violation");
        assert_eq!(a["error"]["guardrails"][0]["profile"], "p");
    }

    #[test]
    fn statuses() {
        assert_eq!(
            GatewayError::new(ErrorKind::PayloadTooLarge, "").status(),
            413
        );
        assert_eq!(GatewayError::new(ErrorKind::Upstream, "").status(), 502);
        assert_eq!(
            GatewayError::new(ErrorKind::UpstreamTimeout, "").status(),
            504
        );
        assert_eq!(
            GatewayError::new(ErrorKind::BudgetExceeded, "").status(),
            403
        );
        assert_eq!(
            GatewayError::new(ErrorKind::RateLimited, "")
                .with_status(529)
                .status(),
            529
        );
    }
}
