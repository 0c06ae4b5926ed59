//! tollgate's own MCP server, `/mcp` (Streamable HTTP, served by rmcp's `StreamableHttpService`
//! in stateless mode: every POST stands alone, so nothing is kept between requests and any
//! instance can answer any request).
//!
//! The caller is the virtual key that the gateway authenticated before this runs (it is
//! never forwarded). It sees the tools of the registered servers its MCP policy allows,
//! named `server__tool`; a tool it may not use is neither listed nor callable (a JSON-RPC
//! error, the same as for a tool that does not exist). A call is rate-limited by the policy,
//! admitted and billed by the ledger like a model request (the server's price per call),
//! forwarded with tollgate's credential, its progress notifications relayed, and recorded
//! as a usage row (`endpoint: mcp`, `provider`: the server, `model`: the tool) and in the
//! `tollgate_mcp_*` metrics.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, InitializeResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::sync::Arc;
use std::time::Instant;

use super::outcome::{observe, Outcome};
use super::policy::{bounding, may_call, may_use_server, Bound};
use crate::clock;
use crate::ids;
use crate::meter::price::Price;
use crate::records::{KeyRecord, McpServerRecord, UsageRecord, UserRecord};
use crate::state::State;

/// Separates a server's id from its tool's name in the names `/mcp` lists.
pub const SEPARATOR: &str = "__";

/// The caller of one `/mcp` request.
#[derive(Clone)]
pub struct McpEndpoint {
    state: Arc<State>,
    key: Arc<KeyRecord>,
    user: Option<Arc<UserRecord>>,
    bounds: Arc<Vec<Bound>>,
    request_id: String,
}

