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
    /// Apply (and count `times`) only on streamed requests: a client's retry without
    /// streaming, or its side requests, pass untouched.
    #[serde(default)]
    pub only_streams: bool,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<RecordedRequest>>,
    default_fault: Mutex<Option<Fault>>,
    log_file: Mutex<Option<std::fs::File>>,
    /// Model list requests (`GET .../models`, Gemini's `GET /v1beta/models`): kept apart
    /// from `log` so that a gateway's background discovery does not shift the requests
    /// other tests look at.
    list_log: Mutex<Vec<RecordedRequest>>,
    models: Mutex<ModelsControl>,
}

/// How the model list endpoints answer (`POST /__mock/models`, or [`MockServer::set_models`]).
/// The three formats: OpenAI `GET /v1/models` (one page), Anthropic `GET /v1/models` when
/// `anthropic-version` is sent (`limit`/`after_id` paging, `has_more`/`last_id`), Gemini
/// `GET /v1beta/models` (`pageSize`/`pageToken` paging, `nextPageToken`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ModelsControl {
    /// The next N list requests fail (each one counts down).
    pub fail: u32,
    /// Status of a failing answer (default 503); 0 closes the connection without an answer.
    pub status: Option<u16>,
    /// Delay before a failing answer (a slow provider).
    pub delay_ms: u64,
    /// Limit the failures to one format: `openai`, `anthropic` or `gemini`.
    pub format: Option<String>,
    /// Replace a format's model ids (the default lists are [`OPENAI_MODELS`],
    /// [`ANTHROPIC_MODELS`], [`GEMINI_MODELS`]).
    pub openai: Option<Vec<String>>,
    pub anthropic: Option<Vec<String>>,
    pub gemini: Option<Vec<String>>,
    /// Largest page for the paged formats (default 2 for Anthropic, 1 for Gemini, so that
    /// paging is always exercised).
    pub page_size: Option<usize>,
}

/// The OpenAI-format list: `(id, context_window)` (as Groq gives it; 0: not said).
pub const OPENAI_MODELS: &[(&str, u64)] = &[
    ("gpt-4.1", 0),
    ("gpt-4o-mini", 0),
    ("llama-3.3-70b-versatile", 131072),
    ("mock-model", 0),
    ("text-embedding-3-small", 0),
];
/// The Anthropic-format list: `(id, display_name, created_at)`.
pub const ANTHROPIC_MODELS: &[(&str, &str, &str)] = &[
    (
        "claude-haiku-4-5",
        "Claude Haiku 4.5",
        "2025-10-15T00:00:00Z",
    ),
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-05-01T00:00:00Z"),
    (
        "claude-sonnet-4-6",
        "Claude Sonnet 4.6",
        "2026-02-17T00:00:00Z",
    ),
];
/// The Gemini-format list: `(id, displayName, generation methods)`.
pub const GEMINI_MODELS: &[(&str, &str, &[&str])] = &[
    (
        "gemini-2.5-flash",
        "Gemini 2.5 Flash",
        &["generateContent", "countTokens"],
    ),
    (
        "gemini-2.5-pro",
        "Gemini 2.5 Pro",
        &["generateContent", "countTokens"],
    ),
    (
        "aqa",
        "Model that performs Attributed Question-Answering.",
        &["generateAnswer"],
    ),
    (
        "text-embedding-004",
        "Text Embedding 004",
        &["embedContent"],
    ),
];

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

    /// Model list requests received (not in [`MockServer::requests`]).
    pub fn list_requests(&self) -> Vec<RecordedRequest> {
        self.shared.list_log.lock().unwrap().clone()
    }

    /// How the model list endpoints answer from now on.
    pub fn set_models(&self, c: ModelsControl) {
        *self.shared.models.lock().unwrap() = c;
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
        only_streams: false,
    };
    let any = f.status.is_some()
        || f.delay_ms.is_some()
        || f.chunk_delay_ms.is_some()
        || f.pieces.is_some()
        || f.usage.is_some()
        || f.fault.is_some();
    any.then_some(f)
}

fn take_default(shared: &Shared, streamed: bool) -> Fault {
    let mut d = shared.default_fault.lock().unwrap();
    let Some(f) = d.clone() else {
        return Fault::default();
    };
    if f.only_streams && !streamed {
        return Fault::default();
    }
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
                ("GET", "/__mock/list-requests") => {
                    json!(shared
                        .list_log
                        .lock()
                        .unwrap()
                        .iter()
                        .map(RecordedRequest::log_json)
                        .collect::<Vec<_>>())
                }
                ("POST", "/__mock/models") => match serde_json::from_slice(&body) {
                    Ok(c) => {
                        *shared.models.lock().unwrap() = c;
                        json!({"ok": true})
                    }
                    Err(e) => json!({"error": e.to_string()}),
                },
                _ => json!({"error": "unknown control route"}),
            };
            write_json(&mut wr, 200, &[], &out.to_string()).await?;
            continue;
        }
        if let Some(format) = list_format(&head, &path) {
            let rec = RecordedRequest {
                method: head.method.clone(),
                path: path.clone(),
                query: query.clone(),
                headers: head.headers.clone(),
                body: body.clone(),
                chunked,
                received_at: Instant::now(),
                completed_at: None,
                status: 0,
            };
            let (status, keep) = list_models(&mut wr, &shared, format, query.as_deref()).await?;
            let rec = RecordedRequest {
                completed_at: Some(Instant::now()),
                status,
                ..rec
            };
            if let Some(f) = shared.log_file.lock().unwrap().as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{}", rec.log_json());
            }
            shared.list_log.lock().unwrap().push(rec);
            if !keep {
                return Ok(());
            }
            continue;
        }
        let fault = header_fault(&head)
            .unwrap_or_else(|| take_default(&shared, is_stream_request(&path, &body)));
        let idx = {
            let mut log = shared.log.lock().unwrap();
            log.push(RecordedRequest {
                method: head.method.clone(),
                path: path.clone(),
                query: query.clone(),
                headers: head.headers.clone(),
                body: body.clone(),
                chunked,
                received_at: Instant::now(),
                completed_at: None,
                status: 0,
            });
            log.len() - 1
        };
        let (status, keep) =
            respond(&mut wr, &head, &path, query.as_deref(), &body, &fault).await?;
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

