//! A stored response: what tollgate keeps of a Responses request it answered on a translated
//! route, so that a later request can continue it (`previous_response_id`), refer to its
//! items (`item_reference`), or read it back (`GET /v1/responses/{id}`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// The response id (`resp_…`), unguessable.
    pub id: String,
    /// The virtual key that produced it: the only key that may read or continue it.
    pub key_id: String,
    /// Seconds since the epoch (the response object's `created_at`).
    pub created_at: u64,
    /// The model the client asked for.
    pub model: String,
    /// The response it continued, if any: its history comes before `input`.
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// The provider family that produced the output (`anthropic`, `gemini`, `openai`, ...):
    /// its reasoning items are resent to that family only.
    pub family: String,
    /// The response object as the client received it (with its `output` items).
    pub response: Value,
    /// This request's own input items, as OpenAI lists them (each with an `id`).
    pub input: Vec<Value>,
    /// Bytes of the stored form (for the caps).
    #[serde(default)]
    pub size: u64,
}

impl StoredResponse {
    /// The output items.
    pub fn output(&self) -> &[Value] {
        self.response
            .get("output")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// Ids of every item it holds (input, then output), for `item_reference` lookups.
    pub fn item_ids(&self) -> impl Iterator<Item = &str> {
        self.input
            .iter()
            .chain(self.output())
            .filter_map(|i| i.get("id").and_then(Value::as_str))
    }

    /// The item with this id, from the input or the output.
    pub fn item(&self, id: &str) -> Option<&Value> {
        self.input
            .iter()
            .chain(self.output())
            .find(|i| i.get("id").and_then(Value::as_str) == Some(id))
    }

    /// Sets `size` to the length of the encoded record.
    pub fn measure(&mut self) {
        self.size = 0;
        self.size = serde_json::to_vec(self).map_or(0, |v| v.len() as u64);
    }
}

/// A conversation (OpenAI's Conversations API): items that responses created with
/// `conversation` read as their history and add their own input and output to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// `conv_…`, unguessable.
    pub id: String,
    /// The virtual key that created it: the only key that may use it.
    pub key_id: String,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Seconds since the epoch of the last change (retention counts from it).
    pub updated_at: u64,
    #[serde(default)]
    pub metadata: Value,
    /// Oldest first, each with an `id`.
    #[serde(default)]
    pub items: Vec<Value>,
}

impl Conversation {
    /// The object OpenAI answers for it.
    pub fn object(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": if self.metadata.is_null() { serde_json::json!({}) } else { self.metadata.clone() },
        })
    }
}
