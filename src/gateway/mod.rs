//! The `ProxyHttp` implementation. The hooks stay thin: each calls the module that owns the
//! work (auth, route, providers, meter, admin, local endpoints, ...), and each says which
//! traffic it serves.
//!
//! ## Two forwarding paths
//! `request_filter` answers local endpoints itself ([`crate::local`], [`crate::admin`], the
//! web console [`crate::ui`], CORS preflights in [`cors`]). For
//! inference it reads the whole body (up to `max_body_bytes`, answering
//! `Expect: 100-continue` first; Pingora's retry buffering is enabled when the body may fit
//! its 64 KiB buffer), parses it, admits it, routes it and plans the upstream request. Then:
//! - a **same-format stream** whose body fit the retry buffer and that has **no alternate**
//!   deployment to fail over to goes on Pingora's proxy path: Pingora replays the buffer
//!   through `request_body_filter`, where the planned body is substituted, and the answer
//!   flows through `response_filter` / `response_body_filter`;
//! - everything else takes the [`direct`] path, on Pingora's pooled client connector: bodies
//!   over 64 KiB (Claude Code's 75–120 KB turns, multi-MB documents), translated streams
//!   (keep-alives while the provider is silent), non-streamed answers (read ahead, so that an
//!   invalid 200 can fail over or become a 502) and requests with alternates (Pingora cannot
//!   retry after a response header).
//!
//! Both paths share one [`attempt`] module (the breaker's bookkeeping, the answer's start,
//! the response tap under the panic guard, the closing error event) and one
//! [`response::ResponseTap`]. Nothing on the response side is ever buffered whole when it
//! is a stream.

mod attempt;
mod body;
pub mod cors;
mod count;
mod ctx;
mod direct;
mod end_user;
mod guard;
mod guard_stream;
pub mod limits;
mod mcp;
mod plan;
pub mod reply;
pub mod response;
mod settle;
mod standing;
mod tool_loop;
pub mod upstream;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{ErrorSource, ErrorType};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub use ctx::Ctx;

use crate::auth;
use crate::clock;
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, GatewayError};
use crate::ids;
use crate::local;
use crate::metrics;
use crate::records::KeyRecord;
use crate::state::State;
use response::ResponseTap;

pub struct Gateway {
    pub state: Arc<State>,
}

/// How `request_filter` left the request.
pub enum Flow {
    /// Continue on Pingora's proxy path.
    Proxy,
    /// A response has been written.
    Done,
}

/// A failure while handling a request: either an answer for the client or an I/O error.
pub enum Failure {
    Client(GatewayError),
    Io(Box<pingora::Error>),
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        Failure::Client(e)
    }
}

impl From<Box<pingora::Error>> for Failure {
    fn from(e: Box<pingora::Error>) -> Self {
        Failure::Io(e)
    }
}

fn request_id(s: &Session) -> String {
    // Keep a caller's id when it is short and printable, else mint one.
    if let Some(v) = s.get_header("x-request-id").and_then(|v| v.to_str().ok()) {
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_string();
        }
    }
    ids::request_id()
}

impl Gateway {
    /// Authenticates the virtual key on an inference or listing request.
    fn authenticate(&self, s: &Session) -> Result<Arc<KeyRecord>, GatewayError> {
        let h = &s.req_header().headers;
        let presented = auth::presented_key(
            h.get("authorization").map(|v| v.as_bytes()),
            h.get("x-api-key").map(|v| v.as_bytes()),
        );
        let res = presented.and_then(|k| self.state.keys.check(k, clock::now_secs()));
        res.map_err(|f| {
            metrics::AUTH_FAILURES.with_label_values(&[f.label()]).inc();
            GatewayError::new(ErrorKind::Authentication, f.message())
        })
    }

    /// The request presents the master key.
    fn presents_master(&self, s: &Session) -> bool {
        let h = &s.req_header().headers;
        auth::presented_key(
            h.get("authorization").map(|v| v.as_bytes()),
            h.get("x-api-key").map(|v| v.as_bytes()),
        )
        .is_ok_and(|k| self.state.keys.is_master(k))
    }

