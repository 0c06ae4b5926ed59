//! `traces:` in the config: whether and how much of each request is kept for
//! `GET /v1/traces`.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// What a trace keeps. `metadata`: ids, routing, the translation pair, timings, attempts and
/// their outcomes, usage; never a body. Off by default until `metadata` is measured under the
/// 3 % of a request's instructions allowed for a default-on feature (docs/performance.md,
/// 2026-12-07 and 2026-12-08 traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Capture {
    #[default]
    Off,
    Metadata,
    /// Metadata plus the client's request body, the body sent upstream and the answer
    /// (a stream's event count), each redacted and cut at `max_body_bytes`.
    Full,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub capture: Capture,
    /// The share of requests traced, 0.0 to 1.0.
    pub sample: f64,
    /// Traces older than this are deleted (0 keeps them).
    pub retention_days: u64,
    /// Traces waiting for the writer; beyond this, new ones are dropped (and counted).
    pub queue: usize,
    /// `capture: full`: each kept body is cut at this many bytes (then `truncated`).
    pub max_body_bytes: usize,
    /// `capture: full`: operator JSON paths whose values are redacted (`traces::redact`).
    pub redact: Vec<super::redact::Path>,
}

impl Default for TraceSettings {
    fn default() -> Self {
        TraceSettings {
            capture: Capture::Off,
            sample: 1.0,
            retention_days: 7,
            queue: 10_000,
            max_body_bytes: 1 << 20,
            redact: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTraces {
    pub capture: Option<Capture>,
    pub sample: Option<f64>,
    pub retention_days: Option<u64>,
    pub queue: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub redact: Option<Vec<String>>,
}

pub fn build(raw: Option<RawTraces>) -> Result<TraceSettings, ConfigError> {
    let d = TraceSettings::default();
    let Some(r) = raw else { return Ok(d) };
    let sample = r.sample.unwrap_or(d.sample);
    if !(0.0..=1.0).contains(&sample) {
        return Err(ConfigError::new("traces.sample", "must be from 0.0 to 1.0"));
    }
    let queue = r.queue.unwrap_or(d.queue);
    if queue == 0 {
        return Err(ConfigError::new("traces.queue", "must be greater than 0"));
    }
    let max_body_bytes = r.max_body_bytes.unwrap_or(d.max_body_bytes);
    if max_body_bytes == 0 {
        return Err(ConfigError::new(
            "traces.max_body_bytes",
            "must be greater than 0",
        ));
    }
    let redact = r
        .redact
        .unwrap_or_default()
        .iter()
        .map(|p| {
            super::redact::Path::parse(p)
                .map_err(|e| ConfigError::new("traces.redact", format!("'{p}': {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TraceSettings {
        capture: r.capture.unwrap_or(d.capture),
        sample,
        retention_days: r.retention_days.unwrap_or(d.retention_days),
        queue,
        max_body_bytes,
        redact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<TraceSettings, ConfigError> {
        build(Some(serde_yaml::from_str(y).unwrap()))
    }

    #[test]
    fn settings() {
        assert_eq!(build(None).unwrap(), TraceSettings::default());
        assert_eq!(TraceSettings::default().capture, Capture::Off);
        assert_eq!(
            parse("{capture: metadata}").unwrap().capture,
            Capture::Metadata
        );
        let t = parse("{capture: off, sample: 0.25, retention_days: 1, queue: 5}").unwrap();
        assert_eq!(t.capture, Capture::Off);
        assert_eq!(t.sample, 0.25);
        assert!(parse("{sample: 1.5}").is_err());
        assert!(parse("{queue: 0}").is_err());
        let f = parse("{capture: full, max_body_bytes: 10, redact: ['$.metadata.email']}").unwrap();
        assert_eq!(
            (f.capture, f.max_body_bytes, f.redact.len()),
            (Capture::Full, 10, 1)
        );
        assert!(parse("{redact: ['messages[']}").is_err());
        assert!(parse("{max_body_bytes: 0}").is_err());
        assert!(serde_yaml::from_str::<RawTraces>("{capture: everything}").is_err());
    }
}
