//! The `tollgate` management commands as an operator runs them: the real binary as a
//! subprocess against a running gateway (keys, users, budgets, pricing, usage), its errors,
//! where its URL and key come from, and its fallback to the store when no gateway runs.

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The mock, with the price of its model.
fn priced(mock_url: &str) -> TestConfig {
    TestConfig::new(mock_url).pricing("openai:gpt-4o-mini", 1, 2)
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `tollgate args...` in `cwd` with only the given TOLLGATE_* variables set.
fn tg_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.args(args).current_dir(cwd);
    for v in [
        "TOLLGATE_MASTER_KEY",
        "TOLLGATE_URL",
        "TOLLGATE_CONFIG",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
    ] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    let o = c.output().unwrap();
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A command that must succeed.
fn ok(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = tg_in(cwd, args, env);
    assert!(o.ok, "tollgate {args:?} failed: {}", o.stderr);
    o.stdout
}

/// A command that must fail with exactly one line on standard error; that line.
fn fails(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = tg_in(cwd, args, env);
    assert!(!o.ok, "tollgate {args:?} succeeded: {}", o.stdout);
    assert_eq!(o.stdout, "", "nothing on standard output");
    assert_eq!(o.stderr.lines().count(), 1, "one line: {:?}", o.stderr);
    o.stderr.trim_end().to_string()
}

/// `created key ID (name)` then the secret: (id, secret).
fn created_key(out: &str) -> (String, String) {
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("created key "))
        .and_then(|l| l.split_whitespace().next())
        .expect("created key line")
        .to_string();
    let secret = out
        .lines()
        .find(|l| l.starts_with("tg-"))
        .expect("secret printed")
        .to_string();
    (id, secret)
}

/// A gateway on the mock, and a config for the CLI that names the same `listen` but a
/// `data_dir` that must never come to exist (so the CLI provably left the store alone), and
/// no master key (it comes from the environment).
async fn start() -> (MockServer, Gateway, PathBuf, PathBuf) {
    let mock = MockServer::start().await;
    let cfg = priced(&mock.url());
    let file = cfg.clone().file();
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(file))
        .await
        .unwrap();
    let cli_dir = gw.dir.join("cli");
    std::fs::create_dir_all(&cli_dir).unwrap();
    let untouched = gw.dir.join("never-opened");
    let cfg = cfg.without("master_key").render(gw.port, &untouched);
    assert!(cfg.contains("never-opened") && !cfg.contains(MASTER));
    let cli_cfg = cli_dir.join("cli.yaml");
    std::fs::write(&cli_cfg, cfg).unwrap();
    (mock, gw, cli_cfg, untouched)
}

