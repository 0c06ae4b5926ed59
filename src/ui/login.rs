//! Login and logout. Operators log in with the master key or as a named admin (name and
//! password, [`super::admins`]), key holders with their virtual key. The login form carries a double-submit token (a cookie and a hidden field, there
//! being no session yet), and its `Origin` must be the console's; attempts are limited per
//! client IP.

use super::guard::{self, Client, LOGIN_COOKIE, SESSION_COOKIE};
use super::session::{random_token, LoginLimiter, Role, Session};
use super::{html, pages, redirect};
use crate::clock;
use crate::local::{Answer, Request};
use crate::state::State;

/// The login page, with a fresh double-submit token.
pub fn form(client: Client, message: Option<&str>, status: u16) -> Answer {
    let token = random_token();
    let note = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", guard::escape(m)))
        .unwrap_or_default();
    let body = format!(
        r#"<form class="login" method="post" action="/ui/login">
<h1>tollgate</h1>
{note}<label>Admin name (named admins only)
<input name="username" autocomplete="username"></label>
<label>Master key, virtual key or admin password
<input type="password" name="key" autocomplete="current-password" required autofocus></label>
<input type="hidden" name="token" value="{token}">
<button type="submit">Log in</button>
<p class="hint">Operators log in with the master key (or a name and password made by <code>tollgate admins set</code>); key holders with their own key and see only that key.</p>
</form>"#
    );
    let mut a = html(status, pages::bare("Log in", &body));
    a.headers.push((
        "set-cookie",
        guard::set_cookie(LOGIN_COOKIE, &token, client.tls, Some(600)),
    ));
    if status >= 400 {
        a.error = message.map(String::from);
    }
    a
}

pub async fn submit(state: &State, req: &Request<'_>, client: Client) -> Answer {
    let fields = crate::admin::parse_query(std::str::from_utf8(&req.body).ok());
    if !guard::same_origin(req.headers)
        || !guard::token_matches(
            fields.get("token").map(String::as_str),
            guard::cookie(req.headers, LOGIN_COOKIE).unwrap_or(""),
        )
    {
        return form_refused(client);
    }
    let now = clock::now_secs();
    let per_minute = state.cfg.ui.login_attempts_per_minute;
    let limiter = &state.console.logins;
    if client
        .ip
        .is_some_and(|ip| limiter.blocked(ip, now, per_minute))
    {
        let mut a = form(
            client,
            Some("Too many login attempts from this address; wait a minute."),
            429,
        );
        a.retry_after = Some(LoginLimiter::retry_after(now));
        return a;
    }
    let key = fields.get("key").map(String::as_str).unwrap_or("").trim();
    let username = fields
        .get("username")
        .map(String::as_str)
        .unwrap_or("")
        .trim();
    // The master check is constant-time and always runs, whatever was presented.
    let role = if !username.is_empty() {
        admin(state, username, key).await
    } else if state.keys.is_master(key) {
        Some(Role::Operator {
            master: super::master_fingerprint(state),
        })
    } else {
        state.keys.check(key, now).ok().map(|k| Role::KeyHolder {
            key_id: k.id.clone(),
        })
    };
    let Some(role) = role else {
        crate::metrics::AUTH_FAILURES
            .with_label_values(&["console_login"])
            .inc();
        if let Some(ip) = client.ip {
            limiter.failed(ip, now);
        }
        return form(client, Some("That key is not valid."), 401);
    };
    let (id, _) = state.console.sessions.open(role, now);
    let mut a = redirect(303, "/ui/");
    a.headers.push((
        "set-cookie",
        guard::set_cookie(SESSION_COOKIE, &id, client.tls, None),
    ));
    a.headers.push((
        "set-cookie",
        guard::set_cookie(LOGIN_COOKIE, "", client.tls, Some(0)),
    ));
    a
}

/// A named admin's login: the hash is checked on the blocking pool (Argon2 is slow on
/// purpose), and an unknown name is checked against a dummy hash, so that it takes as long.
async fn admin(state: &State, name: &str, password: &str) -> Option<Role> {
    let store = crate::admin::store_of(state).ok()?;
    let all = super::admins::load(store.as_ref()).await.ok()?;
    let known = all.get(name).cloned();
    let phc = known
        .clone()
        .unwrap_or_else(|| super::admins::DUMMY.to_string());
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || super::admins::verify(&phc, &password))
        .await
        .unwrap_or(false);
    (ok && known.is_some()).then(|| Role::Admin { name: name.into() })
}

fn form_refused(client: Client) -> Answer {
    let mut a = form(
        client,
        Some("The form came from another site or has expired; try again."),
        403,
    );
    a.error = Some("console login: origin or form token refused".into());
    a
}

/// `POST /ui/logout`: ends the session (its CSRF token in the form).
pub fn logout(
    state: &State,
    req: &Request<'_>,
    session: Option<(String, Session)>,
    client: Client,
) -> Answer {
    let form = crate::admin::parse_query(std::str::from_utf8(&req.body).ok());
    if let Some((id, s)) = &session {
        if !guard::same_origin(req.headers)
            || !guard::token_matches(form.get("csrf").map(String::as_str), &s.csrf)
        {
            let mut a = html(
                403,
                pages::bare("Refused", "<p>Cross-site request refused.</p>"),
            );
            a.error = Some("console logout: origin or CSRF token refused".into());
            return a;
        }
        state.console.sessions.close(id);
    }
    let mut a = redirect(303, "/ui/login");
    a.headers.push((
        "set-cookie",
        guard::set_cookie(SESSION_COOKIE, "", client.tls, Some(0)),
    ));
    a
}
