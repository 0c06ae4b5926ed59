//! Spend accounts and the reserve/settle protocol, in memory.
//!
//! Every budget that applies to a request (its key's and its user's) is an [`Account`]. Before
//! the call, [`reserve`] takes the estimated cost from every account atomically: all accounts
//! are locked in a fixed order (by id), each is checked, and only if all have room is the
//! estimate added to their `reserved`. After the call, [`Reservation::settle`] moves the
//! metered cost into `spent` and releases the estimate. So concurrent requests can never
//! overspend by more than what is in flight, and a refusal leaves no trace.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::lease::Slice;
use crate::records::{Limit, Micros, Scope};

/// The counters of one account in its current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub window_start: u64,
    pub spent: Micros,
    pub reserved: Micros,
}

#[derive(Debug)]
pub struct Account {
    pub scope: Scope,
    pub id: String,
    limit: Mutex<Option<Limit>>,
    counter: Mutex<Counter>,
    /// With a shared store: this instance's lease of the account's current window (always
    /// locked after `counter`). None: the account is local to this process (sled).
    lease: Mutex<Option<Slice>>,
}

/// A snapshot of an account for API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: Option<Limit>,
    pub spent: Micros,
    pub reserved: Micros,
    pub window_start: u64,
    pub resets_at: Option<u64>,
}

impl Standing {
    pub fn remaining(&self) -> Option<Micros> {
        self.limit
            .map(|l| l.max_micros.saturating_sub(self.spent + self.reserved))
    }
}

impl Account {
    pub fn new(scope: Scope, id: &str, limit: Option<Limit>, counter: Counter) -> Arc<Account> {
        Arc::new(Account {
            scope,
            id: id.to_string(),
            limit: Mutex::new(limit),
            counter: Mutex::new(counter),
            lease: Mutex::new(None),
        })
    }

    /// Makes the account spend through leases of a shared store.
    pub fn make_shared(&self) {
        let ws = self.counter.lock().window_start;
        let mut l = self.lease.lock();
        if l.is_none() {
            *l = Some(Slice::new(ws));
        }
    }

    pub fn is_shared(&self) -> bool {
        self.lease.lock().is_some()
    }

    /// The lease state with the account's reservations, rolled to the window of `now`:
    /// (slice, reserved). None for local accounts and accounts without a limit.
    pub fn lease_view(&self, now: u64) -> Option<(Slice, Micros, Limit)> {
        let limit = self.limit()?;
        let mut c = self.counter.lock();
        Self::roll(&mut c, Some(limit), now);
        let mut l = self.lease.lock();
        let sl = l.as_mut()?;
        sl.roll(c.window_start);
        Some((*sl, c.reserved, limit))
    }

    /// Applies a lease call's answer (when the window is still the one it was for).
    pub fn apply_lease(
        &self,
        window_start: u64,
        amount: Micros,
        confirmed_snap: Micros,
        store_spent: Micros,
        sent: std::time::Instant,
        ttl: std::time::Duration,
    ) {
        let mut c = self.counter.lock();
        let mut l = self.lease.lock();
        if let Some(sl) = l.as_mut().filter(|s| s.window_start == window_start) {
            sl.apply(amount, confirmed_snap, store_spent, sent, ttl);
            if c.window_start == window_start {
                c.spent = store_spent + sl.unconfirmed;
            }
        }
    }

    /// Lowers the lease this process may spend to what it holds now (before giving the
    /// rest back); returns (window, keep, confirmed) for the return call.
    pub fn cap_lease(&self, now: u64, at: std::time::Instant) -> Option<(u64, Micros, Micros)> {
        let limit = self.limit()?;
        let mut c = self.counter.lock();
        Self::roll(&mut c, Some(limit), now);
        let mut l = self.lease.lock();
        let sl = l.as_mut()?;
        sl.roll(c.window_start);
        if sl.spare(c.reserved, at) == 0 {
            return None;
        }
        sl.granted = sl.confirmed + sl.unconfirmed + c.reserved;
        Some((sl.window_start, sl.keep(at), sl.confirmed))
    }