    /// Dispatches a request: inference goes on to [`Self::inference`]; local endpoints are
    /// answered by [`Self::local`] (boxed, so that their futures do not size the hot path's
    /// one, which is moved into a Box per request).
    async fn handle(&self, s: &mut Session, ctx: &mut Ctx) -> Result<Flow, Failure> {
        match ctx.endpoint {
            Endpoint::Admin => Box::pin(self.admin(s, ctx)).await,
            Endpoint::Ui => Box::pin(self.console(s, ctx)).await,
            Endpoint::Mcp => Box::pin(self.mcp(s, ctx)).await,
            e if e.is_inference() => self.inference(s, ctx).await,
            _ => Box::pin(self.local(s, ctx)).await,
        }
    }

    /// The endpoints answered by `crate::local`, authenticated here where they need a key.
    async fn local(&self, s: &mut Session, ctx: &mut Ctx) -> Result<Flow, Failure> {
        let state = &self.state;
        let answer = match ctx.endpoint {
            Endpoint::Root if crate::ui::wants_console(state, &s.req_header().headers) => {
                crate::ui::root_redirect()
            }
            Endpoint::Root => local::root(),
            Endpoint::Preflight => cors::preflight(&state.cfg.cors, &s.req_header().headers),
            Endpoint::Health => local::health(state, &plain(s.req_header(), Bytes::new())),
            Endpoint::Metrics => local::metrics(),
            Endpoint::KeyInfo => {
                let key = self.authenticate(s)?;
                ctx.key = Some(key.clone());
                local::key_info_session(state, &key, s.req_header().uri.query()).await
            }
            Endpoint::Tools => {
                let key = self.authenticate(s)?;
                ctx.key = Some(key.clone());
                local::tools(state, &key)
            }
            Endpoint::Models | Endpoint::Model => {
                ctx.key = Some(self.authenticate(s)?);
                let req = plain(s.req_header(), Bytes::new());
                local::models(state, &req, ctx.endpoint).await
            }
            Endpoint::StoredResponse | Endpoint::Conversations => {
                // The master key reads every stored response; a virtual key its own.
                let key = if self.presents_master(s) {
                    None
                } else {
                    Some(self.authenticate(s)?)
                };
                ctx.key = key.clone();
                let reader = match &key {
                    Some(k) => crate::responses::Reader::Key(&k.id),
                    None => crate::responses::Reader::Master,
                };
                let body = if s.req_header().method == "POST" {
                    read_admin_body(s).await?
                } else {
                    Bytes::new()
                };
                let req = plain(s.req_header(), body);
                if ctx.endpoint == Endpoint::Conversations {
                    crate::responses::conversations::answer(&state.responses, reader, &req).await
                } else {
                    crate::responses::api::answer(&state.responses, reader, &req).await
                }
            }
            _ => {
                return Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!(
                        "No route for {} {}.",
                        s.req_header().method,
                        local::printable(s.req_header().uri.path())
                    ),
                )
                .into())
            }
        };
        send_answer(s, ctx, &answer).await?;
        Ok(Flow::Done)
    }

    /// The management API: the caller is authorized before the body is read, then
    /// [`crate::admin::route`] answers. Its errors linger on an unread body, like the
    /// gateway's own refusals.
    async fn admin(&self, s: &mut Session, ctx: &mut Ctx) -> Result<Flow, Failure> {
        let h = s.req_header();
        crate::admin::authorize(&self.state, h.method.as_str(), h.uri.path(), &h.headers)?;
        let body = if crate::admin::takes_body(h.method.as_str()) {
            read_admin_body(s).await?
        } else {
            Bytes::new()
        };
        let mut answer = crate::admin::route(&self.state, &plain(s.req_header(), body)).await;
        answer.headers.extend([
            ("cache-control", "no-store".to_string()),
            ("x-content-type-options", "nosniff".to_string()),
        ]);
        if answer.error.is_some()
            && answer.status != 408
            && !expects_continue(s)
            && !s.as_downstream_mut().is_body_done()
        {
            linger(s).await;
        }
        send_answer(s, ctx, &answer).await?;
        Ok(Flow::Done)
    }

    /// The web console ([`crate::ui`]): its body read like a management request's.
    async fn console(&self, s: &mut Session, ctx: &mut Ctx) -> Result<Flow, Failure> {
        let body = match s.req_header().method.as_str() {
            "GET" | "HEAD" => Bytes::new(),
            _ => read_admin_body(s).await?,
        };
        let peer = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let answer = crate::ui::answer(&self.state, &plain(s.req_header(), body), peer).await;
        send_answer(s, ctx, &answer).await?;
        Ok(Flow::Done)
    }

    async fn inference(&self, s: &mut Session, ctx: &mut Ctx) -> Result<Flow, Failure> {
        let key = self.authenticate(s)?;
        let permit = self.state.inflight.acquire(&key.id);
        ctx.trace = crate::traces::decide(&key);
        ctx.phases = crate::otel::begin(
            s.req_header(),
            ctx.trace != crate::traces::settings::Capture::Off,
            ctx.start,
        );
        ctx.key = Some(key);
        ctx.permit = Some(permit?);
        test_panic(s, "request");
        let body = read_body(s, self.state.cfg.max_body_bytes, &self.state.cfg.limits).await?;
        if ctx.trace == crate::traces::settings::Capture::Full {
            ctx.trace_request = Some(body.clone());
        }
        ctx.replayable = body.len() <= RETRY_BUFFER && !s.retry_buffer_truncated();
        let mut req = body::RequestJson::peek(&body)?;
        let model = match req.fields().get("model") {
            Some(Value::String(m)) => m.clone(),
            Some(_) => {
                return Err(GatewayError::invalid("'model' must be a string.")
                    .with_param("model")
                    .into())
            }
            None if ctx.endpoint == Endpoint::Moderations => "omni-moderation-latest".to_string(),
            None => {
                return Err(GatewayError::invalid("'model' is required.")
                    .with_param("model")
                    .into())
            }
        };
        ctx.stream = match req.fields().get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(GatewayError::invalid("'stream' must be a boolean.")
                    .with_param("stream")
                    .into())
            }
        };
        ctx.client_model = model.clone();
        if let Some(p) = ctx.phases.as_mut().filter(|p| p.ids.is_some()) {
            p.params = crate::otel::phases::Params::read(req.fields(), &body);
        }
        let (route, alternates) = self.state.router.candidates(&model)?;
        if let Some(p) = ctx.phases.as_mut() {
            p.routed = Some(ctx.start.elapsed());
        }
        self.state.retry_budget.deposit();
        let body = self.stored_responses(ctx, &mut req, body, &route).await?;
        if let Some(f) = ctx.endpoint.generation_format() {
            ctx.mcp_native = tool_loop::mcp_native(f, plan::upstream_format(f, &route.provider));
        }
        // Guardrails: before admission, so that a refused request costs nothing; after a
        // Responses chain is resolved, so that its checks (and masks) see the history.
        let body = if self.guard_wanted(ctx, &req) {
            let began = ctx.start.elapsed();
            let checked = Box::pin(self.guard_input(ctx, &mut req, body)).await;
            if let Some(p) = ctx.phases.as_mut() {
                p.guard = Some((began, ctx.start.elapsed()));
            }
            checked?
        } else {
            body
        };
        self.admit(s, ctx, req.fields(), &route, body.len()).await?;
        if ctx.endpoint == Endpoint::CountTokens {
            ctx.client_header = Some(s.req_header().clone());
            let full = req.full(&body)?;
            if let Some(answer) = Box::pin(self.count_tokens(ctx, full, &body, &route)).await {
                reply::send(s, 200, "application/json", answer, &ctx.request_id, &[]).await?;
                return Ok(Flow::Done);
            }
        }
        // Gateway tools (web search, code execution) run in the tool loop; a cheap byte
        // check keeps every other request out of it.
        let named_mcp = ctx
            .tool_loop_fields
            .as_ref()
            .is_some_and(|f| f.contains_key("mcp_servers") || f.contains_key("mcp_server_ids"));
        if ctx.endpoint.generation_format().is_some()
            && (named_mcp || crate::tools::declare::might_declare(&body, true))
            && Box::pin(self.tool_loop(s, ctx, &mut req, &body, &route, &alternates)).await?
        {
            return Ok(Flow::Done);
        }
        let query = s.req_header().uri.query().map(String::from);
        if !alternates.is_empty() {
            ctx.client_body = Some(body.clone());
            ctx.client_query = query.clone();
            ctx.alternates = alternates;
        }
        let plan = plan::plan(ctx, &mut req, body, &route, query.as_deref())?;
        ctx.upstream_path = plan.path;
        ctx.tap_spec = Some(plan.tap);
        let upstream_body = plan.body;
        ctx.upstream_addr = Some(
            self.state
                .resolver
                .resolve(&route.provider.host, route.provider.port)
                .await?,
        );
        ctx.upstream_body = Some(upstream_body);
        ctx.route = Some(route);
        metrics::INFLIGHT_REQUESTS.inc();
        // Pingora's retry buffer holds 64 KiB (`BODY_BUF_LIMIT`, 0.9.1): what fit is replayable.
        // Translated streams take the direct path too: there the gateway can send keep-alives
        // while the provider is silent (the proxy path writes only when the upstream does).
        let translated_stream = ctx.stream
            && ctx
                .tap_spec
                .as_ref()
                .is_some_and(|t| !matches!(t.translation, response::Translation::None));
        // The direct path holds the attempts loop (Pingora's proxy path cannot retry after a
        // response header) and reads non-streamed answers ahead, so that a provider's
        // invalid 200 fails over or becomes a 502 instead of reaching the client. Same-format
        // streams with a replayable body and nowhere to fail over to stay on the proxy path.
        // Output checks (and masked values restored) read the answer on the direct path.
        let reads_answer = ctx.guard.as_ref().is_some_and(|g| g.reads_answer());
        if ctx.stream
            && ctx.replayable
            && !translated_stream
            && ctx.alternates.is_empty()
            && !reads_answer
        {
            return Ok(Flow::Proxy);
        }
        Box::pin(self.forward_direct(s, ctx)).await?;
        Ok(Flow::Done)
    }
}

