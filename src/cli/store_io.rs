//! The store commands: `migrate` (PostgreSQL schema), `export` and `import` (a JSON-lines
//! dump that moves a store between sled and PostgreSQL, either way).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{load_config, runtime};
use crate::config::Config;
use crate::records::GroupKind;
use crate::store::postgres::PgStore;
use crate::store::settings::StoreConfig;
use crate::store::sled_store::SledStore;
use crate::store::{SpendRow, Store, StoreError};

/// A store other than the config's.
#[derive(clap::Args, Debug, Default)]
pub struct StoreArg {
    /// A sled data directory.
    #[arg(long, conflicts_with = "postgres")]
    sled: Option<PathBuf>,
    /// A PostgreSQL URL (the schema is the config's store.schema, or `tollgate`).
    #[arg(long)]
    postgres: Option<String>,
}

/// The config's PostgreSQL settings, or defaults around `url`.
fn pg_settings(
    cfg: Option<&Config>,
    url: Option<String>,
) -> Result<crate::store::postgres::PgSettings, String> {
    let base = cfg.and_then(|c| match &c.store {
        StoreConfig::Postgres(p) => Some(p.pg.clone()),
        StoreConfig::Sled => None,
    });
    match (base, url) {
        (Some(mut b), Some(u)) => {
            b.url = u;
            Ok(b)
        }
        (Some(b), None) => Ok(b),
        (None, Some(u)) => Ok(crate::store::postgres::PgSettings::new(&u)),
        (None, None) => Err(
            "the config's store is sled; give --postgres URL or set store.kind: postgres".into(),
        ),
    }
}

/// The store named on the command line, else the config's.
async fn open_any(config: &Path, arg: StoreArg, migrate: bool) -> Result<Arc<dyn Store>, String> {
    let cfg = load_config(config).ok();
    if let Some(dir) = arg.sled {
        return open_sled(&dir).map(|s| Arc::new(s) as Arc<dyn Store>);
    }
    if arg.postgres.is_some() {
        let pg = pg_settings(cfg.as_ref(), arg.postgres)?;
        return Ok(Arc::new(
            PgStore::open(&pg, migrate)
                .await
                .map_err(|e| e.to_string())?,
        ));
    }
    let cfg = load_config(config)?;
    open_store(&cfg, migrate).await
}

