//! Where a request's key (and its user) stands: its rate-limit windows and its tightest
//! remaining budget. Read only, never changed here; the gateway turns it into the headers
//! that tell a client where it stands (`gateway::standing`).

use super::rate::{RateLimiter, WINDOW_MS};
use super::{Admission, Ledger};
use crate::records::{KeyRecord, Micros, Scope, UserRecord};

/// One rate-limit window as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    /// What is left of the limit (this request already counted).
    pub remaining: u64,
    /// Milliseconds until the window is back to its full limit, with no new traffic.
    pub reset_ms: u64,
}

/// The binding request and token windows of a key and its user (None: no such limit).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RateStanding {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

impl Ledger {
    /// The rate limits that bind `key` (and `user`): of a key's and a user's limit of the
    /// same kind, the one with less left.
    pub fn rate_standing(
        &self,
        key: &KeyRecord,
        user: Option<&UserRecord>,
        now_ms: u64,
    ) -> RateStanding {
        let mut out = RateStanding::default();
        let mut levels = vec![(Scope::Key, key.id.as_str(), key.limits.rpm, key.limits.tpm)];
        if let Some(u) = user {
            levels.push((Scope::User, u.user_id.as_str(), u.limits.rpm, u.limits.tpm));
        }
        for (scope, id, rpm, tpm) in levels {
            if rpm.is_none() && tpm.is_none() {
                continue;
            }
            let (requests, tokens) = self
                .find_limiter(scope, id)
                .map_or(((0, 0), (0, 0)), |l| windows_of(&l, now_ms));
            if let Some(limit) = rpm {
                tighter(&mut out.requests, window(limit, requests));
            }
            if let Some(limit) = tpm {
                tighter(&mut out.tokens, window(limit, tokens));
            }
        }
        out
    }

    /// The tightest remaining budget of `key` and `user` for a request that holds nothing
    /// (one refused at admission). None: no budget applies.
    pub fn budget_remaining_of(
        &self,
        key: &KeyRecord,
        user: Option<&UserRecord>,
        now: u64,
    ) -> Option<Micros> {
        let mut accounts = vec![self.key_account(key)];
        if let Some(u) = user {
            accounts.push(self.user_account(u));
        }
        accounts
            .iter()
            .filter_map(|a| a.standing(now).remaining())
            .min()
    }
}

/// The tightest remaining budget of an admitted request's accounts: the limit less what is
/// spent and what other requests in flight hold, less `cost` (this request's, once known;
/// None: not known yet, nothing of it counted). None: no budget applies.
pub fn budget_remaining(adm: &Admission, cost: Option<Micros>, now: u64) -> Option<Micros> {
    let own = adm.reservation.as_ref().map_or(0, |r| r.amount);
    adm.accounts
        .iter()
        .filter_map(|a| {
            let s = a.standing(now);
            let limit = s.limit?;
            let others = s.reserved.saturating_sub(own);
            Some(
                limit
                    .max_micros
                    .saturating_sub(s.spent + others + cost.unwrap_or(0)),
            )
        })
        .min()
}

/// A limiter's (requests, tokens) as (used, ms until clear): the shared store's fixed
/// minute across instances, or this process's sliding window.
fn windows_of(l: &RateLimiter, now_ms: u64) -> ((u64, u64), (u64, u64)) {
    match l.shared_view(now_ms) {
        Some(sh) => {
            let clear = WINDOW_MS - now_ms % WINDOW_MS;
            let used = |s: super::lease::Slice| s.store_spent + s.unconfirmed;
            let at = |u: u64| (u, if u > 0 { clear } else { 0 });
            (at(used(sh.requests)), at(used(sh.tokens)))
        }
        None => l.windows(now_ms),
    }
}

fn window(limit: u64, (used, reset_ms): (u64, u64)) -> Window {
    Window {
        limit,
        remaining: limit.saturating_sub(used),
        reset_ms,
    }
}

/// Keeps the window with less left (on a tie, the smaller limit).
fn tighter(slot: &mut Option<Window>, w: Window) {
    let replace = slot.is_none_or(|s| (w.remaining, w.limit) < (s.remaining, s.limit));
    if replace {
        *slot = Some(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Limits;

    fn key(rpm: Option<u64>, tpm: Option<u64>) -> KeyRecord {
        let mut k: KeyRecord = serde_json::from_value(serde_json::json!({
            "id": "k1", "hash": "", "prefix": "", "created_at": 0
        }))
        .unwrap();
        k.limits = Limits {
            rpm,
            tpm,
            ..Default::default()
        };
        k
    }

    #[test]
    fn only_limits_that_exist_are_reported() {
        let l = Ledger::new(Default::default(), false, 100);
        assert_eq!(
            l.rate_standing(&key(None, None), None, 0),
            RateStanding::default()
        );
        let s = l.rate_standing(&key(Some(5), None), None, 0);
        assert_eq!(
            s.requests,
            Some(Window {
                limit: 5,
                remaining: 5,
                reset_ms: 0
            })
        );
        assert_eq!(s.tokens, None);
    }

    #[test]
    fn remaining_counts_admitted_requests_and_the_window_clears_after_two_minutes() {
        let l = Ledger::new(Default::default(), false, 100);
        let k = key(Some(5), Some(1000));
        let t = 120_000 + 15_000;
        for _ in 0..2 {
            l.admit(&k, None, None, None, None, &Default::default(), t / 1000)
                .unwrap();
        }
        l.find_limiter(Scope::Key, "k1").unwrap().add_tokens(300, t);
        let s = l.rate_standing(&k, None, t);
        let r = s.requests.unwrap();
        assert_eq!((r.limit, r.remaining), (5, 3));
        // Counted in the current minute: gone from the sliding window 2 min after its start.
        assert!(r.reset_ms > 60_000 && r.reset_ms <= 120_000, "{r:?}");
        assert_eq!(s.tokens.unwrap().remaining, 700);
    }

    #[test]
    fn the_window_with_less_left_binds() {
        let mut slot = None;
        tighter(&mut slot, window(10, (2, 1)));
        tighter(&mut slot, window(100, (95, 1)));
        assert_eq!(slot.unwrap().limit, 100);
        tighter(&mut slot, window(5, (0, 0)));
        assert_eq!(slot.unwrap().remaining, 5);
    }
}
