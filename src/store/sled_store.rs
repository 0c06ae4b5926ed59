//! The sled implementation of [`Store`]. sled calls block (writes may wait on I/O, flush
//! always does), so every call runs on the blocking pool.

use async_trait::async_trait;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{segment, SpendRow, Store, StoreError, StoreResult, UsageFilter, UsagePage};
use super::{trace_block, ResponseStore, TraceStore};
use crate::meter::price::Price;
use crate::records::{
    AlertRecord, BudgetRecord, Conversation, GroupKind, GroupRecord, KeyRecord, McpServerRecord,
    Scope, Settled, StoredResponse, Trace, TraceFilter, TracePage, UsageRecord, UserRecord,
};

pub struct SledStore {
    db: sled::Db,
    keys: sled::Tree,
    meta: sled::Tree,
    users: sled::Tree,
    budgets: sled::Tree,
    prices: sled::Tree,
    /// MCP servers registered through the API: id → record.
    mcp_servers: sled::Tree,
    /// Teams and organisations: id → record.
    teams: sled::Tree,
    orgs: sled::Tree,
    /// Usage records in time-ordered segments ([`super::segment`]; older stores also hold
    /// one-record rows keyed ts_ms big-endian ++ id).
    usage: sled::Tree,
    /// Appends run one at a time: the idempotency check (a scan of recent segments) and
    /// the transaction that writes must not interleave.
    append_lock: std::sync::Arc<parking_lot::Mutex<()>>,
    /// (scope, id, window_start) → spent micro-dollars.
    spend: sled::Tree,
    /// Stored Responses: id → record, and their indexes (see [`response_keys`]).
    responses: sled::Tree,
    /// key_id \0 item_id → response id.
    response_items: sled::Tree,
    /// created_at (big-endian) ++ id → key id: pruning by age.
    response_times: sled::Tree,
    /// key_id \0 created_at (big-endian) ++ id → size: a key's responses, oldest first.
    response_keys: sled::Tree,
    /// Traces: ts_ms (big-endian) ++ request id → record.
    traces: sled::Tree,
    /// request id \0 ts_ms (big-endian) → nothing: a request id's traces.
    trace_ids: sled::Tree,
    /// Conversations: id → record.
    conversations: sled::Tree,
    /// Budget alerts: alert id → record (claimed with compare-and-swap from absent).
    alerts: sled::Tree,
}

/// The index keys of a stored response: its time entry, its key entry, and its items'.
struct ResponseKeys {
    time: Vec<u8>,
    key: Vec<u8>,
    items: Vec<Vec<u8>>,
}

fn key_prefix(key_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key_id.len() + 1);
    k.extend_from_slice(key_id.as_bytes());
    k.push(0);
    k
}

fn item_key(key_id: &str, item_id: &str) -> Vec<u8> {
    let mut k = key_prefix(key_id);
    k.extend_from_slice(item_id.as_bytes());
    k
}

fn response_keys(r: &StoredResponse) -> ResponseKeys {
    let mut time = r.created_at.to_be_bytes().to_vec();
    time.extend_from_slice(r.id.as_bytes());
    let mut key = key_prefix(&r.key_id);
    key.extend_from_slice(&time);
    ResponseKeys {
        time,
        key,
        items: r.item_ids().map(|i| item_key(&r.key_id, i)).collect(),
    }
}

/// Removes a stored response and its index entries (item entries only where they still
/// point at it: a newer response may hold the same item id).
fn remove_response(s: &SledTrees, id: &str) -> StoreResult<bool> {
    let Some(v) = s.responses.remove(id.as_bytes()).map_err(io)? else {
        return Ok(false);
    };
    let r: StoredResponse = from_json(&v)?;
    let k = response_keys(&r);
    s.times.remove(k.time).map_err(io)?;
    s.keys.remove(k.key).map_err(io)?;
    for item in k.items {
        if s.items.get(&item).map_err(io)?.as_deref() == Some(id.as_bytes()) {
            s.items.remove(item).map_err(io)?;
        }
    }
    Ok(true)
}

/// The response trees, cloned into a blocking task.
#[derive(Clone)]
struct SledTrees {
    responses: sled::Tree,
    items: sled::Tree,
    times: sled::Tree,
    keys: sled::Tree,
    db: sled::Db,
}

fn spend_key(scope: Scope, id: &str, window_start: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 10);
    k.extend_from_slice(scope.code().as_bytes());
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k.extend_from_slice(&window_start.to_be_bytes());
    k
}

fn parse_spend_key(k: &[u8]) -> Option<(Scope, String, u64)> {
    let scope = Scope::from_code(std::str::from_utf8(k.get(..1)?).ok()?)?;
    if k.len() < 10 {
        return None;
    }
    let (idpart, ws) = k[1..].split_at(k.len() - 1 - 8);
    let id = std::str::from_utf8(idpart.strip_suffix(&[0])?)
        .ok()?
        .to_string();
    Some((scope, id, u64::from_be_bytes(ws.try_into().ok()?)))
}

fn bad_cursor() -> StoreError {
    StoreError::Corrupt("bad cursor".into())
}

