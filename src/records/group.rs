//! Teams and organisations: the levels above users and keys. An organisation holds teams; a
//! team holds users and keys (a service key may belong to a team without a user). Both carry
//! the same governance: budgets, rate limits, allowed models, tool and MCP policies, and
//! metadata, so they share one record type told apart by [`GroupKind`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limits::Limits;
use super::mcp::McpPolicy;
use super::tool_policy::ToolPolicy;
use super::Scope;

/// Which level a [`GroupRecord`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKind {
    Team,
    Org,
}

impl GroupKind {
    /// The spend scope of the group's budgets.
    pub fn scope(self) -> Scope {
        match self {
            GroupKind::Team => Scope::Team,
            GroupKind::Org => Scope::Org,
        }
    }

    /// The singular noun used in messages and the API's `object` field.
    pub fn noun(self) -> &'static str {
        match self {
            GroupKind::Team => "team",
            GroupKind::Org => "org",
        }
    }

    /// The collection name: the API path segment, the sled tree, the change counter.
    pub fn plural(self) -> &'static str {
        match self {
            GroupKind::Team => "teams",
            GroupKind::Org => "orgs",
        }
    }
}

/// A team or an organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub id: String,
    #[serde(default)]
    pub alias: Option<String>,
    /// The organisation a team belongs to (always None for an organisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpPolicy>,
    #[serde(default)]
    pub metadata: Value,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A team.
pub type TeamRecord = GroupRecord;
/// An organisation.
pub type OrgRecord = GroupRecord;
