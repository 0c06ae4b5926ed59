//! Stored Responses on translated routes: what OpenAI would have kept of a Responses
//! request (`store`, its default true), kept by tollgate when the model behind it speaks
//! another format, so that `previous_response_id`, `item_reference` and
//! `GET /v1/responses/{id}` work on every model.
//!
//! - [`resolve`]: the request side: a chain's history and referenced items put back into
//!   `input` before translation, and the [`resolve::Turn`] the answer side stores.
//! - [`api`]: `GET`/`DELETE /v1/responses/{id}`, `…/input_items`, `…/cancel`.
//! - [`conversations`]: the Conversations API (a conversation's items are the history of
//!   the responses made in it).
//! - [`Responses`] (here): the responses and conversations changed and not yet written
//!   (readable at once: a client's next step follows its last one immediately), and reads
//!   that go to the store otherwise. `services::responses` writes them off the request
//!   path, in batches; the store keeper prunes them past `responses.retention_days`.
//!
//! Reads on the request path await the store: sled calls run on the blocking pool (the
//! store moves them there itself) and PostgreSQL is asynchronous, so no Pingora thread
//! waits on disk; the in-memory part only holds what is not written yet.

pub mod api;
pub mod conversations;
pub mod resolve;
pub mod settings;

use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{ErrorKind, GatewayError};
use crate::records::{Conversation, StoredResponse};
use crate::store::StoreSlot;
use settings::ResponsesConfig;

/// Responses kept in memory while the store cannot take them (no store yet, or a failing
/// one): past this, the oldest are dropped (and said so in the log).
const MAX_PENDING_BYTES: u64 = 256 * 1024 * 1024;

/// Who reads: a virtual key sees only its own responses; the master key sees every one.
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    Key(&'a str),
    Master,
}

impl Reader<'_> {
    fn may_read(&self, owner: &str) -> bool {
        match self {
            Reader::Key(k) => owner == *k,
            Reader::Master => true,
        }
    }
}

#[derive(Default)]
struct Pending {
    /// In production order.
    order: Vec<Arc<StoredResponse>>,
    by_id: HashMap<String, Arc<StoredResponse>>,
    /// (key id, item id) → response id.
    items: HashMap<(String, String), String>,
    bytes: u64,
    /// Conversations changed and not yet written (their latest version).
    conversations: HashMap<String, Arc<Conversation>>,
}

impl Pending {
    fn remove(&mut self, id: &str) -> Option<Arc<StoredResponse>> {
        let r = self.by_id.remove(id)?;
        self.order.retain(|p| p.id != id);
        for item in r.item_ids() {
            let k = (r.key_id.clone(), item.to_string());
            if self.items.get(&k).is_some_and(|owner| owner == id) {
                self.items.remove(&k);
            }
        }
        self.bytes = self.bytes.saturating_sub(r.size);
        Some(r)
    }
}

