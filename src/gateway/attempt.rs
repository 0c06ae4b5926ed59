//! One upstream attempt, and the bookkeeping around it that both forwarding paths share.
//!
//! The direct path ([`super::direct`]) drives a whole attempt from here: [`send`] connects
//! (or reuses a pooled connection), sends the planned request and reads the response header
//! (and a non-streamed 2xx body, ahead); [`judge`] says whether it failed; [`Exchange::open`]
//! turns the provider's header into the client's and gives a [`Response`], whose [`Body`]
//! yields the answer in the client's format: chunks, keep-alives, or a failure with the
//! event that ends the client's stream. None of this needs a downstream session, so a caller
//! inside the gateway (a tool loop running model turns) can use it as the direct path does:
//!
//! ```text
//! let target = Target::new(&route, addr, stream, start);
//! let req = upstream::upstream_request(client_header, &route.provider, &plan.path, plan.body.len())?;
//! let mut res = attempt::send(&state.connector, &target, &req, &plan.body).await;
//! attempt::record(&route.health, attempt::judge(&mut res));   // failed: try the next route
//! let (header, mut response) = res?.open(&plan.tap, target.timeouts.stream_idle)?;
//! let mut body = pin!(response.body(target.deadline, idle, keepalive, &route.health, false));
//! while let Piece::Data(Some(chunk), false) | Piece::KeepAlive(chunk) = body.as_mut().next().await { … }
//! let tap = response.release(&state.connector, &target.peer).await;   // usage for metering
//! ```
//!
//! Pingora's proxy path makes its attempt itself; its hooks call the shared pieces here:
//! [`record`] (the deployment's breaker), [`answering`] (first byte, request id, stream
//! gauge), [`run_tap`] (the response filter under the panic guard), [`closing_event`]
//! (the error event of a stream cut mid-way) and [`total_timeout`].

use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::time::Sleep;

use super::ctx::Ctx;
use super::limits::guard_sync;
use super::response::{ResponseTap, TapSpec, UsageOnly};
use super::upstream::{peer_for, UpstreamPool};
use crate::balance::{Health, Outcome};
use crate::config::Timeouts;
use crate::drain::{UpstreamTicket, DRAIN};
use crate::metrics;
use crate::route::Route;
use std::net::SocketAddr;

/// A non-streamed answer is read ahead up to this size before anything reaches the client,
/// so that a provider's garbage 200 can still fail over or become a clean 502. Larger
/// answers (big embedding batches) are streamed through unchecked after this much.
const READ_AHEAD: usize = 8 * 1024 * 1024;

/// Where and by when an attempt goes.
pub struct Target {
    pub peer: HttpPeer,
    pub timeouts: Timeouts,
    /// The client asked for a stream (its answer is not read ahead).
    pub stream: bool,
    /// The whole request, connect included, ends by this.
    pub deadline: tokio::time::Instant,
}

impl Target {
    /// The target of an attempt on `route` at `addr`, for a request that started at `start`
    /// (its whole-request deadline counts from then).
    pub fn new(route: &Route, addr: SocketAddr, stream: bool, start: Instant) -> Target {
        let timeouts = route.provider.timeouts;
        Target {
            peer: peer_for(&route.provider, addr, stream),
            timeouts,
            stream,
            deadline: tokio::time::Instant::from_std(start) + timeouts.total,
        }
    }
}

/// An attempt that got a response header, and the body read ahead (non-streamed 2xx
/// answers): the bytes and whether they are the whole body.
pub struct Exchange {
    up: HttpSession,
    ahead: Option<(Bytes, bool)>,
    /// A whole body read ahead, parsed: its `usage` (handed to the response tap, which then
    /// does not parse the body a second time).
    parsed: Option<Option<crate::meter::UsageNumbers>>,
}

impl Exchange {
    /// The provider's status (0: no header).
    pub fn status(&self) -> u16 {
        self.up.response_header().map_or(0, |h| h.status.as_u16())
    }
}