/// The format of a model list request, if it is one: Gemini's `GET .../v1beta/models`, else
/// `GET .../models` (Anthropic when `anthropic-version` is sent, else OpenAI).
fn list_format(head: &Head, path: &str) -> Option<&'static str> {
    let p = path.trim_end_matches('/');
    if head.method != "GET" || !p.ends_with("/models") {
        return None;
    }
    Some(if p.ends_with("/v1beta/models") {
        "gemini"
    } else if head.get("anthropic-version").is_some() {
        "anthropic"
    } else {
        "openai"
    })
}

/// The value of `name` in a query string (not decoded: the mock's cursors need none).
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// Answers a model list request from [`ModelsControl`]; returns (status, keep-alive).
async fn list_models(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    format: &str,
    query: Option<&str>,
) -> std::io::Result<(u16, bool)> {
    let (fail, c) = {
        let mut c = shared.models.lock().unwrap();
        let applies = c.format.as_deref().is_none_or(|f| f == format);
        let fail = applies && c.fail > 0;
        if fail {
            c.fail -= 1;
        }
        (fail, c.clone())
    };
    if fail {
        tokio::time::sleep(Duration::from_millis(c.delay_ms)).await;
        let status = c.status.unwrap_or(503);
        if status == 0 {
            return Ok((0, false));
        }
        let body = match format {
            "gemini" => gemini_error(status, "mock injected list failure"),
            "anthropic" => {
                json!({"type": "error", "error": {"type": "api_error", "message": "mock injected list failure"}})
            }
            _ => {
                json!({"error": {"message": "mock injected list failure", "type": "server_error", "param": null, "code": null}})
            }
        };
        write_json(wr, status, &[], &body.to_string()).await?;
        return Ok((status, true));
    }
    let ids = |custom: &Option<Vec<String>>, default: Vec<&str>| -> Vec<String> {
        custom
            .clone()
            .unwrap_or_else(|| default.into_iter().map(String::from).collect())
    };
    let body = match format {
        "openai" => {
            let data: Vec<Value> = ids(&c.openai, OPENAI_MODELS.iter().map(|m| m.0).collect())
                .iter()
                .map(|id| {
                    let mut m = json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock"});
                    if let Some((_, cw)) = OPENAI_MODELS.iter().find(|m| m.0 == id).filter(|m| m.1 > 0) {
                        m["context_window"] = json!(cw);
                    }
                    m
                })
                .collect();
            json!({"object": "list", "data": data})
        }
        "anthropic" => {
            let all = ids(&c.anthropic, ANTHROPIC_MODELS.iter().map(|m| m.0).collect());
            let size = query_param(query, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(20)
                .min(c.page_size.unwrap_or(2))
                .max(1);
            let start = match query_param(query, "after_id") {
                Some(after) => all
                    .iter()
                    .position(|id| id == after)
                    .map_or(all.len(), |i| i + 1),
                None => 0,
            };
            let page = &all[start.min(all.len())..(start + size).min(all.len())];
            let data: Vec<Value> = page
                .iter()
                .map(|id| {
                    let (display, created) = ANTHROPIC_MODELS
                        .iter()
                        .find(|m| m.0 == id)
                        .map_or((id.as_str(), "2025-01-01T00:00:00Z"), |m| (m.1, m.2));
                    json!({"type": "model", "id": id, "display_name": display, "created_at": created})
                })
                .collect();
            json!({"data": data, "has_more": start + size < all.len(), "first_id": page.first(), "last_id": page.last()})
        }
        _ => {
            let all = ids(&c.gemini, GEMINI_MODELS.iter().map(|m| m.0).collect());
            let size = query_param(query, "pageSize")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(50)
                .min(c.page_size.unwrap_or(1))
                .max(1);
            // The page token is the index of the page's first model, disguised.
            let start = query_param(query, "pageToken")
                .and_then(|t| t.strip_prefix("page-"))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            let end = (start + size).min(all.len());
            let models: Vec<Value> = all[start.min(end)..end]
                .iter()
                .map(|id| {
                    let (display, methods) = GEMINI_MODELS
                        .iter()
                        .find(|m| m.0 == id)
                        .map_or((id.as_str(), &["generateContent"][..]), |m| (m.1, m.2));
                    let mut m = gemini_model_info(id, display);
                    m["supportedGenerationMethods"] = json!(methods);
                    m
                })
                .collect();
            let mut v = json!({"models": models});
            if end < all.len() {
                v["nextPageToken"] = json!(format!("page-{end}"));
            }
            v
        }
    };
    write_json(wr, 200, &[], &body.to_string()).await?;
    Ok((200, true))
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
    /// Gemini `POST .../models/{m}:generateContent`.
    GeminiGenerate,
    /// Gemini `POST .../models/{m}:streamGenerateContent` (`?alt=sse`: SSE, else a JSON array).
    GeminiStream,
    /// Gemini `POST .../models/{m}:countTokens`.
    GeminiCount,
    /// Gemini `GET /v1beta/models`.
    GeminiModels,
    /// Gemini `GET /v1beta/models/{m}`.
    GeminiModel,
    Unknown,
}

impl Kind {
    fn is_gemini(self) -> bool {
        matches!(
            self,
            Kind::GeminiGenerate
                | Kind::GeminiStream
                | Kind::GeminiCount
                | Kind::GeminiModels
                | Kind::GeminiModel
        )
    }
}

/// `(model, action)` from a Gemini path `.../models/{model}:{action}` (the query is already
/// split off); `action` is empty when there is no `:`.
fn gemini_model(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind("/models/")?;
    let rest = &path[i + "/models/".len()..];
    Some(rest.split_once(':').unwrap_or((rest, "")))
}

fn kind_of(method: &str, path: &str) -> Kind {
    let p = path.trim_end_matches('/');
    if let Some((model, action)) = gemini_model(p) {
        match (method, action) {
            ("POST", "generateContent") => return Kind::GeminiGenerate,
            ("POST", "streamGenerateContent") => return Kind::GeminiStream,
            ("POST", "countTokens") => return Kind::GeminiCount,
            ("GET", "") if p.contains("/v1beta/") && !model.is_empty() => return Kind::GeminiModel,
            _ => {}
        }
    }
    match method {
        "GET" if p.ends_with("/v1beta/models") => Kind::GeminiModels,
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

/// Whether a request asks for a streamed answer (Gemini by path, the others by `stream`).
fn is_stream_request(path: &str, body: &[u8]) -> bool {
    path.contains(":streamGenerateContent")
        || serde_json::from_slice::<Value>(body)
            .is_ok_and(|v| v["stream"].as_bool().unwrap_or(false))
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

/// `last_user` for the Responses API: the last item of `input` that is not a `system` or
/// `developer` message.
fn responses_last(req: &Value) -> (String, bool, String) {
    let none = || (String::new(), false, String::new());
    let items = match &req["input"] {
        Value::String(s) => return (s.clone(), false, String::new()),
        Value::Array(a) => a,
        _ => return none(),
    };
    let Some(last) = items
        .iter()
        .rev()
        .find(|it| !matches!(it["role"].as_str(), Some("system" | "developer")))
    else {
        return none();
    };
    let text_of = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|x| x["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    match last["type"].as_str() {
        Some("function_call_output" | "custom_tool_call_output") => {
            (String::new(), true, text_of(&last["output"]))
        }
        Some("message") | None => (text_of(&last["content"]), false, String::new()),
        _ => none(),
    }
}

/// `last_user` for Gemini: the last turn of `contents`; a `functionResponse` part in it is a
/// tool result (its `result`/`output` string field, else its `response` as compact JSON).
fn gemini_last(req: &Value) -> (String, bool, String) {
    let Some(last) = req["contents"].as_array().and_then(|c| c.last()) else {
        return (String::new(), false, String::new());
    };
    let parts = last["parts"].as_array().cloned().unwrap_or_default();
    if let Some(fr) = parts.iter().rev().find_map(|p| p.get("functionResponse")) {
        let r = &fr["response"];
        let out = r["result"]
            .as_str()
            .or(r["output"].as_str())
            .map(String::from)
            .unwrap_or_else(|| r.to_string());
        return (String::new(), true, out);
    }
    let text = parts
        .iter()
        .filter(|p| p["thought"] != true)
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("");
    (text, false, String::new())
}

/// The tool to call: a shell tool when one is declared (Claude Code's `Bash`, Codex's
/// `exec_command`), else the first with a name (Responses built-ins such as `web_search`
/// have none).
fn first_tool(req: &Value, kind: Kind) -> Option<String> {
    let tools = req["tools"].as_array()?;
    let names: Vec<String> = if kind.is_gemini() {
        tools
            .iter()
            .filter_map(|t| {
                t["functionDeclarations"]
                    .as_array()
                    .or(t["function_declarations"].as_array())
            })
            .flatten()
            .filter_map(|d| d["name"].as_str().map(String::from))
            .collect()
    } else {
        tools
            .iter()
            .filter_map(|t| {
                let n = if kind == Kind::Chat {
                    t["function"]["name"].as_str().or(t["name"].as_str())
                } else {
                    t["name"].as_str()
                };
                n.map(String::from)
            })
            .collect()
    };
    names
        .iter()
        .find(|n| *n == "Bash" || *n == "exec_command")
        .or(names.first())
        .cloned()
}

const TOOL_ARGS: &str = "{\"command\":\"echo hello-from-mock-tool\"}";
/// Codex's `exec_command` takes `cmd`, not `command`.
const EXEC_ARGS: &str = "{\"cmd\":\"echo hello-from-mock-tool\"}";

/// The JSON arguments the mock calls `name` with.
fn tool_args(name: &str) -> &'static str {
    if name == "exec_command" {
        EXEC_ARGS
    } else {
        TOOL_ARGS
    }
}

/// Gemini's error `status` for an HTTP status.
fn gemini_status(status: u16) -> &'static str {
    match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

fn gemini_error(code: u16, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": gemini_status(code)}})
}

async fn respond(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    head: &Head,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    f: &Fault,
) -> std::io::Result<(u16, bool)> {
    let kind = kind_of(&head.method, path);
    if let Some(ms) = f.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let is_anthropic = matches!(kind, Kind::Messages | Kind::CountTokens);
    let is_gemini = kind.is_gemini() || path.contains("/v1beta/");
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
        } else if is_gemini {
            gemini_error(status, &format!("mock injected {status}"))
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
        let message = format!("mock: no route {} {path}", head.method);
        let body = if is_gemini {
            gemini_error(404, &message)
        } else {
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
        };
        write_json(wr, 404, &[], &body.to_string()).await?;
        return Ok((404, true));
    }
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let model = if is_gemini {
        gemini_model(path).map(|(m, _)| m).unwrap_or("gemini-mock")
    } else {
        req["model"].as_str().unwrap_or("mock-model")
    }
    .to_string();
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
        Kind::GeminiCount => {
            write_json(
                wr,
                200,
                &[],
                &json!({"totalTokens": (body.len() / 4).max(1)}).to_string(),
            )
            .await?;
            return Ok((200, true));
        }
        Kind::Models => {
            write_json(wr, 200, &[], &json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]}).to_string()).await?;
            return Ok((200, true));
        }
        Kind::GeminiModels => {
            let m = gemini_model_info("gemini-2.5-flash", "Gemini 2.5 Flash");
            write_json(wr, 200, &[], &json!({"models": [m]}).to_string()).await?;
            return Ok((200, true));
        }
        Kind::GeminiModel => {
            write_json(wr, 200, &[], &gemini_model_info(&model, &model).to_string()).await?;
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
    let (user_text, is_tool_result, tool_output) = match kind {
        Kind::Responses => responses_last(&req),
        k if k.is_gemini() => gemini_last(&req),
        _ => last_user(&req, kind),
    };
    // Gemini-only triggers.
    let blocked = is_gemini && !is_tool_result && user_text.contains("BLOCK_ME");
    let tool = if !is_tool_result && !blocked && user_text.contains("CALL_TOOL") {
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
    let stream = if is_gemini {
        kind == Kind::GeminiStream
    } else {
        req["stream"].as_bool().unwrap_or(false)
    } && head.get("x-mock-ignore-stream").is_none();
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
        Kind::Responses => responses_events(
            &req,
            &model,
            &text_pieces,
            tool.as_deref(),
            stream,
            p_tokens,
            c_tokens,
        ),
        _ => gemini_events(
            &model,
            &text_pieces,
            tool.as_deref(),
            GeminiOpts {
                think: !is_tool_result && user_text.contains("THINK"),
                blocked,
                safety_stop: tool.is_none() && !is_tool_result && user_text.contains("SAFETY_STOP"),
                ids: head.get("x-mock-gemini-ids").is_some(),
            },
            stream,
            p_tokens,
            c_tokens,
        ),
    };
    // Gemini streams are SSE only with `alt=sse`; without it, a streamed JSON array.
    let gemini_sse = query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    let (content_type, events) = match events {
        Events::Json(v) => {
            write_json(wr, 200, &[], &v.to_string()).await?;
            return Ok((200, true));
        }
        Events::Stream(events) => ("text/event-stream", events),
        // Real Gemini ends its SSE lines with CRLF.
        Events::Chunks(chunks) if gemini_sse => (
            "text/event-stream",
            chunks
                .iter()
                .map(|c| format!("data: {c}\r\n\r\n"))
                .collect(),
        ),
        Events::Chunks(chunks) => {
            let mut ev: Vec<String> = chunks
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{}{c}", if i == 0 { "[" } else { ",\r\n" }))
                .collect();
            ev.push("]".to_string());
            ("application/json", ev)
        }
    };
    wr.write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n").as_bytes()).await?;
    let split = head.get("x-mock-split-writes") != Some("0");
    let delay = f.chunk_delay_ms.unwrap_or(0);
    let half = events.len() / 2;
    // Gemini streams can be a single chunk: fail at the last one at the latest.
    let error_at = if is_gemini {
        3.min(events.len().saturating_sub(1))
    } else {
        3
    };
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
            Some("event-error") if i == error_at => {
                let e = match kind {
                    Kind::Messages => "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"mock overloaded\"}}\n\n".to_string(),
                    Kind::Responses => {
                        let data = json!({"type": "response.failed", "sequence_number": i, "response": {"id": "resp_mock1", "object": "response", "created_at": now(), "status": "failed", "model": model, "output": [], "usage": null, "incomplete_details": null, "error": {"code": "server_error", "message": "mock overloaded"}}});
                        format!("event: response.failed\ndata: {data}\n\n")
                    }
                    _ if is_gemini => {
                        let data = gemini_error(503, "mock overloaded");
                        if gemini_sse {
                            format!("data: {data}\r\n\r\n")
                        } else {
                            format!("{}{data}]", if i == 0 { "[" } else { ",\r\n" })
                        }
                    }
                    _ => "data: {\"error\":{\"message\":\"mock overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n".to_string(),
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
    /// Framed SSE events.
    Stream(Vec<String>),
    /// Gemini stream chunks, framed by the caller (SSE or JSON array).
    Chunks(Vec<Value>),
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The arguments in three pieces (as a streamed tool call delivers them).
fn arg_parts(a: &str) -> Vec<String> {
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
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock_1", "type": "function", "function": {"name": name, "arguments": tool_args(name)}}]})
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
            for part in arg_parts(tool_args(name)) {
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
                json!([{"type": "text", "text": "I'll run it."}, {"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": serde_json::from_str::<Value>(tool_args(name)).unwrap()}])
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
        for part in arg_parts(tool_args(name)) {
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

fn responses_events(
    req: &Value,
    model: &str,
    pieces: &[String],
    tool: Option<&str>,
    stream: bool,
    p: u64,
    c: u64,
) -> Events {
    let text = pieces.concat();
    let (item, item_added) = match tool {
        Some(name) => (
            json!({"type": "function_call", "id": "fc_mock1", "call_id": "call_mock1", "name": name, "arguments": tool_args(name), "status": "completed"}),
            json!({"type": "function_call", "id": "fc_mock1", "call_id": "call_mock1", "name": name, "arguments": "", "status": "in_progress"}),
        ),
        None => (
            json!({"type": "message", "id": "msg_mock1", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}),
            json!({"type": "message", "id": "msg_mock1", "status": "in_progress", "role": "assistant", "content": []}),
        ),
    };
    let usage = json!({"input_tokens": p, "output_tokens": c, "total_tokens": p + c, "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
    let resp = |status: &str, output: Value, usage: Value| {
        json!({
            "id": "resp_mock1", "object": "response", "created_at": now(), "status": status,
            "model": model, "output": output, "usage": usage, "error": null,
            "incomplete_details": null,
            "instructions": req.get("instructions").cloned().unwrap_or(Value::Null),
            "tools": req.get("tools").cloned().unwrap_or(json!([])),
            "tool_choice": req.get("tool_choice").cloned().unwrap_or(json!("auto")),
            "parallel_tool_calls": req.get("parallel_tool_calls").cloned().unwrap_or(json!(true)),
            "store": req.get("store").cloned().unwrap_or(json!(false)),
            "metadata": {},
        })
    };
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
            json!({"output_index": 0, "item": item_added}),
        ),
    ];
    match tool {
        Some(name) => {
            let args = tool_args(name);
            for part in arg_parts(args) {
                out.push(ev(
                    "response.function_call_arguments.delta",
                    json!({"item_id": "fc_mock1", "output_index": 0, "delta": part}),
                ));
            }
            out.push(ev(
                "response.function_call_arguments.done",
                json!({"item_id": "fc_mock1", "output_index": 0, "arguments": args}),
            ));
        }
        None => {
            out.push(ev("response.content_part.added", json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})));
            for p in pieces {
                out.push(ev(
                    "response.output_text.delta",
                    json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "delta": p, "logprobs": []}),
                ));
            }
            out.push(ev(
                "response.output_text.done",
                json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            ));
            out.push(ev("response.content_part.done", json!({"item_id": "msg_mock1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}})));
        }
    }
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

fn gemini_model_info(id: &str, display: &str) -> Value {
    json!({
        "name": format!("models/{id}"), "displayName": display, "version": "001",
        "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    })
}

/// Gemini triggers, from the last user text and the request headers.
struct GeminiOpts {
    /// `THINK`: a `thought:true` part before the answer.
    think: bool,
    /// `BLOCK_ME`: no candidates, `promptFeedback.blockReason:"SAFETY"`.
    blocked: bool,
    /// `SAFETY_STOP`: some text, then `finishReason:"SAFETY"`.
    safety_stop: bool,
    /// `x-mock-gemini-ids`: put an `id` in `functionCall` parts (Gemini 2.5 omits it).
    ids: bool,
}

/// Thought tokens reported (`thoughtsTokenCount`, outside `candidatesTokenCount`) with `THINK`.
const THOUGHT_TOKENS: u64 = 5;

fn gemini_events(
    model: &str,
    pieces: &[String],
    tool: Option<&str>,
    o: GeminiOpts,
    stream: bool,
    p: u64,
    c: u64,
) -> Events {
    let thoughts = if o.think { THOUGHT_TOKENS } else { 0 };
    let mut usage = json!({"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c + thoughts, "cachedContentTokenCount": 0});
    if o.think {
        usage["thoughtsTokenCount"] = json!(thoughts);
    }
    let partial_usage = json!({"promptTokenCount": p, "totalTokenCount": p});
    let envelope = |candidate: Option<Value>, usage: Option<&Value>| {
        let mut v = json!({"modelVersion": model, "responseId": "mock-resp-1"});
        if let Some(c) = candidate {
            v["candidates"] = json!([c]);
        }
        if let Some(u) = usage {
            v["usageMetadata"] = u.clone();
        }
        v
    };
    let candidate = |parts: Vec<Value>, finish: Option<&str>| {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        c
    };
    let blocked_ratings = json!([{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]);
    if o.blocked {
        let mut v = envelope(None, Some(&partial_usage));
        v["promptFeedback"] = json!({"blockReason": "SAFETY", "safetyRatings": blocked_ratings});
        return if stream {
            Events::Chunks(vec![v])
        } else {
            Events::Json(v)
        };
    }
    let thought = json!({"text": "pondering", "thought": true});
    let call = tool.map(|name| {
        let args: Value = serde_json::from_str(tool_args(name)).unwrap();
        let mut fc = json!({"name": name, "args": args});
        if o.ids {
            fc["id"] = json!("call_mock1");
        }
        let mut part = json!({"functionCall": fc});
        if o.think {
            part["thoughtSignature"] = json!("bW9jay10aG91Z2h0LXNpZ25hdHVyZQ==");
        }
        part
    });
    let texts: Vec<String> = if o.safety_stop {
        pieces.iter().take(2).cloned().collect()
    } else {
        pieces.to_vec()
    };
    if !stream {
        let mut parts = Vec::new();
        if o.think {
            parts.push(thought);
        }
        match call {
            Some(cp) => parts.push(cp),
            None if !texts.is_empty() => parts.push(json!({"text": texts.concat()})),
            None => {}
        }
        let mut cand = candidate(parts, Some(if o.safety_stop { "SAFETY" } else { "STOP" }));
        if o.safety_stop {
            cand["safetyRatings"] = blocked_ratings;
        }
        return Events::Json(envelope(Some(cand), Some(&usage)));
    }
    let mut chunks: Vec<Vec<Value>> = Vec::new();
    if o.think {
        chunks.push(vec![thought]);
    }
    match call {
        // A function call arrives whole, never split.
        Some(cp) => chunks.push(vec![cp]),
        None => chunks.extend(texts.iter().map(|t| vec![json!({"text": t})])),
    }
    let n = chunks.len();
    let mut out: Vec<Value> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, parts)| {
            let last = i + 1 == n && !o.safety_stop;
            let u = if last {
                Some(&usage)
            } else if i == 0 {
                Some(&partial_usage)
            } else {
                None
            };
            envelope(Some(candidate(parts, last.then_some("STOP"))), u)
        })
        .collect();
    if o.safety_stop {
        // Like real Gemini: the stopping chunk has no content.
        out.push(envelope(
            Some(json!({"finishReason": "SAFETY", "index": 0, "safetyRatings": blocked_ratings})),
            Some(&usage),
        ));
    } else if n == 0 {
        out.push(envelope(
            Some(candidate(vec![], Some("STOP"))),
            Some(&usage),
        ));
    }
    Events::Chunks(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_str(&self.body).expect("json body")
        }

        /// `(event name, data)` of each SSE event (CRLF or LF).
        fn sse(&self) -> Vec<(Option<String>, Value)> {
            let body = self.body.replace("\r\n", "\n");
            body.split("\n\n")
                .filter(|e| !e.trim().is_empty())
                .map(|e| {
                    let mut name = None;
                    let mut data = String::new();
                    for l in e.lines() {
                        if let Some(v) = l.strip_prefix("event: ") {
                            name = Some(v.to_string());
                        } else if let Some(v) = l.strip_prefix("data: ") {
                            data.push_str(v);
                        }
                    }
                    (name, serde_json::from_str(&data).expect("event json"))
                })
                .collect()
        }
    }

    async fn call(
        m: &MockServer,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Resp {
        let sock = TcpStream::connect(m.addr).await.unwrap();
        let (rd, mut wr) = sock.into_split();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        wr.write_all(req.as_bytes()).await.unwrap();
        let mut r = BufReader::new(rd);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l).await.unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut out = Vec::new();
        if get("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let mut l = String::new();
                r.read_line(&mut l).await.unwrap();
                let n = usize::from_str_radix(l.trim(), 16).unwrap();
                if n == 0 {
                    break;
                }
                let start = out.len();
                out.resize(start + n, 0);
                r.read_exact(&mut out[start..]).await.unwrap();
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf).await.unwrap();
            }
        } else {
            let n: usize = get("content-length").unwrap().parse().unwrap();
            out.resize(n, 0);
            r.read_exact(&mut out).await.unwrap();
        }
        Resp {
            status,
            headers,
            body: String::from_utf8(out).unwrap(),
        }
    }

    async fn post(m: &MockServer, target: &str, hs: &[(&str, &str)], body: Value) -> Resp {
        call(m, "POST", target, hs, Some(body)).await
    }

    fn types(events: &[(Option<String>, Value)]) -> Vec<String> {
        events
            .iter()
            .map(|(_, d)| d["type"].as_str().unwrap().to_string())
            .collect()
    }

    // ---------- Responses ----------

    #[tokio::test]
    async fn responses_plain_string_input() {
        let m = MockServer::start().await;
        let r = post(
            &m,
            "/v1/responses",
            &[],
            json!({"model": "gpt-x", "input": "hi"}),
        )
        .await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["output"][0]["type"], "message");
        assert_eq!(v["output"][0]["content"][0]["text"], TEXT);
        assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 0);
        assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 0);
    }

    #[tokio::test]
    async fn responses_stream_text_grammar() {
        let m = MockServer::start().await;
        let r = post(
            &m,
            "/v1/responses",
            &[],
            json!({"model": "gpt-x", "stream": true, "input": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let ev = r.sse();
        for (i, (name, d)) in ev.iter().enumerate() {
            assert_eq!(name.as_deref(), d["type"].as_str());
            assert_eq!(d["sequence_number"], i as u64);
        }
        let t = types(&ev);
        assert_eq!(
            t[..5],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta"
            ]
        );
        assert_eq!(
            t[t.len() - 4..],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let text: String = ev
            .iter()
            .filter(|(_, d)| d["type"] == "response.output_text.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, TEXT);
        let done = &ev.last().unwrap().1["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], TEXT);
        let u = &done["usage"];
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
        );
    }

    #[tokio::test]
    async fn responses_stream_tool_call_prefers_exec_command() {
        let m = MockServer::start().await;
        let body = json!({"model": "gpt-x", "stream": true,
            "tools": [{"type": "web_search"}, {"type": "function", "name": "apply_patch", "parameters": {}},
                      {"type": "function", "name": "exec_command", "parameters": {}}],
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be nice"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "CALL_TOOL now"}]},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "trailing"}]}]});
        let ev = post(&m, "/v1/responses", &[], body).await.sse();
        let t = types(&ev);
        assert_eq!(
            t.iter()
                .filter(|t| *t == "response.function_call_arguments.delta")
                .count(),
            3
        );
        assert!(t.contains(&"response.function_call_arguments.done".to_string()));
        assert!(!t.iter().any(|t| t.starts_with("response.output_text")));
        let added = &ev[2].1["item"];
        assert_eq!(added["status"], "in_progress");
        assert_eq!(added["arguments"], "");
        let args: String = ev
            .iter()
            .filter(|(_, d)| d["type"] == "response.function_call_arguments.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(args, EXEC_ARGS);
        let done = ev
            .iter()
            .find(|(_, d)| d["type"] == "response.output_item.done")
            .unwrap();
        assert_eq!(
            done.1["item"],
            json!({"type": "function_call", "id": "fc_mock1", "call_id": "call_mock1", "name": "exec_command", "arguments": EXEC_ARGS, "status": "completed"})
        );
        let completed = &ev.last().unwrap().1["response"];
        assert_eq!(completed["output"][0], done.1["item"]);
        assert_eq!(completed["status"], "completed");
    }

    #[tokio::test]
    async fn responses_non_stream_tool_call_other_tool() {
        let m = MockServer::start().await;
        let body = json!({"model": "gpt-x", "input": "CALL_TOOL",
            "tools": [{"type": "web_search"}, {"type": "function", "name": "lookup", "parameters": {}}]});
        let v = post(&m, "/v1/responses", &[], body).await.json();
        assert_eq!(v["output"][0]["type"], "function_call");
        assert_eq!(v["output"][0]["name"], "lookup");
        assert_eq!(v["output"][0]["arguments"], TOOL_ARGS);
        // No tools: plain text.
        let v = post(
            &m,
            "/v1/responses",
            &[],
            json!({"model": "gpt-x", "input": "CALL_TOOL"}),
        )
        .await
        .json();
        assert_eq!(v["output"][0]["type"], "message");
    }

    #[tokio::test]
    async fn responses_function_call_output() {
        let m = MockServer::start().await;
        let history = |output: Value| {
            json!({"model": "gpt-x", "input": [
                {"role": "user", "content": "CALL_TOOL"},
                {"type": "function_call", "call_id": "call_mock1", "name": "exec_command", "arguments": EXEC_ARGS},
                {"type": "function_call_output", "call_id": "call_mock1", "output": output},
                {"role": "developer", "content": "trailing"}]})
        };
        let v = post(
            &m,
            "/v1/responses",
            &[],
            history(json!("hello-from-mock-tool")),
        )
        .await
        .json();
        assert_eq!(
            v["output"][0]["content"][0]["text"],
            "Tool said: hello-from-mock-tool"
        );
        let parts =
            json!([{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]);
        let v = post(&m, "/v1/responses", &[], history(parts)).await.json();
        assert_eq!(v["output"][0]["content"][0]["text"], "Tool said: ab");
    }

    #[tokio::test]
    async fn responses_event_error_is_response_failed() {
        let m = MockServer::start().await;
        let r = post(
            &m,
            "/v1/responses",
            &[("x-mock-fault", "event-error")],
            json!({"model": "gpt-x", "stream": true, "input": "hi"}),
        )
        .await;
        let ev = r.sse();
        let (name, last) = ev.last().unwrap();
        assert_eq!(name.as_deref(), Some("response.failed"));
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["status"], "failed");
        assert_eq!(
            last["response"]["error"],
            json!({"code": "server_error", "message": "mock overloaded"})
        );
        assert_eq!(last["sequence_number"], (ev.len() - 1) as u64);
        // Status faults keep the OpenAI envelope.
        let r = post(
            &m,
            "/v1/responses",
            &[("x-mock-status", "429")],
            json!({"input": "hi"}),
        )
        .await;
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["error"]["type"], "rate_limit_exceeded");
    }

    #[tokio::test]
    async fn chat_and_anthropic_exec_command_args() {
        let m = MockServer::start().await;
        let v = post(
            &m,
            "/v1/chat/completions",
            &[],
            json!({"model": "x",
            "tools": [{"type": "function", "function": {"name": "exec_command", "parameters": {}}}],
            "messages": [{"role": "user", "content": "CALL_TOOL"}]}),
        )
        .await
        .json();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            EXEC_ARGS
        );
        let v = post(
            &m,
            "/v1/messages",
            &[],
            json!({"model": "x", "max_tokens": 10,
            "tools": [{"name": "exec_command", "input_schema": {}}],
            "messages": [{"role": "user", "content": "CALL_TOOL"}]}),
        )
        .await
        .json();
        assert_eq!(
            v["content"][1]["input"],
            json!({"cmd": "echo hello-from-mock-tool"})
        );
        let v = post(
            &m,
            "/v1/messages",
            &[],
            json!({"model": "x", "max_tokens": 10,
            "tools": [{"name": "Bash", "input_schema": {}}],
            "messages": [{"role": "user", "content": "CALL_TOOL"}]}),
        )
        .await
        .json();
        assert_eq!(
            v["content"][1]["input"],
            json!({"command": "echo hello-from-mock-tool"})
        );
    }

    // ---------- Gemini ----------

    const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
    const STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";

    fn gemini_req(text: &str) -> Value {
        json!({"systemInstruction": {"parts": [{"text": "sys"}]},
               "contents": [{"role": "user", "parts": [{"text": text}]}]})
    }

    fn gemini_text(chunks: &[Value]) -> String {
        chunks
            .iter()
            .flat_map(|c| {
                c["candidates"][0]["content"]["parts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|p| p["thought"] != true)
            .filter_map(|p| p["text"].as_str().map(String::from))
            .collect()
    }

    #[tokio::test]
    async fn gemini_generate_text() {
        let m = MockServer::start().await;
        let r = post(&m, GEN, &[("x-goog-api-key", "g-key")], gemini_req("hi")).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["modelVersion"], "gemini-2.5-flash");
        assert_eq!(v["responseId"], "mock-resp-1");
        let c = &v["candidates"][0];
        assert_eq!(c["content"]["role"], "model");
        assert_eq!(c["content"]["parts"][0]["text"], TEXT);
        assert_eq!(c["finishReason"], "STOP");
        let u = &v["usageMetadata"];
        assert_eq!(u["cachedContentTokenCount"], 0);
        assert!(u.get("thoughtsTokenCount").is_none());
        assert_eq!(
            u["totalTokenCount"].as_u64().unwrap(),
            u["promptTokenCount"].as_u64().unwrap() + u["candidatesTokenCount"].as_u64().unwrap()
        );
        let rec = m.requests().pop().unwrap();
        assert_eq!(rec.header("x-goog-api-key"), Some("g-key"));
        assert_eq!(rec.path, GEN);
    }

    #[tokio::test]
    async fn gemini_stream_sse() {
        let m = MockServer::start().await;
        let r = post(&m, STREAM, &[], gemini_req("hi")).await;
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        assert!(!r.body.contains("[DONE]"));
        assert!(r.body.contains("\r\n\r\n"));
        let ev: Vec<Value> = r
            .sse()
            .into_iter()
            .map(|(n, d)| {
                assert!(n.is_none());
                d
            })
            .collect();
        assert!(ev.len() > 2);
        assert_eq!(gemini_text(&ev), TEXT);
        for (i, c) in ev.iter().enumerate() {
            assert_eq!(c["modelVersion"], "gemini-2.5-flash");
            assert_eq!(c["candidates"][0]["index"], 0);
            let last = i + 1 == ev.len();
            assert_eq!(c["candidates"][0].get("finishReason").is_some(), last);
        }
        assert_eq!(
            ev[0]["usageMetadata"]["totalTokenCount"],
            ev[0]["usageMetadata"]["promptTokenCount"]
        );
        let u = &ev.last().unwrap()["usageMetadata"];
        assert_eq!(ev.last().unwrap()["candidates"][0]["finishReason"], "STOP");
        assert!(u["candidatesTokenCount"].as_u64().unwrap() > 0);
        let rec = m.requests().pop().unwrap();
        assert_eq!(
            rec.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        );
        assert_eq!(rec.query.as_deref(), Some("alt=sse"));
    }

    #[tokio::test]
    async fn gemini_stream_without_alt_sse_is_json_array() {
        let m = MockServer::start().await;
        let r = post(
            &m,
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            &[],
            gemini_req("hi"),
        )
        .await;
        assert_eq!(r.header("content-type"), Some("application/json"));
        let arr = r.json();
        let arr = arr.as_array().unwrap();
        assert_eq!(gemini_text(arr), TEXT);
        assert_eq!(arr[0]["modelVersion"], "gemini-2.5-pro");
    }

    #[tokio::test]
    async fn gemini_function_call() {
        let m = MockServer::start().await;
        let mut body = gemini_req("CALL_TOOL please");
        body["tools"] = json!([{"functionDeclarations": [{"name": "read_file"}, {"name": "Bash", "parameters": {}}]}]);
        let ev: Vec<Value> = post(&m, STREAM, &[], body.clone())
            .await
            .sse()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(ev.len(), 1);
        let c = &ev[0]["candidates"][0];
        assert_eq!(c["finishReason"], "STOP");
        assert_eq!(
            c["content"]["parts"][0]["functionCall"],
            json!({"name": "Bash", "args": {"command": "echo hello-from-mock-tool"}})
        );
        assert!(ev[0]["usageMetadata"]["candidatesTokenCount"].is_u64());
        // Non-streamed, with ids asked for, and exec_command's argument rule.
        body["tools"] = json!([{"functionDeclarations": [{"name": "exec_command"}]}]);
        let v = post(&m, GEN, &[("x-mock-gemini-ids", "1")], body)
            .await
            .json();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["functionCall"],
            json!({"id": "call_mock1", "name": "exec_command", "args": {"cmd": "echo hello-from-mock-tool"}})
        );
    }

    #[tokio::test]
    async fn gemini_function_response() {
        let m = MockServer::start().await;
        let turn = |response: Value| {
            json!({"contents": [
                {"role": "user", "parts": [{"text": "CALL_TOOL"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "Bash", "args": {"command": "x"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "Bash", "response": response}}]}]})
        };
        let v = post(
            &m,
            GEN,
            &[],
            turn(json!({"result": "hello-from-mock-tool"})),
        )
        .await
        .json();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            "Tool said: hello-from-mock-tool"
        );
        let v = post(&m, GEN, &[], turn(json!({"output": "out"})))
            .await
            .json();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"],
            "Tool said: out"
        );
        let ev: Vec<Value> = post(&m, STREAM, &[], turn(json!({"a": 1})))
            .await
            .sse()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(gemini_text(&ev), "Tool said: {\"a\":1}");
    }

    #[tokio::test]
    async fn gemini_safety_triggers() {
        let m = MockServer::start().await;
        for target in [GEN, STREAM] {
            let r = post(&m, target, &[], gemini_req("BLOCK_ME")).await;
            assert_eq!(r.status, 200);
            let v = if target == GEN {
                r.json()
            } else {
                r.sse().pop().unwrap().1
            };
            assert!(v.get("candidates").is_none());
            assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
        }
        let v = post(&m, GEN, &[], gemini_req("SAFETY_STOP")).await.json();
        assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");
        assert!(!v["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty());
        let ev: Vec<Value> = post(&m, STREAM, &[], gemini_req("SAFETY_STOP"))
            .await
            .sse()
            .into_iter()
            .map(|x| x.1)
            .collect();
        assert!(!gemini_text(&ev).is_empty());
        assert_eq!(
            ev.last().unwrap()["candidates"][0]["finishReason"],
            "SAFETY"
        );
        assert!(ev.last().unwrap()["usageMetadata"].is_object());
    }

    #[tokio::test]
    async fn gemini_think() {
        let m = MockServer::start().await;
        let ev: Vec<Value> = post(
            &m,
            STREAM,
            &[("x-mock-usage", "10,7")],
            gemini_req("THINK hard"),
        )
        .await
        .sse()
        .into_iter()
        .map(|x| x.1)
        .collect();
        assert_eq!(
            ev[0]["candidates"][0]["content"]["parts"][0],
            json!({"text": "pondering", "thought": true})
        );
        assert_eq!(gemini_text(&ev), TEXT);
        let u = &ev.last().unwrap()["usageMetadata"];
        assert_eq!(u["promptTokenCount"], 10);
        assert_eq!(u["candidatesTokenCount"], 7);
        assert_eq!(u["thoughtsTokenCount"], THOUGHT_TOKENS);
        assert_eq!(u["totalTokenCount"], 17 + THOUGHT_TOKENS);
        let v = post(&m, GEN, &[], gemini_req("THINK")).await.json();
        let parts = &v["candidates"][0]["content"]["parts"];
        assert_eq!(parts[0]["thought"], true);
        assert_eq!(parts[1]["text"], TEXT);
    }

    #[tokio::test]
    async fn gemini_errors() {
        let m = MockServer::start().await;
        for (code, status) in [
            (400, "INVALID_ARGUMENT"),
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
            (404, "NOT_FOUND"),
            (429, "RESOURCE_EXHAUSTED"),
            (500, "INTERNAL"),
            (503, "UNAVAILABLE"),
        ] {
            let c = code.to_string();
            let r = post(&m, STREAM, &[("x-mock-status", &c)], gemini_req("hi")).await;
            assert_eq!(r.status, code);
            assert_eq!(
                r.json(),
                json!({"error": {"code": code, "message": format!("mock injected {code}"), "status": status}})
            );
        }
        let r = post(
            &m,
            STREAM,
            &[("x-mock-fault", "event-error")],
            gemini_req("hi"),
        )
        .await;
        let ev = r.sse();
        assert!(ev.len() > 1);
        assert_eq!(
            ev.last().unwrap().1,
            json!({"error": {"code": 503, "message": "mock overloaded", "status": "UNAVAILABLE"}})
        );
        // A one-chunk stream still gets its error.
        let mut body = gemini_req("CALL_TOOL");
        body["tools"] = json!([{"functionDeclarations": [{"name": "f"}]}]);
        let ev = post(&m, STREAM, &[("x-mock-fault", "event-error")], body)
            .await
            .sse();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].1["error"]["status"], "UNAVAILABLE");
        // Unknown Gemini method: Gemini envelope.
        let r = post(&m, "/v1beta/models/x:embedContent", &[], json!({})).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"]["status"], "NOT_FOUND");
    }

    #[tokio::test]
    async fn gemini_default_fault_and_split_writes() {
        let m = MockServer::start().await;
        m.set_default_fault(Some(Fault {
            status: Some(429),
            times: Some(1),
            ..Default::default()
        }));
        assert_eq!(post(&m, GEN, &[], gemini_req("hi")).await.status, 429);
        assert_eq!(post(&m, GEN, &[], gemini_req("hi")).await.status, 200);
        let ev: Vec<Value> = post(
            &m,
            STREAM,
            &[("x-mock-split-writes", "0"), ("x-mock-pieces", "3")],
            gemini_req("hi"),
        )
        .await
        .sse()
        .into_iter()
        .map(|x| x.1)
        .collect();
        assert_eq!(gemini_text(&ev), "tok tok tok ");
        assert_eq!(
            ev.last().unwrap()["usageMetadata"]["candidatesTokenCount"],
            3
        );
    }

    #[tokio::test]
    async fn gemini_count_and_models() {
        let m = MockServer::start().await;
        let v = post(
            &m,
            "/v1beta/models/gemini-2.5-flash:countTokens",
            &[],
            gemini_req("hello"),
        )
        .await
        .json();
        assert!(v["totalTokens"].as_u64().unwrap() > 0);
        let v = call(&m, "GET", "/v1beta/models", &[], None).await.json();
        assert_eq!(v["models"][0]["name"], "models/gemini-2.5-flash");
        assert_eq!(v["models"][0]["displayName"], "Gemini 2.5 Flash");
        assert_eq!(
            v["models"][0]["supportedGenerationMethods"],
            json!(["generateContent", "countTokens"])
        );
        let v = call(&m, "GET", "/v1beta/models?pageSize=50&key=k", &[], None)
            .await
            .json();
        assert_eq!(v["models"].as_array().unwrap().len(), 1);
        let v = call(&m, "GET", "/v1beta/models/gemini-2.5-pro", &[], None)
            .await
            .json();
        assert_eq!(v["name"], "models/gemini-2.5-pro");
        // The OpenAI models route is untouched.
        let v = call(&m, "GET", "/v1/models", &[], None).await.json();
        assert_eq!(v["object"], "list");
    }

    #[tokio::test]
    async fn model_lists_in_three_formats_with_paging_and_failures() {
        let m = MockServer::start().await;
        let v = call(&m, "GET", "/v1/models", &[], None).await.json();
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"llama-3.3-70b-versatile") && ids.contains(&"mock-model"));
        // Anthropic: pages of 2 at most, followed by after_id.
        let ant = [("anthropic-version", "2023-06-01")];
        let v = call(&m, "GET", "/v1/models?limit=1000", &ant, None)
            .await
            .json();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["has_more"], true);
        assert_eq!(v["data"][0]["display_name"], "Claude Haiku 4.5");
        let after = format!(
            "/v1/models?limit=1000&after_id={}",
            v["last_id"].as_str().unwrap()
        );
        let v = call(&m, "GET", &after, &ant, None).await.json();
        assert_eq!(v["data"][0]["id"], "claude-sonnet-4-6");
        assert_eq!(v["has_more"], false);
        // Gemini: one model a page, followed by pageToken.
        let mut token = String::new();
        let mut names = Vec::new();
        loop {
            let target = format!("/v1beta/models?pageSize=1000&pageToken={token}");
            let v = call(&m, "GET", &target, &[], None).await.json();
            names.extend(
                v["models"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["name"].as_str().unwrap().to_string()),
            );
            match v["nextPageToken"].as_str() {
                Some(t) => token = t.to_string(),
                None => break,
            }
        }
        assert_eq!(names.len(), GEMINI_MODELS.len());
        // Failures: the next 2 Anthropic list calls fail; OpenAI ones are untouched.
        m.set_models(ModelsControl {
            fail: 2,
            format: Some("anthropic".into()),
            ..Default::default()
        });
        assert_eq!(call(&m, "GET", "/v1/models", &[], None).await.status, 200);
        assert_eq!(call(&m, "GET", "/v1/models", &ant, None).await.status, 503);
        assert_eq!(call(&m, "GET", "/v1/models", &ant, None).await.status, 503);
        assert_eq!(call(&m, "GET", "/v1/models", &ant, None).await.status, 200);
        assert_eq!(m.list_requests().len(), 4 + 2 + GEMINI_MODELS.len() + 1);
        assert!(m.requests().is_empty(), "list calls are logged apart");
    }
}
