//! Stopping the real binary (SIGTERM and Ctrl-C): idle, it exits at once; busy, it stops
//! accepting, lets the requests in flight finish and exits when the last one ends; at the
//! end of the grace period, streams still open end with their client's native error event
//! and are settled (their usage is in the store after a restart). Timings are printed; the
//! assertions bound them only far from the edges (grace period vs. "at once").

mod common;

use common::*;
use futures_util::StreamExt;
use mock_upstream::MockServer;
use std::path::Path;
use std::time::{Duration, Instant};

fn config(mock: &str, port: u16, dir: &Path, grace: u64) -> String {
    TestConfig::new(mock)
        .set("grace_period_seconds", grace)
        .render(port, dir)
}

/// Starts an Anthropic-client stream of `pieces` deltas, one every `delay_ms`, on `model`;
/// returns the task that reads it to the end (the whole body, or what came before a cut).
fn start_stream(
    gw: &Gateway,
    key: &str,
    model: &str,
    pieces: u32,
    delay_ms: u64,
    id: &str,
) -> tokio::task::JoinHandle<(u16, String)> {
    let req = client()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", key)
        .header("x-request-id", id)
        .header("x-mock-pieces", pieces.to_string())
        .header("x-mock-chunk-delay-ms", delay_ms.to_string())
        .json(&messages(model, true));
    tokio::spawn(async move {
        let resp = req.send().await.expect("stream started");
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        let mut st = resp.bytes_stream();
        while let Some(Ok(b)) = st.next().await {
            body.extend_from_slice(&b);
        }
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

async fn wait_for_deltas(gw: &Gateway) {
    // Give the streams time to be under way (the mock's first deltas are out).
    let _ = gw;
    tokio::time::sleep(Duration::from_millis(600)).await;
}

fn stop_and_time(gw: &mut Gateway, sig: &str, within: Duration) -> (Duration, i32) {
    let t0 = Instant::now();
    gw.signal(sig);
    let st = gw
        .wait_status(within)
        .unwrap_or_else(|| panic!("tollgate still runs {within:?} after SIG{sig}"));
    (t0.elapsed(), st.code().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gateway_exits_at_once_on_sigterm_and_ctrl_c() {
    let mock = MockServer::start().await;
    for sig in ["TERM", "INT"] {
        let url = mock.url();
        let mut gw = tokio::task::spawn_blocking(move || {
            Gateway::start_with(move |p, d| config(&url, p, d, 30))
        })
        .await
        .unwrap();
        // One request first, so that the store and the usage writer have work behind them.
        let key = gw.create_key("idle").await;
        let r = client()
            .post(format!("{}/v1/messages", gw.url()))
            .header("x-api-key", &key)
            .json(&messages("claude-x", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (took, code) = stop_and_time(&mut gw, sig, Duration::from_secs(10));
        eprintln!("idle, SIG{sig}: exited with {code} after {took:?} (grace period 30 s)");
        assert_eq!(code, 0, "clean exit");
        assert!(
            took < Duration::from_secs(5),
            "an idle gateway must not wait out its grace period: {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_finish_then_the_gateway_exits() {
    let mock = MockServer::start().await;
    let url = mock.url();
    let mut gw = tokio::task::spawn_blocking(move || {
        Gateway::start_with(move |p, d| config(&url, p, d, 30))
    })
    .await
    .unwrap();
    let key = gw.create_key("busy").await;
    // ~2.4 s each: one on the proxy path (same format), one on the direct path (translated).
    let a = start_stream(&gw, &key, "claude-x", 12, 200, "busy-proxy");
    let b = start_stream(&gw, &key, "openai:gpt-4o-mini", 12, 200, "busy-direct");
    wait_for_deltas(&gw).await;
    let port = gw.port;
    let t0 = Instant::now();
    gw.signal("TERM");
    // The listener closes: new connections are refused while the streams go on.
    let mut refused = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (sa, ta) = a.await.unwrap();
    let (sb, tb) = b.await.unwrap();
    let streams_done = t0.elapsed();
    let st = tokio::task::spawn_blocking(move || {
        let st = gw.wait_status(Duration::from_secs(20));
        (st, gw)
    })
    .await
    .unwrap()
    .0
    .expect("tollgate exits after its last request");
    let exited = t0.elapsed();
    eprintln!(
        "busy, SIGTERM: streams finished {streams_done:?} after the signal, process exited after {exited:?} (code {:?}); new connections refused: {refused}",
        st.code()
    );
    assert!(refused, "new connections are refused during the drain");
    for (s, t) in [(sa, &ta), (sb, &tb)] {
        assert_eq!(s, 200);
        assert!(
            t.contains("event: message_stop") && !t.contains("event: error"),
            "the stream in flight finished normally: {t}"
        );
    }
    assert_eq!(st.code(), Some(0));
    assert!(
        exited < Duration::from_secs(15),
        "exited once the last request ended, not at the end of the 30 s grace period: {exited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_open_at_the_deadline_end_with_an_error_event_and_are_settled() {
    let mock = MockServer::start().await;
    let url = mock.url();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cfg = {
        let url = url.clone();
        move |p, d: &Path| config(&url, p, d, 2)
    };
    let mut gw = {
        let (dir, cfg) = (dir.clone(), cfg.clone());
        tokio::task::spawn_blocking(move || Gateway::spawn_in(&dir, cfg, &[]))
            .await
            .unwrap()
    };
    let key = gw.create_key("deadline").await;
    // ~12 s each: far past the 2 s grace period.
    let a = start_stream(&gw, &key, "claude-x", 60, 200, "cut-proxy");
    let b = start_stream(&gw, &key, "openai:gpt-4o-mini", 60, 200, "cut-direct");
    wait_for_deltas(&gw).await;
    let t0 = Instant::now();
    gw.signal("TERM");
    let (sa, ta) = a.await.unwrap();
    let (sb, tb) = b.await.unwrap();
    let cut_after = t0.elapsed();
    let st = tokio::task::spawn_blocking(move || {
        let st = gw.wait_status(Duration::from_secs(20));
        (st, gw)
    })
    .await
    .unwrap()
    .0
    .expect("tollgate exits after the deadline");
    let exited = t0.elapsed();
    eprintln!(
        "deadline (grace 2 s): streams ended {cut_after:?} after SIGTERM, process exited after {exited:?} (code {:?})",
        st.code()
    );
    assert_eq!(st.code(), Some(0));
    for (name, s, t) in [("proxy path", sa, &ta), ("direct path", sb, &tb)] {
        assert_eq!(s, 200);
        let evs = events(t);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names.last(),
            Some(&"error"),
            "{name}: ends with an error event: {t}"
        );
        assert!(!names.contains(&"message_stop"), "{name}: {t}");
        assert_ne!(
            names[names.len() - 2],
            "content_block_stop",
            "{name}: the open block stays open so that the client retries: {t}"
        );
        let msg = evs.last().unwrap().1["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(msg.contains("shutting down"), "{name}: says why: {msg}");
    }
    assert!(
        cut_after < Duration::from_secs(8),
        "cut at the deadline, not when the streams would have ended: {cut_after:?}"
    );

    // Both requests were settled: after a restart on the same data, their usage is there.
    let gw2 = tokio::task::spawn_blocking(move || Gateway::spawn_in(&dir, cfg, &[]))
        .await
        .unwrap();
    let mut found = Vec::new();
    for _ in 0..50 {
        found = usage_rows(&gw2)
            .await
            .into_iter()
            .filter(|v| {
                v["request_id"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("cut-"))
            })
            .collect();
        if found.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(found.len(), 2, "both cut requests were settled: {found:?}");
    for rec in &found {
        assert!(
            rec["completion_tokens"].as_u64().unwrap_or(0) > 0,
            "billed for what was delivered: {rec}"
        );
    }
}

/// Sends one chat request on `conn` as raw HTTP/1.1 and returns the whole response text.
async fn raw_chat(conn: &mut tokio::net::TcpStream, key: &str, close: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = chat("gpt-4o-mini", false).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    );
    conn.write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    // Enough to hold the whole (small) answer: read until the JSON body has closed.
    while !String::from_utf8_lossy(&got).trim_end().ends_with('}') {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_the_stop_is_served_and_idle_ones_do_not_hold_the_exit() {
    let mock = MockServer::start().await;
    let url = mock.url();
    let mut gw = tokio::task::spawn_blocking(move || {
        Gateway::start_with(move |p, d| config(&url, p, d, 30))
    })
    .await
    .unwrap();
    let key = gw.create_key("arrival").await;
    let addr = ("127.0.0.1", gw.port);
    // A keep-alive connection that served one request and now sits idle.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let first = raw_chat(&mut idle, &key, false).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // A connection accepted before the stop whose request is only sent after it: the case of
    // a client that connected in the instant before the listener closed.
    let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = raw_chat(&mut late, &key, true).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"choices\""),
        "the request on the connection accepted before the stop was served: {answer}"
    );
    let st = tokio::task::spawn_blocking(move || gw.wait_status(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("tollgate exits");
    let exited = t0.elapsed();
    eprintln!("late arrival served; exited {exited:?} after SIGTERM with an idle keep-alive connection open");
    assert_eq!(st.code(), Some(0));
    assert!(
        exited < Duration::from_secs(5),
        "an idle keep-alive connection does not hold the exit: {exited:?}"
    );
    drop(idle);
}
