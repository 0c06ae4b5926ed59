//! Telling clients where they stand, against the real binary and the mock provider: the
//! rate-limit headers in each dialect's convention, the cost and remaining-budget headers,
//! on non-streamed, streamed, translated and refused answers, on both forwarding paths; the
//! usage grouped by client session, `/v1/key/info?session=`, and the Claude Code status line
//! script in `contrib/`.

mod common;

use common::*;
use mock_upstream::MockServer;
use serde_json::{json, Value};

/// $1 per million input tokens, $2 per million output tokens: a request's cost in micro-
/// dollars is `input + 2 * output`.
async fn start() -> (MockServer, Gateway) {
    start_with(|c| c).await
}

async fn start_with(more: impl FnOnce(TestConfig) -> TestConfig) -> (MockServer, Gateway) {
    let mock = MockServer::start().await;
    let cfg = more(
        TestConfig::new(&mock.url())
            .pricing("openai:gpt-4o-mini", 1, 2)
            .pricing("anthropic:claude-x", 1, 2),
    );
    let gw = tokio::task::spawn_blocking(move || Gateway::start_with(cfg.file()))
        .await
        .unwrap();
    (mock, gw)
}

/// A key with these limits; its secret.
async fn key(gw: &Gateway, limits: Value) -> String {
    let mut body = json!({"name": "standing"});
    body.as_object_mut()
        .unwrap()
        .extend(limits.as_object().unwrap().clone());
    let (st, v) = admin_call(&gw.url(), reqwest::Method::POST, "/v1/keys", Some(body)).await;
    assert_eq!(st, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

/// Sends `body` to `path` with the key and `x-mock-usage: 100,20`; returns the status, the
/// headers and the body text.
async fn send(
    gw: &Gateway,
    secret: &str,
    path: &str,
    body: Value,
    extra: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = client()
        .post(format!("{}{path}", gw.url()))
        .bearer_auth(secret)
        .header("x-mock-usage", "100,20")
        .json(&body);
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn h<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn num(headers: &reqwest::header::HeaderMap, name: &str) -> u64 {
    h(headers, name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .parse()
        .unwrap()
}

/// An OpenAI-style reset: `250ms`, `7s`, `1m5s`.
fn openai_reset_ms(v: &str) -> u64 {
    if let Some(ms) = v.strip_suffix("ms") {
        return ms.parse().unwrap();
    }
    let (m, s) = match v.split_once('m') {
        Some((m, s)) => (m.parse::<u64>().unwrap(), s),
        None => (0, v),
    };
    let s: u64 = s.strip_suffix('s').unwrap().parse().unwrap();
    (m * 60 + s) * 1000
}

/// The usage record of `request_id`, once written.
async fn record(gw: &Gateway, request_id: &str) -> Value {
    usage_record(gw, request_id)
        .await
        .unwrap_or_else(|| panic!("no usage record for {request_id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_chat_answers_say_the_limits_the_cost_and_the_budget_left() {
    let (_mock, gw) = start().await;
    let secret = key(
        &gw,
        json!({"rpm_limit": 5, "tpm_limit": 10000, "max_budget": "1.00"}),
    )
    .await;
    let (st, hd, body) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        chat("gpt-4o-mini", false),
        &[
            ("x-request-id", "hdr-1"),
            ("x-mock-provider-ratelimit", "1"),
        ],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(num(&hd, "x-ratelimit-limit-requests"), 5);
    assert_eq!(num(&hd, "x-ratelimit-remaining-requests"), 4);
    let reset = openai_reset_ms(h(&hd, "x-ratelimit-reset-requests").unwrap());
    assert!(reset > 0 && reset <= 120_000, "{reset}");
    assert_eq!(num(&hd, "x-ratelimit-limit-tokens"), 10000);
    assert_eq!(num(&hd, "x-ratelimit-remaining-tokens"), 10000);
    // The provider's header describes the gateway's provider key: moved aside.
    assert_eq!(
        h(&hd, "x-tollgate-provider-x-ratelimit-remaining-requests"),
        Some("4999")
    );
    assert!(h(&hd, "anthropic-ratelimit-requests-limit").is_none());
    // The cost header is the settled cost: 100 + 2 * 20 micro-dollars.
    let rec = record(&gw, "hdr-1").await;
    assert_eq!(rec["cost_micros"], json!(140));
    assert_eq!(h(&hd, "x-tollgate-cost-usd"), rec["cost"].as_str());
    assert_eq!(h(&hd, "x-tollgate-budget-remaining-usd"), Some("0.99986"));

    // The next answer: one request and the first one's 120 tokens fewer, its cost spent.
    let (st, hd, _) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        chat("gpt-4o-mini", false),
        &[("x-request-id", "hdr-2")],
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(num(&hd, "x-ratelimit-remaining-requests"), 3);
    assert_eq!(num(&hd, "x-ratelimit-remaining-tokens"), 10000 - 120);
    assert_eq!(h(&hd, "x-tollgate-cost-usd"), Some("0.00014"));
    assert_eq!(h(&hd, "x-tollgate-budget-remaining-usd"), Some("0.99972"));
    assert!(h(&hd, "x-tollgate-provider-x-ratelimit-remaining-requests").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_answers_use_anthropics_headers_streamed_translated_or_not() {
    let (_mock, gw) = start().await;
    let secret = key(
        &gw,
        json!({"rpm_limit": 10, "tpm_limit": 5000, "max_budget": "2.00"}),
    )
    .await;
    let rfc3339_in_future = |v: &str| {
        // 2026-12-07T23:59:01Z: within the next two minutes of the gateway's clock.
        assert!(
            v.len() == 20 && v.ends_with('Z') && v.as_bytes()[10] == b'T',
            "{v}"
        );
    };
    // Native, non-streamed (direct path), with the provider's own header moved aside.
    let (st, hd, body) = send(
        &gw,
        &secret,
        "/v1/messages",
        messages("claude-x", false),
        &[
            ("x-request-id", "anth-1"),
            ("x-mock-provider-ratelimit", "1"),
        ],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(num(&hd, "anthropic-ratelimit-requests-limit"), 10);
    assert_eq!(num(&hd, "anthropic-ratelimit-requests-remaining"), 9);
    rfc3339_in_future(h(&hd, "anthropic-ratelimit-requests-reset").unwrap());
    assert_eq!(num(&hd, "anthropic-ratelimit-tokens-limit"), 5000);
    assert_eq!(num(&hd, "anthropic-ratelimit-tokens-remaining"), 5000);
    assert!(h(&hd, "x-ratelimit-limit-requests").is_none());
    assert_eq!(
        h(
            &hd,
            "x-tollgate-provider-anthropic-ratelimit-requests-remaining"
        ),
        Some("4999")
    );
    let rec = record(&gw, "anth-1").await;
    assert_eq!(h(&hd, "x-tollgate-cost-usd"), rec["cost"].as_str());

    // Native stream with a small body: Pingora's proxy path.
    let (st, hd, body) = send(
        &gw,
        &secret,
        "/v1/messages",
        messages("claude-x", true),
        &[("x-request-id", "anth-2")],
    )
    .await;
    assert_eq!(st, 200);
    assert!(body.contains("message_stop"), "{body}");
    assert!(!body.contains("tollgate_cost_usd"), "cost_in_stream is off");
    assert_eq!(num(&hd, "anthropic-ratelimit-requests-remaining"), 8);
    assert_eq!(num(&hd, "anthropic-ratelimit-tokens-remaining"), 5000 - 120);
    assert!(
        h(&hd, "x-tollgate-cost-usd").is_none(),
        "not known before a stream"
    );
    // Before this request's settlement: the first one's 140 micro-dollars spent.
    assert_eq!(h(&hd, "x-tollgate-budget-remaining-usd"), Some("1.99986"));
    record(&gw, "anth-2").await;

    // Translated (Messages to an OpenAI provider), non-streamed and streamed (direct path).
    let (st, hd, body) = send(
        &gw,
        &secret,
        "/v1/messages",
        messages("gpt-4o-mini", false),
        &[("x-request-id", "anth-3")],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(num(&hd, "anthropic-ratelimit-requests-remaining"), 7);
    let rec = record(&gw, "anth-3").await;
    assert_eq!(rec["cost_micros"], json!(140));
    assert_eq!(h(&hd, "x-tollgate-cost-usd"), rec["cost"].as_str());
    assert_eq!(h(&hd, "x-tollgate-budget-remaining-usd"), Some("1.99958"));
    let (st, hd, body) = send(
        &gw,
        &secret,
        "/v1/messages",
        messages("gpt-4o-mini", true),
        &[("x-request-id", "anth-4")],
    )
    .await;
    assert_eq!(st, 200);
    assert!(body.contains("message_stop"), "{body}");
    assert_eq!(num(&hd, "anthropic-ratelimit-requests-remaining"), 6);
    assert!(h(&hd, "x-tollgate-cost-usd").is_none());
    assert_eq!(h(&hd, "x-tollgate-budget-remaining-usd"), Some("1.99958"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_provider_errors_carry_the_headers_too() {
    let (_mock, gw) = start().await;
    let secret = key(&gw, json!({"rpm_limit": 2})).await;
    // A provider's 500 (non-streamed, direct path).
    let (st, hd, _) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        chat("gpt-4o-mini", false),
        &[("x-mock-status", "500")],
    )
    .await;
    assert_eq!(st, 500);
    assert_eq!(num(&hd, "x-ratelimit-remaining-requests"), 1);
    // A streamed chat request on the proxy path.
    let (st, hd, body) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        chat("gpt-4o-mini", true),
        &[],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(num(&hd, "x-ratelimit-remaining-requests"), 0);
    // The gateway's own 429: nothing left, when it resets, and retry-after as before.
    let (st, hd, body) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        chat("gpt-4o-mini", false),
        &[],
    )
    .await;
    assert_eq!(st, 429, "{body}");
    assert_eq!(num(&hd, "x-ratelimit-limit-requests"), 2);
    assert_eq!(num(&hd, "x-ratelimit-remaining-requests"), 0);
    let reset = openai_reset_ms(h(&hd, "x-ratelimit-reset-requests").unwrap());
    assert!(reset > 0, "{reset}");
    assert!(num(&hd, "retry-after") >= 1);
    // No token limit, no budget: none of their headers; never a cost on a refusal.
    assert!(h(&hd, "x-ratelimit-limit-tokens").is_none());
    assert!(h(&hd, "x-tollgate-budget-remaining-usd").is_none());
    assert!(h(&hd, "x-tollgate-cost-usd").is_none());
    // The Anthropic dialect's 429.
    let (st, hd, _) = send(
        &gw,
        &secret,
        "/v1/messages",
        messages("claude-x", false),
        &[],
    )
    .await;
    assert_eq!(st, 429);
    assert_eq!(num(&hd, "anthropic-ratelimit-requests-remaining"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_limits_gets_only_the_cost() {
    let (_mock, gw) = start().await;
    let secret = key(&gw, json!({})).await;
    let (st, hd, _) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        chat("gpt-4o-mini", false),
        &[("x-mock-provider-ratelimit", "1")],
    )
    .await;
    assert_eq!(st, 200);
    let names: Vec<&str> = hd.keys().map(|k| k.as_str()).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("x-ratelimit-")),
        "{names:?}"
    );
    assert_eq!(h(&hd, "x-tollgate-cost-usd"), Some("0.00014"));
    assert!(h(&hd, "x-tollgate-budget-remaining-usd").is_none());
    assert_eq!(
        h(&hd, "x-tollgate-provider-x-ratelimit-remaining-requests"),
        Some("4999")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_spend_by_group_key_info_and_the_status_line_script() {
    let (_mock, gw) = start().await;
    let secret = key(&gw, json!({"max_budget": "1.00", "budget_duration": "30d"})).await;
    let sessions = [("sess-a", "s1"), ("sess-a", "s2"), ("sess-b", "s3")];
    for (session, rid) in sessions {
        let (st, _, _) = send(
            &gw,
            &secret,
            "/v1/messages",
            messages("claude-x", false),
            &[("x-claude-code-session-id", session), ("x-request-id", rid)],
        )
        .await;
        assert_eq!(st, 200);
    }
    for (_, rid) in sessions {
        record(&gw, rid).await;
    }
    let (st, v) = admin_call(
        &gw.url(),
        reqwest::Method::GET,
        "/v1/usage?group_by=session",
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let group = |g: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == g)
            .cloned()
            .unwrap_or_else(|| panic!("no group {g} in {v}"))
    };
    assert_eq!(group("sess-a")["requests"], json!(2));
    assert_eq!(group("sess-a")["cost"], "0.00028");
    assert_eq!(group("sess-b")["cost"], "0.00014");

    let info: Value = client()
        .get(format!("{}/v1/key/info?session=sess-a", gw.url()))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["session"]["session_id"], "sess-a");
    assert_eq!(info["session"]["requests"], json!(2));
    assert_eq!(info["session"]["cost"], "0.00028");
    assert_eq!(info["standing"]["remaining"], "0.99958");

    // The status line script, as Claude Code runs it: the session's JSON on stdin.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/claude-code-statusline.py"
    );
    let run = move |stdin: &'static str, url: String| {
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("ANTHROPIC_API_KEY")
            .env("TOLLGATE_URL", url)
            .env("TOLLGATE_KEY", &secret)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let url = gw.url();
    let line = tokio::task::spawn_blocking(move || {
        (
            run(
                r#"{"session_id":"sess-a","model":{"display_name":"Sonnet"}}"#,
                url,
            ),
            run(r#"{"session_id":"x"}"#, "http://127.0.0.1:1".into()),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        line.0.trim(),
        "tollgate [Sonnet] · session $0.00028 (2 req) · budget $0.99958 of $1.00 left (30d)",
    );
    assert_eq!(line.1.trim(), "tollgate: unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_in_stream_puts_the_settled_cost_in_the_final_usage_event() {
    let (_mock, gw) = start_with(|c| c.set("cost_in_stream", true)).await;
    let secret = key(&gw, json!({})).await;
    let cost_of = |events: &[(String, Value)], pick: &dyn Fn(&(String, Value)) -> Option<Value>| {
        let found: Vec<Value> = events.iter().filter_map(pick).collect();
        assert_eq!(found.len(), 1, "one final usage event: {events:?}");
        found[0].clone()
    };
    // Chat, same format (the proxy path): the usage chunk the client asked for.
    let mut body = chat("gpt-4o-mini", true);
    body["stream_options"] = json!({"include_usage": true});
    let (st, _, text) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        body,
        &[("x-request-id", "cis-1")],
    )
    .await;
    assert_eq!(st, 200);
    let ev = events(&text);
    let c = cost_of(&ev, &|(_, v)| v["usage"].get("tollgate_cost_usd").cloned());
    assert_eq!(c, record(&gw, "cis-1").await["cost"]);
    assert_eq!(c, "0.00014");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // Anthropic, native and translated (the direct path): message_delta.
    for (model, rid) in [("claude-x", "cis-2"), ("gpt-4o-mini", "cis-3")] {
        let (st, _, text) = send(
            &gw,
            &secret,
            "/v1/messages",
            messages(model, true),
            &[("x-request-id", rid)],
        )
        .await;
        assert_eq!(st, 200);
        let ev = events(&text);
        let c = cost_of(&ev, &|(name, v)| {
            (name == "message_delta")
                .then(|| v["usage"].get("tollgate_cost_usd").cloned())
                .flatten()
        });
        assert_eq!(c, record(&gw, rid).await["cost"], "{model}");
        assert!(ev.iter().any(|(n, _)| n == "message_stop"));
    }
    // Responses: response.completed.
    let (st, _, text) = send(
        &gw,
        &secret,
        "/v1/responses",
        json!({"model": "gpt-4o-mini", "input": "hi", "stream": true}),
        &[("x-request-id", "cis-4")],
    )
    .await;
    assert_eq!(st, 200);
    let ev = events(&text);
    let c = cost_of(&ev, &|(name, v)| {
        (name == "response.completed")
            .then(|| v["response"]["usage"].get("tollgate_cost_usd").cloned())
            .flatten()
    });
    assert_eq!(c, record(&gw, "cis-4").await["cost"]);
    // Non-streamed answers are not touched (the header says it).
    let (_, hd, text) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        chat("gpt-4o-mini", false),
        &[],
    )
    .await;
    assert!(!text.contains("tollgate_cost_usd"));
    assert_eq!(h(&hd, "x-tollgate-cost-usd"), Some("0.00014"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_loop_answer_says_the_whole_requests_cost() {
    let search = mock_upstream::SearchServer::start().await;
    let url = search.url();
    let (_mock, gw) =
        start_with(move |c| c.set("tools", json!({"web_search": {"url": url}}))).await;
    let secret = key(&gw, json!({"rpm_limit": 50, "max_budget": "1.00"})).await;
    let body = json!({"model": "gpt-4o-mini", "tools": [{"type": "tollgate_web_search"}],
        "messages": [{"role": "user", "content": "find it"}]});
    let (st, hd, text) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        body.clone(),
        &[
            ("x-mock-tool-script", "web_search"),
            ("x-request-id", "loop-1"),
        ],
    )
    .await;
    assert_eq!(st, 200, "{text}");
    assert_eq!(h(&hd, "x-tollgate-tool-iterations"), Some("2"));
    // Each turn is admitted on its own: two requests counted.
    assert_eq!(num(&hd, "x-ratelimit-remaining-requests"), 48);
    // Both turns' records, once written: the header is their sum.
    let mut costs = Vec::new();
    for _ in 0..50 {
        costs = usage_rows(&gw)
            .await
            .into_iter()
            .filter(|v| v["request_id"] == "loop-1")
            .map(|v| v["cost_micros"].as_u64().unwrap_or(0))
            .collect();
        if costs.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(costs.len(), 2, "{costs:?}");
    let total: u64 = costs.iter().sum();
    assert!(total >= 280, "two turns of 140 and the search: {costs:?}");
    let usd = |m: u64| {
        let s = format!("{}.{:06}", m / 1_000_000, m % 1_000_000);
        let s = s.trim_end_matches('0').to_string();
        if s.ends_with('.') {
            format!("{s}00")
        } else {
            s
        }
    };
    assert_eq!(h(&hd, "x-tollgate-cost-usd"), Some(usd(total).as_str()));
    assert_eq!(
        h(&hd, "x-tollgate-budget-remaining-usd"),
        Some(usd(1_000_000 - total).as_str())
    );
    // Streamed: the stream's header says where the key stands, no cost yet.
    let mut body = body;
    body["stream"] = json!(true);
    let (st, hd, text) = send(
        &gw,
        &secret,
        "/v1/chat/completions",
        body,
        &[("x-mock-tool-script", "web_search")],
    )
    .await;
    assert_eq!(st, 200, "{text}");
    assert_eq!(num(&hd, "x-ratelimit-remaining-requests"), 47);
    assert!(h(&hd, "x-tollgate-cost-usd").is_none());
    assert!(h(&hd, "x-tollgate-budget-remaining-usd").is_some());
}
