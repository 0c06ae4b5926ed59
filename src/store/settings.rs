//! The `store:` section of the configuration.
//!
//! ```yaml
//! store:
//!   kind: postgres                 # sled (the default: embedded, one instance) or postgres
//!   url: postgres://tollgate:${PGPASSWORD}@db.internal:5432/tollgate?sslmode=require
//!   schema: tollgate               # tables live here (created by `tollgate migrate`)
//!   pool_size: 16
//!   connect_timeout_ms: 3000       # also the pool's wait timeout
//!   statement_timeout_ms: 5000
//!   tls: require                   # disable | prefer | require (overrides sslmode)
//!   ca_file: /etc/tollgate/db-ca.pem
//!   auto_migrate: true             # apply missing migrations at start
//!   lease_ttl_ms: 10000            # a dead instance's leases return after this
//!   lease_fraction: 0.1            # share of the free budget one lease call takes
//!   lease_idle_ms: 2000            # idle leases give back what they do not need
//!   sync_interval_ms: 200          # change polling and rate-consumption reports
//!   on_outage: serve_from_cache    # or fail_closed
//!   max_stale_secs: 300            # serve_from_cache: refuse after this long without the db
//! ```

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use super::postgres::{PgSettings, TlsMode};
use crate::config::ConfigError;

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub schema: Option<String>,
    pub pool_size: Option<usize>,
    pub connect_timeout_ms: Option<u64>,
    pub statement_timeout_ms: Option<u64>,
    pub tls: Option<TlsMode>,
    pub ca_file: Option<PathBuf>,
    pub auto_migrate: Option<bool>,
    pub lease_ttl_ms: Option<u64>,
    pub lease_fraction: Option<f64>,
    pub lease_idle_ms: Option<u64>,
    pub sync_interval_ms: Option<u64>,
    pub on_outage: Option<OutageMode>,
    pub max_stale_secs: Option<u64>,
}

/// Which store this process uses.
#[derive(Debug, Clone, Default)]
pub enum StoreConfig {
    /// sled under `data_dir` (one instance).
    #[default]
    Sled,
    Postgres(Box<PgConfig>),
}

#[derive(Debug, Clone)]
pub struct PgConfig {
    pub pg: PgSettings,
    pub auto_migrate: bool,
    pub leases: LeaseSettings,
    pub sync_interval: Duration,
}

impl StoreConfig {
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreConfig::Postgres(_))
    }
}

/// What a database outage does to admission (`store.on_outage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageMode {
    /// Keep serving from cached keys; budgets and rate limits spend only the leases held
    /// (until they expire), and unlimited keys are served for `max_stale_secs` at most.
    /// Usage is spooled to disk and written when the database is back.
    #[default]
    ServeFromCache,
    /// Refuse every inference request with 503 while the database is unreachable.
    FailClosed,
}

/// Lease settings (from `store:`).
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    pub ttl: Duration,
    /// Share of what is free that one lease call takes beyond what it needs.
    pub fraction: f64,
    /// A lease unused for this long gives back what it does not need.
    pub idle: Duration,
    pub on_outage: OutageMode,
    pub max_stale: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            ttl: Duration::from_secs(10),
            fraction: 0.1,
            idle: Duration::from_secs(2),
            on_outage: OutageMode::ServeFromCache,
            max_stale: Duration::from_secs(300),
        }
    }
}

fn range(v: Option<u64>, def: u64, lo: u64, hi: u64, field: &str) -> Result<u64, ConfigError> {
    match v {
        None => Ok(def),
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(n) => Err(ConfigError::new(
            format!("store.{field}"),
            format!("must be between {lo} and {hi}, got {n}"),
        )),
    }
}

