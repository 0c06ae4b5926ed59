//! OpenAI's Conversations API, as far as its SDKs use it: create, read, update (metadata)
//! and delete a conversation; add, list, read and delete its items. A Responses request with
//! `conversation` reads the items as its history and adds its own input and output to them
//! (`resolve`).

use serde_json::{json, Map, Value};

use super::{Reader, Responses};
use crate::error::{ErrorKind, GatewayError};
use crate::local::{Answer, Request};
use crate::records::Conversation;
use crate::translate::Format;

/// Items one request may add (OpenAI's limit).
const MAX_ADDED_ITEMS: usize = 20;

pub(super) fn not_found(id: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::NotFound,
        format!("Conversation with id '{id}' not found."),
    )
}

fn body(req: &Request<'_>) -> Result<Map<String, Value>, GatewayError> {
    if req.body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(GatewayError::invalid(
            "The request body must be a JSON object.",
        )),
    }
}

/// Items as given (a `message` without `type` gets it), each with an id.
pub(super) fn with_ids(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .map(|mut item| {
            if let Some(o) = item.as_object_mut() {
                if !o.contains_key("type") {
                    o.insert("type".into(), json!("message"));
                }
                if !o.get("id").is_some_and(Value::is_string) {
                    o.insert("id".into(), json!(crate::ids::generate_id("msg_")));
                }
            }
            item
        })
        .collect()
}

fn items_of(b: &Map<String, Value>, required: bool) -> Result<Vec<Value>, GatewayError> {
    match b.get("items") {
        None | Some(Value::Null) if !required => Ok(Vec::new()),
        Some(Value::Array(items))
            if items.len() <= MAX_ADDED_ITEMS && items.iter().all(Value::is_object) =>
        {
            Ok(with_ids(items.clone()))
        }
        Some(Value::Array(_)) => Err(GatewayError::invalid(format!(
            "'items' must be an array of at most {MAX_ADDED_ITEMS} item objects."
        ))
        .with_param("items")),
        _ => Err(GatewayError::invalid("Missing required parameter: 'items'.").with_param("items")),
    }
}

fn metadata_of(b: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    match b.get("metadata") {
        None => Ok(None),
        Some(m @ (Value::Object(_) | Value::Null)) => Ok(Some(m.clone())),
        Some(_) => {
            Err(GatewayError::invalid("'metadata' must be an object.").with_param("metadata"))
        }
    }
}

/// Answers a request under `/v1/conversations`.
pub async fn answer(responses: &Responses, reader: Reader<'_>, req: &Request<'_>) -> Answer {
    handle(responses, reader, req)
        .await
        .unwrap_or_else(|e| Answer::error(Format::Responses, &e))
}

async fn handle(
    responses: &Responses,
    reader: Reader<'_>,
    req: &Request<'_>,
) -> Result<Answer, GatewayError> {
    let rest = req.path.trim_end_matches('/');
    let rest = rest
        .strip_prefix("/v1/conversations")
        .unwrap_or("")
        .trim_start_matches('/');
    let parts: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    if !responses.cfg.store {
        return Err(GatewayError::invalid(
            "Conversations are not available: this gateway stores no responses (responses.store is false).",
        ));
    }
    let load = |id: &str| {
        let id = id.to_string();
        async move {
            responses
                .conversation(reader, &id)
                .await?
                .ok_or_else(|| not_found(&id))
        }
    };
    match (req.method, parts.as_slice()) {
        ("POST", []) => {
            let Reader::Key(key_id) = reader else {
                return Err(GatewayError::new(
                    ErrorKind::PermissionDenied,
                    "A conversation belongs to a virtual key: create it with one.",
                ));
            };
            let b = body(req)?;
            let now = crate::clock::now_secs();
            let c = responses.save_conversation(Conversation {
                id: crate::ids::generate_id("conv_"),
                key_id: key_id.to_string(),
                created_at: now,
                updated_at: now,
                metadata: metadata_of(&b)?.unwrap_or(json!({})),
                items: items_of(&b, false)?,
            });
            Ok(Answer::json(200, &c.object()))
        }
        ("GET", [id]) => Ok(Answer::json(200, &load(id).await?.object())),
        ("POST", [id]) => {
            let b = body(req)?;
            let mut c = (*load(id).await?).clone();
            if let Some(m) = metadata_of(&b)? {
                c.metadata = m;
            }
            Ok(Answer::json(200, &responses.save_conversation(c).object()))
        }
        ("DELETE", [id]) => {
            if !responses.delete_conversation(reader, id).await? {
                return Err(not_found(id));
            }
            Ok(Answer::json(
                200,
                &json!({"id": id, "object": "conversation.deleted", "deleted": true}),
            ))
        }
        ("POST", [id, "items"]) => {
            let added = items_of(&body(req)?, true)?;
            let c = load(id).await?;
            responses.append_to_conversation(&c, added.clone());
            let id_of = |i: Option<&Value>| i.and_then(|i| i.get("id")).cloned();
            Ok(Answer::json(
                200,
                &json!({"object": "list", "data": added, "first_id": id_of(added.first()),
                        "last_id": id_of(added.last()), "has_more": false}),
            ))
        }
        ("GET", [id, "items"]) => {
            let c = load(id).await?;
            Ok(Answer::json(
                200,
                &super::api::list_page(&c.items, req.query)?,
            ))
        }
        ("GET" | "DELETE", [id, "items", item_id]) => {
            let c = load(id).await?;
            let Some(pos) = c
                .items
                .iter()
                .position(|i| i.get("id").and_then(Value::as_str) == Some(item_id))
            else {
                return Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("Item with id '{item_id}' not found."),
                ));
            };
            if req.method == "GET" {
                return Ok(Answer::json(200, &c.items[pos]));
            }
            let mut changed = (*c).clone();
            changed.items.remove(pos);
            Ok(Answer::json(
                200,
                &responses.save_conversation(changed).object(),
            ))
        }
        _ => Err(GatewayError::new(
            ErrorKind::NotFound,
            format!(
                "No route for {} {}.",
                req.method,
                crate::local::printable(req.path)
            ),
        )),
    }
}
