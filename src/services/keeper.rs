//! The background service that owns the store for this process: it waits for sled's lock
//! (held by the previous process during an upgrade) or for the database to answer, loads
//! the authoritative key index, runs first-start bootstrap, and lets go of the store at
//! SIGQUIT or shutdown.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::snapshot;
use crate::auth::{self, KeyIndex};
use crate::clock;
use crate::ids;
use crate::ledger::Ledger;
use crate::records::KeyRecord;
use crate::store::postgres::{self, PgStore};
use crate::store::settings::StoreConfig;
use crate::store::sled_store::SledStore;
use crate::store::{Store, StoreError, StoreSlot};

/// How often a process waiting for the store retries its lock.
const LOCK_POLL: Duration = Duration::from_millis(200);

pub struct StoreKeeper {
    pub data_dir: PathBuf,
    pub slot: Arc<StoreSlot>,
    pub index: Arc<KeyIndex>,
    /// The master key from the config file, if any (it then overrides the stored one).
    pub configured_master: bool,
    pub bootstrap_key: bool,
    pub ledger: Arc<Ledger>,
    /// Usage records older than this many days are pruned (0: never).
    pub retention_days: u64,
    pub store_kind: StoreConfig,
    /// Stored Responses: pruned past their retention, and written before release.
    pub responses: Arc<crate::responses::Responses>,
    /// Registered MCP servers: the stored ones are loaded with the keys.
    pub mcp: Arc<crate::mcp::registry::Registry>,
}

/// Loads keys, users, budgets, price overrides, MCP servers and spend from the store into memory (also
/// used by the CLI when it works on a store directly).
pub async fn load_state(
    store: &dyn Store,
    index: &KeyIndex,
    ledger: &Ledger,
    mcp: &crate::mcp::registry::Registry,
) -> Result<(), StoreError> {
    index.replace(store.load_keys().await?);
    mcp.replace_stored(store.load_mcp_servers().await?);
    ledger.replace_budgets(store.load_budgets().await?);
    ledger.replace_users(store.load_users().await?);
    for kind in [
        crate::records::GroupKind::Team,
        crate::records::GroupKind::Org,
    ] {
        ledger.replace_groups(kind, store.load_groups(kind).await?);
    }
    ledger.set_overrides(store.load_prices().await?.into_iter().collect());
    ledger.reset_spend();
    for r in store.load_spend().await? {
        ledger.seed_spend(r.scope, &r.id, r.window_start, r.spent);
    }
    Ok(())
}

