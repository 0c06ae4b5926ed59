//! A mock LLM provider for tollgate's tests and benchmarks: OpenAI Chat Completions,
//! Responses, embeddings, moderations and models, Anthropic Messages and count_tokens,
//! streamed (SSE, written in small pieces) or not. It records every request and injects
//! faults on demand. HTTP/1.1 is written by hand on tokio so that faults (split writes,
//! resets, stalls, garbage) are exact.

pub mod tls;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: Option<String>,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
    pub received_at: Instant,
    /// When the last response byte was written.
    pub completed_at: Option<Instant>,
    pub status: u16,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn log_json(&self) -> Value {
        json!({
            "method": self.method, "path": self.path, "query": self.query,
            "headers": self.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "body_len": self.body.len(),
            "body": serde_json::from_slice::<Value>(&self.body).ok(),
            "status": self.status,
        })
    }
}

/// Fault and behaviour options: from `x-mock-*` headers, or a default set for all requests.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Fault {
    pub status: Option<u16>,
    pub retry_after: Option<u32>,
    pub delay_ms: Option<u64>,
    pub chunk_delay_ms: Option<u64>,
    pub pieces: Option<usize>,
    pub usage: Option<(u64, u64)>,
    pub fault: Option<String>,
    /// Apply to the next N requests only.
    pub times: Option<u32>,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<RecordedRequest>>,
    default_fault: Mutex<Option<Fault>>,
    log_file: Mutex<Option<std::fs::File>>,
}

pub struct MockServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    pub async fn start() -> MockServer {
        Self::start_on("127.0.0.1:0").await.expect("bind mock")
    }

    pub async fn start_on(addr: &str) -> std::io::Result<MockServer> {
        Self::start_with_log(addr, None).await
    }

    pub async fn start_with_log(
        addr: &str,
        log: Option<std::fs::File>,
    ) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        *shared.log_file.lock().unwrap() = log;
        let s2 = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let s = s2.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(sock, s).await;
                });
            }
        });
        Ok(MockServer { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    pub fn set_default_fault(&self, f: Option<Fault>) {
        *self.shared.default_fault.lock().unwrap() = f;
    }
}

struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn read_head(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Option<Head>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await? == 0 {
            return Ok(None);
        }
        let l = l.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Some(Head {
        method,
        target,
        headers,
    }))
}

async fn read_body(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    h: &Head,
) -> std::io::Result<(Vec<u8>, bool)> {
    if h.get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).await?;
            let size =
                usize::from_str_radix(l.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 {
                let mut end = String::new();
                r.read_line(&mut end).await?;
                return Ok((body, true));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).await?;
        }
    }
    let n: usize = h
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await?;
    Ok((body, false))
}

fn header_fault(h: &Head) -> Option<Fault> {
    let num = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok());
    let f = Fault {
        status: num("x-mock-status").map(|v| v as u16),
        retry_after: num("x-mock-retry-after").map(|v| v as u32),
        delay_ms: num("x-mock-delay-ms"),
        chunk_delay_ms: num("x-mock-chunk-delay-ms"),
        pieces: num("x-mock-pieces").map(|v| v as usize),
        usage: h.get("x-mock-usage").and_then(|v| {
            let (a, b) = v.split_once(',')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        }),
        fault: h.get("x-mock-fault").map(String::from),
        times: None,
    };
    let any = f.status.is_some()
        || f.delay_ms.is_some()
        || f.chunk_delay_ms.is_some()
        || f.pieces.is_some()
        || f.usage.is_some()
        || f.fault.is_some();
    any.then_some(f)
}

fn take_default(shared: &Shared) -> Fault {
    let mut d = shared.default_fault.lock().unwrap();
    let Some(f) = d.clone() else {
        return Fault::default();
    };
    if let Some(t) = f.times {
        if t <= 1 {
            *d = None;
        } else if let Some(x) = d.as_mut() {
            x.times = Some(t - 1);
        }
    }
    f
}

