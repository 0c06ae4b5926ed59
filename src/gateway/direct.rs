//! The large-body path. Pingora 0.9.1 replays a body that `request_filter` has read only
//! through its retry buffer, which holds 64 KiB; Claude Code sends 75–120 KB per turn. So a
//! body that did not fit is sent through Pingora's own pooled client connector, and the
//! answer is streamed to the client here, through the same [`ResponseTap`] that the proxy
//! path's response filters call: one response implementation, two ways in.
//! (Design and measurements: shared/reference/pingora-notes.md §6b, design A.)

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::ctx::Ctx;
use super::response::ResponseTap;
use super::upstream::{peer_for, upstream_request};
use super::Gateway;
use crate::balance::Outcome;
use crate::metrics;
use std::time::{Duration, Instant};

/// Sends the request and reads the response header (skipping 1xx).
async fn send_request(
    up: &mut HttpSession,
    req: &pingora::http::RequestHeader,
    body: &Bytes,
) -> Result<()> {
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

/// A non-streamed answer is read ahead up to this size before anything reaches the client,
/// so that a provider's garbage 200 can still fail over or become a clean 502. Larger
/// answers (big embedding batches) are streamed through unchecked after this much.
const READ_AHEAD: usize = 8 * 1024 * 1024;

/// An attempt that got a response header, and the body read ahead (non-streamed 2xx
/// answers): the bytes and whether they are the whole body.
pub(super) struct Attempt {
    up: HttpSession,
    ahead: Option<(Bytes, bool)>,
    /// A whole body read ahead, parsed: its `usage` (handed to the response tap, which then
    /// does not parse the body a second time).
    parsed: Option<Option<crate::meter::UsageNumbers>>,
}

/// Why an attempt failed, as a metrics label; None when it answered and may be used. A
/// whole 2xx body read ahead must be JSON: it is parsed here, once.
fn failure_of(res: &mut Result<Attempt>) -> Option<(&'static str, Outcome)> {
    match res {
        Ok(a) => {
            if let Some((body, true)) = &a.ahead {
                match serde_json::from_slice::<super::response::UsageOnly>(body) {
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

/// Whether a response header means the deployment failed (429 or 5xx), with its label; a
/// 429 with `Retry-After` says how long to cool off. Both forwarding paths use it.
pub(super) fn status_failure(h: &ResponseHeader) -> Option<(&'static str, Outcome)> {
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
pub(super) fn error_reason(e: &Error) -> &'static str {
    use ErrorType::*;
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => "timeout",
        ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError
        | TLSHandshakeFailure | InvalidCert | HandshakeError => "connect",
        _ => "io",
    }
}

/// Reads a non-streamed 2xx answer ahead (up to [`READ_AHEAD`]); None for streams and
/// other statuses, which go through as they come.
async fn read_ahead(
    up: &mut HttpSession,
    stream: bool,
    timeouts: &crate::config::Timeouts,
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
    let mut buf = bytes::BytesMut::new();
    loop {
        if tokio::time::Instant::now() >= deadline {
            up.shutdown().await;
            return Err(Error::explain(ErrorType::ReadTimedout, "total timeout").into_up());
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

impl Gateway {
    /// One attempt on the route in `ctx`: connect (or reuse a pooled connection), send the
    /// request, read the response header. Nothing reaches the client here, so a failed
    /// attempt can be retried elsewhere.
    async fn attempt(
        &self,
        s: &Session,
        ctx: &Ctx,
        peer: &HttpPeer,
        deadline: tokio::time::Instant,
    ) -> Result<Attempt> {
        let route = ctx.route.as_ref().expect("route set before forwarding");
        let body = ctx.upstream_body.clone().unwrap_or_default();
        let timeouts = route.provider.timeouts;
        let req = upstream_request(
            s.req_header(),
            &route.provider,
            &ctx.upstream_path,
            body.len(),
        )?;
        let total_timeout = || Error::explain(ErrorType::ReadTimedout, "total timeout").into_up();
        let mut tries = 0;
        loop {
            tries += 1;
            let connecting = self.state.connector.session(peer);
            let (mut up, reused) =
                match within(deadline, peer.options.total_connection_timeout, connecting).await {
                    Some(r) => r.map_err(|e| e.into_up())?,
                    None => return Err(total_timeout()),
                };
            // The connector does not apply the peer's read/write timeouts itself. Until the
            // response header: the time-to-first-byte timeout.
            up.set_read_timeout(Some(timeouts.first_byte));
            up.set_write_timeout(peer.options.write_timeout);
            let sent = match within(
                deadline,
                Some(timeouts.first_byte),
                send_request(&mut up, &req, &body),
            )
            .await
            {
                Some(r) if tokio::time::Instant::now() < deadline => r,
                _ => {
                    up.shutdown().await;
                    return Err(total_timeout());
                }
            };
            match sent {
                Ok(()) => {
                    let ahead = read_ahead(&mut up, ctx.stream, &timeouts, deadline).await?;
                    return Ok(Attempt {
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

    /// Moves `ctx` on to the next candidate that can serve the request (planned for its
    /// format, priced when pricing is required, its host resolved). False when none is left.
    async fn next_candidate(&self, ctx: &mut Ctx) -> bool {
        let ledger = &self.state.ledger;
        while !ctx.alternates.is_empty() {
            let route = ctx.alternates.remove(0);
            let price = ledger
                .prices
                .load()
                .lookup(&route.provider.name, &route.model);
            if price.is_none() && ledger.require_pricing {
                continue;
            }
            let body = ctx.client_body.clone().unwrap_or_default();
            let Ok(mut req) = super::body::RequestJson::peek(&body) else {
                return false;
            };
            let query = ctx.client_query.take();
            let planned = super::plan::plan(ctx, &mut req, body, &route, query.as_deref());
            ctx.client_query = query;
            let plan = match planned {
                Ok(p) => p,
                Err(e) => {
                    log::info!(
                        "request {}: skipping {} ({}): {}",
                        ctx.request_id,
                        route.health.id,
                        route.model,
                        e.message
                    );
                    continue;
                }
            };
            let addr = match self
                .state
                .resolver
                .resolve(&route.provider.host, route.provider.port)
                .await
            {
                Ok(a) => a,
                Err(_) => {
                    route.health.count_attempt("connect");
                    route.health.record(Outcome::Failed, Instant::now());
                    continue;
                }
            };
            if let Some(adm) = ctx.admission.as_mut() {
                adm.price = price;
            }
            ctx.upstream_path = plan.path;
            ctx.tap_spec = Some(plan.tap);
            ctx.upstream_body = Some(plan.body);
            ctx.upstream_addr = Some(addr);
            ctx.route = Some(route);
            return true;
        }
        false
    }

    /// Forwards the request in `ctx` and streams the answer. A failed attempt (connect
    /// error, timeout, reset, 429 or 5xx: before anything reached the client) moves on to
    /// the next candidate while the retry budget and the deadline allow. Errors are tagged
    /// upstream or downstream so that `fail_to_proxy` answers (or stays silent) correctly.
    pub(super) async fn forward_direct(&self, s: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.direct = true;
        let (attempt, peer, route, deadline) = loop {
            let route = ctx.route.clone().expect("route set before forwarding");
            let addr = ctx
                .upstream_addr
                .expect("address resolved before forwarding");
            let peer: HttpPeer = peer_for(&route.provider, addr, ctx.stream);
            // The whole request, connect included, ends by this deadline.
            let deadline =
                tokio::time::Instant::from_std(ctx.start) + route.provider.timeouts.total;
            route.health.begin(Instant::now());
            ctx.attempts += 1;
            let mut res = self.attempt(s, ctx, &peer, deadline).await;
            let failure = failure_of(&mut res);
            let label = failure.map_or("ok", |f| f.0);
            route.health.count_attempt(label);
            route
                .health
                .record(failure.map_or(Outcome::Ok, |f| f.1), Instant::now());
            let Some((reason, _)) = failure else {
                break (res?, peer, route, deadline);
            };
            if !ctx.alternates.is_empty() {
                let denied = if tokio::time::Instant::now() >= deadline {
                    Some("deadline")
                } else if !self.state.retry_budget.try_withdraw() {
                    Some("budget")
                } else {
                    None
                };
                if let Some(why) = denied {
                    metrics::RETRIES_DENIED.with_label_values(&[why]).inc();
                } else if self.next_candidate(ctx).await {
                    let kind = if ctx.route.as_ref().is_some_and(|r| r.fallback) {
                        "fallback"
                    } else {
                        "deployment"
                    };
                    metrics::RETRIES.with_label_values(&[kind, reason]).inc();
                    log::info!(
                        "request {}: {} failed ({reason}), trying {}",
                        ctx.request_id,
                        route.health.id,
                        ctx.route.as_ref().map_or("", |r| r.health.id.as_str())
                    );
                    ctx.tried.push(format!("{} ({reason})", route.health.id));
                    if let Ok(mut a) = res {
                        a.up.shutdown().await;
                    }
                    continue;
                }
            }
            if !ctx.tried.is_empty() {
                ctx.tried.push(format!("{} ({reason})", route.health.id));
            }
            if reason == "invalid_body" {
                if let Ok(mut a) = res {
                    a.up.shutdown().await;
                }
                return Err(Error::explain(
                    ErrorType::Custom("returned an invalid response body"),
                    "invalid JSON in a 2xx answer",
                )
                .into_up());
            }
            break (res?, peer, route, deadline);
        };
        let Attempt {
            mut up,
            ahead,
            parsed,
        } = attempt;
        let timeouts = route.provider.timeouts;
        let total_timeout = || Error::explain(ErrorType::ReadTimedout, "total timeout").into_up();
        // Cut at the stop deadline if still open (declared after `up`: forgotten first).
        let ticket = up.stream().map(|st| crate::drain::DRAIN.track(st.id()));

        // Between body chunks: the idle timeout.
        up.set_read_timeout(Some(timeouts.stream_idle));
        let mut resp: ResponseHeader = up.response_header().expect("header read").clone();
        ctx.upstream_ttfb = Some(ctx.start.elapsed());
        let had_length = resp.headers.get("content-length").is_some();
        for h in [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "proxy-connection",
        ] {
            resp.remove_header(h);
        }
        let spec = ctx.tap_spec.clone().expect("planned");
        let mut tap = ResponseTap::on_header(&mut resp, &spec);
        if let Some(usage) = parsed {
            tap.body_already_parsed(usage);
        }
        if !tap.replaces_body() && !tap.rewrites_body() && (!had_length || tap.is_stream) {
            resp.remove_header("content-length");
            resp.insert_header("transfer-encoding", "chunked")?;
        }
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        if ctx.attempts > 1 {
            resp.insert_header("x-tollgate-attempts", ctx.attempts.to_string())?;
        }
        if tap.is_stream {
            metrics::INFLIGHT_STREAMS.inc();
            ctx.counted_inflight = true;
        }
        if let Err(e) = s.write_response_header(Box::new(resp), false).await {
            ctx.client_gone = true;
            up.shutdown().await;
            ctx.tap = Some(tap);
            return Err(e.into_down());
        }

        // Translated streams get keep-alives while the provider is silent (a reasoning model
        // can think for minutes): Anthropic `ping` events, OpenAI `: keep-alive` comments.
        let keepalive = self.state.cfg.stream_keepalive;
        // Both timers live across the loop, and neither is touched per chunk (a timer
        // registration can cost a syscall): the deadline is checked between reads and gets
        // its timer only once it is nearer than the idle timeout, which bounds every read;
        // the ping timer, when it fires, first looks at when the stream last wrote.
        let total = tokio::time::sleep_until(deadline);
        let mut total_armed = false;
        let mut last_write = tokio::time::Instant::now();
        tokio::pin!(total);
        let ping = tokio::time::sleep(keepalive);
        tokio::pin!(ping);
        let pings = tap.sends_keepalives();
        // A body read ahead goes first (whole, for the usual non-streamed answer).
        let mut pending = ahead;
        loop {
            let (chunk, done) = if let Some((b, whole)) = pending.take() {
                (Some(b), whole)
            } else {
                total_armed =
                    total_armed || deadline <= tokio::time::Instant::now() + timeouts.stream_idle;
                let chunk = tokio::select! {
                    _ = &mut total, if total_armed => {
                        up.shutdown().await;
                        if let Some(ev) = super::limits::guard_sync(|| tap.on_upstream_error("total timeout")).flatten() {
                            let _ = s.write_response_body(Some(ev), true).await;
                        }
                        ctx.tap = Some(tap);
                        return Err(total_timeout());
                    }
                    _ = &mut ping, if pings => {
                        let now = tokio::time::Instant::now();
                        if now < last_write + keepalive {
                            ping.as_mut().reset(last_write + keepalive);
                            continue;
                        }
                        ping.as_mut().reset(now + keepalive);
                        last_write = now;
                        if let Some(ping) = tap.keepalive() {
                            if let Err(e) = s.write_response_body(Some(ping), false).await {
                                ctx.client_gone = true;
                                up.shutdown().await;
                                ctx.tap = Some(tap);
                                return Err(e.into_down());
                            }
                        }
                        continue;
                    }
                    r = up.read_response_body() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            up.shutdown().await;
                            route.health.record(Outcome::Failed, Instant::now());
                            let etype = crate::drain::failure_message(e.etype().as_str());
                            if let Some(ev) = super::limits::guard_sync(|| tap.on_upstream_error(etype)).flatten() {
                                let _ = s.write_response_body(Some(ev), true).await;
                            }
                            ctx.tap = Some(tap);
                            return Err(e.into_up());
                        }
                    },
                    // Watch the client while waiting for the provider: a disconnect closes the
                    // upstream at once, so the provider stops generating.
                    r = s.as_downstream_mut().read_body_or_idle(true) => {
                        ctx.client_gone = true;
                        up.shutdown().await;
                        ctx.tap = Some(tap);
                        return Err(r.err().unwrap_or_else(|| Error::new(ErrorType::ConnectionClosed)).into_down());
                    }
                };
                let done = chunk.is_none() || up.response_done();
                (chunk, done)
            };
            if pings {
                last_write = tokio::time::Instant::now();
            }
            let mut out = chunk;
            let trigger = super::test_panic_wanted(s, "response");
            let ran = super::limits::guard_sync(|| {
                if trigger {
                    super::test_panic(s, "response");
                }
                tap.on_body(&mut out, done)
            });
            if ran.is_none() {
                // The transcoder's state is not trusted after a panic: end the stream.
                up.shutdown().await;
                if let Some(ev) =
                    super::limits::guard_sync(|| tap.on_upstream_error("internal error")).flatten()
                {
                    let _ = s.write_response_body(Some(ev), true).await;
                }
                ctx.tap = Some(tap);
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "panic in a response filter",
                ));
            }
            if out.is_some() || done {
                if let Err(e) = s.write_response_body(out, done).await {
                    ctx.client_gone = true;
                    up.shutdown().await;
                    ctx.tap = Some(tap);
                    return Err(e.into_down());
                }
            }
            if done {
                break;
            }
        }
        ctx.tap = Some(tap);
        drop(ticket);
        self.state.connector.release(up, &peer).await;
        Ok(())
    }
}
