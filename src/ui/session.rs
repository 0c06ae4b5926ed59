//! Console sessions and the login rate limit.
//!
//! A session id is 32 random bytes, sent to the browser once in the cookie and kept only as
//! its SHA-256 hash (a memory dump or the sessions file does not yield a usable cookie).
//! Sessions end after the configured idle time, at logout, and when an operator revokes them.
//!
//! They live in memory and, for the gateway, also in `console-sessions.json` in the data
//! directory (hashed ids, 0600), so that they survive a restart and a graceful upgrade: the
//! old and the new process share the data directory, and a process that does not know a
//! session reads the file again before refusing it. Each write merges what the file holds
//! (another process's sessions) with this process's own, minus the sessions this process
//! ended; writes happen on the blocking pool, never on a request's thread.

use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::ids;

/// The sessions file in the data directory.
pub const FILE: &str = "console-sessions.json";

/// How stale the file's idle clock of a session may get before a use rewrites it.
const TOUCH_WRITE_SECS: u64 = 300;

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Role {
    /// Logged in with the master key: every page. `master` identifies that key (a hash of
    /// its hash): once the master key changes, the session ends.
    Operator { master: String },
    /// A named admin (`tollgate admins`): what an operator sees.
    Admin { name: String },
    /// Logged in with a virtual key: that key's own page only.
    KeyHolder { key_id: String },
}

impl Role {
    /// Operators and named admins see every page.
    pub fn is_operator(&self) -> bool {
        matches!(self, Role::Operator { .. } | Role::Admin { .. })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub role: Role,
    /// The CSRF token every state-changing call of this session must carry.
    pub csrf: String,
    last_seen: u64,
    /// `last_seen` as last written to the file.
    #[serde(skip)]
    saved_seen: u64,
}

type Hash = [u8; 32];

/// Live sessions, keyed by the hash of their id.
pub struct Sessions {
    map: Mutex<HashMap<Hash, Session>>,
    /// Sessions this process ended (and when): never taken back from the file.
    ended: Mutex<HashMap<Hash, u64>>,
    idle_secs: u64,
    file: Option<PathBuf>,
    generation: AtomicU64,
    /// The generation last written (a slower, older write never overwrites a newer one).
    written: Mutex<u64>,
}

fn hash(id: &str) -> Hash {
    Sha256::digest(id.as_bytes()).into()
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    ids::hex(&b)
}

impl Sessions {
    /// Sessions that end with the process (the CLI's in-process state, tests).
    pub fn in_memory(idle_secs: u64) -> Arc<Sessions> {
        Sessions::new(None, idle_secs)
    }

    /// Sessions kept in `dir`/[`FILE`] too.
    pub fn persistent(dir: PathBuf, idle_secs: u64) -> Arc<Sessions> {
        let s = Sessions::new(Some(dir.join(FILE)), idle_secs);
        s.reload(crate::clock::now_secs());
        s
    }

    fn new(file: Option<PathBuf>, idle_secs: u64) -> Arc<Sessions> {
        Arc::new(Sessions {
            map: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
            idle_secs,
            file,
            generation: AtomicU64::new(0),
            written: Mutex::new(0),
        })
    }

    fn alive(&self, s: &Session, now: u64) -> bool {
        now.saturating_sub(s.last_seen) < self.idle_secs
    }

    /// Opens a session; returns its id (for the cookie, never stored) and its CSRF token.
    pub fn open(self: &Arc<Self>, role: Role, now: u64) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        self.map.lock().insert(
            hash(&id),
            Session {
                role,
                csrf: csrf.clone(),
                last_seen: now,
                saved_seen: now,
            },
        );
        self.save();
        (id, csrf)
    }

    /// The live session with this id, its idle clock restarted. A session this process does
    /// not know is looked for in the file (another process may have opened it).
    pub fn touch(self: &Arc<Self>, id: &str, now: u64) -> Option<Session> {
        let h = hash(id);
        if !self.map.lock().contains_key(&h) {
            self.reload(now);
        }
        let mut map = self.map.lock();
        // Expired sessions go on every lookup, so that the map stays bounded.
        let idle = self.idle_secs;
        map.retain(|_, s| now.saturating_sub(s.last_seen) < idle);
        let s = map.get_mut(&h)?;
        s.last_seen = now;
        let stale = now.saturating_sub(s.saved_seen) >= TOUCH_WRITE_SECS;
        if stale {
            s.saved_seen = now;
        }
        let out = s.clone();
        drop(map);
        if stale {
            self.save();
        }
        Some(out)
    }

