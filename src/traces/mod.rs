//! Request traces (`traces:`): at the end of each sampled model call, `capture` builds its
//! [`Trace`] and pushes it onto a bounded in-memory queue; the trace writer (a background
//! service) redacts the bodies of `capture: full` traces (`redact`), stores the queue in
//! batches through [`crate::store::TraceStore`] and prunes past the retention. The bodies
//! are held as they are (shared `Bytes`, no copy) until the writer redacts and cuts them. When the queue is full the trace is dropped and counted
//! (`tollgate_traces_dropped_total`): a request never waits for the store.

pub mod assemble;
pub mod redact;
pub mod settings;
pub mod writer;

use once_cell::sync::OnceCell;
use parking_lot::Mutex;
use pingora::proxy::Session;

use crate::gateway::Ctx;
use crate::metrics;
use crate::records::trace::{AttemptTiming, PhaseSpan, Timings, Trace, TraceUsage};
use crate::translate::Format;
use bytes::Bytes;
use settings::{Capture, TraceSettings};

/// The raw bodies of a `capture: full` trace, redacted by the writer before storing.
#[derive(Default)]
pub struct RawBodies {
    pub request: Option<Bytes>,
    pub upstream_request: Option<Bytes>,
    /// The answer, already cut at `max_body_bytes` (and whether it was).
    pub response: Option<(Bytes, bool)>,
    pub stream_events: Option<u64>,
}

/// A trace waiting for the writer.
pub struct Pending {
    pub trace: Trace,
    pub bodies: Option<RawBodies>,
}

pub struct TraceQueue {
    items: Mutex<Vec<Pending>>,
    cap: usize,
    pub notify: tokio::sync::Notify,
    pub settings: TraceSettings,
}

static QUEUE: OnceCell<TraceQueue> = OnceCell::new();

/// Sets tracing up (once per process). The queue exists even with `capture: off`: a key may
/// turn traces on for itself (`traces` on the key); a request of any other key costs one
/// check (`decide`).
pub fn install(s: &TraceSettings) {
    let _ = QUEUE.set(TraceQueue {
        items: Mutex::new(Vec::new()),
        cap: s.queue,
        notify: tokio::sync::Notify::new(),
        settings: s.clone(),
    });
}

/// What a request of `key` traces: the key's `traces` settings, else the config's, then
/// sampled (`Off`: not traced).
pub fn decide(key: &crate::records::KeyRecord) -> Capture {
    let Some(q) = QUEUE.get() else {
        return Capture::Off;
    };
    let own = key.traces.as_ref();
    let capture = own.and_then(|o| o.capture).unwrap_or(q.settings.capture);
    if capture == Capture::Off {
        return Capture::Off;
    }
    let sample = own.and_then(|o| o.sample).unwrap_or(q.settings.sample);
    if sample < 1.0 && rand::random::<f64>() >= sample {
        return Capture::Off;
    }
    capture
}

/// For a request traced with `capture`: the most bytes a kept body may have (None: bodies are
/// not kept, and the request path makes no copy for traces).
pub fn full_capture(capture: Capture) -> Option<usize> {
    QUEUE
        .get()
        .filter(|_| capture == Capture::Full)
        .map(|q| q.settings.max_body_bytes)
}

/// The queue, when traces are captured.
pub fn queue() -> Option<&'static TraceQueue> {
    QUEUE.get()
}

