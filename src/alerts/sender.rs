//! The alert sender (a Pingora background service): claims crossings in the store, then
//! delivers the claimed alerts (the outbox) to every target with retries and exponential
//! back-off, and marks them sent.
//!
//! Exactly once per (account, budget window, threshold):
//! - a crossing becomes an alert only through [`AlertStore::claim_alert`], an insert-if-absent
//!   on the alert id (sled: compare-and-swap; PostgreSQL: `ON CONFLICT DO NOTHING`), durable
//!   before the first send; only the instance whose insert won sends it;
//! - delivery progress (targets that accepted, `sent_at`) is stored after each round, so a
//!   restart resumes what is pending and never sends a sent alert again;
//! - at start (after the store's spend is loaded) and every `scan_interval`, every limited
//!   account's spend is compared with its thresholds: a crossing whose claim a crash lost
//!   (the settle happened, its usage reached the store, the claim did not), or spend that
//!   reached this instance through the shared store, is claimed then.
//!
//! A crash after a target accepted but before that was stored sends it once more, with the
//! same alert id (`x-tollgate-alert-id`): receivers deduplicate on it.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::payload;
use super::settings::{AlertSettings, Target};
use super::{reached, Alerts, Crossing};
use crate::auth::KeyIndex;
use crate::clock;
use crate::ledger::Ledger;
use crate::metrics::{ALERTS_FAILED, ALERTS_PENDING, ALERTS_SENT};
use crate::outbound::{self, ClientSettings, HostPolicy};
use crate::records::{alert::alert_id, AlertRecord};
use crate::store::{Store, StoreSlot};

/// How often the sender looks for the store while it is not open.
const STORE_POLL: Duration = Duration::from_millis(100);
/// Alert ids remembered as claimed (by anyone) before the memory is cleared; the store
/// still refuses a second claim after that, at the cost of one query.
const MAX_KNOWN: usize = 100_000;

pub struct AlertSender {
    pub alerts: Arc<Alerts>,
    pub ledger: Arc<Ledger>,
    pub keys: Arc<KeyIndex>,
    pub slot: Arc<StoreSlot>,
    pub settings: AlertSettings,
}

/// An alert this instance delivers, and when to try it next.
struct Pending {
    rec: AlertRecord,
    next_try: Instant,
}

struct Run {
    owner: String,
    client: reqwest::Client,
    /// Alert ids claimed by anyone (no need to ask the store again).
    known: HashSet<String>,
    outbox: HashMap<String, Pending>,
}

impl AlertSender {
    fn lease_until_ms(&self) -> u64 {
        clock::now_millis() + self.settings.claim_lease.as_millis() as u64
    }

    /// Claims every threshold of `c` not claimed yet; the alerts this instance won go to
    /// its outbox.
    async fn claim(&self, store: &dyn Store, run: &mut Run, c: &Crossing) {
        for threshold in c.thresholds.percents() {
            let id = alert_id(
                c.scope,
                &c.account_id,
                c.budget_id.as_deref(),
                c.window_start,
                threshold,
            );
            if run.known.contains(&id) {
                continue;
            }
            let rec = AlertRecord {
                id: id.clone(),
                scope: c.scope,
                account_id: c.account_id.clone(),
                budget_id: c.budget_id.clone(),
                window_start: c.window_start,
                window_end: c.window_end,
                threshold,
                limit_micros: c.limit_micros,
                spent_micros: c.spent_micros,
                crossed_at: c.at,
                delivered: Vec::new(),
                failed: Vec::new(),
                attempts: 0,
                sent_at: None,
            };
            match store
                .claim_alert(&rec, &run.owner, self.lease_until_ms())
                .await
            {
                Ok(won) => {
                    if run.known.len() >= MAX_KNOWN {
                        run.known.clear();
                    }
                    run.known.insert(id.clone());
                    if won {
                        log::info!(
                            "budget alert {id}: {} '{}' reached {threshold} %",
                            c.scope.as_str(),
                            c.account_id
                        );
                        run.outbox.insert(
                            id,
                            Pending {
                                rec,
                                next_try: Instant::now(),
                            },
                        );
                    }
                }
                // Not remembered: the next scan claims it again.
                Err(e) => log::warn!("cannot claim budget alert {id}: {e}"),
            }
        }
    }

    /// Compares every limited account's spend with its thresholds. On a shared store the
    /// stored spend (every instance's) counts too: this instance's view of an account
    /// learns of the others' spend only at lease calls.
    async fn scan(&self, store: &dyn Store, run: &mut Run) {
        let now = clock::now_secs();
        let keys = self.keys.all();
        let stored: HashMap<(crate::records::Scope, String, u64), u64> =
            if self.ledger.shared.get().is_some() {
                match store.load_spend().await {
                    Ok(rows) => rows
                        .into_iter()
                        .map(|r| ((r.scope, r.id, r.window_start), r.spent))
                        .collect(),
                    Err(e) => {
                        log::warn!("cannot read stored spend for budget alerts: {e}");
                        HashMap::new()
                    }
                }
            } else {
                HashMap::new()
            };
        for mut s in self.ledger.limited_spend(&keys, now) {
            if let Some(&v) = stored.get(&(s.scope, s.id.clone(), s.window_start)) {
                s.spent = s.spent.max(v);
            }
            let hit = reached(self.alerts.mask_of(&s.limit), s.limit.max_micros, s.spent);
            if hit.0 == 0 {
                continue;
            }
            let c = Crossing {
                scope: s.scope,
                account_id: s.id,
                budget_id: None,
                window_start: s.window_start,
                window_end: s.limit.window(now).1,
                thresholds: hit,
                limit_micros: s.limit.max_micros,
                spent_micros: s.spent,
                at: now,
            };
            self.claim(store, run, &c).await;
        }
    }

