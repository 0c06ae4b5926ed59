//! The store directly, when no gateway is running: the management API answered in this
//! process ([`crate::admin::route`], as the gateway does) on the config's store, so the
//! commands behave and print the same either way. No master key is asked for: whoever can open the store can
//! read it anyway.

use bytes::Bytes;
use serde_json::Value;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::api::Reply;
use crate::auth::{self, KeyIndex};
use crate::config::Config;
use crate::ledger::Ledger;
use crate::services::keeper;
use crate::state::State;
use crate::store::postgres::{redact_url, PgStore};
use crate::store::settings::StoreConfig;
use crate::store::sled_store::SledStore;
use crate::store::{StoreError, StoreSlot};

pub struct Store {
    state: State,
}

pub enum OpenError {
    /// Another process (a gateway) holds the store; says which store.
    Held(String),
    Failed(String),
}

fn describe(cfg: &Config) -> String {
    match &cfg.store {
        StoreConfig::Sled => format!("in {}", cfg.data_dir.display()),
        StoreConfig::Postgres(p) => format!("{} (schema {})", redact_url(&p.pg.url), p.pg.schema),
    }
}

impl Store {
    /// Opens the config's store and loads what the management API reads.
    pub async fn open(cfg: &Config) -> Result<Store, OpenError> {
        let store: Arc<dyn crate::store::Store> = match &cfg.store {
            StoreConfig::Postgres(pg) => Arc::new(
                PgStore::open(&pg.pg, false)
                    .await
                    .map_err(|e| OpenError::Failed(e.to_string()))?,
            ),
            StoreConfig::Sled => match SledStore::open(&cfg.data_dir) {
                Ok(s) => Arc::new(s),
                Err(StoreError::Locked) => return Err(OpenError::Held(describe(cfg))),
                Err(e) => return Err(OpenError::Failed(e.to_string())),
            },
        };
        let keys = Arc::new(KeyIndex::new());
        let ledger = Arc::new(Ledger::from_config(cfg));
        let failed = |e: StoreError| OpenError::Failed(e.to_string());
        let mcp = Arc::new(crate::mcp::Mcp::new(&cfg.mcp));
        keeper::load_state(store.as_ref(), &keys, &ledger, &mcp.registry)
            .await
            .map_err(failed)?;
        // The key snapshot written after a change keeps the master key hash the gateway uses.
        let master = match &cfg.master_key {
            Some(k) => Some(auth::hash_key(k)),
            None => store
                .get_meta("master_hash")
                .await
                .map_err(failed)?
                .and_then(|v| auth::unhex(std::str::from_utf8(&v).ok()?)),
        };
        keys.set_master(master);
        let slot = Arc::new(StoreSlot::default());
        slot.set(store);
        let state = State {
            responses: Arc::new(crate::responses::Responses::new(
                cfg.responses.clone(),
                slot.clone(),
            )),
            router: crate::route::Router::new(cfg),
            keys,
            store: slot,
            resolver: Default::default(),
            connector: crate::gateway::upstream::UpstreamPool::new(None),
            ledger,
            inflight: crate::gateway::limits::InFlight::new(&cfg.limits),
            snapshot_loaded: AtomicBool::new(false),
            retry_budget: crate::balance::budget::RetryBudget::new(
                cfg.failover.policy.retry_budget_percent,
                cfg.failover.policy.retry_budget_min_per_second,
            ),
            tools: crate::tools::Tools::new(&cfg.tools),
            guardrails: crate::guardrails::Guardrails::new(cfg.guardrails.clone()),
            console: crate::ui::Console::in_memory(cfg),
            mcp: mcp.clone(),
            cfg: cfg.clone(),
        };
        Ok(Store { state })
    }

    pub fn describe(&self) -> String {
        describe(&self.state.cfg)
    }

    /// Answers one request; a change is flushed to disk before the answer is returned.
    pub async fn call(&self, method: &str, target: &str, body: Option<Value>) -> Reply {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        // The body as the HTTP client would send it.
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let headers = http::HeaderMap::new();
        let req = crate::local::Request {
            method,
            path,
            query,
            headers: &headers,
            body,
        };
        let r = crate::admin::route(&self.state, &req).await;
        let mut status = r.status;
        let mut out = r.body.to_vec();
        if method != "GET" {
            if let Some(s) = self.state.store.get() {
                if let Err(e) = s.flush().await {
                    status = 500;
                    out = crate::error::GatewayError::new(
                        crate::error::ErrorKind::Internal,
                        format!("Store error: {e}"),
                    )
                    .body(crate::translate::Format::Chat)
                    .to_vec();
                }
            }
        }
        Reply { status, body: out }
    }
}
