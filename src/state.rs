//! The process state every request shares: configuration, router, keys, store, ledger,
//! upstream connections and the in-flight limits. Built once by `server` (or by the CLI's
//! in-process store access, `cli::offline`) and handed by reference to the gateway, the
//! management API and the local endpoints, none of which owns it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::auth::KeyIndex;
use crate::balance::budget::RetryBudget;
use crate::config::Config;
use crate::gateway::limits::InFlight;
use crate::gateway::upstream::{Resolver, UpstreamPool};
use crate::ledger::Ledger;
use crate::route::Router;
use crate::store::StoreSlot;

/// Process-wide state shared by every request.
pub struct State {
    pub cfg: Config,
    pub router: Router,
    pub keys: Arc<KeyIndex>,
    pub store: Arc<StoreSlot>,
    pub resolver: Resolver,
    pub connector: UpstreamPool,
    pub ledger: Arc<Ledger>,
    /// Forwarded requests in flight, per key and overall (`limits:`).
    pub inflight: Arc<InFlight>,
    /// A key snapshot was loaded at start (auth works before the store is open).
    pub snapshot_loaded: AtomicBool,
    /// Bounds failover retries to a share of the traffic.
    pub retry_budget: RetryBudget,
    /// Stored Responses (`responses:`), for translated routes.
    pub responses: Arc<crate::responses::Responses>,
    /// The gateway-run tools' backends (`tools:`).
    pub tools: crate::tools::Tools,
    /// Guardrail settings, service clients and verdict cache.
    pub guardrails: crate::guardrails::Guardrails,
    /// The web console's sessions and login limit (`ui:`).
    pub console: crate::ui::Console,
    /// Registered MCP servers, the keys' MCP rate windows and the `/mcp` endpoint.
    pub mcp: Arc<crate::mcp::Mcp>,
}