impl StoreKeeper {
    async fn acquire(&self, shutdown: &mut ShutdownWatch) -> Option<Arc<dyn Store>> {
        if let StoreConfig::Postgres(pg) = &self.store_kind {
            let mut delay = Duration::from_millis(200);
            loop {
                match PgStore::open(&pg.pg, pg.auto_migrate).await {
                    Ok(s) => {
                        log::info!(
                            "connected to the shared store {} (schema {})",
                            postgres::redact_url(&pg.pg.url),
                            pg.pg.schema
                        );
                        return Some(Arc::new(s));
                    }
                    Err(e) => log::error!(
                        "cannot open the shared store {}: {e}; serving from the key snapshot meanwhile",
                        postgres::redact_url(&pg.pg.url)
                    ),
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        let mut waiting_logged = false;
        loop {
            let dir = self.data_dir.clone();
            let res = tokio::task::spawn_blocking(move || SledStore::open(&dir))
                .await
                .unwrap_or_else(|e| Err(StoreError::Io(e.to_string())));
            match res {
                Ok(s) => {
                    if waiting_logged {
                        log::info!("store acquired from the previous process");
                    }
                    return Some(Arc::new(s));
                }
                Err(StoreError::Locked) => {
                    if !waiting_logged {
                        log::info!("store is held by another process (upgrade in progress?); serving from the key snapshot until it is released");
                        waiting_logged = true;
                    }
                }
                Err(e) => log::error!(
                    "cannot open the store under {}: {e}",
                    self.data_dir.display()
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(LOCK_POLL) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }

    /// Loads the authoritative state into memory and performs first-start bootstrap.
    pub async fn load(&self, store: &dyn Store) -> Result<(), StoreError> {
        load_state(store, &self.index, &self.ledger, &self.mcp).await?;
        // What other processes spooled (an upgrade hand-over, an earlier outage).
        let spool = self.data_dir.join("spool");
        match super::writer::ingest_spools(&spool, store, &self.ledger).await {
            Ok(0) => {}
            Ok(n) => log::info!("ingested {n} spooled usage records"),
            Err(e) => log::error!("cannot ingest the usage spool: {e}"),
        }
        if !self.configured_master {
            match store
                .get_meta("master_hash")
                .await?
                .and_then(|v| auth::unhex(std::str::from_utf8(&v).ok()?))
            {
                Some(h) => self.index.set_master(Some(h)),
                None => {
                    let secret = auth::generate_master_key();
                    // Instances starting together on one shared store: one of them wins.
                    if store
                        .put_meta_if_absent(
                            "master_hash",
                            ids::hex(&auth::hash_key(&secret)).as_bytes(),
                        )
                        .await?
                    {
                        self.index.set_master(Some(auth::hash_key(&secret)));
                        announce("master key", &secret, "for the management API (/v1/keys); set master_key in the config to choose your own");
                    } else if let Some(h) = store
                        .get_meta("master_hash")
                        .await?
                        .and_then(|v| auth::unhex(std::str::from_utf8(&v).ok()?))
                    {
                        self.index.set_master(Some(h));
                    }
                }
            }
        }
        if self.bootstrap_key
            && store.get_meta("bootstrapped").await?.is_none()
            && store.put_meta_if_absent("bootstrapped", b"1").await?
            && self.index.is_empty()
        {
            let (rec, secret) = KeyRecord::mint(
                Some("bootstrap".into()),
                None,
                serde_json::json!({"bootstrap": true}),
            );
            store.put_key(&rec).await?;
            let id = rec.id.clone();
            self.index.upsert(rec);
            announce(
                "virtual key",
                &secret,
                &format!("id {id}: use it as the API key of your clients"),
            );
        }
        self.write_snapshot().await;
        Ok(())
    }

    pub async fn write_snapshot(&self) {
        let (dir, index, ledger) = (
            self.data_dir.clone(),
            self.index.clone(),
            self.ledger.clone(),
        );
        let r =
            tokio::task::spawn_blocking(move || snapshot::write(&dir, &index, Some(&ledger))).await;
        if let Ok(Err(e)) | Err(e) = r.map_err(std::io::Error::other) {
            log::error!("cannot write the key snapshot: {e}");
        }
    }

    async fn release(&self) {
        if let Some(store) = self.slot.take() {
            if let Err(e) = store.flush().await {
                log::error!("store flush at release failed: {e}");
            }
            self.write_snapshot().await;
            // Wait for in-flight management calls to drop their handles, so the lock is
            // really gone when we say so.
            for _ in 0..50 {
                if Arc::strong_count(&store) == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if Arc::strong_count(&store) == 1 {
                drop(store);
                log::info!("store released");
                return;
            }
            log::warn!("store still referenced at release; it will close when the last call ends");
        }
    }
}

impl StoreKeeper {
    /// Periodic work while holding the store: re-read spools of processes still finishing
    /// (idempotent), and prune usage past the retention once an hour.
    async fn housekeeping(
        &self,
        last_prune: &mut std::time::Instant,
        last_response_prune: &mut std::time::Instant,
    ) {
        let Some(store) = self.slot.get() else { return };
        let spool = self.data_dir.join("spool");
        if let Err(e) = super::writer::ingest_spools(&spool, store.as_ref(), &self.ledger).await {
            log::warn!("spool ingestion failed: {e}");
        }
        if self.retention_days > 0 && last_prune.elapsed() >= Duration::from_secs(3600) {
            *last_prune = std::time::Instant::now();
            let cutoff = clock::now_millis().saturating_sub(self.retention_days * 86_400_000);
            match store.prune_usage(cutoff).await {
                Ok(0) => {}
                Ok(n) => log::info!(
                    "pruned {n} usage records older than {} days",
                    self.retention_days
                ),
                Err(e) => log::warn!("usage pruning failed: {e}"),
            }
        }
        // Hourly, or more often when responses live less than an hour.
        let every = self.responses.cfg.retention.min(Duration::from_secs(3600));
        if last_response_prune.elapsed() >= every {
            *last_response_prune = std::time::Instant::now();
            self.responses.prune().await;
        }
    }
}

/// Prints a one-time secret so that it stands out in a terminal or the journal.
fn announce(what: &str, secret: &str, note: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n================================================================"
    );
    let _ = writeln!(
        out,
        " tollgate generated a {what}. It is shown only this once:"
    );
    let _ = writeln!(out, "\n     {secret}\n");
    let _ = writeln!(out, " ({note})");
    let _ = writeln!(
        out,
        "================================================================\n"
    );
    let _ = out.flush();
}

#[async_trait]
impl BackgroundService for StoreKeeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The process exits only once the store is released (see drain).
        let _closer = crate::drain::DRAIN.closer();
        let Some(store) = self.acquire(&mut shutdown).await else {
            return;
        };
        if let Err(e) = self.load(store.as_ref()).await {
            log::error!("cannot load state from the store: {e}");
        }
        self.slot.set(store);

        #[cfg(unix)]
        let mut quit = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::quit()).ok();
        #[cfg(unix)]
        let upgrade = async {
            match quit.as_mut() {
                Some(q) => {
                    q.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let upgrade = std::future::pending::<()>();
        tokio::pin!(upgrade);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_prune = std::time::Instant::now() - Duration::from_secs(3600);
        let mut last_response_prune = last_prune;
        loop {
            tokio::select! {
                _ = &mut upgrade => {
                    log::info!("upgrade signal: handing the store over to the new process");
                    break;
                }
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.housekeeping(&mut last_prune, &mut last_response_prune).await,
            }
        }
        // Write what is queued before letting go, so the successor finds it in the store.
        self.responses.write_pending().await;
        if let Some(store) = self.slot.get() {
            let mut taken = self.ledger.queue.take();
            let batch = std::mem::take(&mut taken.items);
            match store.append_usage(batch.clone()).await {
                Ok(_) => self.ledger.confirm(&batch),
                Err(e) => {
                    log::error!("final usage write failed: {e}");
                    for s in batch {
                        self.ledger.queue.push(s);
                    }
                }
            }
        }
        self.release().await;
    }
}