/// The error of a request past its whole-request deadline.
pub fn total_timeout() -> Box<Error> {
    Error::explain(ErrorType::ReadTimedout, "total timeout").into_up()
}

/// Sends the request and reads the response header (skipping 1xx).
async fn send_request(up: &mut HttpSession, req: &RequestHeader, body: &Bytes) -> Result<()> {
    up.write_request_header(Box::new(req.clone())).await?;
    up.write_request_body(body.clone(), true).await?;
    up.finish_request_body().await?;
    loop {
        up.read_response_header().await?;
        if !up
            .response_header()
            .is_some_and(|h| h.status.is_informational())
        {
            return Ok(());
        }
    }
}

/// Awaits `fut` by the request's deadline. A timer is armed only when the deadline would
/// end the step before the step's own timeout (`step`) does: registering a tokio timer wakes
/// the runtime's driver with a syscall, and the usual request (a deadline of an hour, a
/// first-byte timeout of minutes) needs none. None: the deadline passed.
async fn within<F: std::future::Future>(
    deadline: tokio::time::Instant,
    step: Option<Duration>,
    fut: F,
) -> Option<F::Output> {
    let now = tokio::time::Instant::now();
    match step {
        Some(step) if now + step < deadline => Some(fut.await),
        _ => tokio::time::timeout_at(deadline, fut).await.ok(),
    }
}

/// One attempt: connect (or reuse a pooled connection), send `req` with `body`, read the
/// response header, and a non-streamed 2xx body ahead. Nothing reaches the client here, so
/// a failed attempt can be retried elsewhere.
pub async fn send(
    pool: &UpstreamPool,
    t: &Target,
    req: &RequestHeader,
    body: &Bytes,
) -> Result<Exchange> {
    let mut tries = 0;
    loop {
        tries += 1;
        let connecting = pool.session(&t.peer);
        let (mut up, reused) = match within(
            t.deadline,
            t.peer.options.total_connection_timeout,
            connecting,
        )
        .await
        {
            Some(r) => r.map_err(|e| e.into_up())?,
            None => return Err(total_timeout()),
        };
        // The connector does not apply the peer's read/write timeouts itself. Until the
        // response header: the time-to-first-byte timeout.
        up.set_read_timeout(Some(t.timeouts.first_byte));
        up.set_write_timeout(t.peer.options.write_timeout);
        let sent = match within(
            t.deadline,
            Some(t.timeouts.first_byte),
            send_request(&mut up, req, body),
        )
        .await
        {
            Some(r) if tokio::time::Instant::now() < t.deadline => r,
            _ => {
                up.shutdown().await;
                return Err(total_timeout());
            }
        };
        match sent {
            Ok(()) => {
                let ahead = read_ahead(&mut up, t.stream, &t.timeouts, t.deadline).await?;
                return Ok(Exchange {
                    up,
                    ahead,
                    parsed: None,
                });
            }
            // A pooled connection may have been closed by the provider meanwhile: nothing
            // was answered, so one fresh attempt is safe.
            Err(_) if reused && tries < 2 => {
                up.shutdown().await;
                continue;
            }
            Err(e) => {
                up.shutdown().await;
                return Err(e.into_up());
            }
        }
    }
}

