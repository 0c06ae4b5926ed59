//! The web console's HTTP guarantees on the real binary over loopback (the browser tests are
//! tests/clients/test_console.py): security headers on every console answer, `no-store` on
//! the management API, the `/` redirect for browsers only, the session cookie's attributes
//! (Secure only behind a trusted TLS proxy), CSRF and `Origin` refusals, logout and a revoked
//! key ending sessions, `ui.enabled: false` answering 404, and the traces a session reads
//! (an operator: all; a key holder: their own key's only).

mod common;

use common::*;
use mock_upstream::MockServer;
use reqwest::header::HeaderMap;
use reqwest::redirect::Policy;
use serde_json::{json, Value};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn start(more: impl FnOnce(TestConfig) -> TestConfig) -> Gateway {
    Gateway::start_with(more(TestConfig::empty()).file())
}

fn set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// `name=value` of the cookie `name` set by an answer.
fn cookie_pair(h: &HeaderMap, name: &str) -> String {
    set_cookies(h)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {h:?}"))
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn assert_console_headers(h: &HeaderMap, what: &str) {
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["cache-control"], "no-store", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
}

/// A logged-in console session: its cookie header and CSRF token.
struct Login {
    cookie: String,
    csrf: String,
    set_cookie: String,
}

async fn login_with(gw: &Gateway, secret: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let c = http();
    let form = c
        .get(format!("{}/ui/login", gw.url()))
        .send()
        .await
        .unwrap();
    let login_cookie = cookie_pair(form.headers(), "tg_login");
    let page = form.text().await.unwrap();
    let token = page
        .split("name=\"token\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let mut req = c
        .post(format!("{}/ui/login", gw.url()))
        .header("origin", gw.url())
        .header("cookie", login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={secret}&token={token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn login(gw: &Gateway, secret: &str) -> Login {
    let r = login_with(gw, secret, &[]).await;
    assert_eq!(r.status(), 303);
    let set_cookie = set_cookies(r.headers())
        .into_iter()
        .find(|c| c.starts_with("tg_session="))
        .unwrap();
    let cookie = cookie_pair(r.headers(), "tg_session");
    // The session's home page (the overview, or a key holder's own page) holds the token.
    let home = http()
        .get(format!("{}/ui/", gw.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let home = home.headers()["location"].to_str().unwrap().to_string();
    let page = http()
        .get(format!("{}{home}", gw.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    Login {
        cookie,
        csrf,
        set_cookie,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_answer_carries_the_security_headers() {
    let gw = start(|c| c);
    let c = http();
    for path in [
        "/ui/login",
        "/ui/static/app.js",
        "/ui/nope",
        "/ui/api/status",
        "/ui/",
    ] {
        let r = c.get(format!("{}{path}", gw.url())).send().await.unwrap();
        assert_console_headers(r.headers(), path);
    }
    let js = c
        .get(format!("{}/ui/static/pages/keys.js", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let s = login(&gw, MASTER).await;
    let page = c
        .get(format!("{}/ui/overview", gw.url()))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_console_headers(page.headers(), "/ui/overview");
    let body = page.text().await.unwrap();
    assert!(!body.contains("<script>"), "no inline script");
    // The management API is not cached either.
    let r = c
        .get(format!("{}/v1/keys", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_asking_for_root_go_to_the_console_and_api_clients_do_not() {
    let gw = start(|c| c);
    let c = http();
    let r = c
        .get(gw.url())
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/ui/");
    for accept in [None, Some("*/*"), Some("application/json")] {
        let mut req = c.get(gw.url());
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{accept:?}");
        assert_eq!(r.text().await.unwrap(), "tollgate\n");
    }
    // The console's root sends a visitor without a session to the login.
    let r = c.get(format!("{}/ui/", gw.url())).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_httponly_strict_and_secure_only_behind_a_trusted_tls_proxy() {
    let gw = start(|c| c.set("ui", json!({"trusted_proxies": ["127.0.0.1"]})));
    let s = login(&gw, MASTER).await;
    assert!(s.set_cookie.contains("; HttpOnly"), "{}", s.set_cookie);
    assert!(
        s.set_cookie.contains("; SameSite=Strict"),
        "{}",
        s.set_cookie
    );
    assert!(s.set_cookie.contains("; Path=/ui"), "{}", s.set_cookie);
    assert!(!s.set_cookie.contains("Secure"), "{}", s.set_cookie);
    // The session id is long and random, and only its hash is kept (not testable from
    // outside; see ui::session's unit tests).
    assert!(s.cookie.len() > "tg_session=".len() + 60);

    let r = login_with(&gw, MASTER, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status(), 303);
    let c = set_cookies(r.headers()).join("\n");
    assert!(c.contains("tg_session=") && c.contains("; Secure"), "{c}");

    // From a peer that is not a trusted proxy, X-Forwarded-Proto is not believed.
    let gw2 = start(|c| c);
    let r = login_with(&gw2, MASTER, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status(), 303);
    let c = set_cookies(r.headers()).join("\n");
    assert!(!c.contains("Secure"), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_calls_need_the_origin_and_the_csrf_token() {
    let gw = start(|c| c);
    let s = login(&gw, MASTER).await;
    let c = http();
    let url = format!("{}/ui/api/v1/keys", gw.url());
    let body = json!({"name": "csrf-test"}).to_string();
    let cases: [(&str, Option<String>, Option<&str>); 4] = [
        ("no Origin", None, Some(s.csrf.as_str())),
        (
            "another origin",
            Some("http://evil.example".into()),
            Some(&s.csrf),
        ),
        ("no token", Some(gw.url()), None),
        ("a wrong token", Some(gw.url()), Some("00")),
    ];
    for (what, origin, token) in cases {
        let mut req = c.post(&url).header("cookie", &s.cookie).body(body.clone());
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        assert_console_headers(r.headers(), what);
    }
    let keys: Value = c
        .get(format!("{}/v1/keys?q=csrf-test", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["data"], json!([]), "a refused call changed nothing");

    let ok = c
        .post(&url)
        .header("cookie", &s.cookie)
        .header("origin", gw.url())
        .header("x-csrf-token", &s.csrf)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    let created: Value = ok.json().await.unwrap();
    assert!(created["key"].as_str().unwrap().starts_with("tg-"));

    // Without a session nothing is answered, reads included.
    let r = c
        .get(format!("{}/ui/api/v1/keys", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The login form: its token and Origin are checked too.
    let form = c
        .get(format!("{}/ui/login", gw.url()))
        .send()
        .await
        .unwrap();
    let login_cookie = cookie_pair(form.headers(), "tg_login");
    let token = login_cookie.trim_start_matches("tg_login=").to_string();
    for (what, origin, token) in [
        ("another origin", "http://evil.example", token.as_str()),
        ("a wrong token", gw.url().as_str(), "00"),
    ] {
        let r = c
            .post(format!("{}/ui/login", gw.url()))
            .header("origin", origin)
            .header("cookie", &login_cookie)
            .body(format!("key={MASTER}&token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "login with {what}");
        assert!(set_cookies(r.headers())
            .iter()
            .all(|c| !c.starts_with("tg_session=")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_revoking_the_key_end_sessions() {
    let gw = start(|c| c);
    let c = http();
    let s = login(&gw, MASTER).await;
    let status = |cookie: String| {
        let c = c.clone();
        let url = format!("{}/ui/api/status", gw.url());
        async move {
            c.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(s.cookie.clone()).await, 200);
    let out = c
        .post(format!("{}/ui/logout", gw.url()))
        .header("cookie", &s.cookie)
        .header("origin", gw.url())
        .body(format!("csrf={}", s.csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(cookie_pair(out.headers(), "tg_session") == "tg_session=");
    assert_eq!(status(s.cookie.clone()).await, 401);

    // A key holder's session ends when the key is revoked.
    let secret = gw.create_key("holder").await;
    let k = login(&gw, &secret).await;
    let me = |cookie: String| {
        let c = c.clone();
        let url = format!("{}/ui/api/me", gw.url());
        async move {
            c.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(me(k.cookie.clone()).await, 200);
    assert_eq!(status(k.cookie.clone()).await, 403, "not an operator");
    let info: Value = c
        .get(format!("{}/v1/key/info", gw.url()))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = c
        .patch(format!(
            "{}/v1/keys/{}",
            gw.url(),
            info["id"].as_str().unwrap()
        ))
        .bearer_auth(MASTER)
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(me(k.cookie).await, 401);

    // An operator ends every other session.
    let a = login(&gw, MASTER).await;
    let b = login(&gw, MASTER).await;
    let r = c
        .delete(format!("{}/ui/api/sessions", gw.url()))
        .header("cookie", &a.cookie)
        .header("origin", gw.url())
        .header("x-csrf-token", &a.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status(b.cookie).await, 401);
    assert_eq!(status(a.cookie).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_is_rate_limited_per_address() {
    let gw = start(|c| c.set("ui", json!({"login_attempts_per_minute": 3})));
    // The limit counts per calendar minute: keep the attempts inside one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now % 60 > 50 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - now % 60)).await;
    }
    for _ in 0..3 {
        assert_eq!(login_with(&gw, "tg-wrong", &[]).await.status(), 401);
    }
    let r = login_with(&gw, MASTER, &[]).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_that_is_off_answers_404() {
    let gw = start(|c| c.set("ui", json!({"enabled": false})));
    let c = http();
    for path in [
        "/ui",
        "/ui/",
        "/ui/login",
        "/ui/api/status",
        "/ui/static/app.js",
    ] {
        let r = c.get(format!("{}{path}", gw.url())).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = c
        .post(format!("{}/ui/login", gw.url()))
        .header("origin", gw.url())
        .body(format!("key={MASTER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(gw.url())
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "no redirect to a console that is off");
    assert_eq!(r.text().await.unwrap(), "tollgate\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_graceful_upgrade_and_logouts_stay_logged_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cfg = TestConfig::empty()
        .set("grace_period_seconds", 1)
        .set("graceful_shutdown_timeout_seconds", 1);
    let d1 = dir.clone();
    let mut old = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d1, cfg.file(), &[]))
        .await
        .unwrap();
    let kept = login(&old, MASTER).await;
    let ended = login(&old, MASTER).await;
    let c = http();
    let out = c
        .post(format!("{}/ui/logout", old.url()))
        .header("cookie", &ended.cookie)
        .header("origin", old.url())
        .body(format!("csrf={}", ended.csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);

    // What `systemctl reload` does: QUIT to the old process, `serve -u` for the new one.
    let old_pid = old.pid();
    old.signal("QUIT");
    let (d, path, port) = (dir.clone(), old.config_path.clone(), old.port);
    let new = tokio::task::spawn_blocking(move || {
        let g = Gateway::launch(&d, &path, port, &["-u"]);
        g.wait_ready();
        g
    })
    .await
    .unwrap();
    assert!(old.wait_exit(std::time::Duration::from_secs(20)));
    assert_ne!(old_pid, new.pid());

    let status = |cookie: String| {
        let c = c.clone();
        let url = format!("{}/ui/api/status", new.url());
        async move {
            c.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(kept.cookie.clone()).await, 200);
    assert_eq!(status(ended.cookie.clone()).await, 401);
    // The session's CSRF token came along too.
    let r = c
        .post(format!("{}/ui/api/v1/keys", new.url()))
        .header("cookie", &kept.cookie)
        .header("origin", new.url())
        .header("x-csrf-token", &kept.csrf)
        .body(json!({"name": "after-upgrade"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The sessions file holds no session id, only their hashes.
    let file = std::fs::read_to_string(dir.join("data").join("console-sessions.json")).unwrap();
    let id = kept.cookie.trim_start_matches("tg_session=");
    assert!(!file.contains(id));
}

/// Runs `tollgate admins ARGS` against the gateway, `stdin` as its standard input.
fn admins_cli(url: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("admins")
        .args(args)
        .env("TOLLGATE_URL", url)
        .env("TOLLGATE_MASTER_KEY", MASTER)
        .env_remove("TOLLGATE_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_admins_log_in_with_a_password_made_by_the_cli() {
    let gw = start(|c| c);
    let password = "correct horse battery staple";
    let g = gw.url();
    let out = tokio::task::spawn_blocking({
        let url = g.clone();
        move || admins_cli(&url, &["set", "alice"], &format!("{password}\n"))
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "created admin alice\n"
    );

    // Only the hash was stored: the API lists names, never hashes or passwords.
    let list: Value = http()
        .get(format!("{g}/v1/admins"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"], json!([{"object": "admin", "name": "alice"}]));
    // A plain password where a hash belongs is refused.
    let r = http()
        .put(format!("{g}/v1/admins/bob"))
        .bearer_auth(MASTER)
        .json(&json!({"password_hash": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let login_as = |user: &'static str, pw: &'static str| {
        let gw = &gw;
        async move {
            let pw = pw.replace(' ', "+");
            login_with(gw, &format!("{pw}&username={user}"), &[]).await
        }
    };
    assert_eq!(login_as("alice", "wrong password").await.status(), 401);
    assert_eq!(
        login_as("mallory", "correct horse battery staple")
            .await
            .status(),
        401
    );
    let ok = login_as("alice", "correct horse battery staple").await;
    assert_eq!(ok.status(), 303);
    let cookie = cookie_pair(ok.headers(), "tg_session");
    let page = http()
        .get(format!("{g}/ui/overview"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("admin alice"));

    // Deleting the admin ends their sessions.
    let out = tokio::task::spawn_blocking({
        let url = g.clone();
        move || admins_cli(&url, &["delete", "alice"], "")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = http()
        .get(format!("{g}/ui/api/status"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_master_key_ends_the_operator_sessions_of_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let d1 = dir.clone();
    let mut first = tokio::task::spawn_blocking(move || {
        Gateway::spawn_in(&d1, TestConfig::empty().file(), &[])
    })
    .await
    .unwrap();
    let s = login(&first, MASTER).await;
    let status = |url: String, cookie: String| async move {
        http()
            .get(format!("{url}/ui/api/status"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(status(first.url(), s.cookie.clone()).await, 200);
    first.stop();
    // The same data directory (and sessions file), another master key.
    let d2 = dir.clone();
    let other = TestConfig::empty().set("master_key", "another-master-key-0123456789");
    let second = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d2, other.file(), &[]))
        .await
        .unwrap();
    assert_eq!(status(second.url(), s.cookie.clone()).await, 401);
}

/// GETs a console API path with a session; the status and the JSON answer.
async fn ui_get(gw: &Gateway, s: &Login, path: &str) -> (u16, Value) {
    let r = http()
        .get(format!("{}/ui/api/{path}", gw.url()))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn trace_ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["request_id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traces_page_reads_all_traces_for_operators_and_a_key_holders_own() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url()).set("traces", json!({"capture": "metadata"}));
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let mine = gw.create_key("mine").await;
    let other = gw.create_key("other").await;
    for (key, rid) in [(&mine, "ui-tr-mine"), (&other, "ui-tr-other")] {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(key)
            .header("x-request-id", rid)
            .json(&chat("gpt-4o-mini", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let key_id = |key: &str| {
        let url = format!("{}/v1/key/info", gw.url());
        let key = key.to_string();
        async move {
            let v: Value = client()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    };
    let (mine_id, other_id) = (key_id(&mine).await, key_id(&other).await);

    // The operator reads both (once the writer has stored them).
    let op = login(&gw, MASTER).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (st, list) = ui_get(&gw, &op, "v1/traces").await;
        assert_eq!(st, 200, "{list}");
        if trace_ids(&list) == ["ui-tr-mine", "ui-tr-other"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (st, t) = ui_get(&gw, &op, "v1/traces/ui-tr-other").await;
    assert_eq!(st, 200);
    assert_eq!(t["key_id"], other_id.as_str());
    assert_eq!(t["attempts"], 1);

    // A key holder reads only their own key's traces, whatever they ask for.
    let holder = login(&gw, &mine).await;
    let (st, list) = ui_get(&gw, &holder, "v1/traces").await;
    assert_eq!(st, 200);
    assert_eq!(trace_ids(&list), ["ui-tr-mine"]);
    assert_eq!(list["data"][0]["key_id"], mine_id.as_str());
    assert_eq!(ui_get(&gw, &holder, "v1/traces/ui-tr-mine").await.0, 200);
    let (st, e) = ui_get(&gw, &holder, "v1/traces/ui-tr-other").await;
    assert_eq!(st, 404, "{e}");
    let (st, e) = ui_get(&gw, &holder, &format!("v1/traces?key_id={other_id}")).await;
    assert_eq!(st, 403, "{e}");
    // The rest of the management API stays closed to a key holder.
    assert_eq!(ui_get(&gw, &holder, "v1/keys").await.0, 403);
    assert_eq!(ui_get(&gw, &holder, "v1/traces-x").await.0, 403);

    // The page itself is in both sessions' navigation.
    for s in [&op, &holder] {
        let r = http()
            .get(format!("{}/ui/traces", gw.url()))
            .header("cookie", &s.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_console_headers(r.headers(), "traces page");
        assert!(r
            .text()
            .await
            .unwrap()
            .contains("<a href=\"/ui/traces\" aria-current=\"page\">Traces</a>"));
    }
}
