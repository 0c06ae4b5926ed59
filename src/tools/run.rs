//! Runs the gateway tool calls of one model turn, concurrently, with the request's sandbox
//! session (opened on the first code call, deleted when the runner is dropped or closed) and
//! its MCP sessions (opened before the first turn, closed with the runner).

use futures_util::future::join_all;
use serde_json::{Map, Value};

use super::declare::{Declared, ToolKind};
use super::mcp::McpTools;
use super::sandbox::Session;
use super::search::render;
use super::turns::{Call, ToolRun};
use super::{ToolError, Tools};

/// The tool side of one request.
pub struct Runner<'a> {
    tools: &'a Tools,
    search_overrides: Option<Map<String, Value>>,
    session: Option<Session>,
    mcp: Option<McpTools>,
}

impl<'a> Runner<'a> {
    pub fn new(tools: &'a Tools, declared: &Declared) -> Runner<'a> {
        Runner {
            tools,
            search_overrides: declared.web_search.clone(),
            session: None,
            mcp: None,
        }
    }

    /// Connects to the request's MCP servers and lists their tools (before the first turn:
    /// the model is offered them). A server that cannot be reached fails the request.
    pub async fn connect_mcp(
        &mut self,
        declared: &Declared,
    ) -> Result<Option<&McpTools>, crate::error::GatewayError> {
        if declared.mcp.is_empty() {
            return Ok(None);
        }
        let tools = McpTools::connect(&declared.mcp, &self.tools.cfg.mcp).await?;
        Ok(Some(&*self.mcp.insert(tools)))
    }

    /// The request's MCP sessions, once connected.
    pub fn mcp(&self) -> Option<&McpTools> {
        self.mcp.as_ref()
    }

    /// Before a stream opens: the backends the request declared can be reached (the
    /// sandbox session is opened now). An unreachable one fails the request with a 502.
    pub async fn preflight(&mut self, declared: &Declared) -> Result<(), ToolError> {
        if declared.code_execution && self.session.is_none() {
            if let Some(sb) = self.tools.sandbox.as_ref() {
                match sb.open().await {
                    Ok(s) => self.session = Some(s),
                    Err(e @ ToolError::Unreachable(_)) => return Err(e),
                    // Opened again on the first call; that call reports the failure.
                    Err(_) => {}
                }
            }
        }
        if declared.web_search.is_some() {
            if let Some(s) = self.tools.search.as_ref() {
                s.probe().await?;
            }
        }
        Ok(())
    }

    /// Runs `calls` (tollgate's own) concurrently. A failed call is a `[tool error]`
    /// result for the model; only an unreachable backend fails the request.
    pub async fn run(&mut self, calls: &[Call]) -> Result<Vec<ToolRun>, ToolError> {
        let wants_code = calls
            .iter()
            .any(|c| c.ours == Some(ToolKind::CodeExecution));
        let mut open_error = None;
        if wants_code && self.session.is_none() {
            match self.tools.sandbox.as_ref() {
                Some(sb) => match sb.open().await {
                    Ok(s) => self.session = Some(s),
                    Err(e @ ToolError::Unreachable(_)) => return Err(e),
                    Err(e) => open_error = Some(e),
                },
                None => open_error = Some(ToolError::Failed("no sandbox is configured".into())),
            }
        }
        let session = self.session.as_ref();
        let overrides = self.search_overrides.as_ref();
        let tools = self.tools;
        let open_error = open_error.as_ref();
        let mcp = self.mcp.as_ref();
        let runs = calls.iter().map(|call| async move {
            if call.ours == Some(ToolKind::Mcp) {
                return Ok(match mcp {
                    Some(m) => m.run(call).await,
                    None => ToolRun {
                        call: call.clone(),
                        output: ToolError::Failed("no MCP server is connected".into()).for_model(),
                        results: vec![],
                        ok: false,
                        mcp: None,
                    },
                });
            }
            let done: Result<(String, Vec<_>), ToolError> = match call.ours {
                Some(ToolKind::WebSearch) => match tools.search.as_ref() {
                    Some(s) => {
                        let req = s.request(call.input(), overrides);
                        s.search(&req)
                            .await
                            .map(|r| (render(&r, s.cfg.max_text_chars), r))
                    }
                    None => Err(ToolError::Failed("no search backend is configured".into())),
                },
                Some(ToolKind::CodeExecution) => match (session, open_error) {
                    (Some(sess), _) if !call.input().is_empty() => {
                        sess.exec(call.input()).await.map(|o| (o.render(), vec![]))
                    }
                    (Some(_), _) => Err(ToolError::Failed("no code was given".into())),
                    (None, Some(e)) => Err(e.clone()),
                    (None, None) => Err(ToolError::Failed("no sandbox session".into())),
                },
                Some(ToolKind::Mcp) | None => Err(ToolError::Failed("not a gateway tool".into())),
            };
            match done {
                Ok((output, results)) => Ok(ToolRun {
                    ok: !output.starts_with(super::TOOL_ERROR),
                    call: call.clone(),
                    output,
                    results,
                    mcp: None,
                }),
                Err(e @ ToolError::Unreachable(_)) => Err(e),
                Err(e) => Ok(ToolRun {
                    call: call.clone(),
                    output: e.for_model(),
                    results: vec![],
                    ok: false,
                    mcp: None,
                }),
            }
        });
        join_all(runs).await.into_iter().collect()
    }

    /// Ends the request's sandbox session (dropping the runner does it too, in the
    /// background).
    pub async fn close(self) {
        let mcp = async {
            if let Some(m) = self.mcp {
                m.close().await;
            }
        };
        let sandbox = async {
            if let Some(s) = self.session {
                s.close().await;
            }
        };
        futures_util::future::join(mcp, sandbox).await;
    }
}
