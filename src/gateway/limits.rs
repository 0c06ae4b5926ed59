//! Limits that protect the process from its clients, and guards that keep a bug in one
//! request from reaching the others.
//!
//! - [`InFlight`]: forwarded requests in flight, per virtual key and overall. Excess is
//!   refused at once (429 per key, 503 overall, both with `retry-after`); nothing queues.
//!   A [`Permit`] lives in the request context and is returned when the context drops, which
//!   also happens when a task is cancelled or unwinds.
//! - [`SlowClientGuard`]: Pingora 0.9 bounds each read on the client socket (60 s by default)
//!   but has no deadline for a whole request header, so a client that sends one byte every
//!   few seconds keeps a connection (and its buffers) forever. The guard wraps every accepted
//!   connection in a [`HeaderDeadline`] stream: from the first byte of a request until the
//!   gateway has its header, reads fail after `limits.header_timeout_ms`. The request body is
//!   bounded in `read_body` (a per-read and a whole-body deadline).
//! - [`CatchPanic`] and [`guard_sync`]: a panic inside a hook would kill only its connection
//!   task (tokio catches it; the process and other requests keep running), but the client
//!   would get a reset and the request would never be settled. These turn it into a 500 in
//!   the endpoint's dialect (or an error event mid-stream) and a settled record.
//! - [`install_panic_hook`]: panic messages are redacted of anything that looks like a key
//!   before they reach stderr.

use async_trait::async_trait;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use prometheus::{register_int_counter_vec, IntCounterVec};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::Limits;
use crate::error::{ErrorKind, GatewayError};

/// Requests refused or connections cut by a limit, by limit.
pub static LIMIT_REJECTIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_limit_rejections_total",
        "Requests refused or connections cut by a gateway limit (key_inflight, global_inflight, header_size, header_timeout, body_timeout)",
        &["limit"]
    )
    .unwrap()
});

/// Panics caught inside request handling, by where.
pub static PANICS: Lazy<IntCounterVec> = Lazy::new(|| {
    register_int_counter_vec!(
        "tollgate_panics_total",
        "Panics caught inside request handling (the request got a 500 or an error event)",
        &["where"]
    )
    .unwrap()
});

/// Registers the counters so that they show in /metrics before the first event.
pub fn init_metrics() {
    for l in [
        "key_inflight",
        "global_inflight",
        "header_size",
        "header_timeout",
        "body_timeout",
    ] {
        LIMIT_REJECTIONS.with_label_values(&[l]);
    }
    for w in ["request", "response"] {
        PANICS.with_label_values(&[w]);
    }
}

// --- in-flight limits ---------------------------------------------------------------------

/// Counters of forwarded requests in flight.
pub struct InFlight {
    max_global: usize,
    max_per_key: usize,
    global: AtomicUsize,
    per_key: Mutex<HashMap<String, usize>>,
}

/// One admitted request; dropping it frees the slot.
pub struct Permit {
    owner: Arc<InFlight>,
    key: String,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

impl InFlight {
    pub fn new(l: &Limits) -> Arc<InFlight> {
        Arc::new(InFlight {
            max_global: l.max_inflight,
            max_per_key: l.max_inflight_per_key,
            global: AtomicUsize::new(0),
            per_key: Mutex::new(HashMap::new()),
        })
    }

