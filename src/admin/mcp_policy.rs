//! The `mcp` field of keys and users: which registered MCP servers they may use through
//! `/mcp`, which tools on each (names or `*` patterns) and calls per minute by tool, e.g.
//! `{"docs": {"tools": ["search*", "get_page"], "rate_limits": {"search*": 30}}}`.
//! An update merges by server (a server set to null is taken away); `mcp: null` clears the
//! whole policy. Servers need not be registered yet (a policy may be written first).

use serde_json::{Map, Value};
use std::collections::BTreeMap;

use crate::error::GatewayError;
use crate::mcp::registry::valid_id;
use crate::records::{McpGrant, McpPolicy};

/// The most calls per minute a limit may name (keeps typos such as 1e9 out of the store).
const MAX_RATE: u64 = 1_000_000;

fn bad(message: String, param: String) -> GatewayError {
    GatewayError::invalid(message).with_param(param)
}

/// The policy after applying the request's `mcp` value to `current`.
pub fn apply(v: &Value, current: Option<McpPolicy>) -> Result<Option<McpPolicy>, GatewayError> {
    let obj = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => {
            return Err(bad(
                "'mcp' must be an object keyed by MCP server id, or null.".into(),
                "mcp".into(),
            ))
        }
    };
    let mut policy = current.unwrap_or_default();
    for (server, entry) in obj {
        if !valid_id(server) {
            return Err(bad(
                format!("'{server}' is not an MCP server id."),
                format!("mcp.{server}"),
            ));
        }
        match entry {
            Value::Null => {
                policy.remove(server);
            }
            Value::Object(o) => {
                policy.insert(server.clone(), grant(server, o)?);
            }
            _ => {
                return Err(bad(
                    format!("'mcp.{server}' must be an object (tools, rate_limits) or null."),
                    format!("mcp.{server}"),
                ))
            }
        }
    }
    Ok((!policy.is_empty()).then_some(policy))
}

fn pattern(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|s| !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control))
        .map(String::from)
}

fn grant(server: &str, o: &Map<String, Value>) -> Result<McpGrant, GatewayError> {
    if let Some(f) = o
        .keys()
        .find(|f| !["tools", "rate_limits"].contains(&f.as_str()))
    {
        return Err(bad(
            format!("Unknown field '{f}' in 'mcp.{server}'. Allowed: tools, rate_limits."),
            format!("mcp.{server}.{f}"),
        ));
    }
    let mut g = McpGrant::default();
    match o.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.len() <= 1000 => {
            g.tools = a.iter().map(pattern).collect::<Option<Vec<_>>>().ok_or_else(|| {
                bad(
                    format!("'mcp.{server}.tools' must list tool names or patterns with '*' (1-128 characters)."),
                    format!("mcp.{server}.tools"),
                )
            })?;
        }
        Some(_) => {
            return Err(bad(
                format!("'mcp.{server}.tools' must be a list of tool names or patterns with '*'."),
                format!("mcp.{server}.tools"),
            ))
        }
    }
    match o.get("rate_limits") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (tool, n) in m {
                let rate = n.as_u64().filter(|n| (1..=MAX_RATE).contains(n));
                match (pattern(&Value::String(tool.clone())), rate) {
                    (Some(t), Some(n)) => {
                        out.insert(t, n as u32);
                    }
                    _ => {
                        return Err(bad(
                            format!(
                                "'mcp.{server}.rate_limits.{tool}' must be calls per minute, from 1 to {MAX_RATE}."
                            ),
                            format!("mcp.{server}.rate_limits.{tool}"),
                        ))
                    }
                }
            }
            g.rate_limits = out;
        }
        Some(_) => {
            return Err(bad(
                format!("'mcp.{server}.rate_limits' must be an object: tool (or pattern) to calls per minute."),
                format!("mcp.{server}.rate_limits"),
            ))
        }
    }
    Ok(g)
}

/// The management API's view of a policy (null: none).
pub fn view(p: Option<&McpPolicy>) -> Value {
    p.map_or(Value::Null, |p| {
        serde_json::to_value(p).unwrap_or(Value::Null)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_by_server_and_clears() {
        let p = apply(
            &json!({"docs": {"tools": ["search*"], "rate_limits": {"search*": 5}}}),
            None,
        )
        .unwrap()
        .unwrap();
        assert!(p["docs"].allows("search_x") && !p["docs"].allows("delete"));
        assert_eq!(p["docs"].rate_limit("search_x"), Some(5));
        let p = apply(&json!({"crm": {}}), Some(p)).unwrap().unwrap();
        assert_eq!(p.len(), 2);
        assert!(p["crm"].allows("anything"));
        let p = apply(&json!({"docs": null}), Some(p)).unwrap().unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(apply(&json!({"crm": null}), Some(p)).unwrap(), None);
        assert_eq!(apply(&Value::Null, None).unwrap(), None);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for (v, param) in [
            (json!([1]), "mcp"),
            (json!({"a__b": {}}), "mcp.a__b"),
            (json!({"docs": true}), "mcp.docs"),
            (json!({"docs": {"allow": []}}), "mcp.docs.allow"),
            (json!({"docs": {"tools": "x"}}), "mcp.docs.tools"),
            (json!({"docs": {"tools": [""]}}), "mcp.docs.tools"),
            (
                json!({"docs": {"rate_limits": {"x": 0}}}),
                "mcp.docs.rate_limits.x",
            ),
            (json!({"docs": {"rate_limits": []}}), "mcp.docs.rate_limits"),
        ] {
            let e = apply(&v, None).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{v}");
        }
    }
}
