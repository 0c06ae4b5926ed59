//! CORS on the inference endpoints (`cors: {allow_origins: [...]}`), on the real binary:
//! preflights answered for listed origins only, the allow-origin header on successes and
//! errors alike (whatever path wrote them), a wildcard without credentials, nothing at all
//! when CORS is off (a preflight is a 404, as before), and credentials with a wildcard refused at startup.

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::json;

const APP: &str = "https://app.example.com";

async fn preflight(gw: &Gateway, origin: &str, path: &str) -> reqwest::Response {
    client()
        .request(reqwest::Method::OPTIONS, format!("{}{path}", gw.url()))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_get_preflights_and_allow_origin_on_every_answer() {
    let mock = MockServer::start().await;
    let cfg = TestConfig::new(&mock.url()).set("cors", json!({"allow_origins": [APP]}));
    let gw = Gateway::start_with(cfg.file());
    let key = gw.create_key("browser").await;

    let r = preflight(&gw, APP, "/v1/chat/completions").await;
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h.get("access-control-allow-credentials").is_none());

    let r = preflight(&gw, "https://evil.example", "/v1/chat/completions").await;
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Not on the management API.
    let r = preflight(&gw, APP, "/v1/keys").await;
    assert!(r.headers().get("access-control-allow-origin").is_none());

    for (stream, what) in [(false, "direct path"), (true, "proxy path")] {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .header("origin", APP)
            .bearer_auth(&key)
            .json(&chat("gpt-4o-mini", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{what}");
        assert_eq!(r.headers()["access-control-allow-origin"], APP, "{what}");
        assert_eq!(r.headers()["vary"], "Origin", "{what}");
        assert!(r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id"));
        r.bytes().await.unwrap();
    }
    // An error answer is readable by the page too (a 401 from a wrong key).
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .header("origin", APP)
        .header("x-api-key", "tg-wrong")
        .json(&messages("claude-sonnet-4-6", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    // Another origin's answer carries no allow-origin (the browser hides it).
    let r = client()
        .get(format!("{}/v1/models", gw.url()))
        .header("origin", "https://evil.example")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_allows_every_origin_without_credentials() {
    let cfg = TestConfig::empty().set("cors", json!({"allow_origins": ["*"]}));
    let gw = Gateway::start_with(cfg.file());
    let r = preflight(&gw, "https://any.example", "/v1/responses").await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_off_adds_nothing_and_preflights_are_refused() {
    let gw = Gateway::start_with(TestConfig::empty().file());
    let r = preflight(&gw, APP, "/v1/chat/completions").await;
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = client()
        .get(format!("{}/v1/models", gw.url()))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(r.headers().get("vary").is_none());
}

#[test]
fn credentials_with_a_wildcard_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "cors: {allow_origins: [\"*\"], allow_credentials: true}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cors.allow_credentials"), "{text}");
}
