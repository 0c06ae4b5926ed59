//! Durable state behind one trait: sled now (the embedded single-node default), PostgreSQL
//! later. The hot path never calls the store: it reads in-memory indexes that the store
//! loads at start and that management calls update after a successful write.
//!
//! ## Hand-over between processes (graceful upgrade)
//! sled holds an exclusive file lock, so during `systemctl reload` the new process cannot open
//! the store while the old one has it. The design:
//! - whoever holds the store keeps `keys.snapshot.json` (key hashes, never secrets) current,
//!   written atomically on every key change;
//! - a starting process loads that snapshot before it accepts a connection, so it
//!   authenticates from its first request;
//! - the [`keeper::StoreKeeper`] background service polls for the sled lock and, once it has
//!   it, loads the authoritative state;
//! - the old process lets go of the store the moment it receives SIGQUIT (the upgrade
//!   signal), not when its grace period ends, so the gap is the new process's polling
//!   interval (200 ms);
//! - management writes that land on a process without the store get 503 with
//!   `retry-after: 1`; inference is never refused for it.

pub mod keeper;
pub mod sled_store;
pub mod snapshot;

use async_trait::async_trait;
use parking_lot::RwLock;
use std::sync::Arc;

use crate::auth::KeyRecord;

#[derive(Debug)]
pub enum StoreError {
    /// Another process holds the store (sled's file lock).
    Locked,
    Io(String),
    Corrupt(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Locked => write!(f, "the store is locked by another tollgate process"),
            StoreError::Io(e) => write!(f, "store I/O error: {e}"),
            StoreError::Corrupt(e) => write!(f, "store data is corrupt: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

/// The durable store. Implementations must be safe to call from any task; blocking
/// implementations move their work off the reactor themselves.
#[async_trait]
pub trait Store: Send + Sync {
    async fn load_keys(&self) -> StoreResult<Vec<KeyRecord>>;
    async fn put_key(&self, rec: &KeyRecord) -> StoreResult<()>;
    /// Returns false when no key had that id.
    async fn delete_key(&self, id: &str) -> StoreResult<bool>;
    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn put_meta(&self, name: &str, value: &[u8]) -> StoreResult<()>;
    /// Makes every completed write durable.
    async fn flush(&self) -> StoreResult<()>;
    /// A cheap liveness probe for readiness checks.
    fn healthy(&self) -> bool;
}

/// The store this process currently holds, if any (none while another process has it).
#[derive(Default)]
pub struct StoreSlot {
    inner: RwLock<Option<Arc<dyn Store>>>,
}

impl StoreSlot {
    pub fn get(&self) -> Option<Arc<dyn Store>> {
        self.inner.read().clone()
    }

    pub fn set(&self, s: Arc<dyn Store>) {
        *self.inner.write() = Some(s);
    }

    pub fn take(&self) -> Option<Arc<dyn Store>> {
        self.inner.write().take()
    }

    pub fn is_open(&self) -> bool {
        self.inner.read().is_some()
    }
}
