//! The PostgreSQL implementation of [`Store`] and [`SharedStore`]: the backend that several
//! tollgate instances share.
//!
//! - **Pooling**: deadpool-postgres, `pool_size` connections, a wait/create/recycle timeout
//!   of `connect_timeout_ms`, and a server-side `statement_timeout`, so a slow or lost
//!   database makes calls fail in bounded time rather than hang.
//! - **TLS**: `sslmode=require` in the URL (or `tls: require`) connects through rustls (the
//!   ring provider Pingora already uses) and verifies the server against the system roots,
//!   or against `ca_file` when given. `prefer` tries TLS and falls back to plain TCP.
//! - **Schema**: versioned migrations in [`MIGRATIONS`], applied in order under an advisory
//!   lock (so instances starting together do not race) by `tollgate migrate` or at start
//!   (`auto_migrate`). All tables live in the configured schema.
//! - **Change sequence**: statement triggers on keys, users, budgets, prices and meta bump a
//!   per-kind counter in `tg_versions` in the writing transaction; other instances poll it
//!   (one tiny query every 200 ms) and reload the kind that moved. A counter cannot miss a
//!   commit the way a sequence cursor can (sequence values commit out of order).
//! - **Leases**: see `docs/scale-out.md`. One transaction per lease call locks the
//!   account's spend row, sums the other live leases and grants from what is free.
//! - **Usage**: one transaction per batch: records by id with `ON CONFLICT DO NOTHING`
//!   (replays never count twice), then one upsert per account window for the new ones.

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;

use super::{
    ChangeKind, LeaseGrant, LeaseRequest, RenewedLease, ResponseStore, SharedStore, SpendRow,
    Store, StoreError, StoreResult, TraceStore, UsageFilter, UsagePage, WindowCount,
};
use crate::meter::price::Price;
use crate::records::{
    AlertRecord, BudgetRecord, Conversation, GroupKind, GroupRecord, KeyRecord, McpServerRecord,
    Scope, Settled, StoredResponse, Trace, TraceFilter, TracePage, UsageRecord, UserRecord,
};

/// TLS to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP (loopback, a private network, a Unix socket).
    Disable,
    /// TLS when the server offers it, else plain.
    #[default]
    Prefer,
    /// TLS, with the server certificate verified; never plain.
    Require,
}

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    pub url: String,
    pub schema: String,
    pub pool_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// Overrides the URL's `sslmode` when set.
    pub tls: Option<TlsMode>,
    pub ca_file: Option<std::path::PathBuf>,
}

/// The URL with its password replaced, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_string();
    }
    // key=value form
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .finish()
    }
}

impl PgSettings {
    pub fn new(url: &str) -> PgSettings {
        PgSettings {
            url: url.to_string(),
            schema: "tollgate".into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            tls: None,
            ca_file: None,
        }
    }
}

/// Versioned migrations: (version, name, SQL). Append only; never edit a shipped one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "tables",
        r#"
CREATE TABLE tg_keys (id TEXT COLLATE "C" PRIMARY KEY, rec TEXT NOT NULL);
CREATE TABLE tg_meta (id TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE tg_users (id TEXT COLLATE "C" PRIMARY KEY, rec TEXT NOT NULL);
CREATE TABLE tg_budgets (id TEXT COLLATE "C" PRIMARY KEY, rec TEXT NOT NULL);
CREATE TABLE tg_prices (id TEXT COLLATE "C" PRIMARY KEY, rec TEXT NOT NULL);
CREATE TABLE tg_usage (
    id TEXT COLLATE "C" PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    key_id TEXT,
    user_id TEXT,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    session_id TEXT,
    status INT NOT NULL,
    rec TEXT NOT NULL
);
CREATE INDEX tg_usage_ts ON tg_usage (ts_ms, id);
-- Spend of budget accounts ('k', 'u') and consumption of rate windows ('rk', 'tk', ...).
CREATE TABLE tg_spend (
    scope TEXT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    window_start BIGINT NOT NULL,
    spent BIGINT NOT NULL,
    PRIMARY KEY (scope, id, window_start)
);
CREATE TABLE tg_leases (
    scope TEXT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    window_start BIGINT NOT NULL,
    holder TEXT NOT NULL,
    amount BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, id, window_start, holder)
);
CREATE INDEX tg_leases_holder ON tg_leases (holder);
CREATE TABLE tg_versions (kind TEXT PRIMARY KEY, version BIGINT NOT NULL);
INSERT INTO tg_versions VALUES ('keys', 0), ('users', 0), ('budgets', 0), ('prices', 0), ('meta', 0);
CREATE FUNCTION tg_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tg_versions SET version = version + 1 WHERE kind = TG_ARGV[0];
    RETURN NULL;
END $$;
CREATE TRIGGER tg_keys_changed AFTER INSERT OR UPDATE OR DELETE ON tg_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tg_bump('keys');
CREATE TRIGGER tg_users_changed AFTER INSERT OR UPDATE OR DELETE ON tg_users
    FOR EACH STATEMENT EXECUTE FUNCTION tg_bump('users');
CREATE TRIGGER tg_budgets_changed AFTER INSERT OR UPDATE OR DELETE ON tg_budgets
    FOR EACH STATEMENT EXECUTE FUNCTION tg_bump('budgets');
CREATE TRIGGER tg_prices_changed AFTER INSERT OR UPDATE OR DELETE ON tg_prices
    FOR EACH STATEMENT EXECUTE FUNCTION tg_bump('prices');
CREATE TRIGGER tg_meta_changed AFTER INSERT OR UPDATE OR DELETE ON tg_meta
    FOR EACH STATEMENT EXECUTE FUNCTION tg_bump('meta');