    /// Admits one request of `key_id` or says why not.
    pub fn acquire(self: &Arc<Self>, key_id: &str) -> Result<Permit, GatewayError> {
        let g = self.global.fetch_add(1, Ordering::AcqRel);
        if self.max_global > 0 && g >= self.max_global {
            self.global.fetch_sub(1, Ordering::AcqRel);
            LIMIT_REJECTIONS
                .with_label_values(&["global_inflight"])
                .inc();
            return Err(GatewayError::new(
                ErrorKind::Unavailable,
                format!(
                    "The gateway is at its limit of {} requests in flight; retry shortly.",
                    self.max_global
                ),
            )
            .with_code("gateway_overloaded")
            .with_retry_after(1));
        }
        {
            let mut m = self.per_key.lock();
            let n = m.entry(key_id.to_string()).or_insert(0);
            if self.max_per_key > 0 && *n >= self.max_per_key {
                drop(m);
                self.global.fetch_sub(1, Ordering::AcqRel);
                LIMIT_REJECTIONS.with_label_values(&["key_inflight"]).inc();
                return Err(GatewayError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "This API key has {} requests in flight, its limit; retry when one finishes.",
                        self.max_per_key
                    ),
                )
                .with_code("too_many_concurrent_requests")
                .with_retry_after(1));
            }
            *n += 1;
        }
        Ok(Permit {
            owner: self.clone(),
            key: key_id.to_string(),
        })
    }

    /// Requests in flight overall.
    pub fn current(&self) -> usize {
        self.global.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        {
            let mut m = self.owner.per_key.lock();
            if let Some(n) = m.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.key);
                }
            }
        }
        self.owner.global.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The size of a request header block as it came on the wire (approximately: request line,
/// names, values and separators).
pub fn header_bytes(h: &pingora::http::RequestHeader) -> usize {
    let line = h.method.as_str().len() + h.uri.to_string().len() + 12;
    line + h
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

// --- slow clients -------------------------------------------------------------------------

/// Wraps Pingora's HTTP app: every accepted connection gets a [`HeaderDeadline`].
pub struct SlowClientGuard<A> {
    pub inner: Arc<A>,
    pub header_timeout: Duration,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for SlowClientGuard<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream: Stream = if stream.as_any().is::<HeaderDeadline>() {
            stream
        } else {
            Box::new(HeaderDeadline::new(stream, self.header_timeout))
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// A client stream whose reads fail once a request header takes longer than the timeout,
/// counted from its first byte. The gateway marks the header done ([`header_done`]) when it
/// sees the request and re-arms the deadline ([`expect_header`]) when the request ends.
///
/// The clock is an instant noted at the first byte; a timer is armed only if a read of the
/// header has to wait (a header that arrives in one piece, as nearly all do, costs no timer).
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    timeout: Duration,
    state: AtomicU8,
    /// When the first byte of the header being awaited arrived.
    started: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// [`HeaderDeadline::state`]: the header has been read.
const HEADER_DONE: u8 = 0;
/// A header is awaited (its clock runs from its first byte).
const HEADER_AWAITED: u8 = 1;
/// A request ended: the next bytes start a new header, with a fresh clock.
const HEADER_NEXT: u8 = 2;

impl HeaderDeadline {
    fn new(inner: Stream, timeout: Duration) -> Self {
        HeaderDeadline {
            inner,
            timeout,
            state: AtomicU8::new(HEADER_AWAITED),
            started: None,
            timer: None,
        }
    }
}

fn deadline_of(s: &pingora::proxy::Session) -> Option<&HeaderDeadline> {
    s.as_downstream()
        .stream()
        .and_then(|st| st.as_any().downcast_ref::<HeaderDeadline>())
}

/// The request header has been read: stop the header clock.
pub fn header_done(s: &pingora::proxy::Session) {
    if let Some(d) = deadline_of(s) {
        d.state.store(HEADER_DONE, Ordering::Release);
    }
}

/// The request ended: the next bytes on this connection start a new header.
pub fn expect_header(s: &pingora::proxy::Session) {
    if let Some(d) = deadline_of(s) {
        d.state.store(HEADER_NEXT, Ordering::Release);
    }
}

fn header_timed_out(timeout: Duration) -> Poll<std::io::Result<()>> {
    LIMIT_REJECTIONS
        .with_label_values(&["header_timeout"])
        .inc();
    log::info!("closing a client connection: request header not complete within {timeout:?}");
    Poll::Ready(Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "request header timeout",
    )))
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match this.state.load(Ordering::Acquire) {
            HEADER_AWAITED => {}
            HEADER_NEXT => {
                this.state.store(HEADER_AWAITED, Ordering::Release);
                this.started = None;
                this.timer = None;
            }
            _ => {
                this.started = None;
                this.timer = None;
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
        }
        if let Some(t) = this.timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                return header_timed_out(this.timeout);
            }
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match (&r, this.started) {
            (Poll::Ready(Ok(())), None) if buf.filled().len() > before => {
                // The first byte of a request: the clock starts.
                this.started = Some(tokio::time::Instant::now());
            }
            (Poll::Pending, Some(started)) if this.timer.is_none() => {
                // The header is incomplete and the read waits: arm the deadline, polled once
                // so that it wakes this task when it fires.
                let mut t = Box::pin(tokio::time::sleep_until(started + this.timeout));
                if t.as_mut().poll(cx).is_ready() {
                    return header_timed_out(this.timeout);
                }
                this.timer = Some(t);
            }
            _ => {}
        }
        r
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, d: ProxyDigest) {
        self.inner.set_proxy_digest(d)
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, d: SocketDigest) {
        self.inner.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

// --- panics -------------------------------------------------------------------------------

/// A future whose panic becomes `Err(())` (logged by the panic hook, redacted).
pub struct CatchPanic<F>(pub Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => {
                PANICS.with_label_values(&["request"]).inc();
                Poll::Ready(Err(()))
            }
        }
    }
}

/// Runs `f`, turning a panic into `None`. For the synchronous response hooks: after a panic
/// the state `f` touched is not trusted again (the caller ends the response).
pub fn guard_sync<T>(f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => {
            PANICS.with_label_values(&["response"]).inc();
            None
        }
    }
}

