//! `GET /v1/tools`: the gateway-run tools, whether each one can be used here (a backend is
//! configured and the caller's tool policy allows it), the function the model is offered
//! and the `type`s a request declares it with.

use serde_json::json;

use super::Answer;
use crate::records::KeyRecord;
use crate::state::State;
use crate::tools::declare::ToolKind;
use crate::tools::policy;

pub fn tools(state: &State, key: &KeyRecord) -> Answer {
    let t = &state.tools;
    let users = state.ledger.users.load();
    let user = key.user_id.as_ref().and_then(|u| users.get(u));
    let entry = |kind: ToolKind, configured: bool, backend: Option<&str>| {
        let grant = policy::effective(kind, key, user.map(|u| &**u));
        let available = configured && grant.allowed;
        json!({
            "type": format!("tollgate_{}", kind.function()),
            "name": kind.function(),
            "description": kind.description(),
            "available": available,
            "allowed": grant.allowed,
            "max_calls": grant.max_calls,
            "backend": backend,
            "input_schema": kind.input_schema(),
            "accepted_types": kind.accepted_types(),
        })
    };
    let search = t.search.as_ref().map(|s| s.cfg.backend.as_str());
    Answer::json(
        200,
        &json!({
            "object": "list",
            "data": [
                entry(ToolKind::WebSearch, search.is_some(), search),
                entry(ToolKind::CodeExecution, t.sandbox.is_some(), t.sandbox.as_ref().map(|_| "sandbox_v1")),
            ],
            "max_tool_iterations": t.cfg.max_tool_iterations,
            "web_search_intercept": t.cfg.intercept && t.search.is_some(),
        }),
    )
}