"#,
    ),
    (
        2,
        "usage indexes for per-key and per-user queries",
        r#"
CREATE INDEX tg_usage_key ON tg_usage (key_id, ts_ms);
CREATE INDEX tg_usage_user ON tg_usage (user_id, ts_ms);
"#,
    ),
    (
        3,
        "end_user column on usage rows",
        r#"
-- Rows written before this migration have no end user (NULL), and their rec has none either.
ALTER TABLE tg_usage ADD COLUMN end_user TEXT;
CREATE INDEX tg_usage_end_user ON tg_usage (end_user, ts_ms) WHERE end_user IS NOT NULL;
"#,
    ),
    (
        4,
        "stored responses",
        r#"
CREATE TABLE tg_responses (
    id TEXT COLLATE "C" PRIMARY KEY,
    key_id TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    size BIGINT NOT NULL,
    rec TEXT NOT NULL
);
CREATE INDEX tg_responses_created ON tg_responses (created_at);
CREATE INDEX tg_responses_key ON tg_responses (key_id, created_at);
CREATE TABLE tg_response_items (
    key_id TEXT COLLATE "C" NOT NULL,
    item_id TEXT COLLATE "C" NOT NULL,
    response_id TEXT COLLATE "C" NOT NULL REFERENCES tg_responses (id) ON DELETE CASCADE,
    PRIMARY KEY (key_id, item_id)
);
CREATE INDEX tg_response_items_response ON tg_response_items (response_id);
CREATE TABLE tg_conversations (
    id TEXT COLLATE "C" PRIMARY KEY,
    key_id TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT NOT NULL,
    rec TEXT NOT NULL
);
CREATE INDEX tg_conversations_updated ON tg_conversations (updated_at);
"#,
    ),
    (
        5,
        "traces",
        r#"
CREATE TABLE tg_traces (
    ts_ms BIGINT NOT NULL,
    request_id TEXT COLLATE "C" NOT NULL,
    key_id TEXT COLLATE "C",
    user_id TEXT COLLATE "C",
    session_id TEXT COLLATE "C",
    model TEXT COLLATE "C" NOT NULL,
    status INT NOT NULL,
    latency_ms BIGINT NOT NULL,
    rec TEXT NOT NULL,
    PRIMARY KEY (ts_ms, request_id)
);
CREATE INDEX tg_traces_request ON tg_traces (request_id, ts_ms);
CREATE INDEX tg_traces_key ON tg_traces (key_id, ts_ms);
"#,
    ),
    (
        6,
        "registered MCP servers",
        r#"
CREATE TABLE tg_mcp_servers (id TEXT COLLATE "C" PRIMARY KEY, rec TEXT NOT NULL);
INSERT INTO tg_versions VALUES ('mcp_servers', 0);
CREATE TRIGGER tg_mcp_servers_changed AFTER INSERT OR UPDATE OR DELETE ON tg_mcp_servers
    FOR EACH STATEMENT EXECUTE FUNCTION tg_bump('mcp_servers');
"#,
    ),
    (
        7,
        "teams and organisations",
        r#"
CREATE TABLE tg_teams (id TEXT COLLATE "C" PRIMARY KEY, rec TEXT NOT NULL);
CREATE TABLE tg_orgs (id TEXT COLLATE "C" PRIMARY KEY, rec TEXT NOT NULL);
INSERT INTO tg_versions VALUES ('teams', 0), ('orgs', 0);
CREATE TRIGGER tg_teams_changed AFTER INSERT OR UPDATE OR DELETE ON tg_teams
    FOR EACH STATEMENT EXECUTE FUNCTION tg_bump('teams');
CREATE TRIGGER tg_orgs_changed AFTER INSERT OR UPDATE OR DELETE ON tg_orgs
    FOR EACH STATEMENT EXECUTE FUNCTION tg_bump('orgs');
"#,
    ),
    (
        8,
        "budget alerts",
        r#"
-- One row per (account, budget, window, threshold): the INSERT that claims it is the one
-- sender of the alert, on any instance.
CREATE TABLE tg_alerts (
    id TEXT COLLATE "C" PRIMARY KEY,
    scope TEXT NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL,
    budget_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    window_start BIGINT NOT NULL,
    threshold SMALLINT NOT NULL,
    owner TEXT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    sent_at BIGINT,
    rec TEXT NOT NULL,
    UNIQUE (scope, account_id, budget_id, window_start, threshold)
);
CREATE INDEX tg_alerts_pending ON tg_alerts (lease_until_ms) WHERE sent_at IS NULL;
"#,
    ),
];

fn group_table(kind: GroupKind) -> &'static str {
    match kind {
        GroupKind::Team => "tg_teams",
        GroupKind::Org => "tg_orgs",
    }
}

pub struct PgStore {
    pool: Pool,
    holder: String,
    healthy: std::sync::atomic::AtomicBool,
}

fn db<E: std::error::Error>(e: E) -> StoreError {
    // The causes too: "error performing TLS handshake: invalid peer certificate: ...".
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    StoreError::Io(format!("postgres: {msg}"))
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Io(format!(
            "postgres: {}{} [SQLSTATE {}]",
            d.message(),
            d.detail().map(|s| format!(": {s}")).unwrap_or_default(),
            d.code().code()
        )),
        None => db(e),
    }
}

fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Io(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The usage cursor: hex of (ts_ms big-endian ++ id), the same shape sled uses.
fn cursor_of(ts_ms: u64, id: &str) -> String {
    let mut k = ts_ms.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    crate::ids::hex(&k)
}

fn parse_cursor(c: &str) -> StoreResult<(u64, String)> {
    let k = crate::ids::unhex_any(c).ok_or_else(|| StoreError::Corrupt("bad cursor".into()))?;
    if k.len() < 8 {
        return Err(StoreError::Corrupt("bad cursor".into()));
    }
    let ts = u64::from_be_bytes(k[..8].try_into().unwrap());
    let id =
        String::from_utf8(k[8..].to_vec()).map_err(|_| StoreError::Corrupt("bad cursor".into()))?;
    Ok((ts, id))
}

fn rustls_config(ca_file: Option<&std::path::Path>) -> StoreResult<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().unwrap_or_default() {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(db)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl PgStore {
    /// Builds the pool (no connection is made yet) with a fresh holder id.
    pub fn new(s: &PgSettings) -> StoreResult<PgStore> {
        if !valid_schema(&s.schema) {
            return Err(StoreError::Io(format!(
                "schema '{}' must be 1-63 lowercase letters, digits or _",
                s.schema
            )));
        }
        let mut cfg: tokio_postgres::Config = s
            .url
            .parse()
            .map_err(|e| StoreError::Io(format!("store.url: {e}")))?;
        cfg.connect_timeout(s.connect_timeout);
        cfg.keepalives(true);
        cfg.keepalives_idle(Duration::from_secs(30));
        cfg.application_name("tollgate");
        cfg.options(format!(
            "-c search_path={} -c statement_timeout={} -c lock_timeout={}",
            s.schema,
            s.statement_timeout.as_millis(),
            s.statement_timeout.as_millis()
        ));
        let mode = s.tls.unwrap_or(match cfg.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => TlsMode::Disable,
            tokio_postgres::config::SslMode::Require => TlsMode::Require,
            _ => TlsMode::Prefer,
        });
        let mc = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match mode {
            TlsMode::Disable => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Manager::from_config(cfg, NoTls, mc)
            }
            m => {
                cfg.ssl_mode(if m == TlsMode::Require {
                    tokio_postgres::config::SslMode::Require
                } else {
                    tokio_postgres::config::SslMode::Prefer
                });
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config(
                    s.ca_file.as_deref(),
                )?);
                Manager::from_config(cfg, tls, mc)
            }
        };
        let pool = Pool::builder(mgr)
            .max_size(s.pool_size.max(1))
            .wait_timeout(Some(s.connect_timeout))
            .create_timeout(Some(s.connect_timeout))
            .recycle_timeout(Some(s.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(db)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        Ok(PgStore {
            pool,
            holder: format!(
                "{host}-{}-{}",
                std::process::id(),
                crate::ids::generate_id("")
            ),
            healthy: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Connects and checks that the schema is current, applying missing migrations first
    /// when `migrate` is true.
    pub async fn open(s: &PgSettings, migrate: bool) -> StoreResult<PgStore> {
        let store = PgStore::new(s)?;
        let (current, latest) = store.schema_version(&s.schema).await?;
        if current < latest {
            if !migrate {
                return Err(StoreError::Io(format!(
                    "the database schema is at version {current}, this tollgate needs {latest}: run `tollgate migrate`"
                )));
            }
            store.migrate(&s.schema).await?;
        } else if current > latest {
            return Err(StoreError::Io(format!(
                "the database schema is at version {current}, newer than this tollgate knows ({latest}); upgrade tollgate"
            )));
        }
        Ok(store)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        let r = self.pool.get().await;
        self.healthy
            .store(r.is_ok(), std::sync::atomic::Ordering::Relaxed);
        r.map_err(db)
    }

    fn mark<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        // A statement error (a constraint, bad data) says nothing about reachability; a lost
        // connection does.
        let ok = match &r {
            Ok(_) => true,
            Err(StoreError::Io(e)) => e.contains("[SQLSTATE"),
            Err(_) => true,
        };
        self.healthy.store(ok, std::sync::atomic::Ordering::Relaxed);
        r
    }

    /// (applied version, latest known version).
    pub async fn schema_version(&self, schema: &str) -> StoreResult<(i32, i32)> {
        let c = self.client().await?;
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        let exists: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'tg_schema_migrations')",
                &[&schema],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        if !exists {
            return Ok((0, latest));
        }
        let v: Option<i32> = c
            .query_one("SELECT max(version) FROM tg_schema_migrations", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        Ok((v.unwrap_or(0), latest))
    }

    /// Applies the migrations not applied yet, each in its own transaction, under an
    /// advisory lock. Returns the versions applied.
    pub async fn migrate(&self, schema: &str) -> StoreResult<Vec<i32>> {
        let mut c = self.client().await?;
        c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(pg_err)?;
        // One lock per schema: instances starting together apply each migration once.
        let lock_key = i64::from_be_bytes(
            <sha2::Sha256 as sha2::Digest>::digest(format!("tollgate-migrate-{schema}").as_bytes())
                [..8]
                .try_into()
                .unwrap(),
        );
        c.execute("SELECT pg_advisory_lock($1)", &[&lock_key])
            .await
            .map_err(pg_err)?;
        let res = async {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS tg_schema_migrations (version INT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .map_err(pg_err)?;
            let applied: Vec<i32> = c
                .query("SELECT version FROM tg_schema_migrations", &[])
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut done = Vec::new();
            for (v, name, sql) in MIGRATIONS {
                if applied.contains(v) {
                    continue;
                }
                let tx = c.transaction().await.map_err(pg_err)?;
                tx.batch_execute(sql).await.map_err(pg_err)?;
                tx.execute(
                    "INSERT INTO tg_schema_migrations (version, name) VALUES ($1, $2)",
                    &[v, name],
                )
                .await
                .map_err(pg_err)?;
                tx.commit().await.map_err(pg_err)?;
                log::info!("database migration {v} ({name}) applied");
                done.push(*v);
            }
            Ok(done)
        }
        .await;
        let _ = c
            .execute("SELECT pg_advisory_unlock($1)", &[&lock_key])
            .await;
        res
    }

    /// Drops the schema and everything in it (tests).
    pub async fn drop_schema(&self, schema: &str) -> StoreResult<()> {
        let c = self.client().await?;
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .map_err(pg_err)
    }

    async fn load_recs<T: serde::de::DeserializeOwned>(&self, table: &str) -> StoreResult<Vec<T>> {
        let c = self.client().await?;
        let rows = c
            .query(&format!("SELECT rec FROM {table} ORDER BY id"), &[])
            .await
            .map_err(pg_err);
        let rows = self.mark(rows)?;
        rows.iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect()
    }

    async fn put_rec(&self, table: &str, id: &str, rec: String) -> StoreResult<()> {
        let c = self.client().await?;
        let r = c
            .execute(
                &format!(
                    "INSERT INTO {table} (id, rec) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET rec = EXCLUDED.rec"
                ),
                &[&id, &rec],
            )
            .await
            .map_err(pg_err);
        self.mark(r).map(|_| ())
    }

    async fn delete_rec(&self, table: &str, id: &str) -> StoreResult<bool> {
        let c = self.client().await?;
        let r = c
            .execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id])
            .await
            .map_err(pg_err);
        Ok(self.mark(r)? > 0)
    }

    async fn append_usage_tx(&self, batch: &[Settled]) -> StoreResult<Vec<usize>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let mut ids = Vec::with_capacity(batch.len());
        let mut ts = Vec::with_capacity(batch.len());
        let mut keys: Vec<Option<&str>> = Vec::with_capacity(batch.len());
        let mut users: Vec<Option<&str>> = Vec::with_capacity(batch.len());
        let mut end_users: Vec<Option<&str>> = Vec::with_capacity(batch.len());
        let mut models = Vec::with_capacity(batch.len());
        let mut providers = Vec::with_capacity(batch.len());
        let mut endpoints = Vec::with_capacity(batch.len());
        let mut sessions: Vec<Option<&str>> = Vec::with_capacity(batch.len());
        let mut statuses = Vec::with_capacity(batch.len());
        let mut recs = Vec::with_capacity(batch.len());
        for s in batch {
            let r = &s.record;
            ids.push(r.id.as_str());
            ts.push(i(r.ts_ms));
            keys.push(r.key_id.as_deref());
            users.push(r.user_id.as_deref());
            end_users.push(r.end_user.as_deref());
            models.push(r.model.as_str());
            providers.push(r.provider.as_str());
            endpoints.push(r.endpoint.as_str());
            sessions.push(r.session_id.as_deref());
            statuses.push(r.status as i32);
            recs.push(json(r)?);
        }
        let fresh: std::collections::HashSet<String> = tx
            .query(
                "INSERT INTO tg_usage (id, ts_ms, key_id, user_id, model, provider, endpoint, session_id, status, rec, end_user)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int4[], $10::text[], $11::text[])
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                &[&ids, &ts, &keys, &users, &models, &providers, &endpoints, &sessions, &statuses, &recs, &end_users],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        // The first occurrence of each new id counts (a batch may repeat an id).
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let mut sums: BTreeMap<(&str, &str, u64), u64> = BTreeMap::new();
        for (n, s) in batch.iter().enumerate() {
            if !fresh.contains(&s.record.id) || !seen.insert(s.record.id.as_str()) {
                continue;
            }
            for c in s.charges.iter().filter(|c| c.amount > 0) {
                *sums
                    .entry((c.scope.code(), c.id.as_str(), c.window_start))
                    .or_default() += c.amount;
            }
            out.push(n);
        }
        if !sums.is_empty() {
            // Sorted rows: concurrent batches lock spend rows in the same order (no deadlock).
            let (mut sc, mut id, mut ws, mut amt) = (vec![], vec![], vec![], vec![]);
            for ((s, k, w), a) in &sums {
                sc.push(*s);
                id.push(*k);
                ws.push(i(*w));
                amt.push(i(*a));
            }
            tx.execute(
                "INSERT INTO tg_spend (scope, id, window_start, spent)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
                 ON CONFLICT (scope, id, window_start) DO UPDATE SET spent = tg_spend.spent + EXCLUDED.spent",
                &[&sc, &id, &ws, &amt],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(out)
    }

    async fn lease_tx(&self, r: &LeaseRequest) -> StoreResult<LeaseGrant> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let ws = i(r.window_start);
        tx.execute(
            "INSERT INTO tg_spend (scope, id, window_start, spent) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
            &[&r.scope, &r.id, &ws],
        )
        .await
        .map_err(pg_err)?;
        // The account's lock: every lease call and every spend write of this window
        // serialises here.
        let row = tx
            .query_one(
                "SELECT spent, (extract(epoch FROM clock_timestamp()) * 1000)::int8 FROM tg_spend
                 WHERE scope = $1 AND id = $2 AND window_start = $3 FOR UPDATE",
                &[&r.scope, &r.id, &ws],
            )
            .await
            .map_err(pg_err)?;
        let (spent, now_ms): (i64, i64) = (row.get(0), row.get(1));
        let others: i64 = tx
            .query_one(
                "SELECT coalesce(sum(amount), 0)::int8 FROM tg_leases
                 WHERE scope = $1 AND id = $2 AND window_start = $3 AND holder <> $4 AND expires_ms > $5",
                &[&r.scope, &r.id, &ws, &self.holder, &now_ms],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let (spent, others) = (u(spent), u(others));
        let free = r
            .max
            .saturating_sub(spent)
            .saturating_sub(others)
            .saturating_sub(r.keep);
        let granted = if r.need == 0 && r.fraction <= 0.0 {
            0
        } else if free >= r.need.max(1) {
            let share = (free as f64 * r.fraction.clamp(0.0, 1.0)) as u64;
            free.min(r.need.max(share))
        } else {
            0
        };
        let amount = r.keep + granted;
        if amount == 0 {
            tx.execute(
                "DELETE FROM tg_leases WHERE scope = $1 AND id = $2 AND window_start = $3 AND holder = $4",
                &[&r.scope, &r.id, &ws, &self.holder],
            )
            .await
            .map_err(pg_err)?;
        } else {
            tx.execute(
                "INSERT INTO tg_leases (scope, id, window_start, holder, amount, expires_ms) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (scope, id, window_start, holder) DO UPDATE SET amount = EXCLUDED.amount, expires_ms = EXCLUDED.expires_ms",
                &[&r.scope, &r.id, &ws, &self.holder, &i(amount), &(now_ms + i(r.ttl_ms))],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.execute(
            "DELETE FROM tg_leases WHERE scope = $1 AND id = $2 AND window_start = $3 AND expires_ms <= $4",
            &[&r.scope, &r.id, &ws, &now_ms],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(LeaseGrant {
            amount,
            granted,
            spent,
            others,
        })
    }
}

#[async_trait]
impl ResponseStore for PgStore {
    async fn put_responses(&self, batch: Vec<StoredResponse>) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        for r in &batch {
            let rec = json(r)?;
            // Replacing a record drops its item rows (cascade) before the new ones go in.
            tx.execute("DELETE FROM tg_responses WHERE id = $1", &[&r.id])
                .await
                .map_err(pg_err)?;
            tx.execute(
                "INSERT INTO tg_responses (id, key_id, created_at, size, rec) VALUES ($1, $2, $3, $4, $5)",
                &[&r.id, &r.key_id, &i(r.created_at), &i(r.size), &rec],
            )
            .await
            .map_err(pg_err)?;
            let items: Vec<&str> = r.item_ids().collect();
            tx.execute(
                "INSERT INTO tg_response_items (key_id, item_id, response_id)
                 SELECT $1, item, $2 FROM unnest($3::text[]) AS item
                 ON CONFLICT (key_id, item_id) DO UPDATE SET response_id = EXCLUDED.response_id",
                &[&r.key_id, &r.id, &items],
            )
            .await
            .map_err(pg_err)?;
        }
        let r = tx.commit().await.map_err(pg_err);
        self.mark(r)
    }

    async fn get_response(&self, id: &str) -> StoreResult<Option<StoredResponse>> {
        let c = self.client().await?;
        let r = c
            .query_opt("SELECT rec FROM tg_responses WHERE id = $1", &[&id])
            .await
            .map_err(pg_err);
        self.mark(r)?
            .map(|row| from_json(row.get::<_, &str>(0)))
            .transpose()
    }

    async fn response_of_item(&self, key_id: &str, item_id: &str) -> StoreResult<Option<String>> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT response_id FROM tg_response_items WHERE key_id = $1 AND item_id = $2",
                &[&key_id, &item_id],
            )
            .await
            .map_err(pg_err);
        Ok(self.mark(r)?.map(|row| row.get::<_, String>(0)))
    }

    async fn delete_response(&self, id: &str) -> StoreResult<bool> {
        self.delete_rec("tg_responses", id).await
    }

    async fn prune_responses(&self, before_secs: u64) -> StoreResult<usize> {
        let c = self.client().await?;
        let r = c
            .execute(
                "DELETE FROM tg_responses WHERE created_at < $1",
                &[&i(before_secs)],
            )
            .await
            .map_err(pg_err);
        let n = self.mark(r)?;
        let r = c
            .execute(
                "DELETE FROM tg_conversations WHERE updated_at < $1",
                &[&i(before_secs)],
            )
            .await
            .map_err(pg_err);
        Ok((n + self.mark(r)?) as usize)
    }

    async fn put_conversations(&self, batch: Vec<Conversation>) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        for conv in &batch {
            tx.execute(
                "INSERT INTO tg_conversations (id, key_id, updated_at, rec) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at, rec = EXCLUDED.rec",
                &[&conv.id, &conv.key_id, &i(conv.updated_at), &json(conv)?],
            )
            .await
            .map_err(pg_err)?;
        }
        let r = tx.commit().await.map_err(pg_err);
        self.mark(r)
    }

    async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        let c = self.client().await?;
        let r = c
            .query_opt("SELECT rec FROM tg_conversations WHERE id = $1", &[&id])
            .await
            .map_err(pg_err);
        self.mark(r)?
            .map(|row| from_json(row.get::<_, &str>(0)))
            .transpose()
    }

    async fn delete_conversation(&self, id: &str) -> StoreResult<bool> {
        self.delete_rec("tg_conversations", id).await
    }

    async fn trim_responses(&self, key_id: &str, max_bytes: u64) -> StoreResult<usize> {
        let c = self.client().await?;
        // Newest first: the newest responses that fit stay, everything older goes.
        let r = c
            .execute(
                "DELETE FROM tg_responses WHERE id IN (
                    SELECT id FROM (
                        SELECT id, (sum(size) OVER (ORDER BY created_at DESC, id DESC))::int8 AS running
                        FROM tg_responses WHERE key_id = $1
                    ) t WHERE running > $2
                 )",
                &[&key_id, &i(max_bytes)],
            )
            .await
            .map_err(pg_err);
        Ok(self.mark(r)? as usize)
    }
}

/// A trace batch as column arrays (`put_traces`).
#[derive(Default)]
struct TraceColumns<'a> {
    ts: Vec<i64>,
    rid: Vec<&'a str>,
    key: Vec<Option<&'a str>>,
    user: Vec<Option<&'a str>>,
    session: Vec<Option<&'a str>>,
    model: Vec<&'a str>,
    status: Vec<i32>,
    latency: Vec<i64>,
    rec: Vec<String>,
}

