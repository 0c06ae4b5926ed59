//! The sled implementation of [`Store`]. sled calls block (writes may wait on I/O, flush
//! always does), so every call runs on the blocking pool.

use async_trait::async_trait;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{Store, StoreError, StoreResult, UsageFilter, UsagePage};
use crate::auth::KeyRecord;
use crate::ledger::budget::Scope;
use crate::ledger::entities::{BudgetRecord, UserRecord};
use crate::ledger::Settled;
use crate::meter::price::Price;

pub struct SledStore {
    db: sled::Db,
    keys: sled::Tree,
    meta: sled::Tree,
    users: sled::Tree,
    budgets: sled::Tree,
    prices: sled::Tree,
    /// Usage records by (ts_ms big-endian ++ id): time-ordered scans.
    usage: sled::Tree,
    /// (scope, id, window_start) → spent micro-dollars.
    spend: sled::Tree,
}

fn scope_byte(s: Scope) -> u8 {
    match s {
        Scope::Key => b'k',
        Scope::User => b'u',
    }
}

fn spend_key(scope: Scope, id: &str, window_start: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 10);
    k.push(scope_byte(scope));
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k.extend_from_slice(&window_start.to_be_bytes());
    k
}

fn parse_spend_key(k: &[u8]) -> Option<(Scope, String, u64)> {
    let scope = match *k.first()? {
        b'k' => Scope::Key,
        b'u' => Scope::User,
        _ => return None,
    };
    if k.len() < 10 {
        return None;
    }
    let (idpart, ws) = k[1..].split_at(k.len() - 1 - 8);
    let id = std::str::from_utf8(idpart.strip_suffix(&[0])?)
        .ok()?
        .to_string();
    Some((scope, id, u64::from_be_bytes(ws.try_into().ok()?)))
}

fn usage_key(ts_ms: u64, id: &str) -> Vec<u8> {
    let mut k = ts_ms.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
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
            usage: t("usage")?,
            spend: t("spend")?,
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
        blocking(move || {
            let encoded: Vec<(Vec<u8>, Vec<u8>)> = batch
                .iter()
                .map(|s| (usage_key(s.record.ts_ms, &s.record.id), s.record.to_json()))
                .collect();
            // One transaction over records and spend: both land, or neither. A record's key
            // (its time and id) is its idempotency check, and spend is summed per account and
            // window before it is written, so a batch costs one read-modify-write per account
            // instead of one per request.
            let res = (&usage, &spend).transaction(|(u, sp)| {
                let mut fresh = Vec::new();
                let mut sums: std::collections::HashMap<Vec<u8>, u64> =
                    std::collections::HashMap::new();
                for (n, s) in batch.iter().enumerate() {
                    let (k, v) = &encoded[n];
                    if u.insert(k.as_slice(), v.as_slice())?.is_some() {
                        // already recorded: restore it untouched; replays never count twice
                        continue;
                    }
                    for c in s.charges.iter().filter(|c| c.amount > 0) {
                        *sums
                            .entry(spend_key(c.scope, &c.id, c.window_start))
                            .or_default() += c.amount;
                    }
                    fresh.push(n);
                }
                for (sk, add) in sums {
                    let old = sp.get(&sk)?.map_or(0, |v| {
                        u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))
                    });
                    sp.insert(sk, &(old + add).to_be_bytes())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(fresh)
            });
            let fresh = match res {
                Ok(f) => f,
                Err(TransactionError::Storage(e)) => return Err(io(e)),
                Err(TransactionError::Abort(())) => {
                    return Err(StoreError::Io("usage transaction aborted".into()))
                }
            };
            // The promise: an answered request's usage is on disk within one writer cycle.
            db.flush().map_err(io)?;
            let mut out = Vec::with_capacity(fresh.len());
            let mut batch = batch.into_iter().map(Some).collect::<Vec<_>>();
            for n in fresh {
                if let Some(s) = batch[n].take() {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn load_spend(&self) -> StoreResult<Vec<(Scope, String, u64, u64)>> {
        let t = self.spend.clone();
        blocking(move || {
            let mut out = Vec::new();
            for kv in t.iter() {
                let (k, v) = kv.map_err(io)?;
                if let (Some((scope, id, ws)), Ok(b)) =
                    (parse_spend_key(&k), <[u8; 8]>::try_from(v.as_ref()))
                {
                    out.push((scope, id, ws, u64::from_be_bytes(b)));
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
        let start = match cursor {
            Some(c) => {
                let mut k = crate::auth::unhex_any(c)
                    .ok_or_else(|| StoreError::Corrupt("bad cursor".into()))?;
                k.push(0); // strictly after the cursor's key
                k
            }
            None => filter.from_ms.unwrap_or(0).to_be_bytes().to_vec(),
        };
        blocking(move || {
            let mut page = UsagePage::default();
            let mut last_key = None;
            for kv in t.range(start..) {
                let (k, v) = kv.map_err(io)?;
                let rec: crate::meter::record::UsageRecord = from_json(&v)?;
                if filter.to_ms.is_some_and(|to| rec.ts_ms >= to) {
                    break;
                }
                if filter.matches(&rec) {
                    if page.records.len() == limit {
                        page.next_cursor = last_key.map(|k: sled::IVec| crate::auth::hex(&k));
                        break;
                    }
                    last_key = Some(k);
                    page.records.push(rec);
                }
            }
            Ok(page)
        })
        .await
    }

    async fn prune_usage(&self, before_ms: u64) -> StoreResult<usize> {
        let (usage, spend, db) = (self.usage.clone(), self.spend.clone(), self.db.clone());
        blocking(move || {
            let mut n = 0;
            for kv in usage.range(..before_ms.to_be_bytes().to_vec()) {
                let (k, _) = kv.map_err(io)?;
                usage.remove(&k).map_err(io)?;
                n += 1;
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

    async fn import_spend(&self, rows: Vec<(Scope, String, u64, u64)>) -> StoreResult<()> {
        let (spend, db) = (self.spend.clone(), self.db.clone());
        blocking(move || {
            for (scope, id, ws, amount) in rows {
                spend
                    .insert(spend_key(scope, &id, ws), &amount.to_be_bytes())
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