/// Reads a non-streamed 2xx answer ahead (up to [`READ_AHEAD`]); None for streams and
/// other statuses, which go through as they come.
async fn read_ahead(
    up: &mut HttpSession,
    stream: bool,
    timeouts: &Timeouts,
    deadline: tokio::time::Instant,
) -> Result<Option<(Bytes, bool)>> {
    let Some(h) = up.response_header() else {
        return Ok(None);
    };
    let event_stream = h
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let status = h.status.as_u16();
    if stream || event_stream || !(200..300).contains(&status) || status == 204 {
        return Ok(None);
    }
    // Each read is bounded by the idle timeout; the deadline is checked between reads (no
    // timer per request: the body usually follows its header at once).
    up.set_read_timeout(Some(timeouts.stream_idle));
    let mut buf = BytesMut::new();
    loop {
        if tokio::time::Instant::now() >= deadline {
            up.shutdown().await;
            return Err(total_timeout());
        }
        let chunk = match up.read_response_body().await {
            Ok(c) => c,
            Err(e) => {
                up.shutdown().await;
                return Err(e.into_up());
            }
        };
        let Some(c) = chunk else {
            return Ok(Some((buf.freeze(), true)));
        };
        buf.extend_from_slice(&c);
        if up.response_done() {
            return Ok(Some((buf.freeze(), true)));
        }
        if buf.len() > READ_AHEAD {
            return Ok(Some((buf.freeze(), false)));
        }
    }
}

/// Why an attempt failed, as a metrics label and the breaker's outcome; None when it
/// answered and may be used. A whole 2xx body read ahead must be JSON: it is parsed here,
/// once.
pub fn judge(res: &mut Result<Exchange>) -> Option<(&'static str, Outcome)> {
    match res {
        Ok(a) => {
            if let Some((body, true)) = &a.ahead {
                match serde_json::from_slice::<UsageOnly>(body) {
                    Ok(u) => a.parsed = Some(u.usage),
                    // Valid JSON that is not an object with a usable `usage` (as before:
                    // forwarded, unmetered); only a body that is not JSON at all fails.
                    Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
                        a.parsed = Some(None)
                    }
                    Err(_) => return Some(("invalid_body", Outcome::Failed)),
                }
            }
            status_failure(a.up.response_header()?)
        }
        Err(e) => Some((error_reason(e), Outcome::Failed)),
    }
}

/// Counts an attempt's outcome against its deployment (`failure`: from [`judge`] or
/// [`status_failure`]; None is a success).
pub fn record(health: &Health, failure: Option<(&'static str, Outcome)>) {
    health.count_attempt(failure.map_or("ok", |f| f.0));
    health.record(failure.map_or(Outcome::Ok, |f| f.1), Instant::now());
}

/// Whether a response header means the deployment failed (429 or 5xx), with its label; a
/// 429 with `Retry-After` says how long to cool off.
pub fn status_failure(h: &ResponseHeader) -> Option<(&'static str, Outcome)> {
    match h.status.as_u16() {
        429 => {
            let wait = h
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Some((
                "status_429",
                wait.map_or(Outcome::Failed, Outcome::RateLimited),
            ))
        }
        500.. => Some(("status_5xx", Outcome::Failed)),
        _ => None,
    }
}

/// The metrics label of an upstream error.
pub fn error_reason(e: &Error) -> &'static str {
    use ErrorType::*;
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => "timeout",
        ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError
        | TLSHandshakeFailure | InvalidCert | HandshakeError => "connect",
        _ => "io",
    }
}

/// The client's answer starts (both paths): first-byte time, the request id, attempt count
/// and guardrail verdicts on the header, the in-flight stream gauge.
pub(super) fn answering(ctx: &mut Ctx, resp: &mut ResponseHeader, tap: &ResponseTap) -> Result<()> {
    ctx.upstream_ttfb = Some(ctx.start.elapsed());
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    if ctx.attempts > 1 {
        resp.insert_header("x-tollgate-attempts", ctx.attempts.to_string())?;
    }
    if let Some(h) = ctx.guard.as_ref().and_then(|g| g.header()) {
        resp.insert_header("x-tollgate-guardrails", h)?;
    }
    if tap.is_stream {
        metrics::INFLIGHT_STREAMS.inc();
        ctx.counted_inflight = true;
    }
    Ok(())
}

