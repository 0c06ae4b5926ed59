//! The MCP client: a remote server described by a [`ServerSpec`], reached through the SSRF
//! check of `outbound`, spoken to by the official SDK (`rmcp`).
//!
//! One [`Session`] per server per request: [`connect`] initialises it (bounded by the spec's
//! connect timeout), [`Session::list_tools`] lists what the spec allows, [`Session::call_tool`]
//! calls one (bounded by the call timeout; a timed-out call is cancelled on the server), and
//! [`Session::close`] ends it (Streamable HTTP: `DELETE` of the session). Header values are
//! secrets: they are never printed, logged or put in an error message.

use crate::mcp::sse::SseTransport;
use crate::outbound::{self, HostPolicy};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use rmcp::handler::client::progress::ProgressDispatcher;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientCapabilities, ClientConfig, ClientRequest,
    Implementation, JsonObject, ProgressNotificationParam, ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
};
use rmcp::{ClientHandler, RoleClient};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use rmcp::model::{CallToolResult, Tool};

/// Which MCP transport a server speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// Streamable HTTP (MCP 2025-03-26 and later): one endpoint, POST and an optional stream.
    #[default]
    StreamableHttp,
    /// The older HTTP+SSE transport (2024-11-05): a GET event stream that names the endpoint
    /// messages are POSTed to.
    Sse,
    /// Streamable HTTP, and HTTP+SSE when the server refuses it (the spec's backwards
    /// compatibility rule): for a URL that does not say which it is.
    Auto,
}

/// Headers a caller may not set: HTTP's framing and routing, and the transport's own.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// Headers sent on every request to a server (credentials, usually). Values are secrets: the
/// `Debug` form shows the names only.
#[derive(Clone, Default, PartialEq)]
pub struct Headers(Vec<(HeaderName, HeaderValue)>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Adds a header; the error names the header, never the value. Headers that HTTP or the
    /// transport set themselves are refused.
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), McpError> {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| McpError::InvalidHeader(name.to_string()))?;
        if RESERVED.contains(&header.as_str()) {
            return Err(McpError::InvalidHeader(name.to_string()));
        }
        let mut v =
            HeaderValue::from_str(value).map_err(|_| McpError::InvalidHeader(name.to_string()))?;
        v.set_sensitive(true);
        self.0.retain(|(n, _)| n != header);
        self.0.push((header, v));
        Ok(())
    }

    /// `Authorization: Bearer <token>` (Anthropic's `authorization_token`).
    pub fn bearer(&mut self, token: &str) -> Result<(), McpError> {
        self.insert("authorization", &format!("Bearer {token}"))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    pub(crate) fn header_map(&self) -> HeaderMap {
        self.0.iter().cloned().collect()
    }

    fn as_hash_map(&self) -> HashMap<HeaderName, HeaderValue> {
        self.0.iter().cloned().collect()
    }

    /// Every value (and a bearer token without its scheme), to scrub from error text.
    fn secrets(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter_map(|(_, v)| v.to_str().ok())
            .flat_map(|v| {
                let token = v.strip_prefix("Bearer ").filter(|t| !t.is_empty());
                std::iter::once(v).chain(token)
            })
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.names().map(|n| (n, "<secret>")))
            .finish()
    }
}

/// One MCP server as a request (or the operator) names it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSpec {
    /// The name its tools are namespaced by.
    pub name: String,
    pub url: String,
    pub headers: Headers,
    /// Only these tools are listed and callable; `None`: all of them.
    pub allowed_tools: Option<Vec<String>>,
    pub transport: TransportKind,
    /// Connecting and initialising.
    pub connect_timeout: Duration,
    /// Each call (and the tool list).
    pub call_timeout: Duration,
    /// Registered by the operator (`mcp_server_ids`): its URL may be any address, as the
    /// operator's own config URLs may; a request's servers pass the SSRF policy.
    pub registered: bool,
}

impl ServerSpec {
    /// A Streamable HTTP server with no headers, every tool, and these timeouts.
    pub fn new(name: &str, url: &str, connect_timeout: Duration, call_timeout: Duration) -> Self {
        ServerSpec {
            name: name.to_string(),
            url: url.to_string(),
            headers: Headers::new(),
            allowed_tools: None,
            transport: TransportKind::StreamableHttp,
            connect_timeout,
            call_timeout,
            registered: false,
        }
    }

    /// Whether the spec lets `tool` be listed and called.
    pub fn allows(&self, tool: &str) -> bool {
        self.allowed_tools
            .as_ref()
            .is_none_or(|list| list.iter().any(|t| t == tool))
    }

