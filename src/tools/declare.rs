//! Which gateway tools a request declares, and the request rewritten to offer them to the
//! model as plain functions.
//!
//! Declarations, in `tools`: `{"type":"tollgate_web_search", ...overrides}` and
//! `{"type":"tollgate_code_execution"}` (Otari's `otari_*` names are synonyms). When
//! claiming is on (intercept, or a provider that cannot run the tool), the provider's own
//! web-search tools are taken too: Anthropic `web_search_<date>`, Responses `web_search`,
//! `web_search_preview`. A client *function* named `web_search` is never claimed.
//!
//! MCP servers named in the request (`crate::tools::mcp`) come in as their specs; their tools
//! are offered once tollgate has listed them, as functions named `mcp__<server>__<tool>`.

use serde_json::{json, Map, Value};

use super::settings::ToolsConfig;
use crate::error::{ErrorKind, GatewayError};
use crate::mcp::ServerSpec;
use crate::translate::Format;

/// A gateway tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    WebSearch,
    CodeExecution,
    /// A tool of an MCP server the request named (which one: the function's name).
    Mcp,
}

/// The prefix of the functions that stand for MCP tools (`mcp__<server>__<tool>`).
pub const MCP_PREFIX: &str = "mcp__";

impl ToolKind {
    /// The function the model is offered.
    pub fn function(self) -> &'static str {
        match self {
            ToolKind::WebSearch => "web_search",
            ToolKind::CodeExecution => "code_execution",
            ToolKind::Mcp => "mcp",
        }
    }

    pub fn from_function(name: &str) -> Option<ToolKind> {
        match name {
            "web_search" => Some(ToolKind::WebSearch),
            "code_execution" => Some(ToolKind::CodeExecution),
            n if n.starts_with(MCP_PREFIX) => Some(ToolKind::Mcp),
            _ => None,
        }
    }

    /// The `pricing` entry of one call (`tollgate:<tool>`).
    pub fn price_key(self) -> (&'static str, &'static str) {
        ("tollgate", self.function())
    }

    pub fn description(self) -> &'static str {
        match self {
            ToolKind::WebSearch => {
                "Search the web. Returns the top results with their titles, URLs and text. When you use a result, cite its URL."
            }
            ToolKind::CodeExecution => {
                "Run Python code in a sandbox and return its stdout, stderr and return code. Files persist between calls within this request."
            }
            ToolKind::Mcp => "The tools of the MCP servers the request names.",
        }
    }

    /// The argument schema of the offered function.
    pub fn input_schema(self) -> Value {
        match self {
            ToolKind::WebSearch => json!({
                "type": "object",
                "properties": {"query": {"type": "string", "description": "The search query."}},
                "required": ["query"],
            }),
            ToolKind::CodeExecution => json!({
                "type": "object",
                "properties": {"code": {"type": "string", "description": "The Python code to run."}},
                "required": ["code"],
            }),
            // Each MCP tool has its own schema (`crate::tools::mcp`).
            ToolKind::Mcp => json!({"type": "object"}),
        }
    }

    /// The `type`s a request may declare this tool with.
    pub fn accepted_types(self) -> &'static [&'static str] {
        match self {
            ToolKind::WebSearch => &[
                "tollgate_web_search",
                "otari_web_search",
                "web_search_20250305 (and later dates; claimed on intercept)",
                "web_search (Responses; claimed on intercept)",
                "web_search_preview (Responses; claimed on intercept)",
            ],
            ToolKind::CodeExecution => &["tollgate_code_execution", "otari_code_execution"],
            ToolKind::Mcp => &[
                "mcp_servers (Anthropic MCP connector; Otari)",
                "mcp (Responses tool)",
            ],
        }
    }
}

/// What a request declared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared {
    /// MCP servers tollgate connects to for this request.
    pub mcp: Vec<ServerSpec>,
    /// Web search, with the declaration's overrides.
    pub web_search: Option<Map<String, Value>>,
    pub code_execution: bool,
    /// The provider web-search type tollgate claimed (Claude Code's `web_search_20250305`,
    /// Responses' `web_search`): the client then gets the native result blocks or items.
    pub claimed: Option<String>,
    /// Model turns allowed for this request.
    pub max_iterations: u32,
}

impl Declared {
    pub fn kinds(&self) -> Vec<ToolKind> {
        let mut k = Vec::new();
        if self.web_search.is_some() {
            k.push(ToolKind::WebSearch);
        }
        if self.code_execution {
            k.push(ToolKind::CodeExecution);
        }
        if !self.mcp.is_empty() {
            k.push(ToolKind::Mcp);
        }
        k
    }
}

