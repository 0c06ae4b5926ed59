//! MCP servers named in a request, run by tollgate's tool loop when the provider cannot run
//! them itself (a translated route, or a chat request).
//!
//! - [`take`]: the servers of the request's three forms, taken out of it as [`ServerSpec`]s:
//!   Anthropic's MCP connector and Otari's `mcp_servers` (one field, both shapes), and
//!   Responses `tools` of type `mcp`. On a route where the provider runs MCP itself
//!   (Anthropic to Anthropic, Responses to OpenAI's Responses API) nothing is taken: the
//!   request goes through untouched.
//! - [`McpTools`]: the request's sessions (connected concurrently, each within its connect
//!   timeout), the tools they list offered as functions `mcp__<server>__<tool>`, the calls run
//!   (each within its call timeout; a failure is a `[tool error]` result the model reads), and
//!   the sessions closed at the end.
//! - The client's view: Anthropic `mcp_tool_use` / `mcp_tool_result` blocks, Responses
//!   `mcp_list_tools` and `mcp_call` items; nothing on chat.
//!
//! Registered servers (`mcp_server_ids`) resolve to the same `ServerSpec`s and join the list;
//! their calls are governed as calls through `/mcp` are: the key's per-tool rate limits
//! ([`McpTools::admit`]), the `tollgate_mcp_*` metrics, and the server's price per call
//! (billed with the turn by the tool loop). Servers a request names by URL are not priced.

use futures_util::future::join_all;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::declare::{self, ToolKind, MCP_PREFIX};
use super::settings::McpConfig;
use super::turns::{Call, ToolRun};
use crate::error::{ErrorKind, GatewayError};
use crate::mcp::outcome::{observe, Outcome};
use crate::mcp::policy::{Bound, RateLimits};
use crate::mcp::{connect, McpError, ServerSpec, Session, Tool};
use crate::translate::Format;

/// At most this many servers per request.
pub const MAX_SERVERS: usize = 20;
/// Function names are at most 64 characters (Anthropic's and OpenAI's limit).
const MAX_FUNCTION: usize = 64;

/// Which server and tool an MCP call went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpTarget {
    pub server: String,
    pub tool: String,
    /// A server registered in tollgate (`mcp_server_ids`): its calls are rate-limited by the
    /// key's MCP policy, priced at the server's price per call, and counted in the
    /// `tollgate_mcp_*` metrics, like calls through `/mcp`.
    pub registered: bool,
}

fn invalid(message: String, param: &str) -> GatewayError {
    GatewayError::invalid(message).with_param(param)
}

/// Takes the MCP servers out of `req` (none: an empty list, `req` unchanged). `native`: the
/// provider runs the client's MCP form itself, and the request keeps it. Refused (400): a
/// malformed server, a duplicate name, `require_approval` other than `never`.
pub fn take(
    req: &mut Map<String, Value>,
    format: Format,
    native: bool,
    cfg: &McpConfig,
) -> Result<Vec<ServerSpec>, GatewayError> {
    let mut specs = Vec::new();
    let keeps_connector = native && format == Format::Anthropic;
    if !keeps_connector {
        match req.remove("mcp_servers") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, s) in list.iter().enumerate() {
                    if let Some(spec) = connector(s, cfg, i)? {
                        specs.push(spec);
                    }
                }
            }
            Some(_) => {
                return Err(invalid(
                    "'mcp_servers' must be an array.".into(),
                    "mcp_servers",
                ))
            }
        }
    }
    if format == Format::Responses && !native {
        if let Some(Value::Array(tools)) = req.get_mut("tools") {
            let mut kept = Vec::with_capacity(tools.len());
            for (i, t) in std::mem::take(tools).into_iter().enumerate() {
                if t.get("type").and_then(Value::as_str) == Some("mcp") {
                    specs.push(responses_tool(&t, cfg, i)?);
                } else {
                    kept.push(t);
                }
            }
            *tools = kept;
            if tools.is_empty() {
                req.remove("tools");
            }
        }
    }
    if specs.len() > MAX_SERVERS {
        return Err(invalid(
            format!("At most {MAX_SERVERS} MCP servers may be named in one request."),
            "mcp_servers",
        ));
    }
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(invalid(
                format!("Two MCP servers are named '{}'.", s.name),
                "mcp_servers",
            ));
        }
    }
    Ok(specs)
}

