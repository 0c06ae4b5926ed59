//! The endpoints tollgate answers itself, without a provider: `/`, health, metrics, model
//! listings, the gateway tools and a key's own standing. Like the management API ([`crate::admin::route`]) they
//! are plain functions from a [`Request`] to an [`Answer`]: no Pingora session in here. The
//! gateway authenticates where an endpoint needs a key, reads the request, calls these and
//! writes the answer (`gateway::reply`).

mod health;
mod models;
mod tools;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::GatewayError;
use crate::records::KeyRecord;
use crate::state::State;
use crate::translate::Format;

pub use health::health;
pub use models::models;
pub use tools::tools;

/// A request for a local endpoint (or the management API), as plain data.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The body, read whole (empty when the endpoint takes none).
    pub body: Bytes,
}

impl Request<'_> {
    pub fn header(&self, name: &str) -> Option<&http::HeaderValue> {
        self.headers.get(name)
    }
}

/// What a local endpoint answers.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Seconds, sent as `retry-after`.
    pub retry_after: Option<u64>,
    /// Why the request failed (an error answer), for the access log; never holds secrets.
    pub error: Option<String>,
    /// More headers (the console's cookies, redirects and security headers).
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub fn new(status: u16, content_type: &'static str, body: Bytes) -> Answer {
        Answer {
            status,
            content_type,
            body,
            retry_after: None,
            error: None,
            headers: Vec::new(),
        }
    }

    pub fn json(status: u16, v: &Value) -> Answer {
        Answer::new(status, "application/json", Bytes::from(v.to_string()))
    }

    /// An error in the envelope of `dialect`.
    pub fn error(dialect: Format, e: &GatewayError) -> Answer {
        Answer {
            status: e.status(),
            content_type: "application/json",
            body: e.body(dialect),
            retry_after: e.retry_after.map(u64::from),
            error: Some(e.message.clone()),
            headers: Vec::new(),
        }
    }
}

/// `GET /`.
pub fn root() -> Answer {
    Answer::new(200, "text/plain", Bytes::from_static(b"tollgate\n"))
}

/// `GET /metrics`: Prometheus' text format.
pub fn metrics() -> Answer {
    Answer::new(
        200,
        "text/plain; version=0.0.4",
        Bytes::from(crate::metrics::render()),
    )
}

/// `GET /v1/key/info`: what an authenticated key may see of itself.
pub fn key_info(state: &State, key: &KeyRecord) -> Answer {
    Answer::json(200, &key_info_json(state, key))
}

fn key_info_json(state: &State, key: &KeyRecord) -> Value {
    let now = crate::clock::now_secs();
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

/// `GET /v1/key/info?session=<id>`: the key's standing and what its requests in that client
/// session (Claude Code's `x-claude-code-session-id`, Codex's `session-id`) cost, from the
/// usage records (a request settled a moment ago may not be written yet). Without the
/// parameter, [`key_info`].
pub async fn key_info_session(state: &State, key: &KeyRecord, query: Option<&str>) -> Answer {
    let session = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "session")
            .map(|(_, v)| v.into_owned())
    });
    let Some(session) = session else {
        return key_info(state, key);
    };
    if session.is_empty() || session.len() > 128 {
        let e = GatewayError::invalid("'session' is a client session id of 1 to 128 characters.")
            .with_param("session");
        return Answer::error(Format::Chat, &e);
    }
    let store = match crate::admin::store_of(state) {
        Ok(s) => s,
        Err(e) => return Answer::error(Format::Chat, &e),
    };
    let f = crate::store::UsageFilter {
        key_id: Some(key.id.clone()),
        session_id: Some(session.clone()),
        ..Default::default()
    };
    let mut totals = crate::admin::usage_totals::Totals::default();
    if let Err(e) = crate::admin::usage_totals::scan(store.as_ref(), &f, |r| totals.add(&r)).await {
        return Answer::error(Format::Chat, &e);
    }
    let mut v = key_info_json(state, key);
    v["session"] = totals.json();
    v["session"]["session_id"] = json!(session);
    Answer::json(200, &v)
}

/// A client-supplied path or name, shortened and stripped of control characters, for
/// messages.
pub(crate) fn printable(p: &str) -> String {
    p.chars().take(100).filter(|c| !c.is_control()).collect()
}
