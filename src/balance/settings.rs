//! `deployments:`, `fallbacks:` and `failover:` as written, and their validation.
//!
//! ```yaml
//! deployments:
//!   gpt-4.1:                                    # the name clients ask for
//!     - {provider: openai-east, weight: 3}      # model defaults to the group name
//!     - {provider: openai-west, weight: 1}
//!     - {provider: azure, model: gpt41-prod, priority: 1, first_byte_timeout_ms: 20000}
//! fallbacks:
//!   claude-sonnet-4-6: [openai:gpt-4.1]         # another model, translated as needed
//! failover:
//!   max_attempts: 4
//!   retry_budget_percent: 20
//!   retry_budget_min_per_second: 5
//!   breaker: {failures: 5, cooldown_ms: 30000, max_cooldown_ms: 300000}
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

use super::breaker::BreakerPolicy;
use crate::config::{ConfigError, Provider};

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub provider: String,
    pub model: Option<String>,
    /// Shown in /metrics and /health (default `group/provider`).
    pub name: Option<String>,
    pub weight: Option<u32>,
    pub priority: Option<u32>,
    /// A credential of this deployment's own (e.g. a second key on the same provider).
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub first_byte_timeout_ms: Option<u64>,
    pub stream_idle_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failures: Option<u32>,
    pub cooldown_ms: Option<u64>,
    pub max_cooldown_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    pub max_attempts: Option<usize>,
    pub retry_budget_percent: Option<u32>,
    pub retry_budget_min_per_second: Option<u32>,
    pub breaker: Option<RawBreaker>,
}

/// One validated deployment: the provider with this deployment's overrides applied.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    pub id: String,
    pub provider: Provider,
    pub model: String,
    pub weight: u32,
    pub priority: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: usize,
    pub retry_budget_percent: u32,
    pub retry_budget_min_per_second: u32,
    pub breaker: BreakerPolicy,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        FailoverPolicy {
            max_attempts: 4,
            retry_budget_percent: 20,
            retry_budget_min_per_second: 5,
            breaker: BreakerPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct FailoverConfig {
    pub groups: BTreeMap<String, Vec<DeploymentSpec>>,
    pub fallbacks: BTreeMap<String, Vec<String>>,
    pub policy: FailoverPolicy,
}

fn positive_ms(v: Option<u64>, field: &str) -> Result<Option<Duration>, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::new(field, "must be greater than 0")),
        Some(n) => Ok(Some(Duration::from_millis(n))),
        None => Ok(None),
    }
}

