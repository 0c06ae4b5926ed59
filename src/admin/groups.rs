//! `/v1/teams` and `/v1/orgs`: create, list, read, update, delete. Teams and organisations
//! share one handler (they differ in their id field, a team's `org_id`, and their members).
//!
//! Deleting one with members is refused (409) unless `?cascade=true`: then a team's service
//! keys (`team_id` on the key) are deactivated, as a deleted user's keys are, and its users
//! stay without a team; an organisation's teams are deleted that way too.

use serde_json::{json, Value};

use super::{
    after_change, internal, no_route, not_found, page, standing_of, store_of, Reply, Req, Resp,
};
use crate::clock;
use crate::error::{ErrorKind, GatewayError};
use crate::ledger::limits::{apply_limits, parse_allowed_models};
use crate::records::{GroupKind, GroupRecord, Limits};
use crate::state::State;

/// The fields both levels take, besides the id field and a team's `org_id`.
const FIELDS: &[&str] = &[
    "alias",
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
    "allowed_models",
    "tools",
    "mcp",
    "blocked",
    "metadata",
];

/// The body field that names the id: `team_id` or `org_id`.
fn id_field(kind: GroupKind) -> &'static str {
    match kind {
        GroupKind::Team => "team_id",
        GroupKind::Org => "org_id",
    }
}

/// What belongs to a group: a team's users and service keys, an organisation's teams.
struct Members {
    users: Vec<String>,
    keys: Vec<String>,
    teams: Vec<String>,
}

impl Members {
    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.keys.is_empty() && self.teams.is_empty()
    }
}

fn members(state: &State, kind: GroupKind, id: &str) -> Members {
    let mut m = Members {
        users: Vec::new(),
        keys: Vec::new(),
        teams: Vec::new(),
    };
    match kind {
        GroupKind::Team => {
            m.users = state
                .ledger
                .users
                .load()
                .values()
                .filter(|u| u.team_id.as_deref() == Some(id))
                .map(|u| u.user_id.clone())
                .collect();
            m.keys = state
                .keys
                .all()
                .into_iter()
                .filter(|k| k.team_id.as_deref() == Some(id))
                .map(|k| k.id)
                .collect();
        }
        GroupKind::Org => {
            m.teams = state
                .ledger
                .teams
                .load()
                .values()
                .filter(|t| t.org_id.as_deref() == Some(id))
                .map(|t| t.id.clone())
                .collect();
        }
    }
    m.users.sort();
    m.keys.sort();
    m.teams.sort();
    m
}

fn view(state: &State, kind: GroupKind, g: &GroupRecord) -> Value {
    let mut v = json!({
        "object": kind.noun(),
        id_field(kind): g.id,
        "alias": g.alias,
        "limits": g.limits.to_json(),
        "allowed_models": g.allowed_models,
        "blocked": g.blocked,
        "tools": super::tool_policy::view(g.tools.as_ref()),
        "mcp": super::mcp_policy::view(g.mcp.as_ref()),
        "metadata": g.metadata,
        "created_at": g.created_at,
        "updated_at": g.updated_at,
        "standing": standing_of(state, kind.scope(), &g.id, &g.limits),
    });
    let m = members(state, kind, &g.id);
    match kind {
        GroupKind::Team => {
            v["org_id"] = json!(g.org_id);
            v["users"] = json!(m.users);
            v["keys"] = json!(m.keys);
        }
        GroupKind::Org => v["teams"] = json!(m.teams),
    }
    v
}

fn apply(
    state: &State,
    kind: GroupKind,
    req: &Req,
    g: &mut GroupRecord,
) -> Result<(), GatewayError> {
    let mut allowed: Vec<&str> = FIELDS.to_vec();
    allowed.push(id_field(kind));
    if kind == GroupKind::Team {
        allowed.push("org_id");
    }
    req.only(&allowed)?;
    let b = &req.body;
    let now = clock::now_secs();
    if let Some(v) = b.get("alias") {
        g.alias = match v {
            Value::Null => None,
            Value::String(s) if s.len() <= 200 && !s.chars().any(char::is_control) => {
                Some(s.clone())
            }
            _ => {
                return Err(GatewayError::invalid(
                    "'alias' must be a string of at most 200 printable characters.",
                )
                .with_param("alias"))
            }
        };
    }
    if kind == GroupKind::Team {
        if let Some(v) = b.get("org_id") {
            g.org_id = super::group_ref(state, GroupKind::Org, v, "org_id")?;
        }
    }
    if let Some(v) = b.get("blocked") {
        g.blocked = v.as_bool().ok_or_else(|| {
            GatewayError::invalid("'blocked' must be a boolean.").with_param("blocked")
        })?;
    }
    if let Some(v) = b.get("metadata") {
        g.metadata = match v {
            Value::Null => json!({}),
            Value::Object(_) => v.clone(),
            _ => {
                return Err(
                    GatewayError::invalid("'metadata' must be an object.").with_param("metadata")
                )
            }
        };
    }
    apply_limits(b, &mut g.limits, now)?;
    if let Some(bid) = &g.limits.budget_id {
        if !state.ledger.budgets.load().contains_key(bid) {
            return Err(GatewayError::new(
                ErrorKind::NotFound,
                format!("No budget with id '{bid}'."),
            )
            .with_param("budget_id"));
        }
    }
    if let Some(a) = parse_allowed_models(b.get("allowed_models"))? {
        g.allowed_models = a;
    }
    if let Some(v) = b.get("tools") {
        g.tools = super::tool_policy::apply(v, g.tools.take())?;
    }
    if let Some(v) = b.get("mcp") {
        g.mcp = super::mcp_policy::apply(v, g.mcp.take())?;
    }
    g.updated_at = now;
    Ok(())
}

