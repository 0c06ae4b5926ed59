//! Budgets and rate limits: reserve before the call, settle after it.
//!
//! The [`Ledger`] is the in-memory authority for admission: accounts (spend counters), rate
//! limiters, users, named budgets and prices. It never touches the disk: settled usage goes
//! to a queue that the store's writer drains in batches (see `services::writer`), and the
//! counters are rebuilt from the store at start.

pub mod budget;
pub mod lease;
pub mod limits;
pub mod rate;
pub mod shared;
pub mod standing;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use budget::{reserve, Account, Counter, Exceeded, Reservation};
use rate::{RateExceeded, RateLimiter};
use std::borrow::Cow;

use crate::error::{ErrorKind, GatewayError};
use crate::meter::price::{Price, PriceTable};
use crate::records::{
    end_user_id,
    money::format_usd,
    period::{self, period_label},
    BudgetRecord, Charge, GroupKind, GroupRecord, KeyRecord, Limit, Limits, Micros, Scope, Settled,
    UsageRecord, UserRecord,
};

/// Settled work waiting for the writer. Bounded only by how fast the store writes: the
/// writer drains it every few milliseconds.
#[derive(Default)]
pub struct UsageQueue {
    items: Mutex<Vec<Settled>>,
    pub notify: tokio::sync::Notify,
    /// Batches taken from the queue and not yet written.
    writing: std::sync::atomic::AtomicUsize,
}

/// A batch taken from the queue for writing; dropping it says the write is over.
pub struct Batch<'a> {
    queue: &'a UsageQueue,
    pub items: Vec<Settled>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.queue
            .writing
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl UsageQueue {
    /// Takes everything queued for writing; the queue counts as busy until the batch is
    /// dropped.
    pub fn take(&self) -> Batch<'_> {
        // Counted before the items leave the queue: `settled` never sees both empty.
        self.writing
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Batch {
            queue: self,
            items: self.drain(),
        }
    }

    /// Nothing queued and nothing being written.
    pub fn settled(&self) -> bool {
        self.is_empty() && self.writing.load(std::sync::atomic::Ordering::Acquire) == 0
    }

    pub fn push(&self, s: Settled) {
        self.items.lock().push(s);
        self.notify.notify_one();
    }

    pub fn drain(&self) -> Vec<Settled> {
        std::mem::take(&mut *self.items.lock())
    }

    pub fn len(&self) -> usize {
        self.items.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Ledger {
    accounts: Mutex<HashMap<(Scope, String), Arc<Account>>>,
    /// Durable spend per (scope, id) and window start, applied when an account is created
    /// (its limit, and so its current window, is known only then).
    seeds: Mutex<HashMap<(Scope, String), HashMap<u64, Micros>>>,
    limiters: Mutex<HashMap<(Scope, String), Arc<RateLimiter>>>,
    pub users: ArcSwap<HashMap<String, Arc<UserRecord>>>,
    pub budgets: ArcSwap<HashMap<String, Arc<BudgetRecord>>>,
    pub teams: ArcSwap<HashMap<String, Arc<GroupRecord>>>,
    pub orgs: ArcSwap<HashMap<String, Arc<GroupRecord>>>,
    /// Shipped and configured prices (the base layer).
    base_prices: PriceTable,
    /// Base plus prices set through the API.
    pub prices: ArcSwap<PriceTable>,
    pub overrides: ArcSwap<HashMap<String, Price>>,
    pub require_pricing: bool,
    /// Output tokens assumed when a request sets no maximum.
    pub default_output_tokens: u64,
    pub queue: UsageQueue,
    /// Set with a shared store (PostgreSQL): accounts and limiters spend through leases.
    pub shared: std::sync::OnceLock<Arc<shared::SharedCtl>>,
    /// Set when budget alerts are configured: settlement reports spend to it.
    pub alerts: std::sync::OnceLock<Arc<crate::alerts::Alerts>>,
}

/// Whether a budget's model pattern applies to the request being admitted (the gateway
/// matches it against the client's selector, the routed `provider:model`, and the groups
/// and aliases that contain it).
pub type ModelMatch<'a> = dyn Fn(&str) -> bool + Send + Sync + 'a;

/// What a request holds between admission and settlement.
#[derive(Debug, Default)]
pub struct Admission {
    pub reservation: Option<Reservation>,
    pub price: Option<Price>,
    pub limiters: Vec<Arc<RateLimiter>>,
    pub accounts: Vec<Arc<Account>>,
    /// Fixed charges on top of the token cost (gateway tool calls), settled with it.
    pub extra: Micros,
}

/// One limited account's spend in its current window (see [`Ledger::limited_spend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitedSpend {
    pub scope: Scope,
    pub id: String,
    pub limit: Limit,
    pub window_start: u64,
    pub spent: Micros,
}

