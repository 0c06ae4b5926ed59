//! The registered MCP servers: the config's (read-only) and the API's (stored), held
//! lock-free for `/mcp` and replaced whole when the store's set changes (at load, after a
//! management write, and when another instance of a shared store changed it).

use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::records::mcp::McpAuth;
use crate::records::McpServerRecord;

/// Where a server was registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Config,
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

pub struct Registry {
    config: BTreeMap<String, Arc<McpServerRecord>>,
    stored: ArcSwap<BTreeMap<String, Arc<McpServerRecord>>>,
}

impl Registry {
    pub fn new(config: &[McpServerRecord]) -> Registry {
        Registry {
            config: config
                .iter()
                .map(|s| (s.id.clone(), Arc::new(s.clone())))
                .collect(),
            stored: ArcSwap::from_pointee(BTreeMap::new()),
        }
    }

    /// Replaces the stored servers (a stored one named like a config one is shadowed).
    pub fn replace_stored(&self, servers: Vec<McpServerRecord>) {
        self.stored.store(Arc::new(
            servers
                .into_iter()
                .map(|s| (s.id.clone(), Arc::new(s)))
                .collect(),
        ));
    }

    pub fn upsert_stored(&self, s: McpServerRecord) {
        self.stored.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.insert(s.id.clone(), Arc::new(s.clone()));
            m
        });
    }

    pub fn remove_stored(&self, id: &str) {
        self.stored.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.remove(id);
            m
        });
    }

    pub fn get(&self, id: &str) -> Option<(Arc<McpServerRecord>, Source)> {
        if let Some(s) = self.config.get(id) {
            return Some((s.clone(), Source::Config));
        }
        self.stored.load().get(id).map(|s| (s.clone(), Source::Api))
    }

    /// Every server, sorted by id.
    pub fn all(&self) -> Vec<(Arc<McpServerRecord>, Source)> {
        let stored = self.stored.load();
        let mut out: Vec<_> = self
            .config
            .values()
            .map(|s| (s.clone(), Source::Config))
            .chain(
                stored
                    .values()
                    .filter(|s| !self.config.contains_key(&s.id))
                    .map(|s| (s.clone(), Source::Api)),
            )
            .collect();
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.config.is_empty() && self.stored.load().is_empty()
    }
}

/// A server id: what tool names are prefixed with (`id__tool`), so no `__` in it.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.contains("__")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn http_url(u: &str) -> bool {
    url::Url::parse(u)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// Checks a record from the config or the API; the error names the field at fault.
pub fn validate(s: &McpServerRecord) -> Result<(), (&'static str, String)> {
    if !valid_id(&s.id) {
        return Err((
            "name",
            "must be 1-64 characters of letters, digits, '_' and '-', without '__'".into(),
        ));
    }
    if !http_url(&s.url) {
        return Err(("url", "must be an http(s) URL".into()));
    }
    if s.description.as_ref().is_some_and(|d| d.len() > 2000) {
        return Err(("description", "must be at most 2000 characters".into()));
    }
    if let Some(ms) = s.call_timeout_ms {
        if !(1..=3_600_000).contains(&ms) {
            return Err(("call_timeout_ms", "must be between 1 and 3600000".into()));
        }
    }
    match &s.auth {
        Some(McpAuth::Header { name, value }) => {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(("auth.name", "is not a valid header name".into()));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err((
                    "auth.value",
                    "is not a valid header value (printable ASCII)".into(),
                ));
            }
        }
        Some(McpAuth::Oauth {
            token_url,
            client_id,
            client_secret,
            ..
        }) => {
            if !http_url(token_url) {
                return Err(("auth.token_url", "must be an http(s) URL".into()));
            }
            if client_id.is_empty() || client_secret.is_empty() {
                return Err((
                    "auth",
                    "an oauth credential needs client_id and client_secret".into(),
                ));
            }
        }
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> McpServerRecord {
        McpServerRecord {
            id: id.into(),
            url: "http://127.0.0.1:9/mcp".into(),
            description: None,
            transport: Default::default(),
            auth: None,
            price_per_call_micros: None,
            call_timeout_ms: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn config_servers_shadow_stored_ones() {
        let r = Registry::new(&[rec("a")]);
        let mut b = rec("a");
        b.url = "http://other/mcp".into();
        r.replace_stored(vec![b, rec("c")]);
        assert_eq!(r.get("a").unwrap().1, Source::Config);
        assert_eq!(r.get("a").unwrap().0.url, "http://127.0.0.1:9/mcp");
        let all: Vec<_> = r.all().iter().map(|(s, _)| s.id.clone()).collect();
        assert_eq!(all, ["a", "c"]);
        r.remove_stored("c");
        assert!(r.get("c").is_none());
        r.upsert_stored(rec("d"));
        assert_eq!(r.get("d").unwrap().1, Source::Api);
    }

    #[test]
    fn ids() {
        assert!(valid_id("docs-1_x"));
        assert!(!valid_id("a__b") && !valid_id("") && !valid_id("a b") && !valid_id("a/b"));
    }
}
