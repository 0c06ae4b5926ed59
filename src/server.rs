//! Pingora bootstrap: the server configuration, the proxy service and the store keeper.

use pingora::connectors::ConnectorOptions;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::services::background::background_service;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, KeyIndex};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::ledger::Ledger;
use crate::route::Router;
use crate::services::keeper::StoreKeeper;
use crate::services::snapshot;
use crate::services::writer::UsageWriter;
use crate::state::State;
use crate::store::StoreSlot;

/// Pingora's process options, as given on tollgate's command line.
#[derive(Debug, Default, Clone)]
pub struct ProcessOpts {
    /// Take over the listening sockets of a running tollgate (graceful upgrade).
    pub upgrade: bool,
    pub daemon: bool,
    /// Test the configuration and exit.
    pub test: bool,
    /// A Pingora server YAML (threads, pid_file, upgrade_sock, grace periods, ...).
    pub pingora_conf: Option<PathBuf>,
}

/// The Pingora server configuration: the given file, or defaults tuned for tollgate with
/// the pid file and upgrade socket beside the data (so two instances never collide).
pub fn server_conf(
    cfg: &Config,
    opts: &ProcessOpts,
    data_dir: &Path,
) -> Result<ServerConf, String> {
    let file = opts.pingora_conf.as_ref().or(cfg.pingora_conf.as_ref());
    let mut conf = match file {
        Some(path) => ServerConf::load_from_yaml(path.display().to_string())
            .map_err(|e| format!("pingora conf {}: {e}", path.display()))?,
        None => {
            let mut c = ServerConf {
                threads: cfg.threads,
                grace_period_seconds: Some(cfg.grace_period_seconds),
                graceful_shutdown_timeout_seconds: Some(cfg.graceful_shutdown_timeout_seconds),
                upgrade_sock: data_dir.join("upgrade.sock").display().to_string(),
                pid_file: data_dir.join("tollgate.pid").display().to_string(),
                ..Default::default()
            };
            // Only idempotent failures are retried by Pingora; a refused connection to the
            // one provider address is not worth 16 attempts.
            c.max_retries = 2;
            c
        }
    };
    conf.daemon |= opts.daemon;
    if let Some(ca) = &cfg.ca_file {
        conf.ca_file = Some(ca.display().to_string());
    }
    Ok(conf)
}

