//! The management API (master key only). For now: keys (`POST`/`GET /v1/keys`,
//! `GET`/`DELETE /v1/keys/{id}`).
//!
//! Writes go to the store first and to the in-memory index after, so an answered write is
//! durable; a process without the store (during an upgrade hand-over) answers 503 with
//! `retry-after: 1`.

use bytes::BytesMut;
use pingora::proxy::Session;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::auth::{self, KeyRecord};
use crate::error::{ErrorKind, GatewayError};
use crate::gateway::{local, AppState, Ctx, Failure};
use crate::store::{snapshot, Store};

const MAX_ADMIN_BODY: usize = 1024 * 1024;

fn require_master(state: &AppState, s: &Session) -> Result<(), GatewayError> {
    let h = &s.req_header().headers;
    let presented = auth::presented_key(
        h.get("authorization").map(|v| v.as_bytes()),
        h.get("x-api-key").map(|v| v.as_bytes()),
    );
    match presented {
        // Always hash and compare, so a wrong key and a virtual key take the same time.
        Ok(k) if state.keys.is_master(k) => Ok(()),
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

fn store_of(state: &AppState) -> Result<Arc<dyn Store>, GatewayError> {
    state.store.get().ok_or_else(|| {
        GatewayError::new(
            ErrorKind::Unavailable,
            "The store is being handed over between processes (upgrade in progress); retry in a second.",
        )
        .with_retry_after(1)
    })
}

async fn read_json(s: &mut Session) -> Result<Value, Failure> {
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
        return Ok(json!({}));
    }
    serde_json::from_slice(&body).map_err(|e| {
        GatewayError::invalid(format!("The request body is not valid JSON: {e}")).into()
    })
}

async fn after_change(state: &AppState) {
    let (dir, index, ledger) = (state.cfg.data_dir.clone(), state.keys.clone(), state.ledger.clone());
    match tokio::task::spawn_blocking(move || snapshot::write(&dir, &index, Some(&ledger))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::error!("cannot write the key snapshot: {e}"),
        Err(e) => log::error!("cannot write the key snapshot: {e}"),
    }
}

/// Parses the optional fields of a key creation request.
pub fn parse_new_key(v: &Value) -> Result<(Option<String>, Option<u64>, Value), GatewayError> {
    let obj = v
        .as_object()
        .ok_or_else(|| GatewayError::invalid("Expected a JSON object."))?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "name" | "expires_at" | "metadata") {
            return Err(
                GatewayError::invalid(format!("Unknown field '{k}'.")).with_param(k.clone())
            );
        }
    }
    let name = match obj.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) if n.len() <= 200 && !n.chars().any(char::is_control) => {
            Some(n.clone())
        }
        Some(_) => {
            return Err(GatewayError::invalid(
                "'name' must be a string of at most 200 printable characters.",
            )
            .with_param("name"))
        }
    };
    let expires_at = match obj.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            return Err(
                GatewayError::invalid("'expires_at' must be a Unix timestamp in seconds.")
                    .with_param("expires_at"),
            )
        }
    };
    if expires_at.is_some_and(|e| e <= auth::now_secs()) {
        return Err(GatewayError::invalid("'expires_at' is in the past.").with_param("expires_at"));
    }
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => {
            return Err(
                GatewayError::invalid("'metadata' must be an object.").with_param("metadata")
            )
        }
    };
    Ok((name, expires_at, metadata))
}

pub async fn handle(state: &AppState, s: &mut Session, ctx: &mut Ctx) -> Result<(), Failure> {
    require_master(state, s)?;
    let method = s.req_header().method.clone();
    let path = s.req_header().uri.path().trim_end_matches('/').to_string();
    let id = path.strip_prefix("/v1/keys/").map(str::to_string);
    let rid = ctx.request_id.clone();
    match (method.as_str(), id) {
        ("POST", None) => {
            let v = read_json(s).await?;
            let (name, expires_at, metadata) = parse_new_key(&v)?;
            let store = store_of(state)?;
            let (rec, secret) = KeyRecord::mint(name, expires_at, metadata);
            store
                .put_key(&rec)
                .await
                .map_err(|e| GatewayError::new(ErrorKind::Internal, e.to_string()))?;
            state.keys.upsert(rec.clone());
            after_change(state).await;
            let mut out = rec.public_json();
            out["key"] = Value::String(secret);
            local::send_json(s, 201, &out, &rid).await?;
        }
        ("GET", None) => {
            let data: Vec<Value> = state
                .keys
                .all()
                .iter()
                .map(KeyRecord::public_json)
                .collect();
            local::send_json(s, 200, &json!({"object": "list", "data": data}), &rid).await?;
        }
        ("GET", Some(id)) => {
            let rec = state
                .keys
                .all()
                .into_iter()
                .find(|k| k.id == id)
                .ok_or_else(|| not_found(&id))?;
            local::send_json(s, 200, &rec.public_json(), &rid).await?;
        }
        ("DELETE", Some(id)) => {
            let store = store_of(state)?;
            if !state.keys.all().iter().any(|k| k.id == id) {
                return Err(not_found(&id).into());
            }
            store
                .delete_key(&id)
                .await
                .map_err(|e| GatewayError::new(ErrorKind::Internal, e.to_string()))?;
            state.keys.remove(&id);
            after_change(state).await;
            local::send_json(
                s,
                200,
                &json!({"id": id, "object": "key", "deleted": true}),
                &rid,
            )
            .await?;
        }
        _ => {
            return Err(GatewayError::new(
                ErrorKind::NotFound,
                format!("No management route for {method} {path}."),
            )
            .with_status(405)
            .into())
        }
    }
    Ok(())
}

fn not_found(id: &str) -> GatewayError {
    let shown: String = id.chars().take(64).filter(|c| !c.is_control()).collect();
    GatewayError::new(ErrorKind::NotFound, format!("No key with id '{shown}'."))
}