    /// Ends one session (logout).
    pub fn close(self: &Arc<Self>, id: &str) {
        let h = hash(id);
        self.map.lock().remove(&h);
        self.ended_now(std::iter::once(h));
        self.save();
    }

    /// Ends every session but `keep`; returns how many ended.
    pub fn revoke_others(self: &Arc<Self>, keep: &str) -> usize {
        let k = hash(keep);
        let gone: Vec<Hash> = {
            let mut map = self.map.lock();
            let gone = map.keys().filter(|h| **h != k).copied().collect();
            map.retain(|h, _| *h == k);
            gone
        };
        self.ended_now(gone.iter().copied());
        self.save();
        gone.len()
    }

    /// Ends every session of a key holder (the key was revoked, expired or deleted).
    pub fn revoke_key(self: &Arc<Self>, key_id: &str) {
        self.revoke_role(Role::KeyHolder {
            key_id: key_id.into(),
        });
    }

    /// Ends every session of a named admin (deleted, or a new password).
    pub fn revoke_admin(self: &Arc<Self>, name: &str) {
        self.revoke_role(Role::Admin { name: name.into() });
    }

    fn revoke_role(self: &Arc<Self>, role: Role) {
        let gone: Vec<Hash> = {
            let mut map = self.map.lock();
            let gone = map
                .iter()
                .filter(|(_, s)| s.role == role)
                .map(|(h, _)| *h)
                .collect();
            map.retain(|_, s| s.role != role);
            gone
        };
        self.ended_now(gone.into_iter());
        self.save();
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ended_now(&self, hashes: impl Iterator<Item = Hash>) {
        let now = crate::clock::now_secs();
        let mut ended = self.ended.lock();
        // A session ended longer ago than the idle time would have expired anyway.
        ended.retain(|_, at| now.saturating_sub(*at) < self.idle_secs);
        ended.extend(hashes.map(|h| (h, now)));
    }

    /// The file's live sessions that this process has not ended.
    fn read_file(&self, now: u64) -> Vec<(Hash, Session)> {
        let Some(path) = &self.file else {
            return Vec::new();
        };
        let Ok(bytes) = std::fs::read(path) else {
            return Vec::new();
        };
        let stored: HashMap<String, Session> = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("ignoring {}: {e}", path.display());
                return Vec::new();
            }
        };
        let ended = self.ended.lock();
        stored
            .into_iter()
            .filter_map(|(k, mut s)| {
                let h: Hash = crate::auth::unhex(&k)?;
                s.saved_seen = s.last_seen;
                (self.alive(&s, now) && !ended.contains_key(&h)).then_some((h, s))
            })
            .collect()
    }

    /// Takes in the file's sessions this process does not know.
    fn reload(&self, now: u64) {
        let found = self.read_file(now);
        let mut map = self.map.lock();
        for (h, s) in found {
            map.entry(h).or_insert(s);
        }
    }

    /// Writes the sessions file (on the blocking pool when there is a runtime).
    fn save(self: &Arc<Self>) {
        if self.file.is_none() {
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let me = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || me.write(generation));
            }
            Err(_) => me.write(generation),
        }
    }

    fn write(&self, generation: u64) {
        let Some(path) = &self.file else { return };
        let mut written = self.written.lock();
        if *written > generation {
            return;
        }
        let now = crate::clock::now_secs();
        let mut all: HashMap<String, Session> = self
            .read_file(now)
            .into_iter()
            .map(|(h, s)| (ids::hex(&h), s))
            .collect();
        for (h, s) in self.map.lock().iter() {
            if self.alive(s, now) {
                all.insert(ids::hex(h), s.clone());
            }
        }
        match write_private(path, &serde_json::to_vec(&all).unwrap_or_default()) {
            Ok(()) => *written = generation,
            Err(e) => log::error!("cannot write {}: {e}", path.display()),
        }
    }
}