/// The account standing shown by `/v1/key/info` and management reads.
pub fn standing_json(a: &Account, now: u64) -> serde_json::Value {
    let s = a.standing(now);
    serde_json::json!({
        "spend": format_usd(s.spent),
        "reserved": format_usd(s.reserved),
        "max_budget": s.limit.map(|l| format_usd(l.max_micros)),
        "remaining": s.remaining().map(format_usd),
        "budget_period": s.limit.map(|l| period_label(l.period)),
        "window_start": period::rfc3339(s.window_start),
        "resets_at": s.resets_at.map(period::rfc3339),
    })
}

impl Ledger {
    /// The ledger a configuration asks for: the built-in prices with the config's `pricing`
    /// over them (the gateway and the CLI's in-process answers build it the same way).
    pub fn from_config(cfg: &crate::config::Config) -> Ledger {
        let mut prices = crate::meter::price::default_table();
        for (k, p) in &cfg.pricing {
            prices.insert(k, *p);
        }
        Ledger::new(prices, cfg.require_pricing, cfg.default_max_output_tokens)
    }

    pub fn new(
        base_prices: PriceTable,
        require_pricing: bool,
        default_output_tokens: u64,
    ) -> Ledger {
        Ledger {
            accounts: Mutex::new(HashMap::new()),
            seeds: Mutex::new(HashMap::new()),
            limiters: Mutex::new(HashMap::new()),
            users: ArcSwap::from_pointee(HashMap::new()),
            budgets: ArcSwap::from_pointee(HashMap::new()),
            teams: ArcSwap::from_pointee(HashMap::new()),
            orgs: ArcSwap::from_pointee(HashMap::new()),
            prices: ArcSwap::from_pointee(base_prices.clone()),
            base_prices,
            overrides: ArcSwap::from_pointee(HashMap::new()),
            require_pricing,
            default_output_tokens,
            queue: UsageQueue::default(),
            shared: std::sync::OnceLock::new(),
            alerts: std::sync::OnceLock::new(),
        }
    }

    /// Switches this ledger to a shared store: budgets and rate limits go through leases.
    pub fn enable_shared(&self, ctl: Arc<shared::SharedCtl>) {
        let _ = self.shared.set(ctl);
        for a in self.accounts.lock().values() {
            a.make_shared();
        }
        for l in self.limiters.lock().values() {
            l.make_shared();
        }
    }

    /// Every account (for the lease service).
    pub fn all_accounts(&self) -> Vec<Arc<Account>> {
        self.accounts.lock().values().cloned().collect()
    }

    /// Every rate limiter with its owner (for the lease service).
    pub fn all_limiters(&self) -> Vec<(Scope, String, Arc<RateLimiter>)> {
        self.limiters
            .lock()
            .iter()
            .map(|((s, id), l)| (*s, id.clone(), l.clone()))
            .collect()
    }

    pub fn find_limiter(&self, scope: Scope, id: &str) -> Option<Arc<RateLimiter>> {
        self.limiters.lock().get(&(scope, id.to_string())).cloned()
    }

    /// Usage written to the store: moves its spend from "settled here" to "in the store"
    /// in this instance's leases.
    pub fn confirm(&self, batch: &[Settled]) {
        if self.shared.get().is_none() {
            return;
        }
        for s in batch {
            for c in &s.charges {
                if let Some(a) = self.find_account(c.scope, &c.id) {
                    a.confirm(c.amount, c.window_start);
                }
            }
        }
    }