/// Runs the response tap on one piece of the provider's body, under the panic guard
/// (`panic_test`: the fault tests' panic on demand). False after a panic: the tap's state
/// is not trusted again and the caller ends the response.
pub fn run_tap(
    tap: &mut ResponseTap,
    body: &mut Option<Bytes>,
    done: bool,
    panic_test: bool,
) -> bool {
    guard_sync(|| {
        if panic_test {
            super::panic_for_test("response");
        }
        tap.on_body(body, done)
    })
    .is_some()
}

/// The event that ends a client's stream cut mid-way (None for formats without one).
pub fn closing_event(tap: &mut ResponseTap, what: &str) -> Option<Bytes> {
    guard_sync(|| tap.on_upstream_error(what)).flatten()
}

impl Exchange {
    /// The provider's response header.
    pub fn header(&self) -> &ResponseHeader {
        self.up.response_header().expect("header read")
    }

    /// Closes the connection (an answer that is not used).
    pub async fn shutdown(mut self) {
        self.up.shutdown().await;
    }

    /// Starts the client's answer: the provider's header turned into the client's (the
    /// hop-by-hop headers dropped, the framing chosen), and the [`Response`] whose body
    /// reader yields the client's bytes. `idle` bounds the silence between body chunks.
    pub fn open(mut self, spec: &TapSpec, idle: Duration) -> Result<(ResponseHeader, Response)> {
        // Cut at the stop deadline if still open.
        let ticket = self.up.stream().map(|st| DRAIN.track(st.id()));
        self.up.set_read_timeout(Some(idle));
        let mut resp: ResponseHeader = self.header().clone();
        let had_length = resp.headers.get("content-length").is_some();
        for h in [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "proxy-connection",
        ] {
            resp.remove_header(h);
        }
        let mut tap = ResponseTap::on_header(&mut resp, spec);
        if let Some(usage) = self.parsed {
            tap.body_already_parsed(usage);
        }
        if !tap.replaces_body() && !tap.rewrites_body() && (!had_length || tap.is_stream) {
            resp.remove_header("content-length");
            resp.insert_header("transfer-encoding", "chunked")?;
        }
        let response = Response {
            ticket,
            up: self.up,
            tap,
            ahead: self.ahead,
        };
        Ok((resp, response))
    }
}

/// An answer being delivered: the upstream connection and the tap that turns its body into
/// the client's.
pub struct Response {
    // Declared before `up`: forgotten before the connection closes.
    ticket: Option<UpstreamTicket>,
    up: HttpSession,
    pub tap: ResponseTap,
    ahead: Option<(Bytes, bool)>,
}

/// What the body reader yields next.
pub enum Piece {
    /// Bytes for the client (None: nothing, but the answer is `done`), and whether the
    /// answer is complete.
    Data(Option<Bytes>, bool),
    /// A keep-alive (an Anthropic `ping`, an OpenAI comment) while the provider is silent.
    KeepAlive(Bytes),
    /// The answer failed mid-way (the upstream connection is closed): why, and the event
    /// that ends the client's stream properly, if its format has one.
    Failed(Box<Error>, Option<Bytes>),
}

impl Response {
    /// The body reader. `keepalive`: the silence after which a translated stream gets a
    /// keep-alive; `health`: the deployment, charged with a failed read; `panic_test`: see
    /// [`run_tap`].
    pub fn body<'a>(
        &'a mut self,
        deadline: tokio::time::Instant,
        idle: Duration,
        keepalive: Duration,
        health: &'a Health,
        panic_test: bool,
    ) -> Body<'a> {
        let pings = self.tap.sends_keepalives();
        Body {
            pending: self.ahead.take(),
            r: self,
            total: tokio::time::sleep_until(deadline),
            total_armed: false,
            deadline,
            idle,
            ping: tokio::time::sleep(keepalive),
            pings,
            keepalive,
            last_write: tokio::time::Instant::now(),
            health,
            panic_test,
        }
    }

    /// Closes the connection (the client went away, or the answer failed).
    pub async fn shutdown(&mut self) {
        self.up.shutdown().await;
    }

    /// Returns the connection of a finished answer to the pool; the tap stays for
    /// metering.
    pub async fn release(self, pool: &UpstreamPool, peer: &HttpPeer) -> ResponseTap {
        let Response {
            ticket, up, tap, ..
        } = self;
        drop(ticket);
        pool.release(up, peer).await;
        tap
    }

    /// The whole body was read ahead (a non-streamed 2xx answer that fit): the client's
    /// header can wait for it, and say what the answer cost.
    pub fn read_whole(&self) -> bool {
        matches!(self.ahead, Some((_, true)))
    }

    /// The tap, for metering, after the connection was given up.
    pub fn into_tap(self) -> ResponseTap {
        self.tap
    }
}

