//! Code execution in a sandbox speaking Otari's protocol v1: `POST /sessions` opens a
//! session, `POST /sessions/{id}/exec` runs code in it, `DELETE /sessions/{id}` ends it.
//!
//! One session per request, and it is always deleted: [`Session`] deletes itself when it is
//! dropped (a task is spawned for the DELETE), so a failed loop, a panic or a client that
//! went away all end the session too; [`Session::close`] does it in line when the request
//! ends normally.

use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use super::search::backend_error;
use super::settings::CodeExecutionConfig;
use super::ToolError;
use crate::outbound::{self, ClientSettings, HostPolicy};

/// How much longer than the sandbox's own limit tollgate waits for an exec's answer.
const EXEC_GRACE: Duration = Duration::from_secs(10);

/// A sandbox service and its pooled client.
pub struct Sandbox {
    pub cfg: CodeExecutionConfig,
    client: reqwest::Client,
}

/// What a run printed and returned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub return_code: i64,
}

impl ExecOutput {
    /// Failed runs: a non-zero return code, or errors with no output (Otari's rule).
    pub fn failed(&self) -> bool {
        self.return_code != 0 || (!self.stderr.is_empty() && self.stdout.is_empty())
    }

    /// What the model reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.failed() {
            out.push_str(super::TOOL_ERROR);
            out.push(' ');
        }
        out.push_str(&format!("return code: {}\n", self.return_code));
        out.push_str(&format!("stdout:\n{}\n", self.stdout));
        if !self.stderr.is_empty() {
            out.push_str(&format!("stderr:\n{}\n", self.stderr));
        }
        out.trim_end().to_string()
    }
}

impl Sandbox {
    pub fn new(cfg: CodeExecutionConfig) -> Sandbox {
        // Exec answers may take the whole per-call limit; session calls are quick.
        let client = outbound::client(ClientSettings::new(
            HostPolicy::ANY,
            cfg.timeout + EXEC_GRACE,
        ));
        Sandbox { cfg, client }
    }

    /// Opens this request's session.
    pub async fn open(self: &Arc<Self>) -> Result<Session, ToolError> {
        let res = self
            .client
            .post(format!("{}/sessions", self.cfg.url))
            .header("content-type", "application/json")
            .body("{}")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| backend_error("sandbox", &e))?;
        let status = res.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ToolError::Failed(format!(
                "the sandbox refused a session (HTTP {status})"
            )));
        }
        #[derive(Deserialize)]
        struct Opened {
            session_id: String,
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| backend_error("sandbox", &e))?;
        let opened: Opened = serde_json::from_slice(&body)
            .map_err(|_| ToolError::Failed("the sandbox sent a malformed session".into()))?;
        if opened.session_id.is_empty()
            || !opened
                .session_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ToolError::Failed(
                "the sandbox sent an invalid session id".into(),
            ));
        }
        Ok(Session {
            sandbox: self.clone(),
            id: opened.session_id,
            open: true,
        })
    }
}

/// An open sandbox session; deleted when dropped.
pub struct Session {
    sandbox: Arc<Sandbox>,
    id: String,
    open: bool,
}

impl Session {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `code`. A run that fails is still an `Ok` (its output says how it failed); an
    /// `Err` is the sandbox itself failing.
    pub async fn exec(&self, code: &str) -> Result<ExecOutput, ToolError> {
        let sb = &self.sandbox;
        let body = json!({
            "tool": "code_execution",
            "input": {"code": code},
            "timeout_seconds": sb.cfg.timeout.as_secs().max(1),
        });
        let res = sb
            .client
            .post(format!("{}/sessions/{}/exec", sb.cfg.url, self.id))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| backend_error("sandbox", &e))?;
        let status = res.status().as_u16();
        if status != 200 {
            return Err(ToolError::Failed(format!(
                "the sandbox answered HTTP {status}"
            )));
        }
        #[derive(Deserialize)]
        struct Answer {
            result_block: Block,
        }
        #[derive(Deserialize)]
        struct Block {
            content: Content,
        }
        #[derive(Deserialize)]
        struct Content {
            #[serde(default)]
            stdout: String,
            #[serde(default)]
            stderr: String,
            #[serde(default)]
            return_code: i64,
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| backend_error("sandbox", &e))?;
        let a: Answer = serde_json::from_slice(&body)
            .map_err(|_| ToolError::Failed("the sandbox sent a malformed answer".into()))?;
        let c = a.result_block.content;
        Ok(ExecOutput {
            stdout: c.stdout,
            stderr: c.stderr,
            return_code: c.return_code,
        })
    }

    /// Deletes the session now (the usual end of a request).
    pub async fn close(mut self) {
        self.open = false;
        delete(&self.sandbox, &self.id).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // Dropped mid-request (an error, a disconnect): delete in the background.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let sandbox = self.sandbox.clone();
            let id = std::mem::take(&mut self.id);
            rt.spawn(async move { delete(&sandbox, &id).await });
        }
    }
}

async fn delete(sb: &Sandbox, id: &str) {
    let res = sb
        .client
        .delete(format!("{}/sessions/{id}", sb.cfg.url))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    if let Err(e) = res {
        log::warn!("sandbox session {id}: delete failed: {}", e.without_url());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rule_and_rendering() {
        let ok = ExecOutput {
            stdout: "42\n".into(),
            ..Default::default()
        };
        assert!(!ok.failed());
        assert_eq!(ok.render(), "return code: 0\nstdout:\n42");
        let warned = ExecOutput {
            stdout: "1".into(),
            stderr: "warning".into(),
            return_code: 0,
        };
        assert!(!warned.failed());
        let err = ExecOutput {
            stderr: "Traceback".into(),
            ..Default::default()
        };
        assert!(err.failed());
        assert!(err.render().starts_with("[tool error] "));
        let code = ExecOutput {
            return_code: 1,
            ..Default::default()
        };
        assert!(code.failed());
    }
}