fn open_sled(dir: &Path) -> Result<SledStore, String> {
    match SledStore::open(dir) {
        Ok(s) => Ok(s),
        Err(StoreError::Locked) => Err(format!(
            "a running tollgate holds the store in {}; stop it first.",
            dir.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

pub fn migrate(config: &Path, url: Option<String>, status: bool) -> Result<(), String> {
    let cfg = load_config(config).ok();
    let pg = pg_settings(cfg.as_ref(), url)?;
    runtime()?.block_on(async move {
        let store = PgStore::new(&pg).map_err(|e| e.to_string())?;
        let (before, latest) = store
            .schema_version(&pg.schema)
            .await
            .map_err(|e| e.to_string())?;
        if status {
            println!(
                "schema {}: version {before} (this tollgate: {latest})",
                pg.schema
            );
            return Ok(());
        }
        if before > latest {
            return Err(format!(
                "schema {} is at version {before}, newer than this tollgate knows ({latest})",
                pg.schema
            ));
        }
        let applied = store.migrate(&pg.schema).await.map_err(|e| e.to_string())?;
        if applied.is_empty() {
            println!("schema {} is current (version {latest})", pg.schema);
        } else {
            println!(
                "schema {}: applied {}; now at version {latest}",
                pg.schema,
                applied
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    })
}

/// One line of an export.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Header {
        tollgate_export: u32,
    },
    Key(Box<crate::records::KeyRecord>),
    User(crate::records::UserRecord),
    Budget(crate::records::BudgetRecord),
    Price {
        model_key: String,
        price: crate::meter::price::Price,
    },
    Meta {
        name: String,
        value: String,
    },
    Spend {
        scope: crate::records::Scope,
        id: String,
        window_start: u64,
        spent: u64,
    },
    Usage(crate::records::UsageRecord),
    /// A registered MCP server, its credential included (an export holds secrets).
    McpServer(crate::records::McpServerRecord),
    Team(crate::records::GroupRecord),
    Org(crate::records::GroupRecord),
}

const META_NAMES: &[&str] = &["master_hash", "bootstrapped"];

pub fn export(config: &Path, from: StoreArg, output: Option<PathBuf>) -> Result<(), String> {
    use std::io::Write;
    runtime()?.block_on(async move {
        let store = open_any(config, from, false).await?;
        let mut out: Box<dyn Write> = match &output {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
        };
        let e = |e: StoreError| e.to_string();
        fn put_line(out: &mut dyn Write, l: &Line) -> Result<(), String> {
            serde_json::to_writer(&mut *out, l).map_err(|e| e.to_string())?;
            out.write_all(b"\n").map_err(|e| e.to_string())
        }
        let mut put = |l: &Line| put_line(&mut out, l);
        let mut counts = [0usize; 8];
        put(&Line::Header { tollgate_export: 1 })?;
        for k in store.load_keys().await.map_err(e)? {
            put(&Line::Key(Box::new(k)))?;
            counts[0] += 1;
        }
        for u in store.load_users().await.map_err(e)? {
            put(&Line::User(u))?;
            counts[1] += 1;
        }
        for b in store.load_budgets().await.map_err(e)? {
            put(&Line::Budget(b))?;
            counts[2] += 1;
        }
        for (model_key, price) in store.load_prices().await.map_err(e)? {
            put(&Line::Price { model_key, price })?;
            counts[3] += 1;
        }
        for m in store.load_mcp_servers().await.map_err(e)? {
            put(&Line::McpServer(m))?;
            counts[7] += 1;
        }
        let mut groups = 0usize;
        for t in store.load_groups(GroupKind::Team).await.map_err(e)? {
            put(&Line::Team(t))?;
            groups += 1;
        }
        for o in store.load_groups(GroupKind::Org).await.map_err(e)? {
            put(&Line::Org(o))?;
            groups += 1;
        }
        for name in META_NAMES {
            if let Some(v) = store.get_meta(name).await.map_err(e)? {
                put(&Line::Meta {
                    name: name.to_string(),
                    value: crate::ids::hex(&v),
                })?;
                counts[4] += 1;
            }
        }
        for r in store.load_spend().await.map_err(e)? {
            put(&Line::Spend {
                scope: r.scope,
                id: r.id,
                window_start: r.window_start,
                spent: r.spent,
            })?;
            counts[5] += 1;
        }
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .query_usage(&Default::default(), cursor.as_deref(), 1000)
                .await
                .map_err(e)?;
            for r in page.records {
                put(&Line::Usage(r))?;
                counts[6] += 1;
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        out.flush().map_err(|e| e.to_string())?;
        eprintln!(
            "exported {} keys, {} users, {} budgets, {} prices, {} meta, {} spend rows, {} usage records, {} MCP servers, {groups} teams and organisations",
            counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], counts[7]
        );
        Ok(())
    })
}

pub fn import(config: &Path, to: StoreArg, input: Option<PathBuf>) -> Result<(), String> {
    use std::io::BufRead;
    runtime()?.block_on(async move {
        let store = open_any(config, to, true).await?;
        let reader: Box<dyn BufRead> = match &input {
            Some(p) => Box::new(std::io::BufReader::new(
                std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?,
            )),
            None => Box::new(std::io::BufReader::new(std::io::stdin().lock())),
        };
        let e = |e: StoreError| e.to_string();
        let mut usage = Vec::new();
        let mut spend = Vec::new();
        let mut n = 0usize;
        let mut header = false;
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| e.to_string())?;
            if line.trim().is_empty() {
                continue;
            }
            let l: Line =
                serde_json::from_str(&line).map_err(|err| format!("line {}: {err}", i + 1))?;
            n += 1;
            match l {
                Line::Header { tollgate_export } => {
                    if tollgate_export != 1 {
                        return Err(format!("export version {tollgate_export} is not supported"));
                    }
                    header = true;
                }
                _ if !header => return Err("not a tollgate export (no header line)".into()),
                Line::Key(k) => store.put_key(&k).await.map_err(e)?,
                Line::User(u) => store.put_user(&u).await.map_err(e)?,
                Line::Budget(b) => store.put_budget(&b).await.map_err(e)?,
                Line::McpServer(m) => store.put_mcp_server(&m).await.map_err(e)?,
                Line::Team(t) => store.put_group(GroupKind::Team, &t).await.map_err(e)?,
                Line::Org(o) => store.put_group(GroupKind::Org, &o).await.map_err(e)?,
                Line::Price { model_key, price } => {
                    store.put_price(&model_key, &price).await.map_err(e)?
                }
                Line::Meta { name, value } => {
                    let v = crate::ids::unhex_any(&value)
                        .ok_or_else(|| format!("line {}: bad meta value", i + 1))?;
                    store.put_meta(&name, &v).await.map_err(e)?
                }
                Line::Spend {
                    scope,
                    id,
                    window_start,
                    spent,
                } => spend.push(SpendRow {
                    scope,
                    id,
                    window_start,
                    spent,
                }),
                Line::Usage(r) => {
                    usage.push(crate::records::Settled {
                        record: r,
                        charges: vec![],
                    });
                    if usage.len() >= 1000 {
                        store
                            .append_usage(std::mem::take(&mut usage))
                            .await
                            .map_err(e)?;
                    }
                }
            }
        }
        store.append_usage(usage).await.map_err(e)?;
        store.import_spend(spend).await.map_err(e)?;
        store.flush().await.map_err(e)?;
        eprintln!("imported {n} lines");
        Ok(())
    })
}

/// The config's store: sled under data_dir, or PostgreSQL (whose schema must be current).
async fn open_store(cfg: &Config, migrate: bool) -> Result<Arc<dyn Store>, String> {
    if let StoreConfig::Postgres(pg) = &cfg.store {
        return Ok(Arc::new(
            PgStore::open(&pg.pg, migrate)
                .await
                .map_err(|e| e.to_string())?,
        ));
    }
    open_sled(&cfg.data_dir).map(|s| Arc::new(s) as Arc<dyn Store>)
}
