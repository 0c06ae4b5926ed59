//! A reference sandbox speaking Otari's code-execution protocol v1, for tests only
//! (loopback): `POST /sessions` → 201 `{session_id}` (a temp directory), `POST
//! /sessions/{id}/exec` runs `input.code` with `python3 -c` in that directory under
//! `timeout_seconds`, `DELETE /sessions/{id}` → 204 (the directory removed). It records
//! which sessions were opened and deleted (`GET /__mock/sessions`). Failure modes: see
//! `backend`.

use crate::backend::{Backend, Handler, Reply, Req};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Sessions {
    open: BTreeMap<String, PathBuf>,
    created: Vec<String>,
    deleted: Vec<String>,
    execs: Vec<String>,
}

pub struct SandboxServer {
    backend: Backend,
    sessions: Arc<Mutex<Sessions>>,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

impl SandboxServer {
    pub async fn start() -> SandboxServer {
        Self::start_on("127.0.0.1:0")
            .await
            .expect("bind sandbox mock")
    }

    pub async fn start_on(addr: &str) -> std::io::Result<SandboxServer> {
        let sessions: Arc<Mutex<Sessions>> = Arc::default();
        let s2 = sessions.clone();
        let handler: Handler = Arc::new(move |req: Req| {
            let s = s2.clone();
            Box::pin(async move { answer(req, &s).await })
        });
        let backend = Backend::start(addr, handler).await?;
        Ok(SandboxServer { backend, sessions })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.backend.addr)
    }

    /// `down`, `slow`, `503`, `malformed`, or None.
    pub fn set_mode(&self, mode: Option<&str>) {
        *self.backend.mode.lock().unwrap() = mode.map(String::from);
    }

    /// Sessions opened and not deleted.
    pub fn open_sessions(&self) -> Vec<String> {
        self.sessions.lock().unwrap().open.keys().cloned().collect()
    }

    pub fn created(&self) -> Vec<String> {
        self.sessions.lock().unwrap().created.clone()
    }

    pub fn deleted(&self) -> Vec<String> {
        self.sessions.lock().unwrap().deleted.clone()
    }

    /// The code of every exec, in order.
    pub fn execs(&self) -> Vec<String> {
        self.sessions.lock().unwrap().execs.clone()
    }
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        for dir in self.sessions.lock().unwrap().open.values() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn answer(req: Req, sessions: &Mutex<Sessions>) -> Reply {
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("POST", ["sessions"]) => {
            let id = format!(
                "sess-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let dir = std::env::temp_dir().join(format!("tollgate-mock-sandbox-{id}"));
            if std::fs::create_dir_all(&dir).is_err() {
                return Reply::Json(503, json!({"error": "no space"}).to_string());
            }
            let mut s = sessions.lock().unwrap();
            s.open.insert(id.clone(), dir);
            s.created.push(id.clone());
            Reply::Json(201, json!({"session_id": id, "created_at": 0}).to_string())
        }
        ("POST", ["sessions", id, "exec"]) => {
            let Some(dir) = sessions.lock().unwrap().open.get(*id).cloned() else {
                return Reply::Json(404, json!({"error": "no such session"}).to_string());
            };
            let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let code = body["input"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            sessions.lock().unwrap().execs.push(code.clone());
            let limit = Duration::from_secs(body["timeout_seconds"].as_u64().unwrap_or(60));
            let started = Instant::now();
            let run = tokio::process::Command::new("python3")
                .arg("-c")
                .arg(&code)
                .current_dir(&dir)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .kill_on_drop(true)
                .output();
            let (stdout, stderr, rc) = match tokio::time::timeout(limit, run).await {
                Ok(Ok(o)) => (
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                    o.status.code().unwrap_or(-1),
                ),
                Ok(Err(e)) => (String::new(), format!("cannot run python3: {e}"), 127),
                Err(_) => (String::new(), "execution timed out".to_string(), 124),
            };
            let tool_use_id = format!("srvtoolu_{}", NEXT.fetch_add(1, Ordering::Relaxed));
            Reply::Json(
                200,
                json!({
                    "tool_use_id": tool_use_id,
                    "execution_time_ms": started.elapsed().as_millis() as u64,
                    "result_block": {"type": "code_execution_tool_result", "tool_use_id": tool_use_id,
                        "content": {"type": "code_execution_result", "stdout": stdout, "stderr": stderr,
                            "return_code": rc, "content": []}},
                })
                .to_string(),
            )
        }
        ("DELETE", ["sessions", id]) => {
            let mut s = sessions.lock().unwrap();
            match s.open.remove(*id) {
                Some(dir) => {
                    let _ = std::fs::remove_dir_all(dir);
                    s.deleted.push(id.to_string());
                    Reply::Raw(204, "application/json", vec![], Vec::new())
                }
                None => Reply::Json(404, json!({"error": "no such session"}).to_string()),
            }
        }
        ("GET", ["__mock", "sessions"]) => {
            let s = sessions.lock().unwrap();
            Reply::Json(
                200,
                json!({"created": s.created, "deleted": s.deleted, "execs": s.execs}).to_string(),
            )
        }
        _ => Reply::Json(404, json!({"error": "no route"}).to_string()),
    }
}