impl Gateway {
    /// The standing headers of an error answer: model requests only (not the management
    /// API's or the local endpoints' errors).
    fn error_standing(&self, ctx: &Ctx) -> standing::Headers {
        if ctx.endpoint.is_inference() && ctx.endpoint != Endpoint::CountTokens {
            self.standing_headers(ctx, None)
        } else {
            Vec::new()
        }
    }

    /// A Responses request on a translated route: its chain and referenced items from the
    /// stored responses, and what its answer stores (`crate::responses`). The returned body
    /// is the one to send on (the history included, so budgets reserve for it). Every other
    /// request passes untouched, without a parse.
    async fn stored_responses(
        &self,
        ctx: &mut Ctx,
        req: &mut body::RequestJson,
        body: Bytes,
        route: &crate::route::Route,
    ) -> Result<Bytes, GatewayError> {
        let Some(upstream) = plan::translated_responses(ctx.endpoint, route) else {
            return Ok(body);
        };
        if !self.state.cfg.responses.store {
            return Ok(body);
        }
        let key_id = ctx.key.as_ref().map(|k| k.id.clone()).unwrap_or_default();
        let full = req.full(&body)?;
        let (turn, changed) =
            crate::responses::resolve::prepare(&self.state.responses, &key_id, full, upstream)
                .await?;
        ctx.turn = turn.map(Arc::new);
        if !changed {
            return Ok(body);
        }
        serde_json::to_vec(full)
            .map(Bytes::from)
            .map_err(|e| GatewayError::new(ErrorKind::Internal, e.to_string()))
    }
}