    /// Error text with the header values (and the URL's query, which may hold a key) taken out.
    fn scrub(&self, text: String) -> String {
        let mut text = text;
        for secret in self.headers.secrets() {
            text = text.replace(secret, "<secret>");
        }
        if let Some((bare, _)) = self.url.split_once('?') {
            text = text.replace(&self.url, bare);
        }
        text
    }
}

/// Why a connection or a call did not succeed. Messages name the server, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpError {
    /// The URL (or the endpoint an SSE server named) is refused by the SSRF policy.
    Refused { server: String, reason: String },
    /// Connecting or initialising failed.
    Unreachable { server: String, reason: String },
    /// Connecting or a call took longer than its timeout.
    Timeout {
        server: String,
        what: &'static str,
        after: Duration,
    },
    /// The tool is not among the spec's allowed tools.
    NotAllowed { server: String, tool: String },
    /// The call failed in transport or protocol (a tool's own failure is a result, not this).
    Failed { server: String, reason: String },
    /// A header name or value that HTTP cannot carry (the name is given).
    InvalidHeader(String),
}

impl fmt::Display for McpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McpError::Refused { server, reason } => {
                write!(f, "MCP server {server:?} is not allowed: {reason}")
            }
            McpError::Unreachable { server, reason } => {
                write!(f, "MCP server {server:?} could not be reached: {reason}")
            }
            McpError::Timeout {
                server,
                what,
                after,
            } => write!(
                f,
                "MCP server {server:?} timed out ({what}, after {} ms)",
                after.as_millis()
            ),
            McpError::NotAllowed { server, tool } => {
                write!(f, "tool {tool:?} of MCP server {server:?} is not allowed")
            }
            McpError::Failed { server, reason } => {
                write!(f, "MCP server {server:?} failed: {reason}")
            }
            McpError::InvalidHeader(name) => write!(f, "MCP header {name:?} is not valid"),
        }
    }
}

impl std::error::Error for McpError {}

/// A progress notification of a running call.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// What the SDK calls back on: progress of calls, and tool-list changes.
#[derive(Clone)]
struct Handler {
    progress: ProgressDispatcher,
    tools_changed: Arc<watch::Sender<u64>>,
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("tollgate", env!("CARGO_PKG_VERSION")),
        )
    }

    fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.progress.handle_notification(params)
    }

    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.tools_changed.send_modify(|n| *n += 1);
        std::future::ready(())
    }
}

/// Connects to the server and initialises a session, within `spec.connect_timeout`. The URL
/// (and, on SSE, the endpoint the server names) must pass `policy`.
pub async fn connect(spec: &ServerSpec, policy: HostPolicy) -> Result<Session, McpError> {
    let url = outbound::check_url(&spec.url, policy).map_err(|r| McpError::Refused {
        server: spec.name.clone(),
        reason: r.0,
    })?;
    let (tools_changed, _) = watch::channel(0u64);
    let handler = Handler {
        progress: ProgressDispatcher::new(),
        tools_changed: Arc::new(tools_changed),
    };
    let http = outbound::mcp_client(policy, spec.connect_timeout);
    let streamable = || async {
        let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
            .custom_headers(spec.headers.as_hash_map());
        let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
        rmcp::serve_client(handler.clone(), transport)
            .await
            .map_err(|e| unreachable(spec, &e))
    };
    let sse = || async {
        let transport = SseTransport::open(http.clone(), url.clone(), spec, policy).await?;
        rmcp::serve_client(handler.clone(), transport)
            .await
            .map_err(|e| unreachable(spec, &e))
    };
    let started = async {
        match spec.transport {
            TransportKind::StreamableHttp => streamable().await,
            TransportKind::Sse => sse().await,
            TransportKind::Auto => match streamable().await {
                Err(first @ McpError::Unreachable { .. }) => sse().await.map_err(|_| first),
                other => other,
            },
        }
    };
    let service = tokio::time::timeout(spec.connect_timeout, started)
        .await
        .map_err(|_| McpError::Timeout {
            server: spec.name.clone(),
            what: "connect",
            after: spec.connect_timeout,
        })??;
    Ok(Session {
        spec: spec.clone(),
        handler,
        service,
    })
}

