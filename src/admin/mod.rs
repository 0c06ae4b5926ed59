//! The management API, under the master key: `/v1/keys`, `/v1/users`, `/v1/budgets`,
//! `/v1/pricing` (readable with any virtual key) and `/v1/usage`; and `GET /v1/key/info`,
//! where a key reads its own standing.
//!
//! Writes go to the store first and to the in-memory state after, so an answered write is
//! durable; a process without the store (during an upgrade hand-over) answers 503 with
//! `retry-after: 1`. Lists page with `limit` (1–1000, default 100) and an `after` cursor.

mod budgets;
mod keys;
mod pricing;
mod usage;

/// Usage aggregation, shared with the `tollgate usage` command.
pub mod usage_totals {
    pub use super::usage::{scan, Totals};
}
mod users;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::{self, KeyRecord};
use crate::error::{ErrorKind, GatewayError};
use crate::gateway::{local, AppState, Ctx, Failure};
use crate::ledger::budget::Scope;
use crate::store::{snapshot, Store};

const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// A parsed management request.
pub(crate) struct Req {
    pub method: String,
    /// Path segments after `/v1/`, e.g. `["keys", "key_1", "rotate"]`.
    pub segs: Vec<String>,
    pub query: HashMap<String, String>,
    pub body: Map<String, Value>,
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

/// A management answer.
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

pub(crate) type Answer = Result<Resp, GatewayError>;

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

pub(crate) fn store_of(state: &AppState) -> Result<Arc<dyn Store>, GatewayError> {
    state.store.get().ok_or_else(|| {
        GatewayError::new(
            ErrorKind::Unavailable,
            "The store is being handed over between processes (upgrade in progress); retry in a second.",
        )
        .with_retry_after(1)
    })
}

/// Rewrites the snapshot after a change (keys, users, budgets).
pub(crate) async fn after_change(state: &AppState) {
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
) -> Answer {
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

fn require_master(state: &AppState, s: &Session) -> Result<(), GatewayError> {
    let h = &s.req_header().headers;
    let presented = auth::presented_key(
        h.get("authorization").map(|v| v.as_bytes()),
        h.get("x-api-key").map(|v| v.as_bytes()),
    );
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

async fn read_body(s: &mut Session) -> Result<Map<String, Value>, Failure> {
    let mut body = BytesMut::new();
    while let Some(c) = s.read_request_body().await? {
        if body.len() + c.len() > MAX_ADMIN_BODY {
            return Err(GatewayError::new(
                ErrorKind::PayloadTooLarge,
                "Management request body is too large.",
            )
            .into());
        }
        body.extend_from_slice(&c);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GatewayError::invalid("The request body must be a JSON object.").into()),
        Err(e) => {
            Err(GatewayError::invalid(format!("The request body is not valid JSON: {e}")).into())
        }
    }
}

/// The path segments after `/v1/`, percent-decoded.
fn path_segments(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .trim_start_matches("/v1/")
        .split('/')
        .map(percent_decode)
        .collect()
}

pub async fn handle(state: &AppState, s: &mut Session, ctx: &mut Ctx) -> Result<(), Failure> {
    let h = s.req_header();
    let method = h.method.as_str().to_string();
    let query = parse_query(h.uri.query());
    let segs = path_segments(h.uri.path());
    // Prices are public to every key holder; everything else needs the master key.
    let pricing_read = method == "GET" && segs[0] == "pricing";
    if pricing_read && require_master(state, s).is_err() {
        let h = &s.req_header().headers;
        let k = auth::presented_key(
            h.get("authorization").map(|v| v.as_bytes()),
            h.get("x-api-key").map(|v| v.as_bytes()),
        )
        .map_err(|f| GatewayError::new(ErrorKind::Authentication, f.message()))?;
        state
            .keys
            .check(k, auth::now_secs())
            .map_err(|f| GatewayError::new(ErrorKind::Authentication, f.message()))?;
    } else if !pricing_read {
        require_master(state, s)?;
    }
    let body = if matches!(method.as_str(), "POST" | "PATCH" | "PUT") {
        read_body(s).await?
    } else {
        Map::new()
    };
    let req = Req {
        method,
        segs,
        query,
        body,
    };
    let answer = dispatch(state, &req).await?;
    local::send(
        s,
        answer.status,
        answer.content_type,
        answer.body,
        &ctx.request_id,
        &[],
    )
    .await?;
    Ok(())
}

async fn dispatch(state: &AppState, req: &Req) -> Answer {
    match req.seg(0) {
        Some("keys") => keys::handle(state, req).await,
        Some("users") => users::handle(state, req).await,
        Some("budgets") => budgets::handle(state, req).await,
        Some("pricing") => pricing::handle(state, req).await,
        Some("usage") => usage::handle(state, req).await,
        _ => Err(no_route(req)),
    }
}

/// Answers a management request in this process, without HTTP and without the master key:
/// how the `tollgate` commands work on a store that no gateway holds (whoever can open the
/// store can read it anyway). `target` is `/v1/...`, optionally with a query; errors come back
/// as the same OpenAI-style envelope the HTTP API sends.
pub(crate) async fn answer_in_process(
    state: &AppState,
    method: &str,
    target: &str,
    body: Map<String, Value>,
) -> Resp {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let req = Req {
        method: method.to_string(),
        segs: path_segments(path),
        query: parse_query(query),
        body,
    };
    match dispatch(state, &req).await {
        Ok(r) => r,
        Err(e) => Resp {
            status: e.status(),
            content_type: "application/json",
            body: e.body(crate::translate::Format::Chat),
        },
    }
}

/// `GET /v1/key/info`: what a key may see of itself.
pub fn key_info(state: &AppState, key: &KeyRecord) -> Value {
    let now = auth::now_secs();
    let ledger = &state.ledger;
    let mut v = key.public_json();
    v["standing"] = crate::ledger::standing_json(&ledger.key_account(key), now);
    if let Some(u) = key
        .user_id
        .as_ref()
        .and_then(|u| ledger.users.load().get(u).cloned())
    {
        v["user"] = json!({"user_id": u.user_id, "standing": crate::ledger::standing_json(&ledger.user_account(&u), now)});
    }
    v
}

/// The standing of an account that may not exist yet.
pub(crate) fn standing_of(
    state: &AppState,
    scope: Scope,
    id: &str,
    limits: &crate::ledger::entities::Limits,
) -> Value {
    let limit = state.ledger.resolve_limit(limits);
    crate::ledger::standing_json(&state.ledger.account(scope, id, limit), auth::now_secs())
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