    /// Replaces the API-set prices (layered over the base table).
    pub fn set_overrides(&self, overrides: HashMap<String, Price>) {
        let mut t = self.base_prices.clone();
        for (k, p) in &overrides {
            t.insert(k, *p);
        }
        self.prices.store(Arc::new(t));
        self.overrides.store(Arc::new(overrides));
    }

    pub fn replace_users(&self, users: Vec<UserRecord>) {
        let map = users
            .into_iter()
            .map(|u| (u.user_id.clone(), Arc::new(u)))
            .collect();
        self.users.store(Arc::new(map));
        self.refresh_limits();
    }

    pub fn upsert_user(&self, u: UserRecord) {
        let mut map = HashMap::clone(&self.users.load());
        map.insert(u.user_id.clone(), Arc::new(u));
        self.users.store(Arc::new(map));
        self.refresh_limits();
    }

    pub fn remove_user(&self, id: &str) {
        let mut map = HashMap::clone(&self.users.load());
        map.remove(id);
        self.users.store(Arc::new(map));
    }

    /// The teams or the organisations.
    pub fn groups(&self, kind: GroupKind) -> &ArcSwap<HashMap<String, Arc<GroupRecord>>> {
        match kind {
            GroupKind::Team => &self.teams,
            GroupKind::Org => &self.orgs,
        }
    }

    pub fn replace_groups(&self, kind: GroupKind, groups: Vec<GroupRecord>) {
        let map = groups
            .into_iter()
            .map(|g| (g.id.clone(), Arc::new(g)))
            .collect();
        self.groups(kind).store(Arc::new(map));
        self.refresh_limits();
    }

    pub fn upsert_group(&self, kind: GroupKind, g: GroupRecord) {
        let mut map = HashMap::clone(&self.groups(kind).load());
        map.insert(g.id.clone(), Arc::new(g));
        self.groups(kind).store(Arc::new(map));
        self.refresh_limits();
    }

    pub fn remove_group(&self, kind: GroupKind, id: &str) {
        let mut map = HashMap::clone(&self.groups(kind).load());
        map.remove(id);
        self.groups(kind).store(Arc::new(map));
    }

    /// The team and organisation a request of `key` (of `user`) belongs to: the key's own
    /// team (a service key) or else its user's, and that team's organisation.
    pub fn hierarchy(
        &self,
        key: &KeyRecord,
        user: Option<&UserRecord>,
    ) -> (Option<Arc<GroupRecord>>, Option<Arc<GroupRecord>>) {
        let team_id = key
            .team_id
            .as_deref()
            .or_else(|| user.and_then(|u| u.team_id.as_deref()));
        let team = team_id.and_then(|t| self.teams.load().get(t).cloned());
        let org = team
            .as_ref()
            .and_then(|t| t.org_id.as_deref())
            .and_then(|o| self.orgs.load().get(o).cloned());
        (team, org)
    }

    pub fn replace_budgets(&self, budgets: Vec<BudgetRecord>) {
        let map = budgets
            .into_iter()
            .map(|b| (b.budget_id.clone(), Arc::new(b)))
            .collect();
        self.budgets.store(Arc::new(map));
        self.refresh_limits();
    }

    pub fn upsert_budget(&self, b: BudgetRecord) {
        let mut map = HashMap::clone(&self.budgets.load());
        map.insert(b.budget_id.clone(), Arc::new(b));
        self.budgets.store(Arc::new(map));
        self.refresh_limits();
    }

    pub fn remove_budget(&self, id: &str) {
        let mut map = HashMap::clone(&self.budgets.load());
        map.remove(id);
        self.budgets.store(Arc::new(map));
        self.refresh_limits();
    }

    /// The spending limit that `limits` stands for (a named budget wins over inline values).
    pub fn resolve_limit(&self, limits: &Limits) -> Option<Limit> {
        if let Some(bid) = &limits.budget_id {
            if let Some(b) = self.budgets.load().get(bid) {
                let mut l = b.limit(limits.budget_anchor.unwrap_or(b.created_at));
                if l.alerts.is_unset() {
                    l.alerts = crate::records::AlertMask::of(limits.alert_thresholds.as_deref());
                }
                return Some(l);
            }
        }
        limits.inline_limit()
    }