async fn save(state: &State, kind: GroupKind, g: &GroupRecord) -> Result<(), GatewayError> {
    store_of(state)?
        .put_group(kind, g)
        .await
        .map_err(internal)?;
    state.ledger.upsert_group(kind, g.clone());
    state.ledger.group_account(kind, g);
    after_change(state).await;
    Ok(())
}

fn find(state: &State, kind: GroupKind, id: &str) -> Result<GroupRecord, GatewayError> {
    state
        .ledger
        .groups(kind)
        .load()
        .get(id)
        .map(|g| GroupRecord::clone(g))
        .ok_or_else(|| not_found(kind.noun(), id))
}

/// Deletes a group; with `cascade`, what belongs to it first (see the module doc).
async fn delete(
    state: &State,
    kind: GroupKind,
    id: &str,
    cascade: bool,
) -> Result<(), GatewayError> {
    let store = store_of(state)?;
    let m = members(state, kind, id);
    if !m.is_empty() && !cascade {
        return Err(GatewayError::new(
            ErrorKind::InvalidRequest,
            format!(
                "{} '{id}' has members ({} users, {} keys, {} teams); detach them first, or delete with ?cascade=true.",
                match kind { GroupKind::Team => "Team", GroupKind::Org => "Organisation" },
                m.users.len(),
                m.keys.len(),
                m.teams.len()
            ),
        )
        .with_status(409));
    }
    for t in &m.teams {
        Box::pin(delete(state, GroupKind::Team, t, true)).await?;
    }
    for mut k in state
        .keys
        .all()
        .into_iter()
        .filter(|k| m.keys.contains(&k.id))
    {
        k.active = false;
        store.put_key(&k).await.map_err(internal)?;
        state.keys.upsert(k);
    }
    for uid in &m.users {
        let Some(u) = state.ledger.users.load().get(uid).cloned() else {
            continue;
        };
        let mut u = crate::records::UserRecord::clone(&u);
        u.team_id = None;
        u.updated_at = clock::now_secs();
        store.put_user(&u).await.map_err(internal)?;
        state.ledger.upsert_user(u);
    }
    store.delete_group(kind, id).await.map_err(internal)?;
    state.ledger.remove_group(kind, id);
    Ok(())
}

pub(super) async fn handle(state: &State, kind: GroupKind, req: &Req) -> Reply {
    match (req.method.as_str(), req.seg(1)) {
        ("POST", None) => {
            store_of(state)?;
            let field = id_field(kind);
            let id = match req.body.get(field) {
                Some(Value::String(s)) if super::valid_id(s) => s.clone(),
                _ => {
                    return Err(GatewayError::invalid(format!(
                        "'{field}' is required: 1-128 letters, digits or -_.@"
                    ))
                    .with_param(field))
                }
            };
            if state.ledger.groups(kind).load().contains_key(&id) {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!("{} '{id}' already exists.", kind.noun()),
                )
                .with_status(409));
            }
            let now = clock::now_secs();
            let mut g = GroupRecord {
                id,
                alias: None,
                org_id: None,
                limits: Limits::default(),
                allowed_models: None,
                blocked: false,
                tools: None,
                mcp: None,
                metadata: json!({}),
                created_at: now,
                updated_at: now,
            };
            apply(state, kind, req, &mut g)?;
            save(state, kind, &g).await?;
            Ok(Resp::json(201, view(state, kind, &g)))
        }
        ("GET", None) => {
            let org = req.q("org_id");
            let groups: Vec<GroupRecord> = state
                .ledger
                .groups(kind)
                .load()
                .values()
                .filter(|g| org.is_none_or(|o| g.org_id.as_deref() == Some(o)))
                .map(|g| GroupRecord::clone(g))
                .collect();
            page(groups, |g| g.id.as_str(), req, |g| view(state, kind, g))
        }
        ("GET", Some(id)) if req.segs.len() == 2 => {
            Ok(Resp::json(200, view(state, kind, &find(state, kind, id)?)))
        }
        ("PATCH", Some(id)) if req.segs.len() == 2 => {
            let mut g = find(state, kind, id)?;
            let field = id_field(kind);
            if req.body.get(field).is_some_and(|v| v.as_str() != Some(id)) {
                return Err(
                    GatewayError::invalid(format!("'{field}' cannot be changed."))
                        .with_param(field),
                );
            }
            apply(state, kind, req, &mut g)?;
            save(state, kind, &g).await?;
            Ok(Resp::json(200, view(state, kind, &g)))
        }
        ("DELETE", Some(id)) if req.segs.len() == 2 => {
            find(state, kind, id)?;
            let cascade = match req.q("cascade") {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => {
                    return Err(
                        GatewayError::invalid("'cascade' is true or false.").with_param("cascade")
                    )
                }
            };
            delete(state, kind, id, cascade).await?;
            after_change(state).await;
            Ok(Resp::json(
                200,
                json!({id_field(kind): id, "object": kind.noun(), "deleted": true}),
            ))
        }
        _ => Err(no_route(req)),
    }
}
