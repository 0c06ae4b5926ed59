//! The shipped monitoring files against the real Prometheus (Debian's `prometheus` package):
//! promtool accepts them; a Prometheus started here on loopback (own data dir, 1 s scrape and
//! evaluation through a test copy of conf/prometheus/prometheus.yml) scrapes a real tollgate
//! under a bounded load on the mock provider; every PromQL expression of
//! conf/grafana/tollgate.json and conf/prometheus/alerts.yml is evaluated through Prometheus'
//! HTTP API (each must parse; the Traffic and Latency panels must return data); and failures
//! injected on one provider (the mock's `x-mock-status: 500`) fire TollgateUpstreamFailures
//! (the rules are loaded with `for: 0s`).

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn conf(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf").join(rel)
}

/// `name` on the PATH, or None after `skip`.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        skip(&format!(
            "{name} is not installed (Debian package prometheus; .ci/deps.sh installs it)"
        ));
    }
    found
}

/// A Prometheus process of this test, killed (by its PID) when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(bin: &Path, dir: &Path, config: &Path) -> Prometheus {
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = client().get(format!("{}/-/ready", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("prometheus did not become ready:\n{}", self.log_text());
    }

    /// An instant query: Prometheus' whole answer (`status` is "success" or "error").
    async fn query(&self, expr: &str) -> Value {
        client()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `expr` until it returns a sample whose value `ok` accepts.
    async fn wait_for(&self, expr: &str, ok: impl Fn(f64) -> bool, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.query(expr).await;
            let vals: Vec<f64> = v["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                .collect();
            if vals.iter().any(|x| ok(*x)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expr} never satisfied the condition (last answer {v})"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Every `expr` of the dashboard, with the row it sits under and the panel's title. Grafana's
/// `$__rate_interval` becomes `1m`.
fn dashboard_exprs() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(conf("grafana/tollgate.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut row = String::new();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            row = p["title"].as_str().unwrap().to_string();
            continue;
        }
        let targets = p["targets"].as_array().expect("every panel has targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let e = t["expr"].as_str().expect("a PromQL expr");
            out.push((
                row.clone(),
                p["title"].as_str().unwrap().to_string(),
                e.replace("$__rate_interval", "1m"),
            ));
        }
    }
    out
}

/// Every alerting rule of the shipped file: (name, expr).
fn alert_rules() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(conf("prometheus/alerts.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            out.push((
                r["alert"].as_str().unwrap().to_string(),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// The test copies: the shipped rules with `for: 0s`, and the shipped scrape example pointed
/// at `target` with 1 s intervals. Returns the config's path.
fn test_config(dir: &Path, target: &str) -> PathBuf {
    let rules_text = std::fs::read_to_string(conf("prometheus/alerts.yml")).unwrap();
    let mut rules: serde_yaml::Value = serde_yaml::from_str(&rules_text).unwrap();
    for g in rules["groups"].as_sequence_mut().unwrap() {
        for r in g["rules"].as_sequence_mut().unwrap() {
            r["for"] = "0s".into();
        }
    }
    let rules_path = dir.join("alerts.yml");
    std::fs::write(&rules_path, serde_yaml::to_string(&rules).unwrap()).unwrap();

    let text = std::fs::read_to_string(conf("prometheus/prometheus.yml")).unwrap();
    let mut cfg: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    cfg["global"]["scrape_interval"] = "1s".into();
    cfg["global"]["evaluation_interval"] = "1s".into();
    cfg["rule_files"] = vec![serde_yaml::Value::from(rules_path.display().to_string())].into();
    let jobs = cfg["scrape_configs"].as_sequence_mut().unwrap();
    assert_eq!(jobs[0]["job_name"], "tollgate");
    jobs[0]["static_configs"][0]["targets"] = vec![serde_yaml::Value::from(target)].into();
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    path
}

#[test]
fn promtool_accepts_the_shipped_rules_and_config() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    for (what, file) in [
        ("rules", "prometheus/alerts.yml"),
        ("config", "prometheus/prometheus.yml"),
    ] {
        let out = Command::new(&promtool)
            .args(["check", what])
            .arg(conf(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check {what} {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One request of the load: a key's chat (streamed or not) or messages call.
async fn one_request(gw_url: &str, key: &str, i: usize) -> u16 {
    let (path, body) = match i % 3 {
        0 => ("/v1/chat/completions", chat("gpt-4o-mini", false)),
        1 => ("/v1/chat/completions", chat("gpt-4o-mini", true)),
        _ => ("/v1/messages", messages("claude-x", i.is_multiple_of(2))),
    };
    let r = client()
        .post(format!("{gw_url}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_tollgate_evaluates_every_panel_and_rule_and_fires_upstream_failures() {
    let Some(bin) = tool("prometheus") else {
        return;
    };
    let mock = MockServer::start().await;
    let url = mock.url();
    let cfg = TestConfig::new(&url)
        .provider(
            "flaky",
            json!({"kind": "openai", "base_url": format!("{url}/v1"), "api_key": "sk-flaky-provider-key", "models": ["gpt-flaky"]}),
        )
        .pricing("openai:gpt-4o-mini", 1, 2)
        .pricing("anthropic:claude-x", 3, 15)
        // Failures are paced and counted, not cut short by an ejection.
        .set(
            "failover",
            json!({"max_attempts": 1, "breaker": {"failures": 100000}}),
        );
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    let key = gw.create_key("prom").await;

    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), &format!("127.0.0.1:{}", gw.port));
    let prom = Prometheus::start(&bin, dir.path(), &config);
    prom.wait_ready().await;
    prom.wait_for(
        "up{job=\"tollgate\"}",
        |v| v == 1.0,
        Duration::from_secs(30),
    )
    .await;

    // Bounded load: 4 clients, 6 seconds, on three routes (scraped six times or so).
    let until = Instant::now() + Duration::from_secs(6);
    let mut workers = Vec::new();
    for w in 0..4 {
        let (u, k) = (gw.url(), key.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < until {
                assert_eq!(one_request(&u, &k, w + n).await, 200);
                n += 1;
            }
            n
        }));
    }
    let mut sent = 0;
    for w in workers {
        sent += w.await.unwrap();
    }
    assert!(sent > 0);
    // Prometheus has scraped the load.
    prom.wait_for(
        "sum(tollgate_requests_total{status=\"200\",endpoint=\"chat_completions\"})",
        |v| v >= 1.0,
        Duration::from_secs(30),
    )
    .await;

    // The store gauges are live: no store alert on a healthy gateway.
    prom.wait_for("tollgate_store_up", |v| v == 1.0, Duration::from_secs(10))
        .await;
    prom.wait_for(
        "tollgate_usage_write_lag_seconds",
        |v| v < 60.0,
        Duration::from_secs(10),
    )
    .await;

    let mut table = Vec::new();
    for (row, title, expr) in dashboard_exprs() {
        let v = prom.query(&expr).await;
        assert_eq!(
            v["status"], "success",
            "panel {title:?}: {expr} does not evaluate: {v}"
        );
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        if row == "Traffic" || row == "Latency" {
            assert!(n > 0, "panel {title:?} ({row}) returned no data: {expr}");
        }
        table.push(format!("{row} | {title} | {n} series"));
    }
    // Tokens and spend by model and key were metered.
    for e in [
        "sum by (model) (rate(tollgate_spend_microdollars_total[1m]))",
        "sum by (key_id) (rate(tollgate_key_tokens_total[1m]))",
    ] {
        let v = prom.query(e).await;
        assert!(
            !v["data"]["result"].as_array().unwrap().is_empty(),
            "{e}: {v}"
        );
    }
    for (name, expr) in alert_rules() {
        let v = prom.query(&expr).await;
        assert_eq!(
            v["status"], "success",
            "alert {name}: {expr} does not evaluate: {v}"
        );
        table.push(format!("alert {name} | evaluates"));
    }
    // Prometheus itself loaded and evaluated every rule.
    let rules = prom.get("/api/v1/rules").await;
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), alert_rules().len(), "{rules}");
    for r in &loaded {
        assert_eq!(r["health"], "ok", "rule {} is unhealthy: {r}", r["name"]);
    }
    let before = prom.get("/api/v1/alerts").await;
    assert!(
        !before["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "TollgateUpstreamFailures"),
        "TollgateUpstreamFailures fired before any failure: {before}"
    );

    // Inject upstream failures on the `flaky` provider, paced over several scrapes, until
    // the alert fires (bounded).
    let deadline = Instant::now() + Duration::from_secs(60);
    let fired = loop {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(&key)
            .header("x-mock-status", "500")
            .json(&chat("flaky:gpt-flaky", false))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_server_error(), "{}", r.status());
        let alerts = prom.get("/api/v1/alerts").await;
        let hit = alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == "TollgateUpstreamFailures" && a["state"] == "firing"
            })
            .cloned();
        if let Some(a) = hit {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "TollgateUpstreamFailures never fired: {alerts}\n{}",
            prom.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let dep = fired["labels"]["deployment"].as_str().unwrap_or_default();
    assert!(dep.contains("flaky"), "fired for {dep}: {fired}");
    table.push(format!("alert TollgateUpstreamFailures | firing for {dep}"));
    eprintln!("{}", table.join("\n"));
    let log = gw.stderr_text();
    assert!(!log.contains(&key) && !log.contains("sk-flaky-provider-key"));
}
