//! A virtual key as stored (its hash, never the secret). Minting a key is `auth`'s job.

use serde::{Deserialize, Serialize};

use super::limits::Limits;
use super::tool_policy::ToolPolicy;

/// A virtual key as stored: never the secret itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// The first characters of the secret, to recognise a key in listings.
    pub prefix: String,
    pub created_at: u64,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub user_id: Option<String>,
    /// The team this key belongs to directly (a service key); None: its user's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    /// Refuse requests whose body names another user (None: the gateway default).
    #[serde(default)]
    pub reject_user_mismatch: Option<bool>,
    /// Budget and rate limits that apply to each end user of this key separately (the end
    /// user a request body names). None: end users are only attributed, never limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user_limits: Option<Limits>,
    /// Which gateway tools this key may use, and calls per request (None: the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolPolicy>,
    /// Which registered MCP servers, and which tools on each, this key may use through
    /// `/mcp` (None: its user's policy; neither: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<super::mcp::McpPolicy>,
    /// Guardrail policies (named in the config's `guardrails.policies`) run on this key's
    /// requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrail_policies: Vec<String>,
    /// Trace settings overriding the config's `traces.capture` / `traces.sample` for this
    /// key's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<KeyTraces>,
    /// Spend is recorded on every level as usual, but no budget ever refuses this key
    /// (monitoring and test keys). Rate limits still apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_from_budget: bool,
    /// When the key last authenticated a request (kept in memory on the request path and
    /// written to the store in batches, at most once a minute per key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<u64>,
}

/// A key's own trace settings (each unset one: the config's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct KeyTraces {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<crate::traces::settings::Capture>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
}

fn yes() -> bool {
    true
}

impl KeyRecord {
    /// The public view returned by the management API.
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": "key",
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "active": self.active,
            "user_id": self.user_id,
            "team_id": self.team_id,
            "metadata": self.metadata,
        })
    }
}