async fn serve_conn(sock: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let Some(head) = read_head(&mut rd).await? else {
            return Ok(());
        };
        if head
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let (body, chunked) = read_body(&mut rd, &head).await?;
        let (path, query) = match head.target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (head.target.clone(), None),
        };
        // Control routes (not recorded).
        if path.starts_with("/__mock/") {
            let out = match (head.method.as_str(), path.as_str()) {
                ("GET", "/__mock/requests") => {
                    json!(shared
                        .log
                        .lock()
                        .unwrap()
                        .iter()
                        .map(RecordedRequest::log_json)
                        .collect::<Vec<_>>())
                }
                ("POST", "/__mock/reset") => {
                    shared.log.lock().unwrap().clear();
                    json!({"ok": true})
                }
                ("POST", "/__mock/fault") => {
                    *shared.default_fault.lock().unwrap() =
                        serde_json::from_slice(&body).ok().flatten();
                    json!({"ok": true})
                }
                _ => json!({"error": "unknown control route"}),
            };
            write_json(&mut wr, 200, &[], &out.to_string()).await?;
            continue;
        }
        let fault = header_fault(&head).unwrap_or_else(|| take_default(&shared));
        let idx = {
            let mut log = shared.log.lock().unwrap();
            log.push(RecordedRequest {
                method: head.method.clone(),
                path: path.clone(),
                query,
                headers: head.headers.clone(),
                body: body.clone(),
                chunked,
                received_at: Instant::now(),
                completed_at: None,
                status: 0,
            });
            log.len() - 1
        };
        let (status, keep) = respond(&mut wr, &head, &path, &body, &fault).await?;
        let rec = {
            let mut log = shared.log.lock().unwrap();
            if let Some(r) = log.get_mut(idx) {
                r.completed_at = Some(Instant::now());
                r.status = status;
            }
            log.get(idx).cloned()
        };
        if let (Some(rec), Some(f)) = (rec, shared.log_file.lock().unwrap().as_mut()) {
            use std::io::Write;
            let _ = writeln!(f, "{}", rec.log_json());
        }
        if !keep {
            return Ok(());
        }
    }
}

async fn write_json(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    status: u16,
    extra: &[(&str, String)],
    body: &str,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    wr.write_all(&out).await
}

fn reason(s: u16) -> &'static str {
    match s {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Messages,
    CountTokens,
    Responses,
    Embeddings,
    Moderations,
    Models,
    Unknown,
}

fn kind_of(method: &str, path: &str) -> Kind {
    let p = path.trim_end_matches('/');
    match method {
        "POST" if p.ends_with("/chat/completions") => Kind::Chat,
        "POST" if p.ends_with("/messages/count_tokens") => Kind::CountTokens,
        "POST" if p.ends_with("/messages") => Kind::Messages,
        "POST" if p.ends_with("/responses") => Kind::Responses,
        "POST" if p.ends_with("/embeddings") => Kind::Embeddings,
        "POST" if p.ends_with("/moderations") => Kind::Moderations,
        "GET" if p.ends_with("/models") => Kind::Models,
        _ => Kind::Unknown,
    }
}

const TEXT: &str = "Hello from mock upstream!";

fn pieces(f: &Fault) -> Vec<String> {
    match f.pieces {
        Some(n) => (0..n).map(|_| "tok ".to_string()).collect(),
        None => TEXT
            .chars()
            .collect::<Vec<_>>()
            .chunks(4)
            .map(|c| c.iter().collect())
            .collect(),
    }
}

