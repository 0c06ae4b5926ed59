//! OAuth 2.0 client-credentials tokens for registered MCP servers: fetched from the server's
//! token URL when first needed, reused until shortly before they expire, and dropped when the
//! server refuses one (a 401), so that the next connection fetches a fresh one.
//!
//! The client secret and the token are secrets: neither is logged nor put in an error.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A token is refreshed this long before it expires.
const REFRESH_AHEAD: Duration = Duration::from_secs(30);
/// When the token endpoint does not say how long a token lives.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// What a token is for: the server and the credential it was fetched with (a changed
/// credential is a new entry).
type CacheKey = (String, String, String);

#[derive(Default)]
pub struct Tokens {
    cache: Mutex<HashMap<CacheKey, Token>>,
    http: std::sync::OnceLock<reqwest::Client>,
}

pub struct Credential<'a> {
    pub server: &'a str,
    pub token_url: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub scope: Option<&'a str>,
}

impl Credential<'_> {
    fn key(&self) -> CacheKey {
        (
            self.server.to_string(),
            self.token_url.to_string(),
            self.client_id.to_string(),
        )
    }
}

impl Tokens {
    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        })
    }

    /// A token that is valid for at least [`REFRESH_AHEAD`] (the cached one, or a new one),
    /// and the time from which it is due for a refresh.
    pub async fn get(&self, c: &Credential<'_>) -> Result<(String, Instant), String> {
        let key = c.key();
        if let Some(t) = self.cache.lock().get(&key) {
            if !due(t.expires) {
                return Ok((t.value.clone(), t.expires - REFRESH_AHEAD));
            }
        }
        let fresh = self.fetch(c).await?;
        self.cache.lock().insert(key, fresh.clone());
        Ok((
            fresh.value,
            fresh
                .expires
                .checked_sub(REFRESH_AHEAD)
                .unwrap_or_else(Instant::now),
        ))
    }

    /// Forgets the server's tokens (it refused one).
    pub fn invalidate(&self, server: &str) {
        self.cache.lock().retain(|k, _| k.0 != server);
    }

    async fn fetch(&self, c: &Credential<'_>) -> Result<Token, String> {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", c.client_id),
            ("client_secret", c.client_secret),
        ];
        if let Some(s) = c.scope {
            form.push(("scope", s));
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let started = Instant::now();
        let resp = self
            .http()
            .post(c.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the token endpoint of MCP server '{}' could not be reached ({})",
                    c.server,
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "connection failed"
                    }
                )
            })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let token = v.get("access_token").and_then(|t| t.as_str());
        match (status, token) {
            (200..=299, Some(t)) if !t.is_empty() => {
                let lifetime = v
                    .get("expires_in")
                    .and_then(|e| e.as_u64())
                    .map_or(DEFAULT_LIFETIME, Duration::from_secs);
                log::debug!("fetched an OAuth token for MCP server '{}'", c.server);
                Ok(Token {
                    value: t.to_string(),
                    expires: started + lifetime,
                })
            }
            _ => Err(format!(
                "the token endpoint of MCP server '{}' refused the client credentials (HTTP {status})",
                c.server
            )),
        }
    }
}

/// Whether a token expiring at `expires` is due for a refresh.
fn due(expires: Instant) -> bool {
    expires <= Instant::now() + REFRESH_AHEAD
}

/// Form encoding (application/x-www-form-urlencoded) of one value.
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
