//! The management API, under the master key: `/v1/keys`, `/v1/users`, `/v1/teams`,
//! `/v1/orgs`, `/v1/budgets`,
//! `/v1/pricing` (readable with any virtual key), `/v1/usage` and `/v1/traces` (a virtual key
//! reads its own), `/v1/mcp/servers`; `GET /v1/key/info`, where a key reads its own standing;
//! `/v1/admins` (the console's named admins).
//!
//! Writes go to the store first and to the in-memory state after, so an answered write is
//! durable; a process without the store (during an upgrade hand-over) answers 503 with
//! `retry-after: 1`. Lists page with `limit` (1–1000, default 100) and an `after` cursor.
//!
//! [`route`] is a plain function from a [`Request`] to an [`Answer`]: the gateway calls it
//! after [`authorize`] and after reading the body (at most [`MAX_BODY`] bytes); the
//! `tollgate` commands call it in process when no gateway holds the store.

mod admins;
mod budgets;
mod groups;
mod keys;
mod mcp_policy;
mod mcp_servers;
mod pricing;
mod tool_policy;
mod top_ups;
mod traces;
mod usage;

/// Usage aggregation, shared with the `tollgate usage` command.
pub mod usage_totals {
    pub use super::usage::{scan, Totals};
}
mod users;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::auth;
use crate::clock;
use crate::error::{ErrorKind, GatewayError};
use crate::local::{Answer, Request};
use crate::records::Scope;
use crate::services::snapshot;
use crate::state::State;
use crate::store::Store;

/// The largest management request body read.
pub const MAX_BODY: usize = 1024 * 1024;

/// A parsed management request.
pub(crate) struct Req {
    pub method: String,
    /// Path segments after `/v1/`, e.g. `["keys", "key_1", "rotate"]`.
    pub segs: Vec<String>,
    pub query: HashMap<String, String>,
    pub body: Map<String, Value>,
    /// Who is asking, for audit trails: `master key`, or `admin:<name>` from the console.
    pub actor: String,
}

impl Req {
    pub fn seg(&self, i: usize) -> Option<&str> {
        self.segs.get(i).map(String::as_str)
    }

    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    /// `limit` in 1..=1000 (default 100).
    pub fn limit(&self) -> Result<usize, GatewayError> {
        match self.q("limit") {
            None => Ok(100),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err(
                    GatewayError::invalid("'limit' must be an integer from 1 to 1000.")
                        .with_param("limit"),
                ),
            },
        }
    }

    /// Refuses fields this endpoint does not know (a typo must not be silently ignored).
    pub fn only(&self, allowed: &[&str]) -> Result<(), GatewayError> {
        match self.body.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(GatewayError::invalid(format!(
                "Unknown field '{k}'. Allowed: {}.",
                allowed.join(", ")
            ))
            .with_param(k.clone())),
            None => Ok(()),
        }
    }
}

/// A management answer that succeeded.
pub(crate) struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Resp {
    pub fn json(status: u16, v: Value) -> Resp {
        Resp {
            status,
            content_type: "application/json",
            body: Bytes::from(v.to_string()),
        }
    }
}

pub(crate) type Reply = Result<Resp, GatewayError>;

pub(crate) fn not_found(what: &str, id: &str) -> GatewayError {
    let shown: String = id.chars().take(64).filter(|c| !c.is_control()).collect();
    GatewayError::new(ErrorKind::NotFound, format!("No {what} with id '{shown}'."))
}

pub(crate) fn no_route(req: &Req) -> GatewayError {
    GatewayError::new(
        ErrorKind::NotFound,
        format!(
            "No management route for {} /v1/{}.",
            req.method,
            req.segs.join("/")
        ),
    )
    .with_status(405)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(ErrorKind::Internal, format!("Store error: {e}"))
}

pub(crate) fn store_of(state: &State) -> Result<Arc<dyn Store>, GatewayError> {
    state.store.get().ok_or_else(|| {
        GatewayError::new(
            ErrorKind::Unavailable,
            "The store is being handed over between processes (upgrade in progress); retry in a second.",
        )
        .with_retry_after(1)
    })
}