/// The model names this request's output may use up to (for the budget estimate).
fn max_output_tokens(req: &serde_json::Map<String, Value>, default: u64) -> u64 {
    ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| req.get(*k).and_then(Value::as_u64))
        .unwrap_or(default)
}

/// A Pingora request header (and a body read whole) as a plain request for `crate::local`
/// and `crate::admin`.
fn plain(h: &RequestHeader, body: Bytes) -> local::Request<'_> {
    local::Request {
        method: h.method.as_str(),
        path: h.uri.path(),
        query: h.uri.query(),
        headers: &h.headers,
        body,
    }
}

/// Writes a local answer; an error answer is remembered for the access log.
async fn send_answer(s: &mut Session, ctx: &mut Ctx, a: &local::Answer) -> pingora::Result<()> {
    if let Some(e) = &a.error {
        ctx.error = Some(e.clone());
    }
    let mut extra = a.headers.clone();
    if let Some(ra) = a.retry_after {
        extra.push(("retry-after", ra.to_string()));
    }
    reply::send(
        s,
        a.status,
        a.content_type,
        a.body.clone(),
        &ctx.request_id,
        &extra,
    )
    .await
}

/// Reads a management request body (at most [`crate::admin::MAX_BODY`] bytes).
async fn read_admin_body(s: &mut Session) -> Result<Bytes, Failure> {
    let mut body = BytesMut::new();
    while let Some(c) = s.read_request_body().await? {
        if body.len() + c.len() > crate::admin::MAX_BODY {
            return Err(GatewayError::new(
                ErrorKind::PayloadTooLarge,
                "Management request body is too large.",
            )
            .into());
        }
        body.extend_from_slice(&c);
    }
    Ok(body.freeze())
}

