//! The request side of stored Responses: a Responses request on a translated route gets its
//! chain's history (`previous_response_id`) and its referenced items (`item_reference`) put
//! back into `input`, so that translation sees a whole, stateless request; and the
//! [`Turn`] it leaves tells the answer side what to store.

use serde_json::{json, Map, Value};
use std::sync::Arc;

use super::{Reader, Responses};
use crate::error::{ErrorKind, GatewayError};
use crate::records::{Conversation, StoredResponse};
use crate::translate::Format;

/// A chain longer than this is refused (a loop in stored data, or a runaway client).
const MAX_CHAIN: usize = 10_000;

/// What a Responses request on a translated route leaves for its answer.
#[derive(Debug)]
pub struct Turn {
    /// The response it continues (echoed in the answer).
    pub previous_response_id: Option<String>,
    /// The conversation it belongs to (echoed, and its input and output added to it).
    pub conversation: Option<Arc<Conversation>>,
    /// The answer is stored as a response.
    store: bool,
    capture: Capture,
}

struct Capture {
    responses: Arc<Responses>,
    key_id: String,
    model: String,
    /// The request's own input items (references resolved, each with an id).
    input: Vec<Value>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The provider family a stored response came from (its reasoning items go back to it only).
pub fn family(f: Format) -> &'static str {
    match f {
        Format::Anthropic => "anthropic",
        Format::Gemini => "gemini",
        Format::Chat => "chat",
        Format::Responses => "responses",
    }
}

impl Turn {
    /// The answer is stored.
    pub fn stores(&self) -> bool {
        self.store
    }

    /// Keeps a finished answer from a provider of format `upstream`: stored as a response,
    /// and added to its conversation (a failed one is not: OpenAI's clients cannot continue
    /// it either).
    pub fn commit(&self, response: Value, upstream: Format) {
        let c = &self.capture;
        let status = response.get("status").and_then(Value::as_str);
        if !matches!(status, Some("completed" | "incomplete")) {
            return;
        }
        let Some(id) = response.get("id").and_then(Value::as_str).map(String::from) else {
            return;
        };
        if let Some(conv) = &self.conversation {
            let mut items = c.input.clone();
            items.extend(
                response
                    .get("output")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            c.responses.append_to_conversation(conv, items);
        }
        if !self.store {
            return;
        }
        c.responses.keep(StoredResponse {
            id,
            key_id: c.key_id.clone(),
            created_at: response
                .get("created_at")
                .and_then(Value::as_u64)
                .unwrap_or_else(crate::clock::now_secs),
            model: c.model.clone(),
            previous_response_id: self.previous_response_id.clone(),
            family: family(upstream).to_string(),
            response,
            input: c.input.clone(),
            size: 0,
        });
    }
}

fn not_found_previous(id: &str) -> GatewayError {
    // OpenAI answers a missing previous response with a 400 and this code.
    GatewayError::invalid(format!("Previous response with id '{id}' not found."))
        .with_param("previous_response_id")
        .with_code("previous_response_not_found")
}

fn not_found_item(id: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::NotFound,
        format!("Item with id '{id}' not found."),
    )
    .with_param("input")
}

/// Items of a stored response in a prompt for a provider of `family`: reasoning goes back
/// only to the family that produced it.
fn for_family<'a>(
    items: impl Iterator<Item = &'a Value>,
    produced_by: &str,
    family: &str,
    out: &mut Vec<Value>,
) {
    for i in items {
        let reasoning = i.get("type").and_then(Value::as_str) == Some("reasoning");
        if !reasoning || produced_by == family {
            out.push(i.clone());
        }
    }
}

/// `input` as a list of items (a string is one user message, as OpenAI lists it).
fn input_items(req: &Map<String, Value>) -> Result<Vec<Value>, GatewayError> {
    match req.get("input") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": s}],
        })]),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(
            GatewayError::invalid("'input' must be a string or an array of items.")
                .with_param("input"),
        ),
    }
}

fn is_reference(i: &Value) -> bool {
    i.get("type").and_then(Value::as_str) == Some("item_reference")
}

