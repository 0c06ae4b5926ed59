//! The retry budget: retries may add at most `ratio` of the traffic, plus a small floor per
//! second so that a quiet gateway can still fail over. When a provider falls over under
//! load, the budget keeps the gateway from multiplying its own traffic against the next one
//! (a retry storm). A token bucket in milli-tokens: every request deposits `ratio`, every
//! retry withdraws one, and the floor refills `min_per_second` each second.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

pub struct RetryBudget {
    deposit: i64,
    floor: i64,
    cap: i64,
    tokens: AtomicI64,
    /// Seconds since `epoch` at the last floor refill.
    refilled: AtomicU64,
    epoch: Instant,
}

const ONE: i64 = 1000;

impl RetryBudget {
    /// `ratio` in percent of requests (0-100); `min_per_second` retries always allowed.
    pub fn new(percent: u32, min_per_second: u32) -> RetryBudget {
        let floor = min_per_second as i64 * ONE;
        RetryBudget {
            deposit: percent as i64 * ONE / 100,
            floor,
            // At most ten seconds' worth of floor, or 100 retries, banked.
            cap: (floor * 10).max(100 * ONE),
            tokens: AtomicI64::new(floor),
            refilled: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A request arrived (its first attempt).
    pub fn deposit(&self) {
        if self.deposit > 0 {
            self.add(self.deposit);
        }
    }

    fn add(&self, n: i64) {
        let cap = self.cap;
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < cap).then(|| (t + n).min(cap))
            });
    }

    /// May one more retry go out now? Takes it from the budget if so.
    pub fn try_withdraw(&self) -> bool {
        let sec = self.epoch.elapsed().as_secs() + 1;
        let last = self.refilled.load(Ordering::Relaxed);
        if sec > last
            && self
                .refilled
                .compare_exchange(last, sec, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.add(self.floor * (sec - last).min(10) as i64);
        }
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= ONE).then_some(t - ONE)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_bounded_share_of_requests() {
        // No floor: only deposits pay for retries.
        let b = RetryBudget::new(20, 0);
        assert!(!b.try_withdraw());
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 20, "20% of 100 requests");
    }

    #[test]
    fn the_floor_allows_a_few_retries_on_a_quiet_gateway() {
        let b = RetryBudget::new(0, 3);
        let granted = (0..10).filter(|_| b.try_withdraw()).count();
        // The initial bank plus this second's refill.
        assert!((3..=6).contains(&granted), "{granted}");
    }

    #[test]
    fn deposits_are_capped() {
        let b = RetryBudget::new(100, 0);
        for _ in 0..10_000 {
            b.deposit();
        }
        let granted = (0..1000).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 100);
    }
}
