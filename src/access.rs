//! The end of every request: one structured access line and the request metrics.
//! Runs from Pingora's `logging` hook, so it also runs for local answers, errors and client
//! disconnects. The line holds the key id, never the key.

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
    if matches!(
        ctx.endpoint,
        crate::endpoint::Endpoint::Metrics
            | crate::endpoint::Endpoint::Health
            | crate::endpoint::Endpoint::Root
    ) {
        return; // probes are counted, not logged
    }
    let error = ctx
        .error
        .clone()
        .or_else(|| e.map(|e| e.etype().as_str().to_string()))
        .unwrap_or_default();
    let h = s.req_header();
    log::info!(
        target: "tollgate::access",
        "rid={} method={} path={} endpoint={} key={} model={:?} provider={} upstream_model={:?} status={} latency_ms={} ttfb_ms={} bytes_out={} stream={} large_body={} tokens_in={} tokens_out={} client_gone={} guardrail_blocked={} error={:?}",
        ctx.request_id,
        h.method,
        h.uri.path().escape_debug(),
        endpoint,
        ctx.key.as_ref().map_or("-", |k| k.id.as_str()),
        ctx.client_model,
        if provider.is_empty() { "-" } else { provider.as_str() },
        ctx.route.as_ref().map_or("", |r| r.model.as_str()),
        status,
        latency.as_millis(),
        ctx.upstream_ttfb.map_or(-1, |t| t.as_millis() as i64),
        ctx.tap.as_ref().map_or(s.body_bytes_sent() as u64, |t| t.bytes_out),
        ctx.stream,
        ctx.direct,
        usage.map_or(0, |u| u.prompt_total()),
        usage.map_or(0, |u| u.output),
        ctx.client_gone,
        ctx.guard
            .as_ref()
            .and_then(|g| g.blocked_profiles())
            .as_deref()
            .unwrap_or("-")
            .escape_debug(),
        error,
    );
}
