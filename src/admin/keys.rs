//! `/v1/keys`: create, list, read, update, rotate, delete.

use serde_json::{json, Value};

use super::{
    after_change, internal, no_route, not_found, page, standing_of, store_of, Reply, Req, Resp,
};
use crate::auth;
use crate::clock;
use crate::error::GatewayError;
use crate::ids;
use crate::ledger::limits::{apply_limits, parse_allowed_models};
use crate::records::{KeyRecord, Scope};
use crate::state::State;

const FIELDS: &[&str] = &[
    "name",
    "expires_at",
    "metadata",
    "user_id",
    "team_id",
    "max_budget",
    "budget_duration",
    "budget_period",
    "budget_alignment",
    "budget_id",
    "budgets",
    "budget_override",
    "max_cost_per_minute",
    "rpm_limit",
    "tpm_limit",
    "alert_thresholds",
    "allowed_models",
    "tools",
    "mcp",
    "reject_user_mismatch",
    "end_user_limits",
    "guardrail_policies",
    "traces",
    "active",
    "exclude_from_budget",
];

/// The fields of `end_user_limits`: the same limits a key has, applied to each end user.
const END_USER_FIELDS: &[&str] = &[
    "max_budget",
    "budget_duration",
    "budget_period",
    "budget_alignment",
    "budget_id",
    "rpm_limit",
    "tpm_limit",
    "alert_thresholds",
];

fn view(state: &State, k: &KeyRecord) -> Value {
    let mut v = k.public_json();
    v["limits"] = k.limits.to_json();
    v["allowed_models"] = json!(k.allowed_models);
    v["reject_user_mismatch"] = json!(k.reject_user_mismatch);
    v["end_user_limits"] = k
        .end_user_limits
        .as_ref()
        .map_or(Value::Null, |l| l.to_json());
    v["tools"] = super::tool_policy::view(k.tools.as_ref());
    v["mcp"] = super::mcp_policy::view(k.mcp.as_ref());
    v["guardrail_policies"] = json!(k.guardrail_policies);
    v["traces"] = json!(k.traces);
    v["exclude_from_budget"] = json!(k.exclude_from_budget);
    v["last_used_at"] = json!(state.keys.last_used(k));
    v["standing"] = standing_of(state, Scope::Key, &k.id, &k.limits);
    v
}

/// Applies the request's fields to a key (absent = keep, null = clear where it makes sense).
fn apply(state: &State, req: &Req, k: &mut KeyRecord) -> Result<(), GatewayError> {
    req.only(FIELDS)?;
    let b = &req.body;
    let now = clock::now_secs();
    if let Some(v) = b.get("name") {
        k.name = match v {
            Value::Null => None,
            Value::String(n) if n.len() <= 200 && !n.chars().any(char::is_control) => {
                Some(n.clone())
            }
            _ => {
                return Err(GatewayError::invalid(
                    "'name' must be a string of at most 200 printable characters.",
                )
                .with_param("name"))
            }
        };
    }
    if let Some(v) = b.get("expires_at") {
        k.expires_at = match v {
            Value::Null => None,
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            Value::String(s) => Some(crate::records::period::parse_time(s).ok_or_else(|| {
                GatewayError::invalid(
                    "'expires_at' must be a Unix timestamp or an RFC 3339 UTC time.",
                )
                .with_param("expires_at")
            })?),
            _ => {
                return Err(GatewayError::invalid(
                    "'expires_at' must be a Unix timestamp or an RFC 3339 UTC time.",
                )
                .with_param("expires_at"))
            }
        };
        if k.expires_at.is_some_and(|e| e <= now) && req.method == "POST" {
            return Err(
                GatewayError::invalid("'expires_at' is in the past.").with_param("expires_at")
            );
        }
    }
    if let Some(v) = b.get("metadata") {
        k.metadata = match v {
            Value::Null => json!({}),
            Value::Object(_) => v.clone(),
            _ => {
                return Err(
                    GatewayError::invalid("'metadata' must be an object.").with_param("metadata")
                )
            }
        };
    }
    if let Some(v) = b.get("user_id") {
        k.user_id = match v {
            Value::Null => None,
            Value::String(u) if state.ledger.users.load().contains_key(u) => Some(u.clone()),
            Value::String(u) => {
                return Err(GatewayError::new(
                    crate::error::ErrorKind::NotFound,
                    format!("No user with id '{u}': create it first with POST /v1/users."),
                )
                .with_param("user_id"))
            }
            _ => {
                return Err(
                    GatewayError::invalid("'user_id' must be a string.").with_param("user_id")
                )
            }
        };
    }
    if let Some(v) = b.get("team_id") {
        k.team_id = super::group_ref(state, crate::records::GroupKind::Team, v, "team_id")?;
    }
    apply_limits(b, &mut k.limits, now)?;
    known_budget(state, &k.limits, "budget_id")?;
    if let Some(v) = b.get("end_user_limits") {
        k.end_user_limits = end_user_limits(v, k.end_user_limits.take(), now)?;
        if let Some(l) = &k.end_user_limits {
            known_budget(state, l, "end_user_limits.budget_id")?;
        }
    }
    if let Some(a) = parse_allowed_models(b.get("allowed_models"))? {
        k.allowed_models = a;
    }
    if let Some(v) = b.get("tools") {
        k.tools = super::tool_policy::apply(v, k.tools.take())?;
    }
    if let Some(v) = b.get("mcp") {
        k.mcp = super::mcp_policy::apply(v, k.mcp.take())?;
    }
    if let Some(v) = b.get("reject_user_mismatch") {
        k.reject_user_mismatch = match v {
            Value::Null => None,
            Value::Bool(x) => Some(*x),
            _ => {
                return Err(GatewayError::invalid(
                    "'reject_user_mismatch' must be a boolean or null.",
                )
                .with_param("reject_user_mismatch"))
            }
        };
    }
    if let Some(v) = b.get("traces") {
        k.traces = parse_traces(v)?;
    }
    if let Some(p) = state
        .guardrails
        .settings
        .parse_names(b.get("guardrail_policies"))?
    {
        k.guardrail_policies = p;
    }
    if let Some(v) = b.get("exclude_from_budget") {
        k.exclude_from_budget = v.as_bool().ok_or_else(|| {
            GatewayError::invalid("'exclude_from_budget' must be a boolean.")
                .with_param("exclude_from_budget")
        })?;
    }
    if let Some(v) = b.get("active") {
        k.active = v.as_bool().ok_or_else(|| {
            GatewayError::invalid("'active' must be a boolean.").with_param("active")
        })?;
    }
    Ok(())
}

