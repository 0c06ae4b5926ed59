//! A circuit breaker per deployment. Closed: every request may use it. After `failures`
//! consecutive failures (connect errors, timeouts, 429, 5xx) it opens for a cooling-off
//! period, during which requests go elsewhere; then one request at a time probes it
//! (half-open): a success closes it, a failure opens it again for twice as long (up to
//! `max_cooldown`). A 429 with `Retry-After` opens it at once for that long: the provider
//! said when to come back.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use crate::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failures: u32,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures: 5,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// A probe that has not reported within this long no longer holds the half-open slot (its
/// client may have gone away before the answer).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// The value of `tollgate_deployment_state`.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

/// What an attempt found, as far as the deployment's health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered (any status the client caused, 4xx included).
    Ok,
    /// Unreachable, timed out, reset, or answered 5xx / 429 without `Retry-After`.
    Failed,
    /// 429 with `Retry-After`: cool off for that long.
    RateLimited(Duration),
}

#[derive(Debug)]
struct Inner {
    state: State,
    failures: u32,
    open_until: Instant,
    cooldown: Duration,
    probe_started: Option<Instant>,
}

/// The health of one deployment.
#[derive(Debug)]
pub struct Health {
    /// Metrics and /health name ("group/provider" or the configured name).
    pub id: String,
    pub provider: String,
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
    /// `tollgate_upstream_attempts_total{deployment=id, outcome="ok"}`, resolved once: the
    /// common case costs no label lookup.
    attempts_ok: prometheus::IntCounter,
}

/// A view of the breaker for /health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: State,
    pub consecutive_failures: u32,
    /// Until the next probe is allowed (open only).
    pub retry_in: Option<Duration>,
}

impl Health {
    pub fn new(id: &str, provider: &str, policy: BreakerPolicy) -> Health {
        let h = Health {
            id: id.to_string(),
            provider: provider.to_string(),
            policy,
            inner: Mutex::new(Inner {
                state: State::Closed,
                failures: 0,
                open_until: Instant::now(),
                cooldown: policy.cooldown,
                probe_started: None,
            }),
            attempts_ok: metrics::UPSTREAM_ATTEMPTS.with_label_values(&[id, "ok"]),
        };
        h.publish(State::Closed);
        h
    }

    /// Counts an attempt by its outcome label (`ok`, `status_5xx`, `connect`, ...).
    pub fn count_attempt(&self, label: &str) {
        if label == "ok" {
            self.attempts_ok.inc();
        } else {
            metrics::UPSTREAM_ATTEMPTS
                .with_label_values(&[self.id.as_str(), label])
                .inc();
        }
    }

    fn publish(&self, s: State) {
        metrics::DEPLOYMENT_STATE
            .with_label_values(&[self.id.as_str(), self.provider.as_str()])
            .set(s.gauge());
    }

    /// May a request try this deployment now (closed, or its probe slot is free)?
    pub fn available(&self, now: Instant) -> bool {
        let g = self.inner.lock();
        match g.state {
            State::Closed => true,
            State::Open => now >= g.open_until,
            State::HalfOpen => g
                .probe_started
                .is_none_or(|t| now.duration_since(t) > PROBE_TIMEOUT),
        }
    }

    /// An attempt starts: an open breaker whose cooling-off is over becomes half-open, and
    /// this attempt is its probe.
    pub fn begin(&self, now: Instant) {
        let mut g = self.inner.lock();
        let probe = match g.state {
            State::Closed => false,
            State::Open => now >= g.open_until,
            State::HalfOpen => true,
        };
        if probe {
            g.state = State::HalfOpen;
            g.probe_started = Some(now);
            drop(g);
            self.publish(State::HalfOpen);
        }
    }

