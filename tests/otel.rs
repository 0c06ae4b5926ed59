//! OpenTelemetry export on the real binary (the mock provider, a test OTLP receiver on
//! loopback that decodes what it gets with `opentelemetry-proto`): a request is one SERVER
//! span with the GenAI attributes (tokens from the mock's usage) and one CLIENT span per
//! upstream attempt (two across a failover, under the same request span); the client's
//! `traceparent` is continued and the provider sees one carrying the attempt's span; a
//! sample of 0 exports nothing; no credential reaches an attribute; with export off, the
//! client's `traceparent` and `tracestate` reach the provider unchanged. The tests run on two
//! threads so that the receiver answers while a test blocks (stopping the gateway).

mod common;

use common::*;
use mock_upstream::{Fault, MockServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An OTLP/HTTP receiver: decodes each `POST /v1/traces` body and keeps its spans (with the
/// resource's `service.name`), answering 200.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    posts: Arc<Mutex<u32>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(Mutex::new(0));
        let (s, p) = (spans.clone(), posts.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone(), p.clone()));
            }
        });
        Receiver { port, spans, posts }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of `trace_id`, once `n` of them have arrived.
    async fn trace(&self, trace_id: &[u8], n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got: Vec<Span> = self
                .spans()
                .into_iter()
                .map(|(_, s)| s)
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} spans of the trace arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(
    mut conn: tokio::net::TcpStream,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    posts: Arc<Mutex<u32>>,
) {
    let mut buf = Vec::new();
    loop {
        // One request: the head, then `content-length` bytes.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("post /v1/traces "), "{head}");
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "{head}"
        );
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a content-length");
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        *posts.lock().unwrap() += 1;
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.lock().unwrap().push((service.clone(), s));
                }
            }
        }
        let ok =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if conn.write_all(ok).await.is_err() {
            return;
        }
    }
}

