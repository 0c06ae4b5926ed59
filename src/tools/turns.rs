//! The tool loop's work on whole (non-streamed) turns, in the client's format: the function
//! calls in a model's answer, the next request with the answer and the tool results
//! appended, the answer with tollgate's own calls hidden (mixed turns), the native result
//! blocks or items a client is shown, and the echoes of those stripped from a history.

use serde_json::{json, Map, Value};

use super::declare::ToolKind;
use crate::translate::Format;

/// One function call in a model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// The parsed arguments (an object; empty when the model sent something else).
    pub args: Map<String, Value>,
    /// A gateway tool's call (tollgate runs it).
    pub ours: Option<ToolKind>,
}

impl Call {
    /// The argument the tool runs on (`query`, `code`).
    pub fn input(&self) -> &str {
        let key = match self.ours {
            Some(ToolKind::WebSearch) => "query",
            _ => "code",
        };
        self.args.get(key).and_then(Value::as_str).unwrap_or("")
    }
}

/// A tool call tollgate ran, for the client's view and the accounting.
#[derive(Debug, Clone)]
pub struct ToolRun {
    pub call: Call,
    /// What the model read.
    pub output: String,
    /// Search results, for the native blocks.
    pub results: Vec<super::search::SearchResult>,
    pub ok: bool,
    /// An MCP tool's call: which server and tool (for the native blocks and items).
    pub mcp: Option<super::mcp::McpTarget>,
}

