//! A request's own `guardrails` list, validated: at most [`MAX_ENTRIES`] entries, each field
//! checked, and a refusal (400) that names the field at fault (`guardrails[2].mode`).

use serde_json::Value;

use super::{Entry, Mode, OnUnavailable, Scope};
use crate::error::GatewayError;
use crate::outbound::HostPolicy;

/// Entries one request may declare (Otari's limit).
pub const MAX_ENTRIES: usize = 8;

/// Profiles checked in process, which alone may `mask` (see `guardrails::local`).
pub const LOCAL_PROFILES: [&str; 2] = ["pii", "deny_patterns"];

const FIELDS: [&str; 10] = [
    "profile",
    "mode",
    "on",
    "on_unavailable",
    "url",
    "validate_kwargs",
    "scope",
    "hold_back",
    "output_window_chars",
    "restore",
];

/// The largest `output_window_chars`.
pub const MAX_WINDOW: u64 = 1_000_000;

fn bad(param: String, message: String) -> GatewayError {
    GatewayError::invalid(message).with_param(param)
}

/// Parses the `guardrails` member of a request body. `urls`: where a request's `url` may
/// point (loopback, and private ranges when the operator allows them).
pub fn parse(v: &Value, urls: HostPolicy) -> Result<Vec<Entry>, GatewayError> {
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => {
            return Err(bad(
                "guardrails".into(),
                "'guardrails' must be a list of guardrail entries.".into(),
            ))
        }
    };
    if list.len() > MAX_ENTRIES {
        return Err(bad(
            "guardrails".into(),
            format!(
                "'guardrails' holds {} entries; at most {MAX_ENTRIES} are allowed.",
                list.len()
            ),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, e)| entry(i, e, urls))
        .collect()
}