impl TraceQueue {
    /// Queues a trace unless the queue is full (then it is dropped and counted).
    pub fn push(&self, t: Pending) {
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

    pub fn take(&self) -> Vec<Pending> {
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

/// At the end of a request (`access::record`, after the access line): its trace, when
/// sampled. The context ends with the request, so its strings move into the trace instead
/// of being copied.
pub fn capture(
    s: &Session,
    ctx: &mut Ctx,
    status: u16,
    latency_ms: u64,
    usage: Option<crate::meter::Usage>,
) {
    let Some(q) = QUEUE.get() else { return };
    // Model calls only (`decide` ran for them): the management API, listings and probes are
    // not traced.
    if ctx.trace == Capture::Off || !ctx.endpoint.is_inference() {
        return;
    }
    let h = s.req_header();
    let u = usage.unwrap_or_default();
    let bodies = (ctx.trace == Capture::Full).then(|| RawBodies {
        request: ctx.trace_request.take(),
        upstream_request: ctx.upstream_body.take(),
        response: ctx.tap.as_mut().and_then(|t| t.captured_answer()),
        stream_events: ctx
            .tap
            .as_ref()
            .filter(|t| t.is_stream)
            .and_then(|t| t.captured_events()),
    });
    let mut timings = Timings {
        first_byte_ms: ctx.upstream_ttfb.map(|t| t.as_millis() as u64),
        last_byte_ms: latency_ms,
        ..Default::default()
    };
    phase_timings(ctx, &mut timings);
    let route = ctx.route.take();
    let trace = Trace {
        request_id: std::mem::take(&mut ctx.request_id),
        ts_ms: crate::clock::now_millis(),
        key_id: ctx.key.as_ref().map(|k| k.id.clone()),
        user_id: ctx.user_id.take(),
        session_id: ctx.session_id.take(),
        endpoint: ctx.endpoint.label().to_string(),
        method: h.method.as_str().to_string(),
        path: h.uri.path().to_string(),
        model: std::mem::take(&mut ctx.client_model),
        provider: route
            .as_ref()
            .filter(|r| !r.provider.name.is_empty())
            .map(|r| r.provider.name.clone()),
        upstream_format: route
            .as_ref()
            .map(|r| format_name(r.provider.kind.format()).to_string()),
        upstream_model: route.map(|r| r.model),
        client_format: format_name(ctx.endpoint.format()).to_string(),
        stream: ctx.stream,
        status,
        timings,
        attempts: ctx.attempts,
        failed_attempts: std::mem::take(&mut ctx.tried),
        usage: TraceUsage {
            input_tokens: u.input,
            output_tokens: u.output,
            cache_read_tokens: u.cache_read,
            cache_write_tokens: u.cache_write,
        },
        tool_calls: ctx.tool_calls,
        client_gone: ctx.client_gone,
        guardrail_blocked: ctx.guard.as_ref().and_then(|g| g.blocked_profiles()),
        error: ctx.error.take(),
        bodies: None,
    };
    q.push(Pending { trace, bodies });
}

/// A body redacted as a stored trace's is and cut at `max_body_bytes` (for the
/// OpenTelemetry content events of a `capture: full` request).
pub fn redacted(b: &[u8]) -> String {
    match QUEUE.get() {
        Some(q) => redact_and_cut(b, &q.settings).0,
        None => String::new(),
    }
}

/// `b` redacted, then cut at `max_body_bytes` on a character boundary (and whether it was).
fn redact_and_cut(b: &[u8], s: &TraceSettings) -> (String, bool) {
    let mut text = redact::redact_body(b, &s.redact);
    if text.len() <= s.max_body_bytes {
        return (text, false);
    }
    let mut end = s.max_body_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// The phase timings of the recorder, in microseconds from the request's start.
fn phase_timings(ctx: &Ctx, t: &mut Timings) {
    let Some(p) = ctx.phases.as_deref() else {
        return;
    };
    let us = |d: std::time::Duration| d.as_micros() as u64;
    let span = |(a, b): (std::time::Duration, std::time::Duration)| PhaseSpan {
        start_us: us(a),
        end_us: us(b),
    };
    t.auth_us = Some(us(p.auth));
    t.routing_us = p.routed.map(us);
    t.guardrails = p.guard.map(span);
    t.settle = p.settle.map(span);
    t.attempts = p
        .attempts
        .iter()
        .map(|a| AttemptTiming {
            deployment: a.deployment.clone(),
            start_us: us(a.start),
            end_us: a.end.map(us),
            status: a.status,
            outcome: a.outcome.to_string(),
        })
        .collect();
    t.first_byte_us = ctx.upstream_ttfb.map(us);
}

/// The trace as stored: its bodies redacted, then cut at `max_body_bytes`.
pub fn finish(p: Pending, s: &TraceSettings) -> Trace {
    let mut trace = p.trace;
    if let Some(raw) = p.bodies {
        let keep = |b: &[u8], cut: bool| {
            let (text, truncated) = redact_and_cut(b, s);
            crate::records::TraceBody {
                text,
                truncated: cut || truncated,
            }
        };
        trace.bodies = Some(crate::records::TraceBodies {
            request: raw.request.as_deref().map(|b| keep(b, false)),
            upstream_request: raw.upstream_request.as_deref().map(|b| keep(b, false)),
            response: raw.response.as_ref().map(|(b, cut)| keep(b, *cut)),
            stream_events: raw.stream_events,
        });
    }
    trace
}