    pub fn record(&self, outcome: Outcome, now: Instant) {
        let mut g = self.inner.lock();
        let before = g.state;
        match outcome {
            Outcome::Ok => {
                g.failures = 0;
                g.state = State::Closed;
                g.cooldown = self.policy.cooldown;
                g.probe_started = None;
            }
            Outcome::RateLimited(wait) => {
                g.failures = g.failures.saturating_add(1);
                let wait = wait.min(self.policy.max_cooldown);
                g.state = State::Open;
                g.open_until = g.open_until.max(now + wait);
                g.probe_started = None;
            }
            Outcome::Failed => {
                g.failures = g.failures.saturating_add(1);
                if g.state == State::HalfOpen {
                    // The probe failed: cool off for longer.
                    g.cooldown = (g.cooldown * 2).min(self.policy.max_cooldown);
                    g.state = State::Open;
                    g.open_until = now + g.cooldown;
                    g.probe_started = None;
                } else if g.state == State::Closed && g.failures >= self.policy.failures {
                    g.state = State::Open;
                    g.open_until = now + g.cooldown;
                }
            }
        }
        let after = g.state;
        drop(g);
        if after != before {
            self.publish(after);
            if after == State::Open {
                metrics::DEPLOYMENT_EJECTIONS
                    .with_label_values(&[self.id.as_str()])
                    .inc();
                log::warn!(
                    "deployment {} ejected after {outcome:?} (circuit open)",
                    self.id
                );
            } else if after == State::Closed {
                log::info!("deployment {} is healthy again (circuit closed)", self.id);
            }
        }
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let g = self.inner.lock();
        Snapshot {
            state: g.state,
            consecutive_failures: g.failures,
            retry_in: (g.state == State::Open).then(|| g.open_until.saturating_duration_since(now)),
        }
    }

    /// When an open breaker lets a probe through (for ordering ejected deployments).
    pub fn open_until(&self) -> Instant {
        self.inner.lock().open_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 3,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(40),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let h = Health::new("t/a", "a", policy());
        let t0 = Instant::now();
        h.record(Outcome::Failed, t0);
        h.record(Outcome::Failed, t0);
        assert!(h.available(t0));
        h.record(Outcome::Ok, t0); // a success resets the count
        for _ in 0..3 {
            h.record(Outcome::Failed, t0);
        }
        assert_eq!(h.snapshot(t0).state, State::Open);
        assert!(!h.available(t0 + Duration::from_secs(9)));
        let t1 = t0 + Duration::from_secs(10);
        assert!(h.available(t1));
        h.begin(t1);
        assert_eq!(h.snapshot(t1).state, State::HalfOpen);
        assert!(!h.available(t1), "one probe at a time");
        // The probe fails: twice the cooldown.
        h.record(Outcome::Failed, t1);
        assert_eq!(h.snapshot(t1).state, State::Open);
        assert!(!h.available(t1 + Duration::from_secs(19)));
        let t2 = t1 + Duration::from_secs(20);
        assert!(h.available(t2));
        h.begin(t2);
        h.record(Outcome::Ok, t2);
        assert_eq!(h.snapshot(t2).state, State::Closed);
        assert_eq!(h.snapshot(t2).consecutive_failures, 0);
    }

    #[test]
    fn cooldown_is_capped_and_resets_after_recovery() {
        let h = Health::new("t/b", "b", policy());
        let mut t = Instant::now();
        for _ in 0..3 {
            h.record(Outcome::Failed, t);
        }
        for _ in 0..5 {
            t += Duration::from_secs(100);
            h.begin(t);
            h.record(Outcome::Failed, t);
        }
        assert_eq!(h.snapshot(t).retry_in, Some(Duration::from_secs(40)));
        t += Duration::from_secs(40);
        h.begin(t);
        h.record(Outcome::Ok, t);
        for _ in 0..3 {
            h.record(Outcome::Failed, t);
        }
        assert_eq!(h.snapshot(t).retry_in, Some(Duration::from_secs(10)));
    }

    #[test]
    fn retry_after_opens_at_once_for_that_long() {
        let h = Health::new("t/c", "c", policy());
        let t = Instant::now();
        h.record(Outcome::RateLimited(Duration::from_secs(7)), t);
        assert_eq!(h.snapshot(t).state, State::Open);
        assert!(!h.available(t + Duration::from_secs(6)));
        assert!(h.available(t + Duration::from_secs(7)));
        // Capped by max_cooldown.
        h.record(Outcome::RateLimited(Duration::from_secs(3600)), t);
        assert_eq!(h.snapshot(t).retry_in, Some(Duration::from_secs(40)));
    }

    #[test]
    fn a_stale_probe_frees_the_slot() {
        let h = Health::new("t/d", "d", policy());
        let t = Instant::now();
        for _ in 0..3 {
            h.record(Outcome::Failed, t);
        }
        let t1 = t + Duration::from_secs(10);
        h.begin(t1);
        assert!(!h.available(t1 + Duration::from_secs(30)));
        assert!(h.available(t1 + PROBE_TIMEOUT + Duration::from_secs(1)));
    }
}
