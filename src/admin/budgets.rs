//! `/v1/budgets`: named budgets that users and keys refer to by `budget_id`.

use serde_json::{json, Value};

use super::{after_change, internal, no_route, not_found, page, store_of, Reply, Req, Resp};
use crate::clock;
use crate::error::{ErrorKind, GatewayError};
use crate::ids;
use crate::ledger::limits::parse_money;
use crate::records::{
    money::format_usd,
    period::{parse_period, period_label, Alignment, Period},
    BudgetRecord,
};
use crate::state::State;

const FIELDS: &[&str] = &[
    "budget_id",
    "name",
    "max_budget",
    "budget_duration",
    "budget_period",
    "budget_alignment",
    "alert_thresholds",
];

fn view(state: &State, b: &BudgetRecord) -> Value {
    let users = state
        .ledger
        .users
        .load()
        .values()
        .filter(|u| u.limits.budget_id.as_deref() == Some(b.budget_id.as_str()))
        .count();
    let keys = state
        .keys
        .all()
        .iter()
        .filter(|k| k.limits.budget_id.as_deref() == Some(b.budget_id.as_str()))
        .count();
    json!({
        "object": "budget",
        "budget_id": b.budget_id,
        "name": b.name,
        "max_budget": format_usd(b.max_budget_micros),
        "budget_period": period_label(b.period),
        "budget_alignment": match b.alignment { Alignment::Calendar => "calendar", Alignment::Rolling => "rolling" },
        "created_at": b.created_at,
        "alert_thresholds": b.alert_thresholds,
        "user_count": users,
        "key_count": keys,
    })
}

fn apply(req: &Req, b: &mut BudgetRecord) -> Result<(), GatewayError> {
    req.only(FIELDS)?;
    let body = &req.body;
    if let Some(v) = body.get("name") {
        b.name = v.as_str().map(String::from);
    }
    if let Some(v) = body.get("max_budget") {
        b.max_budget_micros = parse_money(v, "max_budget")?;
    }
    if let Some(v) = body.get("alert_thresholds") {
        b.alert_thresholds = crate::ledger::limits::parse_thresholds(v)?;
    }
    if let Some(v) = body
        .get("budget_duration")
        .or_else(|| body.get("budget_period"))
    {
        b.period =
            parse_period(v).map_err(|m| GatewayError::invalid(m).with_param("budget_duration"))?;
    }
    if let Some(v) = body.get("budget_alignment") {
        b.alignment = match v.as_str() {
            Some("calendar") => Alignment::Calendar,
            Some("rolling") => Alignment::Rolling,
            _ => {
                return Err(
                    GatewayError::invalid("'budget_alignment' is 'calendar' or 'rolling'.")
                        .with_param("budget_alignment"),
                )
            }
        };
    }
    Ok(())
}

async fn save(state: &State, b: &BudgetRecord) -> Result<(), GatewayError> {
    store_of(state)?.put_budget(b).await.map_err(internal)?;
    state.ledger.upsert_budget(b.clone());
    after_change(state).await;
    Ok(())
}

fn find(state: &State, id: &str) -> Result<BudgetRecord, GatewayError> {
    state
        .ledger
        .budgets
        .load()
        .get(id)
        .map(|b| BudgetRecord::clone(b))
        .ok_or_else(|| not_found("budget", id))
}

pub(super) async fn handle(state: &State, req: &Req) -> Reply {
    match (req.method.as_str(), req.seg(1)) {
        ("POST", None) => {
            store_of(state)?;
            let id = match req.body.get("budget_id") {
                None | Some(Value::Null) => ids::generate_id("bud_"),
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 && !s.contains('/') => {
                    s.clone()
                }
                _ => {
                    return Err(GatewayError::invalid("'budget_id' must be a short string.")
                        .with_param("budget_id"))
                }
            };
            if state.ledger.budgets.load().contains_key(&id) {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!("Budget '{id}' already exists."),
                )
                .with_status(409));
            }
            if req.body.get("max_budget").is_none() {
                return Err(GatewayError::invalid("'max_budget' (USD) is required.")
                    .with_param("max_budget"));
            }
            let mut b = BudgetRecord {
                budget_id: id,
                name: None,
                max_budget_micros: 0,
                period: Period::Monthly,
                alignment: Alignment::Calendar,
                created_at: clock::now_secs(),
                alert_thresholds: None,
            };
            apply(req, &mut b)?;
            save(state, &b).await?;
            Ok(Resp::json(201, view(state, &b)))
        }
        ("GET", None) => {
            let list: Vec<BudgetRecord> = state
                .ledger
                .budgets
                .load()
                .values()
                .map(|b| BudgetRecord::clone(b))
                .collect();
            page(list, |b| b.budget_id.as_str(), req, |b| view(state, b))
        }
        ("GET", Some(id)) => Ok(Resp::json(200, view(state, &find(state, id)?))),
        ("PATCH", Some(id)) => {
            let mut b = find(state, id)?;
            apply(req, &mut b)?;
            save(state, &b).await?;
            Ok(Resp::json(200, view(state, &b)))
        }
        ("DELETE", Some(id)) => {
            let store = store_of(state)?;
            let b = find(state, id)?;
            let v = view(state, &b);
            if v["user_count"].as_u64() > Some(0) || v["key_count"].as_u64() > Some(0) {
                return Err(GatewayError::new(
                    ErrorKind::InvalidRequest,
                    format!("Budget '{id}' is in use by users or keys; detach it first."),
                )
                .with_status(409));
            }
            store.delete_budget(id).await.map_err(internal)?;
            state.ledger.remove_budget(id);
            after_change(state).await;
            Ok(Resp::json(
                200,
                json!({"budget_id": id, "object": "budget", "deleted": true}),
            ))
        }
        _ => Err(no_route(req)),
    }
}
