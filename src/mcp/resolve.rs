//! `mcp_server_ids` in a request (Otari's field): servers registered in tollgate, named by
//! id, turned into the [`ServerSpec`]s the tool loop connects to, like the servers a request
//! names itself. Only the servers the key's MCP policy names, and on each only the tools it
//! allows (the spec's `allowed_tools`, from the server's cached tool list); tollgate's own
//! credential, never the caller's.

use serde_json::Value;

use super::client::ServerSpec;
use super::policy::{bounding, may_call, may_use_server};
use super::Mcp;
use crate::error::{ErrorKind, GatewayError};
use crate::records::{KeyRecord, UserRecord};

fn unavailable(id: &str) -> GatewayError {
    let shown: String = id.chars().take(64).filter(|c| !c.is_control()).collect();
    // Unknown and forbidden read the same: a key learns nothing of servers it may not use.
    GatewayError::new(
        ErrorKind::PermissionDenied,
        format!("No MCP server '{shown}' is available to this key."),
    )
    .with_param("mcp_server_ids")
}

/// The specs of the servers `ids` names (a JSON array of ids).
pub async fn specs(
    mcp: &Mcp,
    key: &KeyRecord,
    user: Option<&UserRecord>,
    ids: &Value,
) -> Result<Vec<ServerSpec>, GatewayError> {
    let ids: Vec<&str> = match ids {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a.iter().map(Value::as_str).collect::<Option<_>>(),
        _ => None,
    }
    .ok_or_else(|| {
        GatewayError::invalid("'mcp_server_ids' must be an array of registered MCP server ids.")
            .with_param("mcp_server_ids")
    })?;
    let bounds = bounding(key, user);
    let mut out: Vec<ServerSpec> = Vec::with_capacity(ids.len());
    for id in ids {
        if out.iter().any(|s| s.name == id) {
            continue;
        }
        let server = match mcp.registry.get(id) {
            Some((s, _)) if may_use_server(&bounds, id) => s,
            _ => return Err(unavailable(id)),
        };
        let tools = mcp
            .upstreams
            .tools(&server, &mcp.settings)
            .await
            .map_err(|e| GatewayError::new(ErrorKind::Upstream, e.to_string()))?;
        let (mut spec, _) = mcp
            .upstreams
            .spec(&server, &mcp.settings)
            .await
            .map_err(|e| GatewayError::new(ErrorKind::Upstream, e.to_string()))?;
        spec.registered = true;
        spec.allowed_tools = Some(
            tools
                .iter()
                .filter(|t| may_call(&bounds, id, &t.name))
                .map(|t| t.name.to_string())
                .collect(),
        );
        out.push(spec);
    }
    Ok(out)
}
