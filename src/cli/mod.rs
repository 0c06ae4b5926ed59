//! The command line. `serve` and `check-config` run and check the gateway; `keys`, `users`,
//! `teams`, `orgs`, `budgets`, `pricing`, `mcp-servers` and `usage` are clients of the running gateway's management API (or,
//! when no gateway runs, work on its store directly); `migrate`, `export` and `import` work on
//! a store.

mod admins;
mod api;
mod budgets;
mod check;
mod client;
mod fields;
mod groups;
mod keys;
mod mcp_servers;
mod offline;
mod pricing;
mod render;
mod store_io;
mod target;
mod usage;
mod users;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::server::{self, ProcessOpts};
use store_io::StoreArg;
use target::Conn;

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
    /// Manage virtual keys (create, list, show, rotate, revoke, update).
    Keys {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: keys::KeysCmd,
    },
    /// Manage users and their limits.
    Users {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: users::UsersCmd,
    },
    /// Manage teams (users and service keys under shared budgets and limits).
    Teams {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: groups::GroupsCmd,
    },
    /// Manage organisations (teams under shared budgets and limits).
    Orgs {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: groups::GroupsCmd,
    },
    /// Manage named budgets shared by keys and users.
    Budgets {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: budgets::BudgetsCmd,
    },
    /// Manage the MCP servers registered in tollgate (served to keys at /mcp).
    McpServers {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: mcp_servers::McpServersCmd,
    },
    /// Read and set model prices.
    Pricing {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: pricing::PricingCmd,
    },
    /// The web console's named admins (an alternative to sharing the master key).
    Admins {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: admins::AdminsCmd,
    },
    /// Spend and tokens for a period: totals per key (or --group-by), or --records.
    Usage {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        args: usage::UsageArgs,
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
    /// Write the whole store (keys, users, budgets, prices, MCP servers, spend, usage) as JSON lines.
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

/// A management command, run against the gateway or the store.
enum Manage {
    Keys(keys::KeysCmd),
    Users(users::UsersCmd),
    Groups(crate::records::GroupKind, groups::GroupsCmd),
    Budgets(budgets::BudgetsCmd),
    Pricing(pricing::PricingCmd),
    McpServers(mcp_servers::McpServersCmd),
    Usage(usage::UsageArgs),
    Admins(admins::AdminsCmd),
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

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Prints a failure as one line on standard error; the exit code.
fn done(what: &str, r: Result<(), String>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tollgate {what}: {e}");
            1
        }
    }
}

fn manage(conn: Conn, cmd: Manage) -> i32 {
    let r = (|| {
        let target = target::resolve(&conn)?;
        let mut api = api::Api::new(target);
        runtime()?.block_on(async {
            match cmd {
                Manage::Keys(c) => keys::run(&mut api, c, conn.json).await,
                Manage::Users(c) => users::run(&mut api, c, conn.json).await,
                Manage::Groups(k, c) => groups::run(&mut api, k, c, conn.json).await,
                Manage::Budgets(c) => budgets::run(&mut api, c, conn.json).await,
                Manage::Pricing(c) => pricing::run(&mut api, c, conn.json).await,
                Manage::McpServers(c) => mcp_servers::run(&mut api, c, conn.json).await,
                Manage::Usage(a) => usage::run(&mut api, a, conn.json).await,
                Manage::Admins(c) => admins::run(&mut api, c, conn.json).await,
            }
        })
    })();
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
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
        Cmd::CheckConfig { file } => check::run(&file),
        Cmd::Keys { conn, action } => manage(conn, Manage::Keys(action)),
        Cmd::Users { conn, action } => manage(conn, Manage::Users(action)),
        Cmd::Teams { conn, action } => manage(
            conn,
            Manage::Groups(crate::records::GroupKind::Team, action),
        ),
        Cmd::Orgs { conn, action } => {
            manage(conn, Manage::Groups(crate::records::GroupKind::Org, action))
        }
        Cmd::Budgets { conn, action } => manage(conn, Manage::Budgets(action)),
        Cmd::Pricing { conn, action } => manage(conn, Manage::Pricing(action)),
        Cmd::McpServers { conn, action } => manage(conn, Manage::McpServers(action)),
        Cmd::Usage { conn, args } => manage(conn, Manage::Usage(args)),
        Cmd::Admins { conn, action } => manage(conn, Manage::Admins(action)),
        Cmd::Migrate {
            config,
            postgres,
            status,
        } => done("migrate", store_io::migrate(&config, postgres, status)),
        Cmd::Export {
            config,
            from,
            output,
        } => done("export", store_io::export(&config, from, output)),
        Cmd::Import { config, to, input } => done("import", store_io::import(&config, to, input)),
    }
}
