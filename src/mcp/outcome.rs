//! How a call to a registered MCP server ended, and its `/metrics` series: one place for the
//! calls through `/mcp` and the tool loop's calls (`mcp_server_ids`), so both count alike.

use std::time::Duration;

use super::client::{CallToolResult, McpError};

/// How a call ended: the usage row's status and the metrics' `outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The tool ran and reported an error (`isError`): recorded as 200, not charged.
    ToolError,
    RateLimited,
    /// The ledger refused it (budget, blocked user, the key's request limits).
    Refused,
    Timeout,
    Failed,
}

impl Outcome {
    /// The outcome of a call that was made.
    pub fn of(answer: &Result<CallToolResult, McpError>) -> Outcome {
        match answer {
            Ok(r) if r.is_error == Some(true) => Outcome::ToolError,
            Ok(_) => Outcome::Ok,
            Err(McpError::Timeout { .. }) => Outcome::Timeout,
            Err(_) => Outcome::Failed,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::RateLimited => "rate_limited",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Failed => "failed",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Outcome::Ok | Outcome::ToolError => 200,
            Outcome::RateLimited => 429,
            Outcome::Refused => 403,
            Outcome::Timeout => 504,
            Outcome::Failed => 502,
        }
    }
}

/// Counts one call to the registered server `server` in the `tollgate_mcp_*` series (and a
/// refused one in `tollgate_rate_limited_total`, kind `mcp_tool`).
pub fn observe(server: &str, outcome: Outcome, latency: Duration) {
    if outcome == Outcome::RateLimited {
        crate::metrics::RATE_LIMITED
            .with_label_values(&["mcp_tool"])
            .inc();
    }
    crate::metrics::MCP_CALLS
        .with_label_values(&[server, outcome.label()])
        .inc();
    crate::metrics::MCP_CALL_LATENCY
        .with_label_values(&[server])
        .observe(latency.as_secs_f64());
}