/// Rewrites the snapshot after a change (keys, users, budgets).
pub(crate) async fn after_change(state: &State) {
    let (dir, index, ledger) = (
        state.cfg.data_dir.clone(),
        state.keys.clone(),
        state.ledger.clone(),
    );
    match tokio::task::spawn_blocking(move || snapshot::write(&dir, &index, Some(&ledger))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::error!("cannot write the snapshot: {e}"),
        Err(e) => log::error!("cannot write the snapshot: {e}"),
    }
}

/// A page of `items` sorted by id, after the `after` cursor.
pub(crate) fn page<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    req: &Req,
    render: impl Fn(&T) -> Value,
) -> Reply {
    let limit = req.limit()?;
    let after = req.q("after");
    let mut items: Vec<T> = items
        .into_iter()
        .filter(|i| after.is_none_or(|a| id(i) > a))
        .collect();
    items.sort_by(|a, b| id(a).cmp(id(b)));
    let has_more = items.len() > limit;
    items.truncate(limit);
    let last = items.last().map(|i| id(i).to_string());
    let data: Vec<Value> = items.iter().map(render).collect();
    Ok(Resp::json(
        200,
        json!({"object": "list", "data": data, "has_more": has_more, "next_cursor": if has_more { last } else { None }}),
    ))
}

pub(crate) fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn require_master(state: &State, headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let presented = presented_key(headers);
    // Always hash and compare, so a wrong key and a virtual key take the same time; and so
    // does a request without a key (the empty string is hashed, never accepted).
    let is_master = state.keys.is_master(presented.unwrap_or(""));
    match presented {
        Ok(_) if is_master => Ok(()),
        Ok(_) => {
            crate::metrics::AUTH_FAILURES
                .with_label_values(&["not_master"])
                .inc();
            Err(GatewayError::new(
                ErrorKind::Authentication,
                "The management API needs the master key.",
            ))
        }
        Err(f) => {
            crate::metrics::AUTH_FAILURES
                .with_label_values(&[f.label()])
                .inc();
            Err(GatewayError::new(ErrorKind::Authentication, f.message()))
        }
    }
}

fn presented_key(headers: &http::HeaderMap) -> Result<&str, auth::AuthFailure> {
    auth::presented_key(
        headers.get("authorization").map(|v| v.as_bytes()),
        headers.get("x-api-key").map(|v| v.as_bytes()),
    )
}