    /// A renewal: the lease of `window_start` is good until `valid_until`; S is `spent`.
    pub fn renewed(&self, window_start: u64, spent: Micros, valid_until: std::time::Instant) {
        let mut c = self.counter.lock();
        let mut l = self.lease.lock();
        if let Some(sl) = l.as_mut().filter(|s| s.window_start == window_start) {
            if sl.valid_until.is_some() {
                sl.valid_until = Some(valid_until);
            }
            sl.store_spent = spent;
            if c.window_start == window_start {
                c.spent = spent + sl.unconfirmed;
            }
        }
    }

    /// The lease was not renewed in time: this process holds none any more.
    pub fn lose_lease(&self, window_start: u64) {
        if let Some(sl) = self
            .lease
            .lock()
            .as_mut()
            .filter(|s| s.window_start == window_start)
        {
            sl.valid_until = None;
            sl.granted = 0;
            sl.confirmed = 0;
        }
    }

    /// Spend settled here reached the store.
    pub fn confirm(&self, amount: Micros, window_start: u64) {
        if let Some(sl) = self
            .lease
            .lock()
            .as_mut()
            .filter(|s| s.window_start == window_start)
        {
            sl.confirm(amount);
        }
    }

    pub fn set_limit(&self, limit: Option<Limit>) {
        *self.limit.lock() = limit;
    }

    pub fn limit(&self) -> Option<Limit> {
        *self.limit.lock()
    }

    /// Rolls the counter into the window that contains `now` (lazy reset). Reservations in
    /// flight stay counted: they will settle into the new window.
    fn roll(c: &mut Counter, limit: Option<Limit>, now: u64) {
        let start = limit.map_or(0, |l| l.window(now).0);
        if start != c.window_start {
            c.window_start = start;
            c.spent = 0;
        }
    }

    pub fn standing(&self, now: u64) -> Standing {
        let limit = self.limit();
        let mut c = self.counter.lock();
        Self::roll(&mut c, limit, now);
        Standing {
            limit,
            spent: c.spent,
            reserved: c.reserved,
            window_start: c.window_start,
            resets_at: limit.and_then(|l| l.window(now).1),
        }
    }

    pub fn counter(&self) -> Counter {
        *self.counter.lock()
    }

    /// Adds spend recorded in the window starting at `window_start`: it counts only if that
    /// is the current window.
    pub fn add_spent_in_window(&self, amount: Micros, window_start: u64, now: u64) {
        let limit = self.limit();
        let mut c = self.counter.lock();
        Self::roll(&mut c, limit, now);
        if c.window_start == window_start {
            c.spent += amount;
        }
    }

    /// Clears spend (before a reload from the store); reservations stay.
    pub fn clear_spent(&self) {
        let mut c = self.counter.lock();
        c.spent = 0;
        c.window_start = 0;
    }

