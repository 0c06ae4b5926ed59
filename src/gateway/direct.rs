//! The direct path: the request is sent by the gateway itself, on Pingora's pooled client
//! connector, and the answer is written to the client here. It takes every forwarded
//! request that Pingora's proxy path cannot carry (see `gateway` for the rule): a body over
//! the 64 KiB retry buffer, a translated stream (keep-alives while the provider is silent),
//! a non-streamed answer (read ahead, so that an invalid 200 can fail over or become a 502),
//! and anything with somewhere to fail over to (Pingora cannot retry after a response
//! header). Steps: connect and attempt, in `Gateway::attempts` (one [`attempt`] per candidate
//! until one answers), and stream, in `Gateway::deliver` (the answer written to the client
//! through the same [`super::response::ResponseTap`] the proxy path's response filters call).
//! (Why a path of its own: Pingora 0.9.1 replays a request body only from its 64 KiB retry
//! buffer, sends nothing between upstream writes, and cannot retry once a header is out.)

use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::attempt::{self, Exchange, Piece, Target};
use super::ctx::Ctx;
use super::upstream::upstream_request;
use super::Gateway;
use crate::balance::Outcome;
use crate::metrics;
use crate::route::Route;
use std::time::Instant;

impl Gateway {
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

    /// Forwards the request in `ctx` and streams the answer. Errors are tagged upstream or
    /// downstream so that `fail_to_proxy` answers (or stays silent) correctly.
    pub(super) async fn forward_direct(&self, s: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.direct = true;
        let (exchange, target, route) = self.attempts(s.req_header(), ctx).await?;
        self.deliver(s, ctx, exchange, &target, &route).await
    }

