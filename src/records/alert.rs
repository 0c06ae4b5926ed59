//! Budget alerts: the thresholds a budget alerts at (a bit set carried by its [`super::Limit`])
//! and the stored record of one alert (one threshold of one account in one window).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::money::Micros;
use super::Scope;

/// Thresholds as a set of percentages, bit `p` for `p` % (1 to 127). Bit 0 marks a set that
/// was given explicitly, so that an empty list (`[]`: no alerts) differs from "not set" (0:
/// the config's default applies). `Copy`, so limits stay `Copy` and the settle path reads it
/// without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AlertMask(pub u128);

/// The highest threshold a mask can hold (spend can pass 100 % by what was in flight).
pub const MAX_THRESHOLD: u8 = 127;

impl AlertMask {
    /// Not set: the config's default applies.
    pub const UNSET: AlertMask = AlertMask(0);

    /// The mask of a list of percentages (each 1 to 127).
    pub fn from_percents(percents: &[u8]) -> Result<AlertMask, String> {
        let mut m = 1u128;
        for &p in percents {
            if p == 0 || p > MAX_THRESHOLD {
                return Err(format!(
                    "alert threshold {p} % is out of range (1 to {MAX_THRESHOLD})"
                ));
            }
            m |= 1u128 << p;
        }
        Ok(AlertMask(m))
    }

    /// The mask of an optional list (None: unset). Values out of range are dropped (stored
    /// records were validated when written).
    pub fn of(percents: Option<&[u8]>) -> AlertMask {
        match percents {
            None => AlertMask::UNSET,
            Some(ps) => AlertMask(
                ps.iter()
                    .filter(|&&p| p > 0 && p <= MAX_THRESHOLD)
                    .fold(1u128, |m, &p| m | (1u128 << p)),
            ),
        }
    }

    pub fn is_unset(self) -> bool {
        self.0 == 0
    }

    /// The percentages in the set, ascending.
    pub fn percents(self) -> impl Iterator<Item = u8> {
        (1..=MAX_THRESHOLD).filter(move |&p| self.0 & (1u128 << p) != 0)
    }
}

/// One alert: threshold `threshold` % of the budget of (`scope`, `account_id`) was reached
/// in the window starting at `window_start`. Claimed once in the store under [`alert_id`];
/// only the claimer delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: String,
    pub scope: Scope,
    pub account_id: String,
    /// The budget's own id, where the account's limit is a named budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<String>,
    pub window_start: u64,
    #[serde(default)]
    pub window_end: Option<u64>,
    pub threshold: u8,
    pub limit_micros: Micros,
    /// Spend when the crossing was seen.
    pub spent_micros: Micros,
    /// Unix seconds.
    pub crossed_at: u64,
    /// Targets (by name) that accepted it.
    #[serde(default)]
    pub delivered: Vec<String>,
    /// Targets given up on after the last retry.
    #[serde(default)]
    pub failed: Vec<String>,
    #[serde(default)]
    pub attempts: u32,
    /// Set when every target accepted it or was given up on: never sent again.
    #[serde(default)]
    pub sent_at: Option<u64>,
}

/// The alert id of (scope, account, budget, window, threshold): the same on every instance,
/// so it is both the store's unique claim key and the receivers' idempotency key.
pub fn alert_id(
    scope: Scope,
    account_id: &str,
    budget_id: Option<&str>,
    window_start: u64,
    threshold: u8,
) -> String {
    let mut h = Sha256::new();
    for part in [
        scope.code().as_bytes(),
        account_id.as_bytes(),
        budget_id.unwrap_or("").as_bytes(),
        window_start.to_string().as_bytes(),
        &[threshold],
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let d = h.finalize();
    let mut s = String::with_capacity(6 + 32);
    s.push_str("alert_");
    for b in &d[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_tell_unset_from_empty() {
        assert!(AlertMask::of(None).is_unset());
        let none = AlertMask::of(Some(&[]));
        assert!(!none.is_unset());
        assert_eq!(none.percents().count(), 0);
        let m = AlertMask::from_percents(&[50, 80, 95, 100]).unwrap();
        assert_eq!(m.percents().collect::<Vec<_>>(), vec![50, 80, 95, 100]);
        assert!(AlertMask::from_percents(&[0]).is_err());
        assert!(AlertMask::from_percents(&[128]).is_err());
    }

    #[test]
    fn alert_ids_are_stable_and_distinct() {
        let a = alert_id(Scope::Key, "k1", None, 100, 80);
        assert_eq!(a, alert_id(Scope::Key, "k1", None, 100, 80));
        assert_ne!(a, alert_id(Scope::Key, "k1", None, 100, 95));
        assert_ne!(a, alert_id(Scope::Key, "k1", None, 200, 80));
        assert_ne!(a, alert_id(Scope::User, "k1", None, 100, 80));
        assert_ne!(a, alert_id(Scope::Key, "k1", Some("b"), 100, 80));
        assert_eq!(a.len(), 6 + 32);
    }
}
