//! Virtual keys and the master key.
//!
//! Keys are `tg-` plus 43 url-safe characters (256 random bits). Only their SHA-256 is stored.
//! A presented key is hashed, looked up by hash in an in-memory index (so the hot path does
//! no disk I/O), and the stored hash is compared in constant time. Looking up by hash leaks
//! nothing useful about the key: the hash is preimage resistant.

use arc_swap::ArcSwap;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::clock::now_secs;
use crate::ids::{generate_id, hex};
use crate::records::KeyRecord;

pub const KEY_PREFIX: &str = "tg-";
pub const MASTER_PREFIX: &str = "tgm-";

pub type KeyHash = [u8; 32];

pub fn hash_key(secret: &str) -> KeyHash {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn unhex(s: &str) -> Option<KeyHash> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let v = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(v, 16).ok()?;
    }
    Some(out)
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A fresh virtual key secret.
pub fn generate_key() -> String {
    format!("{KEY_PREFIX}{}", random_token(32))
}

/// A fresh master key secret.
pub fn generate_master_key() -> String {
    format!("{MASTER_PREFIX}{}", random_token(32))
}

/// Minting lives here, with the secret it makes; the record itself is in [`crate::records`].
impl KeyRecord {
    /// Mints a new key; returns the record and the secret (shown once).
    pub fn mint(
        name: Option<String>,
        expires_at: Option<u64>,
        metadata: serde_json::Value,
    ) -> (KeyRecord, String) {
        let secret = generate_key();
        let rec = KeyRecord {
            id: generate_id("key_"),
            name,
            hash: hex(&hash_key(&secret)),
            prefix: secret.chars().take(KEY_PREFIX.len() + 6).collect(),
            created_at: now_secs(),
            expires_at,
            active: true,
            user_id: None,
            team_id: None,
            metadata,
            limits: Default::default(),
            allowed_models: None,
            reject_user_mismatch: None,
            end_user_limits: None,
            tools: None,
            mcp: None,
            guardrail_policies: Vec::new(),
            traces: None,
            exclude_from_budget: false,
            last_used_at: None,
        };
        (rec, secret)
    }
}

/// Why a presented credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Unknown,
    Inactive,
    Expired,
}

impl AuthFailure {
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown",
            AuthFailure::Inactive => "inactive",
            AuthFailure::Expired => "expired",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => {
                "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            }
            AuthFailure::Malformed => "Malformed Authorization header: expected 'Bearer <key>'.",
            AuthFailure::Unknown => "Invalid API key.",
            AuthFailure::Inactive => "This API key has been revoked.",
            AuthFailure::Expired => "This API key has expired.",
        }
    }
}

/// Extracts the presented credential: `Authorization: Bearer` first, then `x-api-key`.
/// A non-Bearer Authorization header does not shadow a valid `x-api-key`.
pub fn presented_key<'a>(
    authorization: Option<&'a [u8]>,
    x_api_key: Option<&'a [u8]>,
) -> Result<&'a str, AuthFailure> {
    if let Some(v) = authorization {
        let v = std::str::from_utf8(v)
            .map_err(|_| AuthFailure::Malformed)?
            .trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            let k = v[7..].trim();
            if !k.is_empty() {
                return Ok(k);
            }
        }
        if x_api_key.is_none() {
            return Err(AuthFailure::Malformed);
        }
    }
    match x_api_key {
        Some(v) => {
            let k = std::str::from_utf8(v)
                .map_err(|_| AuthFailure::Malformed)?
                .trim();
            if k.is_empty() {
                Err(AuthFailure::Missing)
            } else {
                Ok(k)
            }
        }
        None => Err(AuthFailure::Missing),
    }
}

/// A hasher for keys that are already uniformly distributed (SHA-256 outputs): the bucket
/// hash is their first eight bytes, so a lookup costs no hashing beyond the SHA-256 itself.
/// Stored hashes come from keys minted with 256 random bits, so buckets cannot be flooded.
#[derive(Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached by `Digest32` (it writes one u64); fold anything else in.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// A key's SHA-256 as a map key, hashed by its first eight bytes (see [`DigestHasher`]).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Digest32(KeyHash);

impl std::hash::Hash for Digest32 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(b));
    }
}

type DigestMap<V> = HashMap<Digest32, V, std::hash::BuildHasherDefault<DigestHasher>>;

/// An indexed key: its record and the raw SHA-256 decoded once from the record's hex.
#[derive(Clone)]
struct Indexed {
    hash: KeyHash,
    rec: Arc<KeyRecord>,
    /// When the key last authenticated (seconds; 0: not since loaded). Shared by the
    /// entry's copies across index replacements, so no use is lost to a reload.
    used: Arc<std::sync::atomic::AtomicU64>,
}

/// The in-memory key index: replaced whole on every change (changes are rare, reads are on
/// every request), so readers never take a lock.
#[derive(Default)]
pub struct KeyIndex {
    by_hash: ArcSwap<DigestMap<Indexed>>,
    master: ArcSwap<Option<KeyHash>>,
}