    /// The attempt step: one attempt per candidate. A failed attempt (connect error,
    /// timeout, reset, 429 or 5xx, an invalid 2xx body: before anything reached the client)
    /// moves on to the next candidate while the retry budget and the deadline allow. Needs
    /// `ctx` planned for its route (`route`, `upstream_addr`, `upstream_path`,
    /// `upstream_body`) and, to fail over, `alternates` and `client_body`; the tool loop
    /// calls it for each model turn.
    pub(super) async fn attempts(
        &self,
        head: &pingora::http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<(Exchange, Target, Route)> {
        loop {
            let route = ctx.route.clone().expect("route set before forwarding");
            // The connect step: where, and by when the whole request (connect included) ends.
            let addr = ctx
                .upstream_addr
                .expect("address resolved before forwarding");
            let target = Target::new(&route, addr, ctx.stream, ctx.start);
            route.health.begin(Instant::now());
            ctx.attempts += 1;
            if let Some(p) = ctx.phases.as_mut() {
                p.attempt_start(ctx.start, &route);
            }
            let body = ctx.upstream_body.clone().unwrap_or_default();
            let mut res =
                match upstream_request(head, &route.provider, &ctx.upstream_path, body.len()) {
                    Ok(mut req) => {
                        crate::otel::propagate(ctx.phases.as_deref(), &mut req);
                        attempt::send(&self.state.connector, &target, &req, &body).await
                    }
                    Err(e) => Err(e),
                };
            let failure = attempt::judge(&mut res);
            attempt::record(&route.health, failure);
            if let Some(p) = ctx.phases.as_mut() {
                let status = res.as_ref().map_or(0, |x| x.status());
                p.attempt_end(ctx.start, status, failure.map_or("ok", |f| f.0));
            }
            let Some((reason, _)) = failure else {
                return Ok((res?, target, route));
            };
            if !ctx.alternates.is_empty() {
                let denied = if tokio::time::Instant::now() >= target.deadline {
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
                    if let Ok(a) = res {
                        a.shutdown().await;
                    }
                    continue;
                }
            }
            if !ctx.tried.is_empty() {
                ctx.tried.push(format!("{} ({reason})", route.health.id));
            }
            if reason == "invalid_body" {
                if let Ok(a) = res {
                    a.shutdown().await;
                }
                return Err(Error::explain(
                    ErrorType::Custom("returned an invalid response body"),
                    "invalid JSON in a 2xx answer",
                )
                .into_up());
            }
            return Ok((res?, target, route));
        }
    }

    /// The stream step: writes the answer to the client as the body reader yields it,
    /// watching the client meanwhile (a disconnect closes the upstream at once, so the
    /// provider stops generating).
    pub(super) async fn deliver(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        exchange: Exchange,
        target: &Target,
        route: &Route,
    ) -> Result<()> {
        let mut spec = ctx.tap_spec.clone().expect("planned");
        spec.stream_cost = self.stream_cost(ctx);
        let idle = target.timeouts.stream_idle;
        let (mut resp, mut response) = exchange.open(&spec, idle)?;
        let checks_answer = !ctx.stream
            && response.tap.status < 300
            && ctx.guard.as_ref().is_some_and(|g| g.reads_answer());
        // A non-streamed answer read whole ahead goes out whole, its cost in its header.
        let whole = !ctx.stream && !response.tap.is_stream && response.read_whole();
        if checks_answer || whole {
            return Box::pin(self.deliver_whole(s, ctx, resp, response, target, route)).await;
        }
        // A stream with output checks is checked as it goes, one with masked values has
        // them restored (`guard_stream`).
        let watched = ctx.stream
            && response.tap.status < 300
            && super::guard_stream::is_event_stream(&resp)
            && ctx.guard.as_ref().is_some_and(|g| g.reads_answer());
        attempt::answering(ctx, &mut resp, &response.tap)?;
        self.stand(ctx, &mut resp, None);
        if let Err(e) = s.write_response_header(Box::new(resp), false).await {
            ctx.client_gone = true;
            response.shutdown().await;
            ctx.tap = Some(response.into_tap());
            return Err(e.into_down());
        }
        if watched {
            return Box::pin(self.deliver_watched(s, ctx, response, target, route)).await;
        }
        // Translated streams get keep-alives while the provider is silent (a reasoning model
        // can think for minutes): Anthropic `ping` events, OpenAI `: keep-alive` comments.
        let keepalive = self.state.cfg.stream_keepalive;
        let panic_test = super::test_panic_wanted(s, "response");
        let mut body = std::pin::pin!(response.body(
            target.deadline,
            idle,
            keepalive,
            &route.health,
            panic_test
        ));
        let ended: Result<()> = loop {
            let piece = tokio::select! {
                // The provider's body first: a piece already read ahead goes out without
                // looking at the client.
                biased;
                p = body.as_mut().next() => p,
                r = s.as_downstream_mut().read_body_or_idle(true) => {
                    ctx.client_gone = true;
                    let e = r.err().unwrap_or_else(|| Error::new(ErrorType::ConnectionClosed));
                    break Err(e.into_down());
                }
            };
            let (out, done) = match piece {
                Piece::Data(out, done) => (out, done),
                Piece::KeepAlive(ping) => (Some(ping), false),
                Piece::Failed(e, last) => {
                    if let Some(ev) = last {
                        let _ = s.write_response_body(Some(ev), true).await;
                    }
                    ctx.tap = Some(response.into_tap());
                    return Err(e);
                }
            };
            if let Err(e) = s.write_response_body(out, done).await {
                ctx.client_gone = true;
                break Err(e.into_down());
            }
            if done {
                break Ok(());
            }
        };
        if let Err(e) = ended {
            response.shutdown().await;
            ctx.tap = Some(response.into_tap());
            return Err(e);
        }
        ctx.tap = Some(response.release(&self.state.connector, &target.peer).await);
        Ok(())
    }

    /// A non-streamed answer read whole (it was read ahead already; with output checks, it
    /// is checked), then written, as it came or as its refusal, with its settled cost.
    async fn deliver_whole(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        mut resp: pingora::http::ResponseHeader,
        mut response: attempt::Response,
        target: &Target,
        route: &Route,
    ) -> Result<()> {
        let idle = target.timeouts.stream_idle;
        let keepalive = self.state.cfg.stream_keepalive;
        let panic_test = super::test_panic_wanted(s, "response");
        // Usually one piece (the body read ahead): kept as it is, without a copy.
        let mut pieces: Vec<bytes::Bytes> = Vec::new();
        let failed = {
            let mut body = std::pin::pin!(response.body(
                target.deadline,
                idle,
                keepalive,
                &route.health,
                panic_test
            ));
            loop {
                match body.as_mut().next().await {
                    Piece::Data(out, done) => {
                        pieces.extend(out);
                        if done {
                            break None;
                        }
                    }
                    Piece::KeepAlive(_) => {}
                    Piece::Failed(e, _) => break Some(e),
                }
            }
        };
        if let Some(e) = failed {
            ctx.tap = Some(response.into_tap());
            return Err(e);
        }
        let answer = match pieces.len() {
            1 => pieces.pop().unwrap_or_default(),
            _ => bytes::Bytes::from(pieces.concat()),
        };
        let out = if ctx.guard.as_ref().is_some_and(|g| g.reads_answer()) {
            self.guard_answer(ctx, &mut resp, answer).await
        } else {
            answer
        };
        resp.remove_header("transfer-encoding");
        resp.insert_header("content-length", out.len().to_string())?;
        attempt::answering(ctx, &mut resp, &response.tap)?;
        let cost = self.settled_cost(ctx, &response.tap);
        self.stand(ctx, &mut resp, cost);
        let written = match s.write_response_header(Box::new(resp), false).await {
            Ok(()) => s.write_response_body(Some(out), true).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            ctx.client_gone = true;
            ctx.tap = Some(response.into_tap());
            return Err(e.into_down());
        }
        ctx.tap = Some(response.release(&self.state.connector, &target.peer).await);
        Ok(())
    }
}
