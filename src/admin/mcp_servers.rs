//! `/v1/mcp/servers`: the MCP servers registered in tollgate. Those from the config are
//! listed and readable but read-only; the API's are stored. Credentials are written, never
//! read back: answers say that one is set.

use serde_json::Value;

use super::{internal, no_route, not_found, page, store_of, Reply, Req, Resp};
use crate::clock;
use crate::error::{ErrorKind, GatewayError};
use crate::ledger::limits::parse_money;
use crate::mcp::registry::{validate, Source};
use crate::records::mcp::{McpAuth, McpTransport};
use crate::records::McpServerRecord;
use crate::state::State;

const FIELDS: &[&str] = &[
    "name",
    "url",
    "description",
    "transport",
    "auth",
    "price_per_call",
    "call_timeout_ms",
];

fn view(s: &McpServerRecord, source: Source) -> Value {
    s.public_json(source.as_str())
}

fn invalid(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message).with_param(param.to_string())
}

fn apply(req: &Req, s: &mut McpServerRecord) -> Result<(), GatewayError> {
    req.only(FIELDS)?;
    let b = &req.body;
    if let Some(v) = b.get("url") {
        s.url = v
            .as_str()
            .ok_or_else(|| invalid("url", "'url' must be a string."))?
            .to_string();
    }
    if let Some(v) = b.get("description") {
        s.description = match v {
            Value::Null => None,
            Value::String(d) => Some(d.clone()),
            _ => return Err(invalid("description", "'description' must be a string.")),
        };
    }
    if let Some(v) = b.get("transport") {
        s.transport = v.as_str().and_then(McpTransport::parse).ok_or_else(|| {
            invalid(
                "transport",
                "'transport' is 'streamable_http' (default) or 'sse'.",
            )
        })?;
    }
    if let Some(v) = b.get("auth") {
        s.auth = match v {
            Value::Null => None,
            v => Some(serde_json::from_value::<McpAuth>(v.clone()).map_err(|_| {
                invalid(
                    "auth",
                    "'auth' is {\"type\": \"header\", \"name\", \"value\"} or {\"type\": \"oauth\", \"token_url\", \"client_id\", \"client_secret\", \"scope\"?}, or null.",
                )
            })?),
        };
    }
    if let Some(v) = b.get("price_per_call") {
        s.price_per_call_micros = match v {
            Value::Null => None,
            v => Some(parse_money(v, "price_per_call")?),
        };
    }
    if let Some(v) = b.get("call_timeout_ms") {
        s.call_timeout_ms = match v {
            Value::Null => None,
            v => Some(v.as_u64().ok_or_else(|| {
                invalid(
                    "call_timeout_ms",
                    "'call_timeout_ms' must be a whole number of milliseconds.",
                )
            })?),
        };
    }
    validate(s).map_err(|(field, m)| invalid(field, format!("'{field}' {m}.")))?;
    s.updated_at = clock::now_secs();
    Ok(())
}

fn read_only(id: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::PermissionDenied,
        format!("MCP server '{id}' is defined in the config file and is read-only here."),
    )
}

async fn save(state: &State, s: McpServerRecord) -> Result<(), GatewayError> {
    store_of(state)?
        .put_mcp_server(&s)
        .await
        .map_err(internal)?;
    state.mcp.server_changed(&s.id).await;
    state.mcp.registry.upsert_stored(s);
    Ok(())
}

pub(super) async fn handle(state: &State, req: &Req) -> Reply {
    if req.seg(1) != Some("servers") || req.segs.len() > 3 {
        return Err(no_route(req));
    }
    let registry = &state.mcp.registry;
    match (req.method.as_str(), req.seg(2)) {
        ("GET", None) => page(
            registry.all(),
            |(s, _)| s.id.as_str(),
            req,
            |(s, src)| view(s, *src),
        ),
        ("GET", Some(id)) => {
            let (s, src) = registry
                .get(id)
                .ok_or_else(|| not_found("MCP server", id))?;
            Ok(Resp::json(200, view(&s, src)))
        }
        ("POST", None) => {
            store_of(state)?;
            let id = match req.body.get("name") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(invalid("name", "'name' is required (the server's id).")),
            };
            if registry.get(&id).is_some() {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!("MCP server '{id}' already exists."),
                )
                .with_status(409));
            }
            if !req.body.contains_key("url") {
                return Err(invalid("url", "'url' is required."));
            }
            let now = clock::now_secs();
            let mut s = McpServerRecord {
                id,
                url: String::new(),
                description: None,
                transport: McpTransport::default(),
                auth: None,
                price_per_call_micros: None,
                call_timeout_ms: None,
                created_at: now,
                updated_at: now,
            };
            apply(req, &mut s)?;
            let shown = view(&s, Source::Api);
            save(state, s).await?;
            Ok(Resp::json(201, shown))
        }
        ("POST" | "PATCH", Some(id)) => {
            let (cur, src) = registry
                .get(id)
                .ok_or_else(|| not_found("MCP server", id))?;
            if src == Source::Config {
                return Err(read_only(id));
            }
            if req.body.get("name").is_some_and(|n| n.as_str() != Some(id)) {
                return Err(invalid(
                    "name",
                    "'name' is the server's id and cannot change.",
                ));
            }
            let mut s = McpServerRecord::clone(&cur);
            apply(req, &mut s)?;
            let shown = view(&s, Source::Api);
            save(state, s).await?;
            Ok(Resp::json(200, shown))
        }
        ("DELETE", Some(id)) => {
            let (_, src) = registry
                .get(id)
                .ok_or_else(|| not_found("MCP server", id))?;
            if src == Source::Config {
                return Err(read_only(id));
            }
            if !store_of(state)?
                .delete_mcp_server(id)
                .await
                .map_err(internal)?
            {
                return Err(not_found("MCP server", id));
            }
            state.mcp.registry.remove_stored(id);
            state.mcp.server_changed(id).await;
            Ok(Resp::json(
                200,
                serde_json::json!({"id": id, "object": "mcp_server", "deleted": true}),
            ))
        }
        _ => Err(no_route(req)),
    }
}
