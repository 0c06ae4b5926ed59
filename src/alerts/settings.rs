//! `alerts:` in the config: the default thresholds, the webhook targets and how they are
//! retried. No targets: alerts are off and nothing runs (no hook, no service).

use serde::Deserialize;
use std::time::Duration;

use crate::config::ConfigError;
use crate::records::AlertMask;

/// The body a target receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The alert as a JSON object (see README "Alerts").
    #[default]
    Json,
    /// Slack's incoming-webhook shape: `text` plus `blocks`.
    Slack,
}

#[derive(Clone, PartialEq)]
pub struct Target {
    pub name: String,
    /// From the config only (the operator's): may be a private or loopback address.
    pub url: String,
    pub format: Format,
    /// HMAC-SHA256 key of the signature header. Never logged.
    pub secret: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("format", &self.format)
            .field("secret", &"***")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Thresholds of budgets that set none.
    pub thresholds: AlertMask,
    pub targets: Vec<Target>,
    /// Time allowed for one webhook call.
    pub timeout: Duration,
    /// Attempts per target before it is given up on (counted as failed).
    pub max_attempts: u32,
    /// First retry delay; doubled after each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How often every limited account is re-checked against its thresholds (crossings the
    /// settle hook cannot see: spend that reached this instance from other instances).
    pub scan_interval: Duration,
    /// Shared store: how long a sender owns a pending alert before another instance may
    /// take it over (a sender that died).
    pub claim_lease: Duration,
}

impl AlertSettings {
    pub fn enabled(&self) -> bool {
        !self.targets.is_empty()
    }
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            thresholds: AlertMask::from_percents(&[50, 80, 95, 100]).expect("valid"),
            targets: Vec::new(),
            timeout: Duration::from_secs(5),
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            scan_interval: Duration::from_secs(10),
            claim_lease: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: Option<String>,
    pub url: String,
    pub format: Option<Format>,
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub thresholds: Option<Vec<u8>>,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub initial_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub scan_interval_ms: Option<u64>,
    pub claim_lease_ms: Option<u64>,
}

pub fn build(raw: Option<RawAlerts>) -> Result<AlertSettings, ConfigError> {
    let d = AlertSettings::default();
    let Some(r) = raw else { return Ok(d) };
    let thresholds = match &r.thresholds {
        None => d.thresholds,
        Some(t) => {
            AlertMask::from_percents(t).map_err(|m| ConfigError::new("alerts.thresholds", m))?
        }
    };
    let mut targets = Vec::new();
    for (i, t) in r.targets.into_iter().enumerate() {
        let field = |f: &str| format!("alerts.targets[{i}].{f}");
        let url = url::Url::parse(&t.url)
            .map_err(|e| ConfigError::new(field("url"), format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError::new(
                field("url"),
                "must be an http:// or https:// URL with a host",
            ));
        }
        let secret = t.secret.unwrap_or_default();
        if secret.len() < 16 {
            return Err(ConfigError::new(
                field("secret"),
                "is required: at least 16 characters (the HMAC key of the signature header; use ${ENV})",
            ));
        }
        let name = t.name.unwrap_or_else(|| format!("target{i}"));
        if targets.iter().any(|x: &Target| x.name == name) {
            return Err(ConfigError::new(field("name"), "names must be unique"));
        }
        targets.push(Target {
            name,
            url: t.url,
            format: t.format.unwrap_or_default(),
            secret,
        });
    }
    let ms = |v: Option<u64>, dflt: Duration, f: &str| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(dflt),
            Some(0) => Err(ConfigError::new(
                format!("alerts.{f}"),
                "must be greater than 0",
            )),
            Some(n) => Ok(Duration::from_millis(n)),
        }
    };
    let s = AlertSettings {
        thresholds,
        targets,
        timeout: ms(r.timeout_ms, d.timeout, "timeout_ms")?,
        max_attempts: r.max_attempts.unwrap_or(d.max_attempts).max(1),
        initial_backoff: ms(
            r.initial_backoff_ms,
            d.initial_backoff,
            "initial_backoff_ms",
        )?,
        max_backoff: ms(r.max_backoff_ms, d.max_backoff, "max_backoff_ms")?,
        scan_interval: ms(r.scan_interval_ms, d.scan_interval, "scan_interval_ms")?,
        claim_lease: ms(r.claim_lease_ms, d.claim_lease, "claim_lease_ms")?,
    };
    Ok(s)
}