    /// Zeroes the current window's spend (a manual reset from the API).
    pub fn reset(&self, now: u64) {
        let limit = self.limit();
        let mut c = self.counter.lock();
        Self::roll(&mut c, limit, now);
        c.spent = 0;
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub scope: Scope,
    pub id: String,
    pub limit: Limit,
    pub spent: Micros,
    pub reserved: Micros,
    pub requested: Micros,
    pub resets_at: Option<u64>,
    /// Shared store: this instance's lease is short (a lease call may fix it).
    pub lease_short: bool,
    /// The model pattern of the refusing budget, if it has one (for the message).
    pub model: Option<Box<str>>,
}

/// Held by a request between reserve and settle.
#[derive(Debug)]
pub struct Reservation {
    accounts: Vec<Arc<Account>>,
    pub amount: Micros,
    settled: bool,
}

/// Reserves `amount` on every account, or on none.
// The refusal carries the account's `Limit` (with its alert mask): a cold path, not boxed.
#[allow(clippy::result_large_err)]
pub fn reserve(
    accounts: &[Arc<Account>],
    amount: Micros,
    now: u64,
) -> Result<Reservation, Box<Exceeded>> {
    let mut order: Vec<&Arc<Account>> = accounts.iter().collect();
    order.sort_by(|a, b| (a.scope as u8, &a.id).cmp(&(b.scope as u8, &b.id)));
    order.dedup_by(|a, b| Arc::ptr_eq(a, b));
    let limits: Vec<Option<Limit>> = order.iter().map(|a| a.limit()).collect();
    let mut guards: Vec<_> = order
        .iter()
        .map(|a| (a.counter.lock(), a.lease.lock()))
        .collect();
    let at = std::time::Instant::now();
    for (i, (g, sl)) in guards.iter_mut().enumerate() {
        Account::roll(g, limits[i], now);
        let Some(l) = limits[i] else { continue };
        let refuse = |g: &Counter, short| {
            Box::new(Exceeded {
                scope: order[i].scope,
                id: order[i].id.clone(),
                limit: l,
                spent: g.spent,
                reserved: g.reserved,
                requested: amount,
                resets_at: l.window(now).1,
                lease_short: short,
                model: None,
            })
        };
        if let Some(sl) = sl.as_mut() {
            // Shared store: the lease must cover every obligation of this instance. The
            // global check happened when the lease was granted.
            sl.roll(g.window_start);
            if sl.shortfall(g.reserved, amount, at).is_some() {
                return Err(refuse(g, true));
            }
        } else if g.spent.saturating_add(g.reserved).saturating_add(amount) > l.max_micros {
            return Err(refuse(g, false));
        }
    }
    for (g, _) in guards.iter_mut() {
        g.reserved += amount;
    }
    drop(guards);
    Ok(Reservation {
        accounts: order.into_iter().cloned().collect(),
        amount,
        settled: false,
    })
}

/// A reservation of nothing that never refuses: the settlement still charges every account
/// (a key excluded from budgets has its spend recorded but is never held to a limit).
pub fn hold(accounts: &[Arc<Account>]) -> Reservation {
    let mut order: Vec<&Arc<Account>> = accounts.iter().collect();
    order.sort_by(|a, b| (a.scope as u8, &a.id).cmp(&(b.scope as u8, &b.id)));
    order.dedup_by(|a, b| Arc::ptr_eq(a, b));
    Reservation {
        accounts: order.into_iter().cloned().collect(),
        amount: 0,
        settled: false,
    }
}

impl Reservation {
    /// Releases the estimate and records the actual cost, in the window current at `now`.
    pub fn settle(mut self, actual: Micros, now: u64) {
        self.release(actual, now, &mut |_, _, _, _, _| {});
    }

    /// [`Reservation::settle`], calling `observe(account, limit, window_start, spent before,
    /// spent after)` for each limited account while its counter is held (budget alerts:
    /// `alerts::Alerts::on_spend`), so concurrent settlements see consecutive spends.
    pub fn settle_observed(
        mut self,
        actual: Micros,
        now: u64,
        observe: &mut dyn FnMut(&Account, &Limit, u64, Micros, Micros),
    ) {
        self.release(actual, now, observe);
    }

