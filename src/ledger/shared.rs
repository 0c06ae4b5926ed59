//! The lease side of a shared store: taking, renewing and returning this instance's leases
//! of budgets and rate windows, reporting rate consumption in batches, and the outage
//! policy. Called by [`super::Ledger::admit_async`] when a lease is short, and by the
//! `services::sync` service every sync interval.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::budget::Account;
use super::lease::MARGIN;
use super::rate::{RateLimiter, WINDOW_MS};
use super::Ledger;
use crate::error::{ErrorKind, GatewayError};
use crate::records::Scope;
use crate::store::settings::{LeaseSettings, OutageMode};
use crate::store::{LeaseRequest, SharedStore, StoreError, StoreSlot, WindowCount};

/// (scope, id, window_start) of a stored counter. A budget's scope is its [`Scope::code`];
/// a rate window's is [`rate_scope`].
type WindowKey = (String, String, u64);

pub struct SharedCtl {
    pub slot: Arc<StoreSlot>,
    pub settings: LeaseSettings,
    /// One lease call at a time per account window.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When the store became unreachable (ms since the epoch; 0: it is reachable).
    down_since_ms: AtomicU64,
}

/// The refusal when the store cannot be reached for a lease.
pub fn unavailable(e: &StoreError) -> GatewayError {
    log::debug!("lease call failed: {e}");
    GatewayError::new(
        ErrorKind::Unavailable,
        "The shared budget store is unreachable, and this gateway holds no lease that covers this request; retry shortly.",
    )
    .with_retry_after(1)
}

/// The lease scope of a rate window: `r` (requests) or `t` (tokens) before the account's
/// scope code.
fn rate_scope(s: Scope, tokens: bool) -> &'static str {
    match (s, tokens) {
        (Scope::Key, false) => "rk",
        (Scope::User, false) => "ru",
        (Scope::EndUser, false) => "re",
        (Scope::Team, false) => "rt",
        (Scope::Org, false) => "ro",
        (Scope::Key, true) => "tk",
        (Scope::User, true) => "tu",
        (Scope::EndUser, true) => "te",
        (Scope::Team, true) => "tt",
        (Scope::Org, true) => "to",
    }
}

impl SharedCtl {
    pub fn new(slot: Arc<StoreSlot>, settings: LeaseSettings) -> SharedCtl {
        SharedCtl {
            slot,
            settings,
            locks: Mutex::new(HashMap::new()),
            down_since_ms: AtomicU64::new(0),
        }
    }

    fn store(&self) -> Result<Arc<dyn SharedStore>, StoreError> {
        self.slot
            .get()
            .and_then(|s| s.shared())
            .ok_or_else(|| StoreError::Io("the shared store is not open yet".into()))
    }

