//! The real MCP servers of tests/mcp_servers/servers.py (official Python SDK), started on
//! loopback with the Python of tests/clients/.venv (made by tests/clients/venv.sh, which
//! tests/run.sh runs first). A missing venv fails the test: it is part of the suite's setup.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bearer token the `auth` server wants.
pub const MCP_TOKEN: &str = "mcp-test-token";

/// One process serving the four test servers (`tools`, `auth`, `slow`, `fail`), each on its
/// own port, each over Streamable HTTP (`/mcp`) and HTTP+SSE (`/sse`).
pub struct McpServers {
    child: Child,
    pub tools: u16,
    pub auth: u16,
    pub slow: u16,
    pub fail: u16,
    log: Arc<Mutex<String>>,
}

fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("tests/clients/.venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import mcp.server.mcpserver, uvicorn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} with the `mcp` package is needed for the MCP tests: run `bash tests/clients/venv.sh` \
         (tests/run.sh does)",
        python.display()
    );
    python
}

impl McpServers {
    pub fn start() -> McpServers {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_servers/servers.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--token", MCP_TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the MCP test servers");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let into = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = into.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the MCP test servers did not start: {}",
                    log.lock().unwrap()
                );
            }
        };
        let ports: serde_json::Value = serde_json::from_str(
            line.strip_prefix("mcp servers listening ")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}")),
        )
        .unwrap();
        let port = |k: &str| ports[k].as_u64().unwrap() as u16;
        McpServers {
            tools: port("tools"),
            auth: port("auth"),
            slow: port("slow"),
            fail: port("fail"),
            child,
            log,
        }
    }

    /// The Streamable HTTP URL of the server on `port`.
    pub fn http_url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/mcp")
    }

    /// The HTTP+SSE URL of the server on `port`.
    pub fn sse_url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/sse")
    }

    /// The servers' log so far: `mcp-request KIND METHOD PATH` a request, `mcp-tool NAME` a
    /// call of one of the `tools` server's plain tools (add, echo, secret_word).
    pub fn requests(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether a request line containing `needle` shows up (the log is read by a thread, so
    /// a line may land a moment after the request was answered); waits up to 10 s.
    pub fn saw(&self, needle: &str) -> bool {
        for _ in 0..200 {
            if self.requests().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for McpServers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