static SECRETS: Lazy<Mutex<Vec<String>>> = Lazy::new(|| Mutex::new(Vec::new()));

/// Redacts configured secrets and anything shaped like a tollgate or provider key.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for s in SECRETS.lock().iter() {
        if s.len() >= 8 {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    // Key-shaped tokens: tg-…, tgm-…, sk-…, and long opaque runs after "key".
    let mut res = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while !rest.is_empty() {
        let pos = ["tgm-", "tg-", "sk-", "AIza"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min();
        let Some((i, plen)) = pos else {
            res.push_str(rest);
            break;
        };
        let boundary = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let tail = &rest[i + plen..];
        let run = tail
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .count();
        res.push_str(&rest[..i]);
        if boundary && run >= 6 {
            res.push_str("[redacted]");
            rest = &tail[run..];
        } else {
            res.push_str(&rest[i..i + plen]);
            rest = tail;
        }
    }
    res
}

/// Replaces the default panic hook: location and a redacted message, one log line.
pub fn install_panic_hook(secrets: Vec<String>) {
    *SECRETS.lock() = secrets;
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-text payload)".into());
        let loc = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let line = format!(
            "panic at {loc} in thread {:?}: {}",
            std::thread::current().name().unwrap_or("?"),
            redact(&msg)
        );
        // A listener that cannot be built (its address taken between the start-up check
        // and Pingora's bind) leaves a process serving nothing: end it, non-zero.
        if msg.starts_with("Failed to build listeners") {
            eprintln!("tollgate: cannot listen: {}", redact(&msg));
            std::process::exit(1);
        }
        log::error!("{line}");
        eprintln!("tollgate: {line}");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_per_key_and_overall() {
        let l = Limits {
            max_inflight: 3,
            max_inflight_per_key: 2,
            ..Limits::default()
        };
        let f = InFlight::new(&l);
        let a1 = f.acquire("a").unwrap();
        let _a2 = f.acquire("a").unwrap();
        let e = f.acquire("a").unwrap_err();
        assert_eq!((e.status(), e.retry_after), (429, Some(1)));
        let _b1 = f.acquire("b").unwrap();
        let e = f.acquire("c").unwrap_err();
        assert_eq!((e.status(), e.retry_after), (503, Some(1)));
        drop(a1);
        assert_eq!(f.current(), 2);
        let _c = f.acquire("c").unwrap();
        assert_eq!(f.current(), 3);
    }

    #[test]
    fn redaction_hides_key_shapes_and_configured_secrets() {
        *SECRETS.lock() = vec!["verysecretvalue".into()];
        let r =
            redact("key tg-abcdef123456 and sk-ant-xyz789012 and verysecretvalue; task-list ok");
        assert!(!r.contains("abcdef123456") && !r.contains("xyz789012"));
        assert!(!r.contains("verysecretvalue"));
        assert!(r.contains("task-list ok"), "{r}");
    }
}
