//! The `tools` field of keys and users: which gateway tools they may use, and how many calls
//! of each one request may make, e.g.
//! `{"web_search": {"allowed": true, "max_calls": 3}, "code_execution": {"allowed": false}}`.
//! An update merges by tool (a tool set to null goes back to the default); `tools: null`
//! clears the whole policy.

use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::records::tool_policy::TOOL_NAMES;
use crate::records::{ToolGrant, ToolPolicy};

/// The most calls of one tool a policy may allow per request (the iteration cap bounds the
/// loop anyway; this keeps typos such as 1e9 out of the store).
const MAX_CALLS_CAP: u64 = 1000;

fn bad(message: String, param: String) -> GatewayError {
    GatewayError::invalid(message).with_param(param)
}

/// The policy after applying the request's `tools` value to `current`.
pub fn apply(v: &Value, current: Option<ToolPolicy>) -> Result<Option<ToolPolicy>, GatewayError> {
    let obj = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => {
            return Err(bad(
                format!(
                    "'tools' must be an object keyed by tool ({}) or null.",
                    TOOL_NAMES.join(", ")
                ),
                "tools".into(),
            ))
        }
    };
    let mut policy = current.unwrap_or_default();
    for (name, entry) in obj {
        if !TOOL_NAMES.contains(&name.as_str()) {
            return Err(bad(
                format!(
                    "Unknown tool '{name}' in 'tools'. Known: {}.",
                    TOOL_NAMES.join(", ")
                ),
                format!("tools.{name}"),
            ));
        }
        match entry {
            Value::Null => {
                policy.remove(name);
            }
            Value::Object(o) => {
                policy.insert(name.clone(), grant(name, o)?);
            }
            _ => {
                return Err(bad(
                    format!("'tools.{name}' must be an object (allowed, max_calls) or null."),
                    format!("tools.{name}"),
                ))
            }
        }
    }
    Ok((!policy.is_empty()).then_some(policy))
}

fn grant(name: &str, o: &Map<String, Value>) -> Result<ToolGrant, GatewayError> {
    if let Some(f) = o
        .keys()
        .find(|f| !["allowed", "max_calls"].contains(&f.as_str()))
    {
        return Err(bad(
            format!("Unknown field '{f}' in 'tools.{name}'. Allowed: allowed, max_calls."),
            format!("tools.{name}.{f}"),
        ));
    }
    let allowed = match o.get("allowed") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(bad(
                format!("'tools.{name}.allowed' must be a boolean."),
                format!("tools.{name}.allowed"),
            ))
        }
    };
    let max_calls = match o.get("max_calls") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= MAX_CALLS_CAP) => {
            n.as_u64().map(|n| n as u32)
        }
        Some(_) => {
            return Err(bad(
                format!(
                    "'tools.{name}.max_calls' must be a whole number from 0 to {MAX_CALLS_CAP}, or null."
                ),
                format!("tools.{name}.max_calls"),
            ))
        }
    };
    Ok(ToolGrant { allowed, max_calls })
}

/// The management API's view of a policy (null: the gateway default).
pub fn view(p: Option<&ToolPolicy>) -> Value {
    p.map_or(Value::Null, |p| {
        serde_json::to_value(p).unwrap_or(Value::Null)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_by_tool_and_clears() {
        let p = apply(&json!({"web_search": {"max_calls": 2}}), None)
            .unwrap()
            .unwrap();
        assert_eq!(p["web_search"].max_calls, Some(2));
        assert!(p["web_search"].allowed);
        let p = apply(&json!({"code_execution": {"allowed": false}}), Some(p))
            .unwrap()
            .unwrap();
        assert_eq!(p.len(), 2);
        assert!(!p["code_execution"].allowed);
        let p = apply(&json!({"web_search": null}), Some(p))
            .unwrap()
            .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            apply(&json!({"code_execution": null}), Some(p)).unwrap(),
            None
        );
        assert_eq!(apply(&Value::Null, None).unwrap(), None);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for (v, param) in [
            (json!("yes"), "tools"),
            (json!({"mcp": {}}), "tools.mcp"),
            (json!({"web_search": true}), "tools.web_search"),
            (
                json!({"web_search": {"allow": true}}),
                "tools.web_search.allow",
            ),
            (
                json!({"web_search": {"allowed": "no"}}),
                "tools.web_search.allowed",
            ),
            (
                json!({"web_search": {"max_calls": -1}}),
                "tools.web_search.max_calls",
            ),
            (
                json!({"web_search": {"max_calls": 5000}}),
                "tools.web_search.max_calls",
            ),
        ] {
            let e = apply(&v, None).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{v}");
        }
    }
}
