//! End-user attribution: the id of an application's own user that a request body carries.
//!
//! OpenAI asks apps to send it (`user`, now `safety_identifier`) for abuse monitoring, and
//! Anthropic has `metadata.user_id`. tollgate records it on the usage row as `end_user`, lets
//! `/v1/usage` filter and group by it, applies per-end-user limits when a key has them, and
//! forwards it unchanged. It is attribution, not identity: it only refuses a request when the
//! operator asked for that (`reject_user_mismatch` on a key bound to a user).

use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::translate::shared::is_telemetry_blob;

/// The longest end-user id accepted (Anthropic's limit for `metadata.user_id`). Longer ids are
/// refused rather than truncated: truncation could merge two end users' budgets.
pub const MAX_LEN: usize = 256;

/// The end-user ids a body names, in precedence order: (field, value). Claude Code puts a
/// JSON telemetry blob (device and session ids) in `metadata.user_id`; a value that parses as
/// a JSON object is such a blob and names nobody. Empty strings name nobody either.
fn named(req: &Map<String, Value>) -> impl Iterator<Item = (&'static str, &str)> {
    let meta = req
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .filter(|v| !is_telemetry_blob(v));
    [
        ("user", req.get("user").and_then(Value::as_str)),
        (
            "safety_identifier",
            req.get("safety_identifier").and_then(Value::as_str),
        ),
        ("metadata.user_id", meta),
    ]
    .into_iter()
    .filter_map(|(f, v)| Some((f, v.filter(|v| !v.is_empty())?)))
}

/// The end user a body names (the first of `user`, `safety_identifier`, `metadata.user_id`),
/// or a 400 naming the field when one is longer than [`MAX_LEN`] characters.
pub fn end_user(req: &Map<String, Value>) -> Result<Option<&str>, GatewayError> {
    let mut first = None;
    for (field, v) in named(req) {
        if v.len() > MAX_LEN && v.chars().count() > MAX_LEN {
            return Err(GatewayError::invalid(format!(
                "'{field}' is an end-user id of at most {MAX_LEN} characters."
            ))
            .with_param(field));
        }
        first = first.or(Some(v));
    }
    Ok(first)
}

/// Whether the body names a user other than `owner` in any of its end-user fields.
pub fn names_other_user(req: &Map<String, Value>, owner: &str) -> bool {
    named(req).any(|(_, v)| v != owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn each_format_names_its_end_user() {
        assert_eq!(end_user(&obj(json!({"user": "u-1"}))).unwrap(), Some("u-1"));
        assert_eq!(
            end_user(&obj(json!({"safety_identifier": "s-1"}))).unwrap(),
            Some("s-1")
        );
        assert_eq!(
            end_user(&obj(json!({"metadata": {"user_id": "m-1"}}))).unwrap(),
            Some("m-1")
        );
        assert_eq!(
            end_user(&obj(json!({"user": "u-1", "safety_identifier": "s-1"}))).unwrap(),
            Some("u-1"),
            "user first"
        );
        assert_eq!(end_user(&obj(json!({"user": ""}))).unwrap(), None);
        assert_eq!(end_user(&obj(json!({"user": 5}))).unwrap(), None);
    }

    #[test]
    fn claude_code_blob_names_nobody() {
        let blob = "{\"device_id\":\"ab12\",\"account_uuid\":\"\",\"session_id\":\"6afd\"}";
        let req = obj(json!({"metadata": {"user_id": blob}}));
        assert_eq!(end_user(&req).unwrap(), None);
        assert!(!names_other_user(&req, "alice"));
        // A value that only looks like JSON is an id.
        let req = obj(json!({"metadata": {"user_id": "{not json"}}));
        assert_eq!(end_user(&req).unwrap(), Some("{not json"));
    }

    #[test]
    fn length_is_bounded_in_characters() {
        let ok = "é".repeat(MAX_LEN);
        assert_eq!(
            end_user(&obj(json!({"user": ok}))).unwrap(),
            Some(ok.as_str())
        );
        let e = end_user(&obj(json!({"safety_identifier": "x".repeat(MAX_LEN + 1)}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("safety_identifier"));
    }

    #[test]
    fn mismatch_looks_at_every_field() {
        let req = obj(json!({"user": "alice", "safety_identifier": "bob"}));
        assert!(names_other_user(&req, "alice"));
        assert!(!names_other_user(
            &obj(json!({"user": "alice", "safety_identifier": "alice"})),
            "alice"
        ));
        assert!(!names_other_user(&obj(json!({})), "alice"));
    }
}
