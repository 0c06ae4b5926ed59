//! tollgate's sessions with the registered MCP servers, for `/mcp`: one long-lived session
//! per server (opened on first use, with tollgate's credential), its tool list cached for
//! `mcp_gateway.tools_ttl_secs` and dropped at once when the server sends
//! `notifications/tools/list_changed`.
//!
//! A session that fails is dropped and the operation tried once more on a new one (with a
//! fresh OAuth token when the server refused the old one). A tool call is retried only when
//! the failure means it never ran (an expired session, a refused token).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Mutex};

use super::client::{self, CallToolResult, Headers, McpError, Progress, ServerSpec, Session, Tool};
use super::oauth::{Credential, Tokens};
use super::settings::McpSettings;
use crate::outbound::HostPolicy;
use crate::records::mcp::{McpAuth, McpTransport};
use crate::records::McpServerRecord;

struct Conn {
    /// The record the session was opened with (a changed record opens a new one).
    record: Arc<McpServerRecord>,
    session: Session,
    /// When the OAuth token the session was opened with is due for a refresh.
    refresh_at: Option<Instant>,
    changed: watch::Receiver<u64>,
    tools: parking_lot::Mutex<Option<Listed>>,
}

/// A fetched tool list: when, at which list-changed count, and the tools.
type Listed = (Instant, u64, Arc<Vec<Tool>>);

/// One server's session, if open. Connecting holds this server's slot only: a slow server
/// never delays the others.
type Slot = Arc<Mutex<Option<Arc<Conn>>>>;

#[derive(Default)]
pub struct Upstreams {
    slots: parking_lot::Mutex<HashMap<String, Slot>>,
    pub tokens: Tokens,
}

/// Whether a failure means the server never ran the call (safe to retry).
fn never_ran(e: &McpError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    matches!(e, McpError::Unreachable { .. })
        || [
            "401",
            "unauthorized",
            "auth required",
            "session",
            "404",
            "transport closed",
        ]
        .iter()
        .any(|w| text.contains(w))
}

impl Upstreams {
    /// The spec to connect to `s` with, and when its OAuth token is due for a refresh.
    pub async fn spec(
        &self,
        s: &McpServerRecord,
        cfg: &McpSettings,
    ) -> Result<(ServerSpec, Option<Instant>), McpError> {
        let mut refresh_at = None;
        let call_timeout = s
            .call_timeout_ms
            .map_or(cfg.call_timeout, std::time::Duration::from_millis);
        let mut spec = ServerSpec::new(&s.id, &s.url, cfg.connect_timeout, call_timeout);
        spec.transport = match s.transport {
            McpTransport::StreamableHttp => client::TransportKind::StreamableHttp,
            McpTransport::Sse => client::TransportKind::Sse,
        };
        let mut headers = Headers::new();
        match &s.auth {
            None => {}
            Some(McpAuth::Header { name, value }) => headers.insert(name, value)?,
            Some(McpAuth::Oauth {
                token_url,
                client_id,
                client_secret,
                scope,
            }) => {
                let (token, due) = self
                    .tokens
                    .get(&Credential {
                        server: &s.id,
                        token_url,
                        client_id,
                        client_secret,
                        scope: scope.as_deref(),
                    })
                    .await
                    .map_err(|reason| McpError::Unreachable {
                        server: s.id.clone(),
                        reason,
                    })?;
                headers.bearer(&token)?;
                refresh_at = Some(due);
            }
        }
        spec.headers = headers;
        Ok((spec, refresh_at))
    }

    /// The open session with `s`, or a new one.
    async fn conn(
        &self,
        s: &Arc<McpServerRecord>,
        cfg: &McpSettings,
    ) -> Result<Arc<Conn>, McpError> {
        let slot = self.slots.lock().entry(s.id.clone()).or_default().clone();
        let mut conn = slot.lock().await;
        if let Some(c) = conn.as_ref() {
            let fresh = c.refresh_at.is_none_or(|t| t > Instant::now());
            if c.record == *s && fresh {
                return Ok(c.clone());
            }
        }
        let (spec, refresh_at) = self.spec(s, cfg).await?;
        // Operator-registered URLs may be anywhere the operator chose (a sidecar, the LAN).
        let session = client::connect(&spec, HostPolicy::ANY).await?;
        let changed = session.tools_changed();
        let c = Arc::new(Conn {
            record: s.clone(),
            session,
            refresh_at,
            changed,
            tools: parking_lot::Mutex::new(None),
        });
        if let Some(old) = conn.replace(c.clone()) {
            close_later(old);
        }
        Ok(c)
    }

    /// Drops the session with `id` (a failure, or the record changed).
    pub async fn forget(&self, id: &str, refused_token: bool) {
        let slot = self.slots.lock().get(id).cloned();
        if let Some(slot) = slot {
            if let Some(old) = slot.lock().await.take() {
                close_later(old);
            }
        }
        if refused_token {
            self.tokens.invalidate(id);
        }
    }

    /// The server's tools, from the cache while it is fresh.
    pub async fn tools(
        &self,
        s: &Arc<McpServerRecord>,
        cfg: &McpSettings,
    ) -> Result<Arc<Vec<Tool>>, McpError> {
        let mut retried = false;
        loop {
            let c = self.conn(s, cfg).await?;
            let changes = *c.changed.borrow();
            if let Some((at, seen, tools)) = c.tools.lock().as_ref() {
                if *seen == changes && at.elapsed() < cfg.tools_ttl {
                    return Ok(tools.clone());
                }
            }
            match c.session.list_tools().await {
                Ok(tools) => {
                    let tools = Arc::new(tools);
                    *c.tools.lock() = Some((Instant::now(), changes, tools.clone()));
                    return Ok(tools);
                }
                Err(e) if !retried => {
                    log::debug!("MCP server '{}': {e}; reconnecting", s.id);
                    self.forget(&s.id, true).await;
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Calls `tool` on the server, passing its progress to `on_progress`.
    pub async fn call(
        &self,
        s: &Arc<McpServerRecord>,
        cfg: &McpSettings,
        tool: &str,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
        on_progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<CallToolResult, McpError> {
        let mut retried = false;
        loop {
            let c = self.conn(s, cfg).await?;
            match c
                .session
                .call_tool(tool, arguments.clone(), Some(&mut *on_progress))
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) if !retried && never_ran(&e) => {
                    log::debug!("MCP server '{}': {e}; reconnecting", s.id);
                    self.forget(&s.id, true).await;
                    retried = true;
                }
                Err(e) => {
                    if !matches!(e, McpError::Timeout { .. }) {
                        self.forget(&s.id, false).await;
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Closes a session in the background once no call uses it any more.
fn close_later(c: Arc<Conn>) {
    tokio::spawn(async move {
        if let Some(c) = Arc::into_inner(c) {
            c.session.close().await;
        }
    });
}
