//! `otel:` in the config, and the standard `OTEL_*` environment variables. A value set in
//! the config wins over the environment's (the OpenTelemetry rule: code over environment; headers: both are sent);
//! what the config leaves out is read from the environment. Export is off unless the config
//! has an `otel:` section or `OTEL_EXPORTER_OTLP_ENDPOINT` / `…_TRACES_ENDPOINT` is set;
//! `OTEL_SDK_DISABLED=true` or `enabled: false` turns it off.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

impl Protocol {
    fn parse(s: &str) -> Option<Protocol> {
        match s.trim() {
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            "grpc" => Some(Protocol::Grpc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    pub protocol: Protocol,
    /// Where spans are sent: for HTTP the full URL of the traces path (`…/v1/traces`), for
    /// gRPC the collector's address.
    pub endpoint: String,
    /// The config's headers on each export (a collector's credentials: never logged); the
    /// exporter adds `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` itself.
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    /// The share of requests without a sampled parent that are exported (0.0 to 1.0).
    pub sample: f64,
    /// Spans waiting for export; beyond this they are dropped by the SDK's batch processor.
    pub queue: usize,
    pub batch: usize,
    pub delay: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOtel {
    pub enabled: Option<bool>,
    pub endpoint: Option<String>,
    pub traces_endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    pub headers: Option<BTreeMap<String, String>>,
    pub service_name: Option<String>,
    pub sample: Option<f64>,
    pub queue: Option<usize>,
    pub batch: Option<usize>,
    pub delay_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn var(env: Env, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value,name=value`, values percent-encoded.
fn env_headers(s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let bad = || {
        ConfigError::new(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "must be a list of name=value pairs separated by commas",
        )
    };
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(bad)?;
            let v = url::form_urlencoded::parse(format!("v={}", v.trim()).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            Ok((k.trim().to_ascii_lowercase(), v))
        })
        .collect()
}

fn check_header(field: &str, k: &str, v: &str) -> Result<(), ConfigError> {
    if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
        return Err(ConfigError::new(
            field,
            format!("'{k}' is not a header name"),
        ));
    }
    if http::HeaderValue::from_str(v).is_err() {
        return Err(ConfigError::new(
            field,
            format!("the value of '{k}' is not a valid header value"),
        ));
    }
    Ok(())
}

fn check_url(field: &str, u: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(u.trim())
        .map_err(|e| ConfigError::new(field, format!("'{u}' is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ConfigError::new(
            field,
            format!("'{u}' must be an http:// or https:// URL with a host"),
        ));
    }
    Ok(u.trim().to_string())
}

/// The settings, or None when export is off.
pub fn build(raw: Option<RawOtel>, env: Env) -> Result<Option<OtelSettings>, ConfigError> {
    let disabled = var(env, "OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
    let r = raw.clone().unwrap_or_default();
    let env_endpoint = var(env, "OTEL_EXPORTER_OTLP_ENDPOINT");
    let env_traces = var(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let wanted = match r.enabled {
        Some(e) => e,
        None => raw.is_some() || env_endpoint.is_some() || env_traces.is_some(),
    };
    if disabled || !wanted {
        return Ok(None);
    }
    let protocol = match r.protocol {
        Some(p) => p,
        None => match var(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
            .or_else(|| {
                var(env, "OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v))
            }) {
            Some((name, v)) => Protocol::parse(&v).ok_or_else(|| {
                ConfigError::new(
                    name,
                    format!("'{v}': tollgate exports http/protobuf or grpc"),
                )
            })?,
            None => Protocol::HttpProtobuf,
        },
    };
    // The traces URL: a signal-specific one as it is; a base one with `/v1/traces` (HTTP).
    let base = |field: &str, u: &str| -> Result<String, ConfigError> {
        let u = check_url(field, u)?;
        Ok(match protocol {
            Protocol::HttpProtobuf => format!("{}/v1/traces", u.trim_end_matches('/')),
            Protocol::Grpc => u,
        })
    };
    let endpoint = if let Some(t) = &r.traces_endpoint {
        check_url("otel.traces_endpoint", t)?
    } else if let Some(e) = &r.endpoint {
        base("otel.endpoint", e)?
    } else if let Some(t) = &env_traces {
        check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", t)?
    } else if let Some(e) = &env_endpoint {
        base("OTEL_EXPORTER_OTLP_ENDPOINT", e)?
    } else {
        match protocol {
            Protocol::HttpProtobuf => "http://localhost:4318/v1/traces".to_string(),
            Protocol::Grpc => "http://localhost:4317".to_string(),
        }
    };
    // Headers: the config's. The exporter adds the environment's itself (on the same name,
    // the variable's value); they are checked here so that a bad one is a clear error.
    for name in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some(h) = var(env, name) {
            for (k, v) in env_headers(&h)? {
                check_header(name, &k, &v)?;
            }
        }
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in r.headers.unwrap_or_default() {
        check_header("otel.headers", &k, &v)?;
        headers.insert(k.to_ascii_lowercase(), v);
    }
    let sample = match r.sample {
        Some(s) => (s, "otel.sample"),
        None => match var(env, "OTEL_TRACES_SAMPLER_ARG") {
            Some(v) => (
                v.trim().parse::<f64>().map_err(|_| {
                    ConfigError::new("OTEL_TRACES_SAMPLER_ARG", format!("'{v}' is not a number"))
                })?,
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            None => (1.0, "otel.sample"),
        },
    };
    if !(0.0..=1.0).contains(&sample.0) {
        return Err(ConfigError::new(sample.1, "must be from 0.0 to 1.0"));
    }
    let service_name = r
        .service_name
        .or_else(|| var(env, "OTEL_SERVICE_NAME"))
        .unwrap_or_else(|| "tollgate".to_string());
    if service_name.trim().is_empty() {
        return Err(ConfigError::new("otel.service_name", "must not be empty"));
    }
    let positive = |field: &str, v: Option<usize>, d: usize| match v {
        Some(0) => Err(ConfigError::new(field, "must be greater than 0")),
        Some(n) => Ok(n),
        None => Ok(d),
    };
    let queue = positive("otel.queue", r.queue, 4096)?;
    let batch = positive("otel.batch", r.batch, 512)?;
    if batch > queue {
        return Err(ConfigError::new("otel.batch", "must not exceed otel.queue"));
    }
    let delay = positive("otel.delay_ms", r.delay_ms.map(|v| v as usize), 1000)?;
    let timeout = positive("otel.timeout_ms", r.timeout_ms.map(|v| v as usize), 10_000)?;
    Ok(Some(OtelSettings {
        protocol,
        endpoint,
        headers: headers.into_iter().collect(),
        service_name,
        sample: sample.0,
        queue,
        batch,
        delay: Duration::from_millis(delay as u64),
        timeout: Duration::from_millis(timeout as u64),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(y: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<OtelSettings>, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        build(y.map(|y| serde_yaml::from_str(y).unwrap()), &env)
    }

    #[test]
    fn off_unless_configured() {
        assert_eq!(with(None, &[]).unwrap(), None);
        assert_eq!(
            with(Some("{enabled: false, endpoint: 'http://c:4318'}"), &[]).unwrap(),
            None
        );
        let on = with(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(on.endpoint, "http://c:4318/v1/traces");
        assert_eq!(on.protocol, Protocol::HttpProtobuf);
        assert_eq!((on.sample, on.service_name.as_str()), (1.0, "tollgate"));
        let off = with(
            Some("{endpoint: 'http://c:4318'}"),
            &[("OTEL_SDK_DISABLED", "true")],
        )
        .unwrap();
        assert_eq!(off, None);
        // A bare section exports to the default local collector.
        let local = with(Some("{}"), &[]).unwrap().unwrap();
        assert_eq!(local.endpoint, "http://localhost:4318/v1/traces");
    }

    #[test]
    fn config_wins_over_the_environment() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-a=env,authorization=Basic%20abc",
            ),
        ];
        let s = with(None, &env).unwrap().unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.endpoint, "http://env:4318");
        assert_eq!((s.sample, s.service_name.as_str()), (0.25, "from-env"));
        assert!(
            s.headers.is_empty(),
            "the exporter reads the variable itself"
        );
        let s = with(
            Some("{protocol: http/protobuf, endpoint: 'http://cfg:4318', service_name: gw, sample: 0.5, headers: {x-a: cfg}}"),
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.endpoint, "http://cfg:4318/v1/traces");
        assert_eq!((s.sample, s.service_name.as_str()), (0.5, "gw"));
        assert!(s.headers.contains(&("x-a".into(), "cfg".into())));
        let t = with(
            None,
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.endpoint, "http://t:1/custom");
    }

    #[test]
    fn clear_errors() {
        let err = |y: Option<&str>, env: &[(&str, &str)]| with(y, env).unwrap_err().to_string();
        assert!(err(Some("{sample: 2}"), &[]).contains("otel.sample"));
        assert!(err(Some("{endpoint: 'collector:4318'}"), &[]).contains("otel.endpoint"));
        assert!(err(Some("{headers: {'bad name': x}}"), &[]).contains("otel.headers"));
        assert!(err(Some("{queue: 0}"), &[]).contains("otel.queue"));
        assert!(err(Some("{queue: 10, batch: 20}"), &[]).contains("otel.batch"));
        assert!(
            err(Some("{}"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])
                .contains("OTEL_EXPORTER_OTLP_PROTOCOL")
        );
        assert!(
            err(Some("{}"), &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")])
                .contains("OTEL_EXPORTER_OTLP_HEADERS")
        );
        assert!(err(Some("{}"), &[("OTEL_TRACES_SAMPLER_ARG", "half")])
            .contains("OTEL_TRACES_SAMPLER_ARG"));
        assert!(serde_yaml::from_str::<RawOtel>("{protocol: http/json}").is_err());
        assert!(serde_yaml::from_str::<RawOtel>("{endpoints: x}").is_err());
    }
}
