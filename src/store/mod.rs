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

pub mod conformance;
pub mod keeper;
pub mod sled_store;
pub mod snapshot;
pub mod writer;

use async_trait::async_trait;
use parking_lot::RwLock;
use std::sync::Arc;

use crate::auth::KeyRecord;
use crate::ledger::budget::Scope;
use crate::ledger::entities::{BudgetRecord, UserRecord};
use crate::ledger::Settled;
use crate::meter::price::Price;
use crate::meter::record::UsageRecord;

/// Filters for usage queries. Times are milliseconds since the epoch, `[from, to)`.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub endpoint: Option<String>,
    pub session_id: Option<String>,
    pub status: Option<u16>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
}

impl UsageFilter {
    pub fn matches(&self, r: &UsageRecord) -> bool {
        let eq = |f: &Option<String>, v: Option<&str>| f.as_deref().is_none_or(|f| Some(f) == v);
        eq(&self.key_id, r.key_id.as_deref())
            && eq(&self.user_id, r.user_id.as_deref())
            && eq(&self.model, Some(r.model.as_str()))
            && eq(&self.provider, Some(r.provider.as_str()))
            && eq(&self.endpoint, Some(r.endpoint.as_str()))
            && eq(&self.session_id, r.session_id.as_deref())
            && self.status.is_none_or(|s| s == r.status)
            && self.from_ms.is_none_or(|f| r.ts_ms >= f)
            && self.to_ms.is_none_or(|t| r.ts_ms < t)
    }
}

/// A page of usage records, oldest first, with the cursor of the next page.
#[derive(Debug, Clone, Default)]
pub struct UsagePage {
    pub records: Vec<UsageRecord>,
    pub next_cursor: Option<String>,
}

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
    async fn load_users(&self) -> StoreResult<Vec<UserRecord>>;
    async fn put_user(&self, u: &UserRecord) -> StoreResult<()>;
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;
    async fn load_budgets(&self) -> StoreResult<Vec<BudgetRecord>>;
    async fn put_budget(&self, b: &BudgetRecord) -> StoreResult<()>;
    async fn delete_budget(&self, id: &str) -> StoreResult<bool>;
    /// Prices set through the API (the shipped table is not stored).
    async fn load_prices(&self) -> StoreResult<Vec<(String, Price)>>;
    async fn put_price(&self, key: &str, p: &Price) -> StoreResult<()>;
    async fn delete_price(&self, key: &str) -> StoreResult<bool>;
    /// Records settled requests and their spend, atomically and idempotently (a record whose
    /// id is already stored is skipped), then makes them durable. Returns the records that
    /// were new.
    async fn append_usage(&self, batch: Vec<Settled>) -> StoreResult<Vec<Settled>>;
    /// Stored spend of (scope, id) in the window starting at `window_start`.
    async fn load_spend(&self) -> StoreResult<Vec<(Scope, String, u64, u64)>>;
    /// Usage records matching `filter`, oldest first, after the cursor.
    async fn query_usage(
        &self,
        filter: &UsageFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<UsagePage>;
    /// Deletes usage records older than `before_ms` and spend windows that ended before it.
    async fn prune_usage(&self, before_ms: u64) -> StoreResult<usize>;
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
