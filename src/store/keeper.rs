//! The background service that owns the store for this process: it waits for sled's lock
//! (held by the previous process during an upgrade), loads the authoritative key index,
//! runs first-start bootstrap, and lets go of the store at SIGQUIT or shutdown.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::sled_store::SledStore;
use super::{snapshot, Store, StoreError, StoreSlot};
use crate::auth::{self, KeyIndex, KeyRecord};

/// How often a process waiting for the store retries its lock.
const LOCK_POLL: Duration = Duration::from_millis(200);

pub struct StoreKeeper {
    pub data_dir: PathBuf,
    pub slot: Arc<StoreSlot>,
    pub index: Arc<KeyIndex>,
    /// The master key from the config file, if any (it then overrides the stored one).
    pub configured_master: bool,
    pub bootstrap_key: bool,
}

impl StoreKeeper {
    async fn acquire(&self, shutdown: &mut ShutdownWatch) -> Option<Arc<dyn Store>> {
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
        let keys = store.load_keys().await?;
        self.index.replace(keys);
        if !self.configured_master {
            match store
                .get_meta("master_hash")
                .await?
                .and_then(|v| auth::unhex(std::str::from_utf8(&v).ok()?))
            {
                Some(h) => self.index.set_master(Some(h)),
                None => {
                    let secret = auth::generate_master_key();
                    store
                        .put_meta(
                            "master_hash",
                            auth::hex(&auth::hash_key(&secret)).as_bytes(),
                        )
                        .await?;
                    self.index.set_master(Some(auth::hash_key(&secret)));
                    announce("master key", &secret, "for the management API (/v1/keys); set master_key in the config to choose your own");
                }
            }
        }
        if self.bootstrap_key && store.get_meta("bootstrapped").await?.is_none() {
            if self.index.is_empty() {
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
            store.put_meta("bootstrapped", b"1").await?;
        }
        self.write_snapshot().await;
        Ok(())
    }

    pub async fn write_snapshot(&self) {
        let (dir, index) = (self.data_dir.clone(), self.index.clone());
        let r = tokio::task::spawn_blocking(move || snapshot::write(&dir, &index)).await;
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
        tokio::select! {
            _ = upgrade => log::info!("upgrade signal: handing the store over to the new process"),
            _ = shutdown.changed() => {}
        }
        self.release().await;
    }
}