fn string_field<'a>(v: &'a Value, key: &str, param: &str) -> Result<Option<&'a str>, GatewayError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("'{param}' must be a string."), param)),
    }
}

fn tool_list(v: &Value, param: &str) -> Result<Option<Vec<String>>, GatewayError> {
    // Responses also has `{"tool_names": [...]}`.
    let list = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => match o.get("tool_names") {
            Some(l) => l,
            None => return Ok(None),
        },
        l => l,
    };
    let Some(items) = list.as_array() else {
        return Err(invalid(
            format!("'{param}' must be an array of tool names."),
            param,
        ));
    };
    items
        .iter()
        .map(|t| {
            t.as_str()
                .map(String::from)
                .ok_or_else(|| invalid(format!("'{param}' must be an array of tool names."), param))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A server name usable in function names: letters, digits, `_` and `-`.
fn valid_name(name: &str, param: &str) -> Result<String, GatewayError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && !name.contains("__")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(name.to_string())
    } else {
        Err(invalid(
            format!("'{param}' must be 1 to 40 letters, digits, '_' or '-' (no '__')."),
            param,
        ))
    }
}

/// A request's server: its URL does not say which transport it speaks (Auto).
fn spec(name: String, url: &str, cfg: &McpConfig) -> ServerSpec {
    let mut s = ServerSpec::new(&name, url, cfg.connect_timeout, cfg.call_timeout);
    s.transport = crate::mcp::TransportKind::Auto;
    s
}

/// One entry of `mcp_servers`: Anthropic's `{"type":"url","url","name","authorization_token",
/// "tool_configuration":{"enabled","allowed_tools"}}` or Otari's `{name,url,
/// authorization_token,allowed_tools}`. None: a server whose tools are disabled.
fn connector(v: &Value, cfg: &McpConfig, i: usize) -> Result<Option<ServerSpec>, GatewayError> {
    let at = |k: &str| format!("mcp_servers[{i}].{k}");
    if !v.is_object() {
        return Err(invalid(
            format!("'mcp_servers[{i}]' must be an object."),
            &format!("mcp_servers[{i}]"),
        ));
    }
    if let Some(ty) = string_field(v, "type", &at("type"))? {
        if ty != "url" {
            return Err(invalid(
                format!("'{}' must be \"url\".", at("type")),
                &at("type"),
            ));
        }
    }
    let name = string_field(v, "name", &at("name"))?
        .ok_or_else(|| invalid(format!("'{}' is required.", at("name")), &at("name")))?;
    let url = string_field(v, "url", &at("url"))?
        .ok_or_else(|| invalid(format!("'{}' is required.", at("url")), &at("url")))?;
    let mut s = spec(valid_name(name, &at("name"))?, url, cfg);
    if let Some(token) = string_field(v, "authorization_token", &at("authorization_token"))? {
        s.headers.bearer(token).map_err(|_| {
            invalid(
                format!("'{}' is not a valid token.", at("authorization_token")),
                &at("authorization_token"),
            )
        })?;
    }
    s.allowed_tools = tool_list(
        v.get("allowed_tools").unwrap_or(&Value::Null),
        &at("allowed_tools"),
    )?;
    if let Some(tc) = v.get("tool_configuration").filter(|t| !t.is_null()) {
        if tc.get("enabled") == Some(&Value::Bool(false)) {
            return Ok(None);
        }
        let param = at("tool_configuration.allowed_tools");
        if let Some(list) = tool_list(tc.get("allowed_tools").unwrap_or(&Value::Null), &param)? {
            s.allowed_tools = Some(list);
        }
    }
    Ok(Some(s))
}