#[async_trait]
impl TraceStore for PgStore {
    async fn put_traces(&self, batch: Vec<Trace>) -> StoreResult<()> {
        // One statement for the whole batch: a row per trace, the columns as arrays.
        let mut cols = TraceColumns::default();
        for t in &batch {
            cols.ts.push(i(t.ts_ms));
            cols.rid.push(t.request_id.as_str());
            cols.key.push(t.key_id.as_deref());
            cols.user.push(t.user_id.as_deref());
            cols.session.push(t.session_id.as_deref());
            cols.model.push(t.model.as_str());
            cols.status.push(i32::from(t.status));
            cols.latency.push(i(t.timings.last_byte_ms));
            cols.rec.push(json(t)?);
        }
        let c = self.client().await?;
        let r = c
            .execute(
                "INSERT INTO tg_traces (ts_ms, request_id, key_id, user_id, session_id, model, status, latency_ms, rec)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::bigint[], $9::text[])
                 ON CONFLICT (ts_ms, request_id) DO NOTHING",
                &[
                    &cols.ts,
                    &cols.rid,
                    &cols.key,
                    &cols.user,
                    &cols.session,
                    &cols.model,
                    &cols.status,
                    &cols.latency,
                    &cols.rec,
                ],
            )
            .await
            .map_err(pg_err);
        self.mark(r).map(|_| ())
    }

