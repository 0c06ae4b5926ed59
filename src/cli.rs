//! The command line: `serve`, `check-config`, `usage`, `keys`, and for the store:
//! `migrate` (PostgreSQL schema), `export` and `import` (a JSON-lines dump that moves a
//! store between sled and PostgreSQL, either way).

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

use crate::auth::KeyRecord;
use crate::config::Config;
use crate::server::{self, ProcessOpts};
use crate::store::postgres::PgStore;
use crate::store::settings::StoreConfig;
use crate::store::sled_store::SledStore;
use crate::store::{snapshot, Store, StoreError};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "An LLM gateway on Cloudflare Pingora"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the gateway.
    Serve {
        /// tollgate's configuration file.
        #[arg(long, default_value = "proxy.yaml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        /// A Pingora server YAML (threads, pid_file, upgrade_sock, grace periods).
        #[arg(short = 'c', long = "conf")]
        pingora_conf: Option<PathBuf>,
        /// Take over the sockets of a running tollgate (graceful upgrade).
        #[arg(short, long)]
        upgrade: bool,
        /// Run in the background.
        #[arg(short, long)]
        daemon: bool,
        /// Test the configuration and exit.
        #[arg(short, long)]
        test: bool,
    },
    /// Validate a configuration file and print what it resolves to.
    CheckConfig {
        #[arg(default_value = "proxy.yaml")]
        file: PathBuf,
    },
    /// Print spend and tokens per key and model for a period (reads the store; stop
    /// tollgate first, or use GET /v1/usage?group_by=key while it runs).
    Usage {
        #[arg(long, default_value = "proxy.yaml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        /// Start (2026-11-01, RFC 3339 or Unix seconds); default: 30 days ago.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive); default: now.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
    },
    /// Manage virtual keys in the store (while tollgate is stopped; use the API while it runs).
    Keys {
        #[arg(
            long,
            default_value = "proxy.yaml",
            env = "TOLLGATE_CONFIG",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        action: KeysCmd,
    },
    /// Create or upgrade the PostgreSQL schema (versioned migrations; safe to run again and
    /// from several hosts at once).
    Migrate {
        #[arg(long, default_value = "proxy.yaml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        /// A PostgreSQL URL instead of the config's store.url.
        #[arg(long)]
        postgres: Option<String>,
        /// Only print the schema version.
        #[arg(long)]
        status: bool,
    },
    /// Write the whole store (keys, users, budgets, prices, spend, usage) as JSON lines.
    Export {
        #[arg(long, default_value = "proxy.yaml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        from: StoreArg,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Load an export into the store. Idempotent: usage records are keyed by id and
    /// spend rows are set, so importing twice changes nothing.
    Import {
        #[arg(long, default_value = "proxy.yaml", env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        to: StoreArg,
        /// Input file (default: standard input).
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
}

/// A store other than the config's.
#[derive(clap::Args, Debug, Default)]
struct StoreArg {
    /// A sled data directory.
    #[arg(long, conflicts_with = "postgres")]
    sled: Option<PathBuf>,
    /// A PostgreSQL URL (the schema is the config's store.schema, or `tollgate`).
    #[arg(long)]
    postgres: Option<String>,
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Create a key and print it (shown once).
    Create {
        #[arg(long)]
        name: Option<String>,
        /// Expiry as a Unix timestamp in seconds.
        #[arg(long)]
        expires_at: Option<u64>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke (delete) a key by id.
    Revoke { id: String },
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

fn load_config(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    match cli.cmd {
        Cmd::Serve {
            config,
            pingora_conf,
            upgrade,
            daemon,
            test,
        } => {
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tollgate: {e}");
                    return 2;
                }
            };
            server::run(
                cfg,
                ProcessOpts {
                    upgrade,
                    daemon,
                    test,
                    pingora_conf,
                },
            )
        }
        Cmd::CheckConfig { file } => match load_config(&file) {
            Ok(cfg) => {
                println!("{}: OK", file.display());
                println!("  listen: {}", cfg.listen);
                println!("  data_dir: {}", cfg.data_dir.display());
                match &cfg.store {
                    StoreConfig::Sled => println!("  store: sled under data_dir"),
                    StoreConfig::Postgres(p) => println!(
                        "  store: postgres {} schema {} (pool {}, lease ttl {} ms, on outage: {:?})",
                        crate::store::postgres::redact_url(&p.pg.url),
                        p.pg.schema,
                        p.pg.pool_size,
                        p.leases.ttl.as_millis(),
                        p.leases.on_outage
                    ),
                }
                println!("  max_body_bytes: {}", cfg.max_body_bytes);
                for p in cfg.providers.values() {
                    println!(
                        "  provider {}: {} {}://{}:{}{}{}{}",
                        p.name,
                        p.kind.as_str(),
                        if p.tls { "https" } else { "http" },
                        p.host,
                        p.port,
                        p.base_path,
                        if p.api_key.is_some() {
                            " (key set)"
                        } else {
                            " (no key)"
                        },
                        if p.from_preset { " [preset]" } else { "" }
                    );
                }
                for (a, t) in &cfg.aliases {
                    println!("  alias {a} -> {t}");
                }
                0
            }
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        Cmd::Usage {
            config,
            from,
            to,
            key_id,
            user_id,
        } => match usage(&config, from, to, key_id, user_id) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tollgate usage: {e}");
                1
            }
        },
        Cmd::Keys { config, action } => match keys(&config, action) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tollgate keys: {e}");
                1
            }
        },
        Cmd::Migrate {
            config,
            postgres,
            status,
        } => match migrate(&config, postgres, status) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tollgate migrate: {e}");
                1
            }
        },
        Cmd::Export {
            config,
            from,
            output,
        } => match export(&config, from, output) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tollgate export: {e}");
                1
            }
        },
        Cmd::Import { config, to, input } => match import(&config, to, input) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tollgate import: {e}");
                1
            }
        },
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
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
            "a running tollgate holds the store in {}. Stop it first, or use the management API.",
            dir.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn migrate(config: &Path, url: Option<String>, status: bool) -> Result<(), String> {
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
    Key(crate::auth::KeyRecord),
    User(crate::ledger::entities::UserRecord),
    Budget(crate::ledger::entities::BudgetRecord),
    Price {
        model_key: String,
        price: crate::meter::price::Price,
    },
    Meta {
        name: String,
        value: String,
    },
    Spend {
        scope: crate::ledger::budget::Scope,
        id: String,
        window_start: u64,
        spent: u64,
    },
    Usage(crate::meter::record::UsageRecord),
}