    /// Takes the stored alerts not sent yet (claimed before a restart, or by an instance
    /// whose lease ran out) into the outbox; renews the lease of this instance's own.
    async fn resume(&self, store: &dyn Store, run: &mut Run) {
        match store
            .take_pending_alerts(&run.owner, clock::now_millis(), self.lease_until_ms())
            .await
        {
            Ok(list) => {
                for rec in list {
                    run.known.insert(rec.id.clone());
                    run.outbox.entry(rec.id.clone()).or_insert(Pending {
                        rec,
                        next_try: Instant::now(),
                    });
                }
            }
            Err(e) => log::warn!("cannot read pending budget alerts: {e}"),
        }
    }

    /// Sends `body` to one target; Err says why (never the secret).
    async fn post(
        &self,
        client: &reqwest::Client,
        t: &Target,
        rec: &AlertRecord,
    ) -> Result<(), String> {
        let body = payload::body(t.format, rec);
        let sig = payload::signature(&t.secret, clock::now_secs(), &body);
        let r = client
            .post(&t.url)
            .header("content-type", "application/json")
            .header(payload::SIGNATURE_HEADER, sig)
            .header(payload::ID_HEADER, &rec.id)
            .body(body)
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("HTTP {}", resp.status().as_u16())),
            Err(e) => Err(outbound::refusal(&e).unwrap_or_else(|| {
                if e.is_timeout() {
                    "timed out".into()
                } else if e.is_connect() {
                    "cannot connect".into()
                } else {
                    "request failed".into()
                }
            })),
        }
    }

    /// One delivery round of `p`: every target that has not accepted it yet.
    async fn deliver(&self, store: &dyn Store, client: &reqwest::Client, p: &mut Pending) {
        let rec = &mut p.rec;
        rec.attempts += 1;
        let last = rec.attempts >= self.settings.max_attempts;
        for t in &self.settings.targets {
            if rec.delivered.contains(&t.name) || rec.failed.contains(&t.name) {
                continue;
            }
            match self.post(client, t, rec).await {
                Ok(()) => {
                    ALERTS_SENT.with_label_values(&[t.name.as_str()]).inc();
                    rec.delivered.push(t.name.clone());
                }
                Err(why) => {
                    let outcome = if last { "gave_up" } else { "retry" };
                    ALERTS_FAILED
                        .with_label_values(&[t.name.as_str(), outcome])
                        .inc();
                    log::warn!(
                        "budget alert {} to target '{}' failed (attempt {}): {why}",
                        rec.id,
                        t.name,
                        rec.attempts
                    );
                    if last {
                        rec.failed.push(t.name.clone());
                    }
                }
            }
        }
        let done = self
            .settings
            .targets
            .iter()
            .all(|t| rec.delivered.contains(&t.name) || rec.failed.contains(&t.name));
        if done {
            rec.sent_at = Some(clock::now_secs());
        }
        if let Err(e) = store.update_alert(rec).await {
            // Kept in the outbox: stored at the next round (targets that accepted are not
            // sent again by this process).
            log::warn!("cannot store the delivery of budget alert {}: {e}", rec.id);
            rec.sent_at = None;
        }
        let shift = rec.attempts.saturating_sub(1).min(20);
        let backoff = self
            .settings
            .initial_backoff
            .saturating_mul(1 << shift)
            .min(self.settings.max_backoff);
        p.next_try = Instant::now() + backoff;
    }

    async fn deliver_due(&self, store: &dyn Store, run: &mut Run) {
        let now = Instant::now();
        let mut due: Vec<String> = run
            .outbox
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(id, _)| id.clone())
            .collect();
        // Lower thresholds first, in the order they were crossed.
        due.sort_by_key(|id| {
            let r = &run.outbox[id].rec;
            (r.crossed_at, r.threshold)
        });
        for id in due {
            let Some(mut p) = run.outbox.remove(&id) else {
                continue;
            };
            self.deliver(store, &run.client, &mut p).await;
            if p.rec.sent_at.is_none() {
                run.outbox.insert(id, p);
            }
        }
    }
}

#[async_trait]
impl BackgroundService for AlertSender {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        crate::metrics::init_alerts();
        let mut run = Run {
            owner: crate::ids::generate_id("sender_"),
            // Target URLs come from the operator's config only, so private and loopback
            // addresses are allowed (a webhook relay on the same network); redirects are not
            // followed.
            client: outbound::client(ClientSettings::new(HostPolicy::ANY, self.settings.timeout)),
            known: HashSet::new(),
            outbox: HashMap::new(),
        };
        let mut next_scan = Instant::now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            // The store is loaded (spend rebuilt) before the keeper puts it in the slot; an
            // upgrade's old process has none once it let go, and sends nothing more.
            let Some(store) = self.slot.get() else {
                tokio::select! {
                    _ = tokio::time::sleep(STORE_POLL) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            };
            for c in self.alerts.take() {
                self.claim(store.as_ref(), &mut run, &c).await;
            }
            if Instant::now() >= next_scan {
                self.resume(store.as_ref(), &mut run).await;
                self.scan(store.as_ref(), &mut run).await;
                next_scan = Instant::now() + self.settings.scan_interval;
            }
            self.deliver_due(store.as_ref(), &mut run).await;
            ALERTS_PENDING.set(run.outbox.len() as i64);
            let wake = run
                .outbox
                .values()
                .map(|p| p.next_try)
                .min()
                .map_or(next_scan, |t| t.min(next_scan));
            let wait = wake.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = self.alerts.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