/// A cheap look at the raw body: could it declare a gateway tool (`claim`: or a provider
/// web-search tool that would be claimed)? A request that cannot is never parsed for tools.
pub fn might_declare(body: &[u8], claim: bool) -> bool {
    let has = |n: &[u8]| memchr::memmem::find(body, n).is_some();
    has(b"_code_execution\"")
        || (has(b"web_search") && (claim || has(b"_web_search\"")))
        || has(b"\"mcp\"")
        || has(b"mcp_servers")
}

fn is_gateway(ty: &str) -> Option<ToolKind> {
    match ty {
        "tollgate_web_search" | "otari_web_search" => Some(ToolKind::WebSearch),
        "tollgate_code_execution" | "otari_code_execution" => Some(ToolKind::CodeExecution),
        _ => None,
    }
}

/// Provider web-search types tollgate claims for a client of `format`.
fn is_claimable(format: Format, ty: &str) -> bool {
    match format {
        Format::Anthropic => ty.starts_with("web_search_"),
        Format::Responses => ty == "web_search" || ty.starts_with("web_search_"),
        _ => false,
    }
}

/// The overrides a claimed provider tool carries (its domain lists).
fn claimed_overrides(entry: &Map<String, Value>) -> Map<String, Value> {
    let mut o = Map::new();
    for k in ["allowed_domains", "blocked_domains"] {
        if let Some(v) = entry
            .get(k)
            .or_else(|| entry.get("filters").and_then(|f| f.get(k)))
        {
            o.insert(k.into(), v.clone());
        }
    }
    o
}

/// Takes the gateway tools out of `req` (None: it declares none and names no MCP server
/// (`mcp`, already taken out by `tools::mcp::take`), and `req` is unchanged). `claim`: take
/// the provider web-search tools too. Refused: a tool with no backend (400),
/// `max_tool_iterations` over the configured cap (422).
pub fn take(
    req: &mut Map<String, Value>,
    format: Format,
    cfg: &ToolsConfig,
    claim: bool,
    mcp: Vec<ServerSpec>,
) -> Result<Option<Declared>, GatewayError> {
    let ty = |t: &Value| t.get("type").and_then(Value::as_str).map(String::from);
    let found = match req.get("tools") {
        Some(Value::Array(tools)) => tools.iter().any(|t| {
            ty(t)
                .is_some_and(|ty| is_gateway(&ty).is_some() || (claim && is_claimable(format, &ty)))
        }),
        _ => false,
    };
    if !found && mcp.is_empty() {
        return Ok(None);
    }
    let tools = match req.remove("tools") {
        Some(Value::Array(tools)) => tools,
        _ => Vec::new(),
    };
    let mut d = Declared {
        max_iterations: cfg.max_tool_iterations,
        mcp,
        ..Default::default()
    };
    let mut kept = Vec::new();
    for t in tools {
        let Some(ty) = ty(&t) else {
            kept.push(t);
            continue;
        };
        match is_gateway(&ty) {
            Some(ToolKind::WebSearch) => {
                let mut o = t.as_object().cloned().unwrap_or_default();
                o.remove("type");
                d.web_search = Some(o);
            }
            Some(ToolKind::CodeExecution) => d.code_execution = true,
            Some(ToolKind::Mcp) => unreachable!("not a declared type"),
            None if claim && is_claimable(format, &ty) => {
                if d.web_search.is_none() {
                    d.web_search = Some(claimed_overrides(t.as_object().unwrap_or(&Map::new())));
                }
                d.claimed = Some(ty);
            }
            None => kept.push(t),
        }
    }
    let no_backend =
        |what: &str, tool: &str, env: &str| {
            GatewayError::invalid(format!(
            "The request declares {tool}, but no {what} backend is configured (tools.{} or {env}).",
            if what == "search" { "web_search" } else { "code_execution" }
        ))
            .with_param("tools")
            .with_code("tool_not_configured")
        };
    if d.web_search.is_some() && cfg.web_search.is_none() {
        return Err(no_backend(
            "search",
            "tollgate_web_search",
            "TOLLGATE_WEB_SEARCH_URL",
        ));
    }
    if d.code_execution && cfg.code_execution.is_none() {
        return Err(no_backend(
            "sandbox",
            "tollgate_code_execution",
            "TOLLGATE_SANDBOX_URL",
        ));
    }
    if let Some(v) = req.remove("max_tool_iterations") {
        let n = v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            GatewayError::invalid("'max_tool_iterations' must be a positive integer.")
                .with_param("max_tool_iterations")
        })?;
        if n > cfg.max_tool_iterations as u64 {
            return Err(GatewayError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "'max_tool_iterations' is {n}; this gateway allows at most {}.",
                    cfg.max_tool_iterations
                ),
            )
            .with_status(422)
            .with_param("max_tool_iterations")
            .with_code("too_many_tool_iterations"));
        }
        d.max_iterations = n as u32;
    }
    // A caller's own function with one of the offered names would be ambiguous.
    if !d.mcp.is_empty() {
        if let Some(name) = kept
            .iter()
            .filter_map(|t| function_name(format, t))
            .find(|n| n.starts_with(MCP_PREFIX))
        {
            return Err(GatewayError::invalid(format!(
                "The request names MCP servers and has its own function '{name}', whose prefix '{MCP_PREFIX}' names MCP tools; rename the function."
            ))
            .with_param("tools"));
        }
    }
    for k in d.kinds().into_iter().filter(|k| *k != ToolKind::Mcp) {
        if kept
            .iter()
            .any(|t| function_name(format, t) == Some(k.function()))
        {
            return Err(GatewayError::invalid(format!(
                "The request declares a gateway tool and its own function named '{}'; rename the function.",
                k.function()
            ))
            .with_param("tools"));
        }
    }
    let header = req
        .remove("tools_header")
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| cfg.purpose_hint.clone());
    let gateway: Vec<ToolKind> = d
        .kinds()
        .into_iter()
        .filter(|k| *k != ToolKind::Mcp)
        .collect();
    for k in &gateway {
        kept.push(function_decl(format, *k));
    }
    req.insert("tools".into(), Value::Array(kept));
    if !gateway.is_empty() {
        add_hint(req, format, &purpose_hint(&header, &d));
    }
    Ok(Some(d))
}