/// The text of the last user message, and whether it is a tool result.
fn last_user(req: &Value, kind: Kind) -> (String, bool, String) {
    let msgs = req["messages"].as_array().cloned().unwrap_or_default();
    // System and developer items may follow the user's turn (Claude Code): skip them.
    let Some(last) = msgs
        .iter()
        .rev()
        .find(|m| !matches!(m["role"].as_str(), Some("system" | "developer")))
    else {
        return (String::new(), false, String::new());
    };
    if kind == Kind::Chat && last["role"] == "tool" {
        let c = match &last["content"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        return (String::new(), true, c);
    }
    match &last["content"] {
        Value::String(s) => (s.clone(), false, String::new()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for b in blocks {
                if b["type"] == "tool_result" {
                    let c = match &b["content"] {
                        Value::String(s) => s.clone(),
                        Value::Array(a) => a
                            .iter()
                            .filter_map(|x| x["text"].as_str())
                            .collect::<Vec<_>>()
                            .join(""),
                        v => v.to_string(),
                    };
                    return (String::new(), true, c);
                }
                if let Some(t) = b["text"].as_str() {
                    text.push_str(t);
                }
            }
            (text, false, String::new())
        }
        _ => (String::new(), false, String::new()),
    }
}

/// The tool to call: a shell tool when one is declared (Claude Code's `Bash`, Codex's
/// `exec_command`), else the first.
fn first_tool(req: &Value, kind: Kind) -> Option<String> {
    let tools = req["tools"].as_array()?;
    let name_of = |t: &Value| {
        let n = if kind == Kind::Chat {
            t["function"]["name"].as_str().or(t["name"].as_str())
        } else {
            t["name"].as_str()
        };
        n.map(String::from)
    };
    let names: Vec<String> = tools.iter().filter_map(name_of).collect();
    names
        .iter()
        .find(|n| *n == "Bash" || *n == "exec_command")
        .or(names.first())
        .cloned()
}

const TOOL_ARGS: &str = "{\"command\":\"echo hello-from-mock-tool\"}";

async fn respond(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    head: &Head,
    path: &str,
    body: &[u8],
    f: &Fault,
) -> std::io::Result<(u16, bool)> {
    let kind = kind_of(&head.method, path);
    if let Some(ms) = f.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let is_anthropic = matches!(kind, Kind::Messages | Kind::CountTokens);
    if let Some(status) = f.status.filter(|s| *s >= 400) {
        let body = if is_anthropic {
            let t = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                s if s >= 500 => "api_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": t, "message": format!("mock injected {status}")}, "request_id": "req_mock"})
        } else {
            json!({"error": {"message": format!("mock injected {status}"), "type": if status == 429 { "rate_limit_exceeded" } else { "invalid_request_error" }, "param": null, "code": null}})
        };
        let extra: Vec<(&str, String)> = f
            .retry_after
            .map(|r| vec![("retry-after", r.to_string())])
            .unwrap_or_default();
        write_json(wr, status, &extra, &body.to_string()).await?;
        return Ok((status, true));
    }
    match f.fault.as_deref() {
        Some("close-before-response") => return Ok((0, false)),
        Some("invalid-json-200") => {
            wr.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"oops\": ").await?;
            return Ok((200, true));
        }
        _ => {}
    }
    if kind == Kind::Unknown {
        write_json(wr, 404, &[], &json!({"error": {"message": format!("mock: no route {} {path}", head.method), "type": "invalid_request_error", "param": null, "code": null}}).to_string()).await?;
        return Ok((404, true));
    }
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let model = req["model"].as_str().unwrap_or("mock-model").to_string();
    let ps = pieces(f);
    let (p_tokens, c_tokens) = f
        .usage
        .unwrap_or(((body.len() as u64 / 4).max(1), ps.len() as u64));
    match kind {
        Kind::CountTokens => {
            write_json(
                wr,
                200,
                &[],
                &json!({"input_tokens": (body.len() / 4).max(1)}).to_string(),
            )
            .await?;
            return Ok((200, true));
        }
        Kind::Models => {
            write_json(wr, 200, &[], &json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]}).to_string()).await?;
            return Ok((200, true));
        }
        Kind::Embeddings => {
            let n = match &req["input"] {
                Value::Array(a) => a.len(),
                _ => 1,
            };
            let data: Vec<Value> = (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]})).collect();
            write_json(wr, 200, &[], &json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": p_tokens, "total_tokens": p_tokens}}).to_string()).await?;
            return Ok((200, true));
        }
        Kind::Moderations => {
            write_json(wr, 200, &[], &json!({"id": "modr-mock", "model": model, "results": [{"flagged": false, "categories": {}, "category_scores": {}}]}).to_string()).await?;
            return Ok((200, true));
        }
        _ => {}
    }
    let (user_text, is_tool_result, tool_output) = last_user(&req, kind);
    let tool = if !is_tool_result && user_text.contains("CALL_TOOL") {
        first_tool(&req, kind)
    } else {
        None
    };
    let text_pieces: Vec<String> = if is_tool_result {
        vec![format!("Tool said: {tool_output}")]
    } else {
        ps
    };
    // `x-mock-ignore-stream`: answer in one JSON body even when a stream was asked for.
    let stream =
        req["stream"].as_bool().unwrap_or(false) && head.get("x-mock-ignore-stream").is_none();
    let events = match kind {
        Kind::Chat => chat_events(
            &req,
            &model,
            &text_pieces,
            tool.as_deref(),
            stream,
            p_tokens,
            c_tokens,
        ),
        Kind::Messages => anthropic_events(
            &model,
            &text_pieces,
            tool.as_deref(),
            stream,
            p_tokens,
            c_tokens,
        ),
        _ => responses_events(&model, &text_pieces, stream, p_tokens, c_tokens),
    };
    let Events::Stream(events) = events else {
        let Events::Json(v) = events else {
            unreachable!()
        };
        write_json(wr, 200, &[], &v.to_string()).await?;
        return Ok((200, true));
    };
    wr.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n").await?;
    let split = head.get("x-mock-split-writes") != Some("0");
    let delay = f.chunk_delay_ms.unwrap_or(0);
    let half = events.len() / 2;
    for (i, ev) in events.iter().enumerate() {
        if i > 0 && delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match f.fault.as_deref() {
            Some("reset-mid-stream") if i == half => {
                let sock = wr.as_ref();
                let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
                return Ok((200, false));
            }
            Some("truncate") if i == half => {
                wr.write_all(b"0\r\n\r\n").await?;
                return Ok((200, true));
            }
            Some("stall") if i == 1 => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Some("garbage-sse") if i == 1 => {
                write_chunk(wr, b"data: {this is not json\n\n", false).await?
            }
            Some("event-error") if i == 3 => {
                let e = if kind == Kind::Messages {
                    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"mock overloaded\"}}\n\n".to_string()
                } else {
                    "data: {\"error\":{\"message\":\"mock overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n".to_string()
                };
                write_chunk(wr, e.as_bytes(), false).await?;
                wr.write_all(b"0\r\n\r\n").await?;
                return Ok((200, true));
            }
            _ => {}
        }
        if f.fault.as_deref() == Some("slow-drip") {
            for b in ev.as_bytes() {
                write_chunk(wr, &[*b], false).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } else {
            write_chunk(wr, ev.as_bytes(), split).await?;
        }
    }
    wr.write_all(b"0\r\n\r\n").await?;
    wr.flush().await?;
    Ok((200, true))
}

