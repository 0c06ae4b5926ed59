//! The sled implementation of [`Store`]. sled calls block (writes may wait on I/O, flush
//! always does), so every call runs on the blocking pool.

use async_trait::async_trait;
use std::path::Path;

use super::{Store, StoreError, StoreResult};
use crate::auth::KeyRecord;

pub struct SledStore {
    db: sled::Db,
    keys: sled::Tree,
    meta: sled::Tree,
}

fn io(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(ref ioe) if ioe.kind() == std::io::ErrorKind::WouldBlock => {
            StoreError::Locked
        }
        sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Io(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h
            .spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?,
        Err(_) => f(),
    }
}

impl SledStore {
    /// Opens (or creates) the store under `dir`. Blocking: call from a blocking context.
    pub fn open(dir: &Path) -> StoreResult<SledStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .flush_every_ms(Some(200))
            .open()
            .map_err(io)?;
        let keys = db.open_tree("keys").map_err(io)?;
        let meta = db.open_tree("meta").map_err(io)?;
        Ok(SledStore { db, keys, meta })
    }
}

#[async_trait]
impl Store for SledStore {
    async fn load_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let t = self.keys.clone();
        blocking(move || {
            let mut out = Vec::new();
            for kv in t.iter() {
                let (_, v) = kv.map_err(io)?;
                let rec: KeyRecord =
                    serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                out.push(rec);
            }
            Ok(out)
        })
        .await
    }

    async fn put_key(&self, rec: &KeyRecord) -> StoreResult<()> {
        let (t, db) = (self.keys.clone(), self.db.clone());
        let id = rec.id.clone();
        let v = serde_json::to_vec(rec).map_err(|e| StoreError::Io(e.to_string()))?;
        blocking(move || {
            t.insert(id.as_bytes(), v).map_err(io)?;
            // Key changes are rare and must survive a crash right after the API answered.
            db.flush().map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn delete_key(&self, id: &str) -> StoreResult<bool> {
        let (t, db) = (self.keys.clone(), self.db.clone());
        let id = id.to_string();
        blocking(move || {
            let old = t.remove(id.as_bytes()).map_err(io)?;
            db.flush().map_err(io)?;
            Ok(old.is_some())
        })
        .await
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let t = self.meta.clone();
        let name = name.to_string();
        blocking(move || Ok(t.get(name.as_bytes()).map_err(io)?.map(|v| v.to_vec()))).await
    }

    async fn put_meta(&self, name: &str, value: &[u8]) -> StoreResult<()> {
        let (t, db) = (self.meta.clone(), self.db.clone());
        let (name, value) = (name.to_string(), value.to_vec());
        blocking(move || {
            t.insert(name.as_bytes(), value).map_err(io)?;
            db.flush().map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn flush(&self) -> StoreResult<()> {
        let db = self.db.clone();
        blocking(move || db.flush().map(|_| ()).map_err(io)).await
    }

    fn healthy(&self) -> bool {
        // A read through sled's page cache: fails only when the store itself is broken.
        self.meta.contains_key(b"master_hash").is_ok()
    }
}