/// A Responses tool `{"type":"mcp","server_label","server_url","headers","allowed_tools",
/// "require_approval","authorization"}`.
fn responses_tool(v: &Value, cfg: &McpConfig, i: usize) -> Result<ServerSpec, GatewayError> {
    let at = |k: &str| format!("tools[{i}].{k}");
    if v.get("connector_id").is_some_and(|c| !c.is_null()) {
        return Err(invalid(
            "OpenAI connectors ('connector_id') run only on OpenAI's Responses API; name an MCP server by 'server_url'.".into(),
            &at("connector_id"),
        ));
    }
    match v.get("require_approval") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "never" => {}
        Some(_) => {
            return Err(invalid(
                "'require_approval' must be \"never\" on this route: tollgate runs the MCP calls itself, between model turns, and cannot pause for an approval.".into(),
                &at("require_approval"),
            ))
        }
    }
    let label = string_field(v, "server_label", &at("server_label"))?.ok_or_else(|| {
        invalid(
            format!("'{}' is required.", at("server_label")),
            &at("server_label"),
        )
    })?;
    let url = string_field(v, "server_url", &at("server_url"))?.ok_or_else(|| {
        invalid(
            format!("'{}' is required.", at("server_url")),
            &at("server_url"),
        )
    })?;
    let mut s = spec(valid_name(label, &at("server_label"))?, url, cfg);
    match v.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, value) in h {
                let value = value.as_str().ok_or_else(|| {
                    invalid(
                        format!("'{}' values must be strings.", at("headers")),
                        &at("headers"),
                    )
                })?;
                s.headers.insert(name, value).map_err(|_| {
                    invalid(
                        format!("'{}' has an invalid header '{name}'.", at("headers")),
                        &at("headers"),
                    )
                })?;
            }
        }
        Some(_) => {
            return Err(invalid(
                format!("'{}' must be an object.", at("headers")),
                &at("headers"),
            ))
        }
    }
    if let Some(token) = string_field(v, "authorization", &at("authorization"))? {
        s.headers.bearer(token).map_err(|_| {
            invalid(
                format!("'{}' is not a valid token.", at("authorization")),
                &at("authorization"),
            )
        })?;
    }
    s.allowed_tools = tool_list(
        v.get("allowed_tools").unwrap_or(&Value::Null),
        &at("allowed_tools"),
    )?;
    Ok(s)
}

/// A connection or listing failure as the client's error: a refused URL is the request's
/// fault (400), the rest the server's (502, or 504 for a timeout).
pub fn error(e: &McpError) -> GatewayError {
    match e {
        McpError::Refused { .. } | McpError::InvalidHeader(_) => {
            GatewayError::invalid(e.to_string())
                .with_param("mcp_servers")
                .with_code("mcp_server_not_allowed")
        }
        McpError::Timeout { .. } => GatewayError::new(ErrorKind::UpstreamTimeout, e.to_string())
            .with_code("mcp_server_timeout"),
        _ => GatewayError::new(ErrorKind::Upstream, e.to_string())
            .with_code("mcp_server_unreachable"),
    }
}

/// The request's MCP sessions and the functions offered for their tools.
pub struct McpTools {
    sessions: Vec<Session>,
    /// Per session, the tools it listed (allowed ones only).
    listed: Vec<Vec<Tool>>,
    /// Per session, whether its server is registered in tollgate.
    registered: Vec<bool>,
    /// Function name → (session, tool name).
    functions: HashMap<String, (usize, String)>,
}

