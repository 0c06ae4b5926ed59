//! The shared-store service (PostgreSQL only): every `sync_interval` (200 ms) it
//!
//! - reads the change counters and reloads what another instance changed (keys, users,
//!   budgets, prices, MCP servers, the master key hash), so a key created or revoked anywhere works or
//!   stops everywhere within one interval plus one query;
//! - reports rate-limit consumption in one batched statement and reads back the totals of
//!   all instances;
//! - gives back what idle budget leases do not need;
//! - and, every third of the lease TTL, renews this instance's leases.
//!
//! A failing call marks the store unreachable for the outage policy (`store.on_outage`).

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::snapshot;
use crate::auth::{self, KeyIndex};
use crate::ledger::shared::SharedCtl;
use crate::ledger::Ledger;
use crate::records::GroupKind;
use crate::store::{ChangeKind, SharedStore, Store, StoreResult, StoreSlot};

pub struct SharedSync {
    pub slot: Arc<StoreSlot>,
    pub index: Arc<KeyIndex>,
    pub ledger: Arc<Ledger>,
    pub ctl: Arc<SharedCtl>,
    pub data_dir: PathBuf,
    pub interval: Duration,
    pub configured_master: bool,
    pub mcp: Arc<crate::mcp::registry::Registry>,
}

impl SharedSync {
    /// Reloads one kind from the store into memory.
    pub async fn reload(&self, store: &dyn Store, kind: ChangeKind) -> StoreResult<()> {
        match kind {
            ChangeKind::Keys => self.index.replace(store.load_keys().await?),
            ChangeKind::Users => self.ledger.replace_users(store.load_users().await?),
            ChangeKind::Budgets => self.ledger.replace_budgets(store.load_budgets().await?),
            ChangeKind::Prices => self
                .ledger
                .set_overrides(store.load_prices().await?.into_iter().collect()),
            ChangeKind::McpServers => self.mcp.replace_stored(store.load_mcp_servers().await?),
            ChangeKind::Teams | ChangeKind::Orgs => {
                let kind = if kind == ChangeKind::Teams {
                    GroupKind::Team
                } else {
                    GroupKind::Org
                };
                self.ledger
                    .replace_groups(kind, store.load_groups(kind).await?)
            }
            ChangeKind::Meta => {
                if !self.configured_master {
                    if let Some(h) = store
                        .get_meta("master_hash")
                        .await?
                        .and_then(|v| auth::unhex(std::str::from_utf8(&v).ok()?))
                    {
                        self.index.set_master(Some(h));
                    }
                }
            }
        }
        Ok(())
    }

    async fn poll_changes(
        &self,
        store: &Arc<dyn Store>,
        shared: &Arc<dyn SharedStore>,
        seen: &mut Option<HashMap<ChangeKind, u64>>,
    ) -> StoreResult<()> {
        let now: HashMap<ChangeKind, u64> = shared.versions().await?.into_iter().collect();
        let changed: Vec<ChangeKind> = match seen.as_ref() {
            // The first reading reloads everything: a change may have landed between the
            // keeper's load and now.
            None => ChangeKind::ALL.to_vec(),
            Some(old) => ChangeKind::ALL
                .into_iter()
                .filter(|k| old.get(k) != now.get(k))
                .collect(),
        };
        for k in &changed {
            self.reload(store.as_ref(), *k).await?;
        }
        if changed.iter().any(|k| {
            matches!(
                k,
                ChangeKind::Keys
                    | ChangeKind::Users
                    | ChangeKind::Budgets
                    | ChangeKind::Teams
                    | ChangeKind::Orgs
            )
        }) {
            if seen.is_some() {
                log::debug!("reloaded {changed:?} changed by another instance");
            }
            let (dir, index, ledger) = (
                self.data_dir.clone(),
                self.index.clone(),
                self.ledger.clone(),
            );
            let _ =
                tokio::task::spawn_blocking(move || snapshot::write(&dir, &index, Some(&ledger)))
                    .await;
        }
        *seen = Some(now);
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for SharedSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The process exits only once the leases are given back (see drain).
        let _closer = crate::drain::DRAIN.closer();
        let mut seen = None;
        let renew_every = self.ctl.settings.ttl / 3;
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => break,
            }
            let Some(store) = self.slot.get() else {
                continue;
            };
            let Some(shared) = store.clone().shared() else {
                return;
            };
            let polled = self.poll_changes(&store, &shared, &mut seen).await;
            self.ctl.note(polled.is_ok());
            if let Err(e) = polled {
                log::debug!("change poll failed: {e}");
                continue;
            }
            if let Err(e) = self.ctl.sync_rates(&self.ledger).await {
                log::debug!("rate sync failed: {e}");
            }
            if last_renew.elapsed() >= renew_every {
                last_renew = Instant::now();
                if let Err(e) = self.ctl.renew(&self.ledger).await {
                    log::warn!("lease renewal failed: {e}");
                }
            }
            if let Err(e) = self.ctl.return_idle(&self.ledger, false).await {
                log::debug!("lease return failed: {e}");
            }
            if let Err(e) = self.ctl.return_idle_rates(&self.ledger, false).await {
                log::debug!("request lease return failed: {e}");
            }
        }
        // Shutting down: give back what no request in flight needs; the rest expires.
        let _ = self.ctl.sync_rates(&self.ledger).await;
        if let Err(e) = self.ctl.return_idle(&self.ledger, true).await {
            log::warn!("lease return at shutdown failed: {e}");
        }
        let _ = self.ctl.return_idle_rates(&self.ledger, true).await;
    }
}