/// An attribute's value as JSON (strings, numbers, booleans).
fn attr(s: &Span, key: &str) -> Value {
    s.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map_or(Value::Null, |v| match v {
            Any::StringValue(s) => json!(s),
            Any::IntValue(i) => json!(i),
            Any::DoubleValue(d) => json!(d),
            Any::BoolValue(b) => json!(b),
            other => json!(format!("{other:?}")),
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

async fn post(gw: &Gateway, key: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, String) {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.timeout(Duration::from_secs(20)).send().await.unwrap();
    let st = r.status().as_u16();
    (st, r.text().await.unwrap())
}

fn otel_config(mock: &MockServer, receiver: &Receiver, extra: Value) -> TestConfig {
    let mut otel =
        json!({"endpoint": receiver.url(), "delay_ms": 50, "service_name": "tollgate-test"});
    if let (Some(o), Some(e)) = (otel.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    TestConfig::new(&mock.url()).set("otel", otel)
}

/// No span attribute anywhere holds a credential.
fn assert_no_secret(spans: &[(String, Span)], secrets: &[&str]) {
    for (_, s) in spans {
        let text = format!("{:?} {:?}", s.attributes, s.events);
        for secret in secrets {
            assert!(!text.contains(secret), "a span holds a credential: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_a_server_span_with_genai_attributes_and_an_attempt_span() {
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start_with(otel_config(&mock, &receiver, json!({})).file());
    let key = gw.create_key("otel").await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 64, "temperature": 0.25, "top_p": 0.5,
    });
    let (st, text) = post(
        &gw,
        &key,
        &body,
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=abc"),
            ("x-mock-usage", "21,34"),
            ("x-request-id", "req-otel-1"),
        ],
    )
    .await;
    assert_eq!(st, 200, "{text}");
    let spans = receiver.trace(&unhex(CLIENT_TRACE), 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    // The client's trace continues: same trace id, the client's span as the parent.
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.name, "chat gpt-4o-mini");
    for (k, v) in [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("openai")),
        ("gen_ai.request.model", json!("gpt-4o-mini")),
        ("gen_ai.response.model", json!("gpt-4o-mini")),
        ("gen_ai.usage.input_tokens", json!(21)),
        ("gen_ai.usage.output_tokens", json!(34)),
        ("gen_ai.request.max_tokens", json!(64)),
        ("gen_ai.request.temperature", json!(0.25)),
        ("gen_ai.request.top_p", json!(0.5)),
        ("http.response.status_code", json!(200)),
        ("tollgate.request_id", json!("req-otel-1")),
        ("tollgate.provider", json!("openai")),
        ("tollgate.attempts", json!(1)),
    ] {
        assert_eq!(attr(server, k), v, "{k}");
    }
    assert!(attr(server, "tollgate.key_id")
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    let attempt = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("an attempt span");
    assert_eq!(attempt.parent_span_id, server.span_id);
    assert_eq!(attempt.name, "chat gpt-4o-mini");
    assert_eq!(attr(attempt, "tollgate.attempt.outcome"), json!("ok"));
    assert_eq!(attr(attempt, "http.response.status_code"), json!(200));
    assert_eq!(attr(attempt, "gen_ai.usage.output_tokens"), json!(34));
    assert!(attempt.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(attempt.end_time_unix_nano <= server.end_time_unix_nano);
    // The provider was asked under the attempt's span, in the client's trace; the client's
    // tracestate went along.
    let seen = mock.requests();
    let up = seen.last().unwrap();
    assert_eq!(
        up.header("traceparent"),
        Some(format!("00-{CLIENT_TRACE}-{}-01", hex(&attempt.span_id)).as_str())
    );
    assert_eq!(up.header("tracestate"), Some("vendor=abc"));
    let all = receiver.spans();
    assert!(all.iter().all(|(svc, _)| svc == "tollgate-test"));
    assert_no_secret(&all, &[&key, "sk-openai-provider-key", MASTER]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_the_proxy_path_has_its_attempt_span_and_traceparent() {
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start_with(otel_config(&mock, &receiver, json!({})).file());
    let key = gw.create_key("otel").await;
    let body = json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    // No traceparent: a new trace starts here.
    let (st, text) = post(&gw, &key, &body, &[("x-mock-usage", "5,6")]).await;
    assert_eq!(st, 200, "{text}");
    let seen = mock.requests();
    let tp = seen
        .last()
        .unwrap()
        .header("traceparent")
        .expect("a traceparent upstream")
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{tp}");
    let spans = receiver.trace(&unhex(parts[1]), 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(attr(server, "tollgate.stream"), json!(true));
    assert_eq!(attr(server, "gen_ai.usage.output_tokens"), json!(6));
    let attempt = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(hex(&attempt.span_id), parts[2]);
    assert_eq!(attempt.parent_span_id, server.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_two_attempt_spans_under_one_request_span() {
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    let receiver = Receiver::start().await;
    // (A fault in the request's `x-mock-*` headers would replace these defaults.)
    a.set_default_fault(Some(Fault {
        status: Some(500),
        ..Default::default()
    }));
    b.set_default_fault(Some(Fault {
        usage: Some((3, 4)),
        ..Default::default()
    }));
    let provider = |url: String, k: &str| json!({"kind": "openai", "base_url": format!("{url}/v1"), "api_key": k});
    let cfg = TestConfig::empty()
        .provider("a", provider(a.url(), "sk-a-provider-key"))
        .provider("b", provider(b.url(), "sk-b-provider-key"))
        .set(
            "deployments",
            json!({"gpt-4.1": [{"provider": "a"}, {"provider": "b", "priority": 1}]}),
        )
        .set("otel", json!({"endpoint": receiver.url(), "delay_ms": 50}));
    let gw = Gateway::start_with(cfg.file());
    let key = gw.create_key("otel").await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let body = json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]});
    let (st, text) = post(&gw, &key, &body, &[("traceparent", &traceparent)]).await;
    assert_eq!(st, 200, "{text}");
    let spans = receiver.trace(&unhex(CLIENT_TRACE), 3).await;
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 1);
    let server = servers[0];
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(attempts.iter().all(|s| s.parent_span_id == server.span_id));
    let (first, second) = (attempts[0], attempts[1]);
    assert_eq!(attr(first, "tollgate.provider"), json!("a"));
    assert_eq!(attr(first, "tollgate.attempt.outcome"), json!("status_5xx"));
    assert_eq!(attr(first, "http.response.status_code"), json!(500));
    assert_eq!(attr(first, "error.type"), json!("status_5xx"));
    assert_eq!(
        first.status.as_ref().map(|s| s.code),
        Some(2),
        "error status"
    );
    assert_eq!(attr(second, "tollgate.provider"), json!("b"));
    assert_eq!(attr(second, "tollgate.attempt.outcome"), json!("ok"));
    assert_eq!(attr(server, "tollgate.attempts"), json!(2));
    assert_eq!(attr(server, "tollgate.provider"), json!("b"));
    assert_eq!(attr(server, "gen_ai.usage.input_tokens"), json!(3));
    // Each provider saw its own attempt's span as the parent.
    let tp = |m: &MockServer| {
        m.requests()
            .last()
            .unwrap()
            .header("traceparent")
            .unwrap()
            .to_string()
    };
    assert_eq!(
        tp(&a),
        format!("00-{CLIENT_TRACE}-{}-01", hex(&first.span_id))
    );
    assert_eq!(
        tp(&b),
        format!("00-{CLIENT_TRACE}-{}-01", hex(&second.span_id))
    );
    assert_no_secret(
        &receiver.spans(),
        &[&key, "sk-a-provider-key", "sk-b-provider-key"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_of_zero_exports_nothing_and_an_unsampled_parent_is_passed_on() {
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    let mut gw = Gateway::start_with(otel_config(&mock, &receiver, json!({"sample": 0.0})).file());
    let key = gw.create_key("otel").await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..5 {
        assert_eq!(post(&gw, &key, &body, &[]).await.0, 200);
    }
    // A client's unsampled trace is not sampled here either; its header goes on unchanged.
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    assert_eq!(
        post(&gw, &key, &body, &[("traceparent", &unsampled)])
            .await
            .0,
        200
    );
    assert_eq!(
        mock.requests().last().unwrap().header("traceparent"),
        Some(unsampled.as_str())
    );
    // The drain flushes what the batch processor holds: after the exit, nothing came.
    gw.stop();
    assert!(receiver.spans().is_empty(), "{:?}", receiver.spans());
    assert_eq!(*receiver.posts.lock().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_queued_at_stop_are_flushed() {
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    // A long delay: only the drain's flush sends them.
    let mut gw =
        Gateway::start_with(otel_config(&mock, &receiver, json!({"delay_ms": 600000})).file());
    let key = gw.create_key("otel").await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&gw, &key, &body, &[]).await.0, 200);
    gw.stop();
    let spans = receiver.spans();
    assert_eq!(
        spans
            .iter()
            .filter(|(_, s)| s.kind == SpanKind::Server as i32)
            .count(),
        1,
        "{spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_export_off_the_clients_trace_headers_pass_through() {
    let mock = MockServer::start().await;
    let gw = Gateway::start_with(TestConfig::new(&mock.url()).file());
    let key = gw.create_key("otel").await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let (st, _) = post(
        &gw,
        &key,
        &body,
        &[("traceparent", &traceparent), ("tracestate", "v=1")],
    )
    .await;
    assert_eq!(st, 200);
    let up = mock.requests().last().unwrap().clone();
    assert_eq!(up.header("traceparent"), Some(traceparent.as_str()));
    assert_eq!(up.header("tracestate"), Some("v=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start_with(otel_config(&mock, &receiver, json!({})).file());
    let key = gw.create_key("otel").await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let bad = format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase());
    assert_eq!(
        post(&gw, &key, &body, &[("traceparent", &bad)]).await.0,
        200
    );
    let tp = mock
        .requests()
        .last()
        .unwrap()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert!(!tp.to_ascii_lowercase().contains(CLIENT_TRACE), "{tp}");
    let spans = receiver.trace(&unhex(&tp[3..35]), 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert!(server.parent_span_id.is_empty());
}
