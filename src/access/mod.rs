//! The end of every request: the request metrics, its trace (`traces::capture`, when traces
//! are on) and one access line.
//! Runs from Pingora's `logging` hook, so it also runs for local answers, errors and client
//! disconnects. The line holds the key id, never the key. Lines are built only when the
//! access log is on, and handed to the writer thread (`sink`): the request never writes.

pub mod line;
pub mod settings;
pub mod sink;

use pingora::proxy::Session;

use crate::gateway::Ctx;
use crate::metrics;

pub fn record(s: &Session, e: Option<&pingora::Error>, ctx: &mut Ctx) {
    let status = s.response_written().map_or(0, |r| r.status.as_u16());
    let latency = ctx.start.elapsed();
    let provider = ctx.provider_name().to_string();
    let endpoint = ctx.endpoint.label();
    let forwarded = ctx.upstream_addr.is_some();
    if forwarded {
        metrics::INFLIGHT_REQUESTS.dec();
    }
    if ctx.counted_inflight {
        metrics::INFLIGHT_STREAMS.dec();
        ctx.counted_inflight = false;
    }
    let model_label = metrics::model_label(&ctx.client_model);
    metrics::REQUESTS
        .with_label_values(&[
            endpoint,
            provider.as_str(),
            model_label.as_str(),
            &status.to_string(),
        ])
        .inc();
    metrics::LATENCY
        .with_label_values(&[endpoint, provider.as_str()])
        .observe(latency.as_secs_f64());
    if let Some(t) = ctx.upstream_ttfb {
        metrics::UPSTREAM_TTFB
            .with_label_values(&[provider.as_str()])
            .observe(t.as_secs_f64());
    }
    let usage = ctx.tap.as_ref().and_then(|t| t.usage);
    if let Some(u) = usage {
        for (kind, n) in [
            ("input", u.input),
            ("output", u.output),
            ("cache_read", u.cache_read),
            ("cache_write", u.cache_write),
        ] {
            if n > 0 {
                metrics::TOKENS
                    .with_label_values(&[provider.as_str(), model_label.as_str(), kind])
                    .inc_by(n);
            }
        }
    }
    if ctx.tap.as_ref().is_some_and(|t| t.incomplete) {
        metrics::UPSTREAM_ERRORS
            .with_label_values(&[provider.as_str(), "stream_incomplete"])
            .inc();
    }
    if ctx.tool_calls > 0 {
        metrics::TOOL_CALLS
            .with_label_values(&[endpoint])
            .inc_by(ctx.tool_calls);
    }
    if matches!(
        ctx.endpoint,
        crate::endpoint::Endpoint::Metrics
            | crate::endpoint::Endpoint::Health
            | crate::endpoint::Endpoint::Root
    ) {
        return; // probes are counted, not logged
    }
    if let Some(format) = sink::format() {
        line(s, e, ctx, format, status, latency, &provider, usage);
    }
    crate::otel::finish(s, ctx, status, latency, usage);
    // Last: the trace takes the context's strings (the request ends here).
    crate::traces::capture(s, ctx, status, latency.as_millis() as u64, usage);
}

/// Builds the access line and hands it to the writer thread.
#[allow(clippy::too_many_arguments)]
fn line(
    s: &Session,
    e: Option<&pingora::Error>,
    ctx: &Ctx,
    format: settings::Format,
    status: u16,
    latency: std::time::Duration,
    provider: &str,
    usage: Option<crate::meter::Usage>,
) {
    let endpoint = ctx.endpoint.label();
    let error = ctx
        .error
        .clone()
        .or_else(|| e.map(|e| e.etype().as_str().to_string()));
    let h = s.req_header();
    let blocked = ctx.guard.as_ref().and_then(|g| g.blocked_profiles());
    let l = line::Line {
        ts: line::rfc3339_millis(crate::clock::now_millis()),
        request_id: &ctx.request_id,
        method: h.method.as_str(),
        path: h.uri.path(),
        endpoint,
        key_id: ctx.key.as_ref().map(|k| k.id.as_str()),
        user_id: ctx.user_id.as_deref(),
        model: &ctx.client_model,
        provider: (!provider.is_empty()).then_some(provider),
        upstream_model: ctx.route.as_ref().map(|r| r.model.as_str()),
        status,
        latency_ms: latency.as_millis() as u64,
        ttfb_ms: ctx.upstream_ttfb.map(|t| t.as_millis() as u64),
        bytes_out: ctx
            .tap
            .as_ref()
            .map_or(s.body_bytes_sent() as u64, |t| t.bytes_out),
        stream: ctx.stream,
        direct: ctx.direct,
        attempts: ctx.attempts,
        tokens_in: usage.map_or(0, |u| u.prompt_total()),
        tokens_out: usage.map_or(0, |u| u.output),
        tool_calls: ctx.tool_calls,
        client_gone: ctx.client_gone,
        guardrail_blocked: blocked.as_deref(),
        error: error.as_deref(),
    };
    sink::send(match format {
        settings::Format::Json => l.json(),
        settings::Format::Text => l.text(),
    });
}