/// Resolves a Responses request of `key_id` bound for a provider of format `upstream`:
/// a chain's history and referenced items are put into `input` (and `previous_response_id`
/// removed). Returns the turn, and whether the request changed (it must be re-encoded).
/// Nothing happens (None, false) when stored responses are off, or the request neither
/// refers to stored ones nor is to be stored.
pub async fn prepare(
    responses: &Arc<Responses>,
    key_id: &str,
    req: &mut Map<String, Value>,
    upstream: Format,
) -> Result<(Option<Turn>, bool), GatewayError> {
    if !responses.cfg.store {
        return Ok((None, false)); // translation refuses chains, as without a store
    }
    let previous = match req.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(
                GatewayError::invalid("'previous_response_id' must be a string.")
                    .with_param("previous_response_id"),
            )
        }
    };
    let conversation_id = match req.get("conversation") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) if o.get("id").is_some_and(Value::is_string) => {
            o.get("id").and_then(Value::as_str).map(String::from)
        }
        Some(_) => {
            return Err(GatewayError::invalid(
                "'conversation' must be a conversation id or an object with an 'id'.",
            )
            .with_param("conversation"))
        }
    };
    if previous.is_some() && conversation_id.is_some() {
        return Err(GatewayError::invalid(
            "Mutually exclusive parameters: Ensure you are only providing one of: 'previous_response_id' or 'conversation'.",
        )
        .with_param("conversation"));
    }
    let store = req.get("store") != Some(&Value::Bool(false));
    let references = req
        .get("input")
        .and_then(Value::as_array)
        .is_some_and(|items| items.iter().any(is_reference));
    if previous.is_none() && conversation_id.is_none() && !references && !store {
        return Ok((None, false)); // a stateless request (Codex): nothing copied
    }
    let conversation = match &conversation_id {
        Some(id) => Some(
            responses
                .conversation(Reader::Key(key_id), id)
                .await?
                .ok_or_else(|| super::conversations::not_found(id).with_param("conversation"))?,
        ),
        None => None,
    };
    let mut own = input_items(req)?;
    let family = family(upstream);
    // The request's own items, references replaced by what they refer to.
    let mut upstream_own = Vec::with_capacity(own.len());
    for item in own.iter_mut() {
        if is_reference(item) {
            let id = item.get("id").and_then(Value::as_str).unwrap_or("");
            let (found, holder) = responses
                .item(key_id, id)
                .await?
                .ok_or_else(|| not_found_item(id))?;
            for_family(
                std::iter::once(&found),
                &holder.family,
                family,
                &mut upstream_own,
            );
            *item = found;
        } else {
            upstream_own.push(item.clone());
        }
    }
    let changed = previous.is_some() || conversation.is_some() || references;
    if changed {
        let mut input = match (&previous, &conversation) {
            (Some(p), _) => history(responses, key_id, p, family).await?,
            // A conversation's items carry no family: its reasoning items stay out.
            (None, Some(c)) => {
                let mut items = Vec::new();
                for_family(c.items.iter(), "", family, &mut items);
                items
            }
            (None, None) => Vec::new(),
        };
        input.extend(upstream_own);
        req.remove("previous_response_id");
        req.remove("conversation");
        req.insert("input".into(), Value::Array(input));
    }
    // Input items get ids, as OpenAI's do (input_items and conversations list them).
    let input = super::conversations::with_ids(own);
    Ok((
        Some(Turn {
            previous_response_id: previous,
            conversation,
            store,
            capture: Capture {
                responses: responses.clone(),
                key_id: key_id.to_string(),
                model: req
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                input,
            },
        }),
        changed,
    ))
}

