//! MCP servers registered in tollgate (`mcp_servers:` in the config, `/v1/mcp/servers`), and
//! the MCP policy of a key or user: which registered servers it may use, which tools on each
//! (an allow-list with `*` wildcards), and per-tool rate limits.
//!
//! A server record holds the credentials tollgate presents to the server; they are stored
//! (tollgate needs them to call the server) but never shown: [`McpServerRecord::public_json`]
//! says that a credential is set, not what it is.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::money::{format_usd, Micros};

/// How tollgate talks to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpTransport {
    /// Streamable HTTP (the current MCP transport).
    #[default]
    StreamableHttp,
    /// The older HTTP+SSE transport.
    Sse,
}

impl McpTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            McpTransport::StreamableHttp => "streamable_http",
            McpTransport::Sse => "sse",
        }
    }

    pub fn parse(s: &str) -> Option<McpTransport> {
        match s {
            "streamable_http" | "http" => Some(McpTransport::StreamableHttp),
            "sse" => Some(McpTransport::Sse),
            _ => None,
        }
    }
}

/// The credential tollgate presents to a server (the caller's key is never forwarded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum McpAuth {
    /// A static header, e.g. `Authorization: Bearer …` or `X-API-Key: …`.
    Header { name: String, value: String },
    /// An OAuth 2.0 client-credentials token, fetched from `token_url` and refreshed before
    /// it expires and after a 401.
    Oauth {
        token_url: String,
        client_id: String,
        client_secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

impl McpAuth {
    /// What the management API shows: the kind and the non-secret parts.
    pub fn public_json(&self) -> Value {
        match self {
            McpAuth::Header { name, .. } => {
                json!({"type": "header", "name": name, "value_set": true})
            }
            McpAuth::Oauth {
                token_url,
                client_id,
                scope,
                ..
            } => json!({
                "type": "oauth",
                "token_url": token_url,
                "client_id": client_id,
                "scope": scope,
                "client_secret_set": true,
            }),
        }
    }
}

/// A registered MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServerRecord {
    /// The server's name: its id in the API, in policies and in tool names (`id__tool`).
    pub id: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub transport: McpTransport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<McpAuth>,
    /// Billed to the key for each successful call (None: free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_call_micros: Option<Micros>,
    /// The longest a call may take (None: the gateway default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub updated_at: u64,
}

impl McpServerRecord {
    /// The management API's view; `source` is `config` or `api`.
    pub fn public_json(&self, source: &str) -> Value {
        json!({
            "object": "mcp_server",
            "id": self.id,
            "name": self.id,
            "url": self.url,
            "description": self.description,
            "transport": self.transport.as_str(),
            "auth": self.auth.as_ref().map(McpAuth::public_json),
            "price_per_call": self.price_per_call_micros.map(format_usd),
            "call_timeout_ms": self.call_timeout_ms,
            "source": source,
            "read_only": source == "config",
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// What a policy grants on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpGrant {
    /// Tool names or patterns with `*` wildcards (`["*"]`: every tool).
    #[serde(default = "every_tool")]
    pub tools: Vec<String>,
    /// Calls per minute, by tool name or pattern (the first matching pattern applies).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, u32>,
}

fn every_tool() -> Vec<String> {
    vec!["*".into()]
}

impl Default for McpGrant {
    fn default() -> McpGrant {
        McpGrant {
            tools: every_tool(),
            rate_limits: BTreeMap::new(),
        }
    }
}

impl McpGrant {
    pub fn allows(&self, tool: &str) -> bool {
        self.tools.iter().any(|p| wildcard_match(p, tool))
    }

    /// Calls per minute of `tool` (an exact name wins over a pattern).
    pub fn rate_limit(&self, tool: &str) -> Option<u32> {
        self.rate_limits.get(tool).copied().or_else(|| {
            self.rate_limits
                .iter()
                .find(|(p, _)| wildcard_match(p, tool))
                .map(|(_, n)| *n)
        })
    }
}

/// A key's or user's MCP policy, by server id. A server it does not name is not usable.
pub type McpPolicy = BTreeMap<String, McpGrant>;

/// Whether `name` matches `pattern`, where `*` matches any run of characters (also empty).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", "search"));
        assert!(wildcard_match("search", "search"));
        assert!(!wildcard_match("search", "searches"));
        assert!(wildcard_match("get_*", "get_weather"));
        assert!(!wildcard_match("get_*", "set_weather"));
        assert!(wildcard_match("*_admin", "drop_admin"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxcyyb"));
        assert!(!wildcard_match("ab*ba", "aba"));
    }

    #[test]
    fn grant_defaults_and_rates() {
        let g: McpGrant = serde_json::from_str("{}").unwrap();
        assert!(g.allows("anything"));
        let g: McpGrant = serde_json::from_str(
            r#"{"tools":["echo","get_*"],"rate_limits":{"get_*":5,"get_x":1}}"#,
        )
        .unwrap();
        assert!(g.allows("echo") && g.allows("get_y") && !g.allows("delete"));
        assert_eq!(g.rate_limit("get_x"), Some(1));
        assert_eq!(g.rate_limit("get_y"), Some(5));
        assert_eq!(g.rate_limit("echo"), None);
    }

    #[test]
    fn secrets_are_not_shown() {
        let r = McpServerRecord {
            id: "docs".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            description: None,
            transport: McpTransport::StreamableHttp,
            auth: Some(McpAuth::Oauth {
                token_url: "http://127.0.0.1:1/token".into(),
                client_id: "cid".into(),
                client_secret: "s3cret".into(),
                scope: None,
            }),
            price_per_call_micros: Some(2500),
            call_timeout_ms: None,
            created_at: 0,
            updated_at: 0,
        };
        let v = r.public_json("api").to_string();
        assert!(!v.contains("s3cret"));
        assert!(v.contains("\"client_secret_set\":true"));
        assert!(v.contains("\"price_per_call\":\"0.0025\""));
        let h = McpAuth::Header {
            name: "Authorization".into(),
            value: "Bearer tok".into(),
        };
        assert!(!h.public_json().to_string().contains("tok"));
    }
}