async fn chat_status(gw: &Gateway, secret: &str) -> u16 {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(secret)
        .header("x-mock-usage", "30,7")
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn api_get(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_through_the_running_gateway() {
    let (_mock, gw, cfg, untouched) = start().await;
    let dir = cfg.parent().unwrap().to_path_buf();
    let c = cfg.to_str().unwrap();
    let env = [("TOLLGATE_MASTER_KEY", MASTER)];

    // create: the URL comes from the config's listen; -v says the gateway answered.
    let o = tg_in(
        &dir,
        &[
            "keys",
            "create",
            "--name",
            "alice-laptop",
            "--config",
            c,
            "-v",
        ],
        &env,
    );
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("using the gateway at {}", gw.url())),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains(MASTER) && !o.stdout.contains(MASTER));
    let (id, secret) = created_key(&o.stdout);
    assert_eq!(chat_status(&gw, &secret).await, 200, "the new key works");

    // list and show: the key, never its secret.
    let list = ok(&dir, &["keys", "list", "--config", c], &env);
    let row = list.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(
        row.contains("alice-laptop") && row.contains("true"),
        "{row}"
    );
    assert!(!list.contains(&secret));
    let json: Value =
        serde_json::from_str(&ok(&dir, &["keys", "list", "--json", "--config", c], &env)).unwrap();
    assert!(json
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["id"] == id.as_str()));
    let show = ok(&dir, &["keys", "show", &id, "--config", c], &env);
    assert!(show.contains("alice-laptop") && !show.contains(&secret));

    // update limits: the gateway's own API sees them.
    ok(
        &dir,
        &[
            "keys",
            "update",
            &id,
            "--max-budget",
            "5",
            "--budget-duration",
            "daily",
            "--rpm-limit",
            "7",
            "--allowed-models",
            "gpt-4o*,claude*",
            "--config",
            c,
        ],
        &env,
    );
    let (_, k) = api_get(&gw, &format!("/v1/keys/{id}")).await;
    assert_eq!(k["limits"]["max_budget"], "5.00");
    assert_eq!(k["limits"]["budget_period"], "daily");
    assert_eq!(k["limits"]["rpm_limit"], 7);
    assert_eq!(k["allowed_models"], json!(["gpt-4o*", "claude*"]));
    ok(
        &dir,
        &["keys", "update", &id, "--clear", "rpm_limit", "--config", c],
        &env,
    );
    let (_, k) = api_get(&gw, &format!("/v1/keys/{id}")).await;
    assert_eq!(k["limits"]["rpm_limit"], Value::Null);
    assert_eq!(k["limits"]["max_budget"], "5.00", "other limits stay");

    // rotate: a new secret; the old one stops working at once.
    let rot = ok(&dir, &["keys", "rotate", &id, "--config", c], &env);
    let new_secret = rot
        .lines()
        .find(|l| l.starts_with("tg-"))
        .unwrap()
        .to_string();
    assert_ne!(new_secret, secret);
    assert_eq!(chat_status(&gw, &secret).await, 401);
    assert_eq!(chat_status(&gw, &new_secret).await, 200);

    // deactivate, then revoke.
    ok(
        &dir,
        &["keys", "update", &id, "--active", "false", "--config", c],
        &env,
    );
    assert_eq!(chat_status(&gw, &new_secret).await, 401);
    let out = ok(&dir, &["keys", "revoke", &id, "--config", c], &env);
    assert_eq!(out.trim(), format!("revoked {id}"));
    let (s, _) = api_get(&gw, &format!("/v1/keys/{id}")).await;
    assert_eq!(s, 404);
    let line = fails(&dir, &["keys", "show", &id, "--config", c], &env);
    assert_eq!(
        line,
        format!("error: 404 not_found: No key with id '{id}'.")
    );
    let line = fails(
        &dir,
        &["keys", "update", &id, "--rpm-limit", "3", "--config", c],
        &env,
    );
    assert!(line.starts_with("error: 404 not_found: "), "{line}");

    assert!(
        !untouched.exists(),
        "the CLI never opened a store while the gateway ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_budgets_and_pricing_through_the_running_gateway() {
    let (_mock, gw, cfg, untouched) = start().await;
    let dir = cfg.parent().unwrap().to_path_buf();
    let c = cfg.to_str().unwrap();
    let env = [("TOLLGATE_MASTER_KEY", MASTER)];

    // A shared budget, a user on it, and a key of theirs.
    let out = ok(
        &dir,
        &[
            "budgets",
            "create",
            "team-a",
            "--max-budget",
            "500",
            "--budget-duration",
            "30d",
            "--budget-alignment",
            "rolling",
            "--name",
            "Team A",
            "--config",
            c,
        ],
        &env,
    );
    assert!(out.starts_with("created budget team-a"), "{out}");
    let out = ok(
        &dir,
        &[
            "users",
            "create",
            "alice",
            "--alias",
            "Alice",
            "--max-budget",
            "50",
            "--budget-duration",
            "monthly",
            "--tpm-limit",
            "400000",
            "--budget-id",
            "team-a",
            "--config",
            c,
        ],
        &env,
    );
    assert!(out.starts_with("created user alice"), "{out}");
    let (id, _) = created_key(&ok(
        &dir,
        &[
            "keys", "create", "--name", "a1", "--user", "alice", "--config", c,
        ],
        &env,
    ));
    let (_, u) = api_get(&gw, "/v1/users/alice").await;
    assert_eq!(u["limits"]["max_budget"], "50.00");
    assert_eq!(u["limits"]["budget_id"], "team-a");
    assert_eq!(u["keys"], json!([id]));

    let list = ok(&dir, &["users", "list", "--config", c], &env);
    let row = list
        .lines()
        .find(|l| l.starts_with("alice "))
        .expect("listed");
    assert!(row.contains("Alice") && row.contains("team-a"), "{row}");
    let show = ok(&dir, &["users", "show", "alice", "--config", c], &env);
    assert!(show.contains("400000") && show.contains(&id), "{show}");
    let keys_of = ok(
        &dir,
        &["keys", "list", "--user", "alice", "--config", c],
        &env,
    );
    assert!(keys_of.contains(&id));
    let out = ok(&dir, &["budgets", "list", "--config", c], &env);
    let row = out.lines().find(|l| l.starts_with("team-a")).unwrap();
    assert!(row.contains("500.00") && row.contains("rolling"), "{row}");
    let b: Value = serde_json::from_str(&ok(
        &dir,
        &["budgets", "show", "team-a", "--json", "--config", c],
        &env,
    ))
    .unwrap();
    assert_eq!(b["user_count"], 1);

    ok(
        &dir,
        &[
            "users",
            "update",
            "alice",
            "--blocked",
            "true",
            "--config",
            c,
        ],
        &env,
    );
    let (_, u) = api_get(&gw, "/v1/users/alice").await;
    assert_eq!(u["blocked"], true);
    ok(
        &dir,
        &[
            "budgets",
            "update",
            "team-a",
            "--max-budget",
            "750",
            "--config",
            c,
        ],
        &env,
    );
    let (_, b) = api_get(&gw, "/v1/budgets/team-a").await;
    assert_eq!(b["max_budget"], "750.00");

    // The API's own refusals come through as one line.
    let line = fails(&dir, &["budgets", "delete", "team-a", "--config", c], &env);
    assert!(
        line.starts_with("error: 409 conflict: Budget 'team-a' is in use"),
        "{line}"
    );
    let line = fails(&dir, &["users", "create", "alice", "--config", c], &env);
    assert_eq!(line, "error: 409 conflict: User 'alice' already exists.");
    let line = fails(
        &dir,
        &["keys", "create", "--user", "bob", "--config", c],
        &env,
    );
    assert!(
        line.starts_with("error: 404 not_found: No user with id 'bob'")
            && line.ends_with("(field: user_id)"),
        "{line}"
    );

    ok(
        &dir,
        &[
            "users",
            "update",
            "alice",
            "--clear",
            "budget_id",
            "--config",
            c,
        ],
        &env,
    );
    assert!(
        ok(&dir, &["users", "delete", "alice", "--config", c], &env).contains("deleted user alice")
    );
    assert!(
        ok(&dir, &["budgets", "delete", "team-a", "--config", c], &env)
            .contains("deleted budget team-a")
    );
    let (s, _) = api_get(&gw, "/v1/users/alice").await;
    assert_eq!(s, 404);

    // Pricing: set, read back from the gateway, list only what was set, delete.
    let out = ok(
        &dir,
        &[
            "pricing",
            "set",
            "groq:llama-3.3-70b-versatile",
            "--input",
            "0.59",
            "--output",
            "0.79",
            "--config",
            c,
        ],
        &env,
    );
    assert!(out.contains("input 0.59, output 0.79"), "{out}");
    let (_, p) = api_get(&gw, "/v1/pricing/groq:llama-3.3-70b-versatile").await;
    assert_eq!(p["input"], "0.59");
    let out = ok(
        &dir,
        &["pricing", "list", "--overrides", "--config", c],
        &env,
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("groq:llama-3.3-70b-versatile"))
            .count(),
        1
    );
    assert!(out.lines().count() == 3, "title, header, one price: {out}");
    let out = ok(
        &dir,
        &["pricing", "show", "openai:gpt-4o-mini", "--config", c],
        &env,
    );
    assert!(
        out.contains("input 1.00, output 2.00"),
        "the config's price: {out}"
    );
    ok(
        &dir,
        &[
            "pricing",
            "delete",
            "groq:llama-3.3-70b-versatile",
            "--config",
            c,
        ],
        &env,
    );
    let out = ok(
        &dir,
        &["pricing", "list", "--overrides", "--json", "--config", c],
        &env,
    );
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));

    assert!(
        !untouched.exists(),
        "the CLI never opened a store while the gateway ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_as_a_table_json_and_csv() {
    let (_mock, gw, cfg, _) = start().await;
    let dir = cfg.parent().unwrap().to_path_buf();
    let c = cfg.to_str().unwrap();
    let env = [("TOLLGATE_MASTER_KEY", MASTER)];
    let (id, secret) = created_key(&ok(
        &dir,
        &["keys", "create", "--name", "u", "--config", c],
        &env,
    ));
    for _ in 0..3 {
        assert_eq!(chat_status(&gw, &secret).await, 200);
    }
    // Usage is written in batches: wait until the three records are in.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = api_get(&gw, &format!("/v1/usage?key_id={id}")).await;
        if v["data"].as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "usage not written: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The table: one row per key, and the total. 3 x (30 prompt + 7 completion) at $1/$2 per M.
    let out = ok(&dir, &["usage", "--config", c], &env);
    assert!(out.starts_with("usage from "), "{out}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("key row")
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [id.as_str(), "3", "90", "21", "0", "111", "0.000132", "0"]
    );
    let total: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(total[1..], ["3", "90", "21", "0", "111", "0.000132", "0"]);

    // JSON: the gateway's summary, grouped as asked.
    let v: Value = serde_json::from_str(&ok(
        &dir,
        &["usage", "--group-by", "model", "--json", "--config", c],
        &env,
    ))
    .unwrap();
    assert_eq!(v["group_by"], "model");
    assert_eq!(v["data"][0]["group"], "gpt-4o-mini");
    assert_eq!(v["totals"]["requests"], 3);
    // Per client session: these requests named none; a session filter that matches nothing.
    let v: Value = serde_json::from_str(&ok(
        &dir,
        &["usage", "--group-by", "session", "--json", "--config", c],
        &env,
    ))
    .unwrap();
    assert_eq!(v["group_by"], "session");
    assert_eq!(v["data"][0]["group"], "-");
    assert_eq!(v["data"][0]["requests"], 3);
    let v: Value = serde_json::from_str(&ok(
        &dir,
        &[
            "usage",
            "--session-id",
            "none-such",
            "--json",
            "--config",
            c,
        ],
        &env,
    ))
    .unwrap();
    assert_eq!(v["totals"]["requests"], 0);

    // CSV of the totals, and of the records.
    let csv = ok(
        &dir,
        &["usage", "--csv", "--key-id", &id, "--config", c],
        &env,
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "key,requests,prompt_tokens,completion_tokens,cached_tokens,total_tokens,cost,errors"
    );
    assert_eq!(lines[1], format!("{id},3,90,21,0,111,0.000132,0"));
    assert_eq!(lines.len(), 2);
    let csv = ok(&dir, &["usage", "--records", "--csv", "--config", c], &env);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,timestamp,key_id,"), "{}", lines[0]);
    assert_eq!(lines.len(), 4);
    assert!(lines[1..]
        .iter()
        .all(|l| l.contains(&id) && l.contains(",30,7,")));
    let jsonl = ok(&dir, &["usage", "--records", "--json", "--config", c], &env);
    let recs: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 3);
    assert!(recs
        .iter()
        .all(|r| r["key_id"] == id.as_str() && r["total_tokens"] == 37));
    let table = ok(&dir, &["usage", "--records", "--config", c], &env);
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains(&id) && l.contains("gpt-4o-mini"))
            .count(),
        3
    );

    // A period with nothing in it, and a bad date.
    let out = ok(
        &dir,
        &[
            "usage",
            "--from",
            "2020-01-01",
            "--to",
            "2020-02-01",
            "--config",
            c,
        ],
        &env,
    );
    assert!(!out.contains(&id));
    let line = fails(&dir, &["usage", "--from", "yesterday", "--config", c], &env);
    assert_eq!(
        line,
        "error: 'yesterday' is not a date, RFC 3339 time or Unix seconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_master_key_is_one_line_and_a_failure() {
    let (_mock, gw, cfg, untouched) = start().await;
    let dir = cfg.parent().unwrap().to_path_buf();
    let c = cfg.to_str().unwrap();
    let wrong = "tgm-not-the-master-key-42";
    let (_, before) = api_get(&gw, "/v1/keys").await;
    let line = fails(
        &dir,
        &["keys", "list", "--config", c],
        &[("TOLLGATE_MASTER_KEY", wrong)],
    );
    assert_eq!(
        line,
        "error: 401 unauthorized: The management API needs the master key."
    );
    let line = fails(
        &dir,
        &["users", "create", "x", "--master-key", wrong, "--config", c],
        &[],
    );
    assert!(
        line.starts_with("error: 401 unauthorized:") && !line.contains(wrong),
        "{line}"
    );
    // No key at all: the line says where one comes from.
    let line = fails(&dir, &["keys", "create", "--config", c], &[]);
    assert!(
        line.starts_with("error: 401 unauthorized: Missing API key"),
        "{line}"
    );
    assert!(
        line.ends_with("(set TOLLGATE_MASTER_KEY or give --master-key)"),
        "{line}"
    );
    // A gateway that answers is never bypassed for the store, whatever it answers.
    assert!(!untouched.exists());
    let (_, after) = api_get(&gw, "/v1/keys").await;
    assert_eq!(before, after, "nothing was created");
    // --help never shows the key from the environment.
    let o = tg_in(&dir, &["keys", "--help"], &[("TOLLGATE_MASTER_KEY", wrong)]);
    assert!(o.ok && o.stdout.contains("TOLLGATE_MASTER_KEY") && !o.stdout.contains(wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_comes_from_the_config_or_the_default_or_the_flag() {
    let (_mock, gw, cfg, _) = start().await;
    let dir = cfg.parent().unwrap().to_path_buf();
    let env = [("TOLLGATE_MASTER_KEY", MASTER)];
    // proxy.yaml in the working directory is read when --config is not given.
    std::fs::copy(&cfg, dir.join("proxy.yaml")).unwrap();
    let o = tg_in(&dir, &["keys", "list", "-v"], &env);
    assert!(o.ok && o.stderr.contains(&gw.url()), "{}", o.stderr);
    std::fs::remove_file(dir.join("proxy.yaml")).unwrap();
    // --url (or TOLLGATE_URL) names the gateway; the config's master_key is used when no other
    // key is given.
    let with_key = dir.join("with-key.yaml");
    std::fs::write(
        &with_key,
        TestConfig::empty()
            .without("data_dir")
            .without("threads")
            .render(free_port(), Path::new("unused")),
    )
    .unwrap();
    let w = with_key.to_str().unwrap();
    ok(
        &dir,
        &["keys", "list", "--url", &gw.url(), "--config", w],
        &[],
    );
    ok(
        &dir,
        &["keys", "list", "--config", w],
        &[("TOLLGATE_URL", &gw.url())],
    );
    // Without config or flag: http://127.0.0.1:8000.
    let o = tg_in(&dir, &["keys", "list", "-v"], &env);
    assert!(o.stderr.contains("127.0.0.1:8000"), "{}", o.stderr);
    // An explicit URL with nothing behind it is an error, even with a config whose store is free.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let line = fails(&dir, &["keys", "list", "--url", &dead, "--config", w], &[]);
    assert!(
        line.starts_with(&format!("error: cannot reach the gateway at {dead}: ")),
        "{line}"
    );
    assert!(line.to_lowercase().contains("refused"), "{line}");
    let line = fails(&dir, &["keys", "list", "--url", "127.0.0.1:8000"], &[]);
    assert!(line.contains("--url must start with http://"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_gateway_the_commands_work_on_the_store() {
    let mock = MockServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let port = free_port();
    let data = dir.join("data");
    let cfg_path = dir.join("tollgate.yaml");
    std::fs::write(&cfg_path, priced(&mock.url()).render(port, &data)).unwrap();
    let c = cfg_path.to_str().unwrap();

    // Nothing listens: the store is opened directly (no master key needed), and -v says so.
    let o = tg_in(
        &dir,
        &[
            "keys",
            "create",
            "--name",
            "offline",
            "--rpm-limit",
            "9",
            "--config",
            c,
            "-v",
        ],
        &[],
    );
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("working on the store in {}", data.display())),
        "{}",
        o.stderr
    );
    let (id, secret) = created_key(&o.stdout);
    ok(
        &dir,
        &[
            "users",
            "create",
            "carol",
            "--max-budget",
            "10",
            "--config",
            c,
        ],
        &[],
    );
    ok(
        &dir,
        &[
            "budgets",
            "create",
            "ops",
            "--max-budget",
            "20",
            "--config",
            c,
        ],
        &[],
    );
    ok(
        &dir,
        &[
            "pricing",
            "set",
            "openai:gpt-x",
            "--input",
            "3",
            "--output",
            "4",
            "--config",
            c,
        ],
        &[],
    );
    assert!(ok(&dir, &["keys", "list", "--config", c], &[]).contains(&id));
    let show = ok(&dir, &["keys", "show", &id, "--config", c], &[]);
    let rpm: Vec<&str> = show
        .lines()
        .find(|l| l.starts_with("rpm_limit"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(rpm, ["rpm_limit", "9"]);
    assert!(ok(&dir, &["usage", "--config", c], &[]).contains("TOTAL"));
    let line = fails(&dir, &["keys", "revoke", "key_nope", "--config", c], &[]);
    assert_eq!(line, "error: 404 not_found: No key with id 'key_nope'.");
    // The key snapshot is kept in step, as the gateway's own writes keep it.
    let snap = std::fs::read_to_string(data.join("keys.snapshot.json")).unwrap();
    assert!(snap.contains(&id));

    // The gateway started on that store serves what the CLI wrote.
    let gw = tokio::task::spawn_blocking({
        let (dir, cfg_path) = (dir.clone(), cfg_path.clone());
        move || {
            let g = Gateway::launch(&dir, &cfg_path, port, &[]);
            g.wait_ready();
            g
        }
    })
    .await
    .unwrap();
    assert_eq!(chat_status(&gw, &secret).await, 200);
    let (_, k) = api_get(&gw, &format!("/v1/keys/{id}")).await;
    assert_eq!(k["limits"]["rpm_limit"], 9);
    let (s, _) = api_get(&gw, "/v1/users/carol").await;
    assert_eq!(s, 200);
    let (_, b) = api_get(&gw, "/v1/budgets/ops").await;
    assert_eq!(b["max_budget"], "20.00");
    let (_, p) = api_get(&gw, "/v1/pricing/openai:gpt-x").await;
    assert_eq!(p["input"], "3.00");

    // A config whose listen address has no gateway, while a gateway holds its store: an error
    // that says so, not a second writer.
    let elsewhere = dir.join("elsewhere.yaml");
    std::fs::write(
        &elsewhere,
        TestConfig::new(&mock.url()).render(free_port(), &data),
    )
    .unwrap();
    let line = fails(
        &dir,
        &["keys", "list", "--config", elsewhere.to_str().unwrap()],
        &[],
    );
    assert!(
        line.contains("another process holds the store") && line.contains("--url"),
        "{line}"
    );
}