pub struct Responses {
    pub cfg: ResponsesConfig,
    slot: Arc<StoreSlot>,
    pending: Mutex<Pending>,
    /// Wakes the writer when a response is kept.
    pub notify: tokio::sync::Notify,
    /// Store writes and deletes one at a time: a delete never races the write of its id.
    /// It also holds when each key's responses were last trimmed to the per-key cap.
    write_lock: tokio::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// A key's stored responses are trimmed to `max_bytes_per_key` at most this often (a trim
/// reads the sizes of all of them).
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn store_error(e: crate::store::StoreError) -> GatewayError {
    log::error!("stored responses: {e}");
    GatewayError::new(
        ErrorKind::Unavailable,
        "The response store is unavailable; try again.",
    )
}

impl Responses {
    pub fn new(cfg: ResponsesConfig, slot: Arc<StoreSlot>) -> Responses {
        Responses {
            cfg,
            slot,
            pending: Mutex::new(Pending::default()),
            notify: tokio::sync::Notify::new(),
            write_lock: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Keeps a response just produced: readable at once, written by the writer.
    pub fn keep(&self, mut r: StoredResponse) {
        r.measure();
        if r.size > self.cfg.max_response_bytes {
            log::warn!(
                "response {} not stored: {} bytes is over responses.max_response_bytes ({})",
                r.id,
                r.size,
                self.cfg.max_response_bytes
            );
            return;
        }
        let r = Arc::new(r);
        {
            let mut p = self.pending.lock();
            p.remove(&r.id);
            for item in r.item_ids() {
                p.items
                    .insert((r.key_id.clone(), item.to_string()), r.id.clone());
            }
            p.bytes += r.size;
            p.by_id.insert(r.id.clone(), r.clone());
            p.order.push(r);
            while p.bytes > MAX_PENDING_BYTES && p.order.len() > 1 {
                let oldest = p.order[0].id.clone();
                log::warn!("response {oldest} dropped: the store has not taken responses in time");
                p.remove(&oldest);
            }
        }
        self.notify.notify_one();
    }

    fn expired(&self, since: u64) -> bool {
        since + self.cfg.retention.as_secs() < crate::clock::now_secs()
    }

    /// The response `id` if `reader` may read it and it has not expired.
    pub async fn get(
        &self,
        reader: Reader<'_>,
        id: &str,
    ) -> Result<Option<Arc<StoredResponse>>, GatewayError> {
        let kept = self.pending.lock().by_id.get(id).cloned();
        let r = match kept {
            Some(r) => Some(r),
            None => match self.slot.get() {
                Some(store) => store
                    .get_response(id)
                    .await
                    .map_err(store_error)?
                    .map(Arc::new),
                None => return Err(store_error(crate::store::StoreError::Io("not open".into()))),
            },
        };
        Ok(r.filter(|r| reader.may_read(&r.key_id) && !self.expired(r.created_at)))
    }

    /// The item `item_id` of one of `key_id`'s responses, with that response.
    pub async fn item(
        &self,
        key_id: &str,
        item_id: &str,
    ) -> Result<Option<(Value, Arc<StoredResponse>)>, GatewayError> {
        let owner = self
            .pending
            .lock()
            .items
            .get(&(key_id.to_string(), item_id.to_string()))
            .cloned();
        let owner = match owner {
            Some(o) => Some(o),
            None => match self.slot.get() {
                Some(store) => store
                    .response_of_item(key_id, item_id)
                    .await
                    .map_err(store_error)?,
                None => None,
            },
        };
        let Some(owner) = owner else { return Ok(None) };
        let Some(r) = self.get(Reader::Key(key_id), &owner).await? else {
            return Ok(None);
        };
        Ok(r.item(item_id).cloned().map(|i| (i, r)))
    }

    /// Deletes a response `reader` may read; false when there was none.
    pub async fn delete(&self, reader: Reader<'_>, id: &str) -> Result<bool, GatewayError> {
        if self.get(reader, id).await?.is_none() {
            return Ok(false);
        }
        let _one = self.write_lock.lock().await;
        let was_pending = self.pending.lock().remove(id).is_some();
        let stored = match self.slot.get() {
            Some(store) => store.delete_response(id).await.map_err(store_error)?,
            None => false,
        };
        Ok(was_pending || stored)
    }

    /// The conversation `id` if `reader` may use it and it has not expired.
    pub async fn conversation(
        &self,
        reader: Reader<'_>,
        id: &str,
    ) -> Result<Option<Arc<Conversation>>, GatewayError> {
        let kept = self.pending.lock().conversations.get(id).cloned();
        let c = match kept {
            Some(c) => Some(c),
            None => match self.slot.get() {
                Some(store) => store
                    .get_conversation(id)
                    .await
                    .map_err(store_error)?
                    .map(Arc::new),
                None => return Err(store_error(crate::store::StoreError::Io("not open".into()))),
            },
        };
        Ok(c.filter(|c| reader.may_read(&c.key_id) && !self.expired(c.updated_at)))
    }

    /// Keeps a new or changed conversation: readable at once, written by the writer.
    pub fn save_conversation(&self, mut c: Conversation) -> Arc<Conversation> {
        c.updated_at = crate::clock::now_secs();
        let c = Arc::new(c);
        self.pending
            .lock()
            .conversations
            .insert(c.id.clone(), c.clone());
        self.notify.notify_one();
        c
    }

    /// Adds items to a conversation: to its latest kept version, else to `read` (the version
    /// the request read).
    pub fn append_to_conversation(&self, read: &Conversation, items: Vec<Value>) {
        let mut c = {
            let p = self.pending.lock();
            p.conversations
                .get(&read.id)
                .map_or_else(|| read.clone(), |c| (**c).clone())
        };
        c.items.extend(items);
        self.save_conversation(c);
    }

    /// Deletes a conversation `reader` may use; false when there was none.
    pub async fn delete_conversation(
        &self,
        reader: Reader<'_>,
        id: &str,
    ) -> Result<bool, GatewayError> {
        if self.conversation(reader, id).await?.is_none() {
            return Ok(false);
        }
        let _one = self.write_lock.lock().await;
        self.pending.lock().conversations.remove(id);
        if let Some(store) = self.slot.get() {
            store.delete_conversation(id).await.map_err(store_error)?;
        }
        Ok(true)
    }

    /// Writes the kept conversations; a version changed meanwhile stays kept.
    async fn write_conversations(&self, store: &dyn crate::store::Store) {
        let batch: Vec<Arc<Conversation>> = self
            .pending
            .lock()
            .conversations
            .values()
            .cloned()
            .collect();
        if batch.is_empty() {
            return;
        }
        let records = batch.iter().map(|c| (**c).clone()).collect();
        if let Err(e) = store.put_conversations(records).await {
            log::error!("writing {} conversations failed: {e}", batch.len());
            return;
        }
        let mut p = self.pending.lock();
        for c in &batch {
            if p.conversations
                .get(&c.id)
                .is_some_and(|cur| Arc::ptr_eq(cur, c))
            {
                p.conversations.remove(&c.id);
            }
        }
    }

    /// Writes what is kept to the store (the writer's cycle, and the last one at release).
    /// What could not be written stays kept for the next cycle.
    pub async fn write_pending(&self) {
        let Some(store) = self.slot.get().filter(|s| s.healthy()) else {
            return;
        };
        let mut trimmed = self.write_lock.lock().await;
        self.write_conversations(store.as_ref()).await;
        let batch: Vec<Arc<StoredResponse>> = self.pending.lock().order.clone();
        if batch.is_empty() {
            return;
        }
        let records: Vec<StoredResponse> = batch.iter().map(|r| (**r).clone()).collect();
        if let Err(e) = store.put_responses(records).await {
            log::error!("writing {} stored responses failed: {e}", batch.len());
            return;
        }
        let mut keys: Vec<&str> = batch.iter().map(|r| r.key_id.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        if self.cfg.max_bytes_per_key > 0 {
            let now = std::time::Instant::now();
            trimmed.retain(|_, at| now.duration_since(*at) < TRIM_EVERY);
            for k in keys {
                if trimmed.contains_key(k) {
                    continue;
                }
                trimmed.insert(k.to_string(), now);
                match store.trim_responses(k, self.cfg.max_bytes_per_key).await {
                    Ok(0) => {}
                    Ok(n) => log::info!(
                        "key {k}: {n} oldest stored responses deleted (responses.max_bytes_per_key)"
                    ),
                    Err(e) => log::warn!("trimming the stored responses of key {k} failed: {e}"),
                }
            }
        }
        let mut p = self.pending.lock();
        for r in &batch {
            // Only the version written: a newer one kept meanwhile stays.
            if p.by_id.get(&r.id).is_some_and(|cur| Arc::ptr_eq(cur, r)) {
                p.remove(&r.id);
            }
        }
    }

    /// Deletes stored responses past the retention.
    pub async fn prune(&self) {
        let Some(store) = self.slot.get() else { return };
        let cutoff = crate::clock::now_secs().saturating_sub(self.cfg.retention.as_secs());
        match store.prune_responses(cutoff).await {
            Ok(0) => {}
            Ok(n) => log::info!("pruned {n} stored responses past responses.retention_days"),
            Err(e) => log::warn!("stored response pruning failed: {e}"),
        }
    }

    pub fn has_pending(&self) -> bool {
        let p = self.pending.lock();
        !p.order.is_empty() || !p.conversations.is_empty()
    }
}
