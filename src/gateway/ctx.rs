//! Per-request state carried through Pingora's phases.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::response::ResponseTap;
use crate::endpoint::Endpoint;
use crate::records::KeyRecord;
use crate::route::Route;

pub struct Ctx {
    pub start: Instant,
    pub request_id: String,
    pub endpoint: Endpoint,
    pub key: Option<Arc<KeyRecord>>,
    /// The `model` the client asked for.
    pub client_model: String,
    pub route: Option<Route>,
    pub stream: bool,
    /// The request body can be sent again by Pingora's proxy path (its retry buffer holds it).
    pub replayable: bool,
    /// The body to send upstream (already rewritten).
    pub upstream_body: Option<Bytes>,
    pub upstream_addr: Option<SocketAddr>,
    pub tap: Option<ResponseTap>,
    pub upstream_ttfb: Option<Duration>,
    /// Why the request failed, for the access log (never holds secrets).
    pub error: Option<String>,
    /// The client went away before the response ended.
    pub client_gone: bool,
    /// The request went through the direct path (`gateway::direct`), not Pingora's proxy
    /// path.
    pub direct: bool,
    pub counted_inflight: bool,
    /// The upstream path and query after the provider's base path (differs from the
    /// client's when translating).
    pub upstream_path: String,
    /// The client's request header, kept for side calls (count_tokens) made outside the
    /// proxy path.
    pub client_header: Option<pingora::http::RequestHeader>,
    /// How the response must be treated (set when the request is planned).
    pub tap_spec: Option<super::response::TapSpec>,
    /// Budget reservation and rate-limit handles, settled in `logging`.
    pub admission: Option<crate::ledger::Admission>,
    pub user_id: Option<String>,
    /// The end user the body names (`user`, `safety_identifier`, `metadata.user_id`).
    pub end_user: Option<String>,
    pub session_id: Option<String>,
    /// The pre-call token estimate (used when the upstream reports no usage).
    pub estimate: crate::meter::Usage,
    /// The in-flight slot of this request (freed when the context drops).
    pub permit: Option<super::limits::Permit>,
    /// The proxy path's upstream connection, cut if still open at the stop deadline (the
    /// direct path's ticket lives in its `attempt::Response`).
    pub upstream_ticket: Option<crate::drain::UpstreamTicket>,
    /// Where a failed attempt moves on to (other deployments, then fallbacks), in order.
    pub alternates: Vec<Route>,
    /// The client's body and query, kept to plan an alternate (only when there is one).
    pub client_body: Option<Bytes>,
    pub client_query: Option<String>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// The deployments tried, with why each failed (for the error message).
    pub tried: Vec<String>,
    /// A Responses request on a translated route: what its answer stores.
    pub turn: Option<Arc<crate::responses::resolve::Turn>>,
    /// The tool loop's current model turn (0: no loop) and the tool calls it ran after it.
    pub tool_iteration: u64,
    pub tool_calls: u64,
    /// The guardrail checks of this request and their verdicts (None: no guardrails).
    pub guard: Option<Box<crate::guardrails::RequestGuard>>,
    /// The tool loop's fields (`max_tool_iterations`, `tools_header`, …) that the guardrail
    /// stage took off the body before forwarding.
    pub tool_loop_fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// The provider runs the client's MCP form itself (`tool_loop::mcp_native`): the
    /// request's `mcp_servers` stay in the body.
    pub mcp_native: bool,
    /// `traces.capture: full`: the client's request body as received (shared, not copied).
    pub trace_request: Option<Bytes>,
    /// What this request's trace keeps (decided once: the key's settings, the config's,
    /// sampling); `Off` for requests not traced.
    pub trace: crate::traces::settings::Capture,
    /// What the turns settled so far cost (a tool loop's earlier turns): the cost header of
    /// its answer is the whole request's.
    pub settled_micros: crate::records::Micros,
    /// When each phase ran, for the stored trace and the OpenTelemetry spans; None for a
    /// request neither traced nor sampled for export (`otel::begin`).
    pub phases: Option<Box<crate::otel::phases::Phases>>,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            request_id: String::new(),
            endpoint: Endpoint::NotFound,
            key: None,
            client_model: String::new(),
            route: None,
            stream: false,
            replayable: false,
            upstream_body: None,
            upstream_addr: None,
            tap: None,
            upstream_ttfb: None,
            error: None,
            client_gone: false,
            direct: false,
            counted_inflight: false,
            upstream_path: String::new(),
            tap_spec: None,
            client_header: None,
            admission: None,
            user_id: None,
            end_user: None,
            session_id: None,
            estimate: Default::default(),
            permit: None,
            upstream_ticket: None,
            alternates: Vec::new(),
            client_body: None,
            trace_request: None,
            trace: Default::default(),
            phases: None,
            client_query: None,
            attempts: 0,
            tried: Vec::new(),
            turn: None,
            tool_iteration: 0,
            tool_calls: 0,
            guard: None,
            tool_loop_fields: None,
            mcp_native: false,
            settled_micros: 0,
        }
    }

    pub fn provider_name(&self) -> &str {
        self.route
            .as_ref()
            .map(|r| r.provider.name.as_str())
            .unwrap_or("")
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Self::new()
    }
}
