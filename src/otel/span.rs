//! The spans of one finished request, built from its context and phase recorder
//! (`phases`), with the OpenTelemetry GenAI semantic conventions: the request is a SERVER
//! span named `{gen_ai.operation.name} {gen_ai.request.model}`, each upstream attempt a
//! CLIENT span under it (named for the upstream model), the input guardrail stage and the
//! tool loop's tool calls INTERNAL spans. Attributes never hold a credential: the key's id,
//! never the key; no header is copied.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::phases::{Phases, SpanIds};
use crate::endpoint::Endpoint;
use crate::gateway::Ctx;
use crate::providers::ProviderKind;

/// What the end of the request knows beyond its context.
pub struct End<'a> {
    pub ctx: &'a Ctx,
    pub phases: &'a Phases,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub usage: Option<crate::meter::Usage>,
    /// `capture: full`: the redacted prompt and answer, as span events.
    pub content: Option<(String, Option<String>)>,
}

/// `gen_ai.operation.name` for an endpoint.
pub fn operation(e: Endpoint) -> &'static str {
    match e {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => "chat",
        Endpoint::Embeddings => "embeddings",
        other => other.label(),
    }
}

/// `gen_ai.provider.name` (the conventions' well-known values) for a provider kind.
pub fn provider_name(k: ProviderKind) -> &'static str {
    match k {
        ProviderKind::OpenAi => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
    }
}