    /// Re-applies limits to existing accounts after users or budgets changed.
    fn refresh_limits(&self) {
        let users = self.users.load();
        let (teams, orgs) = (self.teams.load(), self.orgs.load());
        for ((scope, id), acct) in self.accounts.lock().iter() {
            let (owner, budget) = match id.split_once('#') {
                Some((o, b)) => (o, Some(b)),
                None => (id.as_str(), None),
            };
            let limits = match scope {
                Scope::User => users.get(owner).map(|u| &u.limits),
                Scope::Team => teams.get(owner).map(|t| &t.limits),
                Scope::Org => orgs.get(owner).map(|o| &o.limits),
                _ => continue,
            };
            acct.set_limit(match budget {
                None => limits.and_then(|l| self.resolve_limit(l)),
                Some(b) => limits
                    .and_then(|l| l.budgets.iter().find(|x| x.id == b))
                    .map(|x| x.limit()),
            });
        }
    }

    /// The account of (scope, id), created on first use with the given limit.
    pub fn account(&self, scope: Scope, id: &str, limit: Option<Limit>) -> Arc<Account> {
        let mut map = self.accounts.lock();
        let a = map
            .entry((scope, id.to_string()))
            .or_insert_with(|| {
                let now = crate::clock::now_secs();
                let window_start = limit.map_or(0, |l| l.window(now).0);
                let spent = self
                    .seeds
                    .lock()
                    .get(&(scope, id.to_string()))
                    .and_then(|w| w.get(&window_start).copied())
                    .unwrap_or(0);
                Account::new(
                    scope,
                    id,
                    limit,
                    Counter {
                        window_start,
                        spent,
                        reserved: 0,
                    },
                )
            })
            .clone();
        drop(map);
        if a.limit() != limit {
            a.set_limit(limit);
        }
        if self.shared.get().is_some() {
            a.make_shared();
        }
        a
    }

    pub fn find_account(&self, scope: Scope, id: &str) -> Option<Arc<Account>> {
        self.accounts.lock().get(&(scope, id.to_string())).cloned()
    }

    pub fn key_account(&self, key: &KeyRecord) -> Arc<Account> {
        self.account(Scope::Key, &key.id, self.resolve_limit(&key.limits))
    }

    pub fn user_account(&self, user: &UserRecord) -> Arc<Account> {
        self.account(Scope::User, &user.user_id, self.resolve_limit(&user.limits))
    }

    pub fn group_account(&self, kind: GroupKind, g: &GroupRecord) -> Arc<Account> {
        self.account(kind.scope(), &g.id, self.resolve_limit(&g.limits))
    }

    fn limiter(&self, scope: Scope, id: &str) -> Arc<RateLimiter> {
        let l = self
            .limiters
            .lock()
            .entry((scope, id.to_string()))
            .or_default()
            .clone();
        if self.shared.get().is_some() {
            l.make_shared();
        }
        l
    }

    /// Every account's counters, for the snapshot written at hand-over.
    pub fn counters(&self) -> Vec<(Scope, String, Counter)> {
        self.accounts
            .lock()
            .iter()
            .map(|((s, id), a)| (*s, id.clone(), a.counter()))
            .collect()
    }

    /// Forgets all spend counters (before reloading them from the store, which is
    /// authoritative; reservations of requests in flight are kept).
    pub fn reset_spend(&self) {
        self.seeds.lock().clear();
        for a in self.accounts.lock().values() {
            a.clear_spent();
        }
    }