    async fn query_traces(
        &self,
        f: &TraceFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<TracePage> {
        // The cursor (hex of ts_ms big-endian ++ request id, as sled's key) is the last
        // trace returned: the next page is strictly older.
        let (cts, crid) = match cursor {
            Some(c) => {
                let b = crate::ids::unhex_any(c)
                    .filter(|b| b.len() >= 8)
                    .ok_or_else(|| StoreError::Corrupt("bad cursor".into()))?;
                let ts = u64::from_be_bytes(b[..8].try_into().unwrap());
                let rid = String::from_utf8(b[8..].to_vec())
                    .map_err(|_| StoreError::Corrupt("bad cursor".into()))?;
                (Some(i(ts)), Some(rid))
            }
            None => (None, None),
        };
        let c = self.client().await?;
        let r = c
            .query(
                "SELECT rec FROM tg_traces
                 WHERE ($1::text IS NULL OR key_id = $1)
                   AND ($2::text IS NULL OR user_id = $2)
                   AND ($3::text IS NULL OR model = $3)
                   AND ($4::text IS NULL OR session_id = $4)
                   AND ($5::int IS NULL OR status = $5)
                   AND ($6::bigint IS NULL OR ts_ms >= $6)
                   AND ($7::bigint IS NULL OR ts_ms < $7)
                   AND ($8::bigint IS NULL OR latency_ms >= $8)
                   AND ($9::bigint IS NULL OR (ts_ms, request_id) < ($9, $10::text))
                 ORDER BY ts_ms DESC, request_id DESC
                 LIMIT $11",
                &[
                    &f.key_id,
                    &f.user_id,
                    &f.model,
                    &f.session_id,
                    &f.status.map(i32::from),
                    &f.from_ms.map(i),
                    &f.to_ms.map(i),
                    &f.min_latency_ms.map(i),
                    &cts,
                    &crid,
                    &((limit + 1) as i64),
                ],
            )
            .await
            .map_err(pg_err);
        let rows = self.mark(r)?;
        let mut page = TracePage::default();
        for row in rows {
            let t: Trace = from_json(row.get::<_, &str>(0))?;
            if page.traces.len() == limit {
                let last = page.traces.last().expect("limit > 0");
                let mut k = last.ts_ms.to_be_bytes().to_vec();
                k.extend_from_slice(last.request_id.as_bytes());
                page.next_cursor = Some(crate::ids::hex(&k));
                break;
            }
            page.traces.push(t);
        }
        Ok(page)
    }

    async fn get_trace(
        &self,
        request_id: &str,
        key_id: Option<&str>,
    ) -> StoreResult<Option<Trace>> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                "SELECT rec FROM tg_traces WHERE request_id = $1 AND ($2::text IS NULL OR key_id = $2)
                 ORDER BY ts_ms DESC LIMIT 1",
                &[&request_id, &key_id],
            )
            .await
            .map_err(pg_err);
        self.mark(r)?
            .map(|row| from_json(row.get::<_, &str>(0)))
            .transpose()
    }

    async fn prune_traces(&self, before_ms: u64) -> StoreResult<usize> {
        let c = self.client().await?;
        let r = c
            .execute("DELETE FROM tg_traces WHERE ts_ms < $1", &[&i(before_ms)])
            .await
            .map_err(pg_err);
        Ok(self.mark(r)? as usize)
    }
}

