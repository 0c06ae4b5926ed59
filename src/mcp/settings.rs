//! The MCP sections of the configuration: `mcp_servers:` (servers registered in the file,
//! read-only through the API) and `mcp_gateway:` (how tollgate's own `/mcp` endpoint caches
//! and calls them).
//!
//! ```yaml
//! mcp_servers:
//!   - name: docs                      # the id: [A-Za-z0-9_-], no "__"; tools appear as docs__<tool>
//!     url: https://mcp.example.com/mcp
//!     description: Internal documentation search
//!     transport: streamable_http      # streamable_http (default) | sse
//!     auth:                           # what tollgate presents (never the caller's key)
//!       type: header
//!       name: Authorization
//!       value: "Bearer ${DOCS_MCP_TOKEN}"
//!     # auth: {type: oauth, token_url: ..., client_id: ..., client_secret: ${...}, scope: ...}
//!     price_per_call: "0.002"         # USD billed to the key per successful call
//!     call_timeout_ms: 30000          # default: mcp_gateway.call_timeout_ms
//! mcp_gateway:
//!   tools_ttl_secs: 300               # how long a server's tool list is cached
//!   call_timeout_ms: 60000            # default per-call timeout
//!   connect_timeout_ms: 10000         # connecting and initialising a server session
//! ```

use serde::Deserialize;
use std::time::Duration;

use super::registry::validate;
use crate::config::ConfigError;
use crate::records::mcp::{McpAuth, McpServerRecord, McpTransport};
use crate::records::money::parse_usd;

/// One `mcp_servers:` entry as written.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    pub name: String,
    pub url: String,
    pub description: Option<String>,
    pub transport: Option<String>,
    pub auth: Option<McpAuth>,
    /// USD, as a number or a decimal string.
    pub price_per_call: Option<serde_yaml::Value>,
    pub call_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMcpGateway {
    pub tools_ttl_secs: Option<u64>,
    pub call_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
}

/// The validated MCP settings.
#[derive(Debug, Clone, PartialEq)]
pub struct McpSettings {
    /// Servers from the file, in the file's order.
    pub servers: Vec<McpServerRecord>,
    pub tools_ttl: Duration,
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for McpSettings {
    fn default() -> McpSettings {
        McpSettings {
            servers: Vec::new(),
            tools_ttl: Duration::from_secs(300),
            call_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

fn millis(field: &str, v: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(ms) if (1..=3_600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        Some(_) => Err(ConfigError::new(field, "must be between 1 and 3600000")),
    }
}

/// Parses a price written as a YAML number or string ("0.002") into micro-dollars.
fn price(field: &str, v: &serde_yaml::Value) -> Result<u64, ConfigError> {
    let text = match v {
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s.clone(),
        _ => String::new(),
    };
    parse_usd(&text).ok_or_else(|| {
        ConfigError::new(
            field,
            "must be a USD amount such as 0.002 (at most six decimals)",
        )
    })
}

pub fn build(
    servers: Option<Vec<RawMcpServer>>,
    gateway: Option<RawMcpGateway>,
) -> Result<McpSettings, ConfigError> {
    let d = McpSettings::default();
    let g = gateway.unwrap_or_default();
    let mut out = McpSettings {
        servers: Vec::new(),
        tools_ttl: match g.tools_ttl_secs {
            None => d.tools_ttl,
            Some(s) if s <= 86_400 => Duration::from_secs(s),
            Some(_) => {
                return Err(ConfigError::new(
                    "mcp_gateway.tools_ttl_secs",
                    "must be at most 86400",
                ))
            }
        },
        call_timeout: millis(
            "mcp_gateway.call_timeout_ms",
            g.call_timeout_ms,
            d.call_timeout,
        )?,
        connect_timeout: millis(
            "mcp_gateway.connect_timeout_ms",
            g.connect_timeout_ms,
            d.connect_timeout,
        )?,
    };
    for (i, s) in servers.unwrap_or_default().into_iter().enumerate() {
        let field = format!("mcp_servers[{i}]");
        let transport = match s.transport.as_deref() {
            None => McpTransport::default(),
            Some(t) => McpTransport::parse(t).ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.transport"),
                    "must be streamable_http or sse",
                )
            })?,
        };
        let rec = McpServerRecord {
            id: s.name,
            url: s.url,
            description: s.description,
            transport,
            auth: s.auth,
            price_per_call_micros: s
                .price_per_call
                .as_ref()
                .map(|v| price(&format!("{field}.price_per_call"), v))
                .transpose()?,
            call_timeout_ms: s.call_timeout_ms,
            created_at: 0,
            updated_at: 0,
        };
        validate(&rec).map_err(|(f, m)| ConfigError::new(format!("{field}.{f}"), m))?;
        if out.servers.iter().any(|o| o.id == rec.id) {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!("'{}' is registered twice", rec.id),
            ));
        }
        out.servers.push(rec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(yaml: &str) -> Result<McpSettings, ConfigError> {
        build(Some(serde_yaml::from_str(yaml).unwrap()), None)
    }

    #[test]
    fn reads_servers_with_credentials_and_prices() {
        let s = servers(
            r#"
- name: docs
  url: http://127.0.0.1:9/mcp
  auth: {type: header, name: Authorization, value: Bearer x}
  price_per_call: 0.002
- name: crm
  url: https://crm.example.com/mcp
  transport: sse
  auth: {type: oauth, token_url: "https://auth.example.com/token", client_id: a, client_secret: b}
  price_per_call: "1.5"
"#,
        )
        .unwrap();
        assert_eq!(s.servers[0].price_per_call_micros, Some(2000));
        assert_eq!(s.servers[1].transport, McpTransport::Sse);
        assert_eq!(s.servers[1].price_per_call_micros, Some(1_500_000));
    }

    #[test]
    fn refuses_bad_entries() {
        for (yaml, field) in [
            (
                "- {name: 'a__b', url: 'http://x/mcp'}",
                "mcp_servers[0].name",
            ),
            ("- {name: a, url: 'ftp://x/mcp'}", "mcp_servers[0].url"),
            (
                "- {name: a, url: 'http://x', transport: ws}",
                "mcp_servers[0].transport",
            ),
            (
                "- {name: a, url: 'http://x', price_per_call: -1}",
                "mcp_servers[0].price_per_call",
            ),
            (
                "- {name: a, url: 'http://x'}\n- {name: a, url: 'http://y'}",
                "mcp_servers[1].name",
            ),
        ] {
            assert_eq!(servers(yaml).unwrap_err().field, field, "{yaml}");
        }
    }
}
