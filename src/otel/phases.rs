//! The phase recorder: when a request is traced (`traces::decide`) or sampled for
//! OpenTelemetry, `Ctx::phases` holds when each phase began and ended (offsets from the
//! request's start) and, for OpenTelemetry, the span ids assigned up front (the attempt's id
//! goes to the provider in `traceparent` before the span exists). Spans and the stored
//! trace's timings are built from it at the end of the request; for any other request it
//! is `None` and each hook is one branch.

use std::time::{Duration, Instant};

/// The ids of a request sampled for OpenTelemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: u128,
    /// The request's own (server) span.
    pub span_id: u64,
    /// The client's span (`traceparent`), 0 when the trace starts here.
    pub parent: u64,
}

/// One upstream attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub span_id: u64,
    pub start: Duration,
    pub end: Option<Duration>,
    /// The deployment (`provider` or `provider/model` id), its provider and upstream model.
    pub deployment: String,
    pub provider: String,
    pub provider_kind: crate::providers::ProviderKind,
    pub model: String,
    /// The provider's status (0: no answer) and the outcome (`ok` or why it failed).
    pub status: u16,
    pub outcome: &'static str,
}

/// One tool call of the tool loop.
#[derive(Debug, Clone)]
pub struct Step {
    pub span_id: u64,
    pub name: String,
    pub start: Duration,
    pub end: Duration,
    pub outcome: String,
}

#[derive(Debug, Default)]
pub struct Phases {
    pub ids: Option<SpanIds>,
    pub auth: Duration,
    pub routed: Option<Duration>,
    /// The input guardrail stage (its checks' verdicts and latencies are on `Ctx::guard`).
    pub guard: Option<(Duration, Duration)>,
    pub attempts: Vec<Attempt>,
    pub tools: Vec<Step>,
    pub settle: Option<(Duration, Duration)>,
    /// What the request and its settled turns cost, in micro-dollars.
    pub cost_micros: u64,
    /// The request's generation parameters (sampled for export only).
    pub params: Params,
}

/// `max_tokens` (or its newer names), `temperature`, `top_p` from the client's body.
#[derive(Debug, Default, Clone, Copy)]
pub struct Params {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
}

/// The sampling parameters, which the request's peek does not read.
#[derive(serde::Deserialize)]
struct Sampling {
    temperature: Option<f64>,
    top_p: Option<f64>,
}

impl Params {
    /// From the peeked fields (`max_tokens` and its newer names) and, for the sampling
    /// parameters, a parse of the body that skips everything else (sampled requests only).
    pub fn read(fields: &serde_json::Map<String, serde_json::Value>, body: &[u8]) -> Params {
        let s = serde_json::from_slice::<Sampling>(body).ok();
        Params {
            max_tokens: ["max_tokens", "max_completion_tokens", "max_output_tokens"]
                .iter()
                .find_map(|k| fields.get(*k).and_then(|v| v.as_u64())),
            temperature: s.as_ref().and_then(|s| s.temperature),
            top_p: s.as_ref().and_then(|s| s.top_p),
        }
    }
}

/// A random non-zero id.
pub fn new_span_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

impl Phases {
    pub fn new(ids: Option<SpanIds>, start: Instant) -> Box<Phases> {
        Box::new(Phases {
            ids,
            auth: start.elapsed(),
            ..Default::default()
        })
    }

    /// An attempt begins; returns the span id sent to the provider (0: not sampled).
    pub fn attempt_start(&mut self, start: Instant, route: &crate::route::Route) -> u64 {
        let span_id = if self.ids.is_some() { new_span_id() } else { 0 };
        // One still open was given up (Pingora's proxy path retrying a connect).
        self.attempt_end(start, 0, "retried");
        self.attempts.push(Attempt {
            span_id,
            start: start.elapsed(),
            end: None,
            deployment: route.health.id.clone(),
            provider: route.provider.name.clone(),
            provider_kind: route.provider.kind,
            model: route.model.clone(),
            status: 0,
            outcome: "ok",
        });
        span_id
    }

    /// The open attempt ends with the provider's `status` (0: none) and `outcome`.
    pub fn attempt_end(&mut self, start: Instant, status: u16, outcome: &'static str) {
        if let Some(a) = self.attempts.last_mut().filter(|a| a.end.is_none()) {
            a.end = Some(start.elapsed());
            a.status = status;
            a.outcome = outcome;
        }
    }

    /// The `traceparent` for the provider: the open attempt's span as the parent.
    pub fn traceparent(&self) -> Option<String> {
        let ids = self.ids?;
        let a = self.attempts.last()?;
        Some(super::propagation::format(ids.trace_id, a.span_id, true))
    }
}