/// Validates `store:`.
pub fn build(raw: Option<RawStore>) -> Result<StoreConfig, ConfigError> {
    let Some(r) = raw else {
        return Ok(StoreConfig::Sled);
    };
    match r.kind.as_deref().unwrap_or("sled") {
        "sled" => {
            if r.url.is_some() {
                return Err(ConfigError::new(
                    "store.url",
                    "only a postgres store has a url (set kind: postgres)",
                ));
            }
            Ok(StoreConfig::Sled)
        }
        "postgres" | "postgresql" => {
            let url = r.url.filter(|u| !u.trim().is_empty()).ok_or_else(|| {
                ConfigError::new(
                    "store.url",
                    "is required for kind: postgres (postgres://user:password@host:5432/db)",
                )
            })?;
            if let Err(e) = url.parse::<tokio_postgres::Config>() {
                return Err(ConfigError::new("store.url", format!("is not valid: {e}")));
            }
            let mut pg = PgSettings::new(&url);
            if let Some(s) = r.schema {
                pg.schema = s;
            }
            if !pg
                .schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                || pg.schema.is_empty()
                || pg.schema.len() > 63
                || pg.schema.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(ConfigError::new(
                    "store.schema",
                    "must be 1-63 lowercase letters, digits or _, not starting with a digit",
                ));
            }
            pg.pool_size = range(r.pool_size.map(|n| n as u64), 16, 1, 1024, "pool_size")? as usize;
            pg.connect_timeout = Duration::from_millis(range(
                r.connect_timeout_ms,
                3000,
                100,
                600_000,
                "connect_timeout_ms",
            )?);
            pg.statement_timeout = Duration::from_millis(range(
                r.statement_timeout_ms,
                5000,
                100,
                3_600_000,
                "statement_timeout_ms",
            )?);
            pg.tls = r.tls;
            if let Some(ca) = &r.ca_file {
                if !ca.is_file() {
                    return Err(ConfigError::new(
                        "store.ca_file",
                        format!("{} is not a readable file", ca.display()),
                    ));
                }
            }
            pg.ca_file = r.ca_file;
            let ttl = range(r.lease_ttl_ms, 10_000, 1000, 3_600_000, "lease_ttl_ms")?;
            let fraction = r.lease_fraction.unwrap_or(0.1);
            if !(0.0..=1.0).contains(&fraction) {
                return Err(ConfigError::new(
                    "store.lease_fraction",
                    "must be between 0 and 1",
                ));
            }
            let sync = range(r.sync_interval_ms, 200, 20, 10_000, "sync_interval_ms")?;
            if sync * 3 > ttl {
                return Err(ConfigError::new(
                    "store.sync_interval_ms",
                    "must be at most a third of lease_ttl_ms (leases are renewed in between)",
                ));
            }
            Ok(StoreConfig::Postgres(Box::new(PgConfig {
                pg,
                auto_migrate: r.auto_migrate.unwrap_or(true),
                leases: LeaseSettings {
                    ttl: Duration::from_millis(ttl),
                    fraction,
                    idle: Duration::from_millis(range(
                        r.lease_idle_ms,
                        2000,
                        0,
                        3_600_000,
                        "lease_idle_ms",
                    )?),
                    on_outage: r.on_outage.unwrap_or_default(),
                    max_stale: Duration::from_secs(range(
                        r.max_stale_secs,
                        300,
                        0,
                        30 * 86_400,
                        "max_stale_secs",
                    )?),
                },
                sync_interval: Duration::from_millis(sync),
            })))
        }
        other => Err(ConfigError::new(
            "store.kind",
            format!("'{other}' is not a store kind: use sled or postgres"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert!(matches!(build(None).unwrap(), StoreConfig::Sled));
        let pg = build(Some(RawStore {
            kind: Some("postgres".into()),
            url: Some("postgres://u:p@127.0.0.1:5432/db".into()),
            ..Default::default()
        }))
        .unwrap();
        let StoreConfig::Postgres(p) = pg else {
            panic!("postgres")
        };
        assert_eq!(p.pg.schema, "tollgate");
        assert_eq!(p.leases.ttl, Duration::from_secs(10));
        let e = build(Some(RawStore {
            kind: Some("postgres".into()),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(e.field, "store.url");
        let e = build(Some(RawStore {
            kind: Some("redis".into()),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(e.field, "store.kind");
        let e = build(Some(RawStore {
            kind: Some("postgres".into()),
            url: Some("postgres://h/db".into()),
            schema: Some("Bad-Name".into()),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(e.field, "store.schema");
    }
}