fn parse_args(v: Option<&Value>) -> Map<String, Value> {
    match v {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default(),
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// The function calls of a whole answer, in order; `offered`: the gateway tools offered.
pub fn calls(answer: &Value, format: Format, offered: &[ToolKind]) -> Vec<Call> {
    let ours = |name: &str| ToolKind::from_function(name).filter(|k| offered.contains(k));
    let mut out = Vec::new();
    match format {
        Format::Anthropic => {
            for b in answer["content"].as_array().into_iter().flatten() {
                if b["type"] == "tool_use" {
                    let name = b["name"].as_str().unwrap_or_default();
                    out.push(Call {
                        id: b["id"].as_str().unwrap_or_default().to_string(),
                        name: name.to_string(),
                        args: parse_args(b.get("input")),
                        ours: ours(name),
                    });
                }
            }
        }
        Format::Responses => {
            for item in answer["output"].as_array().into_iter().flatten() {
                if item["type"] == "function_call" {
                    let name = item["name"].as_str().unwrap_or_default();
                    out.push(Call {
                        id: item["call_id"].as_str().unwrap_or_default().to_string(),
                        name: name.to_string(),
                        args: parse_args(item.get("arguments")),
                        ours: ours(name),
                    });
                }
            }
        }
        _ => {
            let calls = &answer["choices"][0]["message"]["tool_calls"];
            for c in calls.as_array().into_iter().flatten() {
                let name = c["function"]["name"].as_str().unwrap_or_default();
                out.push(Call {
                    id: c["id"].as_str().unwrap_or_default().to_string(),
                    name: name.to_string(),
                    args: parse_args(c["function"].get("arguments")),
                    ours: ours(name),
                });
            }
        }
    }
    out
}

/// The request for the next turn: the model's answer and tollgate's tool results appended.
pub fn append_turn(req: &mut Map<String, Value>, format: Format, answer: &Value, runs: &[ToolRun]) {
    match format {
        Format::Anthropic => {
            let msgs = array(req, "messages");
            msgs.push(json!({"role": "assistant", "content": answer["content"].clone()}));
            let results: Vec<Value> = runs
                .iter()
                .map(|r| json!({"type": "tool_result", "tool_use_id": r.call.id, "content": r.output, "is_error": !r.ok}))
                .collect();
            msgs.push(json!({"role": "user", "content": results}));
        }
        Format::Responses => {
            if let Some(Value::String(s)) = req.get("input") {
                let s = s.clone();
                req.insert(
                    "input".into(),
                    json!([{"type": "message", "role": "user", "content": s}]),
                );
            }
            let input = array(req, "input");
            for item in answer["output"].as_array().into_iter().flatten() {
                let mut item = item.clone();
                // Ids of items the provider does not store would be looked up: drop them.
                if let Some(o) = item.as_object_mut() {
                    if o.get("type").and_then(Value::as_str) != Some("reasoning") {
                        o.remove("id");
                    }
                    o.remove("status");
                }
                input.push(item);
            }
            for r in runs {
                input.push(json!({"type": "function_call_output", "call_id": r.call.id, "output": r.output}));
            }
        }
        _ => {
            let msgs = array(req, "messages");
            let mut m = answer["choices"][0]["message"].clone();
            if let Some(o) = m.as_object_mut() {
                o.retain(|k, _| matches!(k.as_str(), "role" | "content" | "tool_calls"));
            }
            msgs.push(m);
            for r in runs {
                msgs.push(json!({"role": "tool", "tool_call_id": r.call.id, "content": r.output}));
            }
        }
    }
}

fn array<'a>(req: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let v = req.entry(key).or_insert_with(|| json!([]));
    if !v.is_array() {
        *v = json!([]);
    }
    v.as_array_mut().expect("an array")
}

/// A mixed turn: removes tollgate's calls from the answer the caller gets (the caller runs
/// its own; chat tool calls keep their order with indices renumbered).
pub fn hide_ours(answer: &mut Value, format: Format, offered: &[ToolKind]) {
    let ours = |name: Option<&str>| {
        name.and_then(ToolKind::from_function)
            .is_some_and(|k| offered.contains(&k))
    };
    match format {
        Format::Anthropic => {
            if let Some(c) = answer["content"].as_array_mut() {
                c.retain(|b| !(b["type"] == "tool_use" && ours(b["name"].as_str())));
            }
        }
        Format::Responses => {
            if let Some(o) = answer["output"].as_array_mut() {
                o.retain(|i| !(i["type"] == "function_call" && ours(i["name"].as_str())));
            }
        }
        _ => {
            if let Some(calls) = answer["choices"][0]["message"]["tool_calls"].as_array_mut() {
                calls.retain(|c| !ours(c["function"]["name"].as_str()));
                for (i, c) in calls.iter_mut().enumerate() {
                    if c.get("index").is_some() {
                        c["index"] = json!(i);
                    }
                }
            }
        }
    }
}

/// Shows the client what tollgate ran, in its grammar: Anthropic `server_tool_use` and
/// `web_search_tool_result` blocks (`mcp_tool_use` and `mcp_tool_result` for MCP calls),
/// Responses `web_search_call` (`mcp_call`) items; nothing on chat.
pub fn present(answer: &mut Value, format: Format, runs: &[ToolRun]) {
    let searches = runs
        .iter()
        .filter(|r| r.call.ours == Some(ToolKind::WebSearch));
    let mcp: Vec<Value> = runs
        .iter()
        .enumerate()
        .filter_map(|(n, r)| r.mcp.as_ref().map(|t| super::mcp::view(format, n, r, t)))
        .flatten()
        .collect();
    match format {
        Format::Anthropic => {
            let mut blocks = Vec::new();
            for (i, r) in searches.enumerate() {
                let id = server_id(i, &r.call.id);
                blocks.push(json!({"type": "server_tool_use", "id": id, "name": "web_search", "input": {"query": r.call.input()}}));
                let content = if r.ok {
                    Value::Array(r.results.iter().map(|s| json!({"type": "web_search_result", "url": s.url, "title": s.title, "encrypted_content": "", "page_age": s.published})).collect())
                } else {
                    json!({"type": "web_search_tool_result_error", "error_code": "unavailable"})
                };
                blocks.push(json!({"type": "web_search_tool_result", "tool_use_id": id, "content": content}));
            }
            blocks.extend(mcp);
            if blocks.is_empty() {
                return;
            }
            if let Some(c) = answer["content"].as_array_mut() {
                blocks.append(c);
                *c = blocks;
            }
        }
        Format::Responses => {
            let mut items: Vec<Value> = searches
                .map(|r| json!({"type": "web_search_call", "id": format!("ws_{}", r.call.id), "status": if r.ok { "completed" } else { "failed" }, "action": {"type": "search", "query": r.call.input()}}))
                .collect();
            items.extend(mcp);
            if items.is_empty() {
                return;
            }
            if let Some(o) = answer["output"].as_array_mut() {
                let mut all = items;
                all.append(o);
                *o = all;
            }
        }
        _ => {}
    }
}

/// Anthropic server tool ids start `srvtoolu_` (numbered: providers may reuse call ids
/// across turns).
fn server_id(n: usize, call_id: &str) -> String {
    let tail: String = call_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    format!("srvtoolu_{n}_{tail}")
}

/// Removes, from a client's history, the native blocks and items tollgate showed it before
/// (they mean nothing to a provider that did not make them).
pub fn strip_echoes(req: &mut Map<String, Value>, format: Format) {
    match format {
        Format::Anthropic => {
            if let Some(Value::Array(msgs)) = req.get_mut("messages") {
                for m in msgs.iter_mut() {
                    if let Some(c) = m["content"].as_array_mut() {
                        c.retain(|b| {
                            !matches!(
                                b["type"].as_str(),
                                Some(
                                    "server_tool_use"
                                        | "web_search_tool_result"
                                        | "mcp_tool_use"
                                        | "mcp_tool_result"
                                )
                            )
                        });
                        c.iter_mut().for_each(super::cite::strip);
                    }
                }
                // An assistant turn that held only those blocks is gone.
                msgs.retain(|m| !m["content"].as_array().is_some_and(|c| c.is_empty()));
            }
        }
        Format::Responses => {
            if let Some(Value::Array(items)) = req.get_mut("input") {
                items.retain(|i| {
                    !matches!(
                        i["type"].as_str(),
                        Some("web_search_call" | "mcp_call" | "mcp_list_tools")
                    )
                });
            }
        }
        _ => {}
    }
}

/// The text of a final answer (for the tests and logs).
pub fn text(answer: &Value, format: Format) -> String {
    match format {
        Format::Anthropic => answer["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["text"].as_str())
            .collect(),
        Format::Responses => answer["output"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["content"].as_array().into_iter().flatten())
            .filter_map(|c| c["text"].as_str())
            .collect(),
        _ => answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[ToolKind] = &[ToolKind::WebSearch, ToolKind::CodeExecution];

    fn run(call: Call, output: &str) -> ToolRun {
        ToolRun {
            call,
            output: output.into(),
            results: vec![],
            ok: true,
            mcp: None,
        }
    }

    #[test]
    fn chat_turn_and_mixed_calls() {
        let mut answer = json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "web_search", "arguments": "{\"query\":\"x\"}"}},
            {"id": "b", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}]}}]});
        let cs = calls(&answer, Format::Chat, BOTH);
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].ours, Some(ToolKind::WebSearch));
        assert_eq!(cs[0].input(), "x");
        assert_eq!(cs[1].ours, None);
        let mut req = json!({"messages": [{"role": "user", "content": "q"}]})
            .as_object()
            .unwrap()
            .clone();
        append_turn(
            &mut req,
            Format::Chat,
            &answer,
            &[run(cs[0].clone(), "res")],
        );
        assert_eq!(
            req["messages"][2],
            json!({"role": "tool", "tool_call_id": "a", "content": "res"})
        );
        hide_ours(&mut answer, Format::Chat, BOTH);
        let left = answer["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["id"], "b");
    }

    #[test]
    fn anthropic_blocks_and_echoes() {
        let answer = json!({"content": [{"type": "tool_use", "id": "toolu_1", "name": "web_search", "input": {"query": "q"}}]});
        let cs = calls(&answer, Format::Anthropic, BOTH);
        let mut r = run(cs[0].clone(), "res");
        r.results = vec![crate::tools::search::SearchResult {
            url: "https://a.org".into(),
            title: "A".into(),
            ..Default::default()
        }];
        let mut fin = json!({"content": [{"type": "text", "text": "done"}]});
        present(&mut fin, Format::Anthropic, &[r]);
        let types: Vec<&str> = fin["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["server_tool_use", "web_search_tool_result", "text"]);
        assert_eq!(fin["content"][1]["content"][0]["url"], "https://a.org");
        let mut req = json!({"messages": [{"role": "user", "content": "q"},
            {"role": "assistant", "content": fin["content"].clone()},
            {"role": "user", "content": "more"}]})
        .as_object()
        .unwrap()
        .clone();
        strip_echoes(&mut req, Format::Anthropic);
        assert_eq!(
            req["messages"][1]["content"],
            json!([{"type": "text", "text": "done"}])
        );
    }

    #[test]
    fn responses_turn() {
        let answer = json!({"output": [{"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "code_execution", "arguments": "{\"code\":\"print(1)\"}", "status": "completed"}]});
        let cs = calls(&answer, Format::Responses, BOTH);
        assert_eq!(cs[0].input(), "print(1)");
        let mut req = json!({"input": "hi"}).as_object().unwrap().clone();
        append_turn(
            &mut req,
            Format::Responses,
            &answer,
            &[run(cs[0].clone(), "1")],
        );
        let input = req["input"].as_array().unwrap();
        assert_eq!(input.len(), 3);
        assert_eq!(input[1]["call_id"], "call_1");
        assert!(input[1].get("id").is_none());
        assert_eq!(input[2]["type"], "function_call_output");
    }
}
