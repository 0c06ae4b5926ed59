//! `/v1/users`: create, list, read, update, delete.

use serde_json::{json, Value};

use super::{
    after_change, internal, no_route, not_found, page, standing_of, store_of, Reply, Req, Resp,
};
use crate::clock;
use crate::error::{ErrorKind, GatewayError};
use crate::ledger::limits::{apply_limits, parse_allowed_models};
use crate::records::{Limits, Scope, UserRecord};
use crate::state::State;

const FIELDS: &[&str] = &[
    "user_id",
    "alias",
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
    "blocked",
    "metadata",
    "guardrail_policies",
];

fn view(state: &State, u: &UserRecord) -> Value {
    json!({
        "object": "user",
        "user_id": u.user_id,
        "alias": u.alias,
        "team_id": u.team_id,
        "limits": u.limits.to_json(),
        "allowed_models": u.allowed_models,
        "blocked": u.blocked,
        "tools": super::tool_policy::view(u.tools.as_ref()),
        "mcp": super::mcp_policy::view(u.mcp.as_ref()),
        "metadata": u.metadata,
        "guardrail_policies": u.guardrail_policies,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
        "standing": standing_of(state, Scope::User, &u.user_id, &u.limits),
        "keys": state.keys.all().iter().filter(|k| k.user_id.as_deref() == Some(u.user_id.as_str())).map(|k| k.id.clone()).collect::<Vec<_>>(),
    })
}

fn apply(state: &State, req: &Req, u: &mut UserRecord) -> Result<(), GatewayError> {
    req.only(FIELDS)?;
    let b = &req.body;
    let now = clock::now_secs();
    if let Some(v) = b.get("alias") {
        u.alias = match v {
            Value::Null => None,
            Value::String(s) if s.len() <= 200 => Some(s.clone()),
            _ => {
                return Err(GatewayError::invalid(
                    "'alias' must be a string of at most 200 characters.",
                )
                .with_param("alias"))
            }
        };
    }
    if let Some(v) = b.get("team_id") {
        u.team_id = super::group_ref(state, crate::records::GroupKind::Team, v, "team_id")?;
    }
    if let Some(v) = b.get("blocked") {
        u.blocked = v.as_bool().ok_or_else(|| {
            GatewayError::invalid("'blocked' must be a boolean.").with_param("blocked")
        })?;
    }
    if let Some(v) = b.get("metadata") {
        u.metadata = match v {
            Value::Null => json!({}),
            Value::Object(_) => v.clone(),
            _ => {
                return Err(
                    GatewayError::invalid("'metadata' must be an object.").with_param("metadata")
                )
            }
        };
    }
    apply_limits(b, &mut u.limits, now)?;
    if let Some(bid) = &u.limits.budget_id {
        if !state.ledger.budgets.load().contains_key(bid) {
            return Err(GatewayError::new(
                ErrorKind::NotFound,
                format!("No budget with id '{bid}'."),
            )
            .with_param("budget_id"));
        }
    }
    if let Some(a) = parse_allowed_models(b.get("allowed_models"))? {
        u.allowed_models = a;
    }
    if let Some(v) = b.get("tools") {
        u.tools = super::tool_policy::apply(v, u.tools.take())?;
    }
    if let Some(v) = b.get("mcp") {
        u.mcp = super::mcp_policy::apply(v, u.mcp.take())?;
    }
    if let Some(p) = state
        .guardrails
        .settings
        .parse_names(b.get("guardrail_policies"))?
    {
        u.guardrail_policies = p;
    }
    u.updated_at = now;
    Ok(())
}

async fn save(state: &State, u: &UserRecord) -> Result<(), GatewayError> {
    store_of(state)?.put_user(u).await.map_err(internal)?;
    state.ledger.upsert_user(u.clone());
    state.ledger.account(
        Scope::User,
        &u.user_id,
        state.ledger.resolve_limit(&u.limits),
    );
    after_change(state).await;
    Ok(())
}

fn find(state: &State, id: &str) -> Result<UserRecord, GatewayError> {
    state
        .ledger
        .users
        .load()
        .get(id)
        .map(|u| UserRecord::clone(u))
        .ok_or_else(|| not_found("user", id))
}

pub(super) async fn handle(state: &State, req: &Req) -> Reply {
    match (req.method.as_str(), req.seg(1)) {
        ("POST", None) => {
            store_of(state)?;
            let id = match req.body.get("user_id") {
                Some(Value::String(s)) if super::valid_id(s) => s.clone(),
                _ => {
                    return Err(GatewayError::invalid(
                        "'user_id' is required: 1-128 letters, digits or -_.@",
                    )
                    .with_param("user_id"))
                }
            };
            if state.ledger.users.load().contains_key(&id) {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!("User '{id}' already exists."),
                )
                .with_status(409));
            }
            let now = clock::now_secs();
            let mut u = UserRecord {
                user_id: id,
                alias: None,
                team_id: None,
                limits: Limits::default(),
                allowed_models: None,
                blocked: false,
                metadata: json!({}),
                created_at: now,
                updated_at: now,
                tools: None,
                mcp: None,
                guardrail_policies: Vec::new(),
            };
            apply(state, req, &mut u)?;
            save(state, &u).await?;
            Ok(Resp::json(201, view(state, &u)))
        }
        ("GET", None) => {
            let team = req.q("team_id");
            let users: Vec<UserRecord> = state
                .ledger
                .users
                .load()
                .values()
                .filter(|u| team.is_none_or(|t| u.team_id.as_deref() == Some(t)))
                .map(|u| UserRecord::clone(u))
                .collect();
            page(users, |u| u.user_id.as_str(), req, |u| view(state, u))
        }
        ("GET", Some(id)) => Ok(Resp::json(200, view(state, &find(state, id)?))),
        ("PATCH", Some(id)) => {
            let mut u = find(state, id)?;
            if req
                .body
                .get("user_id")
                .is_some_and(|v| v.as_str() != Some(id))
            {
                return Err(
                    GatewayError::invalid("'user_id' cannot be changed.").with_param("user_id")
                );
            }
            apply(state, req, &mut u)?;
            save(state, &u).await?;
            Ok(Resp::json(200, view(state, &u)))
        }
        ("DELETE", Some(id)) => {
            let store = store_of(state)?;
            find(state, id)?;
            // The user's keys stop working with it; they stay listed for the record.
            for mut k in state
                .keys
                .all()
                .into_iter()
                .filter(|k| k.user_id.as_deref() == Some(id))
            {
                k.active = false;
                store.put_key(&k).await.map_err(internal)?;
                state.keys.upsert(k);
            }
            store.delete_user(id).await.map_err(internal)?;
            state.ledger.remove_user(id);
            after_change(state).await;
            Ok(Resp::json(
                200,
                json!({"user_id": id, "object": "user", "deleted": true}),
            ))
        }
        _ => Err(no_route(req)),
    }
}
