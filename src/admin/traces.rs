//! `GET /v1/traces` and `GET /v1/traces/{request_id}`: the stored request traces, newest
//! first. The master key reads all of them; a virtual key reads its own (the key filter is
//! set for it).
//!
//! Query: `key_id`, `user_id`, `model`, `session_id`, `status`, `from` / `to` (RFC 3339 or
//! Unix seconds), `min_latency_ms`, `limit` (1–1000) and `cursor` (the previous page's
//! `next_cursor`).

use serde_json::json;

use super::{internal, not_found, store_of, Reply, Req, Resp};
use crate::error::{ErrorKind, GatewayError};
use crate::records::period::parse_time;
use crate::records::TraceFilter;
use crate::state::State;

/// The virtual key reading, or None for the master key (or an in-process caller).
pub(crate) fn viewer(state: &State, headers: &http::HeaderMap) -> Option<String> {
    let k = crate::auth::presented_key(
        headers.get("authorization").map(|v| v.as_bytes()),
        headers.get("x-api-key").map(|v| v.as_bytes()),
    )
    .ok()?;
    if state.keys.is_master(k) {
        return None;
    }
    state
        .keys
        .check(k, crate::clock::now_secs())
        .ok()
        .map(|r| r.id.clone())
}

fn filter_from(req: &Req) -> Result<TraceFilter, GatewayError> {
    let time = |k: &str| -> Result<Option<u64>, GatewayError> {
        match req.q(k) {
            None => Ok(None),
            Some(v) => parse_time(v).map(|s| Some(s * 1000)).ok_or_else(|| {
                GatewayError::invalid(format!(
                    "'{k}' must be a date (2026-11-01), an RFC 3339 UTC time or Unix seconds."
                ))
                .with_param(k.to_string())
            }),
        }
    };
    let num = |k: &str| -> Result<Option<u64>, GatewayError> {
        req.q(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    GatewayError::invalid(format!("'{k}' must be a whole number."))
                        .with_param(k.to_string())
                })
            })
            .transpose()
    };
    let s = |k: &str| req.q(k).map(String::from);
    Ok(TraceFilter {
        key_id: s("key_id"),
        user_id: s("user_id"),
        model: s("model"),
        session_id: s("session_id"),
        status: match num("status")? {
            None => None,
            Some(v) => Some(u16::try_from(v).map_err(|_| {
                GatewayError::invalid("'status' must be an HTTP status code.").with_param("status")
            })?),
        },
        from_ms: time("from")?,
        to_ms: time("to")?,
        min_latency_ms: num("min_latency_ms")?,
    })
}

pub(crate) async fn handle(state: &State, req: &Req, viewer: Option<&str>) -> Reply {
    if req.method != "GET" {
        return Err(super::no_route(req));
    }
    let store = store_of(state)?;
    match req.seg(1) {
        None => {
            let mut f = filter_from(req)?;
            if let Some(own) = viewer {
                if f.key_id.as_deref().is_some_and(|k| k != own) {
                    return Err(GatewayError::new(
                        ErrorKind::PermissionDenied,
                        "A virtual key reads only its own traces.",
                    ));
                }
                f.key_id = Some(own.to_string());
            }
            let page = store
                .query_traces(&f, req.q("cursor"), req.limit()?)
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::Corrupt(m) if m == "bad cursor" => {
                        GatewayError::invalid("'cursor' is not a cursor of this list.")
                            .with_param("cursor")
                    }
                    e => internal(e),
                })?;
            Ok(Resp::json(
                200,
                json!({
                    "object": "list",
                    "data": page.traces,
                    "has_more": page.next_cursor.is_some(),
                    "next_cursor": page.next_cursor,
                }),
            ))
        }
        Some(id) if req.seg(2).is_none() => {
            match store.get_trace(id, viewer).await.map_err(internal)? {
                Some(t) => Ok(Resp::json(200, json!(t))),
                None => Err(not_found("trace", id)),
            }
        }
        _ => Err(super::no_route(req)),
    }
}
