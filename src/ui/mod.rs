//! The web console, served at `/ui/` by the gateway itself (`ui:` in the config).
//!
//! Like [`crate::local`] and [`crate::admin`], it is a plain function from a
//! [`Request`] to an [`Answer`]. Pages are server-rendered shells (`pages/`, one module per
//! page, in one shared layout) whose small embedded scripts (`static/`) fetch JSON from
//! `/ui/api/`, which calls the management API's own functions ([`crate::admin::route`],
//! [`crate::local`]) with the session standing in for the master key; nothing here
//! re-implements what they do. The scripts render every value with `textContent`: user
//! strings are never markup.
//!
//! Security: `guard` (headers, cookies, `Origin` and CSRF token checks), `session`
//! (server-side sessions under hashed ids, the login limit).

pub mod admins;
mod api;
pub mod guard;
mod login;
pub mod pages;
pub mod session;
pub mod settings;

use bytes::Bytes;
use std::net::IpAddr;

use crate::local::{Answer, Request};
use crate::state::State;
use guard::Client;
use session::{LoginLimiter, Role, Session, Sessions};

/// The console's live state: sessions and the login limit.
pub struct Console {
    pub sessions: std::sync::Arc<Sessions>,
    pub logins: LoginLimiter,
}

impl Console {
    /// The gateway's console: sessions kept in the data directory too (they survive a
    /// restart and a graceful upgrade).
    pub fn new(cfg: &crate::config::Config) -> Console {
        Console {
            sessions: Sessions::persistent(cfg.data_dir.clone(), cfg.ui.session_idle_secs),
            logins: LoginLimiter::default(),
        }
    }

    /// Sessions in memory only (the CLI's in-process state).
    pub fn in_memory(cfg: &crate::config::Config) -> Console {
        Console {
            sessions: Sessions::in_memory(cfg.ui.session_idle_secs),
            logins: LoginLimiter::default(),
        }
    }
}

/// Whether `GET /` from this client should be sent to the console: a browser (it asks for
/// HTML) and a console that is on.
pub fn wants_console(state: &State, headers: &http::HeaderMap) -> bool {
    state.cfg.ui.enabled
        && headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// `302` to the console, for a browser asking for `/`.
pub fn root_redirect() -> Answer {
    redirect(302, "/ui/")
}

/// Answers a request under `/ui`. `peer` is the TCP peer's address.
pub async fn answer(state: &State, req: &Request<'_>, peer: Option<IpAddr>) -> Answer {
    let mut a = if state.cfg.ui.enabled {
        route(state, req, peer).await
    } else {
        not_found()
    };
    a.headers.extend(guard::security_headers());
    a
}

async fn route(state: &State, req: &Request<'_>, peer: Option<IpAddr>) -> Answer {
    let client = Client::of(peer, req.headers, &state.cfg.ui);
    let path = req.path;
    let session = current(state, req.headers);
    match (req.method, path) {
        (_, "/ui") => redirect(308, "/ui/"),
        ("GET" | "HEAD", "/ui/") => match session {
            Some((_, s)) => redirect(303, &format!("/ui/{}", pages::home(&s.role))),
            None => redirect(303, "/ui/login"),
        },
        ("GET" | "HEAD", "/ui/login") => login::form(client, None, 200),
        ("POST", "/ui/login") => login::submit(state, req, client).await,
        ("POST", "/ui/logout") => login::logout(state, req, session, client),
        ("GET" | "HEAD", p) if p.starts_with("/ui/static/") => {
            pages::asset(&p["/ui/static/".len()..]).unwrap_or_else(not_found)
        }
        (_, p) if p.starts_with("/ui/api/") => {
            api::answer(state, req, &p["/ui/api/".len()..], session).await
        }
        ("GET" | "HEAD", p) => match (pages::find(&p["/ui/".len()..]), session) {
            (None, _) => not_found(),
            (Some(_), None) => redirect(303, "/ui/login"),
            (Some(page), Some((_, s))) if !page.allows(&s.role) => {
                redirect(303, &format!("/ui/{}", pages::home(&s.role)))
            }
            (Some(page), Some((_, s))) => html(200, pages::render(page, &s)),
        },
        _ => not_found(),
    }
}

/// The request's live session (its id and record). A key holder's session ends once the
/// key is revoked, deleted or expired.
fn current(state: &State, headers: &http::HeaderMap) -> Option<(String, Session)> {
    let id = guard::cookie(headers, guard::SESSION_COOKIE)?;
    let now = crate::clock::now_secs();
    let s = state.console.sessions.touch(id, now)?;
    if let Role::Operator { master } = &s.role {
        // A changed master key ends the sessions it opened.
        if *master != master_fingerprint(state) {
            state.console.sessions.close(id);
            return None;
        }
    }
    if let Role::KeyHolder { key_id } = &s.role {
        let live = state
            .keys
            .all()
            .into_iter()
            .any(|k| &k.id == key_id && k.active && k.expires_at.is_none_or(|e| e > now));
        if !live {
            state.console.sessions.revoke_key(key_id);
            return None;
        }
    }
    Some((id.to_string(), s))
}

/// Identifies the current master key in operator sessions: a SHA-256 of its stored hash
/// (nothing that could be presented as the key).
pub(crate) fn master_fingerprint(state: &State) -> String {
    use sha2::{Digest, Sha256};
    let h = state.keys.master_hash().unwrap_or([0; 32]);
    crate::ids::hex(&Sha256::digest(h)[..16])
}

pub(crate) fn html(status: u16, body: String) -> Answer {
    Answer::new(status, "text/html; charset=utf-8", Bytes::from(body))
}

pub(crate) fn redirect(status: u16, to: &str) -> Answer {
    let mut a = Answer::new(status, "text/plain; charset=utf-8", Bytes::new());
    a.headers.push(("location", to.to_string()));
    a
}

fn not_found() -> Answer {
    let mut a = html(
        404,
        pages::bare("Not found", "<p>There is no such page.</p>"),
    );
    a.error = Some("not found".into());
    a
}