    /// Every account with a spending limit, with its spend in its current window: the
    /// accounts in memory, and the keys, users and end users whose spend was only loaded
    /// from the store (no request since the start). For the budget alerts' scans.
    pub fn limited_spend(&self, keys: &[KeyRecord], now: u64) -> Vec<LimitedSpend> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for ((scope, id), a) in self.accounts.lock().iter() {
            seen.insert((*scope, id.clone()));
            if let Some(limit) = a.limit() {
                let s = a.standing(now);
                out.push(LimitedSpend {
                    scope: *scope,
                    id: id.clone(),
                    limit,
                    window_start: s.window_start,
                    spent: s.spent,
                });
            }
        }
        let seeds = self.seeds.lock();
        let mut add = |scope: Scope, id: &str, limit: Option<Limit>| {
            let Some(limit) = limit else { return };
            if seen.contains(&(scope, id.to_string())) {
                return;
            }
            let ws = limit.window(now).0;
            let spent = seeds
                .get(&(scope, id.to_string()))
                .and_then(|w| w.get(&ws).copied())
                .unwrap_or(0);
            out.push(LimitedSpend {
                scope,
                id: id.to_string(),
                limit,
                window_start: ws,
                spent,
            });
        };
        for k in keys {
            add(Scope::Key, &k.id, self.resolve_limit(&k.limits));
        }
        for u in self.users.load().values() {
            add(Scope::User, &u.user_id, self.resolve_limit(&u.limits));
        }
        let end_users: Vec<String> = seeds
            .keys()
            .filter(|(s, _)| *s == Scope::EndUser)
            .map(|(_, id)| id.clone())
            .collect();
        for id in end_users {
            let Some((key_id, _)) = id.split_once('/') else {
                continue;
            };
            let limit = keys
                .iter()
                .find(|k| k.id == key_id)
                .and_then(|k| k.end_user_limits.as_ref())
                .and_then(|l| self.resolve_limit(l));
            add(Scope::EndUser, &id, limit);
        }
        out
    }

    /// Adds durable spend of (scope, id) in the window starting at `window_start`.
    pub fn seed_spend(&self, scope: Scope, id: &str, window_start: u64, spent: Micros) {
        *self
            .seeds
            .lock()
            .entry((scope, id.to_string()))
            .or_default()
            .entry(window_start)
            .or_default() += spent;
        if let Some(a) = self.find_account(scope, id) {
            a.add_spent_in_window(spent, window_start, crate::clock::now_secs());
        }
    }

    /// Admission control for one request: user state, rate limits, pricing, then the budget
    /// reservation. `estimate` prices the request as its worst case. With a shared store this
    /// spends only the leases held; [`Ledger::admit_async`] also takes leases when needed.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &self,
        key: &KeyRecord,
        user: Option<&UserRecord>,
        end_user: Option<&str>,
        model: Option<&ModelMatch<'_>>,
        price: Option<Price>,
        estimate: &crate::meter::Usage,
        now_secs: u64,
    ) -> Result<Admission, GatewayError> {
        self.try_admit(key, user, end_user, model, price, estimate, now_secs)
            .map_err(Refusal::into_error)
    }

    /// [`Ledger::admit`], taking or topping up leases from the shared store when this
    /// instance's are short (the only case with a database round trip on the request path;
    /// a warm lease admits from memory).
    #[allow(clippy::too_many_arguments)]
    pub async fn admit_async(
        &self,
        key: &KeyRecord,
        user: Option<&UserRecord>,
        end_user: Option<&str>,
        model: Option<&ModelMatch<'_>>,
        price: Option<Price>,
        estimate: &crate::meter::Usage,
        now_secs: u64,
    ) -> Result<Admission, GatewayError> {
        let Some(ctl) = self.shared.get() else {
            return self.admit(key, user, end_user, model, price, estimate, now_secs);
        };
        // Each short lease (key budget, user budget, key and user request windows) gets
        // its own lease call, twice at most (requests in flight here may take a fresh grant
        // first); a lease still short after that is a real refusal.
        let mut topped: Vec<(String, u8)> = Vec::new();
        loop {
            let refusal = match self.try_admit(
                key,
                user,
                end_user,
                model,
                price,
                estimate,
                crate::clock::now_secs(),
            ) {
                Ok(a) => return Ok(a),
                Err(Refusal::Error(e)) => return Err(e),
                Err(r) => r,
            };
            let target = refusal.target();
            let n = match topped.iter_mut().find(|(t, _)| *t == target) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    topped.push((target, 1));
                    1
                }
            };
            if n > 2 || topped.len() > 8 {
                return Err(refusal.into_error());
            }
            let res = match &refusal {
                Refusal::BudgetLease(acct, e) => ctl.top_up_account(acct, e.requested).await,
                Refusal::RateLease(scope, id, l, _) => ctl.top_up_rate(*scope, id, l).await,
                Refusal::Error(_) => unreachable!(),
            };
            if let Err(err) = res {
                return Err(shared::unavailable(&err));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn try_admit(
        &self,
        key: &KeyRecord,
        user: Option<&UserRecord>,
        end_user: Option<&str>,
        model: Option<&ModelMatch<'_>>,
        price: Option<Price>,
        estimate: &crate::meter::Usage,
        now_secs: u64,
    ) -> Result<Admission, Refusal> {
        if let Some(u) = user {
            if u.blocked {
                return Err(Refusal::Error(GatewayError::new(
                    ErrorKind::PermissionDenied,
                    format!("User '{}' is blocked.", u.user_id),
                )));
            }
        }
        if price.is_none() && self.require_pricing {
            return Err(Refusal::Error(GatewayError::new(
                ErrorKind::PaymentRequired,
                "No price is configured for this model, and this gateway requires one (require_pricing). Add it with POST /v1/pricing or in the config.",
            )));
        }
        let shared = self.shared.get();
        if let Some(ctl) = shared {
            ctl.check_outage().map_err(Refusal::Error)?;
        }
        let (team, org) = self.hierarchy(key, user);
        let groups: Vec<(GroupKind, &GroupRecord)> = [
            team.as_deref().map(|t| (GroupKind::Team, t)),
            org.as_deref().map(|o| (GroupKind::Org, o)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some((kind, g)) = groups.iter().find(|(_, g)| g.blocked) {
            return Err(Refusal::Error(GatewayError::new(
                ErrorKind::PermissionDenied,
                format!("{} '{}' is blocked.", capitalised(kind.noun()), g.id),
            )));
        }
        let mut accounts = vec![self.key_account(key)];
        if let Some(u) = user {
            accounts.push(self.user_account(u));
        }
        // Every level above the user reserves too (one without a budget only counts spend).
        for (kind, g) in &groups {
            accounts.push(self.group_account(*kind, g));
        }
        // Each level's further budgets that apply to this request: those for every model,
        // and those whose model pattern the request's model matches (when a model is known).
        let levels = [
            Some((Scope::Key, key.id.as_str(), &key.limits)),
            user.map(|u| (Scope::User, u.user_id.as_str(), &u.limits)),
            team.as_deref()
                .map(|t| (Scope::Team, t.id.as_str(), &t.limits)),
            org.as_deref()
                .map(|o| (Scope::Org, o.id.as_str(), &o.limits)),
        ];
        let mut scoped_models: Vec<(String, String)> = Vec::new();
        for (scope, owner, limits) in levels.into_iter().flatten() {
            for b in &limits.budgets {
                let applies = match (&b.model, model) {
                    (None, _) => true,
                    (Some(p), Some(m)) => m(p),
                    (Some(_), None) => false,
                };
                if applies {
                    let id = b.account_id(owner);
                    if let Some(p) = &b.model {
                        scoped_models.push((id.clone(), p.clone()));
                    }
                    accounts.push(self.account(scope, &id, Some(b.limit())));
                }
            }
        }
        // End-user limits only when the key has them and the body names an end user: a key
        // without them does no work here.
        let end_user = end_user
            .zip(key.end_user_limits.as_ref())
            .map(|(eu, limits)| (eu, end_user_id(&key.id, eu), limits));
        if let Some((_, id, limits)) = &end_user {
            if let Some(limit) = self.resolve_limit(limits) {
                accounts.push(self.account(Scope::EndUser, id, Some(limit)));
            }
        }
        let amount = price.map_or(0, |p| worst_case(&p, estimate));
        let reservation = if key.exclude_from_budget {
            Ok(budget::hold(&accounts))
        } else {
            reserve(&accounts, amount, now_secs)
        };
        let reservation = reservation.map_err(|mut e| {
            e.model = scoped_models
                .iter()
                .find(|(id, _)| *id == e.id)
                .map(|(_, p)| p.as_str().into());
            if !e.lease_short {
                return Refusal::Error(budget_error(&e));
            }
            let a = accounts
                .iter()
                .find(|a| a.scope == e.scope && a.id == e.id)
                .cloned()
                .expect("refusing account");
            Refusal::BudgetLease(a, e)
        })?;
        // Rate limits count only requests that pass everything else; a refusal here drops
        // the reservation, which releases it.
        let now_ms = now_secs * 1000 + (crate::clock::now_millis() % 1000);
        let mut limiters = vec![self.limiter(Scope::Key, &key.id)];
        let mut checks = vec![(
            key.limits.rpm,
            key.limits.tpm,
            Who::Key,
            Scope::Key,
            Cow::Borrowed(key.id.as_str()),
        )];
        if let Some(u) = user {
            limiters.push(self.limiter(Scope::User, &u.user_id));
            checks.push((
                u.limits.rpm,
                u.limits.tpm,
                Who::User,
                Scope::User,
                Cow::Borrowed(u.user_id.as_str()),
            ));
        }
        for (kind, g) in &groups {
            if g.limits.rpm.is_some() || g.limits.tpm.is_some() {
                limiters.push(self.limiter(kind.scope(), &g.id));
                checks.push((
                    g.limits.rpm,
                    g.limits.tpm,
                    Who::Group(*kind),
                    kind.scope(),
                    Cow::Borrowed(g.id.as_str()),
                ));
            }
        }
        if let Some((eu, id, limits)) = end_user {
            if limits.rpm.is_some() || limits.tpm.is_some() {
                limiters.push(self.limiter(Scope::EndUser, &id));
                checks.push((
                    limits.rpm,
                    limits.tpm,
                    Who::EndUser(eu),
                    Scope::EndUser,
                    Cow::Owned(id),
                ));
            }
        }
        // Shared store: check every limiter first, then count the request in all of them.
        let passes: &[bool] = if shared.is_some() {
            &[false, true]
        } else {
            &[true]
        };
        for &consume in passes {
            for (n, (l, (rpm, tpm, who, scope, id))) in limiters.iter().zip(&checks).enumerate() {
                if rpm.is_none() && tpm.is_none() {
                    continue;
                }
                if shared.is_none() {
                    if let Err(e) = l.admit(*rpm, *tpm, now_ms) {
                        // Limiters before this one counted the request: take it back, so
                        // that (say) an end user over its limit does not use up its key's.
                        for (l, (rpm, tpm, ..)) in limiters.iter().zip(&checks).take(n) {
                            if rpm.is_some() || tpm.is_some() {
                                l.unadmit(now_ms);
                            }
                        }
                        return Err(Refusal::Error(rate_error(e, *who)));
                    }
                    continue;
                }
                match l.admit_shared(*rpm, *tpm, now_ms, consume) {
                    Ok(()) => {}
                    Err(rate::SharedRefusal::Exceeded(e)) => {
                        return Err(Refusal::Error(rate_error(e, *who)))
                    }
                    Err(rate::SharedRefusal::Lease(_)) => {
                        return Err(Refusal::RateLease(
                            *scope,
                            id.to_string(),
                            l.clone(),
                            rate_error(
                                RateExceeded {
                                    kind: "requests per minute",
                                    limit: rpm.unwrap_or(0),
                                    retry_after_secs: 1,
                                },
                                *who,
                            ),
                        ))
                    }
                }
            }
        }
        Ok(Admission {
            reservation: Some(reservation),
            price,
            limiters,
            accounts,
            extra: 0,
        })
    }

    /// Settles an admitted request: the reservation becomes the metered cost, the rate
    /// limiters count its tokens, and the record goes to the writer.
    pub fn settle(&self, adm: &mut Admission, mut record: UsageRecord, now_secs: u64) {
        let usage = crate::meter::Usage::of_record(&record);
        let cost = adm.price.map_or(0, |p| p.cost(&usage)) + adm.extra;
        record.cost_micros = cost;
        if let Some(r) = adm.reservation.take() {
            match self.alerts.get() {
                None => r.settle(cost, now_secs),
                // Budget alerts: one threshold check per limited account, under its lock.
                Some(alerts) => r.settle_observed(cost, now_secs, &mut |a, limit, ws, b, af| {
                    let acct = crate::alerts::AccountRef {
                        scope: a.scope,
                        id: &a.id,
                        budget_id: None,
                    };
                    alerts.on_spend(&acct, limit, ws, b, af, now_secs)
                }),
            }
        }
        let now_ms = now_secs * 1000;
        for l in &adm.limiters {
            l.add_tokens(usage.total(), now_ms);
        }
        let charges = adm
            .accounts
            .iter()
            .map(|a| Charge {
                scope: a.scope,
                id: a.id.clone(),
                window_start: a.limit().map_or(0, |l| l.window(now_secs).0),
                amount: cost,
            })
            .collect();
        self.queue.push(Settled { record, charges });
    }
}

/// Why an admission did not pass.
enum Refusal {
    Error(GatewayError),
    /// This instance's lease of the account is short (shared store).
    BudgetLease(Arc<Account>, Box<Exceeded>),
    /// This instance's request lease of the minute is short (shared store).
    RateLease(Scope, String, Arc<RateLimiter>, GatewayError),
}

impl Refusal {
    /// What a lease call would top up.
    fn target(&self) -> String {
        match self {
            Refusal::BudgetLease(a, _) => format!("b:{}:{}", a.scope.as_str(), a.id),
            Refusal::RateLease(s, id, _, _) => format!("r:{}:{id}", s.as_str()),
            Refusal::Error(_) => String::new(),
        }
    }

    fn into_error(self) -> GatewayError {
        match self {
            Refusal::Error(e) | Refusal::RateLease(_, _, _, e) => e,
            Refusal::BudgetLease(_, e) => budget_error(&e),
        }
    }
}

/// The most a request can cost: every prompt token at the dearer of the input and cache-write
/// prices, and every allowed output token.
fn worst_case(p: &Price, est: &crate::meter::Usage) -> Micros {
    let dear_in = p.input.max(p.cache_write.unwrap_or(p.input));
    let pessimistic = Price {
        input: dear_in,
        output: p.output,
        cache_read: Some(dear_in),
        cache_write: Some(dear_in),
    };
    pessimistic.cost(est)
}

/// Whose rate limit refused a request.
#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    Key,
    User,
    EndUser(&'a str),
    Group(GroupKind),
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

fn rate_error(e: RateExceeded, who: Who) -> GatewayError {
    let message = match who {
        Who::Key | Who::User => format!(
            "Rate limit reached: this {} allows {} {}. Retry in {} s.",
            if matches!(who, Who::Key) { "key" } else { "user" },
            e.limit,
            e.kind,
            e.retry_after_secs
        ),
        Who::Group(kind) => format!(
            "Rate limit reached: this key's {} allows {} {}. Retry in {} s.",
            kind.noun(),
            e.limit,
            e.kind,
            e.retry_after_secs
        ),
        Who::EndUser(eu) => format!(
            "Rate limit reached for end user '{eu}': this key allows each end user {} {}. Retry in {} s.",
            e.limit, e.kind, e.retry_after_secs
        ),
    };
    GatewayError::new(ErrorKind::RateLimited, message)
        .with_retry_after(e.retry_after_secs)
        .with_code("rate_limit_exceeded")
}

fn budget_error(e: &Exceeded) -> GatewayError {
    let when = match e.resets_at {
        Some(t) => format!("It resets at {}.", period::rfc3339(t)),
        None => "It does not reset; ask an administrator to raise it.".to_string(),
    };
    // A further budget's account is `{owner}#{budget}`.
    let (owner, budget) = match e.id.split_once('#') {
        Some((o, b)) => (o, Some(b)),
        None => (e.id.as_str(), None),
    };
    let mut whose = match (e.scope, owner.split_once('/')) {
        (Scope::EndUser, Some((key, eu))) => format!("end user '{eu}' of key '{key}'"),
        _ => format!("{} '{}'", e.scope.as_str(), owner),
    };
    if let Some(b) = budget {
        whose.push_str(&format!(" (budget '{b}'"));
        if let Some(m) = &e.model {
            whose.push_str(&format!(" for models '{m}'"));
        }
        whose.push(')');
    }
    GatewayError::new(
        ErrorKind::BudgetExceeded,
        format!(
            "Budget exceeded for {whose}: spent ${} of ${} ({} budget){}; this request could cost up to ${}. {}",
            format_usd(e.spent),
            format_usd(e.limit.max_micros),
            period_label(e.limit.period),
            if e.reserved > 0 { format!(", ${} held by requests in flight", format_usd(e.reserved)) } else { String::new() },
            format_usd(e.requested),
            when
        ),
    )
    .with_code("budget_exceeded")
}
