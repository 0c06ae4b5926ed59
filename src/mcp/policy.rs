//! Who may use which registered MCP server and tool: the MCP policies bounding a key (its
//! own, its user's; a team's once teams exist, see [`bounding`]) all have to allow a call,
//! and each one's per-tool rate limit counts its own account (a key's limit per key, a
//! user's across the user's keys).
//!
//! A key bounded by no MCP policy uses no registered server: tollgate holds the servers'
//! credentials, so access is granted, never assumed.

use parking_lot::Mutex;
use std::collections::HashMap;

use crate::records::{KeyRecord, McpGrant, McpPolicy, UserRecord};

/// One policy bounding a caller, and the account its rate limits count.
#[derive(Debug, Clone)]
pub struct Bound {
    /// `key:<id>` or `user:<id>` (`team:<id>` later).
    pub account: String,
    pub policy: McpPolicy,
}

/// The policies bounding `key`: its own and its user's. The seam for teams ([T15]): a
/// team's policy is one more [`Bound`] here.
pub fn bounding(key: &KeyRecord, user: Option<&UserRecord>) -> Vec<Bound> {
    let mut out = Vec::new();
    if let Some(p) = &key.mcp {
        out.push(Bound {
            account: format!("key:{}", key.id),
            policy: p.clone(),
        });
    }
    if let Some(p) = user.and_then(|u| u.mcp.as_ref()) {
        out.push(Bound {
            account: format!("user:{}", user.map_or("", |u| u.user_id.as_str())),
            policy: p.clone(),
        });
    }
    out
}

fn grants<'a>(bounds: &'a [Bound], server: &str) -> Option<Vec<(&'a str, &'a McpGrant)>> {
    if bounds.is_empty() {
        return None;
    }
    bounds
        .iter()
        .map(|b| b.policy.get(server).map(|g| (b.account.as_str(), g)))
        .collect()
}

/// Whether every bounding policy names `server`.
pub fn may_use_server(bounds: &[Bound], server: &str) -> bool {
    grants(bounds, server).is_some()
}

/// Whether every bounding policy allows `tool` on `server`.
pub fn may_call(bounds: &[Bound], server: &str, tool: &str) -> bool {
    grants(bounds, server).is_some_and(|g| g.iter().all(|(_, g)| g.allows(tool)))
}

/// Calls per minute, counted per (account, server, tool) in fixed one-minute windows. Local
/// to this process: with several instances each one counts its own calls.
#[derive(Default)]
pub struct RateLimits {
    windows: Mutex<HashMap<Window, (u64, u32)>>,
}

/// (account, server, tool) → (minute, calls in it).
type Window = (String, String, String);

impl RateLimits {
    /// Counts a call of `tool` if every bounding limit has room; otherwise the seconds
    /// until the window that is full rolls over.
    pub fn admit(
        &self,
        bounds: &[Bound],
        server: &str,
        tool: &str,
        now_secs: u64,
    ) -> Result<(), u64> {
        let limits: Vec<(&str, u32)> = grants(bounds, server)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(acct, g)| g.rate_limit(tool).map(|n| (acct, n)))
            .collect();
        if limits.is_empty() {
            return Ok(());
        }
        let minute = now_secs / 60;
        let mut w = self.windows.lock();
        // Old windows go as the map is used, so it holds at most the active triples.
        if w.len() > 10_000 {
            w.retain(|_, (m, _)| *m == minute);
        }
        let full = limits.iter().any(|(acct, n)| {
            let k = (acct.to_string(), server.to_string(), tool.to_string());
            w.get(&k)
                .is_some_and(|(m, count)| *m == minute && *count >= *n)
        });
        if full {
            return Err(60 - now_secs % 60);
        }
        for (acct, _) in limits {
            let e = w
                .entry((acct.to_string(), server.to_string(), tool.to_string()))
                .or_insert((minute, 0));
            if e.0 != minute {
                *e = (minute, 0);
            }
            e.1 += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(acct: &str, json: &str) -> Bound {
        Bound {
            account: acct.into(),
            policy: serde_json::from_str(json).unwrap(),
        }
    }

    #[test]
    fn every_policy_must_allow() {
        assert!(!may_use_server(&[], "docs"));
        let key = bound("key:k", r#"{"docs": {"tools": ["search*", "echo"]}}"#);
        let user = bound("user:u", r#"{"docs": {}, "crm": {}}"#);
        let both = [key.clone(), user.clone()];
        assert!(may_call(&both, "docs", "search_all"));
        assert!(!may_call(&both, "docs", "delete"));
        assert!(
            !may_use_server(&both, "crm"),
            "the key's policy does not name it"
        );
        assert!(may_call(&[user], "crm", "anything"));
        assert!(!may_call(&[key], "crm", "anything"));
    }

    #[test]
    fn rate_limits_count_per_account_and_minute() {
        let b = [
            bound("key:k", r#"{"docs": {"rate_limits": {"echo": 2}}}"#),
            bound("user:u", r#"{"docs": {"rate_limits": {"*": 3}}}"#),
        ];
        let r = RateLimits::default();
        let t = 600;
        assert!(r.admit(&b, "docs", "echo", t).is_ok());
        assert!(r.admit(&b, "docs", "echo", t + 1).is_ok());
        assert_eq!(r.admit(&b, "docs", "echo", t + 2), Err(58));
        assert!(r.admit(&b, "docs", "other", t + 2).is_ok(), "per tool");
        assert!(r.admit(&b, "docs", "echo", t + 60).is_ok(), "next minute");
        assert!(r.admit(&[], "docs", "echo", t).is_ok(), "no limits");
    }
}