fn entry(i: usize, v: &Value, urls: HostPolicy) -> Result<Entry, GatewayError> {
    let at = |f: &str| format!("guardrails[{i}].{f}");
    let Value::Object(o) = v else {
        return Err(bad(
            format!("guardrails[{i}]"),
            format!("'guardrails[{i}]' must be an object with at least a 'profile'."),
        ));
    };
    if let Some(f) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(
            at(f),
            format!(
                "Unknown field '{}' in 'guardrails[{i}]'. Allowed: {}.",
                f.escape_debug(),
                FIELDS.join(", ")
            ),
        ));
    }
    let profile = match o.get("profile") {
        Some(Value::String(p)) if (1..=128).contains(&p.chars().count()) => p.clone(),
        _ => {
            return Err(bad(
                at("profile"),
                format!(
                    "'{}' is required: a string of 1 to 128 characters.",
                    at("profile")
                ),
            ))
        }
    };
    let mut e = Entry::new(&profile);
    let text = |f: &str| -> Result<Option<&str>, GatewayError> {
        match o.get(f) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(bad(at(f), format!("'{}' must be a string.", at(f)))),
        }
    };
    if let Some(m) = text("mode")? {
        e.mode = match m {
            "monitor" => Mode::Monitor,
            "block" => Mode::Block,
            "mask" if LOCAL_PROFILES.contains(&profile.as_str()) => Mode::Mask,
            "mask" => {
                return Err(bad(
                    at("mode"),
                    format!(
                        "'{}' is 'mask', which only the in-process profiles ({}) support; use 'monitor' or 'block'.",
                        at("mode"),
                        LOCAL_PROFILES.join(", ")
                    ),
                ))
            }
            _ => {
                return Err(bad(
                    at("mode"),
                    format!("'{}' must be 'monitor' or 'block'.", at("mode")),
                ))
            }
        };
    }
    if let Some(u) = text("on_unavailable")? {
        e.on_unavailable = match u {
            "block" => OnUnavailable::Block,
            "monitor" => OnUnavailable::Monitor,
            _ => {
                return Err(bad(
                    at("on_unavailable"),
                    format!("'{}' must be 'block' or 'monitor'.", at("on_unavailable")),
                ))
            }
        };
    }
    if let Some(s) = text("scope")? {
        e.scope = match s {
            "last_user" => Scope::LastUser,
            "all_user" => Scope::AllUser,
            "tool_results" => Scope::ToolResults,
            "full" => Scope::Full,
            _ => {
                return Err(bad(
                    at("scope"),
                    format!(
                        "'{}' must be one of last_user, all_user, tool_results, full.",
                        at("scope")
                    ),
                ))
            }
        };
    }
    match o.get("on") {
        None | Some(Value::Null) => {}
        Some(Value::Array(on)) if !on.is_empty() => {
            e.input = false;
            for s in on {
                match s.as_str() {
                    Some("input") => e.input = true,
                    Some("output") => e.output = true,
                    _ => {
                        return Err(bad(
                            at("on"),
                            format!("'{}' may hold only \"input\" and \"output\".", at("on")),
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(bad(
                at("on"),
                format!(
                    "'{}' must be a non-empty list: [\"input\"], [\"output\"] or both.",
                    at("on")
                ),
            ))
        }
    }
    if let Some(u) = text("url")? {
        crate::outbound::check_url(u, urls)
            .map_err(|r| bad(at("url"), format!("'{}' is not allowed: {r}.", at("url"))))?;
        e.url = Some(u.to_string());
    }
    match o.get("validate_kwargs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(k)) => e.validate_kwargs = k.clone(),
        Some(_) => {
            return Err(bad(
                at("validate_kwargs"),
                format!("'{}' must be an object.", at("validate_kwargs")),
            ))
        }
    }
    match o.get("hold_back") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => e.hold_back = *b,
        Some(_) => {
            return Err(bad(
                at("hold_back"),
                format!("'{}' must be true or false.", at("hold_back")),
            ))
        }
    }
    match o.get("restore") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) if e.mode == Mode::Mask => e.restore = true,
        Some(Value::Bool(true)) => {
            return Err(bad(
                at("restore"),
                format!("'{}' applies to mode 'mask' only.", at("restore")),
            ))
        }
        Some(_) => {
            return Err(bad(
                at("restore"),
                format!("'{}' must be true or false.", at("restore")),
            ))
        }
    }
    match o.get("output_window_chars") {
        None | Some(Value::Null) => {}
        Some(n) => match n.as_u64().filter(|n| (1..=MAX_WINDOW).contains(n)) {
            Some(n) => e.output_window_chars = Some(n as usize),
            None => {
                return Err(bad(
                    at("output_window_chars"),
                    format!(
                        "'{}' must be a whole number from 1 to {MAX_WINDOW}.",
                        at("output_window_chars")
                    ),
                ))
            }
        },
    }
    Ok(e)
}

/// The operator's entries, from the config: the same fields, any URL allowed (the operator
/// wrote it), and errors as text for the config's own message.
pub fn parse_policy_entry(v: &Value) -> Result<Entry, String> {
    let mut e = entry(0, v, HostPolicy::ANY).map_err(|e| {
        let field = e.param.unwrap_or_default();
        let field = field.strip_prefix("guardrails[0]").unwrap_or(&field);
        format!(
            "{}{}",
            field.trim_start_matches('.'),
            strip_message(&e.message)
        )
    })?;
    e.operator = true;
    Ok(e)
}

/// A request-side message, reworded for a config entry.
fn strip_message(m: &str) -> String {
    format!(
        ": {}",
        m.replace("guardrails[0].", "")
            .replace("'guardrails[0]'", "the entry")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param_of(v: Value) -> String {
        parse(&v, HostPolicy::LOOPBACK)
            .expect_err("refused")
            .param
            .unwrap()
    }

    #[test]
    fn defaults_are_otaris() {
        let e = parse(
            &json!([{"profile": "prompt-injection"}]),
            HostPolicy::LOOPBACK,
        )
        .unwrap();
        assert_eq!(e, vec![Entry::new("prompt-injection")]);
        assert!(parse(&Value::Null, HostPolicy::LOOPBACK)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn every_field_is_read() {
        let e = parse(
            &json!([{"profile": "p", "mode": "block", "on": ["output", "input"],
                "on_unavailable": "monitor", "url": "http://127.0.0.1:9/",
                "validate_kwargs": {"threshold": 0.5}, "scope": "tool_results",
                "hold_back": true, "output_window_chars": 200}]),
            HostPolicy::LOOPBACK,
        )
        .unwrap()
        .remove(0);
        assert_eq!(e.mode, Mode::Block);
        assert!(e.input && e.output);
        assert_eq!(e.on_unavailable, OnUnavailable::Monitor);
        assert_eq!(e.url.as_deref(), Some("http://127.0.0.1:9/"));
        assert_eq!(e.validate_kwargs["threshold"], 0.5);
        assert_eq!(e.scope, Scope::ToolResults);
        assert!(e.hold_back);
        assert_eq!(e.output_window_chars, Some(200));
        assert!(!e.operator);
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(param_of(json!({"profile": "p"})), "guardrails");
        assert_eq!(
            param_of(json!(vec![json!({"profile": "p"}); 9])),
            "guardrails"
        );
        assert_eq!(param_of(json!([{"profile": "p"}, 3])), "guardrails[1]");
        assert_eq!(
            param_of(json!([{"mode": "block"}])),
            "guardrails[0].profile"
        );
        assert_eq!(param_of(json!([{"profile": ""}])), "guardrails[0].profile");
        assert_eq!(
            param_of(json!([{"profile": "p", "hold_back": "yes"}])),
            "guardrails[0].hold_back"
        );
        assert_eq!(
            param_of(json!([{"profile": "pii", "restore": true}])),
            "guardrails[0].restore"
        );
        assert_eq!(
            param_of(json!([{"profile": "pii", "mode": "mask", "restore": 1}])),
            "guardrails[0].restore"
        );
        for n in [
            json!(0),
            json!(-5),
            json!(1.5),
            json!("100"),
            json!(2_000_000),
        ] {
            assert_eq!(
                param_of(json!([{"profile": "p", "output_window_chars": n}])),
                "guardrails[0].output_window_chars"
            );
        }
        assert_eq!(
            param_of(json!([{"profile": "x".repeat(129)}])),
            "guardrails[0].profile"
        );
        assert_eq!(
            param_of(json!([{"profile": "p"}, {"profile": "p", "mode": "strict"}])),
            "guardrails[1].mode"
        );
        assert_eq!(
            param_of(json!([{"profile": "p", "mode": "mask"}])),
            "guardrails[0].mode"
        );
        assert_eq!(
            param_of(json!([{"profile": "p", "on": []}])),
            "guardrails[0].on"
        );
        assert_eq!(
            param_of(json!([{"profile": "p", "on": ["both"]}])),
            "guardrails[0].on"
        );
        assert_eq!(
            param_of(json!([{"profile": "p", "on_unavailable": true}])),
            "guardrails[0].on_unavailable"
        );
        assert_eq!(
            param_of(json!([{"profile": "p", "validate_kwargs": []}])),
            "guardrails[0].validate_kwargs"
        );
        assert_eq!(
            param_of(json!([{"profile": "p", "scope": "everything"}])),
            "guardrails[0].scope"
        );
        assert_eq!(
            param_of(json!([{"profile": "p", "colour": "red"}])),
            "guardrails[0].colour"
        );
        assert!(parse(
            &json!([{"profile": "pii", "mode": "mask"}]),
            HostPolicy::LOOPBACK
        )
        .is_ok());
    }

    #[test]
    fn unsafe_urls_are_refused() {
        for u in [
            "http://169.254.169.254/latest",
            "http://10.0.0.8:8000",
            "file:///etc/passwd",
            "http://user:pw@127.0.0.1/",
        ] {
            assert_eq!(
                param_of(json!([{"profile": "p", "url": u}])),
                "guardrails[0].url",
                "{u}"
            );
        }
        let private = HostPolicy {
            loopback: true,
            private: true,
        };
        assert!(parse(
            &json!([{"profile": "p", "url": "http://10.0.0.8:8000"}]),
            private
        )
        .is_ok());
        assert!(parse(
            &json!([{"profile": "p", "url": "http://127.0.0.1:8000"}]),
            HostPolicy::LOOPBACK
        )
        .is_ok());
    }

    #[test]
    fn policy_entries_are_the_operators() {
        let e = parse_policy_entry(&json!({"profile": "p", "url": "http://10.0.0.8/"})).unwrap();
        assert!(e.operator);
        let err = parse_policy_entry(&json!({"profile": "p", "mode": "nope"})).unwrap_err();
        assert!(err.starts_with("mode: "), "{err}");
    }
}
