//! `POST /v1/{keys|users|teams|orgs}/{id}/top-ups` and `GET` of the same: prepaid balances.
//! A top-up raises the entity's lifetime budget (creating it at the amount when it has
//! none) and appends to the entity's audit trail (who, when, how much, note) in the same
//! record write, so the raise and its record cannot part. A budget with a period is not
//! prepaid: topping it up is refused (409); raise it or set a `budget_override`.

use serde_json::{json, Value};

use super::{internal, no_route, not_found, store_of, Reply, Req, Resp};
use crate::clock;
use crate::error::{ErrorKind, GatewayError};
use crate::ledger::limits::parse_money;
use crate::records::{
    money::format_usd, period::Period, GroupKind, GroupRecord, KeyRecord, Limits, Scope, TopUp,
    UserRecord,
};
use crate::state::State;

/// The most top-ups one record keeps (the trail lives in the record).
const MAX_TOP_UPS: usize = 10_000;

/// One entity that can be topped up.
enum Target {
    Key(Box<KeyRecord>),
    User(Box<UserRecord>),
    Group(GroupKind, Box<GroupRecord>),
}

impl Target {
    fn find(state: &State, collection: &str, id: &str) -> Result<Target, GatewayError> {
        let gone = |what| not_found(what, id);
        Ok(match collection {
            "keys" => Target::Key(Box::new(
                state
                    .keys
                    .all()
                    .into_iter()
                    .find(|k| k.id == id)
                    .ok_or_else(|| gone("key"))?,
            )),
            "users" => Target::User(Box::new(
                state
                    .ledger
                    .users
                    .load()
                    .get(id)
                    .map(|u| UserRecord::clone(u))
                    .ok_or_else(|| gone("user"))?,
            )),
            "teams" | "orgs" => {
                let kind = if collection == "teams" {
                    GroupKind::Team
                } else {
                    GroupKind::Org
                };
                Target::Group(
                    kind,
                    Box::new(
                        state
                            .ledger
                            .groups(kind)
                            .load()
                            .get(id)
                            .map(|g| GroupRecord::clone(g))
                            .ok_or_else(|| gone(kind.noun()))?,
                    ),
                )
            }
            _ => return Err(gone("entity")),
        })
    }

    fn limits(&mut self) -> &mut Limits {
        match self {
            Target::Key(k) => &mut k.limits,
            Target::User(u) => &mut u.limits,
            Target::Group(_, g) => &mut g.limits,
        }
    }

    fn scope_id(&self) -> (Scope, String) {
        match self {
            Target::Key(k) => (Scope::Key, k.id.clone()),
            Target::User(u) => (Scope::User, u.user_id.clone()),
            Target::Group(kind, g) => (kind.scope(), g.id.clone()),
        }
    }

    /// Writes the record (store first), then the in-memory state and the live account.
    async fn save(self, state: &State) -> Result<(), GatewayError> {
        let store = store_of(state)?;
        let (scope, id) = self.scope_id();
        let limits = match &self {
            Target::Key(k) => k.limits.clone(),
            Target::User(u) => u.limits.clone(),
            Target::Group(_, g) => g.limits.clone(),
        };
        match self {
            Target::Key(k) => {
                store.put_key(&k).await.map_err(internal)?;
                state.keys.upsert(*k);
            }
            Target::User(u) => {
                store.put_user(&u).await.map_err(internal)?;
                state.ledger.upsert_user(*u);
            }
            Target::Group(kind, g) => {
                store.put_group(kind, &g).await.map_err(internal)?;
                state.ledger.upsert_group(kind, *g);
            }
        }
        state
            .ledger
            .account(scope, &id, state.ledger.resolve_limit(&limits));
        super::after_change(state).await;
        Ok(())
    }
}

fn parse_note(v: Option<&Value>) -> Result<Option<String>, GatewayError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 1000 && !s.chars().any(char::is_control) => {
            Ok(Some(s.clone()))
        }
        _ => Err(GatewayError::invalid(
            "'note' must be a string of at most 1000 printable characters.",
        )
        .with_param("note")),
    }
}

/// Top-ups on one entity are applied one at a time (read, raise, write).
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(super) async fn handle(state: &State, req: &Req) -> Reply {
    let (collection, id) = (req.seg(0).unwrap_or(""), req.seg(1).unwrap_or(""));
    match (req.method.as_str(), req.segs.len()) {
        ("POST", 3) => {
            req.only(&["amount", "note"])?;
            let amount = req
                .body
                .get("amount")
                .ok_or_else(|| GatewayError::invalid("'amount' is required.").with_param("amount"))
                .and_then(|v| parse_money(v, "amount"))?;
            if amount == 0 {
                return Err(
                    GatewayError::invalid("'amount' must be more than zero.").with_param("amount")
                );
            }
            let note = parse_note(req.body.get("note"))?;
            store_of(state)?;
            let _one = LOCK.lock().await;
            let mut t = Target::find(state, collection, id)?;
            let now = clock::now_secs();
            let l = t.limits();
            if l.budget_id.is_some() || l.budget_period.is_some_and(|p| p != Period::Lifetime) {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    "Only a lifetime budget takes top-ups; this one has a period or is a named budget. Raise its max_budget, or set a budget_override.",
                )
                .with_status(409));
            }
            if l.top_ups.len() >= MAX_TOP_UPS {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!("This budget has {MAX_TOP_UPS} top-ups, the most one keeps."),
                )
                .with_status(409));
            }
            let max = l.max_budget_micros.unwrap_or(0).saturating_add(amount);
            if l.max_budget_micros.is_none() {
                l.budget_period = Some(Period::Lifetime);
                l.budget_anchor = Some(now);
            }
            l.max_budget_micros = Some(max);
            let top = TopUp {
                id: crate::ids::generate_id("topup_"),
                amount_micros: amount,
                note,
                by: req.actor.clone(),
                at: now,
                max_after: max,
            };
            l.top_ups.push(top.clone());
            t.save(state).await?;
            let mut v = top.to_json();
            v["max_budget"] = json!(format_usd(max));
            Ok(Resp::json(201, v))
        }
        ("GET", 3) => {
            let mut t = Target::find(state, collection, id)?;
            let tops: Vec<TopUp> = t.limits().top_ups.iter().rev().cloned().collect();
            // Newest first; the cursor is a top-up id.
            let limit = req.limit()?;
            let start = match req.q("after") {
                None => 0,
                Some(a) => tops
                    .iter()
                    .position(|x| x.id == a)
                    .map_or(tops.len(), |i| i + 1),
            };
            let page: Vec<&TopUp> = tops.iter().skip(start).take(limit).collect();
            let has_more = start + page.len() < tops.len();
            Ok(Resp::json(
                200,
                json!({
                    "object": "list",
                    "data": page.iter().map(|x| x.to_json()).collect::<Vec<_>>(),
                    "has_more": has_more,
                    "next_cursor": if has_more { page.last().map(|x| x.id.clone()) } else { None },
                }),
            ))
        }
        _ => Err(no_route(req)),
    }
}
