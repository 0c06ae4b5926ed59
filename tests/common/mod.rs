//! Test harness: runs the real tollgate binary on loopback with a temporary sled directory,
//! pointed at the in-process mock upstream.
#![allow(dead_code)]

mod config;
mod mcp_servers;
mod skip;
#[allow(unused_imports)]
pub use config::TestConfig;
#[allow(unused_imports)]
pub use mcp_servers::{McpServers, MCP_TOKEN};
#[allow(unused_imports)]
pub use skip::*;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MASTER: &str = "test-master-key-0123456789";

/// A loopback port nobody listens on, for a child process to bind. Taken below Linux's
/// ephemeral range (32768 and up), where the kernel never hands ports to `bind(0)` or to
/// outgoing connections: a port probed free here cannot be taken by another test's connection
/// before the child binds it. Each process starts at a random place and walks on.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        rand::random::<u32>() % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Gateway {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
}

fn pump(r: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>, echo: bool) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[tollgate] {line}");
            }
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
}

impl Gateway {
    /// Starts tollgate with the given full config text (`TestConfig::file`).
    pub fn start_with(config: impl Fn(u16, &Path) -> String) -> Gateway {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut g = Gateway::spawn_in(&dir, config, &[]);
        g._tmp = Some(tmp);
        g
    }

    pub fn spawn_in(dir: &Path, config: impl Fn(u16, &Path) -> String, args: &[&str]) -> Gateway {
        let port = free_port();
        let data = dir.join("data");
        let config_path = dir.join(format!("tollgate-{port}.yaml"));
        std::fs::write(&config_path, config(port, &data)).unwrap();
        let g = Gateway::launch(dir, &config_path, port, args);
        g.wait_ready();
        g
    }

    pub fn launch(dir: &Path, config_path: &Path, port: u16, args: &[&str]) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.arg("serve").arg("--config").arg(config_path).args(args);
        cmd.env(
            "RUST_LOG",
            std::env::var("TOLLGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tollgate");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let echo = std::env::var("TOLLGATE_TEST_ECHO").is_ok();
        pump(child.stdout.take().unwrap(), stdout.clone(), echo);
        pump(child.stderr.take().unwrap(), stderr.clone(), echo);
        Gateway {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            config_path: config_path.to_path_buf(),
            stdout,
            stderr,
            _tmp: None,
        }
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ =
                    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") && buf.contains("\"store\":\"open\"") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "tollgate did not become ready; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Stops the process (SIGTERM, then SIGKILL after 10 s) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits for the process to exit; its exit status, or None if it still runs.
    pub fn wait_status(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let c = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        if let Some(c) = self.child.as_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return false;
        }
        true
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Creates a virtual key through the management API. A 503 (the store is being handed
    /// over during an upgrade) is retried after its `retry-after`, as documented.
    pub async fn create_key(&self, name: &str) -> String {
        let mut tries = 0;
        let r = loop {
            let r = client()
                .post(format!("{}/v1/keys", self.url()))
                .bearer_auth(MASTER)
                .json(&serde_json::json!({"name": name}))
                .send()
                .await
                .unwrap();
            tries += 1;
            if r.status() == 503 && tries < 40 {
                assert!(
                    r.headers().get("retry-after").is_some(),
                    "503 without retry-after"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            break r;
        };
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        v["key"].as_str().unwrap().to_string()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A chat request body.
pub fn chat(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// An Anthropic messages request body.
pub fn messages(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": model, "stream": stream, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
}

/// Parses an SSE body into (event name, data JSON) pairs.
pub fn events(text: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if data.is_empty() {
            continue;
        }
        let v = serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data));
        out.push((name, v));
    }
    out
}

/// An answer read by `RawConn`.
pub struct RawResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A blocking HTTP/1.1 client on one keep-alive connection, for tests that must know which
/// connection a request went over (reqwest's pool hides it). Reads `content-length` and
/// chunked bodies. A connection the server closed is reopened on the next request and
/// counted in `reconnects`.
pub struct RawConn {
    port: u16,
    stream: Option<std::net::TcpStream>,
    buf: Vec<u8>,
    pub reconnects: usize,
}

impl RawConn {
    pub fn connect(port: u16) -> std::io::Result<RawConn> {
        let mut c = RawConn {
            port,
            stream: None,
            buf: Vec::new(),
            reconnects: 0,
        };
        c.open()?;
        Ok(c)
    }

    fn open(&mut self) -> std::io::Result<()> {
        let s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        self.stream = Some(s);
        self.buf.clear();
        Ok(())
    }

    /// Sends one request and reads its whole answer.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<RawResp> {
        use std::io::Write;
        if self.stream.is_none() {
            self.reconnects += 1;
            self.open()?;
        }
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        let res = self
            .stream
            .as_mut()
            .unwrap()
            .write_all(&out)
            .and_then(|()| self.read_response(method == "HEAD"));
        match res {
            Ok((resp, keep)) => {
                if !keep {
                    self.stream = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        use std::io::Read;
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.as_mut().unwrap().read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn take_line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill()?;
        }
    }

    fn take_exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_response(&mut self, head: bool) -> std::io::Result<(RawResp, bool)> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let status_line = self.take_line()?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.take_line()?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut resp = RawResp {
            status,
            headers,
            body: Vec::new(),
        };
        let keep = !resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if head || status == 204 || status == 304 {
            return Ok((resp, keep));
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let size_line = self.take_line()?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                if size == 0 {
                    while !self.take_line()?.is_empty() {}
                    break;
                }
                let data = self.take_exact(size)?;
                resp.body.extend_from_slice(&data);
                self.take_exact(2)?;
            }
            Ok((resp, keep))
        } else if let Some(n) = resp.header("content-length") {
            let n: usize = n.parse().map_err(|_| bad("bad content-length"))?;
            resp.body = self.take_exact(n)?;
            Ok((resp, keep))
        } else {
            // Delimited by the end of the connection.
            loop {
                match self.fill() {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            resp.body = std::mem::take(&mut self.buf);
            Ok((resp, false))
        }
    }
}

/// A management API call with the master key: its status and JSON body (null if none).
pub async fn admin_call(
    base_url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut r = client()
        .request(method, format!("{base_url}{path}"))
        .bearer_auth(MASTER);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Every usage record the gateway has written so far (`GET /v1/usage?format=jsonl`).
pub async fn usage_rows(gw: &Gateway) -> Vec<serde_json::Value> {
    let Ok(r) = client()
        .get(format!("{}/v1/usage?format=jsonl", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
    else {
        return Vec::new();
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The usage record of a request sent with `x-request-id: request_id`, once it is written
/// (polled for up to 5 s).
pub async fn usage_record(gw: &Gateway, request_id: &str) -> Option<serde_json::Value> {
    for _ in 0..50 {
        let found = usage_rows(gw)
            .await
            .into_iter()
            .find(|v| v["request_id"] == request_id);
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