/// The positions in `batch` of records that are not stored yet (an id repeated inside the
/// batch counts once). A record with time t is in a segment whose key time lies in
/// [t - SPAN_MS, t], so only entries in [earliest - SPAN_MS, latest] are looked at: in
/// steady state the last few writer cycles' segments, read without parsing their JSON.
fn fresh_records(usage: &sled::Tree, batch: &[Settled]) -> StoreResult<Vec<usize>> {
    let mut wanted: std::collections::HashMap<&[u8], usize> = Default::default();
    let mut fresh = Vec::with_capacity(batch.len());
    for (n, s) in batch.iter().enumerate() {
        if let std::collections::hash_map::Entry::Vacant(v) = wanted.entry(s.record.id.as_bytes()) {
            v.insert(n);
            fresh.push(n);
        }
    }
    let lo = batch.iter().map(|s| s.record.ts_ms).min().unwrap_or(0);
    let hi = batch.iter().map(|s| s.record.ts_ms).max().unwrap_or(0);
    let range = segment::time_key(lo.saturating_sub(segment::SPAN_MS))
        ..segment::time_key(hi.saturating_add(1));
    let mut stored = std::collections::HashSet::new();
    for kv in usage.range(range) {
        let (k, v) = kv.map_err(io)?;
        let entry = segment::Entry::decode(&k, &v)
            .ok_or_else(|| StoreError::Corrupt("bad usage entry".into()))?;
        for id in entry.ids() {
            if let Some(&n) = wanted.get(id) {
                stored.insert(n);
            }
        }
    }
    fresh.retain(|n| !stored.contains(n));
    Ok(fresh)
}

