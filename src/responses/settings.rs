//! `responses:` in the config: whether tollgate stores the Responses it produces on
//! translated routes, for how long, and how much.

use serde::Deserialize;
use std::time::Duration;

use crate::config::ConfigError;

/// `responses:` as written; every field is optional.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawResponses {
    pub store: Option<bool>,
    /// Days (fractions allowed).
    pub retention_days: Option<f64>,
    pub max_response_bytes: Option<u64>,
    pub max_bytes_per_key: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesConfig {
    /// Store responses at all (off: nothing is stored, and chains are refused with a 400).
    pub store: bool,
    /// How long a stored response lives (OpenAI keeps them 30 days).
    pub retention: Duration,
    /// A response (input and output) larger than this is not stored.
    pub max_response_bytes: u64,
    /// The oldest responses of a key go when its stored ones pass this (0: no cap).
    pub max_bytes_per_key: u64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        ResponsesConfig {
            store: true,
            retention: Duration::from_secs(30 * 86_400),
            max_response_bytes: 16 * 1024 * 1024,
            max_bytes_per_key: 1024 * 1024 * 1024,
        }
    }
}

pub fn build(raw: Option<RawResponses>) -> Result<ResponsesConfig, ConfigError> {
    let d = ResponsesConfig::default();
    let Some(r) = raw else { return Ok(d) };
    let retention = match r.retention_days {
        Some(days) if !(days > 0.0 && days <= 36_500.0) => {
            return Err(ConfigError::new(
                "responses.retention_days",
                "must be greater than 0 and at most 36500",
            ))
        }
        Some(days) => Duration::from_secs_f64(days * 86_400.0),
        None => d.retention,
    };
    let max_response_bytes = match r.max_response_bytes {
        Some(0) => {
            return Err(ConfigError::new(
                "responses.max_response_bytes",
                "must be greater than 0",
            ))
        }
        Some(n) => n,
        None => d.max_response_bytes,
    };
    Ok(ResponsesConfig {
        store: r.store.unwrap_or(d.store),
        retention,
        max_response_bytes,
        max_bytes_per_key: r.max_bytes_per_key.unwrap_or(d.max_bytes_per_key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(build(None).unwrap(), ResponsesConfig::default());
        let c = build(Some(RawResponses {
            retention_days: Some(0.5),
            store: Some(false),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(c.retention, Duration::from_secs(43_200));
        assert!(!c.store);
        for bad in [0.0, -1.0, f64::NAN] {
            let e = build(Some(RawResponses {
                retention_days: Some(bad),
                ..Default::default()
            }))
            .unwrap_err();
            assert_eq!(e.field, "responses.retention_days");
        }
    }
}