fn known_budget(
    state: &State,
    limits: &crate::records::Limits,
    param: &str,
) -> Result<(), GatewayError> {
    match &limits.budget_id {
        Some(bid) if !state.ledger.budgets.load().contains_key(bid) => Err(GatewayError::new(
            crate::error::ErrorKind::NotFound,
            format!("No budget with id '{bid}'."),
        )
        .with_param(param.to_string())),
        _ => Ok(()),
    }
}

/// Applies `end_user_limits` (an object of limit fields, merged into the current ones; null
/// clears them). Limits that end up empty are none: the key then does no end-user work.
fn end_user_limits(
    v: &Value,
    current: Option<crate::records::Limits>,
    now: u64,
) -> Result<Option<crate::records::Limits>, GatewayError> {
    let obj = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => {
            return Err(GatewayError::invalid(
                "'end_user_limits' must be an object (max_budget, budget_duration, budget_alignment, budget_id, rpm_limit, tpm_limit) or null.",
            )
            .with_param("end_user_limits"))
        }
    };
    if let Some(f) = obj.keys().find(|f| !END_USER_FIELDS.contains(&f.as_str())) {
        return Err(GatewayError::invalid(format!(
            "Unknown field '{f}' in 'end_user_limits'. Allowed: {}.",
            END_USER_FIELDS.join(", ")
        ))
        .with_param(format!("end_user_limits.{f}")));
    }
    let mut limits = current.unwrap_or_default();
    apply_limits(obj, &mut limits, now).map_err(|mut e| {
        e.param = e.param.map(|p| format!("end_user_limits.{p}"));
        e
    })?;
    let empty = limits.max_budget_micros.is_none()
        && limits.budget_id.is_none()
        && limits.rpm.is_none()
        && limits.tpm.is_none();
    Ok((!empty).then_some(limits))
}

/// `GET /v1/keys/{id}/end_users/{end_user}`: one end user's standing under the key's
/// `end_user_limits`.
fn end_user_view(state: &State, k: &KeyRecord, end_user: &str) -> Value {
    let id = crate::records::end_user_id(&k.id, end_user);
    let limits = k.end_user_limits.clone().unwrap_or_default();
    let (rpm_used, tpm_used) = state
        .ledger
        .find_limiter(Scope::EndUser, &id)
        .map_or((0, 0), |l| l.usage(clock::now_millis()));
    json!({
        "object": "key.end_user",
        "key_id": k.id,
        "end_user": end_user,
        "limits": k.end_user_limits.as_ref().map_or(Value::Null, |l| l.to_json()),
        "standing": standing_of(state, Scope::EndUser, &id, &limits),
        "requests_last_minute": rpm_used,
        "tokens_last_minute": tpm_used,
    })
}

