//! Leases: how several tollgate instances share one budget (or one rate window) exactly,
//! with no database round trip per request. The design and the proof of the bound are in
//! `docs/scale-out.md`; in short:
//!
//! - The store holds, per account and window, the settled spend `S` and one lease row per
//!   instance `L_i` (an amount and an expiry set by the database clock). A lease call runs
//!   in one transaction that locks the account's spend row and grants only from
//!   `max - S - sum(live L_j)`, so `S + sum(L_i) <= max` whenever grants are made.
//! - An instance spends its lease locally: a request is admitted only if
//!   `C + U + R + cost <= L` (C: spend of this instance written to the store since the lease
//!   row was set, U: settled here but not written yet, R: reserved by requests in flight).
//!   Every obligation of the instance not yet in `S` is therefore covered by its lease row.
//! - A lease call sets the row to `keep + grant` where `keep = L - C` (what is written is in
//!   `S` now), so nothing is ever counted in both `S` and a lease for long, and nothing is
//!   counted in neither.
//! - Leases expire (`lease_ttl_ms`, database clock) unless renewed; an instance trusts its
//!   lease only until `sent + ttl - margin` on its own monotonic clock, which is never later
//!   than the database's expiry. A killed instance's lease therefore returns to the pool
//!   after the TTL, and an instance cut off from the database stops spending its lease
//!   before the others may reuse it.
//!
//! The same slices carry rate limits: requests per minute are leased per fixed minute
//! window (consumption reported in batches), so N instances admit at most `rpm` requests in
//! a minute between them.

use std::time::{Duration, Instant};

/// Safety margin between this process's view of a lease's end and the database's.
pub const MARGIN: Duration = Duration::from_millis(500);

/// One instance's slice of one account window.
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    pub window_start: u64,
    /// L: the lease row's amount, as last set by this instance.
    pub granted: u64,
    /// C: settled here and written to the store since the row was set (now also in S).
    pub confirmed: u64,
    /// U: settled (or, for rate windows, consumed) here and not yet written.
    pub unconfirmed: u64,
    /// Until when this process may spend the lease (None: it holds none).
    pub valid_until: Option<Instant>,
    /// S as the store last reported it.
    pub store_spent: u64,
    pub last_used: Instant,
}

impl Slice {
    pub fn new(window_start: u64) -> Slice {
        Slice {
            window_start,
            granted: 0,
            confirmed: 0,
            unconfirmed: 0,
            valid_until: None,
            store_spent: 0,
            last_used: Instant::now(),
        }
    }

    /// Moves to `window_start`: a new window starts with no lease.
    pub fn roll(&mut self, window_start: u64) {
        if window_start != self.window_start {
            *self = Slice::new(window_start);
        }
    }

    pub fn live(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|t| now < t)
    }

    /// What an admission of `amount` lacks, with `reserved` in flight: None when it fits.
    pub fn shortfall(&self, reserved: u64, amount: u64, now: Instant) -> Option<u64> {
        let held = self.confirmed + self.unconfirmed + reserved + amount;
        let have = if self.live(now) { self.granted } else { 0 };
        (held > have).then(|| held - have)
    }

    /// The lease row's amount that this instance still needs to keep: what is written is
    /// in S now. A lost lease keeps nothing.
    pub fn keep(&self, now: Instant) -> u64 {
        if self.live(now) {
            self.granted.saturating_sub(self.confirmed)
        } else {
            0
        }
    }

    /// Applies a lease call that was sent at `sent` with `confirmed_snap` = C at that time.
    pub fn apply(
        &mut self,
        amount: u64,
        confirmed_snap: u64,
        store_spent: u64,
        sent: Instant,
        ttl: Duration,
    ) {
        self.granted = amount;
        self.confirmed = self.confirmed.saturating_sub(confirmed_snap);
        self.store_spent = store_spent;
        self.valid_until = (amount > 0).then(|| sent + ttl.saturating_sub(MARGIN));
    }

    /// Settled or consumed here.
    pub fn consume(&mut self, amount: u64) {
        self.unconfirmed += amount;
        self.last_used = Instant::now();
    }

    /// Written to the store.
    pub fn confirm(&mut self, amount: u64) {
        self.unconfirmed = self.unconfirmed.saturating_sub(amount);
        self.confirmed += amount;
        self.store_spent += amount;
    }

    /// Free lease that an idle instance can give back.
    pub fn spare(&self, reserved: u64, now: Instant) -> u64 {
        if !self.live(now) {
            return 0;
        }
        self.granted
            .saturating_sub(self.confirmed + self.unconfirmed + reserved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortfall_counts_every_obligation() {
        let now = Instant::now();
        let mut s = Slice::new(0);
        assert_eq!(s.shortfall(0, 5, now), Some(5), "no lease: all of it");
        s.apply(10, 0, 0, now, Duration::from_secs(10));
        assert_eq!(s.shortfall(3, 5, now), None);
        s.consume(4);
        assert_eq!(s.shortfall(3, 5, now), Some(2));
        s.confirm(4);
        assert_eq!((s.unconfirmed, s.confirmed, s.keep(now)), (0, 4, 6));
        // a renewal sent with C = 4 keeps 6 and clears C
        s.apply(6, 4, 4, now, Duration::from_secs(10));
        assert_eq!(
            (s.granted, s.confirmed, s.shortfall(0, 6, now)),
            (6, 0, None)
        );
        let later = now + Duration::from_secs(10);
        assert!(!s.live(later), "trusted only until ttl - margin");
        assert_eq!(s.keep(later), 0);
    }
}
