//! The `tools:` section of the configuration: where the gateway-run tools' backends are, and
//! how the tool loop behaves.
//!
//! ```yaml
//! tools:
//!   web_search:
//!     backend: searxng            # searxng (default) | brave | tavily
//!     url: http://127.0.0.1:8888  # SearXNG base URL; Brave and Tavily have defaults
//!     api_key: ${BRAVE_API_KEY}   # brave and tavily
//!     max_results: 5              # per search (cap 20)
//!     allowed_domains: []         # when set, only results from these domains (and subdomains)
//!     blocked_domains: []
//!     intercept: true             # claim provider web-search tools (default: on with a backend)
//!     allow_private_hosts: false  # fetched result pages may be on private addresses
//!     max_text_chars: 1500        # text per result given to the model
//!     timeout_ms: 15000
//!   code_execution:
//!     url: http://127.0.0.1:8890  # a sandbox speaking protocol v1
//!     timeout_ms: 60000           # per call
//!   mcp:                          # MCP servers a request names (`mcp_servers`, Responses `mcp` tools)
//!     connect_timeout_ms: 10000   # connecting and initialising, per server
//!     call_timeout_ms: 60000      # each tool call (and the tool list), per server
//!     allow_private_hosts: false  # server URLs may be on private or loopback addresses
//!   max_tool_iterations: 10       # model turns per request (cap 25)
//!   purpose_hint: "You have access to the following tools:"
//! ```
//!
//! `TOLLGATE_WEB_SEARCH_URL` (a SearXNG base URL) and `TOLLGATE_SANDBOX_URL` configure a
//! backend from the environment when the file names none.

use serde::Deserialize;
use std::time::Duration;

use crate::config::ConfigError;

pub const MAX_RESULTS_CAP: usize = 20;
pub const MAX_ITERATIONS_CAP: u32 = 25;
pub const DEFAULT_PURPOSE_HINT: &str = "You have access to the following tools:";
const BRAVE_URL: &str = "https://api.search.brave.com/res/v1/web/search";
const TAVILY_URL: &str = "https://api.tavily.com/search";

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTools {
    pub web_search: Option<RawWebSearch>,
    pub code_execution: Option<RawCodeExecution>,
    pub mcp: Option<RawMcp>,
    pub max_tool_iterations: Option<u32>,
    pub purpose_hint: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    pub connect_timeout_ms: Option<u64>,
    pub call_timeout_ms: Option<u64>,
    pub allow_private_hosts: Option<bool>,
}

/// MCP servers named in a request (tollgate connects to them when the provider cannot).
#[derive(Debug, Clone, PartialEq)]
pub struct McpConfig {
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    /// Server URLs may be on private, link-local or loopback addresses (the request names
    /// them, so only public ones by default).
    pub allow_private_hosts: bool,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(60),
            allow_private_hosts: false,
        }
    }
}

impl McpConfig {
    /// The SSRF policy for the servers' URLs.
    pub fn policy(&self) -> crate::outbound::HostPolicy {
        if self.allow_private_hosts {
            crate::outbound::HostPolicy::ANY
        } else {
            crate::outbound::HostPolicy::PUBLIC
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawWebSearch {
    pub backend: Option<Backend>,
    pub url: Option<String>,
    pub api_key: Option<String>,
    pub max_results: Option<usize>,
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    #[serde(default)]
    pub blocked_domains: Vec<String>,
    pub intercept: Option<bool>,
    pub allow_private_hosts: Option<bool>,
    pub max_text_chars: Option<usize>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawCodeExecution {
    pub url: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Searxng,
    Brave,
    Tavily,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Searxng => "searxng",
            Backend::Brave => "brave",
            Backend::Tavily => "tavily",
        }
    }
}

/// A configured search backend.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSearchConfig {
    pub backend: Backend,
    pub url: String,
    pub api_key: Option<String>,
    pub max_results: usize,
    pub allowed_domains: Vec<String>,
    pub blocked_domains: Vec<String>,
    pub allow_private_hosts: bool,
    pub max_text_chars: usize,
    pub timeout: Duration,
}

/// A configured sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeExecutionConfig {
    pub url: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolsConfig {
    pub web_search: Option<WebSearchConfig>,
    pub code_execution: Option<CodeExecutionConfig>,
    pub mcp: McpConfig,
    /// Claim provider web-search tools (Claude Code's `web_search_20250305`, Responses'
    /// `web_search`) on same-format routes too (translated routes always do, with a backend).
    pub intercept: bool,
    pub max_tool_iterations: u32,
    pub purpose_hint: String,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            web_search: None,
            code_execution: None,
            mcp: McpConfig::default(),
            intercept: false,
            max_tool_iterations: 10,
            purpose_hint: DEFAULT_PURPOSE_HINT.to_string(),
        }
    }
}