async fn save(state: &State, k: &KeyRecord) -> Result<(), GatewayError> {
    store_of(state)?.put_key(k).await.map_err(internal)?;
    state.keys.upsert(k.clone());
    // A changed limit applies to the live account at once.
    state
        .ledger
        .account(Scope::Key, &k.id, state.ledger.resolve_limit(&k.limits));
    after_change(state).await;
    Ok(())
}

/// `q` (lower case) is part of the key's name, id, prefix or user id.
fn matches_search(k: &KeyRecord, q: &str) -> bool {
    [
        Some(&k.id),
        k.name.as_ref(),
        Some(&k.prefix),
        k.user_id.as_ref(),
    ]
    .into_iter()
    .flatten()
    .any(|f| f.to_lowercase().contains(q))
}

fn find(state: &State, id: &str) -> Result<KeyRecord, GatewayError> {
    state
        .keys
        .all()
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| not_found("key", id))
}

pub(super) async fn handle(state: &State, req: &Req) -> Reply {
    match (req.method.as_str(), req.seg(1), req.seg(2)) {
        ("POST", None, None) => {
            store_of(state)?;
            let (mut k, secret) = KeyRecord::mint(None, None, json!({}));
            apply(state, req, &mut k)?;
            save(state, &k).await?;
            let mut out = view(state, &k);
            out["key"] = Value::String(secret);
            Ok(Resp::json(201, out))
        }
        ("GET", None, None) => {
            let user = req.q("user_id").map(String::from);
            let team = req.q("team_id").map(String::from);
            let q = req.q("q").map(str::to_lowercase).filter(|q| !q.is_empty());
            let keys: Vec<KeyRecord> = state
                .keys
                .all()
                .into_iter()
                .filter(|k| user.is_none() || k.user_id == user)
                .filter(|k| team.is_none() || k.team_id == team)
                .filter(|k| q.as_deref().is_none_or(|q| matches_search(k, q)))
                .collect();
            page(keys, |k| k.id.as_str(), req, |k| view(state, k))
        }
        ("GET", Some(id), None) => Ok(Resp::json(200, view(state, &find(state, id)?))),
        ("GET", Some(id), Some("end_users")) if req.segs.len() == 4 => {
            let k = find(state, id)?;
            let eu = req.seg(3).unwrap_or_default();
            Ok(Resp::json(200, end_user_view(state, &k, eu)))
        }
        ("PATCH", Some(id), None) => {
            let mut k = find(state, id)?;
            apply(state, req, &mut k)?;
            save(state, &k).await?;
            Ok(Resp::json(200, view(state, &k)))
        }
        ("POST", Some(id), Some("rotate")) => {
            let mut k = find(state, id)?;
            let secret = auth::generate_key();
            k.hash = ids::hex(&auth::hash_key(&secret));
            k.prefix = secret.chars().take(auth::KEY_PREFIX.len() + 6).collect();
            save(state, &k).await?;
            let mut out = view(state, &k);
            out["key"] = Value::String(secret);
            Ok(Resp::json(200, out))
        }
        ("DELETE", Some(id), None) => {
            let store = store_of(state)?;
            find(state, id)?;
            store.delete_key(id).await.map_err(internal)?;
            state.keys.remove(id);
            after_change(state).await;
            Ok(Resp::json(
                200,
                json!({"id": id, "object": "key", "deleted": true}),
            ))
        }
        _ => Err(no_route(req)),
    }
}

/// `traces`: null (the config's settings) or `{capture: off|metadata|full, sample: 0.0-1.0}`.
fn parse_traces(v: &Value) -> Result<Option<crate::records::key::KeyTraces>, GatewayError> {
    if v.is_null() {
        return Ok(None);
    }
    let bad = || {
        GatewayError::invalid(
            "'traces' must be null or an object with 'capture' (off, metadata or full) and 'sample' (0.0 to 1.0).",
        )
        .with_param("traces")
    };
    let t: crate::records::key::KeyTraces = serde_json::from_value(v.clone()).map_err(|_| bad())?;
    if t.sample.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
        return Err(bad());
    }
    Ok(Some(t))
}
