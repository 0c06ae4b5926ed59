//! Budget alerts: when an account's spend crosses a threshold of its budget (50, 80, 95 and
//! 100 % by default), a webhook is sent, once per (account, budget window, threshold).
//!
//! - [`Alerts::on_spend`] is the one hook in the ledger: settlement calls it for every
//!   limited account with the spend before and after the charge. It is a few integer
//!   operations without allocation unless a threshold was crossed; then it queues a
//!   [`Crossing`] (memory only: the hot path never touches the disk). With alerts off the
//!   ledger holds no hook and calls nothing.
//! - [`sender`] (a background service) claims each crossing in the store with an
//!   insert-if-absent on its [`crate::records::alert::alert_id`] (so exactly one claimer per
//!   threshold and window, across instances too), then sends the claimed alerts (the
//!   outbox) with retries and exponential back-off and marks them sent. At start, and every
//!   `scan_interval`, it re-checks every limited account's spend against its thresholds
//!   (crossings whose claim a crash lost, and spend that reached this instance from other
//!   instances), and resumes claimed alerts not yet sent.
//! - [`payload`]: the generic JSON and Slack bodies and the HMAC-SHA256 signature.

pub mod payload;
pub mod sender;
pub mod settings;

use parking_lot::Mutex;

use crate::records::{AlertMask, Limit, Micros, Scope};

/// The account a charge was settled on.
#[derive(Debug, Clone, Copy)]
pub struct AccountRef<'a> {
    pub scope: Scope,
    pub id: &'a str,
    /// The budget's own id, where the backend knows one (None today: one budget per account).
    pub budget_id: Option<&'a str>,
}

/// Thresholds crossed on one account by one charge (or found by a scan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    pub scope: Scope,
    pub account_id: String,
    pub budget_id: Option<String>,
    pub window_start: u64,
    pub window_end: Option<u64>,
    /// Bit p: p % crossed.
    pub thresholds: AlertMask,
    pub limit_micros: Micros,
    pub spent_micros: Micros,
    pub at: u64,
}

/// The hook's state: default thresholds and the crossings waiting for the sender.
pub struct Alerts {
    default_mask: AlertMask,
    crossings: Mutex<Vec<Crossing>>,
    pub notify: tokio::sync::Notify,
}

/// Bits 0 to `n` set (`n` up to 127).
#[inline]
fn bits_upto(n: u32) -> u128 {
    if n >= 127 {
        u128::MAX
    } else {
        (1u128 << (n + 1)) - 1
    }
}

/// Whole percent of `limit` that `spent` is, capped at 127.
#[inline]
pub fn percent(limit: Micros, spent: Micros) -> u32 {
    if limit == 0 {
        return if spent > 0 { 127 } else { 0 };
    }
    ((spent as u128 * 100) / limit as u128).min(127) as u32
}

/// The thresholds of `mask` crossed going from `before` to `after` (spend of a budget of
/// `limit`): p is crossed when before < p % of the limit <= after.
#[inline]
pub fn crossed(mask: AlertMask, limit: Micros, before: Micros, after: Micros) -> AlertMask {
    if after <= before {
        return AlertMask(0);
    }
    let (pb, pa) = (percent(limit, before), percent(limit, after));
    if pa <= pb {
        return AlertMask(0);
    }
    // Bit 0 (the "explicit" marker) is never in (pb, pa].
    AlertMask(mask.0 & bits_upto(pa) & !bits_upto(pb))
}

/// The thresholds of `mask` reached at `spent` (for scans).
pub fn reached(mask: AlertMask, limit: Micros, spent: Micros) -> AlertMask {
    let p = percent(limit, spent);
    AlertMask(mask.0 & bits_upto(p) & !1)
}

