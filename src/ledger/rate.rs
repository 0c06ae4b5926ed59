//! Requests-per-minute and tokens-per-minute limits: a sliding window over two one-minute
//! buckets (the previous minute weighted by how much of it still overlaps the window), the
//! approach nginx and Envoy use for local rate limits: O(1) memory, no timer, and within a
//! few percent of an exact sliding log.

//!
//! With a shared store the limits hold across instances instead (see `ledger::lease`):
//! requests per minute are leased per fixed UTC minute, so all instances together admit at
//! most `rpm` requests in a minute; tokens per minute are summed in the store from batched
//! increments, so a window closes on every instance within one sync interval of filling.

use parking_lot::Mutex;

use super::lease::Slice;

pub const WINDOW_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct Buckets {
    /// Start of the current minute bucket (ms).
    start: u64,
    current: u64,
    previous: u64,
}

impl Buckets {
    fn roll(&mut self, now_ms: u64) {
        let start = now_ms / WINDOW_MS * WINDOW_MS;
        if start == self.start {
            return;
        }
        self.previous = if start == self.start + WINDOW_MS {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.start = start;
    }

    /// The weighted count over the last 60 s.
    fn used(&self, now_ms: u64) -> u64 {
        let into = now_ms - self.start;
        let weight = WINDOW_MS - into; // share of the previous bucket still in the window
        self.current + self.previous * weight / WINDOW_MS
    }

    /// Milliseconds until `used` drops to at most `target`, assuming no new traffic.
    fn wait_ms(&self, now_ms: u64, target: u64) -> u64 {
        let into = now_ms - self.start;
        if self.current > target {
            // Only the next bucket roll can help: wait for it, then the rest decays.
            return WINDOW_MS - into;
        }
        if self.previous == 0 {
            return 0;
        }
        // previous * (W - into - t) / W <= target - current
        let room = target - self.current;
        let need = WINDOW_MS
            .saturating_sub(into)
            .saturating_sub(room * WINDOW_MS / self.previous);
        need.min(WINDOW_MS - into)
    }
}

/// One limiter (per key or per user): RPM and TPM.
#[derive(Debug, Default)]
pub struct RateLimiter {
    requests: Mutex<Buckets>,
    tokens: Mutex<Buckets>,
    /// Shared store: (requests slice, tokens counter) of the current minute.
    shared: Mutex<Option<SharedWindows>>,
}

/// The cross-instance state of one limiter.
#[derive(Debug, Clone, Copy)]
pub struct SharedWindows {
    /// Leased requests of the current minute.
    pub requests: Slice,
    /// Tokens of the current minute: `store_spent` is the total of all instances as last
    /// read, `unconfirmed` what this one counted since.
    pub tokens: Slice,
    /// The last request named a TPM limit (its counter is then read at every sync).
    pub tpm_limited: bool,
    pub rpm: u64,
}

/// Why a shared admission did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedRefusal {
    Exceeded(RateExceeded),
    /// The request lease of this minute lacks this many requests.
    Lease(u64),
}

/// A refusal, with the seconds after which a retry can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateExceeded {
    pub kind: &'static str,
    pub limit: u64,
    pub retry_after_secs: u64,
}

impl RateLimiter {
    /// Admits one request if it fits the RPM limit and the TPM window is not already full;
    /// counts the request when admitted.
    pub fn admit(
        &self,
        rpm: Option<u64>,
        tpm: Option<u64>,
        now_ms: u64,
    ) -> Result<(), RateExceeded> {
        if let Some(tpm) = tpm {
            let mut t = self.tokens.lock();
            t.roll(now_ms);
            if t.used(now_ms) >= tpm {
                let wait = t.wait_ms(now_ms, tpm.saturating_sub(1));
                return Err(RateExceeded {
                    kind: "tokens per minute",
                    limit: tpm,
                    retry_after_secs: wait.div_ceil(1000).max(1),
                });
            }
        }
        let mut r = self.requests.lock();
        r.roll(now_ms);
        if let Some(rpm) = rpm {
            if r.used(now_ms) + 1 > rpm {
                let wait = r.wait_ms(now_ms, rpm.saturating_sub(1));
                return Err(RateExceeded {
                    kind: "requests per minute",
                    limit: rpm,
                    retry_after_secs: wait.div_ceil(1000).max(1),
                });
            }
        }
        r.current += 1;
        Ok(())
    }

    /// Takes back one request that [`RateLimiter::admit`] counted at `now_ms` (a later
    /// limiter refused it).
    pub fn unadmit(&self, now_ms: u64) {
        let mut r = self.requests.lock();
        if r.start == now_ms / WINDOW_MS * WINDOW_MS {
            r.current = r.current.saturating_sub(1);
        }
    }

    /// Counts tokens used by a finished request.
    pub fn add_tokens(&self, n: u64, now_ms: u64) {
        let mut t = self.tokens.lock();
        t.roll(now_ms);
        t.current += n;
        drop(t);
        if let Some(sh) = self.shared.lock().as_mut() {
            sh.tokens.roll(now_ms / WINDOW_MS * WINDOW_MS);
            sh.tokens.consume(n);
        }
    }