pin_project_lite::pin_project! {
    /// Reads a provider's body and yields the client's. Both timers live as long as the
    /// reader and neither is touched per chunk (a timer registration can cost a syscall):
    /// the deadline is checked between reads and gets its timer only once it is nearer than
    /// the idle timeout, which bounds every read; the keep-alive timer, when it fires, first
    /// looks at when the stream last wrote.
    pub struct Body<'a> {
        r: &'a mut Response,
        pending: Option<(Bytes, bool)>,
        #[pin]
        total: Sleep,
        total_armed: bool,
        deadline: tokio::time::Instant,
        idle: Duration,
        #[pin]
        ping: Sleep,
        pings: bool,
        keepalive: Duration,
        last_write: tokio::time::Instant,
        health: &'a Health,
        panic_test: bool,
    }
}

impl Body<'_> {
    /// The next piece of the client's answer. After [`Piece::Data`] with `done`, or
    /// [`Piece::Failed`], there is nothing more.
    pub async fn next(self: Pin<&mut Self>) -> Piece {
        let mut this = self.project();
        let r = &mut **this.r;
        loop {
            // A body read ahead goes first (whole, for the usual non-streamed answer).
            let (chunk, done) = if let Some((b, whole)) = this.pending.take() {
                (Some(b), whole)
            } else {
                *this.total_armed =
                    *this.total_armed || *this.deadline <= tokio::time::Instant::now() + *this.idle;
                let chunk = tokio::select! {
                    _ = this.total.as_mut(), if *this.total_armed => {
                        r.up.shutdown().await;
                        let ev = closing_event(&mut r.tap, "total timeout");
                        return Piece::Failed(total_timeout(), ev);
                    }
                    _ = this.ping.as_mut(), if *this.pings => {
                        let now = tokio::time::Instant::now();
                        let due = *this.last_write + *this.keepalive;
                        if now < due {
                            this.ping.as_mut().reset(due);
                            continue;
                        }
                        this.ping.as_mut().reset(now + *this.keepalive);
                        *this.last_write = now;
                        match r.tap.keepalive() {
                            Some(ping) => return Piece::KeepAlive(ping),
                            None => continue,
                        }
                    }
                    c = r.up.read_response_body() => match c {
                        Ok(c) => c,
                        Err(e) => {
                            r.up.shutdown().await;
                            this.health.record(Outcome::Failed, Instant::now());
                            let what = crate::drain::failure_message(e.etype().as_str());
                            let ev = closing_event(&mut r.tap, what);
                            return Piece::Failed(e.into_up(), ev);
                        }
                    },
                };
                let done = chunk.is_none() || r.up.response_done();
                (chunk, done)
            };
            if *this.pings {
                *this.last_write = tokio::time::Instant::now();
            }
            let mut out = chunk;
            if !run_tap(&mut r.tap, &mut out, done, *this.panic_test) {
                // The transcoder's state is not trusted after a panic: end the stream.
                r.up.shutdown().await;
                let ev = closing_event(&mut r.tap, "internal error");
                let e = Error::explain(ErrorType::InternalError, "panic in a response filter");
                return Piece::Failed(e, ev);
            }
            if out.is_some() || done {
                return Piece::Data(out, done);
            }
        }
    }
}