/// Starts the gateway; never returns.
pub fn run(cfg: Config, opts: ProcessOpts) -> ! {
    if let Err(e) = std::fs::create_dir_all(&cfg.data_dir) {
        eprintln!(
            "tollgate: cannot create data_dir {}: {e}",
            cfg.data_dir.display()
        );
        std::process::exit(2);
    }
    // A listen address that cannot be bound is fatal: say so and exit, instead of Pingora's
    // retries and a panicking service thread in a process that stays up serving nothing.
    // (An upgrade takes the old process's sockets, so the address is in use by design.)
    if !opts.upgrade && !opts.test {
        if let Err(e) = std::net::TcpListener::bind(&cfg.listen) {
            eprintln!("tollgate: {}", bind_failure(&cfg.listen, &e));
            std::process::exit(1);
        }
    }
    let data_dir = std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
    let conf = match server_conf(&cfg, &opts, &data_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tollgate: {e}");
            std::process::exit(2);
        }
    };
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        test: opts.test,
        nocapture: false,
        conf: None,
    };
    // The drain (see `drain`) decides when the process ends after a stop signal; Pingora's
    // own grace period (a fixed sleep) only backs it up.
    let grace = Duration::from_secs(conf.grace_period_seconds.unwrap_or(300));
    let close_timeout = Duration::from_secs(conf.graceful_shutdown_timeout_seconds.unwrap_or(5));
    let mut conf = conf;
    conf.grace_period_seconds = Some(grace.as_secs() + 2 * close_timeout.as_secs() + 2);
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    crate::metrics::init();
    if let Some(a) = &cfg.access_log {
        if let Err(e) = crate::access::sink::install(a) {
            eprintln!("tollgate: cannot open the access log: {e}");
            std::process::exit(2);
        }
    }

    // Authenticate from the first connection: the last snapshot of the key index, then the
    // store (once this process holds it) replaces it.
    let keys = Arc::new(KeyIndex::new());
    if let Some(mk) = &cfg.master_key {
        keys.set_master(Some(auth::hash_key(mk)));
    }
    let ledger = Arc::new(Ledger::from_config(&cfg));
    let snapshot_loaded = match snapshot::load(&data_dir, &keys, Some(&ledger)) {
        Ok(found) => found,
        Err(e) => {
            log::warn!("ignoring an unreadable key snapshot: {e}");
            false
        }
    };
    let mut cfg = cfg;
    cfg.data_dir = data_dir.clone();
    let store = Arc::new(StoreSlot::default());
    let connector = crate::gateway::upstream::UpstreamPool::new(Some(
        ConnectorOptions::from_server_conf(&server.configuration),
    ));
    let inflight = crate::gateway::limits::InFlight::new(&cfg.limits);
    crate::gateway::limits::init_metrics();
    let mut secrets: Vec<String> = cfg
        .providers
        .values()
        .filter_map(|p| p.api_key.clone())
        .collect();
    secrets.extend(cfg.master_key.clone());
    crate::gateway::limits::install_panic_hook(secrets);
    let mut router = Router::new(&cfg);
    // Model discovery: off means no background work at all.
    if cfg.model_discovery.enabled && !cfg.providers.is_empty() {
        let discovery = Arc::new(crate::discovery::Discovery::new(
            cfg.model_discovery,
            router.providers().cloned().collect::<Vec<_>>(),
            Some(ConnectorOptions::from_server_conf(&server.configuration)),
        ));
        router.set_discovery(discovery.clone());
        server.add_service(background_service(
            "model discovery",
            crate::discovery::DiscoveryService(discovery),
        ));
    }
    let state_inflight = inflight.clone();
    let responses = Arc::new(crate::responses::Responses::new(
        cfg.responses.clone(),
        store.clone(),
    ));
    let mcp = Arc::new(crate::mcp::Mcp::new(&cfg.mcp));
    let state = Arc::new(State {
        responses: responses.clone(),
        inflight,
        router,
        retry_budget: crate::balance::budget::RetryBudget::new(
            cfg.failover.policy.retry_budget_percent,
            cfg.failover.policy.retry_budget_min_per_second,
        ),
        keys: keys.clone(),
        store: store.clone(),
        resolver: Default::default(),
        connector,
        ledger: ledger.clone(),
        snapshot_loaded: AtomicBool::new(snapshot_loaded),
        tools: crate::tools::Tools::new(&cfg.tools),
        guardrails: crate::guardrails::Guardrails::new(cfg.guardrails.clone()),
        console: if cfg.ui.enabled {
            crate::ui::Console::new(&cfg)
        } else {
            crate::ui::Console::in_memory(&cfg)
        },
        mcp: mcp.clone(),
        cfg: cfg.clone(),
    });

    // Pingora's HTTP proxy app, behind the slow-client guard (a deadline for request headers,
    // which Pingora 0.9 lacks; see gateway::limits).
    let mut app = pingora::proxy::HttpProxy::new(Gateway { state }, server.configuration.clone());
    app.handle_init_modules();
    let guarded = crate::drain::Connections {
        inner: Arc::new(crate::gateway::limits::SlowClientGuard {
            inner: Arc::new(app),
            header_timeout: cfg.limits.header_timeout,
        }),
    };
    let mut proxy = pingora::services::listening::Service::new(
        "Pingora HTTP Proxy Service".to_string(),
        guarded,
    );
    proxy.add_tcp(&cfg.listen);
    server.add_service(proxy);
    let store_slot_for_writer = store.clone();
    let trace_slot = store.clone();
    // A shared store (PostgreSQL): budgets and rate limits through leases, and a service
    // that follows the other instances' changes.
    if let crate::store::settings::StoreConfig::Postgres(pg) = &cfg.store {
        let ctl = Arc::new(crate::ledger::shared::SharedCtl::new(
            store.clone(),
            pg.leases,
        ));
        ledger.enable_shared(ctl.clone());
        let sync = crate::services::sync::SharedSync {
            slot: store.clone(),
            index: keys.clone(),
            ledger: ledger.clone(),
            ctl,
            data_dir: data_dir.clone(),
            interval: pg.sync_interval,
            configured_master: cfg.master_key.is_some(),
            mcp: mcp.registry.clone(),
        };
        server.add_service(background_service("shared store sync", sync));
    }
    server.add_service(background_service(
        "last_used writer",
        crate::services::last_used::LastUsedWriter {
            index: keys.clone(),
            slot: store.clone(),
        },
    ));
    // Budget alerts: without targets there is no hook in the ledger and no service.
    if cfg.alerts.enabled() {
        let alerts = Arc::new(crate::alerts::Alerts::new(cfg.alerts.thresholds));
        let _ = ledger.alerts.set(alerts.clone());
        server.add_service(background_service(
            "alert sender",
            crate::alerts::sender::AlertSender {
                alerts,
                ledger: ledger.clone(),
                keys: keys.clone(),
                slot: store.clone(),
                settings: cfg.alerts.clone(),
            },
        ));
    }
    let keeper = StoreKeeper {
        data_dir,
        slot: store,
        index: keys,
        configured_master: cfg.master_key.is_some(),
        bootstrap_key: cfg.bootstrap_key,
        ledger: ledger.clone(),
        retention_days: cfg.usage_retention_days,
        store_kind: cfg.store.clone(),
        responses: responses.clone(),
        mcp: mcp.registry.clone(),
    };
    server.add_service(background_service("store keeper", keeper));
    server.add_service(background_service(
        "drain",
        crate::drain::DrainService {
            inflight: state_inflight,
            ledger: ledger.clone(),
            grace,
            close_timeout,
        },
    ));
    let writer = UsageWriter {
        ledger,
        slot: store_slot_for_writer,
        spool_dir: cfg.data_dir.join("spool"),
    };
    server.add_service(background_service("usage writer", writer));
    crate::traces::install(&cfg.traces);
    crate::otel::install(cfg.otel.as_ref());
    server.add_service(background_service(
        "trace writer",
        crate::traces::writer::TraceWriter { slot: trace_slot },
    ));
    server.add_service(background_service(
        "access log",
        crate::access::sink::AccessLogService,
    ));
    server.add_service(background_service(
        "response writer",
        crate::services::responses::ResponseWriter { responses },
    ));
    if cfg.providers.is_empty() {
        log::warn!("{}", crate::config::NO_PROVIDER_HINT);
    }
    log::info!(
        "tollgate {} listening on {} with providers [{}]",
        env!("CARGO_PKG_VERSION"),
        cfg.listen,
        cfg.providers.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(crate::drain::StopSignals),
    });
    std::process::exit(0)
}

/// One line that names the cause of a failed bind and what to do.
fn bind_failure(listen: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {listen}: the address is already in use (another tollgate, or \
another program, holds it); stop it or set another `listen` address"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot listen on {listen}: permission denied (ports below 1024 need privileges)"
        ),
        _ => format!("cannot listen on {listen}: {e}"),
    }
}