/// Writes `bytes` to `path` through a temporary file (0600) and a rename.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
    }
    std::fs::rename(&tmp, path)
}

/// Failed login attempts per client IP, in fixed one-minute windows.
#[derive(Default)]
pub struct LoginLimiter {
    map: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl LoginLimiter {
    /// Whether this IP has used up its `per_minute` failed attempts in the current minute.
    pub fn blocked(&self, ip: IpAddr, now: u64, per_minute: u32) -> bool {
        self.map
            .lock()
            .get(&ip)
            .is_some_and(|(w, n)| *w == now / 60 && *n >= per_minute)
    }

    /// Counts a failed attempt.
    pub fn failed(&self, ip: IpAddr, now: u64) {
        let window = now / 60;
        let mut map = self.map.lock();
        if map.len() > 100_000 {
            map.retain(|_, (w, _)| *w == window);
        }
        let e = map.entry(ip).or_insert((window, 0));
        if e.0 != window {
            *e = (window, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Seconds until the current window ends.
    pub fn retry_after(now: u64) -> u64 {
        60 - now % 60
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> Role {
        Role::Operator { master: "m".into() }
    }

    #[test]
    fn sessions_expire_when_idle_and_are_stored_hashed() {
        let s = Sessions::in_memory(200);
        let (id, csrf) = s.open(op(), 1000);
        assert_eq!(s.touch(&id, 1100).unwrap().csrf, csrf);
        // Touched at 1100: alive at 1299, gone at 1300.
        assert!(s.touch(&id, 1299).is_some());
        assert!(s.touch(&id, 1499).is_none());
        let (id2, _) = s.open(op(), 10);
        // Kept under the id's SHA-256, never the id itself.
        assert!(s.map.lock().contains_key(&hash(&id2)));
        s.close(&id2);
        assert!(s.touch(&id2, 10).is_none());
    }

    #[test]
    fn revoking() {
        let s = Sessions::in_memory(100);
        let (a, _) = s.open(op(), 0);
        let (b, _) = s.open(
            Role::KeyHolder {
                key_id: "k1".into(),
            },
            0,
        );
        let (c, _) = s.open(op(), 0);
        s.revoke_key("k1");
        assert!(s.touch(&b, 1).is_none());
        assert_eq!(s.revoke_others(&a), 1);
        assert!(s.touch(&a, 1).is_some());
        assert!(s.touch(&c, 1).is_none());
    }

    #[test]
    fn the_file_carries_sessions_to_another_process_but_not_ended_ones() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::clock::now_secs();
        let old = Sessions::persistent(dir.path().to_path_buf(), 3600);
        let (kept, csrf) = old.open(Role::KeyHolder { key_id: "k".into() }, now);
        let (ended, _) = old.open(op(), now);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(
            !text.contains(&kept) && !text.contains(&ended),
            "ids are hashed"
        );
        // A new process (an upgrade) finds the old one's sessions.
        let new = Sessions::persistent(dir.path().to_path_buf(), 3600);
        assert_eq!(new.touch(&kept, now).unwrap().csrf, csrf);
        new.close(&ended);
        // The old process writes again (it still has `ended` in memory)...
        let (later, _) = old.open(op(), now);
        // ...and the new one takes in `later` on a miss, but never `ended` back.
        assert!(new.touch(&later, now).is_some());
        assert!(new.touch(&ended, now).is_none());
        // A third process reads what the new one wrote last: `ended` is not in it.
        new.close(&later);
        let third = Sessions::persistent(dir.path().to_path_buf(), 3600);
        assert!(third.touch(&kept, now).is_some());
        assert!(third.touch(&later, now).is_none());
    }

    #[test]
    fn login_limit_per_ip_and_minute() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(!l.blocked(ip, 120, 3));
            l.failed(ip, 130);
        }
        assert!(l.blocked(ip, 150, 3));
        assert!(!l.blocked(other, 150, 3));
        assert!(!l.blocked(ip, 180, 3));
        assert_eq!(LoginLimiter::retry_after(150), 30);
    }
}