fn base_url(field: &str, url: &str) -> Result<String, ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::new(field, format!("'{url}' is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ConfigError::new(
            field,
            "must be an http(s) URL with a host",
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn positive_ms(field: &str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::new(field, "must be greater than 0")),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Ok(Duration::from_millis(default)),
    }
}

fn mcp(raw: RawMcp) -> Result<McpConfig, ConfigError> {
    let d = McpConfig::default();
    Ok(McpConfig {
        connect_timeout: positive_ms(
            "tools.mcp.connect_timeout_ms",
            raw.connect_timeout_ms,
            d.connect_timeout.as_millis() as u64,
        )?,
        call_timeout: positive_ms(
            "tools.mcp.call_timeout_ms",
            raw.call_timeout_ms,
            d.call_timeout.as_millis() as u64,
        )?,
        allow_private_hosts: raw.allow_private_hosts.unwrap_or(false),
    })
}

fn domains(field: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    list.into_iter()
        .map(|d| {
            let d = d.trim().trim_start_matches("*.").to_ascii_lowercase();
            if d.is_empty() || d.contains('/') || d.contains(' ') {
                Err(ConfigError::new(field, "entries must be domain names"))
            } else {
                Ok(d)
            }
        })
        .collect()
}

fn web_search(
    raw: Option<RawWebSearch>,
    env_url: Option<String>,
) -> Result<(Option<WebSearchConfig>, Option<bool>), ConfigError> {
    let raw = match (raw, env_url) {
        (Some(r), env) => RawWebSearch {
            url: r
                .url
                .clone()
                .or(if r.backend.unwrap_or_default() == Backend::Searxng {
                    env
                } else {
                    None
                }),
            ..r
        },
        (None, Some(url)) => RawWebSearch {
            url: Some(url),
            ..Default::default()
        },
        (None, None) => return Ok((None, None)),
    };
    let backend = raw.backend.unwrap_or_default();
    let url = match (backend, raw.url.as_deref()) {
        (_, Some(u)) => base_url("tools.web_search.url", u)?,
        (Backend::Searxng, None) => return Ok((None, raw.intercept)),
        (Backend::Brave, None) => BRAVE_URL.to_string(),
        (Backend::Tavily, None) => TAVILY_URL.to_string(),
    };
    let api_key = raw.api_key.filter(|k| !k.is_empty());
    if backend != Backend::Searxng && api_key.is_none() {
        return Err(ConfigError::new(
            "tools.web_search.api_key",
            format!("the {} backend needs an API key", backend.as_str()),
        ));
    }
    let max_results = raw.max_results.unwrap_or(5);
    if max_results == 0 || max_results > MAX_RESULTS_CAP {
        return Err(ConfigError::new(
            "tools.web_search.max_results",
            format!("must be between 1 and {MAX_RESULTS_CAP}"),
        ));
    }
    let max_text_chars = raw.max_text_chars.unwrap_or(1500);
    if max_text_chars == 0 {
        return Err(ConfigError::new(
            "tools.web_search.max_text_chars",
            "must be greater than 0",
        ));
    }
    Ok((
        Some(WebSearchConfig {
            backend,
            url,
            api_key,
            max_results,
            allowed_domains: domains("tools.web_search.allowed_domains", raw.allowed_domains)?,
            blocked_domains: domains("tools.web_search.blocked_domains", raw.blocked_domains)?,
            allow_private_hosts: raw.allow_private_hosts.unwrap_or(false),
            max_text_chars,
            timeout: positive_ms("tools.web_search.timeout_ms", raw.timeout_ms, 15_000)?,
        }),
        raw.intercept,
    ))
}

