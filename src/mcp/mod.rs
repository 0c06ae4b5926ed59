//! MCP (Model Context Protocol) in tollgate: servers registered in the config or through
//! `/v1/mcp/servers` ([`registry`], [`settings`]), the per-key and per-user policy that says
//! which servers and tools a key may use ([`policy`]).

pub mod client;
pub mod oauth;
pub mod policy;
pub mod registry;
pub mod serve;
pub mod settings;
mod sse;
pub mod upstream;

use std::sync::Arc;

/// The MCP state of the process.
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

    /// A registered server was changed or removed: what is cached about it goes.
    pub async fn server_changed(&self, id: &str) {
        self.upstreams.forget(id, true).await;
    }
}
