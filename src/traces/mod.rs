//! Request traces (`traces:`): at the end of each sampled model call, `capture` builds its
//! [`Trace`] (metadata only) and pushes it onto a bounded in-memory queue; the trace writer
//! (a background service) stores the queue in batches through [`crate::store::TraceStore`]
//! and prunes past the retention. When the queue is full the trace is dropped and counted
//! (`tollgate_traces_dropped_total`): a request never waits for the store.

pub mod settings;
pub mod writer;

use once_cell::sync::OnceCell;
use parking_lot::Mutex;
use pingora::proxy::Session;

use crate::gateway::Ctx;
use crate::metrics;
use crate::records::trace::{Timings, Trace, TraceUsage};
use crate::translate::Format;
use settings::{Capture, TraceSettings};

pub struct TraceQueue {
    items: Mutex<Vec<Trace>>,
    cap: usize,
    sample: f64,
    pub notify: tokio::sync::Notify,
    pub settings: TraceSettings,
}

static QUEUE: OnceCell<TraceQueue> = OnceCell::new();

/// Sets tracing up (once per process); nothing at all happens when capture is off.
pub fn install(s: &TraceSettings) {
    if s.capture == Capture::Off {
        return;
    }
    let _ = QUEUE.set(TraceQueue {
        items: Mutex::new(Vec::new()),
        cap: s.queue,
        sample: s.sample,
        notify: tokio::sync::Notify::new(),
        settings: s.clone(),
    });
}

/// The queue, when traces are captured.
pub fn queue() -> Option<&'static TraceQueue> {
    QUEUE.get()
}

impl TraceQueue {
    /// Queues a trace unless the queue is full (then it is dropped and counted).
    pub fn push(&self, t: Trace) {
        let mut items = self.items.lock();
        if items.len() >= self.cap {
            drop(items);
            metrics::TRACES_DROPPED
                .with_label_values(&["queue_full"])
                .inc();
            return;
        }
        items.push(t);
        drop(items);
        self.notify.notify_one();
    }

    pub fn take(&self) -> Vec<Trace> {
        std::mem::take(&mut *self.items.lock())
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Anthropic => "anthropic",
        Format::Chat => "chat",
        Format::Responses => "responses",
        Format::Gemini => "gemini",
    }
}

/// At the end of a request (`access::record`): its trace, when sampled.
pub fn capture(
    s: &Session,
    ctx: &Ctx,
    status: u16,
    latency_ms: u64,
    usage: Option<crate::meter::Usage>,
) {
    let Some(q) = QUEUE.get() else { return };
    // Model calls only: the management API, listings and probes are not traced.
    if !ctx.endpoint.is_inference() {
        return;
    }
    if q.sample < 1.0 && rand::random::<f64>() >= q.sample {
        return;
    }
    let h = s.req_header();
    let u = usage.unwrap_or_default();
    let provider = ctx.provider_name();
    q.push(Trace {
        request_id: ctx.request_id.clone(),
        ts_ms: crate::clock::now_millis(),
        key_id: ctx.key.as_ref().map(|k| k.id.clone()),
        user_id: ctx.user_id.clone(),
        session_id: ctx.session_id.clone(),
        endpoint: ctx.endpoint.label().to_string(),
        method: h.method.as_str().to_string(),
        path: h.uri.path().to_string(),
        model: ctx.client_model.clone(),
        provider: (!provider.is_empty()).then(|| provider.to_string()),
        upstream_model: ctx.route.as_ref().map(|r| r.model.clone()),
        client_format: format_name(ctx.endpoint.format()).to_string(),
        upstream_format: ctx
            .route
            .as_ref()
            .map(|r| format_name(r.provider.kind.format()).to_string()),
        stream: ctx.stream,
        status,
        timings: Timings {
            first_byte_ms: ctx.upstream_ttfb.map(|t| t.as_millis() as u64),
            last_byte_ms: latency_ms,
        },
        attempts: ctx.attempts,
        failed_attempts: ctx.tried.clone(),
        usage: TraceUsage {
            input_tokens: u.input,
            output_tokens: u.output,
            cache_read_tokens: u.cache_read,
            cache_write_tokens: u.cache_write,
        },
        tool_calls: ctx.tool_calls,
        client_gone: ctx.client_gone,
        guardrail_blocked: ctx.guard.as_ref().and_then(|g| g.blocked_profiles()),
        error: ctx.error.clone(),
    });
}