impl Alerts {
    pub fn new(default_thresholds: AlertMask) -> Alerts {
        Alerts {
            default_mask: default_thresholds,
            crossings: Mutex::new(Vec::new()),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// The thresholds that apply to `limit`.
    #[inline]
    pub fn mask_of(&self, limit: &Limit) -> AlertMask {
        if limit.alerts.is_unset() {
            self.default_mask
        } else {
            limit.alerts
        }
    }

    /// The settle hook: `before` and `after` are the account's spend in the window that
    /// starts at `window_start`, around one charge. O(1); allocates only on a crossing.
    #[inline]
    pub fn on_spend(
        &self,
        account: &AccountRef,
        limit: &Limit,
        window_start: u64,
        before: Micros,
        after: Micros,
        now: u64,
    ) {
        let hit = crossed(self.mask_of(limit), limit.max_micros, before, after);
        if hit.0 != 0 {
            self.queue(account, limit, window_start, hit, after, now);
        }
    }

    #[cold]
    fn queue(
        &self,
        account: &AccountRef,
        limit: &Limit,
        window_start: u64,
        hit: AlertMask,
        after: Micros,
        now: u64,
    ) {
        self.push(Crossing {
            scope: account.scope,
            account_id: account.id.to_string(),
            budget_id: account.budget_id.map(str::to_string),
            window_start,
            window_end: limit.window(now).1,
            thresholds: hit,
            limit_micros: limit.max_micros,
            spent_micros: after,
            at: now,
        });
    }

    pub fn push(&self, c: Crossing) {
        self.crossings.lock().push(c);
        self.notify.notify_one();
    }

    /// The crossings queued since the last call.
    pub fn take(&self) -> Vec<Crossing> {
        std::mem::take(&mut *self.crossings.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::period::{Alignment, Period};

    fn default_mask() -> AlertMask {
        AlertMask::from_percents(&[50, 80, 95, 100]).unwrap()
    }

    fn pcts(m: AlertMask) -> Vec<u8> {
        m.percents().collect()
    }

    #[test]
    fn a_threshold_is_crossed_exactly_at_its_percent() {
        let m = default_mask();
        assert_eq!(pcts(crossed(m, 1000, 0, 499)), Vec::<u8>::new());
        assert_eq!(pcts(crossed(m, 1000, 0, 500)), vec![50]);
        assert_eq!(pcts(crossed(m, 1000, 500, 799)), Vec::<u8>::new());
        assert_eq!(pcts(crossed(m, 1000, 500, 800)), vec![80]);
        assert_eq!(pcts(crossed(m, 1000, 999, 1000)), vec![100]);
        assert_eq!(pcts(crossed(m, 1000, 1000, 5000)), Vec::<u8>::new());
        // no spend, or spend going down (a manual reset), crosses nothing
        assert_eq!(crossed(m, 1000, 700, 700).0, 0);
        assert_eq!(crossed(m, 1000, 700, 100).0, 0);
    }

    #[test]
    fn one_settle_can_cross_several_thresholds() {
        let m = default_mask();
        assert_eq!(pcts(crossed(m, 1000, 100, 960)), vec![50, 80, 95]);
        assert_eq!(pcts(crossed(m, 1000, 0, 2000)), vec![50, 80, 95, 100]);
        assert_eq!(pcts(crossed(m, 1000, 949, 1200)), vec![95, 100]);
    }

    #[test]
    fn large_budgets_do_not_overflow_and_tiny_ones_work() {
        let m = default_mask();
        let big = u64::MAX / 2;
        assert_eq!(pcts(crossed(m, big, 0, big)), vec![50, 80, 95, 100]);
        assert_eq!(pcts(crossed(m, 3, 1, 2)), vec![50]);
        assert_eq!(pcts(crossed(m, 0, 0, 1)), vec![50, 80, 95, 100]);
        assert_eq!(pcts(reached(m, 1000, 960)), vec![50, 80, 95]);
        assert_eq!(pcts(reached(m, 1000, 10)), Vec::<u8>::new());
    }

    #[test]
    fn thresholds_above_100_and_explicit_empty_sets() {
        let m = AlertMask::from_percents(&[100, 120]).unwrap();
        assert_eq!(pcts(crossed(m, 100, 99, 125)), vec![100, 120]);
        let none = AlertMask::of(Some(&[]));
        assert_eq!(crossed(none, 100, 0, 1000).0, 0);
        assert_eq!(reached(none, 100, 1000).0, 0);
    }

    #[test]
    fn concurrent_settlements_queue_each_threshold_once() {
        use crate::ledger::budget::{reserve, Account, Counter};
        let a = Alerts::new(default_mask());
        let limit = Limit {
            max_micros: 1000,
            period: Period::Lifetime,
            alignment: Alignment::Calendar,
            anchor: 0,
            alerts: AlertMask::UNSET,
        };
        let acct = Account::new(Scope::Key, "k", Some(limit), Counter::default());
        std::thread::scope(|s| {
            for _ in 0..50 {
                s.spawn(|| {
                    let r = reserve(std::slice::from_ref(&acct), 20, 5).unwrap();
                    r.settle_observed(20, 5, &mut |x, l, ws, b, af| {
                        let who = AccountRef {
                            scope: x.scope,
                            id: &x.id,
                            budget_id: None,
                        };
                        a.on_spend(&who, l, ws, b, af, 5)
                    });
                });
            }
        });
        let mut all: Vec<u8> = a
            .take()
            .iter()
            .flat_map(|c| c.thresholds.percents())
            .collect();
        all.sort();
        assert_eq!(all, vec![50, 80, 95, 100]);
    }

    #[test]
    fn the_hook_queues_only_crossings_and_uses_the_budgets_own_thresholds() {
        let a = Alerts::new(default_mask());
        let mut limit = Limit {
            max_micros: 1000,
            period: Period::Daily,
            alignment: Alignment::Calendar,
            anchor: 0,
            alerts: AlertMask::UNSET,
        };
        let acct = AccountRef {
            scope: Scope::Key,
            id: "k1",
            budget_id: None,
        };
        a.on_spend(&acct, &limit, 0, 0, 100, 10);
        assert!(a.take().is_empty());
        a.on_spend(&acct, &limit, 0, 100, 850, 10);
        let c = a.take();
        assert_eq!(c.len(), 1);
        assert_eq!(pcts(c[0].thresholds), vec![50, 80]);
        assert_eq!((c[0].window_start, c[0].window_end), (0, Some(86_400)));
        limit.alerts = AlertMask::from_percents(&[10]).unwrap();
        a.on_spend(&acct, &limit, 0, 0, 850, 10);
        assert_eq!(pcts(a.take()[0].thresholds), vec![10]);
    }
}
