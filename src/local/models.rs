//! `GET /v1/models` and `GET /v1/models/{id}`: the router's rows ([`Router::model_entries`]) in
//! the client's shape. Anthropic clients (they send `anthropic-version`) get Anthropic's shape
//! and paging (`limit`, `after_id`, `before_id`) and error envelope; others OpenAI's.
//! `?provider=` keeps one provider's rows; `?limit=` is honoured in both shapes.
//!
//! [`Router::model_entries`]: crate::route::Router::model_entries

use serde_json::{json, Map, Value};
use std::time::Duration;

use super::{printable, Answer, Request};
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, GatewayError};
use crate::route::ListedModel;
use crate::state::State;
use crate::translate::Format;

/// How long a listing waits for providers that have no model list yet (Claude Code gives
/// the whole call 3 s).
const ON_DEMAND_WAIT: Duration = Duration::from_secs(1);

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// `endpoint` is [`Endpoint::Models`] (the list) or [`Endpoint::Model`] (one model, by path).
pub async fn models(state: &State, req: &Request<'_>, endpoint: Endpoint) -> Answer {
    let anthropic = req.header("anthropic-version").is_some();
    let dialect = if anthropic {
        Format::Anthropic
    } else {
        Format::Chat
    };
    match model_answer(state, req, endpoint, anthropic).await {
        Ok(v) => Answer::json(200, &v),
        Err(e) => Answer::error(dialect, &e),
    }
}

async fn model_answer(
    state: &State,
    req: &Request<'_>,
    endpoint: Endpoint,
    anthropic: bool,
) -> Result<Value, GatewayError> {
    let router = &state.router;
    let q = crate::admin::parse_query(req.query);
    let provider = q.get("provider").filter(|p| !p.is_empty());
    if let Some(p) = provider {
        if router.provider(p).is_none() {
            let names: Vec<&str> = router.providers().map(|p| p.name.as_str()).collect();
            return Err(GatewayError::invalid(format!(
                "No provider named '{}' is configured (configured: {}).",
                printable(p),
                names.join(", ")
            ))
            .with_param("provider"));
        }
    }
    if let Some(d) = router.discovery() {
        d.ensure(provider.map(String::as_str), ON_DEMAND_WAIT).await;
    }
    let mut rows = router.model_entries();
    if let Some(p) = provider {
        rows.retain(|r| r.owner == *p);
    }
    if endpoint == Endpoint::Model {
        let raw = req.path.trim_start_matches("/v1/models/");
        let id = crate::admin::percent_decode(raw);
        return match rows.iter().find(|r| r.id == id) {
            Some(r) => Ok(render(r, anthropic)),
            // Without discovery, any selector the router can place answers too (as before).
            None if router.discovery().is_none() => match router.resolve(&id) {
                Ok(route) => Ok(render(
                    &ListedModel {
                        id,
                        owner: route.provider.name.clone(),
                        info: None,
                    },
                    anthropic,
                )),
                Err(_) => Err(not_found(&id)),
            },
            None => Err(not_found(&id)),
        };
    }
    let limit = |default: usize| {
        q.get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(default)
            .clamp(1, 1000)
    };
    if !anthropic {
        if q.contains_key("limit") {
            rows.truncate(limit(usize::MAX));
        }
        let data: Vec<Value> = rows.iter().map(|r| render(r, false)).collect();
        return Ok(json!({"object": "list", "data": data}));
    }
    // Anthropic paging over the id order: `after_id` gives the page after it,
    // `before_id` the page just before it.
    let limit = limit(20);
    let mut page: &[ListedModel] = &rows;
    if let Some(after) = q.get("after_id") {
        let from = page.partition_point(|r| r.id.as_str() <= after.as_str());
        page = &page[from..];
    }
    let has_more;
    if let Some(before) = q.get("before_id") {
        let to = page.partition_point(|r| r.id.as_str() < before.as_str());
        page = &page[..to];
        has_more = page.len() > limit;
        page = &page[page.len().saturating_sub(limit)..];
    } else {
        has_more = page.len() > limit;
        page = &page[..page.len().min(limit)];
    }
    let data: Vec<Value> = page.iter().map(|r| render(r, true)).collect();
    Ok(json!({
        "data": data,
        "has_more": has_more,
        "first_id": page.first().map(|r| &r.id),
        "last_id": page.last().map(|r| &r.id),
    }))
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::NotFound,
        format!(
            "Model '{}' is not available on this gateway.",
            printable(id)
        ),
    )
    .with_param("model")
    .with_code("model_not_found")
}

/// One model object: OpenAI's `{id, object, created, owned_by}` or Anthropic's `{type, id,
/// display_name, created_at}`, plus `context_window` and `max_output_tokens` where the
/// provider said them.
fn render(r: &ListedModel, anthropic: bool) -> Value {
    let info = r.info.as_ref();
    let mut o = Map::new();
    if anthropic {
        let display = info
            .and_then(|i| i.display_name.clone())
            .unwrap_or_else(|| r.id.clone());
        let created_at = info
            .and_then(|i| {
                i.created_at
                    .clone()
                    .or_else(|| i.created.map(crate::records::period::rfc3339))
            })
            .unwrap_or_else(|| EPOCH.to_string());
        o.insert("type".into(), "model".into());
        o.insert("id".into(), r.id.clone().into());
        o.insert("display_name".into(), display.into());
        o.insert("created_at".into(), created_at.into());
    } else {
        o.insert("id".into(), r.id.clone().into());
        o.insert("object".into(), "model".into());
        o.insert(
            "created".into(),
            info.and_then(|i| i.created).unwrap_or(0).into(),
        );
        o.insert("owned_by".into(), r.owner.clone().into());
    }
    if let Some(n) = info.and_then(|i| i.context_window) {
        o.insert("context_window".into(), n.into());
    }
    if let Some(n) = info.and_then(|i| i.max_output_tokens) {
        o.insert("max_output_tokens".into(), n.into());
    }
    Value::Object(o)
}
