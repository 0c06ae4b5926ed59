//! A raw HTTP/1.1 client for the unit tests: one request per connection, chunked bodies
//! reassembled, SSE events parsed.

pub(crate) use crate::respond::{EXEC_ARGS, TEXT, TOOL_ARGS};
pub(crate) use crate::{Fault, MockServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("json body")
    }

    /// `(event name, data)` of each SSE event (CRLF or LF).
    pub(crate) fn sse(&self) -> Vec<(Option<String>, Value)> {
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

pub(crate) async fn call(
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

pub(crate) async fn post(m: &MockServer, target: &str, hs: &[(&str, &str)], body: Value) -> Resp {
    call(m, "POST", target, hs, Some(body)).await
}

pub(crate) fn types(events: &[(Option<String>, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(_, d)| d["type"].as_str().unwrap().to_string())
        .collect()
}