fn unreachable(spec: &ServerSpec, e: &(dyn std::error::Error + 'static)) -> McpError {
    let reason = match outbound::refusal_in(e) {
        Some(refused) => {
            return McpError::Refused {
                server: spec.name.clone(),
                reason: refused,
            }
        }
        None => spec.scrub(e.to_string()),
    };
    McpError::Unreachable {
        server: spec.name.clone(),
        reason,
    }
}

/// An initialised session with one server.
pub struct Session {
    spec: ServerSpec,
    handler: Handler,
    service: RunningService<RoleClient, Handler>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The server's tools that the spec allows (every page of the list).
    pub async fn list_tools(&self) -> Result<Vec<Tool>, McpError> {
        let listed =
            tokio::time::timeout(self.spec.call_timeout, self.service.peer().list_all_tools())
                .await
                .map_err(|_| self.timeout("tools/list"))?
                .map_err(|e| self.failed(&e))?;
        Ok(listed
            .into_iter()
            .filter(|t| self.spec.allows(&t.name))
            .collect())
    }

    /// Calls a tool within the call timeout (a timed-out call is cancelled on the server).
    /// `on_progress` gets the call's progress notifications as they come. A tool that fails
    /// answers `Ok` with `is_error` set: that is for the model to read.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
        mut on_progress: Option<&mut (dyn FnMut(Progress) + Send)>,
    ) -> Result<CallToolResult, McpError> {
        if !self.spec.allows(tool) {
            return Err(McpError::NotAllowed {
                server: self.spec.name.clone(),
                tool: tool.to_string(),
            });
        }
        let mut params = CallToolRequestParams::new(tool.to_string());
        params.arguments = arguments;
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let options = PeerRequestOptions::with_timeout(self.spec.call_timeout);
        let handle = self
            .service
            .peer()
            .send_request_with_option(request, options)
            .await
            .map_err(|e| self.failed(&e))?;
        let mut progress = match on_progress {
            Some(_) => Some(
                self.handler
                    .progress
                    .subscribe(handle.progress_token.clone())
                    .await,
            ),
            None => None,
        };
        let response = handle.await_response();
        tokio::pin!(response);
        let answer = loop {
            tokio::select! {
                answer = &mut response => break answer,
                Some(p) = async { progress.as_mut()?.next().await }, if progress.is_some() => {
                    if let Some(cb) = on_progress.as_mut() {
                        cb(Progress { progress: p.progress, total: p.total, message: p.message });
                    }
                }
            }
        };
        match answer {
            Ok(ServerResult::CallToolResult(result)) => Ok(result),
            Ok(_) => Err(McpError::Failed {
                server: self.spec.name.clone(),
                reason: "the server answered the call with something other than a result (a \
                         task or a request for input, which a gateway cannot give)"
                    .into(),
            }),
            Err(rmcp::ServiceError::Timeout { .. }) => Err(self.timeout("tools/call")),
            Err(e) => Err(self.failed(&e)),
        }
    }

    /// Changes each time the server sends `notifications/tools/list_changed`.
    pub fn tools_changed(&self) -> watch::Receiver<u64> {
        self.handler.tools_changed.subscribe()
    }

    /// Ends the session: the transport closes (Streamable HTTP: the session is deleted on the
    /// server, bounded by the SDK's own timeout). Dropping a session closes it too, without
    /// waiting.
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }

    fn timeout(&self, what: &'static str) -> McpError {
        McpError::Timeout {
            server: self.spec.name.clone(),
            what,
            after: self.spec.call_timeout,
        }
    }

    fn failed(&self, e: &rmcp::ServiceError) -> McpError {
        McpError::Failed {
            server: self.spec.name.clone(),
            reason: self.spec.scrub(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_not_printed() {
        let mut spec = ServerSpec::new(
            "s",
            "http://example.com/mcp?key=k-123",
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        spec.headers.bearer("tok-secret").unwrap();
        spec.headers.insert("x-api-key", "xk-secret").unwrap();
        for reserved in ["Host", "content-length", "Mcp-Session-Id", "accept"] {
            assert!(spec.headers.insert(reserved, "x").is_err(), "{reserved}");
        }
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("tok-secret") && !shown.contains("xk-secret"),
            "{shown}"
        );
        assert!(shown.contains("authorization") && shown.contains("x-api-key"));
        let scrubbed = spec.scrub(
            "GET http://example.com/mcp?key=k-123 with Bearer tok-secret and xk-secret".into(),
        );
        assert!(!scrubbed.contains("tok-secret"), "{scrubbed}");
        assert!(!scrubbed.contains("xk-secret"), "{scrubbed}");
        assert!(!scrubbed.contains("k-123"), "{scrubbed}");
    }

    #[test]
    fn allowed_tools() {
        let mut spec = ServerSpec::new("s", "http://x/", Duration::ZERO, Duration::ZERO);
        assert!(spec.allows("anything"));
        spec.allowed_tools = Some(vec!["add".into()]);
        assert!(spec.allows("add") && !spec.allows("echo"));
    }

    #[tokio::test]
    async fn refused_before_connecting() {
        let spec = ServerSpec::new(
            "inside",
            "http://169.254.169.254/mcp",
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let err = connect(&spec, HostPolicy::LOOPBACK).await.unwrap_err();
        assert!(matches!(err, McpError::Refused { .. }), "{err}");
    }
}
