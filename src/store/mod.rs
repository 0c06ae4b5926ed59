//! Persistence behind the traits [`Store`] (keys, users, budgets, prices, usage and spend,
//! the stored Responses of [`ResponseStore`] and the request traces of [`TraceStore`]) and [`SharedStore`] (leases and the change feed of a store several processes share).
//! Two backends: sled (the embedded single-node default) and PostgreSQL ([`postgres`], see
//! `docs/scale-out.md`). The hot path never calls the store: it reads in-memory indexes that
//! the services in [`crate::services`] load from the store and keep in step with it.

#[cfg(test)]
pub mod conformance;
pub mod postgres;
pub mod segment;
pub mod settings;
pub mod sled_store;
pub mod trace_block;

use async_trait::async_trait;
use parking_lot::RwLock;
use std::sync::Arc;

use crate::meter::price::Price;
use crate::records::{
    AlertRecord, BudgetRecord, Conversation, GroupKind, GroupRecord, KeyRecord, McpServerRecord,
    Micros, Scope, Settled, StoredResponse, Trace, TraceFilter, TracePage, UsageRecord, UserRecord,
};

/// Filters for usage queries. Times are milliseconds since the epoch, `[from, to)`.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub end_user: Option<String>,
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
            && eq(&self.end_user, r.end_user.as_deref())
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

/// The stored spend of one budget account in one window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpendRow {
    pub scope: Scope,
    pub id: String,
    pub window_start: u64,
    pub spent: Micros,
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

/// Stored Responses (`previous_response_id`, `item_reference`, `GET /v1/responses/{id}`):
/// written in batches by the response writer, read on the request path of a chain.
#[async_trait]
pub trait ResponseStore: Send + Sync {
    /// Stores responses (an id already stored is replaced) with the index of their items.
    async fn put_responses(&self, batch: Vec<StoredResponse>) -> StoreResult<()>;
    async fn get_response(&self, id: &str) -> StoreResult<Option<StoredResponse>>;
    /// The id of the response of `key_id` that holds the item `item_id` (the newest one,
    /// when several did).
    async fn response_of_item(&self, key_id: &str, item_id: &str) -> StoreResult<Option<String>>;
    /// Returns false when no response had that id.
    async fn delete_response(&self, id: &str) -> StoreResult<bool>;
    /// Deletes the responses created before `before_secs`, and the conversations last
    /// changed before it.
    async fn prune_responses(&self, before_secs: u64) -> StoreResult<usize>;
    /// Deletes the oldest responses of `key_id` until the ones left hold at most
    /// `max_bytes`; returns how many went.
    async fn trim_responses(&self, key_id: &str, max_bytes: u64) -> StoreResult<usize>;
    /// Stores conversations (replacing the stored version of each).
    async fn put_conversations(&self, batch: Vec<Conversation>) -> StoreResult<()>;
    async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>>;
    /// Returns false when no conversation had that id.
    async fn delete_conversation(&self, id: &str) -> StoreResult<bool>;
}

/// Request traces (`traces:`): written in batches by the trace writer, read by
/// `GET /v1/traces`. Best effort: a failed write loses traces, never a request.
#[async_trait]
pub trait TraceStore: Send + Sync {
    async fn put_traces(&self, batch: Vec<Trace>) -> StoreResult<()>;
    /// Traces matching `filter`, newest first, older than the cursor.
    async fn query_traces(
        &self,
        filter: &TraceFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<TracePage>;
    /// The newest trace with this request id (of `key_id` only, when given).
    async fn get_trace(&self, request_id: &str, key_id: Option<&str>)
        -> StoreResult<Option<Trace>>;
    /// Deletes traces older than `before_ms`.
    async fn prune_traces(&self, before_ms: u64) -> StoreResult<usize>;
}

/// Budget alerts (`alerts::sender`): each one claimed once by an insert-if-absent on its id,
/// delivered by its claimer, then marked sent.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Inserts `a` unless an alert with its id (one account, window and threshold) is
    /// stored, held by `owner` until `lease_until_ms`; true when this call inserted it.
    async fn claim_alert(
        &self,
        a: &AlertRecord,
        owner: &str,
        lease_until_ms: u64,
    ) -> StoreResult<bool>;
    /// The alerts not yet sent that `owner` may deliver, taken for it until
    /// `lease_until_ms`: its own, and those whose owner's lease ended before `now_ms` (a
    /// sender that died). A store only one process opens (sled) returns every unsent one.
    async fn take_pending_alerts(
        &self,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> StoreResult<Vec<AlertRecord>>;
    /// Stores an alert's delivery progress (targets delivered, attempts, `sent_at`).
    async fn update_alert(&self, a: &AlertRecord) -> StoreResult<()>;
    /// Every stored alert (tests and the management read).
    async fn load_alerts(&self) -> StoreResult<Vec<AlertRecord>>;
}

/// The durable store. Implementations must be safe to call from any task; blocking
/// implementations move their work off the reactor themselves.
#[async_trait]
pub trait Store: ResponseStore + TraceStore + AlertStore + Send + Sync {
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
    /// Teams or organisations.
    async fn load_groups(&self, kind: GroupKind) -> StoreResult<Vec<GroupRecord>>;
    async fn put_group(&self, kind: GroupKind, g: &GroupRecord) -> StoreResult<()>;
    async fn delete_group(&self, kind: GroupKind, id: &str) -> StoreResult<bool>;
    /// Prices set through the API (the shipped table is not stored).
    async fn load_prices(&self) -> StoreResult<Vec<(String, Price)>>;
    async fn put_price(&self, key: &str, p: &Price) -> StoreResult<()>;
    async fn delete_price(&self, key: &str) -> StoreResult<bool>;
    /// MCP servers registered through the API (the config's are not stored).
    async fn load_mcp_servers(&self) -> StoreResult<Vec<McpServerRecord>>;
    async fn put_mcp_server(&self, s: &McpServerRecord) -> StoreResult<()>;
    async fn delete_mcp_server(&self, id: &str) -> StoreResult<bool>;
    /// Records settled requests and their spend, atomically and idempotently (a record whose
    /// id is already stored is skipped), then makes them durable. Returns the records that
    /// were new.
    async fn append_usage(&self, batch: Vec<Settled>) -> StoreResult<Vec<Settled>>;
    /// The stored spend of every budget account window.
    async fn load_spend(&self) -> StoreResult<Vec<SpendRow>>;
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