    fn lock_for(&self, k: String) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(k).or_default().clone()
    }

    /// Records whether the last call to the store worked.
    pub fn note(&self, ok: bool) {
        if ok {
            if self.down_since_ms.swap(0, Ordering::Relaxed) != 0 {
                log::info!("the shared store is reachable again");
            }
        } else if self
            .down_since_ms
            .compare_exchange(
                0,
                crate::clock::now_millis(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            log::warn!(
                "the shared store is unreachable; outage policy: {:?}",
                self.settings.on_outage
            );
        }
    }

    /// How long the store has been unreachable (None: it is reachable).
    pub fn down_for_ms(&self) -> Option<u64> {
        match self.down_since_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(crate::clock::now_millis().saturating_sub(t)),
        }
    }

    /// The outage policy at admission.
    pub fn check_outage(&self) -> Result<(), GatewayError> {
        let Some(down) = self.down_for_ms() else {
            return Ok(());
        };
        let refuse = match self.settings.on_outage {
            OutageMode::FailClosed => true,
            OutageMode::ServeFromCache => down > self.settings.max_stale.as_millis() as u64,
        };
        if refuse {
            return Err(GatewayError::new(
                ErrorKind::Unavailable,
                "The shared store is unreachable and this gateway does not serve without it (store.on_outage); retry shortly.",
            )
            .with_retry_after(1));
        }
        Ok(())
    }

    fn ttl_ms(&self) -> u64 {
        self.settings.ttl.as_millis() as u64
    }

    /// Makes this instance's lease of `a` cover one more request of `amount` (plus a share
    /// of what is free). Ok also when the store granted less: the caller re-checks.
    pub async fn top_up_account(&self, a: &Arc<Account>, amount: u64) -> Result<(), StoreError> {
        let store = self.store()?;
        let lock = self.lock_for(format!("{}:{}", a.scope.code(), a.id));
        let _g = lock.lock().await;
        let Some((sl, reserved, limit)) = a.lease_view(crate::clock::now_secs()) else {
            return Ok(());
        };
        let at = Instant::now();
        let Some(need) = sl.shortfall(reserved, amount, at) else {
            return Ok(()); // another request topped it up meanwhile
        };
        let keep = sl.keep(at);
        let req = LeaseRequest {
            scope: a.scope.code().into(),
            id: a.id.clone(),
            window_start: sl.window_start,
            max: limit.max_micros,
            keep,
            need,
            fraction: self.settings.fraction,
            ttl_ms: self.ttl_ms(),
        };
        let r = store.lease(&req).await;
        self.note(r.is_ok());
        let g = r?;
        a.apply_lease(
            sl.window_start,
            g.amount,
            sl.confirmed,
            g.spent,
            at,
            self.settings.ttl,
        );
        Ok(())
    }

    /// Makes this instance's request lease of the current minute cover one more request.
    pub async fn top_up_rate(
        &self,
        scope: Scope,
        id: &str,
        l: &Arc<RateLimiter>,
    ) -> Result<(), StoreError> {
        let store = self.store()?;
        let lock = self.lock_for(format!("{}:{id}", rate_scope(scope, false)));
        let _g = lock.lock().await;
        let now_ms = crate::clock::now_millis();
        let Some(view) = l.shared_view(now_ms) else {
            return Ok(());
        };
        let at = Instant::now();
        let Some(need) = view.requests.shortfall(0, 1, at) else {
            return Ok(());
        };
        let minute = view.requests.window_start;
        // A request lease is worth nothing after its minute.
        let ttl_ms = self
            .ttl_ms()
            .min((minute + WINDOW_MS).saturating_sub(now_ms) + MARGIN.as_millis() as u64 * 2);
        let req = LeaseRequest {
            scope: rate_scope(scope, false).into(),
            id: id.to_string(),
            window_start: minute,
            max: view.rpm,
            keep: view.requests.keep(at),
            need,
            fraction: self.settings.fraction,
            ttl_ms,
        };
        let r = store.lease(&req).await;
        self.note(r.is_ok());
        let g = r?;
        let c_snap = view.requests.confirmed;
        l.with_shared(minute, |sh| {
            sh.requests.apply(
                g.amount,
                c_snap,
                g.spent,
                at,
                std::time::Duration::from_millis(ttl_ms),
            )
        });
        Ok(())
    }

    /// Extends every lease of this instance; a lease the store did not renew (it expired
    /// there) is dropped here too.
    pub async fn renew(&self, ledger: &Ledger) -> Result<(), StoreError> {
        let store = self.store()?;
        let sent = Instant::now();
        let r = store.renew(self.ttl_ms()).await;
        self.note(r.is_ok());
        let rows = r?;
        let until = sent + self.settings.ttl.saturating_sub(MARGIN);
        let mut renewed: HashSet<(String, String, u64)> = HashSet::new();
        for r in rows {
            let (scope, id, ws) = (r.scope, r.id, r.window_start);
            if let Some(sc) = Scope::from_code(&scope) {
                if let Some(a) = ledger.find_account(sc, &id) {
                    a.renewed(ws, r.spent, until);
                }
            } else if let Some(sc) = scope.strip_prefix('r').and_then(Scope::from_code) {
                if let Some(l) = ledger.find_limiter(sc, &id) {
                    l.with_shared(ws, |sh| {
                        if sh.requests.window_start == ws && sh.requests.valid_until.is_some() {
                            sh.requests.valid_until = Some(until);
                        }
                    });
                }
            }
            renewed.insert((scope, id, ws));
        }
        // Leases this process trusts that the store no longer has: lost (unless taken
        // after the renewal was sent).
        let now = crate::clock::now_secs();
        for a in ledger.all_accounts() {
            if let Some((sl, _, _)) = a.lease_view(now) {
                let taken_at = sl
                    .valid_until
                    .map(|v| v - self.settings.ttl.saturating_sub(MARGIN));
                let key = (a.scope.code().to_string(), a.id.clone(), sl.window_start);
                if taken_at.is_some_and(|t| t < sent) && !renewed.contains(&key) {
                    log::warn!(
                        "lease of {} '{}' expired in the store; taking a new one on demand",
                        a.scope.as_str(),
                        a.id
                    );
                    a.lose_lease(sl.window_start);
                }
            }
        }
        Ok(())
    }

    /// Gives back what idle leases do not need, so other instances can use it.
    pub async fn return_idle(&self, ledger: &Ledger, all: bool) -> Result<(), StoreError> {
        let store = self.store()?;
        let now = crate::clock::now_secs();
        for a in ledger.all_accounts() {
            let Some((sl, reserved, limit)) = a.lease_view(now) else {
                continue;
            };
            let at = Instant::now();
            if (!all && sl.last_used.elapsed() < self.settings.idle) || sl.spare(reserved, at) == 0
            {
                continue;
            }
            let lock = self.lock_for(format!("{}:{}", a.scope.code(), a.id));
            let _g = lock.lock().await;
            let at = Instant::now();
            let Some((ws, keep, c_snap)) = a.cap_lease(now, at) else {
                continue;
            };
            let req = LeaseRequest {
                scope: a.scope.code().into(),
                id: a.id.clone(),
                window_start: ws,
                max: limit.max_micros,
                keep,
                need: 0,
                fraction: 0.0,
                ttl_ms: self.ttl_ms(),
            };
            let r = store.lease(&req).await;
            self.note(r.is_ok());
            let g = r?;
            a.apply_lease(ws, g.amount, c_snap, g.spent, at, self.settings.ttl);
        }
        Ok(())
    }

    /// Gives back the unused part of idle request leases of the current minute.
    pub async fn return_idle_rates(&self, ledger: &Ledger, all: bool) -> Result<(), StoreError> {
        let store = self.store()?;
        for (scope, id, l) in ledger.all_limiters() {
            let now_ms = crate::clock::now_millis();
            let Some(v) = l.shared_view(now_ms) else {
                continue;
            };
            let at = Instant::now();
            let idle = all || v.requests.last_used.elapsed() >= self.settings.idle;
            if !idle || v.requests.spare(0, at) == 0 {
                continue;
            }
            let lock = self.lock_for(format!("{}:{id}", rate_scope(scope, false)));
            let _g = lock.lock().await;
            let minute = v.requests.window_start;
            let mut snap = None;
            l.with_shared(minute, |sh| {
                let r = &mut sh.requests;
                if r.window_start == minute && r.spare(0, at) > 0 {
                    r.granted = r.confirmed + r.unconfirmed;
                    snap = Some((r.keep(at), r.confirmed, sh.rpm));
                }
            });
            let Some((keep, c_snap, rpm)) = snap else {
                continue;
            };
            let ttl_ms = self.ttl_ms();
            let req = LeaseRequest {
                scope: rate_scope(scope, false).into(),
                id: id.clone(),
                window_start: minute,
                max: rpm,
                keep,
                need: 0,
                fraction: 0.0,
                ttl_ms,
            };
            let r = store.lease(&req).await;
            self.note(r.is_ok());
            let g = r?;
            l.with_shared(minute, |sh| {
                sh.requests.apply(
                    g.amount,
                    c_snap,
                    g.spent,
                    at,
                    std::time::Duration::from_millis(ttl_ms),
                )
            });
        }
        Ok(())
    }

    /// Reports rate consumption (requests and tokens counted here since the last report)
    /// in one statement and reads back every instance's totals.
    pub async fn sync_rates(&self, ledger: &Ledger) -> Result<(), StoreError> {
        let store = self.store()?;
        let now_ms = crate::clock::now_millis();
        let mut rows = Vec::new();
        let mut sent: HashMap<WindowKey, (Arc<RateLimiter>, bool, u64)> = HashMap::new();
        for (scope, id, l) in ledger.all_limiters() {
            let Some(v) = l.shared_view(now_ms) else {
                continue;
            };
            if v.requests.unconfirmed > 0 {
                let k = (
                    rate_scope(scope, false).to_string(),
                    id.clone(),
                    v.requests.window_start,
                );
                rows.push(WindowCount {
                    scope: k.0.clone(),
                    id: k.1.clone(),
                    window_start: k.2,
                    count: v.requests.unconfirmed,
                });
                sent.insert(k, (l.clone(), false, v.requests.unconfirmed));
            }
            if v.tokens.unconfirmed > 0 || v.tpm_limited {
                let k = (
                    rate_scope(scope, true).to_string(),
                    id.clone(),
                    v.tokens.window_start,
                );
                rows.push(WindowCount {
                    scope: k.0.clone(),
                    id: k.1.clone(),
                    window_start: k.2,
                    count: v.tokens.unconfirmed,
                });
                sent.insert(k, (l.clone(), true, v.tokens.unconfirmed));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let r = store.add_consumption(rows).await;
        self.note(r.is_ok());
        for t in r? {
            let (ws, total) = (t.window_start, t.count);
            if let Some((l, tokens, n)) = sent.get(&(t.scope, t.id, ws)) {
                l.with_shared(ws, |sh| {
                    let s = if *tokens {
                        &mut sh.tokens
                    } else {
                        &mut sh.requests
                    };
                    if s.window_start == ws {
                        s.confirm(*n);
                        s.store_spent = total;
                    }
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_policy() {
        let slot = Arc::new(StoreSlot::default());
        let closed = SharedCtl::new(
            slot.clone(),
            LeaseSettings {
                on_outage: OutageMode::FailClosed,
                ..Default::default()
            },
        );
        assert!(closed.check_outage().is_ok());
        closed.note(false);
        let e = closed.check_outage().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        closed.note(true);
        assert!(closed.check_outage().is_ok());
        let cached = SharedCtl::new(
            slot,
            LeaseSettings {
                on_outage: OutageMode::ServeFromCache,
                max_stale: std::time::Duration::from_millis(30),
                ..Default::default()
            },
        );
        cached.note(false);
        assert!(cached.check_outage().is_ok(), "served within max_stale");
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(cached.check_outage().is_err(), "refused past max_stale");
    }
}