    fn release(
        &mut self,
        actual: Micros,
        now: u64,
        observe: &mut dyn FnMut(&Account, &Limit, u64, Micros, Micros),
    ) {
        if self.settled {
            return;
        }
        self.settled = true;
        for a in &self.accounts {
            let limit = a.limit();
            let mut c = a.counter.lock();
            Account::roll(&mut c, limit, now);
            c.reserved = c.reserved.saturating_sub(self.amount);
            let before = c.spent;
            c.spent = c.spent.saturating_add(actual);
            if let Some(l) = &limit {
                observe(a, l, c.window_start, before, c.spent);
            }
            if let Some(sl) = a.lease.lock().as_mut() {
                sl.roll(c.window_start);
                sl.consume(actual);
            }
        }
    }
}

impl Drop for Reservation {
    /// A reservation dropped without settling (a panic, a bug) releases its estimate
    /// rather than leaking it forever.
    fn drop(&mut self) {
        self.release(0, crate::clock::now_secs(), &mut |_, _, _, _, _| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::period::{Alignment, Period};

    fn limited(id: &str, max: Micros) -> Arc<Account> {
        Account::new(
            Scope::User,
            id,
            Some(Limit {
                max_micros: max,
                period: Period::Daily,
                alignment: Alignment::Calendar,
                anchor: 0,
                alerts: Default::default(),
            }),
            Counter::default(),
        )
    }

    #[test]
    fn reserve_checks_every_account_or_takes_nothing() {
        let user = limited("u", 100);
        let key = Account::new(
            Scope::Key,
            "k",
            Some(Limit {
                max_micros: 30,
                period: Period::Lifetime,
                alignment: Alignment::Calendar,
                anchor: 0,
                alerts: Default::default(),
            }),
            Counter::default(),
        );
        let r1 = reserve(&[key.clone(), user.clone()], 20, 1000).unwrap();
        let e = reserve(&[key.clone(), user.clone()], 20, 1000).unwrap_err();
        assert_eq!((e.scope, e.id.as_str(), e.reserved), (Scope::Key, "k", 20));
        assert_eq!(
            user.standing(1000).reserved,
            20,
            "a refusal leaves no trace"
        );
        r1.settle(5, 1000);
        let s = key.standing(1000);
        assert_eq!((s.spent, s.reserved, s.remaining()), (5, 0, Some(25)));
        assert_eq!(user.standing(1000).spent, 5);
    }

    #[test]
    fn windows_reset_lazily_and_in_flight_settles_into_the_new_window() {
        let a = limited("u", 100);
        reserve(std::slice::from_ref(&a), 90, 10)
            .unwrap()
            .settle(90, 10);
        assert!(reserve(std::slice::from_ref(&a), 20, 20).is_err());
        let next_day = 86_400 + 5;
        let r = reserve(std::slice::from_ref(&a), 20, next_day).unwrap();
        assert_eq!(a.standing(next_day).spent, 0);
        r.settle(7, next_day + 1);
        assert_eq!(a.standing(next_day + 1).spent, 7);
        assert_eq!(a.standing(next_day).resets_at, Some(2 * 86_400));
    }

    #[test]
    fn shared_accounts_spend_only_their_lease() {
        let a = limited("u", 1_000);
        a.make_shared();
        let now = 10;
        let at = std::time::Instant::now();
        let ttl = std::time::Duration::from_secs(10);
        let e = reserve(std::slice::from_ref(&a), 10, now).unwrap_err();
        assert!(e.lease_short, "no lease yet: a lease call is needed");
        a.apply_lease(0, 100, 0, 0, at, ttl);
        let r1 = reserve(std::slice::from_ref(&a), 60, now).unwrap();
        let e = reserve(std::slice::from_ref(&a), 50, now).unwrap_err();
        assert!(
            e.lease_short,
            "60 + 50 > the lease of 100, whatever the budget"
        );
        r1.settle(40, now);
        let (sl, reserved, _) = a.lease_view(now).unwrap();
        assert_eq!((sl.unconfirmed, sl.confirmed, reserved), (40, 0, 0));
        a.confirm(40, 0);
        let (sl, _, _) = a.lease_view(now).unwrap();
        assert_eq!((sl.unconfirmed, sl.confirmed, sl.keep(at)), (0, 40, 60));
        // a renewal-like call keeps 60 and grants nothing: 60 left to spend
        a.apply_lease(0, 60, 40, 40, at, ttl);
        assert!(reserve(std::slice::from_ref(&a), 61, now).is_err());
        reserve(std::slice::from_ref(&a), 60, now)
            .unwrap()
            .settle(60, now);
        assert_eq!(a.standing(now).spent, 100, "store spend plus unwritten");
        // an idle return keeps only what is owed
        assert_eq!(a.cap_lease(now, at), None, "nothing spare");
        a.lose_lease(0);
        assert!(
            reserve(std::slice::from_ref(&a), 1, now)
                .unwrap_err()
                .lease_short
        );
    }

    #[test]
    fn dropped_reservation_releases() {
        let a = limited("u", 100);
        {
            let _r = reserve(std::slice::from_ref(&a), 60, 1).unwrap();
        }
        assert_eq!(a.standing(1).reserved, 0);
    }

    #[test]
    fn concurrent_reservations_never_overspend() {
        let a = limited("u", 1_000);
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(r) = reserve(std::slice::from_ref(&a), 10, 1) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            r.settle(10, 1);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 100);
        assert_eq!(a.standing(1).spent, 1_000);
    }
}
