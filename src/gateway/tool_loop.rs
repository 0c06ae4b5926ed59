//! The tool loop: a request that declares gateway tools (or whose provider web-search tool
//! tollgate claims) runs here instead of being forwarded once. Each model turn is planned
//! through the same pipeline as a normal request (client format → provider format), sent
//! with the direct path's attempts (failing over to the route's alternates, each turn
//! starting at the first) and read whole in the client's format; tollgate runs the gateway
//! tool calls it finds (`crate::tools`), appends the results and calls the model again, up
//! to the request's iteration cap. The last turn is the client's answer, with the native
//! blocks or items of what tollgate ran.
//!
//! A streamed request gets its stream at once (once the declared backends are known to be
//! reachable: an unreachable one is a 502 before the first byte), with the keep-alives of
//! its grammar while turns and tools run. Its turns are streamed from the provider too: text
//! goes to the client as it comes, tool calls and the turn's end are held until the turn is
//! over (`crate::tools::stream`), each round of searches shows as native blocks or items, and
//! a failure mid-loop ends the stream with the native error event. Non-streamed requests
//! read each turn whole.
//!
//! MCP servers named in the request (`crate::tools::mcp`) run here too when the provider
//! cannot run them: tollgate connects before the first turn (an unreachable server is an
//! error before anything is sent), offers their tools as functions, calls them between turns
//! like the gateway tools, and closes the sessions when the request ends. Where the provider
//! runs the client's MCP form itself, the request is not touched. Calls to servers registered
//! in tollgate (`mcp_server_ids`) are governed like calls through `/mcp`: the key's per-tool
//! rate limits, the server's price per call billed with the turn, the `tollgate_mcp_*` metrics.
//!
//! Accounting: each turn is admitted (budget reserved) before it is sent and settled when
//! it ends, with a usage record of its own (same request id), so a loop overspends a budget
//! by at most one turn's reservation. The last turn is settled in `logging`, as any request.

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::Error;
use serde_json::{Map, Value};

use super::attempt::{Exchange, Piece, Target};
use super::body::RequestJson;
use super::response::{ResponseTap, TapSpec};
use super::{Ctx, Failure, Gateway};
use crate::error::{ErrorKind, GatewayError};
use crate::meter::Usage;
use crate::route::Route;
use crate::tools::declare::{self, Declared, ToolKind};
use crate::tools::policy::CallLimits;
use crate::tools::run::Runner;
use crate::tools::stream::LoopStream;
use crate::tools::turns::{self, Call, ToolRun};
use crate::tools::ToolError;
use crate::translate::pipeline::Pipeline;
use crate::translate::Format;

/// A turn's outcome.
enum Turn {
    /// A 2xx answer, whole, in the client's format, and its tap (usage).
    Answer(Value, ResponseTap),
    /// The provider refused the turn (its answer not read yet), and the route that did.
    Refused(Box<(Exchange, Target, TapSpec, Route)>),
    /// A streamed turn failed: its error event already ended the client's stream.
    Ended(ResponseTap),
}

