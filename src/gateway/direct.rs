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
use super::upstream::{peer_for, prepare_request};
use super::Gateway;
use crate::metrics;

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

impl Gateway {
    /// Forwards the request in `ctx` and streams the answer. Errors are tagged upstream or
    /// downstream so that `fail_to_proxy` answers (or stays silent) correctly.
    pub(super) async fn forward_direct(&self, s: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.direct = true;
        let route = ctx.route.clone().expect("route set before forwarding");
        let body = ctx.upstream_body.clone().unwrap_or_default();
        let addr = ctx
            .upstream_addr
            .expect("address resolved before forwarding");
        let peer: HttpPeer = peer_for(&route.provider, addr, ctx.stream);
        let timeouts = route.provider.timeouts;
        // The whole request, connect included, ends by this deadline.
        let deadline = tokio::time::Instant::from_std(ctx.start) + timeouts.total;
        let mut req = s.req_header().clone();
        prepare_request(&mut req, &route.provider, &ctx.upstream_path, body.len())?;

        let mut tries = 0;
        let total_timeout = || Error::explain(ErrorType::ReadTimedout, "total timeout").into_up();
        let mut up = loop {
            tries += 1;
            let (mut up, reused) = match tokio::time::timeout_at(
                deadline,
                self.state.connector.get_http_session(&peer),
            )
            .await
            {
                Ok(r) => r.map_err(|e| e.into_up())?,
                Err(_) => return Err(total_timeout()),
            };
            // The connector does not apply the peer's read/write timeouts itself. Until the
            // response header: the time-to-first-byte timeout.
            up.set_read_timeout(Some(timeouts.first_byte));
            up.set_write_timeout(peer.options.write_timeout);
            let sent =
                match tokio::time::timeout_at(deadline, send_request(&mut up, &req, &body)).await {
                    Ok(r) => r,
                    Err(_) => {
                        up.shutdown().await;
                        return Err(total_timeout());
                    }
                };
            match sent {
                Ok(()) => break up,
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
        };

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
        if !tap.replaces_body() && !tap.rewrites_body() && (!had_length || tap.is_stream) {
            resp.remove_header("content-length");
            resp.insert_header("transfer-encoding", "chunked")?;
        }
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
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
        let mut next_ping = tokio::time::Instant::now() + keepalive;
        loop {
            let chunk = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    up.shutdown().await;
                    if let Some(ev) = super::limits::guard_sync(|| tap.on_upstream_error("total timeout")).flatten() {
                        let _ = s.write_response_body(Some(ev), true).await;
                    }
                    ctx.tap = Some(tap);
                    return Err(total_timeout());
                }
                _ = tokio::time::sleep_until(next_ping), if tap.sends_keepalives() => {
                    next_ping = tokio::time::Instant::now() + keepalive;
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
                        let etype = e.etype().as_str();
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
            next_ping = tokio::time::Instant::now() + keepalive;
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
        self.state
            .connector
            .release_http_session(up, &peer, peer.options.idle_timeout)
            .await;
        Ok(())
    }
}
