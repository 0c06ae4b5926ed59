//! `/ui/api/`: the JSON the console's scripts read and write. Each call is answered by the
//! function that answers it elsewhere: the management API ([`crate::admin::route`], with the
//! operator's session in place of the master key) and the local endpoints (health, models,
//! key info). A key holder's session reaches only its own key's standing, usage and traces.
//!
//! Every call needs a session; every state-changing one also the session's CSRF token in
//! `X-CSRF-Token` and an `Origin` of this console.

use serde_json::json;

use super::guard;
use super::session::{Role, Session};
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, GatewayError};
use crate::local::{self, Answer, Request};
use crate::state::State;
use crate::translate::Format;

pub async fn answer(
    state: &State,
    req: &Request<'_>,
    rest: &str,
    session: Option<(String, Session)>,
) -> Answer {
    let Some((id, s)) = session else {
        return refuse(ErrorKind::Authentication, "Log in to the console first.");
    };
    let reads = matches!(req.method, "GET" | "HEAD");
    if !reads
        && (!guard::same_origin(req.headers)
            || !guard::token_matches(
                req.header("x-csrf-token").and_then(|v| v.to_str().ok()),
                &s.csrf,
            ))
    {
        return refuse(
            ErrorKind::PermissionDenied,
            "Cross-site request refused: the Origin or the CSRF token does not match this console.",
        );
    }
    match (&s.role, req.method, rest) {
        (r, "GET", "status") if r.is_operator() => status(state, req),
        (r, "GET", "guardrails") if r.is_operator() => {
            Answer::json(200, &super::pages::guardrails::view(state))
        }
        (r, "GET", "models") if r.is_operator() => {
            let r = Request {
                path: "/v1/models",
                ..sub(req)
            };
            local::models(state, &r, Endpoint::Models).await
        }
        (r, "DELETE", "sessions") if r.is_operator() => {
            let n = state.console.sessions.revoke_others(&id);
            Answer::json(200, &json!({"revoked": n}))
        }
        (role, _, r) if role.is_operator() && r.starts_with("v1/") => {
            let path = format!("/{r}");
            let r = Request {
                path: &path,
                ..sub(req)
            };
            match role {
                Role::Admin { name } => crate::admin::route_as_admin(state, &r, name).await,
                _ => crate::admin::route(state, &r).await,
            }
        }
        (Role::KeyHolder { key_id }, "GET", "me") => {
            match state.keys.all().into_iter().find(|k| &k.id == key_id) {
                Some(k) => local::key_info(state, &k),
                None => refuse(ErrorKind::Authentication, "The key is gone."),
            }
        }
        (Role::KeyHolder { key_id }, "GET", "v1/usage") => {
            // The key holder's own usage only: whatever `key_id` was asked for is replaced.
            let mut query: Vec<String> = req
                .query
                .unwrap_or("")
                .split('&')
                .filter(|p| {
                    let name = crate::admin::percent_decode(p.split('=').next().unwrap_or(""));
                    !p.is_empty() && name != "key_id"
                })
                .map(String::from)
                .collect();
            query.push(format!("key_id={}", encode(key_id)));
            let query = query.join("&");
            let r = Request {
                path: "/v1/usage",
                query: Some(&query),
                ..sub(req)
            };
            crate::admin::route(state, &r).await
        }
        (Role::KeyHolder { key_id }, "GET", r)
            if r == "v1/traces" || r.starts_with("v1/traces/") =>
        {
            // The same answer the key gets over HTTP: its own traces only.
            let path = format!("/{r}");
            let r = Request {
                path: &path,
                ..sub(req)
            };
            crate::admin::route_traces_as_key(state, &r, key_id).await
        }
        (Role::KeyHolder { .. }, _, _) => refuse(
            ErrorKind::PermissionDenied,
            "A key holder's console shows only its own key.",
        ),
        _ => refuse(ErrorKind::NotFound, "No such console call."),
    }
}

/// The request again, for another handler (path and query replaced by the caller).
fn sub<'a>(req: &Request<'a>) -> Request<'a> {
    Request {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        body: req.body.clone(),
    }
}

/// Health (store, deployments and their breakers), plus what only the console shows.
fn status(state: &State, req: &Request<'_>) -> Answer {
    let r = Request {
        path: "/health",
        ..sub(req)
    };
    let mut a = local::health(state, &r);
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&a.body) {
        v["in_flight"] = json!(state.inflight.current());
        v["console_sessions"] = json!(state.console.sessions.len());
        a = Answer::json(a.status, &v);
    }
    a
}

fn refuse(kind: ErrorKind, message: &str) -> Answer {
    Answer::error(Format::Chat, &GatewayError::new(kind, message))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
