//! The PostgreSQL store from the outside: `tollgate migrate` (versioned, idempotent),
//! `tollgate export` / `import` moving a live sled store to PostgreSQL and back without
//! losing or doubling anything, and TLS to the database (verified, and refused with the
//! wrong CA).
//!
//! Needs `TOLLGATE_TEST_PG_URL` (tests/run.sh starts a PostgreSQL and sets it); without it
//! each test prints a notice and passes.

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A gateway on the mock with its model priced.
fn priced(mock_url: &str) -> TestConfig {
    TestConfig::new(mock_url).pricing("openai:gpt-4o-mini", 1, 2)
}

fn unique(name: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t_{name}_{:x}_{}", t & 0xffff_ffff, std::process::id())
}

/// `cfg` on the test PostgreSQL in `schema`.
fn pg_store(cfg: TestConfig, url: &str, schema: &str) -> TestConfig {
    cfg.postgres(url, schema, json!({"sync_interval_ms": 100}))
}

/// Just what the `migrate` command reads: the master key and the store (and `data_dir`).
fn migrate_only() -> TestConfig {
    TestConfig::empty()
        .without("listen")
        .without("threads")
        .without("presets")
}

fn tollgate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

async fn admin(url: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut r = client()
        .request(method, format!("{url}{path}"))
        .bearer_auth(MASTER);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

#[test]
fn migrate_is_versioned_and_idempotent() {
    let Some(url) = pg_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let schema = unique("mig");
    let cfg = write_config(
        dir.path(),
        "pg.yaml",
        &pg_store(migrate_only(), &url, &schema).render(0, &dir.path().join("d")),
    );
    let (ok, out, err) = tollgate(&["migrate", "--config", &cfg, "--status"]);
    assert!(ok, "{err}");
    assert!(out.contains("version 0 (this tollgate: 8)"), "{out}");
    let (ok, out, err) = tollgate(&["migrate", "--config", &cfg]);
    assert!(ok, "{err}");
    assert!(
        out.contains("applied 1, 2, 3, 4, 5, 6, 7, 8; now at version 8"),
        "{out}"
    );
    let (ok, out, _) = tollgate(&["migrate", "--config", &cfg]);
    assert!(ok);
    assert!(out.contains("is current (version 8)"), "{out}");
    // Several hosts migrating at once: each migration is applied once.
    let schema2 = unique("mig2");
    let cfg2 = write_config(
        dir.path(),
        "pg2.yaml",
        &pg_store(migrate_only().without("data_dir"), &url, &schema2)
            .render(0, Path::new("unused")),
    );
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let c = cfg2.clone();
            std::thread::spawn(move || tollgate(&["migrate", "--config", &c]))
        })
        .collect();
    let outs: Vec<_> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(outs.iter().all(|o| o.0), "{outs:?}");
    assert_eq!(
        outs.iter()
            .filter(|o| o.1.contains("applied 1, 2, 3, 4, 5"))
            .count(),
        1,
        "{outs:?}"
    );
    // A config check names a bad store field.
    let bad = write_config(
        dir.path(),
        "bad.yaml",
        "store:\n  kind: postgres\n  url: \"postgres://h/db\"\n  lease_fraction: 2\n",
    );
    let (ok, _, err) = tollgate(&["check-config", &bad]);
    assert!(!ok);
    assert!(err.contains("store.lease_fraction"), "{err}");
}