/// A panic on demand, for the fault tests: debug builds started with
/// `TOLLGATE_TEST_PANICS=1`, header `x-tollgate-test-panic: request|response`.
fn test_panic_wanted(s: &Session, at: &str) -> bool {
    cfg!(debug_assertions)
        && std::env::var_os("TOLLGATE_TEST_PANICS").is_some()
        && s.get_header("x-tollgate-test-panic")
            .is_some_and(|v| v.as_bytes() == at.as_bytes())
}

fn test_panic(s: &Session, at: &str) {
    if test_panic_wanted(s, at) {
        panic_for_test(at);
    }
}

fn panic_for_test(at: &str) -> ! {
    panic!("test panic in {at} (key sk-this-must-be-redacted-123)");
}

/// Reads the request body whole, enforcing the size limit before and while reading, and
/// the slow-client limits: a per-read timeout and a whole-body deadline.
async fn read_body(
    s: &mut Session,
    max: usize,
    limits: &crate::config::Limits,
) -> Result<Bytes, Failure> {
    s.set_read_timeout(Some(limits.client_read_timeout));
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    let res = {
        let mut read = std::pin::pin!(read_body_inner(s, max));
        // A body that has already arrived (most are, with their header) is read in the first
        // poll: the whole-body deadline needs a timer only when the read has to wait.
        match std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(read.as_mut(), cx))
        })
        .await
        {
            std::task::Poll::Ready(r) => Ok(r),
            std::task::Poll::Pending => tokio::time::timeout_at(deadline, read).await,
        }
    };
    match res {
        Ok(r) => r,
        Err(_) => {
            limits::LIMIT_REJECTIONS
                .with_label_values(&["body_timeout"])
                .inc();
            s.set_keepalive(None);
            Err(GatewayError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "The request body did not arrive within {} s.",
                    limits.body_timeout.as_secs_f64()
                ),
            )
            .with_status(408)
            .with_code("request_timeout")
            .into())
        }
    }
}