impl Gateway {
    /// Runs the request through the tool loop when it declares gateway tools. False: it
    /// declares none and goes on as usual (`req` may then be parsed whole, nothing else).
    pub(super) async fn tool_loop(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        req: &mut RequestJson,
        body: &Bytes,
        route: &Route,
        alternates: &[Route],
    ) -> Result<bool, Failure> {
        let Some(format) = ctx.endpoint.generation_format() else {
            return Ok(false);
        };
        let tools = &self.state.tools;
        let upstream = super::plan::upstream_format(format, &route.provider);
        // A provider that cannot run web search itself: tollgate always claims it (when it
        // has a backend); on a native route only with intercept on.
        let translated = Pipeline::between(format, upstream).is_some();
        let claim = tools.search.is_some() && (tools.cfg.intercept || translated);
        let named_mcp = ctx
            .tool_loop_fields
            .as_ref()
            .is_some_and(|f| f.contains_key("mcp_servers") || f.contains_key("mcp_server_ids"));
        if !declare::might_declare(body, claim) && !named_mcp {
            return Ok(false);
        }
        let mut work = req.full(body)?.clone();
        if let Some(fields) = ctx.tool_loop_fields.take() {
            work.extend(fields);
        }
        let mut specs = crate::tools::mcp::take(
            &mut work,
            format,
            mcp_native(format, upstream),
            &tools.cfg.mcp,
        )?;
        // Registered servers named by id: only those (and the tools) the key may use.
        if let Some(ids) = work.remove("mcp_server_ids") {
            let key = ctx.key.clone().expect("authenticated");
            let user = key
                .user_id
                .as_ref()
                .and_then(|u| self.state.ledger.users.load().get(u).cloned());
            specs.extend(
                crate::mcp::resolve::specs(&self.state.mcp, &key, user.as_deref(), &ids).await?,
            );
        }
        let Some(declared) = declare::take(&mut work, format, &tools.cfg, claim, specs)? else {
            return Ok(false);
        };
        // Output guardrails read one answer; the loop's turns are not checked yet. A check
        // that may block (or masked values to restore) refuses the loop rather than let an
        // answer through unchecked; monitor-only output checks are skipped, and said so.
        if let Some(g) = ctx.guard.as_ref().filter(|g| g.reads_answer()) {
            if g.restore.is_some() || g.stream_plan(1).blocks {
                return Err(GatewayError::invalid(
                    "Gateway tools (web search, code execution) cannot run on a request with blocking output guardrails or restored masks yet: send the request without the gateway tools, or without those guardrails.",
                )
                .with_param("tools")
                .into());
            }
            log::warn!(
                "{}: output guardrails (monitor) are not run on gateway tool loops",
                ctx.request_id
            );
        }
        // The key's (and its user's) tool policy: a tool it may not use is refused now,
        // before anything is sent.
        let mut limits = {
            let key = ctx.key.clone().expect("authenticated");
            let users = self.state.ledger.users.load();
            let user = key.user_id.as_ref().and_then(|u| users.get(u));
            crate::tools::policy::check(&declared.kinds(), &key, user.map(|u| &**u))?
        };
        if self.state.ledger.require_pricing {
            let prices = self.state.ledger.prices.load();
            // MCP calls are priced per registered server (its price per call), not here.
            if let Some(k) = declared.kinds().into_iter().find(|k| {
                if *k == ToolKind::Mcp {
                    return false;
                }
                let (provider, tool) = k.price_key();
                prices.lookup(provider, tool).is_none()
            }) {
                return Err(GatewayError::new(
                    ErrorKind::PaymentRequired,
                    format!(
                        "No price is configured for the gateway tool '{}' (pricing entry 'tollgate:{}'), and this gateway requires one (require_pricing).",
                        k.function(),
                        k.function()
                    ),
                )
                .with_code("tool_not_priced")
                .into());
            }
        }
        turns::strip_echoes(&mut work, format);
        // Streamed requests stream each turn from the provider (a turn without tollgate's
        // calls goes to the client live); the others read turns whole.
        work.insert("stream".into(), Value::Bool(ctx.stream));
        work.remove("stream_options");
        ctx.route = Some(route.clone());
        let mut runner = Runner::new(tools, &declared);
        // The MCP servers' tools are offered from the first turn: connect now (an
        // unreachable server is an error before the stream opens).
        let listed = match runner.connect_mcp(&declared).await {
            Ok(Some(mcp)) => {
                mcp.offer(&mut work, format);
                if format == Format::Responses {
                    mcp.list_items()
                } else {
                    Vec::new()
                }
            }
            Ok(None) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut out = None;
        if ctx.stream {
            if let Err(e) = runner.preflight(&declared).await {
                return Err(unreachable(&e).into());
            }
            let usage = req
                .fields()
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut ls =
                LoopStream::new(format, &ctx.client_model, usage).offering(declared.kinds());
            let mut h = pingora::http::ResponseHeader::build(200, Some(4))?;
            h.insert_header("content-type", "text/event-stream")?;
            h.insert_header("cache-control", "no-cache")?;
            h.insert_header("x-request-id", ctx.request_id.as_str())?;
            if let Some(v) = ctx.guard.as_ref().and_then(|g| g.header()) {
                h.insert_header("x-tollgate-guardrails", v)?;
            }
            self.stand(ctx, &mut h, None);
            s.write_response_header(Box::new(h), false)
                .await
                .map_err(|e| e.into_down())?;
            s.write_response_body(Some(ls.open()), false)
                .await
                .map_err(|e| e.into_down())?;
            if let Some(b) = ls.items(listed.clone()) {
                s.write_response_body(Some(b), false)
                    .await
                    .map_err(|e| e.into_down())?;
            }
            out = Some(ls);
        }
        let head = s.req_header().clone();
        let res = Box::pin(self.run_loop(
            s,
            ctx,
            &head,
            &mut work,
            (route, alternates),
            format,
            &declared,
            &mut runner,
            &mut limits,
            (out.as_mut(), &listed),
        ))
        .await;
        runner.close().await;
        match (res, out) {
            (Ok(()), _) => Ok(true),
            // Mid-stream: the native error event ends it.
            (Err(Failure::Client(e)), Some(mut ls)) if !ctx.client_gone => {
                ctx.error = Some(e.message.clone());
                let _ = s.write_response_body(Some(ls.fail(&e)), true).await;
                Ok(true)
            }
            (Err(Failure::Io(e)), Some(mut ls)) if !ctx.client_gone => {
                let g = GatewayError::new(
                    ErrorKind::Upstream,
                    format!(
                        "The provider '{}' failed: {}.",
                        route.provider.name,
                        e.etype().as_str()
                    ),
                );
                ctx.error = Some(g.message.clone());
                let _ = s.write_response_body(Some(ls.fail(&g)), true).await;
                Ok(true)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Awaits `fut`; on a stream, writes keep-alives meanwhile (a failed write means the
    /// client went away: `fut` is dropped, and with it whatever it holds).
    async fn keeping_alive<F: std::future::Future>(
        &self,
        s: &mut Session,
        gone: &mut ClientGone,
        out: Option<&mut LoopStream>,
        fut: F,
    ) -> Result<F::Output, Failure> {
        let Some(ls) = out else {
            return Ok(fut.await);
        };
        let every = self.state.cfg.stream_keepalive;
        let mut fut = std::pin::pin!(fut);
        loop {
            tokio::select! {
                biased;
                r = &mut fut => return Ok(r),
                _ = tokio::time::sleep(every) => {
                    if let Err(e) = s.write_response_body(Some(ls.keepalive()), false).await {
                        gone.0 = true;
                        return Err(e.into_down().into());
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_loop(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        head: &pingora::http::RequestHeader,
        work: &mut Map<String, Value>,
        (route, alternates): (&Route, &[Route]),
        format: Format,
        declared: &Declared,
        runner: &mut Runner<'_>,
        limits: &mut CallLimits,
        (mut out, listed): (Option<&mut LoopStream>, &[Value]),
    ) -> Result<(), Failure> {
        let offered = declared.kinds();
        // The MCP policies bounding the key: per-tool rate limits on registered servers.
        let mcp_bounds = if declared.mcp.iter().any(|s| s.registered) {
            let key = ctx.key.clone().expect("authenticated");
            let users = self.state.ledger.users.load();
            let user = key.user_id.as_ref().and_then(|u| users.get(u));
            crate::mcp::policy::bounding(&key, user.map(|u| &**u))
        } else {
            Vec::new()
        };
        let mut shown: Vec<ToolRun> = Vec::new();
        let mut iteration = 0u32;
        let mut gone = ClientGone(false);
        loop {
            iteration += 1;
            if iteration > 1 {
                ctx.route = Some(route.clone());
                self.admit_turn(ctx, route, work).await?;
                // Each turn is a request of its own to the retry budget.
                self.state.retry_budget.deposit();
            }
            ctx.tool_iteration = iteration as u64;
            ctx.tool_calls = 0;
            let turn = match out.as_deref_mut() {
                Some(ls) => {
                    Box::pin(self.live_turn(s, ctx, head, work, (route, alternates), ls)).await
                }
                None => Box::pin(self.turn(ctx, head, work, (route, alternates))).await,
            };
            let (mut answer, tap) = match turn? {
                Turn::Ended(tap) => {
                    // An error event already ended the client's stream.
                    ctx.tap = Some(tap);
                    return Ok(());
                }
                Turn::Answer(a, t) => (a, t),
                Turn::Refused(refused) => {
                    let (exchange, target, tap, used) = *refused;
                    if out.is_some() {
                        let status = exchange.header().status.as_u16();
                        exchange.shutdown().await;
                        return Err(GatewayError::new(
                            ErrorKind::Upstream,
                            format!(
                                "The provider '{}' refused a tool-loop turn (HTTP {status}).",
                                used.provider.name
                            ),
                        )
                        .into());
                    }
                    // The provider's refusal reaches the client as it would without tools.
                    ctx.tap_spec = Some(tap);
                    Box::pin(self.deliver(s, ctx, exchange, &target, &used)).await?;
                    return Ok(());
                }
            };
            let calls = turns::calls(&answer, format, &offered);
            let ours: Vec<Call> = calls.iter().filter(|c| c.ours.is_some()).cloned().collect();
            if ours.is_empty() {
                return self
                    .answer(
                        s,
                        ctx,
                        answer,
                        tap,
                        format,
                        (&shown, listed),
                        iteration,
                        out,
                    )
                    .await;
            }
            if iteration >= declared.max_iterations {
                self.settle_turn(ctx, tap, 422);
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "The model was still calling tools after {iteration} iterations (max_tool_iterations)."
                    ),
                )
                .with_status(422)
                .with_code("tool_iterations_exhausted")
                .into());
            }
            // Calls past a tool's max_calls, or over a registered MCP tool's rate limit, do
            // not run: the model reads why.
            let mut verdicts = limits.admit(&ours);
            if let Some(mcp) = runner.mcp() {
                let now = crate::clock::now_secs();
                mcp.admit(
                    &ours,
                    &mut verdicts,
                    &self.state.mcp.rates,
                    &mcp_bounds,
                    now,
                );
            }
            let admitted: Vec<Call> = ours
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| v.is_none())
                .map(|(c, _)| c.clone())
                .collect();
            let began = ctx.start.elapsed();
            let ran = self
                .keeping_alive(s, &mut gone, out.as_deref_mut(), runner.run(&admitted))
                .await;
            let ended = ctx.start.elapsed();
            ctx.client_gone |= gone.0;
            let runs = match ran {
                Ok(Ok(r)) => crate::tools::policy::merge(verdicts, r),
                Ok(Err(e)) => {
                    self.settle_turn(ctx, tap, 502);
                    return Err(unreachable(&e).into());
                }
                Err(e) => {
                    self.settle_turn(ctx, tap, 0);
                    return Err(e);
                }
            };
            log::info!(
                "request {}: tool loop iteration {iteration}: ran {} tool call(s)",
                ctx.request_id,
                runs.len()
            );
            self.bill_tools(ctx, &runs);
            if let Some(p) = ctx.phases.as_mut().filter(|p| p.ids.is_some()) {
                // A turn's calls run concurrently: each span covers the turn's run.
                p.tools
                    .extend(runs.iter().map(|r| crate::otel::phases::Step {
                        span_id: crate::otel::phases::new_span_id(),
                        name: r.call.name.clone(),
                        start: began,
                        end: ended,
                        outcome: if r.ok { "ok" } else { "error" }.to_string(),
                    }));
            }
            if calls.len() > ours.len() {
                // The caller's own calls too: it gets them (and only them) to run.
                turns::hide_ours(&mut answer, format, &offered);
                if let Some(ls) = out.as_deref_mut() {
                    if let Some(b) = ls.tools(&runs) {
                        if let Err(e) = s.write_response_body(Some(b), false).await {
                            ctx.client_gone = true;
                            return Err(e.into_down().into());
                        }
                    }
                } else {
                    shown.extend(runs);
                }
                return self
                    .answer(
                        s,
                        ctx,
                        answer,
                        tap,
                        format,
                        (&shown, listed),
                        iteration,
                        out,
                    )
                    .await;
            }
            self.settle_turn(ctx, tap, 200);
            if let Some(ls) = out.as_deref_mut() {
                ls.discard();
                if let Some(b) = ls.tools(&runs) {
                    if let Err(e) = s.write_response_body(Some(b), false).await {
                        ctx.client_gone = true;
                        return Err(e.into_down().into());
                    }
                }
            }
            turns::append_turn(work, format, &answer, &runs);
            shown.extend(runs);
        }
    }

    /// Plans one turn for the route and its alternates, as the direct path plans a request,
    /// so that `Gateway::attempts` can send it and fail over.
    async fn plan_turn(
        &self,
        ctx: &mut Ctx,
        work: &Map<String, Value>,
        (route, alternates): (&Route, &[Route]),
    ) -> Result<(), Failure> {
        let body = Bytes::from(serde_json::to_vec(work).map_err(|e| {
            GatewayError::new(ErrorKind::Internal, format!("encoding a turn: {e}"))
        })?);
        let mut rj = RequestJson::peek(&body)?;
        let plan = super::plan::plan(ctx, &mut rj, body.clone(), route, None)?;
        let addr = self
            .state
            .resolver
            .resolve(&route.provider.host, route.provider.port)
            .await?;
        ctx.upstream_addr = Some(addr);
        ctx.upstream_path = plan.path;
        ctx.upstream_body = Some(plan.body);
        ctx.tap_spec = Some(plan.tap);
        ctx.route = Some(route.clone());
        ctx.tried.clear();
        if !alternates.is_empty() {
            ctx.client_body = Some(body);
            ctx.client_query = None;
            ctx.alternates = alternates.to_vec();
        }
        Ok(())
    }

    /// One model turn, non-streamed: planned, sent (failing over to the route's alternates),
    /// and read whole in the client's format.
    async fn turn(
        &self,
        ctx: &mut Ctx,
        head: &pingora::http::RequestHeader,
        work: &Map<String, Value>,
        candidates: (&Route, &[Route]),
    ) -> Result<Turn, Failure> {
        self.plan_turn(ctx, work, candidates).await?;
        let (exchange, target, route) = self.attempts(head, ctx).await?;
        let tap = ctx.tap_spec.clone().expect("planned");
        if !(200..300).contains(&exchange.header().status.as_u16()) {
            return Ok(Turn::Refused(Box::new((exchange, target, tap, route))));
        }
        let idle = target.timeouts.stream_idle;
        let (_, mut response) = exchange.open(&tap, idle)?;
        let mut buf = BytesMut::new();
        let read: Result<(), Box<Error>> = {
            let keepalive = self.state.cfg.stream_keepalive;
            let mut body = std::pin::pin!(response.body(
                target.deadline,
                idle,
                keepalive,
                &route.health,
                false
            ));
            loop {
                match body.as_mut().next().await {
                    Piece::Data(chunk, done) => {
                        if let Some(c) = chunk {
                            buf.extend_from_slice(&c);
                        }
                        if done {
                            break Ok(());
                        }
                    }
                    Piece::KeepAlive(_) => {}
                    Piece::Failed(e, _) => break Err(e),
                }
            }
        };
        if let Err(e) = read {
            ctx.tap = Some(response.into_tap());
            return Err(e.into());
        }
        let tap = response.release(&self.state.connector, &target.peer).await;
        match serde_json::from_slice::<Value>(&buf) {
            Ok(v) if v.is_object() => Ok(Turn::Answer(v, tap)),
            _ => {
                ctx.tap = Some(tap);
                Err(GatewayError::new(
                    ErrorKind::Upstream,
                    format!(
                        "The provider '{}' returned an answer tollgate could not read.",
                        route.provider.name
                    ),
                )
                .into())
            }
        }
    }

    /// One model turn streamed from the provider: what the client may see goes out as it
    /// comes (`LoopStream::feed`), the rest is held until the turn's end.
    async fn live_turn(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        head: &pingora::http::RequestHeader,
        work: &Map<String, Value>,
        candidates: (&Route, &[Route]),
        ls: &mut LoopStream,
    ) -> Result<Turn, Failure> {
        self.plan_turn(ctx, work, candidates).await?;
        // Keep-alives until a provider answers (the client's stream is open); the attempts
        // fail over to the route's alternates meanwhile.
        let mut gone = ClientGone(false);
        let sent = self.attempts(head, ctx);
        let sent = Box::pin(self.keeping_alive(s, &mut gone, Some(&mut *ls), sent)).await;
        ctx.client_gone |= gone.0;
        let (exchange, target, route) = sent??;
        let route = &route;
        let tap = ctx.tap_spec.clone().expect("planned");
        if !(200..300).contains(&exchange.header().status.as_u16()) {
            return Ok(Turn::Refused(Box::new((
                exchange,
                target,
                tap,
                route.clone(),
            ))));
        }
        let idle = target.timeouts.stream_idle;
        let (_, mut response) = exchange.open(&tap, idle)?;
        let keepalive = self.state.cfg.stream_keepalive;
        let written: Result<(), Box<Error>> = {
            let mut body = std::pin::pin!(response.body(
                target.deadline,
                idle,
                keepalive,
                &route.health,
                false
            ));
            loop {
                let (out, done) = match body.as_mut().next().await {
                    Piece::Data(chunk, done) => (chunk.map(|c| ls.feed(&c)), done),
                    Piece::KeepAlive(_) => (Some(ls.keepalive()), false),
                    // The closing event, in the client's grammar, renumbered like the rest.
                    Piece::Failed(_, ev) => (ev.map(|e| ls.feed(&e)), true),
                };
                if let Some(b) = out.filter(|b| !b.is_empty()) {
                    if let Err(e) = s.write_response_body(Some(b), false).await {
                        ctx.client_gone = true;
                        break Err(e.into_down());
                    }
                }
                if done {
                    break Ok(());
                }
            }
        };
        if let Err(e) = written {
            response.shutdown().await;
            ctx.tap = Some(response.into_tap());
            return Err(e.into());
        }
        let tap = response.release(&self.state.connector, &target.peer).await;
        let end = ls.end_turn();
        if end.failed || tap.incomplete {
            if !end.failed {
                // Cut without an error event of its own: end the client's stream properly.
                let e = crate::translate::lifecycle::truncated();
                let _ = s.write_response_body(Some(ls.fail(&e)), true).await;
            } else {
                let _ = s.write_response_body(None, true).await;
            }
            ctx.error = Some("the provider's stream failed during a tool loop".into());
            return Ok(Turn::Ended(tap));
        }
        Ok(Turn::Answer(end.answer, tap))
    }

    /// Writes the last turn's answer, with the native view of the tools that ran.
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        s: &mut Session,
        ctx: &mut Ctx,
        mut answer: Value,
        tap: ResponseTap,
        format: Format,
        (shown, listed): (&[ToolRun], &[Value]),
        iterations: u32,
        out: Option<&mut LoopStream>,
    ) -> Result<(), Failure> {
        // The whole request's cost: the turns settled before this one, and this one.
        let cost = self.settled_cost(ctx, &tap).map(|c| c + ctx.settled_micros);
        ctx.tap = Some(tap);
        ctx.upstream_ttfb = Some(ctx.start.elapsed());
        if let Some(ls) = out {
            let last = ls.flush();
            if let Err(e) = s.write_response_body(Some(last), true).await {
                ctx.client_gone = true;
                return Err(e.into_down().into());
            }
            return Ok(());
        }
        turns::present(&mut answer, format, shown);
        if let (false, Some(o)) = (listed.is_empty(), answer["output"].as_array_mut()) {
            let mut all = listed.to_vec();
            all.append(o);
            *o = all;
        }
        if format == Format::Anthropic {
            crate::tools::cite::cite_answer(&mut answer, shown);
        }
        let body = serde_json::to_vec(&answer).map_err(|e| {
            GatewayError::new(ErrorKind::Internal, format!("encoding the answer: {e}"))
        })?;
        let mut extra = vec![
            ("x-tollgate-tool-iterations", iterations.to_string()),
            ("x-tollgate-tool-calls", shown.len().to_string()),
        ];
        if let Some(h) = ctx.guard.as_ref().and_then(|g| g.header()) {
            extra.push(("x-tollgate-guardrails", h));
        }
        extra.extend(self.standing_headers(ctx, cost));
        super::reply::send(
            s,
            200,
            "application/json",
            Bytes::from(body),
            &ctx.request_id,
            &extra,
        )
        .await?;
        Ok(())
    }

    /// Charges a turn's successful tool calls with that turn: gateway tools at their
    /// `pricing` entries `tollgate:<tool>`, calls to registered MCP servers at the server's
    /// price per call (as through `/mcp`); servers named by URL are not priced, failed calls
    /// are free.
    fn bill_tools(&self, ctx: &mut Ctx, runs: &[ToolRun]) {
        let prices = self.state.ledger.prices.load();
        let mcp: u64 = runs
            .iter()
            .filter(|r| r.ok)
            .filter_map(|r| r.mcp.as_ref().filter(|t| t.registered))
            .filter_map(|t| self.state.mcp.registry.get(&t.server))
            .filter_map(|(s, _)| s.price_per_call_micros)
            .sum();
        let gateway: u64 = runs
            .iter()
            .filter(|r| r.ok)
            .filter_map(|r| r.call.ours)
            .filter(|k| *k != ToolKind::Mcp)
            .filter_map(|k| {
                let (provider, tool) = k.price_key();
                prices.lookup(provider, tool)
            })
            .map(|p| p.input)
            .sum();
        let cost = gateway + mcp;
        ctx.tool_calls = runs.len() as u64;
        if let Some(adm) = ctx.admission.as_mut() {
            adm.extra += cost;
        }
    }

    /// Settles a turn that is not the last (its own usage record).
    fn settle_turn(&self, ctx: &mut Ctx, tap: ResponseTap, status: u16) {
        ctx.tap = Some(tap);
        self.settle_with_status(ctx, status);
        ctx.tap = None;
        ctx.admission = None;
    }

    /// Admits the next turn: a budget reservation for it (refused: the loop ends).
    async fn admit_turn(
        &self,
        ctx: &mut Ctx,
        route: &Route,
        work: &Map<String, Value>,
    ) -> Result<(), GatewayError> {
        let key = ctx.key.clone().expect("authenticated");
        let ledger = &self.state.ledger;
        let user = key
            .user_id
            .as_ref()
            .and_then(|u| ledger.users.load().get(u).cloned());
        let len = serde_json::to_vec(work).map_or(0, |b| b.len());
        ctx.estimate = Usage {
            input: (len as u64 / 4).max(1),
            output: super::max_output_tokens(work, self.state.cfg.default_max_output_tokens),
            ..Default::default()
        };
        let price = ledger
            .prices
            .load()
            .lookup(&route.provider.name, &route.model);
        let matches = |p: &str| {
            super::settle::budget_model_applies(&self.state.router, p, &ctx.client_model, route)
        };
        let adm = ledger
            .admit_async(
                &key,
                user.as_deref(),
                ctx.end_user.as_deref(),
                Some(&matches),
                price,
                &ctx.estimate,
                crate::clock::now_secs(),
            )
            .await?;
        ctx.admission = Some(adm);
        Ok(())
    }
}

/// Whether the provider runs the client's MCP form itself: Anthropic's MCP connector on an
/// Anthropic route, Responses `mcp` tools on OpenAI's Responses API. Chat has none.
pub(super) fn mcp_native(client: Format, upstream: Format) -> bool {
    matches!(
        (client, upstream),
        (Format::Anthropic, Format::Anthropic) | (Format::Responses, Format::Responses)
    )
}

/// Set when a keep-alive could not be written (the client went away).
struct ClientGone(bool);

/// A backend that cannot be reached: the request fails with a 502.
fn unreachable(e: &ToolError) -> GatewayError {
    GatewayError::new(
        ErrorKind::Upstream,
        format!("A gateway tool failed: {}.", e.message()),
    )
    .with_code("tool_backend_unreachable")
}