/// The rmcp service that answers one `/mcp` request for `key`.
pub fn service(
    state: Arc<State>,
    key: Arc<KeyRecord>,
    request_id: String,
) -> StreamableHttpService<McpEndpoint, LocalSessionManager> {
    let user = key
        .user_id
        .as_ref()
        .and_then(|u| state.ledger.users.load().get(u).cloned());
    let bounds = Arc::new(bounding(&key, user.as_deref()));
    let endpoint = McpEndpoint {
        state,
        key,
        user,
        bounds,
        request_id,
    };
    // Stateless, and no Host check: every request carries a virtual key, which a
    // DNS-rebinding page cannot have.
    let mut config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    config.legacy_session_mode = false;
    StreamableHttpService::new(
        move || Ok(endpoint.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

fn unknown_tool(name: &str) -> ErrorData {
    let shown: String = name.chars().take(128).filter(|c| !c.is_control()).collect();
    ErrorData::invalid_params(format!("Unknown tool: {shown}"), None)
}

impl McpEndpoint {
    fn record(
        &self,
        server: &McpServerRecord,
        tool: &str,
        started: Instant,
        outcome: Outcome,
        bytes: u64,
        error: Option<String>,
    ) -> UsageRecord {
        let latency = started.elapsed();
        observe(&server.id, outcome, latency);
        UsageRecord {
            id: ids::generate_id("use_"),
            ts_ms: clock::now_millis(),
            request_id: self.request_id.clone(),
            key_id: Some(self.key.id.clone()),
            user_id: self.key.user_id.clone(),
            endpoint: "mcp".into(),
            provider: server.id.clone(),
            model: tool.to_string(),
            upstream_model: tool.to_string(),
            status: outcome.status(),
            error,
            latency_ms: latency.as_millis() as u64,
            response_bytes: bytes,
            ..Default::default()
        }
    }

    /// A call refused before it reached the server: recorded (with no charge), and answered
    /// as a JSON-RPC error.
    fn refuse(
        &self,
        server: &McpServerRecord,
        tool: &str,
        started: Instant,
        outcome: Outcome,
        message: String,
    ) -> ErrorData {
        let rec = self.record(server, tool, started, outcome, 0, Some(message.clone()));
        self.state.ledger.queue.push(crate::records::Settled {
            record: rec,
            charges: Vec::new(),
        });
        ErrorData::new(rmcp::model::ErrorCode(-32000), message, None)
    }
}

impl ServerHandler for McpEndpoint {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools of the MCP servers registered in tollgate that this key may use, named server__tool.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mcp = &self.state.mcp;
        let usable: Vec<_> = mcp
            .registry
            .all()
            .into_iter()
            .filter(|(s, _)| may_use_server(&self.bounds, &s.id))
            .collect();
        // Every server at once: one slow or down server delays the list by its own timeout
        // only, and leaves the others' tools listed.
        let listed = futures_util::future::join_all(
            usable
                .iter()
                .map(|(s, _)| mcp.upstreams.tools(s, &mcp.settings)),
        )
        .await;
        let mut out = Vec::new();
        for ((server, _), tools) in usable.iter().zip(listed) {
            let tools = match tools {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("{e}");
                    continue;
                }
            };
            for t in tools.iter() {
                if may_call(&self.bounds, &server.id, &t.name) {
                    let mut t = t.clone();
                    t.name = format!("{}{SEPARATOR}{}", server.id, t.name).into();
                    out.push(t);
                }
            }
        }
        Ok(ListToolsResult::with_all_items(out))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let mcp = &self.state.mcp;
        let name = request.name.as_ref();
        let Some((server_id, tool)) = name.split_once(SEPARATOR) else {
            return Err(unknown_tool(name));
        };
        let server = match mcp.registry.get(server_id) {
            Some((s, _)) if may_call(&self.bounds, server_id, tool) => s,
            _ => return Err(unknown_tool(name)),
        };
        let now = clock::now_secs();
        if let Err(retry) = mcp.rates.admit(&self.bounds, server_id, tool, now) {
            return Err(self.refuse(
                &server,
                tool,
                started,
                Outcome::RateLimited,
                format!("Rate limit of tool {name} reached; retry in {retry} s."),
            ));
        }
        // Admitted like a model request: budgets reserve the price of one call, the key's
        // and user's request limits count it.
        let price = Price {
            input: server.price_per_call_micros.unwrap_or(0),
            output: 0,
            cache_read: None,
            cache_write: None,
        };
        let estimate = crate::meter::Usage {
            input: 1_000_000,
            ..Default::default()
        };
        let ledger = &self.state.ledger;
        let mut admission = match ledger
            .admit_async(
                &self.key,
                self.user.as_deref(),
                None,
                None,
                Some(price),
                &estimate,
                now,
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                return Err(self.refuse(&server, tool, started, Outcome::Refused, e.message));
            }
        };
        // Progress of the upstream call, relayed to this caller under its own token.
        let mut relay = context.meta.get_progress_token().map(|token| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<super::client::Progress>();
            let peer = context.peer.clone();
            let task = tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    let mut n = ProgressNotificationParam::new(token.clone(), p.progress);
                    n.total = p.total;
                    n.message = p.message;
                    let _ = peer.notify_progress(n).await;
                }
            });
            (tx, task)
        });
        let mut on_progress = |p: super::client::Progress| {
            if let Some((tx, _)) = &relay {
                let _ = tx.send(p);
            }
        };
        let answer = mcp
            .upstreams
            .call(
                &server,
                &mcp.settings,
                tool,
                request.arguments,
                &mut on_progress,
            )
            .await;
        // Every progress notification goes out before the result.
        if let Some((tx, task)) = relay.take() {
            drop(tx);
            let _ = task.await;
        }
        let outcome = Outcome::of(&answer);
        let (bytes, error, result) = match answer {
            Ok(r) => {
                let bytes = serde_json::to_vec(&r).map_or(0, |b| b.len() as u64);
                (bytes, None, Ok(r))
            }
            Err(e) => {
                let msg = e.to_string();
                (
                    0,
                    Some(msg.clone()),
                    Err(ErrorData::internal_error(msg, None)),
                )
            }
        };
        // Only a call that ran and succeeded is charged.
        if matches!(outcome, Outcome::Ok) {
            admission.extra = server.price_per_call_micros.unwrap_or(0);
        }
        let rec = self.record(&server, tool, started, outcome, bytes, error);
        admission.price = None;
        ledger.settle(&mut admission, rec, clock::now_secs());
        result.map(|r: CallToolResult| r.into())
    }
}