/// The name of a client's function tool, in `format`.
pub fn function_name(format: Format, t: &Value) -> Option<&str> {
    match format {
        Format::Chat => t.get("function").and_then(|f| f.get("name")),
        _ => t.get("name"),
    }
    .and_then(Value::as_str)
}

fn function_decl(format: Format, k: ToolKind) -> Value {
    function(format, k.function(), k.description(), &k.input_schema())
}

/// A function offered to the model, in `format`'s tool grammar.
pub fn function(format: Format, name: &str, desc: &str, schema: &Value) -> Value {
    match format {
        Format::Anthropic => json!({"name": name, "description": desc, "input_schema": schema}),
        Format::Responses => {
            json!({"type": "function", "name": name, "description": desc, "parameters": schema})
        }
        _ => {
            json!({"type": "function", "function": {"name": name, "description": desc, "parameters": schema}})
        }
    }
}

fn purpose_hint(header: &str, d: &Declared) -> String {
    let mut out = header.trim_end().to_string();
    for k in d.kinds() {
        let extra = match k {
            ToolKind::WebSearch => d
                .web_search
                .as_ref()
                .and_then(|o| o.get("purpose_hint"))
                .and_then(Value::as_str),
            ToolKind::CodeExecution | ToolKind::Mcp => None,
        };
        out.push_str(&format!("\n- {}: {}", k.function(), k.description()));
        if let Some(e) = extra {
            out.push(' ');
            out.push_str(e);
        }
    }
    out
}

