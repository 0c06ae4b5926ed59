//! The records that the ledger, the store, the management API and the gateway share: keys,
//! users, named budgets and their limits, usage records, and the spend a settled request
//! charges. Plain data with its serde form (the stored form: changing a field's encoding
//! changes what is on disk) and the pure logic of its values.
//!
//! A leaf: it imports nothing from the crate but its own modules, so every other module can
//! use it without a cycle.

pub mod alert;
pub mod group;
pub mod key;
pub mod limits;
pub mod mcp;
pub mod money;
pub mod period;
pub mod response;
pub mod tool_policy;
pub mod trace;
pub mod usage;

use serde::{Deserialize, Serialize};

pub use alert::{AlertMask, AlertRecord};
pub use group::{GroupKind, GroupRecord, OrgRecord, TeamRecord};
pub use key::KeyRecord;
pub use limits::{BudgetOverride, BudgetRecord, Limit, Limits, ScopedBudget, TopUp, UserRecord};
pub use mcp::{McpGrant, McpPolicy, McpServerRecord};
pub use money::Micros;
pub use response::{Conversation, StoredResponse};
pub use tool_policy::{ToolGrant, ToolPolicy};
pub use trace::{Trace, TraceBodies, TraceBody, TraceFilter, TracePage};

pub use usage::{GuardrailOutcome, UsageRecord};

/// Which kind of owner an account has, for messages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Key,
    User,
    /// An end user (the body's `user`, `safety_identifier` or `metadata.user_id`) under one
    /// key: the account id is `{key_id}/{end_user}` (see [`end_user_id`]).
    EndUser,
    Team,
    Org,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::User => "user",
            Scope::EndUser => "end user",
            Scope::Team => "team",
            Scope::Org => "org",
        }
    }

    /// The one-letter code stores write for the scope (sled's spend keys, PostgreSQL's
    /// `scope` columns, and the budget leases of a shared store).
    pub fn code(self) -> &'static str {
        match self {
            Scope::Key => "k",
            Scope::User => "u",
            Scope::EndUser => "e",
            Scope::Team => "t",
            Scope::Org => "o",
        }
    }

    /// The scope of a stored code (see [`Scope::code`]).
    pub fn from_code(code: &str) -> Option<Scope> {
        match code {
            "k" => Some(Scope::Key),
            "u" => Some(Scope::User),
            "e" => Some(Scope::EndUser),
            "t" => Some(Scope::Team),
            "o" => Some(Scope::Org),
            _ => None,
        }
    }
}

/// The account id of `end_user` under the key `key_id`. Key ids never contain '/', so the
/// first '/' separates the two.
pub fn end_user_id(key_id: &str, end_user: &str) -> String {
    format!("{key_id}/{end_user}")
}

/// One spend increment to persist: which account, in which window, how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub scope: Scope,
    pub id: String,
    pub window_start: u64,
    pub amount: Micros,
}

/// A settled request on its way to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settled {
    pub record: UsageRecord,
    pub charges: Vec<Charge>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_codes_round_trip() {
        for s in [
            Scope::Key,
            Scope::User,
            Scope::EndUser,
            Scope::Team,
            Scope::Org,
        ] {
            assert_eq!(Scope::from_code(s.code()), Some(s));
        }
        assert_eq!(Scope::from_code("x"), None);
    }
}