/// The management request body: a JSON object, or nothing.
fn parse_body(body: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GatewayError::invalid(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(GatewayError::invalid(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

/// Whether a management request may go on: prices are public to every key holder,
/// everything else needs the master key. Checked before the body is read.
pub fn authorize(
    state: &State,
    method: &str,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<(), GatewayError> {
    let root = path_segments(path).swap_remove(0);
    // Prices and traces are readable with a virtual key too (a key reads its own traces).
    let key_readable = method == "GET" && (root == "pricing" || root == "traces");
    if key_readable && require_master(state, headers).is_err() {
        let k = presented_key(headers)
            .map_err(|f| GatewayError::new(ErrorKind::Authentication, f.message()))?;
        state
            .keys
            .check(k, crate::clock::now_secs())
            .map_err(|f| GatewayError::new(ErrorKind::Authentication, f.message()))?;
        Ok(())
    } else if !key_readable {
        require_master(state, headers)
    } else {
        Ok(())
    }
}

/// Whether a management request carries a body to read (others' bodies are ignored).
pub fn takes_body(method: &str) -> bool {
    matches!(method, "POST" | "PATCH" | "PUT")
}

/// The path segments after `/v1/`, percent-decoded.
fn path_segments(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .trim_start_matches("/v1/")
        .split('/')
        .map(percent_decode)
        .collect()
}

/// Answers a management request whose caller is already authorized: over HTTP, by
/// [`authorize`]; in process (the `tollgate` commands on a store no gateway holds), by
/// being able to open the store at all. Errors come back in OpenAI's envelope.
pub async fn route(state: &State, req: &Request<'_>) -> Answer {
    answer(state, req, None, "master key").await
}

/// [`route`] for a console session of the named admin `name`: audit trails record them.
pub async fn route_as_admin(state: &State, req: &Request<'_>, name: &str) -> Answer {
    answer(state, req, None, &format!("admin:{name}")).await
}

/// Answers a traces read for the virtual key `key_id` (a key holder's console session,
/// which holds the key's id, not its secret): exactly what that key reads over HTTP, its own
/// traces only. Every other management path is refused.
pub async fn route_traces_as_key(state: &State, req: &Request<'_>, key_id: &str) -> Answer {
    answer(state, req, Some(key_id), "key").await
}

async fn answer(state: &State, req: &Request<'_>, as_key: Option<&str>, actor: &str) -> Answer {
    let req_headers = req.headers;
    let body = if takes_body(req.method) {
        parse_body(&req.body)
    } else {
        Ok(Map::new())
    };
    let answer = match body {
        Ok(body) => {
            let req = Req {
                method: req.method.to_string(),
                segs: path_segments(req.path),
                query: parse_query(req.query),
                body,
                actor: actor.to_string(),
            };
            if req.seg(0) == Some("traces") {
                let viewer = match as_key {
                    Some(k) => Some(k.to_string()),
                    None => traces::viewer(state, req_headers),
                };
                traces::handle(state, &req, viewer.as_deref()).await
            } else if as_key.is_some() {
                Err(GatewayError::new(
                    ErrorKind::PermissionDenied,
                    "A virtual key reads only its own traces here.",
                ))
            } else {
                dispatch(state, &req).await
            }
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(r) => Answer::new(r.status, r.content_type, r.body),
        Err(e) => Answer::error(crate::translate::Format::Chat, &e),
    }
}

async fn dispatch(state: &State, req: &Req) -> Reply {
    if req.seg(2) == Some("top-ups")
        && matches!(req.seg(0), Some("keys" | "users" | "teams" | "orgs"))
    {
        return top_ups::handle(state, req).await;
    }
    match req.seg(0) {
        Some("keys") => keys::handle(state, req).await,
        Some("users") => users::handle(state, req).await,
        Some("teams") => groups::handle(state, crate::records::GroupKind::Team, req).await,
        Some("orgs") => groups::handle(state, crate::records::GroupKind::Org, req).await,
        Some("budgets") => budgets::handle(state, req).await,
        Some("pricing") => pricing::handle(state, req).await,
        Some("usage") => usage::handle(state, req).await,
        Some("admins") => admins::handle(state, req).await,
        Some("mcp") => mcp_servers::handle(state, req).await,
        _ => Err(no_route(req)),
    }
}

/// An id a record may take: 1-128 letters, digits or `-_.@`.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

/// A reference to a team or organisation in a body field: null clears it, an id must exist.
pub(crate) fn group_ref(
    state: &State,
    kind: crate::records::GroupKind,
    v: &Value,
    field: &str,
) -> Result<Option<String>, GatewayError> {
    match v {
        Value::Null => Ok(None),
        Value::String(id) if state.ledger.groups(kind).load().contains_key(id) => {
            Ok(Some(id.clone()))
        }
        Value::String(id) => Err(GatewayError::new(
            ErrorKind::NotFound,
            format!(
                "No {} with id '{}': create it first with POST /v1/{}.",
                kind.noun(),
                id.chars()
                    .take(64)
                    .filter(|c| !c.is_control())
                    .collect::<String>(),
                kind.plural()
            ),
        )
        .with_param(field.to_string())),
        _ => Err(
            GatewayError::invalid(format!("'{field}' must be a string or null."))
                .with_param(field.to_string()),
        ),
    }
}

/// The standing of an account that may not exist yet.
pub(crate) fn standing_of(
    state: &State,
    scope: Scope,
    id: &str,
    limits: &crate::records::Limits,
) -> Value {
    let limit = state.ledger.resolve_limit(limits);
    let now = clock::now_secs();
    let mut v = crate::ledger::standing_json(&state.ledger.account(scope, id, limit), now);
    // Each further budget's own standing, under its stable id.
    if !limits.budgets.is_empty() {
        v["budgets"] = limits
            .budgets
            .iter()
            .map(|b| {
                let a = state
                    .ledger
                    .account(scope, &b.account_id(id), Some(b.limit()));
                let mut s = crate::ledger::standing_json(&a, now);
                s["id"] = json!(b.id);
                s["model"] = json!(b.model);
                s
            })
            .collect();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("a=1&b=x%3Ay+z&c&d=%zz"));
        assert_eq!(q["a"], "1");
        assert_eq!(q["b"], "x:y z");
        assert_eq!(q["c"], "");
        assert_eq!(q["d"], "%zz");
    }
}