/// Puts `hint` at the start of the system prompt, in `format`.
fn add_hint(req: &mut Map<String, Value>, format: Format, hint: &str) {
    match format {
        Format::Anthropic => {
            let new = match req.remove("system") {
                Some(Value::String(s)) if !s.is_empty() => Value::String(format!("{hint}\n\n{s}")),
                Some(Value::Array(mut blocks)) => {
                    blocks.insert(0, json!({"type": "text", "text": hint}));
                    Value::Array(blocks)
                }
                _ => Value::String(hint.to_string()),
            };
            req.insert("system".into(), new);
        }
        Format::Responses => {
            let new = match req.get("instructions").and_then(Value::as_str) {
                Some(s) if !s.is_empty() => format!("{hint}\n\n{s}"),
                _ => hint.to_string(),
            };
            req.insert("instructions".into(), Value::String(new));
        }
        _ => {
            if let Some(Value::Array(msgs)) = req.get_mut("messages") {
                msgs.insert(0, json!({"role": "system", "content": hint}));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::settings::{build, RawTools};

    fn cfg(search: bool, code: bool) -> ToolsConfig {
        let raw: RawTools = serde_yaml::from_str("{}").unwrap();
        build(Some(raw), &|n| match n {
            "TOLLGATE_WEB_SEARCH_URL" if search => Some("http://127.0.0.1:1".into()),
            "TOLLGATE_SANDBOX_URL" if code => Some("http://127.0.0.1:2".into()),
            _ => None,
        })
        .unwrap()
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn cheap_gate() {
        assert!(!might_declare(br#"{"tools":[{"type":"function"}]}"#, true));
        assert!(might_declare(
            br#"{"tools":[{"type":"tollgate_web_search"}]}"#,
            false
        ));
        assert!(might_declare(
            br#"{"tools":[{"type":"otari_code_execution"}]}"#,
            false
        ));
        assert!(!might_declare(
            br#"{"tools":[{"type":"web_search_20250305"}]}"#,
            false
        ));
        assert!(might_declare(
            br#"{"tools":[{"type":"web_search_20250305"}]}"#,
            true
        ));
    }

    #[test]
    fn chat_declarations_become_functions() {
        let mut req = obj(json!({"model": "m", "max_tool_iterations": 3,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "tollgate_web_search", "max_results": 2},
                      {"type": "otari_code_execution"},
                      {"type": "function", "function": {"name": "mine", "parameters": {}}}]}));
        let d = take(&mut req, Format::Chat, &cfg(true, true), false, vec![])
            .unwrap()
            .unwrap();
        assert_eq!(d.max_iterations, 3);
        assert_eq!(d.web_search.unwrap()["max_results"], 2);
        assert!(d.code_execution);
        let names: Vec<&str> = req["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| function_name(Format::Chat, t))
            .collect();
        assert_eq!(names, ["mine", "web_search", "code_execution"]);
        assert_eq!(req["messages"][0]["role"], "system");
        assert!(req["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You have access to the following tools:\n- web_search"));
        assert!(!req.contains_key("max_tool_iterations"));
    }

    #[test]
    fn refusals() {
        let mut req = obj(json!({"tools": [{"type": "tollgate_code_execution"}]}));
        let e = take(&mut req, Format::Chat, &cfg(true, false), false, vec![]).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("TOLLGATE_SANDBOX_URL"), "{}", e.message);
        let mut req =
            obj(json!({"max_tool_iterations": 11, "tools": [{"type": "tollgate_web_search"}]}));
        let e = take(
            &mut req,
            Format::Anthropic,
            &cfg(true, false),
            false,
            vec![],
        )
        .unwrap_err();
        assert_eq!(e.status(), 422);
        let mut req = obj(json!({"tools": [{"type": "tollgate_web_search"},
            {"name": "web_search", "input_schema": {}}]}));
        let e = take(
            &mut req,
            Format::Anthropic,
            &cfg(true, false),
            false,
            vec![],
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn claiming_provider_web_search() {
        let body = json!({"system": "be brief", "tools": [
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5, "allowed_domains": ["a.org"]},
            {"name": "Bash", "input_schema": {}}]});
        let mut req = obj(body.clone());
        assert_eq!(
            take(
                &mut req,
                Format::Anthropic,
                &cfg(true, false),
                false,
                vec![]
            )
            .unwrap(),
            None
        );
        assert_eq!(Value::Object(req), body, "untouched without claiming");
        let mut req = obj(body);
        let d = take(&mut req, Format::Anthropic, &cfg(true, false), true, vec![])
            .unwrap()
            .unwrap();
        assert_eq!(d.claimed.as_deref(), Some("web_search_20250305"));
        assert_eq!(d.web_search.unwrap()["allowed_domains"], json!(["a.org"]));
        assert_eq!(req["tools"][1]["name"], "web_search");
        assert!(req["system"].as_str().unwrap().ends_with("\n\nbe brief"));
        // A Responses client's function named web_search is its own.
        let mut req =
            obj(json!({"tools": [{"type": "function", "name": "web_search", "parameters": {}}]}));
        assert_eq!(
            take(&mut req, Format::Responses, &cfg(true, false), true, vec![]).unwrap(),
            None
        );
        let mut req = obj(json!({"input": "x", "tools": [{"type": "web_search_preview"}]}));
        let d = take(&mut req, Format::Responses, &cfg(true, false), true, vec![])
            .unwrap()
            .unwrap();
        assert_eq!(d.claimed.as_deref(), Some("web_search_preview"));
        assert!(req["instructions"].as_str().unwrap().contains("web_search"));
    }
}