impl KeyIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole index.
    pub fn replace(&self, keys: impl IntoIterator<Item = KeyRecord>) {
        let old = self.by_hash.load();
        let used_of = |id: &str| {
            old.values()
                .find(|v| v.rec.id == id)
                .map(|v| v.used.clone())
                .unwrap_or_default()
        };
        let map = keys
            .into_iter()
            .filter_map(|k| {
                unhex(&k.hash).map(|hash| {
                    (
                        Digest32(hash),
                        Indexed {
                            hash,
                            used: used_of(&k.id),
                            rec: Arc::new(k),
                        },
                    )
                })
            })
            .collect();
        self.by_hash.store(Arc::new(map));
    }

    /// A copy of the current map (entries share their records).
    fn copy_map(&self) -> DigestMap<Indexed> {
        DigestMap::clone(&self.by_hash.load())
    }

    pub fn upsert(&self, rec: KeyRecord) {
        let Some(hash) = unhex(&rec.hash) else { return };
        let mut map = self.copy_map();
        let used = map
            .values()
            .find(|v| v.rec.id == rec.id)
            .map(|v| v.used.clone())
            .unwrap_or_default();
        // A rotated key keeps its id: drop any entry with the same id first.
        map.retain(|_, v| v.rec.id != rec.id);
        map.insert(
            Digest32(hash),
            Indexed {
                hash,
                rec: Arc::new(rec),
                used,
            },
        );
        self.by_hash.store(Arc::new(map));
    }

    pub fn remove(&self, id: &str) {
        let mut map = self.copy_map();
        map.retain(|_, v| v.rec.id != id);
        self.by_hash.store(Arc::new(map));
    }

    pub fn all(&self) -> Vec<KeyRecord> {
        let mut v: Vec<KeyRecord> = self
            .by_hash
            .load()
            .values()
            .map(|v| KeyRecord::clone(&v.rec))
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    pub fn len(&self) -> usize {
        self.by_hash.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set_master(&self, hash: Option<KeyHash>) {
        self.master.store(Arc::new(hash));
    }

    pub fn master_hash(&self) -> Option<KeyHash> {
        **self.master.load()
    }

    /// Authenticates a virtual key.
    pub fn check(&self, secret: &str, now: u64) -> Result<Arc<KeyRecord>, AuthFailure> {
        let h = hash_key(secret);
        let map = self.by_hash.load();
        let entry = map.get(&Digest32(h)).ok_or(AuthFailure::Unknown)?;
        // Defence in depth: the map lookup matched on the hash; confirm in constant time.
        if !bool::from(entry.hash.ct_eq(&h)) {
            return Err(AuthFailure::Unknown);
        }
        let rec = &entry.rec;
        if !rec.active {
            return Err(AuthFailure::Inactive);
        }
        if rec.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthFailure::Expired);
        }
        // At most one store to the shared cache line per key and second.
        if entry.used.load(std::sync::atomic::Ordering::Relaxed) < now {
            entry.used.store(now, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(rec.clone())
    }

    /// When `k` last authenticated a request: in memory, or as last stored.
    pub fn last_used(&self, k: &KeyRecord) -> Option<u64> {
        let mem = unhex(&k.hash)
            .and_then(|h| {
                self.by_hash
                    .load()
                    .get(&Digest32(h))
                    .map(|v| v.used.load(std::sync::atomic::Ordering::Relaxed))
            })
            .filter(|t| *t > 0);
        mem.max(k.last_used_at)
    }

    /// The keys used at least `gap` seconds after their stored `last_used_at`, with it
    /// brought up to date (for the batched write; see `services::last_used`).
    pub fn stale_last_used(&self, gap: u64) -> Vec<KeyRecord> {
        self.by_hash
            .load()
            .values()
            .filter_map(|v| {
                let used = v.used.load(std::sync::atomic::Ordering::Relaxed);
                let stored = v.rec.last_used_at.unwrap_or(0);
                (used > 0 && used >= stored.saturating_add(gap) && used > stored).then(|| {
                    let mut k = KeyRecord::clone(&v.rec);
                    k.last_used_at = Some(used);
                    k
                })
            })
            .collect()
    }

    /// Checks the master key in constant time (no early exit on length or content).
    pub fn is_master(&self, secret: &str) -> bool {
        match self.master_hash() {
            Some(m) => bool::from(hash_key(secret).ct_eq(&m)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        let k = generate_key();
        assert!(k.starts_with("tg-"));
        assert!(k.len() >= 3 + 32);
        assert!(k[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(generate_key(), k);
    }

    #[test]
    fn presented_key_forms() {
        assert_eq!(presented_key(Some(b"Bearer abc"), None), Ok("abc"));
        assert_eq!(presented_key(Some(b"bearer abc"), None), Ok("abc"));
        assert_eq!(presented_key(None, Some(b"abc")), Ok("abc"));
        assert_eq!(presented_key(Some(b"Basic zzz"), Some(b"abc")), Ok("abc"));
        assert_eq!(
            presented_key(Some(b"Basic zzz"), None),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(presented_key(None, None), Err(AuthFailure::Missing));
    }

    #[test]
    fn index_checks_keys() {
        let idx = KeyIndex::new();
        let (rec, secret) = KeyRecord::mint(Some("a".into()), None, serde_json::Value::Null);
        let (mut old, old_secret) = KeyRecord::mint(None, Some(10), serde_json::Value::Null);
        idx.replace([rec.clone()]);
        assert_eq!(idx.check(&secret, 100).unwrap().id, rec.id);
        assert_eq!(idx.check("tg-nope", 100).unwrap_err(), AuthFailure::Unknown);
        idx.upsert(old.clone());
        assert_eq!(
            idx.check(&old_secret, 100).unwrap_err(),
            AuthFailure::Expired
        );
        old.expires_at = None;
        old.active = false;
        idx.upsert(old.clone());
        assert_eq!(
            idx.check(&old_secret, 100).unwrap_err(),
            AuthFailure::Inactive
        );
        idx.remove(&rec.id);
        assert_eq!(idx.check(&secret, 100).unwrap_err(), AuthFailure::Unknown);
    }

    #[test]
    fn master_key_check() {
        let idx = KeyIndex::new();
        assert!(!idx.is_master("x"));
        let m = generate_master_key();
        idx.set_master(Some(hash_key(&m)));
        assert!(idx.is_master(&m));
        assert!(!idx.is_master("tgm-wrong"));
    }
}
