//! Gateway-run tools: web search and code execution that tollgate runs itself, so that any
//! model can use them, and the tool loop that runs them between model turns.
//!
//! - `settings`: the `tools:` configuration (backends, limits, the iteration cap);
//! - `search`: the search backends (SearXNG, Brave, Tavily) behind one call;
//! - `fetch`: the text of result pages when a backend gives only snippets (SSRF-checked);
//! - `sandbox`: code execution over Otari's sandbox protocol v1, one session per request;
//! - `mcp`: MCP servers named in the request (three forms), their tools offered as functions
//!   and called through `crate::mcp`, and their native blocks and items;
//! - `cite`: citations of search results in Anthropic answers;
//! - `declare`: the gateway tools a request declares, offered to the model as functions;
//! - `turns`: whole turns in the client's format (calls, results appended, native blocks);
//! - `policy`: the key's and user's tool policy on one request (allowed tools, calls per request);
//! - `run`: one turn's calls, run concurrently;
//! - `stream`: the client's stream during a loop (keep-alives, native blocks, the answer).
//!
//! The loop itself, which needs the gateway's attempt API, is `gateway::tool_loop`.

pub mod cite;
pub mod declare;
pub mod fetch;
pub mod mcp;
pub mod policy;
pub mod run;
pub mod sandbox;
pub mod search;
pub mod settings;
pub mod stream;
pub mod turns;

use std::sync::Arc;

use sandbox::Sandbox;
use search::Searcher;
use settings::ToolsConfig;

/// The prefix of a tool result that reports a failure (such results are never billed).
pub const TOOL_ERROR: &str = "[tool error]";

/// Why a tool call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The backend could not be reached at all: the request fails (502).
    Unreachable(String),
    /// The call failed: the model reads why (`[tool error] …`) and the loop goes on.
    Failed(String),
}

impl ToolError {
    pub fn message(&self) -> &str {
        match self {
            ToolError::Unreachable(m) | ToolError::Failed(m) => m,
        }
    }

    /// The tool result the model reads.
    pub fn for_model(&self) -> String {
        format!("{TOOL_ERROR} {}", self.message())
    }
}

/// The configured backends, built once at start (each holds its pooled client).
pub struct Tools {
    pub cfg: ToolsConfig,
    pub search: Option<Arc<Searcher>>,
    pub sandbox: Option<Arc<Sandbox>>,
}

impl Tools {
    pub fn new(cfg: &ToolsConfig) -> Tools {
        Tools {
            search: cfg.web_search.clone().map(|c| Arc::new(Searcher::new(c))),
            sandbox: cfg
                .code_execution
                .clone()
                .map(|c| Arc::new(Sandbox::new(c))),
            cfg: cfg.clone(),
        }
    }
}