impl McpTools {
    /// Connects to every server concurrently and lists its tools. The first failure fails
    /// the request (the sessions opened are closed).
    pub async fn connect(specs: &[ServerSpec], cfg: &McpConfig) -> Result<McpTools, GatewayError> {
        let policy = cfg.policy();
        let opened = join_all(specs.iter().map(|s| async move {
            let policy = if s.registered {
                crate::outbound::HostPolicy::ANY
            } else {
                policy
            };
            let session = connect(s, policy).await?;
            match session.list_tools().await {
                Ok(tools) => Ok((session, tools)),
                Err(e) => {
                    session.close().await;
                    Err(e)
                }
            }
        }))
        .await;
        let mut sessions = Vec::new();
        let mut listed = Vec::new();
        let mut failure = None;
        for o in opened {
            match o {
                Ok((s, t)) => {
                    sessions.push(s);
                    listed.push(t);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            join_all(sessions.into_iter().map(Session::close)).await;
            return Err(error(&e));
        }
        let mut functions = HashMap::new();
        for (i, (session, tools)) in sessions.iter().zip(&listed).enumerate() {
            for t in tools {
                let name = function_name(session.name(), &t.name);
                functions.entry(name).or_insert((i, t.name.to_string()));
            }
        }
        Ok(McpTools {
            sessions,
            listed,
            // Every spec has its session, in order (one failure fails them all).
            registered: specs.iter().map(|s| s.registered).collect(),
            functions,
        })
    }

    /// Adds the tools to the request's `tools`, as functions in `format`.
    pub fn offer(&self, req: &mut Map<String, Value>, format: Format) {
        let tools = req.entry("tools").or_insert_with(|| json!([]));
        if !tools.is_array() {
            *tools = json!([]);
        }
        let list = tools.as_array_mut().expect("an array");
        let mut names: Vec<(&String, &(usize, String))> = self.functions.iter().collect();
        names.sort();
        for (name, (i, tool)) in names {
            let Some(t) = self.listed[*i].iter().find(|t| t.name == tool.as_str()) else {
                continue;
            };
            let desc = format!(
                "{} (tool '{}' of the MCP server '{}')",
                t.description.as_deref().unwrap_or(""),
                tool,
                self.sessions[*i].name()
            );
            let schema = Value::Object((*t.input_schema).clone());
            list.push(declare::function(format, name, desc.trim_start(), &schema));
        }
    }

    /// The server and tool a function stands for.
    pub fn target(&self, function: &str) -> Option<McpTarget> {
        let (i, tool) = self.functions.get(function)?;
        Some(McpTarget {
            server: self.sessions[*i].name().to_string(),
            tool: tool.clone(),
            registered: self.registered[*i],
        })
    }

    /// Per-tool rate limits on registered servers (the key's and user's MCP policies,
    /// `bounds`), for the calls `verdicts` still lets run: a call over a limit does not run,
    /// the model reads why (and when to retry), and it is counted as `/mcp` counts one.
    pub fn admit(
        &self,
        calls: &[Call],
        verdicts: &mut [Option<ToolRun>],
        rates: &RateLimits,
        bounds: &[Bound],
        now_secs: u64,
    ) {
        for (call, verdict) in calls.iter().zip(verdicts.iter_mut()) {
            if verdict.is_some() || call.ours != Some(ToolKind::Mcp) {
                continue;
            }
            let Some(target) = self.target(&call.name).filter(|t| t.registered) else {
                continue;
            };
            if let Err(retry) = rates.admit(bounds, &target.server, &target.tool, now_secs) {
                observe(&target.server, Outcome::RateLimited, Duration::ZERO);
                *verdict = Some(ToolRun {
                    call: call.clone(),
                    output: format!(
                        "{} rate limit of tool '{}' on the MCP server '{}' reached: retry in {retry} s.",
                        super::TOOL_ERROR,
                        target.tool,
                        target.server
                    ),
                    results: vec![],
                    ok: false,
                    mcp: Some(target),
                });
            }
        }
    }

    /// Runs one call of the model (its function is one of ours). Never fails the request:
    /// an unknown tool, a timeout or a server failure is a `[tool error]` the model reads.
    pub async fn run(&self, call: &Call) -> ToolRun {
        let Some(target) = self.target(&call.name) else {
            return ToolRun {
                call: call.clone(),
                output: format!(
                    "{} there is no tool named '{}'",
                    super::TOOL_ERROR,
                    call.name
                ),
                results: vec![],
                ok: false,
                mcp: None,
            };
        };
        let (i, _) = self.functions[&call.name];
        let started = Instant::now();
        let answer = self.sessions[i]
            .call_tool(&target.tool, Some(call.args.clone()), None)
            .await;
        if target.registered {
            observe(&target.server, Outcome::of(&answer), started.elapsed());
        }
        let (output, ok) = match answer {
            Ok(result) => {
                let text = result_text(&result);
                if result.is_error == Some(true) {
                    (format!("{} {text}", super::TOOL_ERROR), false)
                } else {
                    (text, true)
                }
            }
            Err(e) => (format!("{} {e}", super::TOOL_ERROR), false),
        };
        ToolRun {
            call: call.clone(),
            output,
            results: vec![],
            ok,
            mcp: Some(target),
        }
    }

    /// Responses: one `mcp_list_tools` item per server.
    pub fn list_items(&self) -> Vec<Value> {
        self.sessions
            .iter()
            .zip(&self.listed)
            .enumerate()
            .map(|(i, (s, tools))| {
                let tools: Vec<Value> = tools
                    .iter()
                    .map(|t| {
                        json!({
                            "name": t.name,
                            "description": t.description,
                            "input_schema": Value::Object((*t.input_schema).clone()),
                            "annotations": t.annotations,
                        })
                    })
                    .collect();
                json!({
                    "type": "mcp_list_tools",
                    "id": format!("mcpl_{}_{}", crate::ids::generate_id(""), i),
                    "server_label": s.name(),
                    "tools": tools,
                })
            })
            .collect()
    }

    /// Ends every session (concurrently).
    pub async fn close(self) {
        join_all(self.sessions.into_iter().map(Session::close)).await;
    }
}

/// `mcp__<server>__<tool>`, the tool's characters outside `[A-Za-z0-9_-]` as `_`, cut to 64.
pub fn function_name(server: &str, tool: &str) -> String {
    let tool: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("{MCP_PREFIX}{server}__{tool}");
    name.truncate(MAX_FUNCTION);
    name
}

/// The text of a tool's result: its text blocks, other content as JSON.
fn result_text(result: &crate::mcp::CallToolResult) -> String {
    let v = serde_json::to_value(result).unwrap_or(Value::Null);
    let mut parts: Vec<String> = Vec::new();
    for c in v["content"].as_array().into_iter().flatten() {
        match c["text"].as_str() {
            Some(t) if c["type"] == "text" => parts.push(t.to_string()),
            _ => parts.push(c.to_string()),
        }
    }
    if parts.is_empty() {
        if let Some(s) = v.get("structuredContent") {
            parts.push(s.to_string());
        }
    }
    parts.join("\n")
}

/// The client's view of one MCP call: Anthropic blocks (`n` numbers the ids), Responses item.
pub fn view(format: Format, n: usize, run: &ToolRun, target: &McpTarget) -> Vec<Value> {
    let tail: String = run
        .call
        .id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    match format {
        Format::Anthropic => {
            let id = format!("mcptoolu_{n}_{tail}");
            let output = run
                .output
                .strip_prefix(super::TOOL_ERROR)
                .map(str::trim_start)
                .unwrap_or(&run.output);
            vec![
                json!({"type": "mcp_tool_use", "id": id, "name": target.tool, "server_name": target.server, "input": Value::Object(run.call.args.clone())}),
                json!({"type": "mcp_tool_result", "tool_use_id": id, "is_error": !run.ok, "content": [{"type": "text", "text": output}]}),
            ]
        }
        Format::Responses => {
            let (output, error) = if run.ok {
                (Value::String(run.output.clone()), Value::Null)
            } else {
                let e = run
                    .output
                    .strip_prefix(super::TOOL_ERROR)
                    .map(str::trim_start)
                    .unwrap_or(&run.output);
                (Value::Null, Value::String(e.to_string()))
            };
            vec![json!({
                "type": "mcp_call",
                "id": format!("mcp_{n}_{tail}"),
                "server_label": target.server,
                "name": target.tool,
                "arguments": Value::Object(run.call.args.clone()).to_string(),
                "output": output,
                "error": error,
                "status": if run.ok { "completed" } else { "failed" },
            })]
        }
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_three_forms() {
        let cfg = McpConfig::default();
        let mut req = obj(json!({"mcp_servers": [
            {"type": "url", "url": "https://a.example/mcp", "name": "a", "authorization_token": "tok-1",
             "tool_configuration": {"enabled": true, "allowed_tools": ["x"]}},
            {"type": "url", "url": "https://b.example/mcp", "name": "b", "tool_configuration": {"enabled": false}},
            {"url": "https://c.example/mcp", "name": "c", "allowed_tools": ["y", "z"]}]}));
        let specs = take(&mut req, Format::Anthropic, false, &cfg).unwrap();
        assert!(!req.contains_key("mcp_servers"));
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(specs[0].allowed_tools, Some(vec!["x".to_string()]));
        assert_eq!(
            specs[0].headers.names().collect::<Vec<_>>(),
            ["authorization"]
        );
        assert_eq!(specs[1].allowed_tools.as_ref().unwrap().len(), 2);
        // Native Anthropic: untouched.
        let mut native =
            obj(json!({"mcp_servers": [{"type": "url", "url": "https://a.example", "name": "a"}]}));
        assert!(take(&mut native, Format::Anthropic, true, &cfg)
            .unwrap()
            .is_empty());
        assert!(native.contains_key("mcp_servers"));
        // Responses.
        let mut req = obj(json!({"tools": [
            {"type": "mcp", "server_label": "r", "server_url": "https://r.example/mcp",
             "headers": {"X-Key": "k"}, "allowed_tools": {"tool_names": ["q"]}, "require_approval": "never"},
            {"type": "function", "name": "mine", "parameters": {}}]}));
        let specs = take(&mut req, Format::Responses, false, &cfg).unwrap();
        assert_eq!(specs[0].name, "r");
        assert_eq!(specs[0].allowed_tools, Some(vec!["q".to_string()]));
        assert_eq!(req["tools"].as_array().unwrap().len(), 1);
        let mut approval = obj(
            json!({"tools": [{"type": "mcp", "server_label": "r", "server_url": "https://r.example", "require_approval": "always"}]}),
        );
        let e = take(&mut approval, Format::Responses, false, &cfg).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.message.contains("require_approval"), "{}", e.message);
        let mut native = approval.clone();
        assert!(take(&mut native, Format::Responses, true, &cfg)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn refusals() {
        let cfg = McpConfig::default();
        for bad in [
            json!({"mcp_servers": "x"}),
            json!({"mcp_servers": [{"url": "https://a.example"}]}),
            json!({"mcp_servers": [{"name": "a b", "url": "https://a.example"}]}),
            json!({"mcp_servers": [{"name": "a", "url": "https://a.example"}, {"name": "a", "url": "https://b.example"}]}),
        ] {
            let mut req = obj(bad.clone());
            assert!(take(&mut req, Format::Chat, false, &cfg).is_err(), "{bad}");
        }
    }

    #[test]
    fn function_names() {
        assert_eq!(function_name("calc", "add"), "mcp__calc__add");
        assert_eq!(function_name("s", "a.b/c"), "mcp__s__a_b_c");
        assert_eq!(function_name("s", &"x".repeat(100)).len(), 64);
    }
}
