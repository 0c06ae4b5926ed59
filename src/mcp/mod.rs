//! MCP (Model Context Protocol) in tollgate, on the official Rust SDK (`rmcp`); no protocol
//! code of our own.
//!
//! - `client`: a server's description ([`ServerSpec`]: URL, secret headers, allowed tools,
//!   transport, timeouts), connecting ([`connect`], SSRF-checked through `outbound`), and a
//!   [`Session`]: the tools it offers (only the allowed ones), calls with progress, closing.
//! - `sse`: the older HTTP+SSE transport (a GET event stream, messages POSTed to the endpoint
//!   it names) as an rmcp `Transport`: it moves the SDK's messages and nothing else.
//! - `settings`, `registry`: the servers registered in tollgate (`mcp_servers:` in the config,
//!   and `/v1/mcp/servers`), with the credentials tollgate presents to them.
//! - `policy`: which registered servers and tools a key may use (its own and its user's MCP
//!   policy), and per-tool rate limits.
//! - `upstream`, `oauth`: tollgate's long-lived sessions with the registered servers, their
//!   cached tool lists, and OAuth client-credentials tokens.
//! - `resolve`: `mcp_server_ids` in a request: registered servers as the tool loop's specs.
//! - `outcome`: how a call to a registered server ended, and its `/metrics` series (calls
//!   through `/mcp` and the tool loop's alike).
//! - `serve`: tollgate's own MCP server, `/mcp` (the gateway side is `gateway/mcp.rs`).

pub mod client;
pub mod oauth;
pub mod outcome;
pub mod policy;
pub mod registry;
pub mod resolve;
pub mod serve;
pub mod settings;
mod sse;
pub mod upstream;

pub use client::{
    connect, CallToolResult, Headers, McpError, Progress, ServerSpec, Session, Tool, TransportKind,
};

use std::sync::Arc;

/// The MCP state of the process: registered servers, the keys' MCP rate windows, and the
/// sessions `/mcp` forwards calls on.
pub struct Mcp {
    pub settings: settings::McpSettings,
    pub registry: Arc<registry::Registry>,
    pub rates: policy::RateLimits,
    /// tollgate's sessions with the registered servers, and their cached tool lists.
    pub upstreams: upstream::Upstreams,
}

impl Mcp {
    pub fn new(settings: &settings::McpSettings) -> Mcp {
        Mcp {
            registry: Arc::new(registry::Registry::new(&settings.servers)),
            settings: settings.clone(),
            rates: Default::default(),
            upstreams: Default::default(),
        }
    }

    /// A registered server was changed or removed: its session and cached tools go.
    pub async fn server_changed(&self, id: &str) {
        self.upstreams.forget(id, true).await;
    }
}