/// Validates `tools:`; `env` supplies `TOLLGATE_WEB_SEARCH_URL` and `TOLLGATE_SANDBOX_URL`.
pub fn build(
    raw: Option<RawTools>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ToolsConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let var = |n: &str| env(n).filter(|v| !v.trim().is_empty());
    let (web_search, intercept) = web_search(raw.web_search, var("TOLLGATE_WEB_SEARCH_URL"))?;
    let code = raw.code_execution.unwrap_or_default();
    let code_execution = match code.url.or_else(|| var("TOLLGATE_SANDBOX_URL")) {
        Some(u) => Some(CodeExecutionConfig {
            url: base_url("tools.code_execution.url", &u)?,
            timeout: positive_ms("tools.code_execution.timeout_ms", code.timeout_ms, 60_000)?,
        }),
        None => None,
    };
    let max_tool_iterations = raw.max_tool_iterations.unwrap_or(10);
    if max_tool_iterations == 0 || max_tool_iterations > MAX_ITERATIONS_CAP {
        return Err(ConfigError::new(
            "tools.max_tool_iterations",
            format!("must be between 1 and {MAX_ITERATIONS_CAP}"),
        ));
    }
    Ok(ToolsConfig {
        intercept: intercept.unwrap_or(web_search.is_some()),
        web_search,
        code_execution,
        mcp: mcp(raw.mcp.unwrap_or_default())?,
        max_tool_iterations,
        purpose_hint: raw
            .purpose_hint
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_PURPOSE_HINT.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str, env: &[(&str, &str)]) -> Result<ToolsConfig, ConfigError> {
        let raw: RawTools = serde_yaml::from_str(yaml).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        build(Some(raw), &move |n| {
            env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_without_backends() {
        let c = build(None, &|_| None).unwrap();
        assert_eq!(c, ToolsConfig::default());
        assert!(!c.intercept);
    }

    #[test]
    fn environment_alone_is_enough() {
        let c = parse(
            "{}",
            &[
                ("TOLLGATE_WEB_SEARCH_URL", "http://127.0.0.1:8888/"),
                ("TOLLGATE_SANDBOX_URL", "http://127.0.0.1:8890"),
            ],
        )
        .unwrap();
        let ws = c.web_search.unwrap();
        assert_eq!(ws.backend, Backend::Searxng);
        assert_eq!(ws.url, "http://127.0.0.1:8888");
        assert_eq!(ws.max_results, 5);
        assert!(c.intercept, "intercept defaults on with a backend");
        assert_eq!(c.code_execution.unwrap().timeout, Duration::from_secs(60));
    }

    #[test]
    fn brave_and_tavily_need_keys_and_have_urls() {
        let e = parse("{web_search: {backend: brave}}", &[]).unwrap_err();
        assert_eq!(e.field, "tools.web_search.api_key");
        let c = parse("{web_search: {backend: tavily, api_key: k}}", &[]).unwrap();
        assert_eq!(c.web_search.unwrap().url, TAVILY_URL);
    }

    #[test]
    fn bounds() {
        for (yaml, field) in [
            (
                "{web_search: {url: 'http://x', max_results: 21}}",
                "tools.web_search.max_results",
            ),
            ("{max_tool_iterations: 26}", "tools.max_tool_iterations"),
            ("{max_tool_iterations: 0}", "tools.max_tool_iterations"),
            (
                "{code_execution: {url: 'ftp://x'}}",
                "tools.code_execution.url",
            ),
            (
                "{web_search: {url: 'http://x', timeout_ms: 0}}",
                "tools.web_search.timeout_ms",
            ),
        ] {
            assert_eq!(parse(yaml, &[]).unwrap_err().field, field, "{yaml}");
        }
        let c = parse(
            "{web_search: {url: 'http://x', intercept: false, blocked_domains: ['*.Example.com']}, max_tool_iterations: 25}",
            &[],
        )
        .unwrap();
        assert!(!c.intercept);
        assert_eq!(c.max_tool_iterations, 25);
        assert_eq!(c.web_search.unwrap().blocked_domains, ["example.com"]);
    }
}
