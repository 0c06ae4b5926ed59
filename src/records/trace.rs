//! A request trace (`traces.capture: metadata` or `full`): what happened to one request, kept
//! for `GET /v1/traces`. Metadata: ids, routing, timings, attempts, usage; never a credential
//! or a header. With `capture: full`, also the bodies, redacted (`traces::redact`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The answer's `x-request-id` (a client may reuse one: the newest trace wins a lookup).
    pub request_id: String,
    /// Milliseconds since the Unix epoch, at the end of the request.
    pub ts_ms: u64,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub endpoint: String,
    pub method: String,
    pub path: String,
    /// The model the client asked for; the provider and model that served it.
    pub model: String,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    /// The client's format and the provider's (equal: passthrough; else translated).
    pub client_format: String,
    pub upstream_format: Option<String>,
    pub stream: bool,
    pub status: u16,
    /// Phase timings from the request's start, in milliseconds.
    pub timings: Timings,
    /// Upstream attempts made, and why each failed one failed (in order).
    pub attempts: u32,
    pub failed_attempts: Vec<String>,
    pub usage: TraceUsage,
    pub tool_calls: u64,
    pub client_gone: bool,
    pub guardrail_blocked: Option<String>,
    pub error: Option<String>,
    /// `capture: full` only (absent otherwise and in older traces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bodies: Option<TraceBodies>,
}

/// The bodies of a `capture: full` trace, redacted and cut at `traces.max_body_bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceBodies {
    /// The client's request body, as received.
    pub request: Option<TraceBody>,
    /// The body sent upstream (after translation, in the provider's format).
    pub upstream_request: Option<TraceBody>,
    /// The answer sent to the client (non-streamed requests).
    pub response: Option<TraceBody>,
    /// A streamed answer: the number of events sent to the client (its text is not kept).
    pub stream_events: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceBody {
    pub text: String,
    /// The body was longer than `max_body_bytes` and was cut.
    pub truncated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// First byte from the upstream.
    pub first_byte_ms: Option<u64>,
    /// The answer's last byte to the client (the request's duration).
    pub last_byte_ms: u64,
    // Each phase, in microseconds from the request's start (absent in older traces).
    /// Authentication done.
    #[serde(default)]
    pub auth_us: Option<u64>,
    /// The model routed (deployment and alternates chosen).
    #[serde(default)]
    pub routing_us: Option<u64>,
    /// The input guardrail checks.
    #[serde(default)]
    pub guardrails: Option<PhaseSpan>,
    /// Each upstream attempt, in order (a tool loop's turns each add theirs).
    #[serde(default)]
    pub attempts: Vec<AttemptTiming>,
    /// First byte from the upstream.
    #[serde(default)]
    pub first_byte_us: Option<u64>,
    /// Settlement (budgets, usage record) after the last byte.
    #[serde(default)]
    pub settle: Option<PhaseSpan>,
}

/// A phase's start and end, in microseconds from the request's start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseSpan {
    pub start_us: u64,
    pub end_us: u64,
}

/// One upstream attempt: its deployment, when it ran, the provider's status (0: none) and
/// its outcome (`ok`, or why it failed: `connect`, `status_5xx`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptTiming {
    pub deployment: String,
    pub start_us: u64,
    pub end_us: Option<u64>,
    pub status: u16,
    pub outcome: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

/// Filters of `GET /v1/traces`. Times are milliseconds since the epoch, `[from, to)`.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub session_id: Option<String>,
    pub status: Option<u16>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub min_latency_ms: Option<u64>,
}

impl TraceFilter {
    pub fn matches(&self, t: &Trace) -> bool {
        let eq = |f: &Option<String>, v: Option<&str>| f.as_deref().is_none_or(|f| Some(f) == v);
        eq(&self.key_id, t.key_id.as_deref())
            && eq(&self.user_id, t.user_id.as_deref())
            && eq(&self.model, Some(t.model.as_str()))
            && eq(&self.session_id, t.session_id.as_deref())
            && self.status.is_none_or(|s| s == t.status)
            && self.from_ms.is_none_or(|f| t.ts_ms >= f)
            && self.to_ms.is_none_or(|to| t.ts_ms < to)
            && self
                .min_latency_ms
                .is_none_or(|m| t.timings.last_byte_ms >= m)
    }
}

/// A page of traces, newest first, with the cursor of the next (older) page.
#[derive(Debug, Clone, Default)]
pub struct TracePage {
    pub traces: Vec<Trace>,
    pub next_cursor: Option<String>,
}