fn json<T: serde::Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Io(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(b: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn load_all<T: serde::de::DeserializeOwned>(t: &sled::Tree) -> StoreResult<Vec<T>> {
    t.iter()
        .map(|kv| kv.map_err(io).and_then(|(_, v)| from_json(&v)))
        .collect()
}

fn io(e: sled::Error) -> StoreError {
    match e {
        // sled reports another process's lock as kind Other with this message (0.34.7,
        // config.rs), not as WouldBlock.
        sled::Error::Io(ref ioe)
            if ioe.kind() == std::io::ErrorKind::WouldBlock
                || ioe.to_string().starts_with("could not acquire lock") =>
        {
            StoreError::Locked
        }
        sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
        other => StoreError::Io(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h
            .spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?,
        Err(_) => f(),
    }
}

impl SledStore {
    fn group_tree(&self, kind: GroupKind) -> &sled::Tree {
        match kind {
            GroupKind::Team => &self.teams,
            GroupKind::Org => &self.orgs,
        }
    }

    /// Opens (or creates) the store under `dir`. Blocking: call from a blocking context.
    pub fn open(dir: &Path) -> StoreResult<SledStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .flush_every_ms(Some(200))
            // sled caches up to 1 GiB by default, and its resident memory is a few times
            // its cache: usage records (written, rarely read) would fill it. 16 MiB levels
            // off near 40 MB resident; 64 MiB climbed past 100 MB (measured, 2026-12-01).
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(io)?;
        let t = |name: &str| db.open_tree(name).map_err(io);
        Ok(SledStore {
            keys: t("keys")?,
            meta: t("meta")?,
            users: t("users")?,
            budgets: t("budgets")?,
            prices: t("prices")?,
            mcp_servers: t("mcp_servers")?,
            teams: t("teams")?,
            orgs: t("orgs")?,
            usage: t("usage")?,
            append_lock: Default::default(),
            spend: t("spend")?,
            responses: t("responses")?,
            response_items: t("response_items")?,
            response_times: t("response_times")?,
            response_keys: t("response_keys")?,
            conversations: t("conversations")?,
            traces: t("traces")?,
            trace_ids: t("trace_ids")?,
            alerts: t("alerts")?,
            db,
        })
    }

    async fn put_json<T: serde::Serialize>(
        &self,
        t: &sled::Tree,
        key: &str,
        v: &T,
    ) -> StoreResult<()> {
        let (t, db, key, v) = (t.clone(), self.db.clone(), key.to_string(), json(v)?);
        blocking(move || {
            t.insert(key.as_bytes(), v).map_err(io)?;
            db.flush().map_err(io)?;
            Ok(())
        })
        .await
    }

    fn response_trees(&self) -> SledTrees {
        SledTrees {
            responses: self.responses.clone(),
            items: self.response_items.clone(),
            times: self.response_times.clone(),
            keys: self.response_keys.clone(),
            db: self.db.clone(),
        }
    }

    async fn delete(&self, t: &sled::Tree, key: &str) -> StoreResult<bool> {
        let (t, db, key) = (t.clone(), self.db.clone(), key.to_string());
        blocking(move || {
            let old = t.remove(key.as_bytes()).map_err(io)?;
            db.flush().map_err(io)?;
            Ok(old.is_some())
        })
        .await
    }
}

#[async_trait]
impl ResponseStore for SledStore {
    async fn put_responses(&self, batch: Vec<StoredResponse>) -> StoreResult<()> {
        let s = self.response_trees();
        blocking(move || {
            for r in &batch {
                // A replaced record's old index entries go first.
                remove_response(&s, &r.id)?;
                let k = response_keys(r);
                s.responses.insert(r.id.as_bytes(), json(r)?).map_err(io)?;
                s.times.insert(k.time, r.key_id.as_bytes()).map_err(io)?;
                s.keys.insert(k.key, &r.size.to_be_bytes()).map_err(io)?;
                for item in k.items {
                    s.items.insert(item, r.id.as_bytes()).map_err(io)?;
                }
            }
            s.db.flush().map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn get_response(&self, id: &str) -> StoreResult<Option<StoredResponse>> {
        let (t, id) = (self.responses.clone(), id.to_string());
        blocking(move || match t.get(id.as_bytes()).map_err(io)? {
            Some(v) => from_json(&v).map(Some),
            None => Ok(None),
        })
        .await
    }

    async fn response_of_item(&self, key_id: &str, item_id: &str) -> StoreResult<Option<String>> {
        let (t, k) = (self.response_items.clone(), item_key(key_id, item_id));
        blocking(move || {
            Ok(t.get(k)
                .map_err(io)?
                .map(|v| String::from_utf8_lossy(&v).into_owned()))
        })
        .await
    }

    async fn delete_response(&self, id: &str) -> StoreResult<bool> {
        let (s, id) = (self.response_trees(), id.to_string());
        blocking(move || {
            let gone = remove_response(&s, &id)?;
            s.db.flush().map_err(io)?;
            Ok(gone)
        })
        .await
    }

    async fn prune_responses(&self, before_secs: u64) -> StoreResult<usize> {
        let (s, conversations) = (self.response_trees(), self.conversations.clone());
        blocking(move || {
            let mut n = 0;
            let old: Vec<sled::IVec> = s
                .times
                .range(..before_secs.to_be_bytes().to_vec())
                .keys()
                .collect::<Result<_, _>>()
                .map_err(io)?;
            for k in old {
                let id = String::from_utf8_lossy(&k[8.min(k.len())..]).into_owned();
                if remove_response(&s, &id)? {
                    n += 1;
                } else {
                    s.times.remove(k).map_err(io)?;
                }
            }
            for kv in conversations.iter() {
                let (k, v) = kv.map_err(io)?;
                let c: Conversation = from_json(&v)?;
                if c.updated_at < before_secs {
                    conversations.remove(k).map_err(io)?;
                    n += 1;
                }
            }
            s.db.flush().map_err(io)?;
            Ok(n)
        })
        .await
    }

    async fn trim_responses(&self, key_id: &str, max_bytes: u64) -> StoreResult<usize> {
        let (s, prefix) = (self.response_trees(), key_prefix(key_id));
        blocking(move || {
            let mut kept = 0u64;
            let mut full = false;
            let mut over = Vec::new();
            // Newest first: the newest responses that fit stay, everything older goes.
            for kv in s.keys.scan_prefix(&prefix).rev() {
                let (k, v) = kv.map_err(io)?;
                let size = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
                if !full && kept + size <= max_bytes {
                    kept += size;
                } else {
                    full = true;
                    over.push(String::from_utf8_lossy(&k[prefix.len() + 8..]).into_owned());
                }
            }
            let mut n = 0;
            for id in over {
                n += usize::from(remove_response(&s, &id)?);
            }
            if n > 0 {
                s.db.flush().map_err(io)?;
            }
            Ok(n)
        })
        .await
    }

    async fn put_conversations(&self, batch: Vec<Conversation>) -> StoreResult<()> {
        let (t, db) = (self.conversations.clone(), self.db.clone());
        blocking(move || {
            for c in &batch {
                t.insert(c.id.as_bytes(), json(c)?).map_err(io)?;
            }
            db.flush().map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        let (t, id) = (self.conversations.clone(), id.to_string());
        blocking(move || match t.get(id.as_bytes()).map_err(io)? {
            Some(v) => from_json(&v).map(Some),
            None => Ok(None),
        })
        .await
    }

    async fn delete_conversation(&self, id: &str) -> StoreResult<bool> {
        let t = self.conversations.clone();
        self.delete(&t, id).await
    }
}

/// The key of a trace stored alone, as JSON (the layout before blocks; read, never written).
#[cfg(test)]
fn trace_key_row(ts_ms: u64, request_id: &str) -> Vec<u8> {
    let mut k = ts_ms.to_be_bytes().to_vec();
    k.extend_from_slice(request_id.as_bytes());
    k
}

fn trace_id_key(request_id: &[u8], ts_ms: u64) -> Vec<u8> {
    let mut k = request_id.to_vec();
    k.push(0);
    k.extend_from_slice(&ts_ms.to_be_bytes());
    k
}

fn corrupt(e: String) -> StoreError {
    StoreError::Corrupt(e)
}

/// Where a listed trace lies: its entry's key and its place in the entry. The cursor of
/// `GET /v1/traces` is the hex of the key, followed for a block by the place (4 bytes).
fn trace_cursor(key: &[u8], at: usize) -> String {
    let mut c = key.to_vec();
    if trace_block::is_block_key(key) {
        c.extend_from_slice(&(at as u32).to_be_bytes());
    }
    crate::ids::hex(&c)
}

/// A cursor's entry key and the place before which the next page starts in it.
fn parse_trace_cursor(c: &str) -> StoreResult<(Vec<u8>, Option<usize>)> {
    let mut b = crate::ids::unhex_any(c).ok_or_else(bad_cursor)?;
    if trace_block::is_block_key(&b) {
        if b.len() < 13 {
            return Err(bad_cursor());
        }
        let at = u32::from_be_bytes(b[b.len() - 4..].try_into().expect("4 bytes")) as usize;
        b.truncate(b.len() - 4);
        return Ok((b, Some(at)));
    }
    Ok((b, None))
}

#[async_trait]
impl TraceStore for SledStore {
    async fn put_traces(&self, mut batch: Vec<Trace>) -> StoreResult<()> {
        let (traces, ids) = (self.traces.clone(), self.trace_ids.clone());
        blocking(move || {
            batch.sort_by_key(|t| t.ts_ms);
            let records = batch
                .iter()
                .map(trace_block::encode_record)
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::Io)?;
            let ts: Vec<u64> = batch.iter().map(|t| t.ts_ms).collect();
            let sizes: Vec<usize> = records.iter().map(Vec::len).collect();
            let mut tb = sled::Batch::default();
            let mut first_key = None;
            for r in trace_block::plan(&ts, &sizes) {
                let items: Vec<_> = r
                    .clone()
                    .map(|i| trace_block::Item {
                        ts_ms: batch[i].ts_ms,
                        request_id: batch[i].request_id.as_bytes(),
                        record: &records[i],
                    })
                    .collect();
                let key = trace_block::key(batch[r.start].ts_ms, &batch[r.start].request_id);
                first_key.get_or_insert_with(|| key.clone());
                tb.insert(key, trace_block::encode(&items));
            }
            // Ids the gateway minted: one entry per minute of their times; a caller's own
            // id: a row of its own.
            let mut ib = sled::Batch::default();
            let mut minutes: std::collections::BTreeMap<u64, Vec<(u64, &str)>> = Default::default();
            for t in &batch {
                match crate::ids::request_id_ms(&t.request_id) {
                    Some(ms) => minutes
                        .entry(ms / trace_block::ID_BUCKET_MS)
                        .or_default()
                        .push((t.ts_ms, &t.request_id)),
                    None => ib.insert(trace_id_key(t.request_id.as_bytes(), t.ts_ms), &[][..]),
                }
            }
            let tail = first_key.unwrap_or_default();
            for (minute, list) in &minutes {
                ib.insert(
                    trace_block::id_entry_key(*minute, &tail),
                    trace_block::encode_ids(list),
                );
            }
            traces.apply_batch(tb).map_err(io)?;
            ids.apply_batch(ib).map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn query_traces(
        &self,
        filter: &TraceFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<TracePage> {
        let t = self.traces.clone();
        let filter = filter.clone();
        // The cursor is where the last trace returned lies: the next page is older.
        let (end, resume) = match cursor {
            Some(c) => parse_trace_cursor(c)?,
            None => (
                filter
                    .to_ms
                    .map_or_else(|| vec![0xff; 9], segment::time_key),
                None,
            ),
        };
        // A block's traces lie within SPAN_MS of its key's time.
        let start = segment::time_key(
            filter
                .from_ms
                .unwrap_or(0)
                .saturating_sub(trace_block::SPAN_MS),
        );
        blocking(move || {
            let mut page = TracePage::default();
            let mut last_at: Option<(Vec<u8>, usize)> = None;
            // The cursor's own block first (its traces before the cursor), then older ones.
            let resumed = match resume {
                Some(at) => t
                    .get(&end)
                    .map_err(io)?
                    .map(|v| (end.clone().into(), v, at)),
                None => None,
            };
            let older = t
                .range(start..end.clone())
                .rev()
                .map(|kv| kv.map(|(k, v)| (k, v, usize::MAX)));
            let entries = resumed.into_iter().map(Ok).chain(older);
            'outer: for kv in entries {
                let (k, v, before): (sled::IVec, sled::IVec, usize) = kv.map_err(io)?;
                let e = trace_block::Entry::decode(&k, &v)
                    .ok_or_else(|| corrupt("damaged trace block".into()))?;
                for (at, item) in e.items.iter().enumerate().rev() {
                    if at >= before
                        || filter.from_ms.is_some_and(|f| item.ts_ms < f)
                        || filter.to_ms.is_some_and(|to| item.ts_ms >= to)
                    {
                        continue;
                    }
                    let tr = trace_block::decode_record(item.record).map_err(corrupt)?;
                    if !filter.matches(&tr) {
                        continue;
                    }
                    if page.traces.len() == limit {
                        let (lk, la) = last_at.take().expect("limit > 0");
                        page.next_cursor = Some(trace_cursor(&lk, la));
                        break 'outer;
                    }
                    page.traces.push(tr);
                    last_at = Some((k.to_vec(), at));
                }
            }
            Ok(page)
        })
        .await
    }

    async fn get_trace(
        &self,
        request_id: &str,
        key_id: Option<&str>,
    ) -> StoreResult<Option<Trace>> {
        let (traces, ids) = (self.traces.clone(), self.trace_ids.clone());
        let (rid, key_id) = (request_id.to_string(), key_id.map(String::from));
        blocking(move || {
            // The times of this id's traces: from its own rows (a caller's id, or traces
            // stored before id entries), and from the id entries of the minute it was minted.
            let mut times = Vec::new();
            let mut prefix = rid.as_bytes().to_vec();
            prefix.push(0);
            for kv in ids.scan_prefix(&prefix) {
                let (k, _) = kv.map_err(io)?;
                if let Some(ts) = k.get(prefix.len()..).and_then(segment::key_ts) {
                    times.push(ts);
                }
            }
            if let Some(ms) = crate::ids::request_id_ms(&rid) {
                let minute = ms / trace_block::ID_BUCKET_MS;
                for kv in ids.scan_prefix(trace_block::id_entry_prefix(minute)) {
                    let (_, v) = kv.map_err(io)?;
                    times.extend(trace_block::ids_times(&v, rid.as_bytes()));
                }
            }
            times.sort_unstable_by(|a, b| b.cmp(a));
            times.dedup();
            // Newest first: the trace is in an older row under its exact key, or in a block
            // that starts at most SPAN_MS before it.
            for ts in times {
                let from = segment::time_key(ts.saturating_sub(trace_block::SPAN_MS));
                let to = segment::time_key(ts + 1);
                for kv in traces.range(from..to).rev() {
                    let (k, v) = kv.map_err(io)?;
                    let Some(e) = trace_block::Entry::decode(&k, &v) else {
                        continue;
                    };
                    for item in e.items.iter().rev() {
                        if item.ts_ms != ts || item.request_id != rid.as_bytes() {
                            continue;
                        }
                        let tr = trace_block::decode_record(item.record).map_err(corrupt)?;
                        if key_id.is_none() || tr.key_id == key_id {
                            return Ok(Some(tr));
                        }
                    }
                }
            }
            Ok(None)
        })
        .await
    }

    async fn prune_traces(&self, before_ms: u64) -> StoreResult<usize> {
        let (traces, ids) = (self.traces.clone(), self.trace_ids.clone());
        blocking(move || {
            let mut n = 0;
            for kv in traces.range(..segment::time_key(before_ms)) {
                let (k, v) = kv.map_err(io)?;
                let Some(e) = trace_block::Entry::decode(&k, &v) else {
                    // A damaged block past the retention: nothing in it can be read.
                    traces.remove(&k).map_err(io)?;
                    continue;
                };
                let (old, keep): (Vec<&trace_block::Item>, Vec<_>) =
                    e.items.iter().partition(|i| i.ts_ms < before_ms);
                for i in &old {
                    if std::str::from_utf8(i.request_id)
                        .ok()
                        .and_then(crate::ids::request_id_ms)
                        .is_none()
                    {
                        ids.remove(trace_id_key(i.request_id, i.ts_ms))
                            .map_err(io)?;
                    }
                }
                // A block that straddles the cutoff keeps its newer traces, under the key
                // of the first one kept.
                if let Some(first) = keep.first() {
                    let nk =
                        trace_block::key(first.ts_ms, &String::from_utf8_lossy(first.request_id));
                    let items: Vec<_> = keep.iter().map(|i| **i).collect();
                    traces.insert(nk, trace_block::encode(&items)).map_err(io)?;
                }
                traces.remove(&k).map_err(io)?;
                n += old.len();
            }
            // Id entries whose traces are all past the retention.
            let mut stale = trace_block::id_entry_prefix(0);
            stale.truncate(1);
            let end = trace_block::id_entry_prefix(before_ms / trace_block::ID_BUCKET_MS);
            for kv in ids.range(stale..end) {
                let (k, v) = kv.map_err(io)?;
                if trace_block::ids_max_ts(&v).is_none_or(|m| m < before_ms) {
                    ids.remove(&k).map_err(io)?;
                }
            }
            Ok(n)
        })
        .await
    }
}

#[async_trait]
impl super::AlertStore for SledStore {
    async fn claim_alert(&self, a: &AlertRecord, _owner: &str, _lease: u64) -> StoreResult<bool> {
        let (t, db, v) = (self.alerts.clone(), self.db.clone(), json(a)?);
        let id = a.id.clone();
        blocking(move || {
            let won = t
                .compare_and_swap(id.as_bytes(), None as Option<&[u8]>, Some(v))
                .map_err(io)?
                .is_ok();
            // Durable before anyone sends it.
            db.flush().map_err(io)?;
            Ok(won)
        })
        .await
    }

    async fn take_pending_alerts(
        &self,
        _owner: &str,
        _now_ms: u64,
        _lease_until_ms: u64,
    ) -> StoreResult<Vec<AlertRecord>> {
        let t = self.alerts.clone();
        blocking(move || {
            Ok(load_all::<AlertRecord>(&t)?
                .into_iter()
                .filter(|a| a.sent_at.is_none())
                .collect())
        })
        .await
    }

    async fn update_alert(&self, a: &AlertRecord) -> StoreResult<()> {
        let t = self.alerts.clone();
        self.put_json(&t, &a.id, a).await
    }

    async fn load_alerts(&self) -> StoreResult<Vec<AlertRecord>> {
        let t = self.alerts.clone();
        blocking(move || load_all(&t)).await
    }
}

#[async_trait]
impl Store for SledStore {
    async fn load_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let t = self.keys.clone();
        blocking(move || {
            let mut out = Vec::new();
            for kv in t.iter() {
                let (_, v) = kv.map_err(io)?;
                let rec: KeyRecord =
                    serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                out.push(rec);
            }
            Ok(out)
        })
        .await
    }

    async fn put_key(&self, rec: &KeyRecord) -> StoreResult<()> {
        let (t, db) = (self.keys.clone(), self.db.clone());
        let id = rec.id.clone();
        let v = serde_json::to_vec(rec).map_err(|e| StoreError::Io(e.to_string()))?;
        blocking(move || {
            t.insert(id.as_bytes(), v).map_err(io)?;
            // Key changes are rare and must survive a crash right after the API answered.
            db.flush().map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn delete_key(&self, id: &str) -> StoreResult<bool> {
        let (t, db) = (self.keys.clone(), self.db.clone());
        let id = id.to_string();
        blocking(move || {
            let old = t.remove(id.as_bytes()).map_err(io)?;
            db.flush().map_err(io)?;
            Ok(old.is_some())
        })
        .await
    }

    async fn get_meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let t = self.meta.clone();
        let name = name.to_string();
        blocking(move || Ok(t.get(name.as_bytes()).map_err(io)?.map(|v| v.to_vec()))).await
    }

    async fn put_meta(&self, name: &str, value: &[u8]) -> StoreResult<()> {
        let (t, db) = (self.meta.clone(), self.db.clone());
        let (name, value) = (name.to_string(), value.to_vec());
        blocking(move || {
            t.insert(name.as_bytes(), value).map_err(io)?;
            db.flush().map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn load_users(&self) -> StoreResult<Vec<UserRecord>> {
        let t = self.users.clone();
        blocking(move || load_all(&t)).await
    }

    async fn put_user(&self, u: &UserRecord) -> StoreResult<()> {
        self.put_json(&self.users, &u.user_id, u).await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        self.delete(&self.users, id).await
    }

    async fn load_budgets(&self) -> StoreResult<Vec<BudgetRecord>> {
        let t = self.budgets.clone();
        blocking(move || load_all(&t)).await
    }

    async fn put_budget(&self, b: &BudgetRecord) -> StoreResult<()> {
        self.put_json(&self.budgets, &b.budget_id, b).await
    }

    async fn delete_budget(&self, id: &str) -> StoreResult<bool> {
        self.delete(&self.budgets, id).await
    }

    async fn load_groups(&self, kind: GroupKind) -> StoreResult<Vec<GroupRecord>> {
        let t = self.group_tree(kind).clone();
        blocking(move || load_all(&t)).await
    }

    async fn put_group(&self, kind: GroupKind, g: &GroupRecord) -> StoreResult<()> {
        self.put_json(self.group_tree(kind), &g.id, g).await
    }

    async fn delete_group(&self, kind: GroupKind, id: &str) -> StoreResult<bool> {
        self.delete(self.group_tree(kind), id).await
    }

    async fn load_mcp_servers(&self) -> StoreResult<Vec<McpServerRecord>> {
        let t = self.mcp_servers.clone();
        blocking(move || load_all(&t)).await
    }

    async fn put_mcp_server(&self, s: &McpServerRecord) -> StoreResult<()> {
        self.put_json(&self.mcp_servers, &s.id, s).await
    }

    async fn delete_mcp_server(&self, id: &str) -> StoreResult<bool> {
        self.delete(&self.mcp_servers, id).await
    }

    async fn load_prices(&self) -> StoreResult<Vec<(String, Price)>> {
        let t = self.prices.clone();
        blocking(move || {
            t.iter()
                .map(|kv| {
                    let (k, v) = kv.map_err(io)?;
                    Ok((String::from_utf8_lossy(&k).into_owned(), from_json(&v)?))
                })
                .collect()
        })
        .await
    }

    async fn put_price(&self, key: &str, p: &Price) -> StoreResult<()> {
        self.put_json(&self.prices, key, p).await
    }

    async fn delete_price(&self, key: &str) -> StoreResult<bool> {
        self.delete(&self.prices, key).await
    }

    async fn append_usage(&self, batch: Vec<Settled>) -> StoreResult<Vec<Settled>> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let (usage, spend, db) = (self.usage.clone(), self.spend.clone(), self.db.clone());
        let lock = self.append_lock.clone();
        blocking(move || {
            let _one_at_a_time = lock.lock();
            let fresh = fresh_records(&usage, &batch)?;
            if fresh.is_empty() {
                return Ok(Vec::new());
            }
            let mut sorted = fresh.clone();
            sorted.sort_by(|&a, &b| {
                let (a, b) = (&batch[a].record, &batch[b].record);
                (a.ts_ms, &a.id).cmp(&(b.ts_ms, &b.id))
            });
            let json: Vec<Vec<u8>> = sorted.iter().map(|&n| batch[n].record.to_json()).collect();
            let ts: Vec<u64> = sorted.iter().map(|&n| batch[n].record.ts_ms).collect();
            let segments: Vec<(Vec<u8>, Vec<u8>)> = segment::plan(&ts)
                .into_iter()
                .map(|r| {
                    let first = &batch[sorted[r.start]].record;
                    let items: Vec<(&UsageRecord, &[u8])> = r
                        .map(|i| (&batch[sorted[i]].record, json[i].as_slice()))
                        .collect();
                    (
                        segment::key(first.ts_ms, &first.id),
                        segment::encode(&items),
                    )
                })
                .collect();
            // Spend is summed per account and window first: one read-modify-write per
            // account per batch.
            let mut sums: std::collections::HashMap<Vec<u8>, u64> = Default::default();
            for &n in &fresh {
                for c in batch[n].charges.iter().filter(|c| c.amount > 0) {
                    *sums
                        .entry(spend_key(c.scope, &c.id, c.window_start))
                        .or_default() += c.amount;
                }
            }
            // One transaction over records and spend: both land, or neither.
            let res = (&usage, &spend).transaction(|(u, sp)| {
                for (k, v) in &segments {
                    u.insert(k.as_slice(), v.as_slice())?;
                }
                for (sk, add) in &sums {
                    let old = sp.get(sk)?.map_or(0, |v| {
                        u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))
                    });
                    sp.insert(sk.as_slice(), &(old + add).to_be_bytes())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            });
            match res {
                Ok(()) => {}
                Err(TransactionError::Storage(e)) => return Err(io(e)),
                Err(TransactionError::Abort(())) => {
                    return Err(StoreError::Io("usage transaction aborted".into()))
                }
            }
            // The promise: an answered request's usage is on disk within one writer cycle.
            db.flush().map_err(io)?;
            let mut batch = batch.into_iter().map(Some).collect::<Vec<_>>();
            Ok(fresh.iter().filter_map(|&n| batch[n].take()).collect())
        })
        .await
    }

    async fn load_spend(&self) -> StoreResult<Vec<SpendRow>> {
        let t = self.spend.clone();
        blocking(move || {
            let mut out = Vec::new();
            for kv in t.iter() {
                let (k, v) = kv.map_err(io)?;
                if let (Some((scope, id, ws)), Ok(b)) =
                    (parse_spend_key(&k), <[u8; 8]>::try_from(v.as_ref()))
                {
                    out.push(SpendRow {
                        scope,
                        id,
                        window_start: ws,
                        spent: u64::from_be_bytes(b),
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn query_usage(
        &self,
        filter: &UsageFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<UsagePage> {
        let t = self.usage.clone();
        let filter = filter.clone();
        // A cursor is the hex key of an entry and the index of the last record returned
        // from it ("KEY.N"); a plain hex key (older cursors) resumes after that entry.
        let (start, skip) = match cursor {
            Some(c) => {
                let (hex, n) = match c.split_once('.') {
                    Some((h, n)) => (h, Some(n.parse::<usize>().map_err(|_| bad_cursor())?)),
                    None => (c, None),
                };
                let mut k = crate::ids::unhex_any(hex).ok_or_else(bad_cursor)?;
                match n {
                    Some(n) => (k, Some(n)),
                    None => {
                        k.push(0); // strictly after the cursor's key
                        (k, None)
                    }
                }
            }
            // A segment that starts up to SPAN_MS earlier may hold records of the range.
            None => (
                segment::time_key(filter.from_ms.unwrap_or(0).saturating_sub(segment::SPAN_MS)),
                None,
            ),
        };
        blocking(move || {
            let mut page = UsagePage::default();
            let mut last: Option<(sled::IVec, usize)> = None;
            'entries: for kv in t.range(start.clone()..) {
                let (k, v) = kv.map_err(io)?;
                if filter
                    .to_ms
                    .is_some_and(|to| segment::key_ts(&k).is_some_and(|ts| ts >= to))
                {
                    break;
                }
                let entry = segment::Entry::decode(&k, &v)
                    .ok_or_else(|| StoreError::Corrupt("bad usage entry".into()))?;
                let resume = skip.filter(|_| k.as_ref() == start.as_slice());
                for (n, json) in entry.records().enumerate() {
                    if resume.is_some_and(|r| n <= r) {
                        continue;
                    }
                    let rec: UsageRecord = from_json(json)?;
                    if filter.from_ms.is_some_and(|from| rec.ts_ms < from)
                        || filter.to_ms.is_some_and(|to| rec.ts_ms >= to)
                        || !filter.matches(&rec)
                    {
                        continue;
                    }
                    if page.records.len() == limit {
                        page.next_cursor = last
                            .take()
                            .map(|(k, n)| format!("{}.{n}", crate::ids::hex(&k)));
                        break 'entries;
                    }
                    last = Some((k.clone(), n));
                    page.records.push(rec);
                }
            }
            Ok(page)
        })
        .await
    }

    async fn prune_usage(&self, before_ms: u64) -> StoreResult<usize> {
        let (usage, spend, db) = (self.usage.clone(), self.spend.clone(), self.db.clone());
        let lock = self.append_lock.clone();
        blocking(move || {
            let _one_at_a_time = lock.lock();
            let mut n = 0;
            // A segment goes when its last record is older than the cut-off (one that
            // straddles it stays whole until the next run).
            for kv in usage.range(..segment::time_key(before_ms)) {
                let (k, v) = kv.map_err(io)?;
                match segment::Entry::decode(&k, &v) {
                    Some(e) if e.last_ts >= before_ms => continue,
                    Some(e) => n += e.len(),
                    None => n += 1,
                }
                usage.remove(&k).map_err(io)?;
            }
            // Spend windows are kept for a year past the cut-off at most; the current window
            // of a lifetime budget (window 0) is never pruned.
            let cutoff = (before_ms / 1000).saturating_sub(366 * 86_400);
            for kv in spend.iter() {
                let (k, _) = kv.map_err(io)?;
                if let Some((_, _, ws)) = parse_spend_key(&k) {
                    if ws != 0 && ws < cutoff {
                        spend.remove(&k).map_err(io)?;
                    }
                }
            }
            db.flush().map_err(io)?;
            Ok(n)
        })
        .await
    }

    async fn flush(&self) -> StoreResult<()> {
        let db = self.db.clone();
        blocking(move || db.flush().map(|_| ()).map_err(io)).await
    }

    async fn import_spend(&self, rows: Vec<SpendRow>) -> StoreResult<()> {
        let (spend, db) = (self.spend.clone(), self.db.clone());
        blocking(move || {
            for r in rows {
                spend
                    .insert(
                        spend_key(r.scope, &r.id, r.window_start),
                        &r.spent.to_be_bytes(),
                    )
                    .map_err(io)?;
            }
            db.flush().map_err(io)?;
            Ok(())
        })
        .await
    }

    fn healthy(&self) -> bool {
        // A read through sled's page cache: fails only when the store itself is broken.
        self.meta.contains_key(b"master_hash").is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::settled;

    /// Traces stored one per row as JSON (before blocks) keep working beside blocks: listed,
    /// paged, found by id (the newest wins, across layouts) and pruned, with their index rows.
    /// Ids the gateway minted are found through the per-minute id entries, a caller's own
    /// ids through their rows; a block straddling the cutoff keeps its newer traces.
    #[tokio::test]
    async fn trace_blocks_live_beside_older_json_rows() {
        use crate::store::conformance::trace;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // Times near now: ids the gateway mints carry the time they were minted.
        let t0 = crate::clock::now_millis();
        let old = trace("client-1", t0, "k1", 200, 5);
        store
            .traces
            .insert(
                trace_key_row(t0, "client-1"),
                serde_json::to_vec(&old).unwrap(),
            )
            .unwrap();
        store
            .trace_ids
            .insert(trace_id_key(b"client-1", t0), &[][..])
            .unwrap();
        let minted = crate::ids::request_id();
        let (m1, c2) = (
            trace(&minted, t0 + 10, "k1", 200, 5),
            trace("client-1", t0 + 20, "k2", 200, 5),
        );
        let m3 = trace(&crate::ids::request_id(), t0 + 30, "k1", 502, 5);
        store
            .put_traces(vec![m3.clone(), m1.clone(), c2.clone()])
            .await
            .unwrap();
        // One block and one id entry for the batch, one row for the caller's id.
        assert_eq!(store.traces.len(), 2);
        let minutes: std::collections::BTreeSet<_> = [&m1, &m3]
            .iter()
            .map(|t| crate::ids::request_id_ms(&t.request_id).unwrap() / trace_block::ID_BUCKET_MS)
            .collect();
        assert_eq!(store.trace_ids.len(), 2 + minutes.len());
        assert!(store.traces.iter().values().any(|v| v.unwrap()[0] == 0x02));
        // The minted id reused by a caller later, in another batch.
        let m1_again = trace(&minted, t0 + 40, "k2", 200, 5);
        store.put_traces(vec![m1_again.clone()]).await.unwrap();

        assert_eq!(
            store.get_trace(&minted, None).await.unwrap(),
            Some(m1_again)
        );
        assert_eq!(
            store.get_trace(&minted, Some("k1")).await.unwrap(),
            Some(m1.clone())
        );
        assert_eq!(store.get_trace("client-1", None).await.unwrap(), Some(c2));
        assert_eq!(
            store.get_trace("client-1", Some("k1")).await.unwrap(),
            Some(old)
        );
        assert_eq!(
            store
                .get_trace(&crate::ids::request_id(), None)
                .await
                .unwrap(),
            None
        );

        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .query_traces(&TraceFilter::default(), cursor.as_deref(), 1)
                .await
                .unwrap();
            seen.extend(page.traces.iter().map(|t| t.ts_ms));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(
            seen,
            [40, 30, 20, 10, 0].map(|d| t0 + d),
            "paged one by one"
        );

        // The cutoff falls inside the block (+10..+30): its older two go.
        assert_eq!(store.prune_traces(t0 + 25).await.unwrap(), 3);
        let left = store
            .query_traces(&TraceFilter::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(
            left.traces.iter().map(|t| t.ts_ms).collect::<Vec<_>>(),
            [t0 + 40, t0 + 30]
        );
        assert_eq!(store.get_trace("client-1", None).await.unwrap(), None);
        assert_eq!(
            store.get_trace(&m3.request_id, None).await.unwrap(),
            Some(m3)
        );
        // The caller-id rows went with their traces; the id entries stay while they
        // name a kept trace.
        assert!(store.trace_ids.scan_prefix(b"client-1").next().is_none());
        assert_eq!(
            store
                .prune_traces(t0 + 3 * trace_block::ID_BUCKET_MS)
                .await
                .unwrap(),
            2
        );
        assert_eq!((store.traces.len(), store.trace_ids.len()), (0, 0));
    }

    /// A store written before segments (one row per record) keeps working: its rows are
    /// read, paged and pruned with the segments, and a replay of one of them counts once.
    #[tokio::test]
    async fn older_one_record_rows_live_beside_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for (id, ts) in [("old1", 1_000u64), ("old2", 1_050)] {
            let s = settled(id, ts, "k", 1);
            let mut k = ts.to_be_bytes().to_vec();
            k.extend_from_slice(id.as_bytes());
            store.usage.insert(k, s.record.to_json()).unwrap();
        }
        let fresh = store
            .append_usage(vec![
                settled("old2", 1_050, "k", 1),
                settled("new1", 1_060, "k", 1),
                settled("new2", 1_070, "k", 1),
            ])
            .await
            .unwrap();
        let ids = |v: &[Settled]| v.iter().map(|s| s.record.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&fresh),
            ["new1", "new2"],
            "the older row is found by id"
        );
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .query_usage(&UsageFilter::default(), cursor.as_deref(), 1)
                .await
                .unwrap();
            seen.extend(page.records.iter().map(|r| r.id.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["old1", "old2", "new1", "new2"], "paged one by one");
        let from = store
            .query_usage(
                &UsageFilter {
                    from_ms: Some(1_065),
                    ..Default::default()
                },
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(from.records.len(), 1, "a range can start inside a segment");
        assert_eq!(
            store.prune_usage(1_055).await.unwrap(),
            2,
            "both older rows"
        );
        assert_eq!(
            store.prune_usage(1_065).await.unwrap(),
            0,
            "a segment that straddles the cut-off stays whole"
        );
        assert_eq!(store.prune_usage(2_000).await.unwrap(), 2);
    }
}
