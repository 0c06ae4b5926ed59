//! Process lifecycle: first start, restart, and graceful upgrade hand-over of the store.

mod common;

use common::*;
use futures_util::StreamExt;
use mock_upstream::MockServer;
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_keys_once_and_a_restart_keeps_them() {
    let mock = MockServer::start().await;
    let url = mock.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // No master key configured: tollgate generates one.
    let cfg = TestConfig::new(&url).without("master_key").file();
    let (d1, c1) = (dir.clone(), cfg.clone());
    let mut gw = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d1, c1, &[]))
        .await
        .unwrap();
    let out = gw.stdout_text();
    let master = out
        .split_whitespace()
        .find(|w| w.starts_with("tgm-"))
        .expect("master key printed")
        .to_string();
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("tg-"))
        .expect("bootstrap key printed")
        .to_string();
    assert!(key.len() >= 35);
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(format!("{}/v1/keys", gw.url()))
        .bearer_auth(&master)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["name"], "bootstrap");
    assert!(!v.to_string().contains(&key), "listing shows no secrets");
    gw.stop();
    let stderr = gw.stderr_text();
    assert!(
        !stderr.contains(&key) && !stderr.contains(&master),
        "secrets in logs"
    );

    let (d2, c2) = (dir.clone(), cfg.clone());
    let gw2 = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d2, c2, &[]))
        .await
        .unwrap();
    assert!(
        !gw2.stdout_text().contains("tg-"),
        "keys printed again on restart: {}",
        gw2.stdout_text()
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", gw2.url()))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the key survives a restart");
    let r = client()
        .get(format!("{}/v1/keys", gw2.url()))
        .bearer_auth(&master)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the generated master key survives a restart"
    );
    // Revocation takes effect at once.
    let id = r.json::<Value>().await.unwrap()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client()
        .delete(format!("{}/v1/keys/{id}", gw2.url()))
        .bearer_auth(&master)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(format!("{}/v1/chat/completions", gw2.url()))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_drops_no_request_and_hands_over_the_store() {
    let mock = MockServer::start().await;
    let url = mock.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let d1 = dir.clone();
    let cfg = TestConfig::new(&url);
    let mut old = tokio::task::spawn_blocking(move || Gateway::spawn_in(&d1, cfg.file(), &[]))
        .await
        .unwrap();
    let key = old.create_key("t").await;
    let base = old.url();

    // A long stream in flight across the upgrade.
    let long = {
        let (base, key) = (base.clone(), key.clone());
        tokio::spawn(async move {
            let r = client()
                .post(format!("{base}/v1/messages"))
                .header("x-api-key", &key)
                .header("x-mock-chunk-delay-ms", "150")
                .header("x-mock-pieces", "20")
                .json(&messages("claude-x", true))
                .send()
                .await
                .unwrap();
            let mut s = r.bytes_stream();
            let mut text = Vec::new();
            while let Some(c) = s.next().await {
                text.extend_from_slice(&c.unwrap());
            }
            String::from_utf8(text).unwrap()
        })
    };
    // Steady traffic across the upgrade.
    let load = {
        let (base, key) = (base.clone(), key.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..60 {
                let r = client()
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&chat("gpt-4o-mini", false))
                    .send()
                    .await;
                statuses.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What systemctl reload does: QUIT to the old process, then the new one with --upgrade.
    old.signal("QUIT");
    let cfg_path = old.config_path.clone();
    let port = old.port;
    let d2 = dir.clone();
    let new = tokio::task::spawn_blocking(move || {
        let g = Gateway::launch(&d2, &cfg_path, port, &["-u"]);
        g.wait_ready();
        g
    })
    .await
    .unwrap();
    // The store moved: management works on the new process.
    let key2 = new.create_key("after-upgrade").await;
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "requests failed during the upgrade: {statuses:?}"
    );
    let text = long.await.unwrap();
    assert!(
        text.contains("event: message_stop"),
        "the in-flight stream was cut: {text}"
    );
    assert!(
        old.wait_exit(Duration::from_secs(15)),
        "old process did not exit"
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", new.url()))
        .bearer_auth(&key2)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(format!("{}/v1/chat/completions", new.url()))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(old.stderr_text().contains("store released"));
}

#[test]
fn keys_cli_and_check_config_work_on_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("t.yaml");
    std::fs::write(
        &cfg,
        TestConfig::empty()
            .without("master_key")
            .without("threads")
            .render(1, &tmp.path().join("data")),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_tollgate");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let c = cfg.to_str().unwrap();
    let (ok, out, err) = run(&["keys", "create", "--name", "ci", "--config", c]);
    assert!(ok, "{err}");
    let secret = out
        .lines()
        .find(|l| l.starts_with("tg-"))
        .expect("secret printed")
        .to_string();
    let (ok, out, _) = run(&["keys", "list", "--config", c]);
    assert!(ok && out.contains("ci") && !out.contains(&secret));
    let id = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(
        std::fs::read_to_string(tmp.path().join("data/keys.snapshot.json"))
            .unwrap()
            .contains(&id)
    );
    let (ok, out, _) = run(&["keys", "revoke", &id, "--config", c]);
    assert!(ok && out.contains("revoked"));
    // The second revoke is the management API's 404, answered in-process on the store.
    let (ok, _, err) = run(&["keys", "revoke", &id, "--config", c]);
    assert!(!ok && err.contains("404 not_found: No key"), "{err}");

    let (ok, out, _) = run(&["check-config", c]);
    assert!(ok && out.contains("OK"));
    std::fs::write(
        &cfg,
        "providers:\n  x:\n    kind: nope\n    base_url: http://a\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["check-config", c]);
    assert!(!ok && err.contains("providers.x.kind"), "{err}");
}