    /// Sets `name` only if it has no value yet; returns whether this call set it. Instances
    /// that start together use it to agree on one master key and one bootstrap key.
    async fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> StoreResult<bool> {
        if self.get_meta(name).await?.is_some() {
            return Ok(false);
        }
        self.put_meta(name, value).await?;
        Ok(true)
    }

    /// Overwrites stored spend rows (`tollgate import`); usage imported without charges
    /// leaves spend alone, so the two together move a store exactly.
    async fn import_spend(&self, rows: Vec<SpendRow>) -> StoreResult<()>;

    /// The shared-store side of this backend (leases, change feed), if several processes
    /// may use it at once. sled: none.
    fn shared(self: Arc<Self>) -> Option<Arc<dyn SharedStore>> {
        None
    }
}

/// What changed in a shared store since a [`SharedStore::versions`] reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    Keys,
    Users,
    Budgets,
    Prices,
    Meta,
    McpServers,
    Teams,
    Orgs,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 8] = [
        ChangeKind::Keys,
        ChangeKind::Users,
        ChangeKind::Budgets,
        ChangeKind::Prices,
        ChangeKind::Meta,
        ChangeKind::McpServers,
        ChangeKind::Teams,
        ChangeKind::Orgs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Keys => "keys",
            ChangeKind::Users => "users",
            ChangeKind::Budgets => "budgets",
            ChangeKind::Prices => "prices",
            ChangeKind::Meta => "meta",
            ChangeKind::McpServers => "mcp_servers",
            ChangeKind::Teams => "teams",
            ChangeKind::Orgs => "orgs",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One lease call on the account (scope, id) in the window starting at `window_start`:
/// this holder's lease becomes `keep` plus a grant of at least `need` (or nothing when less
/// than `need` is free), at most `max(need, free * fraction)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    pub scope: String,
    pub id: String,
    pub window_start: u64,
    /// The account's limit in this window.
    pub max: u64,
    /// What this holder keeps of its lease (its obligations not yet in the stored spend).
    pub keep: u64,
    /// The least grant worth having (0: a return, or a renewal of the amount).
    pub need: u64,
    /// Share of the free amount taken at once, beyond `need` (0.0–1.0).
    pub fraction: f64,
    pub ttl_ms: u64,
}

/// The answer to a [`LeaseRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// This holder's lease now (keep + grant).
    pub amount: u64,
    /// What was granted beyond `keep`.
    pub granted: u64,
    /// Stored (settled) spend in the window.
    pub spent: u64,
    /// Live leases of other holders.
    pub others: u64,
}

/// One of this holder's live leases after a renewal, with the stored spend of its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewedLease {
    /// The lease scope: a budget's [`Scope::code`], or a rate window's (`rk`, `ru`, `re`).
    pub scope: String,
    pub id: String,
    pub window_start: u64,
    /// This holder's lease.
    pub amount: u64,
    /// Stored (settled) spend in the window.
    pub spent: u64,
}

/// A rate-window counter of a shared store: requests or tokens counted in one window of
/// one account (scope `rk`, `tk`, ...: see the ledger's `rate_scope`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WindowCount {
    pub scope: String,
    pub id: String,
    pub window_start: u64,
    pub count: u64,
}

/// The shared-store operations (PostgreSQL): leases of budgets and rate windows, and the
/// change sequence that other instances poll.
#[async_trait]
pub trait SharedStore: Send + Sync {
    /// This process's holder id in the lease table.
    fn holder(&self) -> &str;
    /// The change counter of every kind (keys, users, ...): a kind whose counter moved has
    /// changed.
    async fn versions(&self) -> StoreResult<Vec<(ChangeKind, u64)>>;
    /// Takes, tops up or returns a lease, atomically against every other holder.
    async fn lease(&self, req: &LeaseRequest) -> StoreResult<LeaseGrant>;
    /// Extends this holder's live leases by `ttl_ms`; returns them with the stored spend of
    /// their windows. A lease that already expired is not renewed (another holder may have
    /// taken its amount).
    async fn renew(&self, ttl_ms: u64) -> StoreResult<Vec<RenewedLease>>;
    /// Adds rate-window consumption (requests or tokens counted locally) to the stored
    /// counters, in one statement, and returns the totals after it; a count of 0 only reads.
    async fn add_consumption(&self, rows: Vec<WindowCount>) -> StoreResult<Vec<WindowCount>>;
    /// Drops every lease of this holder (clean shutdown).
    async fn release_all(&self) -> StoreResult<()>;
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
