//! Console sessions and the login rate limit, in memory.
//!
//! A session id is 32 random bytes, sent to the browser once in the cookie and kept here
//! only as its SHA-256 hash (a memory dump does not yield a usable cookie). Sessions end
//! after the configured idle time, at logout, when an operator revokes them, and when the
//! process exits: they are not carried over a graceful upgrade (operators log in again).

use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;

use crate::ids;

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Logged in with the master key: every page.
    Operator,
    /// Logged in with a virtual key: that key's own page only.
    KeyHolder { key_id: String },
}

#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    /// The CSRF token every state-changing call of this session must carry.
    pub csrf: String,
    last_seen: u64,
}

/// Live sessions, keyed by the hash of their id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    ids::hex(&b)
}

impl Sessions {
    /// Opens a session; returns its id (for the cookie, never stored) and its CSRF token.
    pub fn open(&self, role: Role, now: u64) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let mut map = self.map.lock();
        map.insert(
            hash(&id),
            Session {
                role,
                csrf: csrf.clone(),
                last_seen: now,
            },
        );
        (id, csrf)
    }

    /// The live session with this id, its idle clock restarted; an expired one is removed.
    pub fn touch(&self, id: &str, now: u64, idle_secs: u64) -> Option<Session> {
        let h = hash(id);
        let mut map = self.map.lock();
        // Expired sessions go on every lookup, so that the map stays bounded.
        map.retain(|_, s| now.saturating_sub(s.last_seen) < idle_secs);
        let s = map.get_mut(&h)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends one session (logout).
    pub fn close(&self, id: &str) {
        self.map.lock().remove(&hash(id));
    }

    /// Ends every session but `keep`; returns how many ended.
    pub fn revoke_others(&self, keep: &str) -> usize {
        let k = hash(keep);
        let mut map = self.map.lock();
        let before = map.len();
        map.retain(|h, _| *h == k);
        before - map.len()
    }

    /// Ends every session of a key holder (the key was revoked or deleted).
    pub fn revoke_key(&self, key_id: &str) {
        self.map.lock().retain(|_, s| {
            s.role
                != Role::KeyHolder {
                    key_id: key_id.into(),
                }
        });
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

    #[test]
    fn sessions_expire_when_idle_and_are_stored_hashed() {
        let s = Sessions::default();
        let (id, csrf) = s.open(Role::Operator, 1000);
        assert_eq!(s.touch(&id, 1100, 200).unwrap().csrf, csrf);
        // Touched at 1100: alive at 1299, gone at 1300.
        assert!(s.touch(&id, 1299, 200).is_some());
        assert!(s.touch(&id, 1499, 200).is_none());
        let (id2, _) = s.open(Role::Operator, 10);
        // Kept under the id's SHA-256, never the id itself.
        assert!(s.map.lock().contains_key(&hash(&id2)));
        assert_ne!(hash(&id2).as_slice(), &id2.as_bytes()[..32]);
        s.close(&id2);
        assert!(s.touch(&id2, 10, 200).is_none());
    }

    #[test]
    fn revoking() {
        let s = Sessions::default();
        let (a, _) = s.open(Role::Operator, 0);
        let (b, _) = s.open(
            Role::KeyHolder {
                key_id: "k1".into(),
            },
            0,
        );
        let (c, _) = s.open(Role::Operator, 0);
        s.revoke_key("k1");
        assert!(s.touch(&b, 1, 100).is_none());
        assert_eq!(s.revoke_others(&a), 1);
        assert!(s.touch(&a, 1, 100).is_some());
        assert!(s.touch(&c, 1, 100).is_none());
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
