//! CORS for browser-based API clients on the inference endpoints and the model listings
//! (`cors: {allow_origins: [...]}`): preflights answered by [`preflight`], and the
//! `Access-Control-*` headers of the answers added by a Pingora downstream module
//! ([`CorsBuilder`]), so that every way an answer is written (the proxy path, the direct path,
//! errors, the tool loop) gets them. Off (no origins): the module is not even registered.
//!
//! Credentials (cookies) are never allowed with a wildcard; API keys travel in
//! `Authorization` / `x-api-key`, which need no credentials mode.

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module};
use serde::Deserialize;
use std::any::Any;
use std::sync::Arc;

use crate::config::ConfigError;
use crate::local::Answer;

/// `cors:` as written.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub allow_origins: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub max_age_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsConfig {
    /// Exact origins (`scheme://host[:port]`, lower case).
    pub origins: Vec<String>,
    /// `*` was listed: every origin.
    pub any: bool,
    pub allow_credentials: bool,
    pub max_age_secs: u64,
}

impl CorsConfig {
    pub fn enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it may read
    /// the answer.
    pub fn allow(&self, origin: &str) -> Option<String> {
        let o = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&o) {
            Some(origin.to_string())
        } else if self.any {
            Some("*".to_string())
        } else {
            None
        }
    }
}

pub fn build(raw: Option<RawCors>) -> Result<CorsConfig, ConfigError> {
    let Some(r) = raw else {
        return Ok(CorsConfig::default());
    };
    let mut c = CorsConfig {
        allow_credentials: r.allow_credentials.unwrap_or(false),
        max_age_secs: r.max_age_secs.unwrap_or(600),
        ..CorsConfig::default()
    };
    if c.max_age_secs > 86_400 {
        return Err(ConfigError::new(
            "cors.max_age_secs",
            "must be at most 86400",
        ));
    }
    for (i, o) in r.allow_origins.unwrap_or_default().iter().enumerate() {
        if o == "*" {
            c.any = true;
            continue;
        }
        let ok = url::Url::parse(o).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
                && !o.trim_end_matches('/').ends_with(':')
        }) && !o.trim_end_matches('/').contains(['?', '#']);
        if !ok || o.trim_end_matches('/').matches('/').count() != 2 {
            return Err(ConfigError::new(
                format!("cors.allow_origins[{i}]"),
                format!("'{o}' is not an origin such as https://app.example.com or \"*\""),
            ));
        }
        c.origins.push(o.trim_end_matches('/').to_ascii_lowercase());
    }
    if c.any && c.allow_credentials {
        return Err(ConfigError::new(
            "cors.allow_credentials",
            "cannot be true with \"*\" in allow_origins (browsers refuse credentials with a wildcard; list the origins)",
        ));
    }
    Ok(c)
}

/// The paths CORS applies to: inference and the model listings.
pub fn applies(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    matches!(
        p,
        "/v1/chat/completions"
            | "/v1/messages"
            | "/v1/messages/count_tokens"
            | "/v1/responses"
            | "/v1/embeddings"
            | "/v1/moderations"
            | "/v1/models"
    ) || p.starts_with("/v1/models/")
}

/// The answer to a preflight (`OPTIONS` on a CORS path). The allow-origin header itself is
/// added by the module, like on every other answer.
pub fn preflight(c: &CorsConfig, headers: &http::HeaderMap) -> Answer {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let origin_ok = get("origin").and_then(|o| c.allow(o)).is_some();
    let method_ok = get("access-control-request-method").is_some_and(|m| m == "POST" || m == "GET");
    if !c.enabled() {
        // As before CORS existed: no route for OPTIONS.
        let e = crate::error::GatewayError::new(
            crate::error::ErrorKind::NotFound,
            "No route for OPTIONS (CORS is off: cors.allow_origins).",
        );
        return Answer::error(crate::translate::Format::Chat, &e);
    }
    if !origin_ok || !method_ok {
        let e = crate::error::GatewayError::new(
            crate::error::ErrorKind::PermissionDenied,
            "CORS preflight refused: this origin or method is not allowed.",
        );
        return Answer::error(crate::translate::Format::Chat, &e);
    }
    // The headers asked for, if they are plain header names; the common ones otherwise.
    let asked = get("access-control-request-headers").unwrap_or("");
    let headers_ok = asked.len() <= 1024
        && asked
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b));
    let allow_headers = if headers_ok && !asked.trim().is_empty() {
        asked.to_string()
    } else {
        "authorization, x-api-key, content-type, anthropic-version, anthropic-beta".to_string()
    };
    let mut a = Answer::new(204, "text/plain", bytes::Bytes::new());
    a.headers.extend([
        ("access-control-allow-methods", "GET, POST".to_string()),
        ("access-control-allow-headers", allow_headers),
        ("access-control-max-age", c.max_age_secs.to_string()),
    ]);
    a
}

/// Registers [`Cors`] for each request.
pub struct CorsBuilder(pub Arc<CorsConfig>);

impl HttpModuleBuilder for CorsBuilder {
    fn init(&self) -> Module {
        Box::new(Cors {
            cfg: self.0.clone(),
            allow: None,
        })
    }
}

/// One request's CORS state: the allow-origin value its answer gets, if any.
pub struct Cors {
    cfg: Arc<CorsConfig>,
    allow: Option<String>,
}

#[async_trait]
impl HttpModule for Cors {
    async fn request_header_filter(&mut self, req: &mut RequestHeader) -> pingora::Result<()> {
        if applies(req.uri.path()) {
            self.allow = req
                .headers
                .get("origin")
                .and_then(|v| v.to_str().ok())
                .and_then(|o| self.cfg.allow(o));
        }
        Ok(())
    }

    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        _end_of_stream: bool,
    ) -> pingora::Result<()> {
        if let Some(origin) = &self.allow {
            resp.insert_header("access-control-allow-origin", origin.as_str())?;
            resp.append_header("vary", "Origin")?;
            resp.insert_header(
                "access-control-expose-headers",
                "x-request-id, retry-after, x-tollgate-guardrails",
            )?;
            if self.cfg.allow_credentials {
                resp.insert_header("access-control-allow-credentials", "true")?;
            }
        } else if self.cfg.enabled() {
            // The answer depends on Origin: caches must not mix them.
            resp.append_header("vary", "Origin")?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(origins: &[&str], creds: bool) -> Result<CorsConfig, ConfigError> {
        build(Some(RawCors {
            allow_origins: Some(origins.iter().map(|s| s.to_string()).collect()),
            allow_credentials: Some(creds),
            max_age_secs: None,
        }))
    }

    #[test]
    fn origins_are_validated_and_credentials_never_go_with_a_wildcard() {
        let c = cfg(&["https://App.example.com", "http://localhost:3000/"], true).unwrap();
        assert_eq!(
            c.allow("https://app.example.com").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            c.allow("http://localhost:3000").as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(c.allow("http://localhost:3001"), None);
        assert_eq!(
            cfg(&["*"], false).unwrap().allow("http://x").as_deref(),
            Some("*")
        );
        assert!(cfg(&["*"], true).is_err());
        for bad in [
            "app.example.com",
            "https://a.example/path",
            "ftp://a",
            "https://a?x=1",
        ] {
            assert!(cfg(&[bad], false).is_err(), "{bad}");
        }
        assert!(!build(None).unwrap().enabled());
        assert!(applies("/v1/chat/completions") && applies("/v1/models/gpt-4o"));
        assert!(!applies("/v1/keys") && !applies("/ui/login"));
    }
}
