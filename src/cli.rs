//! The command line: `serve`, `check-config` and `keys`.

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

use crate::auth::KeyRecord;
use crate::config::Config;
use crate::server::{self, ProcessOpts};
use crate::store::sled_store::SledStore;
use crate::store::{snapshot, Store, StoreError};

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
    }
}

fn open_store(cfg: &Config) -> Result<SledStore, String> {
    match SledStore::open(&cfg.data_dir) {
        Ok(s) => Ok(s),
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
        let store = open_store(&cfg)?;
        let mut rows: std::collections::BTreeMap<
            (String, String),
            crate::admin::usage_totals::Totals,
        > = Default::default();
        let mut total = crate::admin::usage_totals::Totals::default();
        crate::admin::usage_totals::scan(&store, &filter, |r| {
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
        let store = match SledStore::open(&cfg.data_dir) {
            Ok(s) => s,
            Err(StoreError::Locked) => {
                return Err(format!(
                    "a running tollgate holds the store in {}. Use the management API instead, e.g.\n  curl -X POST http://{}/v1/keys -H \"authorization: Bearer $TOLLGATE_MASTER_KEY\" -d '{{\"name\":\"me\"}}'",
                    cfg.data_dir.display(),
                    cfg.listen
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
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
