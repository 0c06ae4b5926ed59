//! `access_log:` in the config: off, or where and in which format the access lines go.

use serde::Deserialize;
use std::path::PathBuf;

use crate::config::ConfigError;

/// One line per request, as `key=value` text or as a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Where the lines go: the process's standard error, or a file (appended to, reopened on
/// SIGUSR1 so that logrotate can move it away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub format: Format,
    pub target: Target,
    /// Lines waiting for the writer thread; beyond this, new lines are dropped (and counted)
    /// rather than making a request wait.
    pub queue_lines: usize,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            format: Format::Text,
            target: Target::Stderr,
            queue_lines: 65536,
        }
    }
}

/// `access_log:` as written: `true` / `false`, or the settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawAccessLog {
    On(bool),
    Settings(RawSettings),
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub format: Option<Format>,
    /// `stderr` or a file path.
    pub path: Option<String>,
    pub queue_lines: Option<usize>,
}

/// The access log settings (`None`: no access lines at all). Absent means on, text, stderr.
pub fn build(raw: Option<RawAccessLog>) -> Result<Option<AccessLog>, ConfigError> {
    let r = match raw {
        None | Some(RawAccessLog::On(true)) => return Ok(Some(AccessLog::default())),
        Some(RawAccessLog::On(false)) => return Ok(None),
        Some(RawAccessLog::Settings(r)) => r,
    };
    let d = AccessLog::default();
    let target = match r.path.as_deref() {
        None | Some("stderr") => Target::Stderr,
        Some("") => return Err(ConfigError::new("access_log.path", "must not be empty")),
        Some(p) => Target::File(PathBuf::from(p)),
    };
    let queue_lines = match r.queue_lines {
        Some(0) => {
            return Err(ConfigError::new(
                "access_log.queue_lines",
                "must be greater than 0",
            ))
        }
        Some(n) => n,
        None => d.queue_lines,
    };
    Ok(Some(AccessLog {
        format: r.format.unwrap_or_default(),
        target,
        queue_lines,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Option<AccessLog>, ConfigError> {
        build(serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn forms() {
        assert_eq!(build(None).unwrap(), Some(AccessLog::default()));
        assert_eq!(parse("true").unwrap(), Some(AccessLog::default()));
        assert_eq!(parse("false").unwrap(), None);
        let j = parse("{format: json, path: /var/log/tollgate/access.log}")
            .unwrap()
            .unwrap();
        assert_eq!(j.format, Format::Json);
        assert_eq!(
            j.target,
            Target::File("/var/log/tollgate/access.log".into())
        );
        assert_eq!(
            parse("{path: stderr}").unwrap().unwrap().target,
            Target::Stderr
        );
        assert!(parse("{queue_lines: 0}").is_err());
        assert!(serde_yaml::from_str::<RawAccessLog>("{format: xml}").is_err());
    }
}