    pub fn make_shared(&self) {
        let mut s = self.shared.lock();
        if s.is_none() {
            *s = Some(SharedWindows {
                requests: Slice::new(0),
                tokens: Slice::new(0),
                tpm_limited: false,
                rpm: 0,
            });
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared.lock().is_some()
    }

    /// Admission across instances, in fixed minute windows: the TPM window must not be
    /// full (all instances' tokens as last summed, plus this one's since), and one request
    /// must fit this instance's request lease. With `consume` false it only checks (so that
    /// a request refused by its user's limiter is not counted by its key's).
    pub fn admit_shared(
        &self,
        rpm: Option<u64>,
        tpm: Option<u64>,
        now_ms: u64,
        consume: bool,
    ) -> Result<(), SharedRefusal> {
        let minute = now_ms / WINDOW_MS * WINDOW_MS;
        let retry = ((minute + WINDOW_MS - now_ms).div_ceil(1000)).max(1);
        let mut g = self.shared.lock();
        let Some(sh) = g.as_mut() else {
            if !consume {
                return Ok(());
            }
            return self
                .admit(rpm, tpm, now_ms)
                .map_err(SharedRefusal::Exceeded);
        };
        sh.tokens.roll(minute);
        sh.requests.roll(minute);
        sh.tpm_limited = tpm.is_some();
        if let Some(tpm) = tpm {
            if sh.tokens.store_spent + sh.tokens.unconfirmed >= tpm {
                return Err(SharedRefusal::Exceeded(RateExceeded {
                    kind: "tokens per minute",
                    limit: tpm,
                    retry_after_secs: retry,
                }));
            }
        }
        if let Some(rpm) = rpm {
            sh.rpm = rpm;
            if let Some(short) = sh.requests.shortfall(0, 1, std::time::Instant::now()) {
                if sh.requests.store_spent + sh.requests.unconfirmed >= rpm {
                    return Err(SharedRefusal::Exceeded(RateExceeded {
                        kind: "requests per minute",
                        limit: rpm,
                        retry_after_secs: retry,
                    }));
                }
                return Err(SharedRefusal::Lease(short));
            }
            if consume {
                sh.requests.consume(1);
            }
        }
        drop(g);
        if !consume {
            return Ok(());
        }
        // The local buckets keep counting for `usage()`.
        let mut r = self.requests.lock();
        r.roll(now_ms);
        r.current += 1;
        Ok(())
    }

    /// The shared state, rolled to the minute of `now_ms`.
    pub fn shared_view(&self, now_ms: u64) -> Option<SharedWindows> {
        let minute = now_ms / WINDOW_MS * WINDOW_MS;
        let mut g = self.shared.lock();
        let sh = g.as_mut()?;
        sh.tokens.roll(minute);
        sh.requests.roll(minute);
        Some(*sh)
    }

    /// Runs `f` on the shared state if it is still in the minute `minute`.
    pub fn with_shared(&self, minute: u64, f: impl FnOnce(&mut SharedWindows)) {
        if let Some(sh) = self
            .shared
            .lock()
            .as_mut()
            .filter(|s| s.requests.window_start == minute || s.tokens.window_start == minute)
        {
            f(sh)
        }
    }

    /// Read-only, for the standing headers (`ledger::standing`): the (requests, tokens)
    /// windows at `now_ms`, each as (weighted use, ms until it is back to zero).
    pub fn windows(&self, now_ms: u64) -> ((u64, u64), (u64, u64)) {
        let of = |b: &Mutex<Buckets>| {
            let mut b = b.lock();
            b.roll(now_ms);
            let into = now_ms - b.start;
            // The current bucket weighs in until the end of the next minute, the previous
            // one until the end of this one.
            let clear = if b.current > 0 {
                2 * WINDOW_MS - into
            } else if b.previous > 0 {
                WINDOW_MS - into
            } else {
                0
            };
            (b.used(now_ms), clear)
        };
        (of(&self.requests), of(&self.tokens))
    }

    pub fn usage(&self, now_ms: u64) -> (u64, u64) {
        let mut r = self.requests.lock();
        r.roll(now_ms);
        let mut t = self.tokens.lock();
        t.roll(now_ms);
        (r.used(now_ms), t.used(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_admits_exactly_the_limit_then_says_when_to_retry() {
        let l = RateLimiter::default();
        let t0 = 120_000 + 10_000;
        for _ in 0..5 {
            l.admit(Some(5), None, t0).unwrap();
        }
        let e = l.admit(Some(5), None, t0).unwrap_err();
        assert_eq!(e.kind, "requests per minute");
        assert_eq!(
            e.retry_after_secs, 50,
            "the current bucket frees at the next minute"
        );
        // A minute later the previous bucket still weighs in, then decays.
        let t1 = 180_000 + 30_000;
        assert_eq!(l.usage(t1).0, 2); // 5 * 30/60 = 2
        for _ in 0..3 {
            l.admit(Some(5), None, t1).unwrap();
        }
        assert!(l.admit(Some(5), None, t1).is_err());
        assert!(l.admit(Some(5), None, 400_000).is_ok());
    }

    #[test]
    fn tpm_refuses_once_the_window_is_full() {
        let l = RateLimiter::default();
        l.admit(None, Some(1000), 0).unwrap();
        l.add_tokens(1500, 1);
        let e = l.admit(None, Some(1000), 2).unwrap_err();
        assert_eq!(e.kind, "tokens per minute");
        assert!(e.retry_after_secs >= 1 && e.retry_after_secs <= 60);
        assert!(l.admit(None, Some(1000), 130_000).is_ok());
    }
}
