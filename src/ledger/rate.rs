//! Requests-per-minute and tokens-per-minute limits: a sliding window over two one-minute
//! buckets (the previous minute weighted by how much of it still overlaps the window), the
//! approach nginx and Envoy use for local rate limits: O(1) memory, no timer, and within a
//! few percent of an exact sliding log.

use parking_lot::Mutex;

const WINDOW_MS: u64 = 60_000;

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

    /// Counts tokens used by a finished request.
    pub fn add_tokens(&self, n: u64, now_ms: u64) {
        let mut t = self.tokens.lock();
        t.roll(now_ms);
        t.current += n;
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