fn expects_continue(s: &Session) -> bool {
    s.get_header("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads and drops what a client is still sending of a body that is refused (a lingering
/// close, as nginx does): closing with unread data makes the kernel reset the connection,
/// and a client still writing then sees the reset instead of the 413. Bounded in bytes and
/// time; whatever is left after that is cut off.
async fn linger(s: &mut Session) {
    const BYTES: usize = 16 * 1024 * 1024;
    const TIME: std::time::Duration = std::time::Duration::from_secs(2);
    s.set_read_timeout(Some(std::time::Duration::from_millis(500)));
    let drain = async {
        let mut seen = 0;
        while let Ok(Some(c)) = s.read_request_body().await {
            seen += c.len();
            if seen > BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(TIME, drain).await;
}

/// The size of Pingora 0.9's retry buffer (`BODY_BUF_LIMIT`, not exported).
const RETRY_BUFFER: usize = 64 * 1024;

async fn read_body_inner(s: &mut Session, max: usize) -> Result<Bytes, Failure> {
    let too_large = || {
        GatewayError::new(
            ErrorKind::PayloadTooLarge,
            format!("Request body exceeds the gateway's limit of {max} bytes."),
        )
    };
    let length = s
        .get_header("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = expects_continue(s);
    if length.is_some_and(|cl| cl > max as u64) {
        return Err(too_large().into());
    }
    // Pingora's retry buffer is what lets the proxy path send a body that was read here;
    // it holds 64 KiB, so a larger body (Claude Code's, mostly) goes the direct path and
    // is not copied into it.
    if length.is_none_or(|cl| cl <= RETRY_BUFFER as u64) {
        s.enable_retry_buffering();
    }
    if expects_continue {
        s.write_continue_response().await?;
    }
    let read_err = |e: Box<pingora::Error>| {
        Failure::Client(GatewayError::invalid(format!(
            "Could not read the request body: {}",
            e.etype().as_str()
        )))
    };
    // A body that comes in one piece is returned as that piece, without a copy.
    let Some(first) = s.read_request_body().await.map_err(read_err)? else {
        return Ok(Bytes::new());
    };
    if first.len() > max {
        return Err(too_large().into());
    }
    let Some(second) = s.read_request_body().await.map_err(read_err)? else {
        return Ok(first);
    };
    // Several pieces: kept as they come and joined once at the end (growing one buffer
    // would copy what it holds at every growth).
    let mut total = first.len();
    let mut pieces = vec![first];
    let mut next = Some(second);
    while let Some(chunk) = next {
        if total + chunk.len() > max {
            return Err(too_large().into());
        }
        total += chunk.len();
        pieces.push(chunk);
        next = s.read_request_body().await.map_err(read_err)?;
    }
    let mut body = BytesMut::with_capacity(total);
    for p in &pieces {
        body.extend_from_slice(p);
    }
    Ok(body.freeze())
}

/// Maps a Pingora error to what the client should see; None when the client is gone.
fn classify_error(e: &pingora::Error, provider: &str) -> Option<GatewayError> {
    use ErrorType::*;
    let msg = |what: &str| format!("The provider '{provider}' {what}.");
    let err = match (e.etype(), e.esource()) {
        (HTTPStatus(c), _) => {
            GatewayError::new(ErrorKind::InvalidRequest, format!("HTTP {c}")).with_status(*c)
        }
        (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => return None,
        (ConnectTimedout, _) => GatewayError::new(
            ErrorKind::UpstreamTimeout,
            msg("did not accept a connection in time"),
        ),
        (ReadTimedout | WriteTimedout, ErrorSource::Upstream) => {
            GatewayError::new(ErrorKind::UpstreamTimeout, msg("did not answer in time"))
        }
        (ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError, _) => {
            GatewayError::new(
                ErrorKind::Upstream,
                msg("is unreachable (connection failed)"),
            )
        }
        (TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError, _) => {
            GatewayError::new(ErrorKind::Upstream, msg("failed the TLS handshake"))
        }
        (_, ErrorSource::Upstream) => GatewayError::new(
            ErrorKind::Upstream,
            format!("The provider '{provider}' failed: {}.", e.etype().as_str()),
        ),
        (_, ErrorSource::Downstream) => GatewayError::invalid(format!(
            "Could not read the request: {}.",
            e.etype().as_str()
        )),
        _ => GatewayError::new(
            ErrorKind::Internal,
            format!("Internal error: {}.", e.etype().as_str()),
        ),
    };
    Some(err)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    /// Every answer: Pingora's (disabled) compression as by default, and the CORS headers
    /// when `cors:` lists origins.
    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        modules
            .add_module(pingora::modules::http::compression::ResponseCompressionBuilder::enable(0));
        if self.state.cfg.cors.enabled() {
            modules.add_module(Box::new(cors::CorsBuilder(Arc::new(
                self.state.cfg.cors.clone(),
            ))));
        }
    }

    /// Every request: classifies it, answers local endpoints and refusals, and plans
    /// inference; forwards on the direct path or hands over to the proxy path (`Ok(false)`).
    async fn request_filter(&self, s: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        limits::header_done(s);
        ctx.request_id = request_id(s);
        let h = s.req_header();
        ctx.endpoint = Endpoint::classify(h.method.as_str(), h.uri.path());
        let max_header = self.state.cfg.limits.max_header_bytes;
        if limits::header_bytes(h) > max_header {
            limits::LIMIT_REJECTIONS
                .with_label_values(&["header_size"])
                .inc();
            s.set_keepalive(None);
            let e = GatewayError::invalid(format!(
                "The request headers exceed the gateway's limit of {max_header} bytes."
            ))
            .with_status(431)
            .with_code("request_header_too_large");
            ctx.error = Some(e.message.clone());
            reply::send_error(s, ctx.endpoint.format(), &e, &ctx.request_id).await?;
            return Ok(true);
        }
        // A panic while handling the request answers 500 instead of resetting the connection.
        let handled = limits::CatchPanic(Box::pin(self.handle(s, ctx))).await;
        let handled = handled.unwrap_or_else(|()| {
            Err(Failure::Client(
                GatewayError::new(
                    ErrorKind::Internal,
                    "Internal error while handling the request.",
                )
                .with_code("internal_panic"),
            ))
        });
        match handled {
            Ok(Flow::Proxy) => Ok(false),
            Ok(Flow::Done) => Ok(true),
            Err(Failure::Client(e)) if s.response_written().is_some() => {
                // Already answering (a panic mid-stream on the direct path): end it.
                ctx.error = Some(e.message.clone());
                if let Some(ev) = ctx
                    .tap
                    .as_mut()
                    .and_then(|t| attempt::closing_event(t, "internal error"))
                {
                    let _ = s.write_response_body(Some(ev), true).await;
                }
                Err(pingora::Error::explain(ErrorType::InternalError, "panic"))
            }
            Err(Failure::Client(e)) => {
                ctx.error = Some(e.message.clone());
                // Refused before its body was read (a bad key, a body too large, a limit): the
                // client is likely still sending it. Not for a body that timed out.
                if e.status() != 408
                    && !expects_continue(s)
                    && !s.as_downstream_mut().is_body_done()
                {
                    linger(s).await;
                }
                let extra = self.error_standing(ctx);
                reply::send_error_with(s, ctx.endpoint.format(), &e, &ctx.request_id, extra)
                    .await?;
                Ok(true)
            }
            Err(Failure::Io(e)) => Err(e),
        }
    }

    /// Proxy path only: the planned provider's peer; the attempt begins for its breaker.
    async fn upstream_peer(
        &self,
        _s: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let (Some(route), Some(addr)) = (ctx.route.as_ref(), ctx.upstream_addr) else {
            return Err(pingora::Error::explain(
                ErrorType::InternalError,
                "no route",
            ));
        };
        // An ejected provider whose cooling-off is over: this request is its probe.
        route.health.begin(std::time::Instant::now());
        Ok(Box::new(upstream::peer_for(
            &route.provider,
            addr,
            ctx.stream,
        )))
    }

    /// Proxy path only: the client's header rewritten for the provider.
    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let route = ctx.route.as_ref().expect("routed");
        let len = ctx.upstream_body.as_ref().map_or(0, |b| b.len());
        *up = upstream::upstream_request(up, &route.provider, &ctx.upstream_path, len)?;
        if let Some(p) = ctx.phases.as_mut() {
            p.attempt_start(ctx.start, route);
            crate::otel::propagate(Some(p), up);
        }
        Ok(())
    }

    /// Proxy path only: the upstream connection is tracked, to be cut at the stop deadline
    /// (the direct path tracks its own in `attempt`).
    async fn connected_to_upstream(
        &self,
        _s: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.upstream_ticket = Some(crate::drain::DRAIN.track(fd));
        Ok(())
    }

    /// Proxy path only: the rewritten body replaces the client's as Pingora replays it.
    async fn request_body_filter(
        &self,
        _s: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // Pingora replays the retry buffer once per attempt; substitute the rewritten body.
        if ctx.upstream_body.is_some() {
            *body = if end_of_stream {
                ctx.upstream_body.clone()
            } else {
                Some(Bytes::new())
            };
        }
        Ok(())
    }

    /// Proxy path only: the provider's header; the attempt's outcome and the client's
    /// answer begin (the direct path: `attempt::Exchange::open`).
    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.attempts += 1;
        let failure = attempt::status_failure(resp);
        if let Some(route) = ctx.route.as_ref() {
            attempt::record(&route.health, failure);
        }
        if let Some(p) = ctx.phases.as_mut() {
            p.attempt_end(
                ctx.start,
                resp.status.as_u16(),
                failure.map_or("ok", |f| f.0),
            );
        }
        let mut spec = ctx.tap_spec.clone().expect("planned");
        spec.stream_cost = self.stream_cost(ctx);
        let tap = ResponseTap::on_header(resp, &spec);
        attempt::answering(ctx, resp, &tap)?;
        self.stand(ctx, resp, None);
        ctx.tap = Some(tap);
        Ok(())
    }

    /// Proxy path only: each piece of the provider's body through the response tap (the
    /// direct path: `attempt::Body`), and the whole-request deadline.
    fn response_body_filter(
        &self,
        s: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<Duration>> {
        if end_of_stream {
            // The connection goes back to the pool: no longer this request's to cut.
            ctx.upstream_ticket = None;
        }
        let Some(tap) = ctx.tap.as_mut() else {
            return Ok(None);
        };
        let panic_test = test_panic_wanted(s, "response");
        if !attempt::run_tap(tap, body, end_of_stream, panic_test) {
            *body = None;
            return Err(pingora::Error::explain(
                ErrorType::InternalError,
                "panic in a response filter",
            ));
        }
        // Pingora has no whole-request deadline; the idle timeout bounds a silent upstream,
        // this bounds a slow one.
        let total = ctx.route.as_ref().map(|r| r.provider.timeouts.total);
        if !end_of_stream && total.is_some_and(|t| ctx.start.elapsed() > t) {
            return Err(attempt::total_timeout());
        }
        Ok(None)
    }

    /// Proxy path only: a failed connect, counted for the provider.
    fn fail_to_connect(
        &self,
        _s: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<pingora::Error>,
    ) -> Box<pingora::Error> {
        metrics::UPSTREAM_ERRORS
            .with_label_values(&[ctx.provider_name(), "connect"])
            .inc();
        e
    }

    /// Every forwarded request that failed (both paths: the direct path's errors come back
    /// through `request_filter`): the error answer, or the event that ends a stream
    /// mid-way; on the proxy path also the deployment's failure.
    async fn fail_to_proxy(
        &self,
        s: &mut Session,
        e: &pingora::Error,
        ctx: &mut Ctx,
    ) -> FailToProxy {
        let provider = ctx.provider_name().to_string();
        let gw = classify_error(e, &provider);
        if e.esource() == &ErrorSource::Upstream && !provider.is_empty() {
            let kind = attempt::error_reason(e);
            if let Some(p) = ctx.phases.as_mut() {
                p.attempt_end(ctx.start, 0, kind);
            }
            metrics::UPSTREAM_ERRORS
                .with_label_values(&[provider.as_str(), kind])
                .inc();
            // The proxy path's failures count against the deployment here (the direct path
            // records its own).
            if let (false, Some(route)) = (ctx.direct, ctx.route.as_ref()) {
                if ctx.tap.is_none() {
                    route.health.count_attempt(kind);
                }
                route
                    .health
                    .record(crate::balance::Outcome::Failed, std::time::Instant::now());
            }
        }
        let Some(gw) = gw else {
            ctx.client_gone = true;
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        let mut gw = gw;
        if crate::drain::DRAIN.cutting() {
            gw.message = crate::drain::CUT_MESSAGE.to_string();
        }
        if ctx.tried.len() > 1 {
            gw.message = format!(
                "{} Tried {} deployments: {}.",
                gw.message,
                ctx.tried.len(),
                ctx.tried.join(", ")
            );
        }
        ctx.error = Some(gw.message.clone());
        let code = gw.status();
        if s.response_written().is_none() {
            s.set_keepalive(None);
            let extra = self.error_standing(ctx);
            let _ =
                reply::send_error_with(s, ctx.endpoint.format(), &gw, &ctx.request_id, extra).await;
        } else if let Some(tap) = ctx.tap.as_mut() {
            // Mid-stream: end the client's stream with a proper error event.
            let etype = crate::drain::failure_message(e.etype().as_str());
            if let Some(ev) = attempt::closing_event(tap, etype) {
                let _ = s.write_response_body(Some(ev), true).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Every request: settles its budget and usage, writes the access line.
    async fn logging(&self, s: &mut Session, e: Option<&pingora::Error>, ctx: &mut Ctx) {
        limits::expect_header(s);
        let began = ctx.phases.is_some().then(|| ctx.start.elapsed());
        self.settle(s, ctx);
        if let (Some(b), Some(p)) = (began, ctx.phases.as_mut()) {
            p.settle = Some((b, ctx.start.elapsed()));
        }
        crate::access::record(s, e, ctx);
    }
}
