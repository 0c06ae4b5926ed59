//! Which gateway the management commands talk to, with which key: `--url` (default: the
//! `listen` address of `--config`, else http://127.0.0.1:8000) and the master key
//! (`--master-key`, `TOLLGATE_MASTER_KEY`, else the config's `master_key`).

use std::path::{Path, PathBuf};

use crate::config::Config;

/// The config file read when `--config` is not given, if it exists.
const DEFAULT_CONFIG: &str = "proxy.yaml";
const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// Connection options shared by every management command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Conn {
    /// tollgate's configuration file: its `listen` gives the default --url, and its store is
    /// used directly when no gateway is running [default: proxy.yaml, if present].
    #[arg(long, env = "TOLLGATE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The running gateway's address [default: http://<listen of --config>, else
    /// http://127.0.0.1:8000]. Given explicitly, the store is never used directly.
    #[arg(long, env = "TOLLGATE_URL", global = true)]
    pub url: Option<String>,
    /// The master key; prefer TOLLGATE_MASTER_KEY (arguments show in `ps`). Default: the
    /// config's master_key.
    #[arg(
        long,
        env = "TOLLGATE_MASTER_KEY",
        hide_env_values = true,
        global = true
    )]
    pub master_key: Option<String>,
    /// Print JSON, for scripts, instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Say on standard error whether the gateway or the store answered.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// Where and how to reach the management API, resolved from `Conn`.
pub struct Target {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// The URL was given (`--url` or `TOLLGATE_URL`), so a refused connection is an error
    /// rather than a reason to open the store.
    pub url_given: bool,
    pub master_key: Option<String>,
    /// The config, when one was given or found: the store to fall back to.
    pub config: Option<Config>,
    pub verbose: bool,
}

/// The URL a client uses for a `listen` address: a wildcard address is reached on loopback.
pub fn url_for_listen(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() && a.is_ipv4() => {
            format!("http://127.0.0.1:{}", a.port())
        }
        Ok(a) if a.ip().is_unspecified() => format!("http://[::1]:{}", a.port()),
        Ok(a) => format!("http://{a}"),
        Err(_) => format!("http://{listen}"),
    }
}

fn read_config(path: &Path) -> Result<Config, String> {
    super::load_config(path)
}

pub fn resolve(conn: &Conn) -> Result<Target, String> {
    let config = match &conn.config {
        Some(p) => Some(read_config(p)?),
        None if Path::new(DEFAULT_CONFIG).exists() => Some(read_config(Path::new(DEFAULT_CONFIG))?),
        None => None,
    };
    let (url, url_given) = match &conn.url {
        Some(u) => (u.trim_end_matches('/').to_string(), true),
        None => (
            config
                .as_ref()
                .map(|c| url_for_listen(&c.listen))
                .unwrap_or_else(|| DEFAULT_URL.to_string()),
            false,
        ),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "--url must start with http:// or https:// (got '{}')",
            super::api::printable(&url)
        ));
    }
    let master_key = conn
        .master_key
        .clone()
        .filter(|k| !k.is_empty())
        .or_else(|| config.as_ref().and_then(|c| c.master_key.clone()));
    Ok(Target {
        url,
        url_given,
        master_key,
        config,
        verbose: conn.verbose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        assert_eq!(url_for_listen("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(url_for_listen("[::]:9000"), "http://[::1]:9000");
        assert_eq!(url_for_listen("10.1.2.3:8000"), "http://10.1.2.3:8000");
        assert_eq!(url_for_listen("127.0.0.1:8000"), "http://127.0.0.1:8000");
    }
}