/// Writes one chunk of a chunked body; `split` writes it in three TCP writes (mid-line and
/// mid-JSON) to exercise incremental parsers.
async fn write_chunk(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    data: &[u8],
    split: bool,
) -> std::io::Result<()> {
    if !split || data.len() < 16 {
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        return wr.write_all(&out).await;
    }
    let cuts = [0, 7, data.len() / 2, data.len()];
    for w in cuts.windows(2) {
        let part = &data[w[0]..w[1]];
        let mut out = format!("{:x}\r\n", part.len()).into_bytes();
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
        wr.write_all(&out).await?;
        wr.flush().await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

enum Events {
    Json(Value),
    Stream(Vec<String>),
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn arg_parts() -> Vec<String> {
    let a = TOOL_ARGS;
    vec![
        a[..10].to_string(),
        a[10..25].to_string(),
        a[25..].to_string(),
    ]
}

fn chat_events(
    req: &Value,
    model: &str,
    pieces: &[String],
    tool: Option<&str>,
    stream: bool,
    p: u64,
    c: u64,
) -> Events {
    let usage = json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c, "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}});
    let id = "chatcmpl-mock1";
    if !stream {
        let message = match tool {
            Some(name) => {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": TOOL_ARGS}}]})
            }
            None => json!({"role": "assistant", "content": pieces.concat()}),
        };
        return Events::Json(json!({
            "id": id, "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": if tool.is_some() { "tool_calls" } else { "stop" }, "logprobs": null}],
            "usage": usage,
        }));
    }
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        let mut v = json!({"id": id, "object": "chat.completion.chunk", "created": now(), "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if include_usage {
            v["usage"] = Value::Null;
        }
        format!("data: {v}\n\n")
    };
    let mut ev = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    match tool {
        Some(name) => {
            ev.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
            for part in arg_parts() {
                ev.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    Value::Null,
                ));
            }
            ev.push(chunk(json!({}), json!("tool_calls")));
        }
        None => {
            for p in pieces {
                ev.push(chunk(json!({"content": p}), Value::Null));
            }
            ev.push(chunk(json!({}), json!("stop")));
        }
    }
    if include_usage {
        ev.push(format!("data: {}\n\n", json!({"id": id, "object": "chat.completion.chunk", "created": now(), "model": model, "choices": [], "usage": usage})));
    }
    ev.push("data: [DONE]\n\n".to_string());
    Events::Stream(ev)
}