pub fn build(
    deployments: BTreeMap<String, Vec<RawDeployment>>,
    fallbacks: BTreeMap<String, Vec<String>>,
    failover: Option<RawFailover>,
    providers: &BTreeMap<String, Provider>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FailoverConfig, ConfigError> {
    let mut groups = BTreeMap::new();
    for (group, list) in deployments {
        let gf = format!("deployments.{group}");
        if group.is_empty() || group.len() > 256 || group.chars().any(char::is_control) {
            return Err(ConfigError::new(gf, "not a valid model name"));
        }
        if list.is_empty() {
            return Err(ConfigError::new(gf, "lists no deployment"));
        }
        let mut specs: Vec<DeploymentSpec> = Vec::with_capacity(list.len());
        for (i, d) in list.into_iter().enumerate() {
            let f = format!("{gf}[{i}]");
            let Some(base) = providers.get(&d.provider) else {
                return Err(ConfigError::new(
                    format!("{f}.provider"),
                    format!(
                        "provider '{}' is not configured (add it under 'providers' or set its API key)",
                        d.provider
                    ),
                ));
            };
            let mut p = base.clone();
            match (&d.api_key, &d.api_key_env) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(f, "set api_key or api_key_env, not both"))
                }
                (Some(k), None) => p.api_key = Some(k.clone()),
                (None, Some(var)) => {
                    p.api_key = Some(env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                        ConfigError::new(
                            format!("{f}.api_key_env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?)
                }
                (None, None) => {}
            }
            if p.api_key.as_ref().is_some_and(|k| k.contains(['\r', '\n'])) {
                return Err(ConfigError::new(
                    format!("{f}.api_key"),
                    "must not contain line breaks",
                ));
            }
            let t = &mut p.timeouts;
            if let Some(v) = positive_ms(d.connect_timeout_ms, &format!("{f}.connect_timeout_ms"))?
            {
                t.connect = v;
            }
            if let Some(v) = positive_ms(
                d.first_byte_timeout_ms,
                &format!("{f}.first_byte_timeout_ms"),
            )? {
                t.first_byte = v;
            }
            if let Some(v) = positive_ms(
                d.stream_idle_timeout_ms,
                &format!("{f}.stream_idle_timeout_ms"),
            )? {
                t.stream_idle = v;
            }
            if let Some(v) = positive_ms(d.total_timeout_ms, &format!("{f}.total_timeout_ms"))? {
                t.total = v;
            }
            p.refresh_wire()
                .map_err(|m| ConfigError::new(f.as_str(), m))?;
            let weight = d.weight.unwrap_or(1);
            if !(1..=10_000).contains(&weight) {
                return Err(ConfigError::new(
                    format!("{f}.weight"),
                    "must be between 1 and 10000 (use priority for a standby deployment)",
                ));
            }
            let model = d.model.unwrap_or_else(|| group.clone());
            if model.is_empty() {
                return Err(ConfigError::new(format!("{f}.model"), "must not be empty"));
            }
            let mut id = d.name.unwrap_or_else(|| format!("{group}/{}", d.provider));
            if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
                return Err(ConfigError::new(format!("{f}.name"), "not a valid name"));
            }
            if specs.iter().any(|s| s.id == id) {
                id = format!("{id}#{}", i + 1);
            }
            specs.push(DeploymentSpec {
                id,
                provider: p,
                model,
                weight,
                priority: d.priority.unwrap_or(0),
            });
        }
        groups.insert(group, specs);
    }
    for (from, to) in &fallbacks {
        if to.is_empty() || to.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::new(
                format!("fallbacks.{from}"),
                "must list model selectors such as 'openai:gpt-4.1'",
            ));
        }
    }
    let r = failover.unwrap_or_default();
    let d = FailoverPolicy::default();
    let rb = r.breaker.unwrap_or_default();
    let max_attempts = r.max_attempts.unwrap_or(d.max_attempts);
    if !(1..=10).contains(&max_attempts) {
        return Err(ConfigError::new(
            "failover.max_attempts",
            "must be between 1 and 10",
        ));
    }
    let percent = r.retry_budget_percent.unwrap_or(d.retry_budget_percent);
    if percent > 100 {
        return Err(ConfigError::new(
            "failover.retry_budget_percent",
            "must be between 0 and 100",
        ));
    }
    let failures = rb.failures.unwrap_or(d.breaker.failures);
    if failures == 0 {
        return Err(ConfigError::new(
            "failover.breaker.failures",
            "must be greater than 0",
        ));
    }
    let cooldown =
        positive_ms(rb.cooldown_ms, "failover.breaker.cooldown_ms")?.unwrap_or(d.breaker.cooldown);
    let max_cooldown = positive_ms(rb.max_cooldown_ms, "failover.breaker.max_cooldown_ms")?
        .unwrap_or(d.breaker.max_cooldown.max(cooldown));
    if max_cooldown < cooldown {
        return Err(ConfigError::new(
            "failover.breaker.max_cooldown_ms",
            "must not be below cooldown_ms",
        ));
    }
    Ok(FailoverConfig {
        groups,
        fallbacks,
        policy: FailoverPolicy {
            max_attempts,
            retry_budget_percent: percent,
            retry_budget_min_per_second: r
                .retry_budget_min_per_second
                .unwrap_or(d.retry_budget_min_per_second),
            breaker: BreakerPolicy {
                failures,
                cooldown,
                max_cooldown,
            },
        },
    })
}
