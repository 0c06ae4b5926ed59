//! A small HTTP server for the mock tool backends (search, sandbox): each request goes to a
//! handler, with one failure mode for all (`down`: the connection closes unanswered; `slow`:
//! 3 s before answering; `503`; `malformed`: a 200 that is not JSON), set by the test or by
//! `POST /__mock/mode` (`{"mode": "slow"}`, `{"mode": null}` to clear).

use crate::http::{read_body, read_head, write_json};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub(crate) struct Req {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Req {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) enum Reply {
    Json(u16, String),
    /// Status, content type, extra headers, body.
    Raw(u16, &'static str, Vec<(&'static str, String)>, Vec<u8>),
}

pub(crate) type Handler =
    Arc<dyn Fn(Req) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// A running backend; stops when dropped.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) mode: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Backend {
    pub(crate) async fn start(addr: &str, handler: Handler) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mode: Arc<Mutex<Option<String>>> = Arc::default();
        let m2 = mode.clone();
        let task = crate::accept_loop(listener, move |sock| {
            let (h, m) = (handler.clone(), m2.clone());
            async move {
                let _ = serve(sock, h, m).await;
            }
        });
        Ok(Backend { addr, mode, task })
    }
}

async fn serve(
    sock: tokio::net::TcpStream,
    handler: Handler,
    mode: Arc<Mutex<Option<String>>>,
) -> std::io::Result<()> {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::new(rd);
    while let Some(head) = read_head(&mut rd).await? {
        let (body, _) = read_body(&mut rd, &head).await?;
        let (path, q) = head
            .target
            .split_once('?')
            .map_or((head.target.clone(), ""), |(p, q)| (p.to_string(), q));
        let query = q
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        if path == "/__mock/mode" {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            *mode.lock().unwrap() = v["mode"].as_str().map(String::from);
            write_json(&mut wr, 200, &[], "{\"ok\":true}").await?;
            continue;
        }
        let current = if path.starts_with("/__mock/") {
            None
        } else {
            mode.lock().unwrap().clone()
        };
        match current.as_deref() {
            Some("down") => return Ok(()),
            Some("503") => {
                write_json(&mut wr, 503, &[], "{\"error\":\"mock overloaded\"}").await?;
                continue;
            }
            Some("malformed") => {
                write_json(&mut wr, 200, &[], "{\"results\": [oops").await?;
                continue;
            }
            Some("slow") => tokio::time::sleep(Duration::from_secs(3)).await,
            _ => {}
        }
        let req = Req {
            method: head.method.clone(),
            path,
            query,
            headers: head.headers.clone(),
            body,
        };
        match handler(req).await {
            Reply::Json(status, body) => write_json(&mut wr, status, &[], &body).await?,
            Reply::Raw(status, ct, extra, body) => {
                let mut h = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n",
                    crate::http::reason(status),
                    body.len()
                );
                for (k, v) in extra {
                    h.push_str(&format!("{k}: {v}\r\n"));
                }
                h.push_str("\r\n");
                let mut out = h.into_bytes();
                out.extend_from_slice(&body);
                wr.write_all(&out).await?;
            }
        }
    }
    Ok(())
}
