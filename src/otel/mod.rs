//! OpenTelemetry export (`otel:`, or the standard `OTEL_*` variables): one span per model
//! request (SERVER kind, the OpenTelemetry GenAI conventions), one CLIENT child per upstream
//! attempt, children for the input guardrail checks and the tool loop's tool calls; sent over
//! OTLP (HTTP/protobuf or gRPC) by the SDK's batch processor.
//!
//! Nothing is built while the request runs: `begin` decides once, after authentication,
//! whether the request is sampled (the client's `traceparent` sampled flag, else the
//! `sample` ratio) and assigns its ids; the hooks note phase times in `Ctx::phases`
//! (`phases`), and `export` builds every span at the end of the request (`span`), with
//! explicit start and end times, next to the trace capture and the access line. When export
//! is off, `begin` is one branch and no span object exists.
//!
//! Each upstream request carries a `traceparent` whose parent is its attempt's span
//! (`propagate`); when export is off (or the request is not sampled) the client's
//! `traceparent` and `tracestate` pass through unchanged.

pub mod phases;
pub mod propagation;
pub mod settings;
pub mod span;

use once_cell::sync::OnceCell;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanProcessor};
use pingora::http::RequestHeader;
use std::time::{Duration, Instant};

use phases::{Phases, SpanIds};
use settings::{OtelSettings, Protocol};

struct Exporter {
    processor: BatchSpanProcessor,
    sample: f64,
    scope: opentelemetry::InstrumentationScope,
    /// The gRPC client's runtime (tonic needs one; the batch processor runs on its own
    /// thread and only hands it the exports).
    _runtime: Option<tokio::runtime::Runtime>,
}

static EXPORTER: OnceCell<Exporter> = OnceCell::new();

fn exporter(
    s: &OtelSettings,
) -> Result<
    (
        opentelemetry_otlp::SpanExporter,
        Option<tokio::runtime::Runtime>,
    ),
    String,
> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
    let headers: std::collections::HashMap<String, String> = s.headers.iter().cloned().collect();
    match s.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(s.endpoint.clone())
            .with_timeout(s.timeout)
            .with_headers(headers)
            .build()
            .map(|e| (e, None))
            .map_err(|e| e.to_string()),
        Protocol::Grpc => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otel-grpc")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let mut meta = tonic::metadata::MetadataMap::new();
            for (k, v) in &s.headers {
                if let (Ok(k), Ok(v)) = (
                    tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
                    v.parse(),
                ) {
                    meta.insert(k, v);
                }
            }
            let built = {
                let _guard = rt.enter();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(s.endpoint.clone())
                    .with_timeout(s.timeout)
                    .with_metadata(meta)
                    .build()
            };
            built.map(|e| (e, Some(rt))).map_err(|e| e.to_string())
        }
    }
}

/// Sets export up (once per process, at start); an exporter that cannot be built is
/// reported and export stays off.
pub fn install(s: Option<&OtelSettings>) {
    let Some(s) = s else { return };
    let (exp, runtime) = match exporter(s) {
        Ok(e) => e,
        Err(e) => {
            log::error!("OpenTelemetry export is off: {e}");
            return;
        }
    };
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(s.queue)
        .with_max_export_batch_size(s.batch)
        .with_scheduled_delay(s.delay)
        .build();
    let mut processor = BatchSpanProcessor::builder(exp)
        .with_batch_config(config)
        .build();
    processor.set_resource(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(s.service_name.clone())
            .with_attributes([opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            )])
            .build(),
    );
    let scope = opentelemetry::InstrumentationScope::builder("tollgate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    log::info!(
        "OpenTelemetry: exporting spans over {} to {} (sample {})",
        match s.protocol {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        },
        s.endpoint,
        s.sample
    );
    let _ = EXPORTER.set(Exporter {
        processor,
        sample: s.sample,
        scope,
        _runtime: runtime,
    });
}

/// Whether spans are exported at all.
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// After authentication: the request's phase recorder, when it is traced (`traced`) or
/// sampled for export; None otherwise (and always when both are off).
pub fn begin(h: &RequestHeader, traced: bool, start: Instant) -> Option<Box<Phases>> {
    let ids = EXPORTER.get().and_then(|e| sample(h, e.sample));
    if ids.is_none() && !traced {
        return None;
    }
    Some(Phases::new(ids, start))
}

/// Parent-based sampling: a valid client `traceparent` decides by its sampled flag (and
/// the trace continues); without one, the ratio decides and a new trace starts.
fn sample(h: &RequestHeader, ratio: f64) -> Option<SpanIds> {
    let parent = h
        .headers
        .get("traceparent")
        .and_then(|v| propagation::parse(v.as_bytes()));
    let (trace_id, parent_id) = match parent {
        Some(p) if !p.sampled => return None,
        Some(p) => (p.trace_id, p.span_id),
        None => {
            if ratio < 1.0 && rand::random::<f64>() >= ratio {
                return None;
            }
            let mut t = 0u128;
            while t == 0 {
                t = rand::random();
            }
            (t, 0)
        }
    };
    Some(SpanIds {
        trace_id,
        span_id: phases::new_span_id(),
        parent: parent_id,
    })
}

/// The upstream request of the open attempt carries its span as the parent (a sampled
/// request only; otherwise the client's header, if any, went through unchanged).
pub fn propagate(phases: Option<&Phases>, up: &mut RequestHeader) {
    if let Some(tp) = phases.and_then(|p| p.traceparent()) {
        let _ = up.insert_header("traceparent", tp);
    }
}

/// At the end of a model request (`access::record`): its spans, when it was sampled. With
/// `traces.capture: full`, the prompt and the answer go along as span events, redacted as a
/// stored trace's bodies are.
pub fn finish(
    s: &pingora::proxy::Session,
    ctx: &mut crate::gateway::Ctx,
    status: u16,
    latency: Duration,
    usage: Option<crate::meter::Usage>,
) {
    if ctx.phases.as_deref().is_none_or(|p| p.ids.is_none()) || !ctx.endpoint.is_inference() {
        return;
    }
    let content = if ctx.trace == crate::traces::settings::Capture::Full {
        let answer = ctx.tap.as_mut().and_then(|t| t.captured_answer());
        ctx.trace_request.as_deref().map(|req| {
            (
                crate::traces::redacted(req),
                answer.map(|(b, _)| crate::traces::redacted(&b)),
            )
        })
    } else {
        None
    };
    let ctx = &*ctx;
    let Some(phases) = ctx.phases.as_deref() else {
        return;
    };
    let h = s.req_header();
    export(&span::End {
        ctx,
        phases,
        method: h.method.as_str(),
        path: h.uri.path(),
        status,
        latency,
        usage,
        content,
    });
}

/// The spans of a finished request, to the batch processor.
pub fn export(end: &span::End) {
    let Some(e) = EXPORTER.get() else { return };
    for s in span::build(end, &e.scope) {
        e.processor.on_end(s);
    }
}

/// At the end of the drain: what is queued is sent, within `timeout`.
pub fn shutdown(timeout: Duration) {
    if let Some(e) = EXPORTER.get() {
        if let Err(err) = e.processor.shutdown_with_timeout(timeout) {
            log::warn!("OpenTelemetry: spans not all exported at exit: {err}");
        }
    }
}
