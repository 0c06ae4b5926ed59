//! `ui:`: the web console's settings.

use serde::Deserialize;
use std::net::IpAddr;

use crate::config::ConfigError;

/// `ui:` as written; every field is optional.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawUi {
    pub enabled: Option<bool>,
    pub session_idle_minutes: Option<u64>,
    pub login_attempts_per_minute: Option<u32>,
    pub trusted_proxies: Option<Vec<String>>,
}

/// The console's settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiConfig {
    /// Off: every `/ui/` path answers 404 and `/` never redirects.
    pub enabled: bool,
    /// A session unused for this long is gone (12 h by default).
    pub session_idle_secs: u64,
    /// Failed logins one client IP may make per minute; then every login (even a right
    /// key) is refused with 429 until the minute is over.
    pub login_attempts_per_minute: u32,
    /// Peers whose `X-Forwarded-Proto` and `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            session_idle_secs: 12 * 3600,
            login_attempts_per_minute: 10,
            trusted_proxies: Vec::new(),
        }
    }
}

pub fn build(raw: Option<RawUi>) -> Result<UiConfig, ConfigError> {
    let d = UiConfig::default();
    let Some(r) = raw else { return Ok(d) };
    let session_idle_secs = match r.session_idle_minutes {
        Some(n) if !(1..=60 * 24 * 30).contains(&n) => {
            return Err(ConfigError::new(
                "ui.session_idle_minutes",
                format!("must be between 1 and 43200, got {n}"),
            ))
        }
        Some(n) => n * 60,
        None => d.session_idle_secs,
    };
    let login_attempts_per_minute = match r.login_attempts_per_minute {
        Some(0) => {
            return Err(ConfigError::new(
                "ui.login_attempts_per_minute",
                "must be greater than 0",
            ))
        }
        Some(n) => n,
        None => d.login_attempts_per_minute,
    };
    let mut trusted_proxies = Vec::new();
    for (i, p) in r.trusted_proxies.unwrap_or_default().iter().enumerate() {
        trusted_proxies.push(p.parse::<IpAddr>().map_err(|_| {
            ConfigError::new(
                format!("ui.trusted_proxies[{i}]"),
                format!("'{p}' is not an IP address"),
            )
        })?);
    }
    Ok(UiConfig {
        enabled: r.enabled.unwrap_or(d.enabled),
        session_idle_secs,
        login_attempts_per_minute,
        trusted_proxies,
    })
}
