//! The guardrail service client, on Otari's wire contract:
//! `POST {url}/validate` with `{"profile","input_text","validate_kwargs"}`, answered with
//! `{"profile","result":{"valid":bool|null,"explanation","score"}}` (a list `result` means its
//! first item). Calls go through [`crate::outbound`]: pooled keep-alive connections, the
//! per-call timeout, and the SSRF check on every address (operator URLs may reach private
//! ranges; a request's URL only loopback, unless the operator allows private ones).
//!
//! An optional verdict cache (off by default) keys each verdict by the service, the profile,
//! the kwargs and a SHA-256 of the text, for a TTL.

use once_cell::sync::OnceCell;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Instant;

use super::{Entry, Settings};
use crate::outbound::{self, ClientSettings, HostPolicy};

/// A service's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub valid: Option<bool>,
    pub explanation: Value,
    pub score: Option<f64>,
}

/// Why a check got no verdict (for the log line; never holds the text checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// Replies larger than this are malformed.
const MAX_REPLY: usize = 1024 * 1024;
/// Verdicts the cache holds at most (it is emptied of expired ones, then cleared, beyond).
const MAX_CACHED: usize = 10_000;

/// The guardrail side of the process state: the settings, the service clients (built on
/// first use: a gateway without guardrails never builds one) and the verdict cache.
pub struct Guardrails {
    pub settings: Settings,
    operator: OnceCell<reqwest::Client>,
    request: OnceCell<reqwest::Client>,
    cache: Mutex<HashMap<[u8; 32], (Instant, Reply)>>,
}

impl Guardrails {
    pub fn new(settings: Settings) -> Guardrails {
        Guardrails {
            settings,
            operator: OnceCell::new(),
            request: OnceCell::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, operator: bool) -> &reqwest::Client {
        let (cell, policy) = if operator {
            (&self.operator, HostPolicy::ANY)
        } else {
            (&self.request, self.settings.request_urls())
        };
        cell.get_or_init(|| outbound::client(ClientSettings::new(policy, self.settings.timeout)))
    }

    /// Asks the entry's service about `text`.
    pub async fn validate(&self, entry: &Entry, text: &str) -> Result<Reply, Unavailable> {
        // The request's own URL, else the configured one (an operator's URL either way).
        let (url, operator) = match (&entry.url, &self.settings.url) {
            (Some(u), _) => (u.as_str(), entry.operator),
            (None, Some(u)) => (u.as_str(), true),
            (None, None) => {
                return Err(Unavailable(
                    "no guardrail service URL (set guardrails.url or the entry's url)".into(),
                ))
            }
        };
        let kwargs = Value::Object(entry.validate_kwargs.clone());
        let key = self
            .settings
            .cache_ttl
            .map(|_| cache_key(url, &entry.profile, &kwargs, text));
        if let Some(hit) = key.as_ref().and_then(|k| self.cached(k)) {
            return Ok(hit);
        }
        let body = json!({"profile": entry.profile, "input_text": text, "validate_kwargs": kwargs});
        let reply = self.call(url, operator, body.to_string()).await?;
        if let Some(k) = key {
            self.remember(k, reply.clone());
        }
        Ok(reply)
    }

    async fn call(&self, url: &str, operator: bool, body: String) -> Result<Reply, Unavailable> {
        let endpoint = format!("{}/validate", url.trim_end_matches('/'));
        let failed = |e: reqwest::Error| {
            Unavailable(match outbound::refusal(&e) {
                Some(r) => format!("refused: {r}"),
                None if e.is_timeout() => "timed out".into(),
                None if e.is_connect() => "connection failed".into(),
                None => "request failed".into(),
            })
        };
        let mut resp = self
            .client(operator)
            .post(endpoint)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(Unavailable(format!("the service answered HTTP {status}")));
        }
        let mut buf = Vec::new();
        while let Some(c) = resp.chunk().await.map_err(failed)? {
            if buf.len() + c.len() > MAX_REPLY {
                return Err(Unavailable("the reply is too large".into()));
            }
            buf.extend_from_slice(&c);
        }
        parse_reply(&buf).map_err(|m| Unavailable(format!("malformed reply: {m}")))
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Reply> {
        let ttl = self.settings.cache_ttl?;
        let cache = self.cache.lock();
        let (at, reply) = cache.get(key)?;
        (at.elapsed() < ttl).then(|| reply.clone())
    }

    fn remember(&self, key: [u8; 32], reply: Reply) {
        let Some(ttl) = self.settings.cache_ttl else {
            return;
        };
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), reply));
    }
}

/// The cache key: what makes a verdict the same verdict.
fn cache_key(url: &str, profile: &str, kwargs: &Value, text: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [url, profile, &kwargs.to_string()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(text.as_bytes());
    h.finalize().into()
}

/// Reads a `/validate` reply: `result` an object (or a list: its first item) whose `valid` is
/// a boolean or null.
pub fn parse_reply(body: &[u8]) -> Result<Reply, &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    let result = match v.get("result") {
        Some(Value::Array(a)) => a.first().ok_or("an empty result list")?,
        Some(r @ Value::Object(_)) => r,
        _ => return Err("no result object"),
    };
    let valid = match result.get("valid") {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Null) => None,
        _ => return Err("'valid' is missing or not a boolean"),
    };
    Ok(Reply {
        valid,
        explanation: result.get("explanation").cloned().unwrap_or(Value::Null),
        score: result.get("score").and_then(Value::as_f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        let r = parse_reply(
            br#"{"profile":"p","result":{"valid":false,"explanation":"injection","score":0.9}}"#,
        )
        .unwrap();
        assert_eq!(r.valid, Some(false));
        assert_eq!(r.explanation, "injection");
        assert_eq!(r.score, Some(0.9));
        let r = parse_reply(br#"{"result":[{"valid":true},{"valid":false}]}"#).unwrap();
        assert_eq!(r.valid, Some(true), "a list: its first item");
        let r = parse_reply(br#"{"result":{"valid":null}}"#).unwrap();
        assert_eq!(r.valid, None);
        for bad in [
            &b"nope"[..],
            br#"{"result":{}}"#,
            br#"{"result":{"valid":"false"}}"#,
            br#"{"result":[]}"#,
            br#"{"valid":true}"#,
            br#"{"result":"ok"}"#,
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn cache_keys_tell_apart_what_differs() {
        let k = |u, p, t| cache_key(u, p, &json!({}), t);
        assert_eq!(k("u", "p", "t"), k("u", "p", "t"));
        assert_ne!(k("u", "p", "t"), k("u", "p", "t2"));
        assert_ne!(k("u", "p", "t"), k("u", "q", "t"));
        assert_ne!(k("u", "pt", ""), k("u", "p", "t"));
        assert_ne!(
            cache_key("u", "p", &json!({"a": 1}), "t"),
            cache_key("u", "p", &json!({}), "t")
        );
    }

    #[tokio::test]
    async fn no_url_is_unavailable() {
        let g = Guardrails::new(Settings::default());
        let e = g.validate(&Entry::new("p"), "text").await.unwrap_err();
        assert!(e.0.contains("no guardrail service URL"), "{e:?}");
    }
}