fn anthropic_events(
    model: &str,
    pieces: &[String],
    tool: Option<&str>,
    stream: bool,
    p: u64,
    c: u64,
) -> Events {
    let usage = json!({"input_tokens": p, "output_tokens": c, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    if !stream {
        let content = match tool {
            Some(name) => {
                json!([{"type": "text", "text": "I'll run it."}, {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": serde_json::from_str::<Value>(TOOL_ARGS).unwrap()}])
            }
            None => json!([{"type": "text", "text": pieces.concat()}]),
        };
        return Events::Json(json!({
            "id": "msg_mock1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null, "usage": usage,
        }));
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock1", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": p, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
        ),
        ev("ping", json!({"type": "ping"})),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    let text: Vec<String> = if tool.is_some() {
        vec!["I'll run it.".to_string()]
    } else {
        pieces.to_vec()
    };
    for t in &text {
        out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})));
    }
    out.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    if let Some(name) = tool {
        out.push(ev("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}}})));
        for part in arg_parts() {
            out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
        out.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    out.push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null}, "usage": {"output_tokens": c}})));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    Events::Stream(out)
}

fn responses_events(model: &str, pieces: &[String], stream: bool, p: u64, c: u64) -> Events {
    let text = pieces.concat();
    let item = json!({"type": "message", "id": "msg_mock1", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]});
    let usage = json!({"input_tokens": p, "output_tokens": c, "total_tokens": p + c, "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
    let resp = |status: &str, output: Value, usage: Value| json!({"id": "resp_mock1", "object": "response", "created_at": now(), "status": status, "model": model, "output": output, "usage": usage});
    if !stream {
        return Events::Json(resp("completed", json!([item]), usage));
    }
    let mut seq = 0u64;
    let mut ev = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        format!("event: {name}\ndata: {data}\n\n")
    };
    let mut out = vec![
        ev(
            "response.created",
            json!({"response": resp("in_progress", json!([]), Value::Null)}),
        ),
        ev(
            "response.in_progress",
            json!({"response": resp("in_progress", json!([]), Value::Null)}),
        ),
        ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": {"type": "message", "id": "msg_mock1", "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        ev(
            "response.content_part.added",
            json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
    ];
    for p in pieces {
        out.push(ev(
            "response.output_text.delta",
            json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "delta": p}),
        ));
    }
    out.push(ev(
        "response.output_text.done",
        json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "text": text}),
    ));
    out.push(ev("response.content_part.done", json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}})));
    out.push(ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    ));
    out.push(ev(
        "response.completed",
        json!({"response": resp("completed", json!([item]), usage)}),
    ));
    Events::Stream(out)
}