/// The items of the chain ending at `last`, oldest first: each response's input, then its
/// output.
async fn history(
    responses: &Responses,
    key_id: &str,
    last: &str,
    family: &str,
) -> Result<Vec<Value>, GatewayError> {
    let mut chain: Vec<Arc<StoredResponse>> = Vec::new();
    let mut next = Some(last.to_string());
    while let Some(id) = next {
        if chain.len() >= MAX_CHAIN {
            return Err(GatewayError::invalid(format!(
                "The chain of previous responses is longer than {MAX_CHAIN}."
            ))
            .with_param("previous_response_id"));
        }
        match responses.get(Reader::Key(key_id), &id).await? {
            Some(r) => {
                next = r.previous_response_id.clone();
                chain.push(r);
            }
            // The newest must exist; an older one deleted or expired ends the history there.
            None if chain.is_empty() => return Err(not_found_previous(&id)),
            None => break,
        }
    }
    let mut items = Vec::new();
    for r in chain.iter().rev() {
        for_family(
            r.input.iter().chain(r.output()),
            &r.family,
            family,
            &mut items,
        );
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responses::settings::ResponsesConfig;
    use crate::store::StoreSlot;

    fn service() -> Arc<Responses> {
        Arc::new(Responses::new(
            ResponsesConfig::default(),
            Arc::new(StoreSlot::default()),
        ))
    }

    fn record(
        id: &str,
        key: &str,
        previous: Option<&str>,
        family: &str,
        output: Value,
    ) -> StoredResponse {
        StoredResponse {
            id: id.into(),
            key_id: key.into(),
            created_at: crate::clock::now_secs(),
            model: "m".into(),
            previous_response_id: previous.map(String::from),
            family: family.into(),
            response: json!({"id": id, "status": "completed", "output": output}),
            input: vec![
                json!({"type": "message", "id": format!("in_{id}"), "role": "user", "content": id}),
            ],
            size: 0,
        }
    }

    fn req(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn chains_resolve_oldest_first_and_reasoning_stays_with_its_family() {
        let s = service();
        let reasoning = json!({"type": "reasoning", "id": "rs_1", "summary": []});
        let answer = |t: &str| json!({"type": "message", "id": format!("msg_{t}"), "role": "assistant", "content": t});
        s.keep(record(
            "resp_1",
            "k",
            None,
            "anthropic",
            json!([reasoning, answer("a1")]),
        ));
        s.keep(record(
            "resp_2",
            "k",
            Some("resp_1"),
            "gemini",
            json!([answer("a2")]),
        ));
        let ids = |r: &Map<String, Value>| -> Vec<String> {
            r["input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap_or("-").to_string())
                .collect()
        };
        // On Anthropic, Anthropic's reasoning item comes back.
        let mut r = req(json!({"model": "m", "input": "next", "previous_response_id": "resp_2"}));
        let (turn, changed) = prepare(&s, "k", &mut r, Format::Anthropic).await.unwrap();
        assert!(changed && turn.unwrap().stores());
        assert_eq!(
            ids(&r),
            ["in_resp_1", "rs_1", "msg_a1", "in_resp_2", "msg_a2", "-"]
        );
        assert!(r.get("previous_response_id").is_none());
        // On Gemini it does not.
        let mut r = req(json!({"model": "m", "input": "next", "previous_response_id": "resp_2"}));
        prepare(&s, "k", &mut r, Format::Gemini).await.unwrap();
        assert_eq!(ids(&r), ["in_resp_1", "msg_a1", "in_resp_2", "msg_a2", "-"]);
        // Another key finds nothing.
        let mut r = req(json!({"model": "m", "input": "x", "previous_response_id": "resp_2"}));
        let e = prepare(&s, "other", &mut r, Format::Anthropic)
            .await
            .unwrap_err();
        assert_eq!(e.code, Some("previous_response_not_found"));
        let mut r =
            req(json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_a1"}]}));
        assert_eq!(
            prepare(&s, "other", &mut r, Format::Anthropic)
                .await
                .unwrap_err()
                .status(),
            404
        );
        // A reference to a reasoning item follows the same rule.
        let mut r = req(
            json!({"model": "m", "input": [{"type": "item_reference", "id": "rs_1"}, {"type": "item_reference", "id": "msg_a2"}]}),
        );
        prepare(&s, "k", &mut r, Format::Chat).await.unwrap();
        assert_eq!(ids(&r), ["msg_a2"]);
    }

    #[tokio::test]
    async fn stateless_requests_are_left_alone() {
        let s = service();
        let mut r = req(json!({"model": "m", "input": "hi", "store": false}));
        let before = r.clone();
        let (turn, changed) = prepare(&s, "k", &mut r, Format::Chat).await.unwrap();
        assert!(turn.is_none() && !changed);
        assert_eq!(r, before);
        // Stored responses off: nothing resolved (translation refuses the chain).
        let off = Arc::new(Responses::new(
            ResponsesConfig {
                store: false,
                ..Default::default()
            },
            Arc::new(StoreSlot::default()),
        ));
        let mut r = req(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}));
        let (turn, changed) = prepare(&off, "k", &mut r, Format::Chat).await.unwrap();
        assert!(turn.is_none() && !changed && r.contains_key("previous_response_id"));
    }
}
