//! A mock LLM provider for tollgate's tests and benchmarks: OpenAI Chat Completions,
//! Responses, embeddings, moderations and models, Anthropic Messages and count_tokens,
//! Gemini generateContent, streamGenerateContent and countTokens, model lists,
//! streamed (SSE, written in small pieces) or not. It records every request and injects
//! faults on demand. HTTP/1.1 is written by hand on tokio so that faults (split writes,
//! resets, stalls, garbage) are exact.
//!
//! This file holds the server, its request log and the `/__mock/*` control routes; each
//! provider's answers are in their own module, `respond` routes an inference request to them.

pub mod guardrail; // a mock guardrail service (`/validate`)
pub mod tls;

mod anthropic; // Messages
mod backend; // the tool backends' server and failure modes
mod faults; // x-mock-* options and the stream faults
mod gemini; // generateContent, streamGenerateContent, countTokens, model info
mod http; // HTTP/1.1 reading and writing
mod models; // model lists in three formats, with paging and failures
mod openai; // Chat Completions, embeddings, moderations
mod respond; // endpoint kind, last turn, tool choice; writes the answer
mod responses; // Responses API
mod sandbox; // the reference sandbox (code-execution protocol v1)
mod search; // web search backends (SearXNG, Brave, Tavily) and pages
#[cfg(test)]
mod testing;

pub use faults::Fault;
pub use guardrail::GuardrailMock;
pub use models::{ModelsControl, ANTHROPIC_MODELS, GEMINI_MODELS, OPENAI_MODELS};
pub use sandbox::SandboxServer;
pub use search::{SearchServer, BRAVE_KEY, TAVILY_KEY};

use faults::{header_fault, take_default};
use http::{read_body, read_head, write_json};
use models::{list_format, list_models};
use respond::{is_stream_request, respond};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections on `listener` until the task is aborted, each served by `serve` on a
/// task of its own (every mock server here: providers, guardrails, tool backends, TLS).
pub(crate) fn accept_loop<F, Fut>(listener: TcpListener, serve: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(serve(sock));
        }
    })
}

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
        let task = accept_loop(listener, move |sock| {
            let s = s2.clone();
            async move {
                let _ = serve_conn(sock, s).await;
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