#[async_trait]
impl super::AlertStore for PgStore {
    async fn claim_alert(
        &self,
        a: &AlertRecord,
        owner: &str,
        lease_until_ms: u64,
    ) -> StoreResult<bool> {
        let c = self.client().await?;
        let r = c
            .execute(
                "INSERT INTO tg_alerts (id, scope, account_id, budget_id, window_start, threshold, owner, lease_until_ms, rec)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                &[
                    &a.id,
                    &a.scope.code(),
                    &a.account_id,
                    &a.budget_id.as_deref().unwrap_or(""),
                    &i(a.window_start),
                    &(a.threshold as i16),
                    &owner,
                    &i(lease_until_ms),
                    &json(a)?,
                ],
            )
            .await
            .map_err(pg_err);
        Ok(self.mark(r)? == 1)
    }

    async fn take_pending_alerts(
        &self,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> StoreResult<Vec<AlertRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "UPDATE tg_alerts SET owner = $1, lease_until_ms = $3
                 WHERE sent_at IS NULL AND (owner = $1 OR lease_until_ms < $2) RETURNING rec",
                &[&owner, &i(now_ms), &i(lease_until_ms)],
            )
            .await
            .map_err(pg_err);
        self.mark(rows)?
            .iter()
            .map(|r| from_json(r.get::<_, &str>(0)))
            .collect()
    }

    async fn update_alert(&self, a: &AlertRecord) -> StoreResult<()> {
        let c = self.client().await?;
        let r = c
            .execute(
                "UPDATE tg_alerts SET rec = $2, sent_at = $3 WHERE id = $1",
                &[&a.id, &json(a)?, &a.sent_at.map(i)],
            )
            .await
            .map_err(pg_err);
        self.mark(r).map(|_| ())
    }

    async fn load_alerts(&self) -> StoreResult<Vec<AlertRecord>> {
        self.load_recs("tg_alerts").await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn load_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.load_recs("tg_keys").await
    }

    async fn put_key(&self, rec: &KeyRecord) -> StoreResult<()> {
        self.put_rec("tg_keys", &rec.id, json(rec)?).await
    }

    async fn delete_key(&self, id: &str) -> StoreResult<bool> {
        self.delete_rec("tg_keys", id).await
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let c = self.client().await?;
        let r = c
            .query_opt("SELECT value FROM tg_meta WHERE id = $1", &[&name])
            .await
            .map_err(pg_err);
        Ok(self.mark(r)?.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    async fn put_meta(&self, name: &str, value: &[u8]) -> StoreResult<()> {
        let c = self.client().await?;
        let r = c
            .execute(
                "INSERT INTO tg_meta (id, value) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value",
                &[&name, &value],
            )
            .await
            .map_err(pg_err);
        self.mark(r).map(|_| ())
    }

    async fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> StoreResult<bool> {
        let c = self.client().await?;
        let r = c
            .execute(
                "INSERT INTO tg_meta (id, value) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&name, &value],
            )
            .await
            .map_err(pg_err);
        Ok(self.mark(r)? == 1)
    }

    async fn load_users(&self) -> StoreResult<Vec<UserRecord>> {
        self.load_recs("tg_users").await
    }

    async fn put_user(&self, us: &UserRecord) -> StoreResult<()> {
        self.put_rec("tg_users", &us.user_id, json(us)?).await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        self.delete_rec("tg_users", id).await
    }

    async fn load_budgets(&self) -> StoreResult<Vec<BudgetRecord>> {
        self.load_recs("tg_budgets").await
    }

    async fn put_budget(&self, b: &BudgetRecord) -> StoreResult<()> {
        self.put_rec("tg_budgets", &b.budget_id, json(b)?).await
    }

    async fn delete_budget(&self, id: &str) -> StoreResult<bool> {
        self.delete_rec("tg_budgets", id).await
    }

    async fn load_groups(&self, kind: GroupKind) -> StoreResult<Vec<GroupRecord>> {
        self.load_recs(group_table(kind)).await
    }

    async fn put_group(&self, kind: GroupKind, g: &GroupRecord) -> StoreResult<()> {
        self.put_rec(group_table(kind), &g.id, json(g)?).await
    }

    async fn delete_group(&self, kind: GroupKind, id: &str) -> StoreResult<bool> {
        self.delete_rec(group_table(kind), id).await
    }

    async fn load_mcp_servers(&self) -> StoreResult<Vec<McpServerRecord>> {
        self.load_recs("tg_mcp_servers").await
    }

    async fn put_mcp_server(&self, s: &McpServerRecord) -> StoreResult<()> {
        self.put_rec("tg_mcp_servers", &s.id, json(s)?).await
    }

    async fn delete_mcp_server(&self, id: &str) -> StoreResult<bool> {
        self.delete_rec("tg_mcp_servers", id).await
    }

    async fn load_prices(&self) -> StoreResult<Vec<(String, Price)>> {
        let c = self.client().await?;
        let r = c
            .query("SELECT id, rec FROM tg_prices ORDER BY id", &[])
            .await
            .map_err(pg_err);
        self.mark(r)?
            .iter()
            .map(|r| Ok((r.get::<_, String>(0), from_json(r.get::<_, &str>(1))?)))
            .collect()
    }

    async fn put_price(&self, key: &str, p: &Price) -> StoreResult<()> {
        self.put_rec("tg_prices", key, json(p)?).await
    }

    async fn delete_price(&self, key: &str) -> StoreResult<bool> {
        self.delete_rec("tg_prices", key).await
    }

    async fn append_usage(&self, batch: Vec<Settled>) -> StoreResult<Vec<Settled>> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let fresh = self.append_usage_tx(&batch).await;
        let fresh = self.mark(fresh)?;
        let mut batch: Vec<Option<Settled>> = batch.into_iter().map(Some).collect();
        Ok(fresh.into_iter().filter_map(|n| batch[n].take()).collect())
    }

    async fn load_spend(&self) -> StoreResult<Vec<SpendRow>> {
        let c = self.client().await?;
        let r = c
            .query(
                "SELECT scope, id, window_start, spent FROM tg_spend WHERE scope IN ('k', 'u', 'e', 't', 'o') AND spent > 0",
                &[],
            )
            .await
            .map_err(pg_err);
        Ok(self
            .mark(r)?
            .iter()
            .filter_map(|r| {
                Some(SpendRow {
                    scope: Scope::from_code(r.get(0))?,
                    id: r.get(1),
                    window_start: u(r.get(2)),
                    spent: u(r.get(3)),
                })
            })
            .collect())
    }

    async fn query_usage(
        &self,
        filter: &UsageFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<UsagePage> {
        let (after_ts, after_id) = match cursor {
            Some(c) => {
                let (t, id) = parse_cursor(c)?;
                (Some(i(t)), Some(id))
            }
            None => (None, None),
        };
        let c = self.client().await?;
        let from = filter.from_ms.map(i);
        let to = filter.to_ms.map(i);
        let status = filter.status.map(|s| s as i32);
        let lim = (limit as i64).saturating_add(1);
        let r = c
            .query(
                "SELECT rec FROM tg_usage WHERE
                   ($1::int8 IS NULL OR (ts_ms, id) > ($1, $2::text))
                   AND ($3::int8 IS NULL OR ts_ms >= $3) AND ($4::int8 IS NULL OR ts_ms < $4)
                   AND ($5::text IS NULL OR key_id = $5) AND ($6::text IS NULL OR user_id = $6)
                   AND ($7::text IS NULL OR model = $7) AND ($8::text IS NULL OR provider = $8)
                   AND ($9::text IS NULL OR endpoint = $9) AND ($10::text IS NULL OR session_id = $10)
                   AND ($11::int4 IS NULL OR status = $11)
                   AND ($13::text IS NULL OR end_user = $13)
                 ORDER BY ts_ms, id LIMIT $12",
                &[
                    &after_ts,
                    &after_id,
                    &from,
                    &to,
                    &filter.key_id,
                    &filter.user_id,
                    &filter.model,
                    &filter.provider,
                    &filter.endpoint,
                    &filter.session_id,
                    &status,
                    &lim,
                    &filter.end_user,
                ],
            )
            .await
            .map_err(pg_err);
        let rows = self.mark(r)?;
        let mut page = UsagePage::default();
        for row in rows {
            let rec: UsageRecord = from_json(row.get::<_, &str>(0))?;
            if page.records.len() == limit {
                let last = page.records.last().unwrap();
                page.next_cursor = Some(cursor_of(last.ts_ms, &last.id));
                break;
            }
            page.records.push(rec);
        }
        Ok(page)
    }

    async fn prune_usage(&self, before_ms: u64) -> StoreResult<usize> {
        let c = self.client().await?;
        let n = c
            .execute("DELETE FROM tg_usage WHERE ts_ms < $1", &[&i(before_ms)])
            .await
            .map_err(pg_err)?;
        let cutoff = (before_ms / 1000).saturating_sub(366 * 86_400);
        c.execute(
            "DELETE FROM tg_spend WHERE scope IN ('k', 'u', 'e', 't', 'o') AND window_start <> 0 AND window_start < $1",
            &[&i(cutoff)],
        )
        .await
        .map_err(pg_err)?;
        // Leases of holders that are gone (killed, or never came back for the window).
        c.execute(
            "DELETE FROM tg_leases WHERE expires_ms < $1",
            &[&i(crate::clock::now_millis().saturating_sub(3_600_000))],
        )
        .await
        .map_err(pg_err)?;
        // Rate windows are one minute long: an hour of them is plenty.
        c.execute(
            "DELETE FROM tg_spend WHERE scope NOT IN ('k', 'u', 'e', 't', 'o') AND window_start < $1",
            &[&i(crate::clock::now_millis().saturating_sub(3_600_000))],
        )
        .await
        .map_err(pg_err)?;
        Ok(n as usize)
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every call commits before it returns.
        Ok(())
    }

    fn healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn import_spend(&self, rows: Vec<SpendRow>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let c = self.client().await?;
        let sc: Vec<&str> = rows.iter().map(|r| r.scope.code()).collect();
        let id: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let ws: Vec<i64> = rows.iter().map(|r| i(r.window_start)).collect();
        let amt: Vec<i64> = rows.iter().map(|r| i(r.spent)).collect();
        c.execute(
            "INSERT INTO tg_spend (scope, id, window_start, spent)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
             ON CONFLICT (scope, id, window_start) DO UPDATE SET spent = EXCLUDED.spent",
            &[&sc, &id, &ws, &amt],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    fn shared(self: Arc<Self>) -> Option<Arc<dyn SharedStore>> {
        Some(self)
    }
}

#[async_trait]
impl SharedStore for PgStore {
    fn holder(&self) -> &str {
        &self.holder
    }

    async fn versions(&self) -> StoreResult<Vec<(ChangeKind, u64)>> {
        let c = self.client().await?;
        let r = c
            .query("SELECT kind, version FROM tg_versions", &[])
            .await
            .map_err(pg_err);
        Ok(self
            .mark(r)?
            .iter()
            .filter_map(|r| Some((ChangeKind::parse(r.get(0))?, u(r.get(1)))))
            .collect())
    }

    async fn lease(&self, req: &LeaseRequest) -> StoreResult<LeaseGrant> {
        let r = self.lease_tx(req).await;
        self.mark(r)
    }

    async fn renew(&self, ttl_ms: u64) -> StoreResult<Vec<RenewedLease>> {
        let c = self.client().await?;
        let r = c
            .query(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8 AS ms)
                 UPDATE tg_leases l SET expires_ms = now.ms + $2 FROM now, tg_spend s
                 WHERE l.holder = $1 AND l.expires_ms > now.ms
                   AND s.scope = l.scope AND s.id = l.id AND s.window_start = l.window_start
                 RETURNING l.scope, l.id, l.window_start, l.amount, s.spent",
                &[&self.holder, &i(ttl_ms)],
            )
            .await
            .map_err(pg_err);
        Ok(self
            .mark(r)?
            .iter()
            .map(|r| RenewedLease {
                scope: r.get(0),
                id: r.get(1),
                window_start: u(r.get(2)),
                amount: u(r.get(3)),
                spent: u(r.get(4)),
            })
            .collect())
    }

    async fn add_consumption(&self, rows: Vec<WindowCount>) -> StoreResult<Vec<WindowCount>> {
        if rows.is_empty() {
            return Ok(rows);
        }
        let mut rows = rows;
        rows.sort();
        let c = self.client().await?;
        let sc: Vec<&str> = rows.iter().map(|r| r.scope.as_str()).collect();
        let id: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let ws: Vec<i64> = rows.iter().map(|r| i(r.window_start)).collect();
        let amt: Vec<i64> = rows.iter().map(|r| i(r.count)).collect();
        let r = c
            .query(
                "INSERT INTO tg_spend (scope, id, window_start, spent)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
                 ON CONFLICT (scope, id, window_start) DO UPDATE SET spent = tg_spend.spent + EXCLUDED.spent
                 RETURNING scope, id, window_start, spent",
                &[&sc, &id, &ws, &amt],
            )
            .await
            .map_err(pg_err);
        Ok(self
            .mark(r)?
            .iter()
            .map(|r| WindowCount {
                scope: r.get(0),
                id: r.get(1),
                window_start: u(r.get(2)),
                count: u(r.get(3)),
            })
            .collect())
    }

    async fn release_all(&self) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM tg_leases WHERE holder = $1", &[&self.holder])
            .await
            .map_err(pg_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database migrated before the `end_user` column existed: its rows read back without
    /// an end user, and new rows carry theirs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_from_before_the_end_user_migration_read_fine() {
        let Some((store, settings)) = crate::store::conformance::test_postgres("eu_upgrade").await
        else {
            return;
        };
        // Back to schema version 2 (later migrations undone), with a row written the way
        // version 2 wrote it.
        let c = store.client().await.unwrap();
        c.batch_execute(
            "DROP TABLE tg_response_items; DROP TABLE tg_responses; DROP TABLE tg_conversations;
             DROP TABLE tg_traces;
             DROP INDEX tg_usage_end_user; ALTER TABLE tg_usage DROP COLUMN end_user;
             DROP TABLE tg_mcp_servers; DELETE FROM tg_versions WHERE kind = 'mcp_servers';
             DROP TABLE tg_teams; DROP TABLE tg_orgs;
             DELETE FROM tg_versions WHERE kind IN ('teams', 'orgs');
             DROP TABLE tg_alerts;
             DELETE FROM tg_schema_migrations WHERE version >= 3;
             INSERT INTO tg_usage (id, ts_ms, key_id, user_id, model, provider, endpoint, session_id, status, rec)
             VALUES ('old', 1000, 'k1', NULL, 'gpt-4o', 'openai', 'chat_completions', NULL, 200,
                     '{\"id\":\"old\",\"ts_ms\":1000,\"request_id\":\"r\",\"key_id\":\"k1\",\"endpoint\":\"chat_completions\",\"provider\":\"openai\",\"model\":\"gpt-4o\",\"upstream_model\":\"\",\"status\":200}');",
        )
        .await
        .unwrap();
        drop(c);
        assert_eq!(
            store.schema_version(&settings.schema).await.unwrap(),
            (2, MIGRATIONS.len() as i32)
        );
        assert_eq!(
            store.migrate(&settings.schema).await.unwrap(),
            (3..=MIGRATIONS.len() as i32).collect::<Vec<_>>()
        );
        let mut new = crate::store::conformance::settled("new", 2000, "k1", 1);
        new.record.end_user = Some("eu-1".into());
        store.append_usage(vec![new]).await.unwrap();
        let all = store
            .query_usage(&UsageFilter::default(), None, 10)
            .await
            .unwrap();
        let got: Vec<(&str, Option<&str>)> = all
            .records
            .iter()
            .map(|r| (r.id.as_str(), r.end_user.as_deref()))
            .collect();
        assert_eq!(got, vec![("old", None), ("new", Some("eu-1"))]);
        let only = store
            .query_usage(
                &UsageFilter {
                    end_user: Some("eu-1".into()),
                    ..Default::default()
                },
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(only.records.len(), 1);
        store.drop_schema(&settings.schema).await.unwrap();
    }
}