fn sorted_lines(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// [`sorted_lines`] without keys' `last_used_at`: a key used between two exports (step 3
/// authenticates with it) has a later one, rightly.
fn sorted_lines_unused(p: &Path) -> Vec<String> {
    sorted_lines(p)
        .into_iter()
        .map(|l| {
            let mut v: Value = serde_json::from_str(&l).unwrap();
            if let Some(k) = v.get_mut("key").and_then(Value::as_object_mut) {
                k.remove("last_used_at");
            }
            v.to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_move_a_store_from_sled_to_postgres_and_back() {
    let Some(url) = pg_url() else { return };
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let sled_data = root.join("sled-data");
    // 1. A sled-backed gateway with a user, a budget, a priced model, a key and usage.
    let (cfg, sd) = (priced(&mock.url()), sled_data.clone());
    let mut gw = tokio::task::spawn_blocking(move || {
        Gateway::spawn_in(&root, |port, _| cfg.render(port, &sd), &[])
    })
    .await
    .unwrap();
    let u = gw.url();
    admin(
        &u,
        reqwest::Method::POST,
        "/v1/budgets",
        Some(json!({"budget_id": "team", "max_budget": 5})),
    )
    .await;
    admin(
        &u,
        reqwest::Method::POST,
        "/v1/users",
        Some(json!({"user_id": "alice", "budget_id": "team"})),
    )
    .await;
    admin(
        &u,
        reqwest::Method::POST,
        "/v1/pricing",
        Some(json!({"model_key": "openai:gpt-x", "input": 3, "output": 4})),
    )
    .await;
    let k = admin(
        &u,
        reqwest::Method::POST,
        "/v1/keys",
        Some(json!({"name": "mover", "user_id": "alice", "max_budget": 1})),
    )
    .await;
    let (kid, secret) = (
        k["id"].as_str().unwrap().to_string(),
        k["key"].as_str().unwrap().to_string(),
    );
    for _ in 0..3 {
        let r = client()
            .post(format!("{u}/v1/chat/completions"))
            .bearer_auth(&secret)
            .header("x-mock-usage", "100,10")
            .json(&chat("gpt-4o-mini", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = client()
        .get(format!("{u}/v1/key/info"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let spend = info["standing"]["spend"].clone();
    assert_eq!(spend, "0.00036", "3 x (100 + 2 x 10) micro-dollars: {info}");
    gw.stop();

    // 2. sled -> PostgreSQL.
    let root = dir.path().to_path_buf();
    let schema = unique("move");
    let sled_cfg = write_config(
        &root,
        "sled.yaml",
        &priced(&mock.url()).render(free_port(), &sled_data),
    );
    let pg = pg_store(priced(&mock.url()), &url, &schema);
    let pg_cfg = write_config(
        &root,
        "pg.yaml",
        &pg.render(free_port(), &root.join("pg-data")),
    );
    let dump1 = root.join("dump1.jsonl");
    let (ok, _, err) = tollgate(&[
        "export",
        "--config",
        &sled_cfg,
        "-o",
        dump1.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    println!("export from sled: {}", err.trim());
    assert!(err.contains("1 keys") || err.contains("2 keys"), "{err}");
    assert!(err.contains("3 usage records"), "{err}");
    let (ok, _, err) = tollgate(&["import", "--config", &pg_cfg, "-i", dump1.to_str().unwrap()]);
    assert!(ok, "{err}");
    // Twice: nothing doubles.
    let (ok, _, err) = tollgate(&["import", "--config", &pg_cfg, "-i", dump1.to_str().unwrap()]);
    assert!(ok, "{err}");

    // 3. A gateway on PostgreSQL serves the same key with the same standing and usage.
    let (pd, cfg) = (root.join("pg-data"), pg.clone());
    let mut pgw = tokio::task::spawn_blocking(move || {
        Gateway::spawn_in(&root, |port, _| cfg.render(port, &pd), &[])
    })
    .await
    .unwrap();
    let pu = pgw.url();
    let info = client()
        .get(format!("{pu}/v1/key/info"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(info["standing"]["spend"], spend, "{info}");
    assert_eq!(info["user"]["user_id"], "alice");
    let usage = admin(
        &pu,
        reqwest::Method::GET,
        &format!("/v1/usage?key_id={kid}"),
        None,
    )
    .await;
    assert_eq!(usage["data"].as_array().unwrap().len(), 3, "{usage}");
    let prices = admin(&pu, reqwest::Method::GET, "/v1/pricing/openai:gpt-x", None).await;
    assert_eq!(prices["source"], "effective");
    pgw.stop();

    // 4. PostgreSQL -> a new sled store: the same dump comes out.
    let root = dir.path().to_path_buf();
    let dump2 = root.join("dump2.jsonl");
    let (ok, _, err) = tollgate(&["export", "--config", &pg_cfg, "-o", dump2.to_str().unwrap()]);
    assert!(ok, "{err}");
    let back = root.join("sled-back");
    let (ok, _, err) = tollgate(&[
        "import",
        "--config",
        &pg_cfg,
        "--sled",
        back.to_str().unwrap(),
        "-i",
        dump2.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let dump3 = root.join("dump3.jsonl");
    let (ok, _, err) = tollgate(&[
        "export",
        "--config",
        &pg_cfg,
        "--sled",
        back.to_str().unwrap(),
        "-o",
        dump3.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        sorted_lines_unused(&dump1),
        sorted_lines_unused(&dump2),
        "sled -> PostgreSQL keeps everything"
    );
    assert_eq!(
        sorted_lines(&dump2),
        sorted_lines(&dump3),
        "PostgreSQL -> sled keeps everything"
    );
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl command.
fn make_certs(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=tollgate test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.crt",
    ]) && run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=other CA",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified() {
    if pg_url().is_none() {
        return;
    }
    if Command::new("openssl").arg("version").output().is_err() {
        skip("no openssl command to make test certificates");
        return;
    }
    // A second PostgreSQL of our own that speaks TLS, on its own port and data dir.
    let dir = tempfile::tempdir().unwrap();
    let pgdir = dir.path().join("pg");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    assert!(make_certs(&certs), "openssl failed");
    let port = free_port();
    let out = Command::new("bash")
        .args([
            "tests/postgres.sh",
            "start",
            pgdir.to_str().unwrap(),
            &port.to_string(),
        ])
        .env("PG_TLS_DIR", &certs)
        .output()
        .unwrap();
    struct Stop(std::path::PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("bash")
                .args(["tests/postgres.sh", "stop", self.0.to_str().unwrap()])
                .status();
        }
    }
    let _stop = Stop(pgdir.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace("sslmode=disable", "sslmode=require");
    let mut s = tollgate::store::postgres::PgSettings::new(&url);
    s.schema = "tls_test".into();
    s.ca_file = Some(certs.join("ca.pem"));
    let store = tollgate::store::postgres::PgStore::open(&s, true)
        .await
        .expect("TLS with the right CA");
    use tollgate::store::Store;
    store.put_meta("tls", b"yes").await.unwrap();
    assert_eq!(
        store.get_meta("tls").await.unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    s.ca_file = Some(certs.join("other.pem"));
    let err = tollgate::store::postgres::PgStore::open(&s, true)
        .await
        .err()
        .expect("a certificate from another CA is refused");
    println!("wrong CA refused: {err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate")
            || err.to_string().contains("invalid"),
        "{err}"
    );
    // tls: disable against a server that requires TLS for TCP is refused too.
    let mut plain = tollgate::store::postgres::PgSettings::new(
        &url.replace("sslmode=require", "sslmode=disable"),
    );
    plain.schema = "tls_test".into();
    assert!(
        tollgate::store::postgres::PgStore::open(&plain, false)
            .await
            .is_err(),
        "hostssl only"
    );
}