const META_NAMES: &[&str] = &["master_hash", "bootstrapped"];

fn export(config: &Path, from: StoreArg, output: Option<PathBuf>) -> Result<(), String> {
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
        let mut counts = [0usize; 7];
        put(&Line::Header { tollgate_export: 1 })?;
        for k in store.load_keys().await.map_err(e)? {
            put(&Line::Key(k))?;
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
        for name in META_NAMES {
            if let Some(v) = store.get_meta(name).await.map_err(e)? {
                put(&Line::Meta {
                    name: name.to_string(),
                    value: crate::auth::hex(&v),
                })?;
                counts[4] += 1;
            }
        }
        for (scope, id, window_start, spent) in store.load_spend().await.map_err(e)? {
            put(&Line::Spend {
                scope,
                id,
                window_start,
                spent,
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
            "exported {} keys, {} users, {} budgets, {} prices, {} meta, {} spend rows, {} usage records",
            counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6]
        );
        Ok(())
    })
}

fn import(config: &Path, to: StoreArg, input: Option<PathBuf>) -> Result<(), String> {
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
                Line::Price { model_key, price } => {
                    store.put_price(&model_key, &price).await.map_err(e)?
                }
                Line::Meta { name, value } => {
                    let v = crate::auth::unhex_any(&value)
                        .ok_or_else(|| format!("line {}: bad meta value", i + 1))?;
                    store.put_meta(&name, &v).await.map_err(e)?
                }
                Line::Spend {
                    scope,
                    id,
                    window_start,
                    spent,
                } => spend.push((scope, id, window_start, spent)),
                Line::Usage(r) => {
                    usage.push(crate::ledger::Settled {
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
    match SledStore::open(&cfg.data_dir) {
        Ok(s) => Ok(Arc::new(s)),
        Err(StoreError::Locked) => Err(format!(
            "a running tollgate holds the store in {}. Use the management API instead (see README: Keys, budgets and usage).",
            cfg.data_dir.display()
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn usage(
    config: &Path,
    from: Option<String>,
    to: Option<String>,
    key_id: Option<String>,
    user_id: Option<String>,
) -> Result<(), String> {
    use crate::ledger::period::parse_time;
    let cfg = load_config(config)?;
    let now = crate::auth::now_secs();
    let t = |v: Option<String>, def: u64| -> Result<u64, String> {
        match v {
            None => Ok(def),
            Some(s) => parse_time(&s)
                .ok_or_else(|| format!("'{s}' is not a date, RFC 3339 time or Unix seconds")),
        }
    };
    let filter = crate::store::UsageFilter {
        key_id,
        user_id,
        from_ms: Some(t(from, now.saturating_sub(30 * 86_400))? * 1000),
        to_ms: Some(t(to, now + 1)? * 1000),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let store = open_store(&cfg, false).await?;
        let mut rows: std::collections::BTreeMap<
            (String, String),
            crate::admin::usage_totals::Totals,
        > = Default::default();
        let mut total = crate::admin::usage_totals::Totals::default();
        crate::admin::usage_totals::scan(store.as_ref(), &filter, |r| {
            rows.entry((
                r.key_id.clone().unwrap_or_else(|| "-".into()),
                r.model.clone(),
            ))
            .or_default()
            .add(&r);
            total.add(&r);
        })
        .await
        .map_err(|e| e.message)?;
        let from = crate::ledger::period::rfc3339(filter.from_ms.unwrap_or(0) / 1000);
        let to = crate::ledger::period::rfc3339(filter.to_ms.unwrap_or(0) / 1000);
        println!("usage from {from} to {to}\n");
        println!(
            "{:<24} {:<32} {:>9} {:>12} {:>12} {:>12} {:>12}",
            "key", "model", "requests", "prompt", "completion", "cached", "cost USD"
        );
        let line = |k: &str, m: &str, t: &crate::admin::usage_totals::Totals| {
            println!(
                "{:<24} {:<32} {:>9} {:>12} {:>12} {:>12} {:>12}",
                k,
                m,
                t.requests,
                t.prompt_tokens,
                t.completion_tokens,
                t.cached_tokens,
                crate::meter::price::format_usd(t.cost_micros)
            )
        };
        for ((k, m), t) in &rows {
            line(k, m, t);
        }
        line("TOTAL", "", &total);
        Ok(())
    })
}

fn keys(config: &Path, action: KeysCmd) -> Result<(), String> {
    let cfg = load_config(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let store: Arc<dyn Store> = match &cfg.store {
            StoreConfig::Postgres(_) => open_store(&cfg, false).await?,
            StoreConfig::Sled => match SledStore::open(&cfg.data_dir) {
            Ok(s) => Arc::new(s),
            Err(StoreError::Locked) => {
                return Err(format!(
                    "a running tollgate holds the store in {}. Use the management API instead, e.g.\n  curl -X POST http://{}/v1/keys -H \"authorization: Bearer $TOLLGATE_MASTER_KEY\" -d '{{\"name\":\"me\"}}'",
                    cfg.data_dir.display(),
                    cfg.listen
                ))
            }
            Err(e) => return Err(e.to_string()),
        }};
        let index = crate::auth::KeyIndex::new();
        index.replace(store.load_keys().await.map_err(|e| e.to_string())?);
        match action {
            KeysCmd::Create { name, expires_at } => {
                let (rec, secret) = KeyRecord::mint(name, expires_at, serde_json::json!({}));
                store.put_key(&rec).await.map_err(|e| e.to_string())?;
                index.upsert(rec.clone());
                println!("created key {} ({})", rec.id, rec.name.as_deref().unwrap_or("unnamed"));
                println!("{secret}");
            }
            KeysCmd::List => {
                println!("{:<24} {:<20} {:<12} {:<8} created", "id", "name", "prefix", "active");
                for k in index.all() {
                    println!(
                        "{:<24} {:<20} {:<12} {:<8} {}",
                        k.id,
                        k.name.as_deref().unwrap_or("-"),
                        k.prefix,
                        k.active,
                        k.created_at
                    );
                }
            }
            KeysCmd::Revoke { id } => {
                if !store.delete_key(&id).await.map_err(|e| e.to_string())? {
                    return Err(format!("no key with id '{id}'"));
                }
                index.remove(&id);
                println!("revoked {id}");
            }
        }
        // Keep the snapshot in step, without dropping a stored master key hash.
        if let Some(h) = store
            .get_meta("master_hash")
            .await
            .map_err(|e| e.to_string())?
            .and_then(|v| crate::auth::unhex(std::str::from_utf8(&v).ok()?))
        {
            index.set_master(Some(h));
        }
        store.flush().await.map_err(|e| e.to_string())?;
        snapshot::write(&cfg.data_dir, &index, None).map_err(|e| e.to_string())?;
        Ok(())
    })
}
