//! Which gateway tools a key or user may use, and how many calls of each one request may
//! make. Stored on the key or user record; absent means the gateway default (allowed, no
//! cap beyond the request's iteration cap).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The gateway tools a policy can name (the functions the model is offered).
pub const TOOL_NAMES: [&str; 2] = ["web_search", "code_execution"];

/// One tool's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolGrant {
    #[serde(default = "yes")]
    pub allowed: bool,
    /// Calls of this tool one request may make (None: no cap of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u32>,
}

impl Default for ToolGrant {
    fn default() -> ToolGrant {
        ToolGrant {
            allowed: true,
            max_calls: None,
        }
    }
}

impl ToolGrant {
    /// The stricter of two grants: allowed only if both allow, the lower cap.
    pub fn and(self, other: ToolGrant) -> ToolGrant {
        ToolGrant {
            allowed: self.allowed && other.allowed,
            max_calls: match (self.max_calls, other.max_calls) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// A key's or user's tool policy, by tool name.
pub type ToolPolicy = BTreeMap<String, ToolGrant>;

/// What `policy` grants for `tool` (the default when it does not name it).
pub fn grant(policy: Option<&ToolPolicy>, tool: &str) -> ToolGrant {
    policy
        .and_then(|p| p.get(tool))
        .copied()
        .unwrap_or_default()
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stricter_grant_wins() {
        let open = ToolGrant::default();
        let capped = ToolGrant {
            allowed: true,
            max_calls: Some(3),
        };
        let lower = ToolGrant {
            allowed: true,
            max_calls: Some(1),
        };
        let denied = ToolGrant {
            allowed: false,
            max_calls: None,
        };
        assert_eq!(open.and(capped), capped);
        assert_eq!(capped.and(lower).max_calls, Some(1));
        assert!(!capped.and(denied).allowed);
        assert_eq!(capped.and(denied).max_calls, Some(3));
    }

    #[test]
    fn an_unnamed_tool_gets_the_default() {
        let mut p = ToolPolicy::new();
        p.insert(
            "web_search".into(),
            ToolGrant {
                allowed: false,
                max_calls: None,
            },
        );
        assert!(!grant(Some(&p), "web_search").allowed);
        assert_eq!(grant(Some(&p), "code_execution"), ToolGrant::default());
        assert_eq!(grant(None, "web_search"), ToolGrant::default());
    }

    #[test]
    fn stored_form_omits_what_is_unset() {
        let g: ToolGrant = serde_json::from_str("{}").unwrap();
        assert_eq!(g, ToolGrant::default());
        assert_eq!(serde_json::to_string(&g).unwrap(), r#"{"allowed":true}"#);
    }
}