fn context(ids: &SpanIds, span_id: u64) -> SpanContext {
    SpanContext::new(
        TraceId::from(ids.trace_id),
        SpanId::from(span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

struct Builder<'a> {
    ids: SpanIds,
    t0: SystemTime,
    scope: &'a InstrumentationScope,
}

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        span_id: u64,
        parent: u64,
        kind: SpanKind,
        name: String,
        start: Duration,
        end: Duration,
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: context(&self.ids, span_id),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: parent != 0 && parent == self.ids.parent,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: self.t0 + start,
            end_time: self.t0 + end.max(start),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

fn error_status(failed: bool, why: &str) -> Status {
    if failed {
        Status::error(why.to_string())
    } else {
        Status::Unset
    }
}

/// The request's spans: its own first, then its children.
pub fn build(end: &End, scope: &InstrumentationScope) -> Vec<SpanData> {
    let Some(ids) = end.phases.ids else {
        return Vec::new();
    };
    let ctx = end.ctx;
    let p = end.phases;
    let t0 = SystemTime::now()
        .checked_sub(end.latency)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let b = Builder { ids, t0, scope };
    let op = operation(ctx.endpoint);
    let mut out = Vec::with_capacity(2 + p.attempts.len() + p.tools.len());

    // The request.
    let mut a = vec![
        KeyValue::new("gen_ai.operation.name", op),
        KeyValue::new("gen_ai.request.model", ctx.client_model.clone()),
        KeyValue::new("http.request.method", end.method.to_string()),
        KeyValue::new("url.path", end.path.to_string()),
        KeyValue::new("http.response.status_code", end.status as i64),
        KeyValue::new("tollgate.request_id", ctx.request_id.clone()),
        KeyValue::new("tollgate.endpoint", ctx.endpoint.label()),
        KeyValue::new("tollgate.stream", ctx.stream),
        KeyValue::new("tollgate.attempts", ctx.attempts as i64),
        KeyValue::new("tollgate.cost_micros", p.cost_micros as i64),
    ];
    if let Some(r) = &ctx.route {
        a.push(KeyValue::new(
            "gen_ai.provider.name",
            provider_name(r.provider.kind),
        ));
        a.push(KeyValue::new("gen_ai.response.model", r.model.clone()));
        a.push(KeyValue::new("tollgate.provider", r.provider.name.clone()));
        a.push(KeyValue::new("tollgate.deployment", r.health.id.clone()));
    }
    let params = p.params;
    if let Some(v) = params.max_tokens {
        a.push(KeyValue::new("gen_ai.request.max_tokens", v as i64));
    }
    if let Some(v) = params.temperature {
        a.push(KeyValue::new("gen_ai.request.temperature", v));
    }
    if let Some(v) = params.top_p {
        a.push(KeyValue::new("gen_ai.request.top_p", v));
    }
    let usage_attrs = |u: &crate::meter::Usage| {
        vec![
            KeyValue::new("gen_ai.usage.input_tokens", u.prompt_total() as i64),
            KeyValue::new("gen_ai.usage.output_tokens", u.output as i64),
            KeyValue::new("gen_ai.usage.cache_read.input_tokens", u.cache_read as i64),
            KeyValue::new(
                "gen_ai.usage.cache_creation.input_tokens",
                u.cache_write as i64,
            ),
        ]
    };
    if let Some(u) = &end.usage {
        a.extend(usage_attrs(u));
    }
    if let Some(k) = &ctx.key {
        a.push(KeyValue::new("tollgate.key_id", k.id.clone()));
    }
    if let Some(u) = &ctx.user_id {
        a.push(KeyValue::new("tollgate.user_id", u.clone()));
    }
    if let Some(s) = &ctx.session_id {
        a.push(KeyValue::new("gen_ai.conversation.id", s.clone()));
    }
    if let Some(t) = ctx.upstream_ttfb {
        a.push(KeyValue::new(
            "tollgate.time_to_first_byte_ms",
            t.as_secs_f64() * 1000.0,
        ));
    }
    if ctx.tool_calls > 0 {
        a.push(KeyValue::new("tollgate.tool_calls", ctx.tool_calls as i64));
    }
    if ctx.client_gone {
        a.push(KeyValue::new("tollgate.client_gone", true));
    }
    if let Some(g) = ctx.guard.as_ref().and_then(|g| g.blocked_profiles()) {
        a.push(KeyValue::new("tollgate.guardrail_blocked", g));
    }
    let failed = end.status >= 500 || end.status == 0;
    if end.status >= 400 || end.status == 0 {
        a.push(KeyValue::new(
            "error.type",
            if end.status == 0 {
                "client_gone".to_string()
            } else {
                end.status.to_string()
            },
        ));
    }
    if let Some(e) = &ctx.error {
        a.push(KeyValue::new("tollgate.error", e.clone()));
    }
    let name = format!("{op} {}", ctx.client_model);
    let mut root = b.span(
        ids.span_id,
        ids.parent,
        SpanKind::Server,
        name,
        Duration::ZERO,
        end.latency,
        a,
        error_status(failed, ctx.error.as_deref().unwrap_or("error")),
    );
    if let Some((prompt, completion)) = &end.content {
        let at = |d: Duration| t0 + d;
        root.events.events.push(opentelemetry::trace::Event::new(
            "gen_ai.content.prompt",
            at(p.auth),
            vec![KeyValue::new("gen_ai.prompt", prompt.clone())],
            0,
        ));
        if let Some(c) = completion {
            root.events.events.push(opentelemetry::trace::Event::new(
                "gen_ai.content.completion",
                at(end.latency),
                vec![KeyValue::new("gen_ai.completion", c.clone())],
                0,
            ));
        }
    }
    out.push(root);

    // The input guardrail stage and its checks.
    if let Some((start, stop)) = p.guard {
        let guard_id = super::phases::new_span_id();
        // The checks run concurrently from the stage's start, each for its own latency.
        let checks: Vec<_> = ctx
            .guard
            .as_ref()
            .map(|g| g.outcomes())
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o.stage == "input")
            .collect();
        out.push(b.span(
            guard_id,
            ids.span_id,
            SpanKind::Internal,
            "guardrails input".to_string(),
            start,
            stop,
            vec![KeyValue::new(
                "tollgate.guardrail.checks",
                checks.len() as i64,
            )],
            Status::Unset,
        ));
        for c in checks {
            let end = (start + Duration::from_millis(c.latency_ms)).min(stop);
            out.push(b.span(
                super::phases::new_span_id(),
                guard_id,
                SpanKind::Internal,
                format!("guardrail {}", c.profile),
                start,
                end,
                vec![
                    KeyValue::new("tollgate.guardrail.profile", c.profile),
                    KeyValue::new("tollgate.guardrail.verdict", c.verdict),
                    KeyValue::new("tollgate.guardrail.blocked", c.blocked),
                ],
                Status::Unset,
            ));
        }
    }

    // Each upstream attempt.
    let last = p.attempts.len().saturating_sub(1);
    for (i, at) in p.attempts.iter().enumerate() {
        let ok = at.outcome == "ok";
        let mut a = vec![
            KeyValue::new("gen_ai.operation.name", op),
            KeyValue::new("gen_ai.provider.name", provider_name(at.provider_kind)),
            KeyValue::new("gen_ai.request.model", at.model.clone()),
            KeyValue::new("tollgate.provider", at.provider.clone()),
            KeyValue::new("tollgate.deployment", at.deployment.clone()),
            KeyValue::new("tollgate.attempt", (i + 1) as i64),
            KeyValue::new("tollgate.attempt.outcome", at.outcome),
        ];
        if at.status != 0 {
            a.push(KeyValue::new("http.response.status_code", at.status as i64));
        }
        if !ok {
            a.push(KeyValue::new("error.type", at.outcome));
        }
        if i == last && ok {
            a.push(KeyValue::new("gen_ai.response.model", at.model.clone()));
            if let Some(u) = &end.usage {
                a.extend(usage_attrs(u));
            }
        }
        let stop = at.end.unwrap_or(end.latency);
        out.push(b.span(
            at.span_id,
            ids.span_id,
            SpanKind::Client,
            format!("{op} {}", at.model),
            at.start,
            stop,
            a,
            error_status(!ok, at.outcome),
        ));
    }

    // The tool loop's tool calls.
    for t in &p.tools {
        out.push(b.span(
            t.span_id,
            ids.span_id,
            SpanKind::Internal,
            format!("execute_tool {}", t.name),
            t.start,
            t.end,
            vec![
                KeyValue::new("gen_ai.operation.name", "execute_tool"),
                KeyValue::new("gen_ai.tool.name", t.name.clone()),
                KeyValue::new("tollgate.tool.outcome", t.outcome.clone()),
            ],
            error_status(t.outcome != "ok", &t.outcome),
        ));
    }
    out
}
